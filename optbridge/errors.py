"""optbridge's exceptions.

Every exception subclasses :class:`OptbridgeError` and a builtin, so callers can
catch either (``except ValueError`` still works for a bad config).

Messages follow one shape: ``<path>: <rule>, got <value>``, where ``path`` is the
location of the offending field in the config (``schedule.parts[1].T_max``).
"""

from __future__ import annotations

__all__ = [
    "join_path",
    "OptbridgeError",
    "ConfigError",
    "UnsupportedError",
    "BackendUnavailable",
    "EvaluationError",
    "NotTraced",
    "OptbridgeWarning",
]


def join_path(prefix: str, name: str) -> str:
    """``prefix.name``, or ``prefix[0]`` when ``name`` is an index; either side may be empty."""
    if not prefix:
        return name
    if not name:
        return prefix
    return prefix + name if name.startswith("[") else f"{prefix}.{name}"


class OptbridgeError(Exception):
    """Base class of every error optbridge raises on purpose."""


class ConfigError(OptbridgeError, ValueError):
    """A config, plan or node is invalid.

    Attributes:
        path: Dotted/indexed location of the bad field (``"schedule.parts[1].T_max"``),
            or ``""`` for the whole document.
        rule: What the field must be (``"must be a positive integer"``).
        value: The offending value (kept for programmatic use).
    """

    def __init__(self, path: str, rule: str, value: object = None, *, show_value: bool = True) -> None:
        self.path = path
        self.rule = rule
        self.value = value
        self.show_value = show_value
        text = f"{path}: {rule}" if path else rule
        if show_value:
            text += f", got {_short(value)}"
        super().__init__(text)


    def under(self, prefix: str) -> ConfigError:
        """The same error with its path moved under ``prefix`` (``"schedule"`` + ``"steps"``)."""
        if not prefix:
            return self
        return ConfigError(join_path(prefix, self.path), self.rule, self.value, show_value=self.show_value)


class UnsupportedError(OptbridgeError, NotImplementedError):
    """A backend cannot express a node exactly, and no exact fallback exists.

    Attributes:
        node: Path or kind of the node.
        backend: Backend name.
        reason: Why it cannot be expressed.
    """

    def __init__(self, node: str, backend: str, reason: str) -> None:
        self.node, self.backend, self.reason = node, backend, reason
        super().__init__(f"{node}: cannot run on backend {backend!r}: {reason}")


class BackendUnavailable(OptbridgeError, ImportError):
    """A backend's framework is not installed (the message says how to get it)."""


class EvaluationError(OptbridgeError, ValueError):
    """A schedule cannot be evaluated for the requested steps (e.g. past OneCycleLR's end)."""


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class NotTraced(OptbridgeError, KeyError):
    """A trace was asked for a hyperparameter or group it does not hold (the message lists what it has)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class OptbridgeWarning(UserWarning):
    """Base class of every warning optbridge gives (filter them all with this class)."""
