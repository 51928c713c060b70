"""Which framework versions optbridge models, which it verified, and a one-time warning outside them.

optbridge reproduces what the frameworks' schedulers and optimizers compute, read from
their code and measured (``../shared/reference/semantics.md``). That code changes
between releases, so each framework has two ranges (:data:`SUPPORT`):

* **verified**: the exact versions the test suite and the conformance suite ran on;
* **modelled**: the releases whose scheduler and optimizer code computes what the
  verified one computes, as far as the framework's history shows (the reasons are in
  :attr:`Support.why` and docs/support.md). The package extras declare this range
  (``pip install 'optbridge[torch]'`` keeps a torch inside it instead of replacing it).

:func:`check_version` looks the installed version up through the package metadata
(it imports no framework) and warns once per framework and process when the version
is not a verified one, saying plainly whether it is still inside the modelled range.
The adapters' entry points (``optbridge.to_<framework>``, ``optbridge.from_<framework>``)
and the trace backends (:func:`optbridge.backends.get_backend`) call it on first use.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

from .errors import OptbridgeWarning

__all__ = ["Support", "SUPPORT", "VersionWarning", "parse_version", "status", "check_version", "installed_version",
           "framework_of_backend"]


@dataclass(frozen=True)
class Support:
    """What optbridge knows about one framework's versions.

    Attributes:
        framework: The framework's import name (``"torch"``, ``"mindspore"``, ``"megengine"``).
        distribution: Its package name on PyPI (``"MegEngine"``).
        verified: The exact versions the test and conformance suites ran on.
        low: The first release of the modelled range (inclusive).
        high: The first release past it (exclusive).
        why: Why the range starts and ends where it does.
    """

    framework: str
    distribution: str
    verified: tuple[str, ...]
    low: str
    high: str
    why: str

    @property
    def requirement(self) -> str:
        """The pip requirement of the modelled range (``"torch>=2.9,<2.14"``)."""
        return f"{self.distribution}>={self.low},<{self.high}"


#: The VerifiedVersions table: framework -> :class:`Support` (docs/support.md prints it).
SUPPORT: dict[str, Support] = {
    "torch": Support(
        "torch", "torch", ("2.13.0",), "2.9", "2.14",
        "torch 2.13's SequentialLR restarts a child with LRScheduler._update_lr(0) and its MultiplicativeLR tests "
        "_is_initial, so a MultiplicativeLR child continues from the current lr times lambda(0); that refactor "
        "(pytorch#149392, merge requested 2025-08-29) cannot be older than 2.9, and before it SequentialLR called the "
        "deprecated step(0), where MultiplicativeLR skips lambda(0) (pytorch#116776 shows 2.1's code). 2.14 is not "
        "verified: SequentialLR's construction and nesting are being changed (pytorch#185872, #196243)"),
    "mindspore": Support(
        "mindspore", "mindspore", ("2.10.0",), "2.3", "2.11",
        "mindspore.experimental.optim has RMSprop, Adagrad, Adadelta, Adamax, NAdam and RAdam (the measured "
        "native-vs-exact table uses them) from 2.3 on; the nn dynamic-lr functions and LearningRateSchedule cells are "
        "deprecated after 2.9 and may go in a later release"),
    "megengine": Support(
        "megengine", "MegEngine", ("1.13.0",), "1.13", "1.14",
        "1.13 is MegEngine's last release line (wheels for Python <= 3.10 only); its optimizers' float32 steps and "
        "betas were measured on 1.13.0"),
}


class VersionWarning(OptbridgeWarning):
    """The running framework's version is not one optbridge verified (said once per framework and process)."""


def parse_version(text: str) -> tuple[int, ...]:
    """The leading numeric release of a version: ``"2.13.0+cpu"`` -> ``(2, 13, 0)``; ``()`` when there is none."""
    m = re.match(r"\s*v?(\d+(?:\.\d+)*)", str(text))
    return tuple(int(p) for p in m.group(1).split(".")) if m else ()


def _key(v: tuple[int, ...], n: int = 3) -> tuple[int, ...]:
    return v + (0,) * (n - len(v)) if len(v) < n else v


def status(framework: str, version: str) -> str:
    """``"verified"``, ``"modelled"`` (inside the modelled range, not verified), ``"outside"`` or ``"unknown"``.

    A version that does not start with a number is ``"unknown"``; so is a framework
    without an entry in :data:`SUPPORT`.
    """
    sup = SUPPORT.get(framework)
    v = parse_version(version)
    if sup is None or not v:
        return "unknown"
    if any(_key(v) == _key(parse_version(x)) for x in sup.verified):
        return "verified"
    n = max(len(v), 3)
    if _key(parse_version(sup.low), n) <= _key(v, n) < _key(parse_version(sup.high), n):
        return "modelled"
    return "outside"


def installed_version(framework: str) -> str | None:
    """The installed version of ``framework``'s distribution from its metadata (no import), or None."""
    from importlib import metadata
    sup = SUPPORT.get(framework)
    if sup is None:
        return None
    try:
        return metadata.version(sup.distribution)
    except metadata.PackageNotFoundError:
        return None


_WARNED: set[str] = set()


def check_version(framework: str, version: str | None = None, *, once: bool = True) -> str:
    """Say plainly (a :class:`VersionWarning`) when ``framework``'s version is not one optbridge verified.

    Args:
        framework: ``"torch"``, ``"mindspore"`` or ``"megengine"``.
        version: The version to judge (default: the installed distribution's; nothing is
            said when it is not installed: the adapter reports that).
        once: Warn at most once per framework in this process.

    Returns:
        The :func:`status` of the version (``"unknown"`` when not installed).
    """
    if version is None:
        version = installed_version(framework)
        if version is None:
            return "unknown"
    st = status(framework, version)
    if st in ("verified", "unknown") or (once and framework in _WARNED):
        return st
    sup = SUPPORT[framework]
    verified = ", ".join(sup.verified)
    if st == "modelled":
        text = (f"{framework} {version} is inside the range optbridge models ({sup.requirement}) but was not verified "
                f"(verified: {verified}); `optbridge conform` runs the conformance suite against it")
    else:
        text = (f"{framework} {version} is outside the versions optbridge models ({sup.requirement}; verified: "
                f"{verified}): its schedulers and optimizers may compute other values than the plan says; "
                "docs/support.md says what differs")
    _WARNED.add(framework)
    warnings.warn(text, VersionWarning, stacklevel=3)
    return st


#: Backend-name prefixes -> framework (``"mindspore-cell"`` -> mindspore).
_BACKENDS = {"torch": "torch", "mindspore": "mindspore", "megengine": "megengine"}


def framework_of_backend(name: str) -> str | None:
    """The framework a trace backend runs (``"mindspore-list"`` -> ``"mindspore"``), or None (``"reference"``)."""
    return _BACKENDS.get(str(name).partition("-")[0])
