"""Lazy module attributes (PEP 562), so that importing a package imports no framework.

``optbridge`` and each adapter package (``optbridge_adapters.torch``, ...) name
their public attributes in a table ``name -> (module, attribute)``; the module is
imported on first access. A framework that is not installed surfaces as
:class:`~optbridge.errors.BackendUnavailable` with the package's install hint,
never as a bare ``ModuleNotFoundError``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from .errors import BackendUnavailable

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, table: Mapping[str, tuple[str, str | None]],
                    hints: Mapping[str, str] | None = None) -> Callable[[str], Any]:
    """A module ``__getattr__`` serving ``table``.

    Args:
        package: The package's ``__name__`` (relative module names resolve against it).
        table: ``name -> (module, attribute)``; attribute ``None`` returns the module itself.
        hints: ``top-level module that may be missing -> how to install it`` (e.g.
            ``{"torch": "pip install 'optbridge[torch]'"}``).

    Returns:
        The ``__getattr__`` function; it caches each value in the package's globals.
    """
    hints = dict(hints or {})

    def __getattr__(name: str) -> Any:
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, attr = table[name]
        try:
            mod = importlib.import_module(module, package)
        except ModuleNotFoundError as e:
            missing = (e.name or "").partition(".")[0]
            if missing in hints:
                raise BackendUnavailable(f"{package}.{name} needs {missing}, which is not installed "
                                         f"({e}); {hints[missing]}") from e
            raise
        value = mod if attr is None else getattr(mod, attr)
        import sys
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
