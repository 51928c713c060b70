"""The MegEngine 1.13 backend: plans to real MegEngine optimizers and drivers, and back.

MegEngine publishes wheels only for Python <= 3.10, so it usually lives in its own
interpreter (``.venv-mge``). :mod:`.backend` holds the entry points, which work in
both environments (in-process where ``megengine`` imports, through the worker
elsewhere); :mod:`.build` holds the MegEngine code.

Importing this package imports no framework. See docs/megengine.md.
"""

from __future__ import annotations

from optbridge._lazy import lazy_attributes

__all__ = ["to_megengine", "from_megengine", "trace", "megengine_python", "megengine_importable"]

__getattr__ = lazy_attributes(__name__, {
    "to_megengine": (".backend", "to_megengine"),
    "from_megengine": (".backend", "from_megengine"),
    "trace": (".backend", "trace"),
    "megengine_python": (".backend", "megengine_python"),
    "megengine_importable": (".backend", "megengine_importable"),
})
