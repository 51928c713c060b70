"""optbridge's framework adapters, installed as ``optbridge_adapters``.

One module per framework (torch, mindspore, megengine), each importing its
framework lazily and registered in :mod:`optbridge.backends`. Filled by the
backend issues.
"""
