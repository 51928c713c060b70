"""The templates :mod:`optbridge.port.render` writes generated modules from (read as text, never imported).

Each is a real Python module, so ruff and mypy check it: ``common.py`` (the
framework-neutral runtime: resolver, tables, the end-of-schedule policy) and one
module per framework (``torch_module.py``, ``mindspore_module.py``,
``megengine_module.py``).
"""
