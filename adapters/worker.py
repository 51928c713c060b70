"""The backend-neutral worker protocol: trace a plan in another Python interpreter.

A framework may need its own environment (MegEngine has wheels only for
Python <= 3.10). The worker runs ``optbridge.trace`` there and sends the
:class:`~optbridge.Trace` back, so one program can compare backends that live in
different environments::

    python -m optbridge_adapters.worker  < request.json  > response.json

Request (one JSON document on stdin)::

    {"protocol": 1, "backend": "megengine", "plan": optbridge.to_dict(plan),
     "steps": 1000, "metrics": [..] or null, "options": {...}}

Response (one JSON document on stdout)::

    {"protocol": 1, "trace": {"groups": [...], "backend": "...",
                              "fidelity": [{"backend", "group", "hyper", "form", "detail"}, ...],
                              "data": {hyper: ARRAY}, "applied": {hyper: ARRAY}}}
    {"protocol": 1, "error": {"type": "UnsupportedError", "message": "...", "fields": {...},
                              "traceback": "..."}}

``ARRAY`` is ``{"dtype": "<f8", "shape": [groups, steps], "base64": ...}``: the
little-endian float64 bytes, so values arrive bit-exact (no decimal round trip).
Errors raised by optbridge come back as the same class with the same message
(``ConfigError`` keeps path/rule/value, ``UnsupportedError`` node/backend/reason);
builtin exceptions come back as the same builtin; anything else as
:class:`WorkerError`.

The worker writes its response through a private duplicate of stdout and points
file descriptor 1 at stderr first, so a framework that prints to stdout (MegEngine
prints its CUDA banner there) cannot corrupt the response. The client runs it in
a fresh empty temporary directory: never in ``site-packages`` (MegEngine ships a
module that shadows the stdlib ``random`` there) and never where stray ``.py``
files could shadow modules.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from optbridge import errors as _errors
from optbridge.errors import BackendUnavailable, OptbridgeError

__all__ = ["run_in_worker", "encode_array", "decode_array", "encode_trace", "decode_trace",
           "handle", "main", "WorkerError", "PROTOCOL"]

PROTOCOL = 1
WORKER_ENV = "OPTBRIDGE_WORKER"
DEFAULT_TIMEOUT = 600.0


class WorkerError(OptbridgeError, RuntimeError):
    """The worker failed in a way that is not an optbridge or builtin exception.

    Attributes:
        remote_type: Exception class name in the worker.
        remote_traceback: The worker's traceback text.
    """

    def __init__(self, message: str, remote_type: str = "", remote_traceback: str = "") -> None:
        super().__init__(message)
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback


# --------------------------------------------------------------------------- arrays and traces

def encode_array(a: Any) -> dict[str, Any]:
    """``{"dtype": "<f8", "shape": [...], "base64": ...}``: float64 bytes, bit-exact."""
    import numpy as np
    arr = np.ascontiguousarray(np.asarray(a, dtype=np.float64), dtype="<f8")
    return {"dtype": "<f8", "shape": list(arr.shape), "base64": base64.b64encode(arr.tobytes()).decode("ascii")}


def decode_array(d: Mapping[str, Any]) -> Any:
    """The inverse of :func:`encode_array` (a writeable native float64 array)."""
    import numpy as np
    if d.get("dtype") != "<f8":
        raise WorkerError(f"worker protocol: unsupported array dtype {d.get('dtype')!r}")
    raw = base64.b64decode(d["base64"])
    shape = tuple(int(x) for x in d["shape"])
    return np.frombuffer(raw, dtype="<f8").reshape(shape).astype(np.float64, copy=True)


def _fidelity_to_dict(f: Any) -> dict[str, Any]:
    import dataclasses
    if dataclasses.is_dataclass(f):
        return dataclasses.asdict(f)
    return {"text": str(f)}


def encode_trace(tr: Any) -> dict[str, Any]:
    """A :class:`~optbridge.Trace` as plain JSON data."""
    return {
        "groups": list(tr.groups),
        "backend": tr.backend,
        "fidelity": [_fidelity_to_dict(f) for f in tr.fidelity],
        "data": {h: encode_array(a) for h, a in tr.data.items()},
        "applied": {h: encode_array(a) for h, a in tr.applied.items()},
    }


def decode_trace(d: Mapping[str, Any]) -> Any:
    """The inverse of :func:`encode_trace`."""
    from optbridge.report import Fidelity
    from optbridge.tracing import Trace
    fid = tuple(Fidelity(**f) if "form" in f else f.get("text", "") for f in d.get("fidelity", ()))
    return Trace(tuple(d["groups"]), {h: decode_array(a) for h, a in d["data"].items()},
                 d["backend"], fid, {h: decode_array(a) for h, a in d.get("applied", {}).items()})


# --------------------------------------------------------------------------- errors

_OPTBRIDGE_ERRORS = {name: getattr(_errors, name) for name in _errors.__all__}
_BUILTIN_ERRORS = {c.__name__: c for c in (
    ValueError, TypeError, KeyError, IndexError, AssertionError, RuntimeError, NotImplementedError,
    ImportError, ModuleNotFoundError, ZeroDivisionError, ArithmeticError, OverflowError,
    FloatingPointError, AttributeError, LookupError, MemoryError, RecursionError)}


def _jsonable(v: Any) -> Any:
    try:
        json.dumps(v)
        return v
    except (TypeError, ValueError):
        return repr(v)


def encode_error(e: BaseException) -> dict[str, Any]:
    """An exception as ``{"type", "message", "fields", "args", "traceback"}``."""
    fields: dict[str, Any] = {}
    if isinstance(e, _errors.ConfigError):
        fields = {"path": e.path, "rule": e.rule, "value": _jsonable(e.value), "show_value": e.show_value}
    elif isinstance(e, _errors.UnsupportedError):
        fields = {"node": e.node, "backend": e.backend, "reason": e.reason}
    name = type(e).__name__
    for cls in type(e).__mro__:  # the nearest class the caller can rebuild (a subclass maps to its base)
        if _OPTBRIDGE_ERRORS.get(cls.__name__) is cls or _BUILTIN_ERRORS.get(cls.__name__) is cls:
            name = cls.__name__
            break
    return {"type": name, "message": str(e), "fields": fields, "args": _jsonable(list(e.args)),
            "traceback": "".join(traceback.format_exception(type(e), e, e.__traceback__))}


def decode_error(d: Mapping[str, Any], *, where: str = "the worker") -> BaseException:
    """The exception to raise in the caller for an encoded worker error."""
    name, message = str(d.get("type", "")), str(d.get("message", ""))
    fields, tb = d.get("fields") or {}, str(d.get("traceback", ""))
    cls = _OPTBRIDGE_ERRORS.get(name)
    if cls is not None:
        if cls is _errors.ConfigError:
            err: BaseException = cls(fields.get("path", ""), fields.get("rule", message), fields.get("value"),
                                     show_value=bool(fields.get("show_value", True)))
        elif cls is _errors.UnsupportedError:
            err = cls(fields.get("node", ""), fields.get("backend", ""), fields.get("reason", message))
        else:
            err = cls(message)
        err.args = (message,)  # the message exactly as the worker formatted it
        err.remote_traceback = tb  # type: ignore[attr-defined]
        return err
    bcls = _BUILTIN_ERRORS.get(name)
    if bcls is not None:
        args = d.get("args")
        err = bcls(*args) if isinstance(args, list) and args else bcls(message)
        err.remote_traceback = tb  # type: ignore[attr-defined]
        return err
    return WorkerError(f"{name} in {where}: {message}", name, tb)


# --------------------------------------------------------------------------- worker side

def handle(request: Mapping[str, Any]) -> dict[str, Any]:
    """Serve one request: run ``optbridge.trace`` and encode the result or the error."""
    try:
        import optbridge
        if not isinstance(request, Mapping):
            raise _errors.ConfigError("request", "must be a JSON object", type(request).__name__)
        proto = request.get("protocol", PROTOCOL)
        if proto != PROTOCOL:
            raise _errors.ConfigError("request.protocol", f"must be {PROTOCOL} (this worker's protocol)", proto)
        backend = request.get("backend")
        if not isinstance(backend, str):
            raise _errors.ConfigError("request.backend", "must be a backend name", backend)
        options = request.get("options") or {}
        if not isinstance(options, Mapping):
            raise _errors.ConfigError("request.options", "must be a JSON object", options)
        plan = optbridge.from_dict(request.get("plan"))
        tr = optbridge.trace(plan, request.get("steps"), backend=backend, metrics=request.get("metrics"),
                             **dict(options))
        return {"protocol": PROTOCOL, "trace": encode_trace(tr)}
    except Exception as e:  # every failure goes back as data; the caller re-raises it
        return {"protocol": PROTOCOL, "error": encode_error(e)}


def main() -> int:
    """``python -m optbridge_adapters.worker``: one request on stdin, one response on stdout."""
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # from here on, whatever prints to stdout (C libraries included) lands on stderr
    os.environ[WORKER_ENV] = "1"
    try:
        request = json.load(sys.stdin)
    except ValueError as e:
        response = {"protocol": PROTOCOL, "error": encode_error(
            _errors.ConfigError("request", f"is not valid JSON ({e})", None, show_value=False))}
    else:
        response = handle(request)
    json.dump(response, out)
    out.write("\n")
    out.flush()
    return 0


# --------------------------------------------------------------------------- client side

def run_in_worker(python: str, backend: str, plan: Any, steps: int, metrics: Sequence[float] | None = None, *,
                  timeout: float | None = None, hint: str | None = None, **options: Any) -> Any:
    """``optbridge.trace(plan, steps, backend=backend, metrics=metrics, **options)`` run by ``python``.

    Works for any backend and interpreter that has optbridge installed.

    Args:
        python: The interpreter (path).
        backend: Backend name, as for :func:`optbridge.trace`.
        plan: The plan (sent as ``optbridge.to_dict(plan)``).
        steps: Number of updates.
        metrics: Plateau metric series.
        timeout: Seconds to wait (default 600).
        hint: Appended to BackendUnavailable messages (how to create the interpreter).
        **options: Backend options; must be JSON-serializable.

    Returns:
        The :class:`~optbridge.Trace`, arrays bit-exact.

    Raises:
        BackendUnavailable: the interpreter does not exist, does not start, or lacks optbridge.
        The worker's own exception class for errors raised there (ConfigError,
        UnsupportedError, EvaluationError, BackendUnavailable, builtins), else WorkerError.
    """
    import optbridge
    from optbridge.errors import ConfigError

    tail = f"; {hint}" if hint else ""
    if not python or not os.path.isfile(python) or not os.access(python, os.X_OK):
        raise BackendUnavailable(f"backend {backend!r}: interpreter {python!r} does not exist or is not executable{tail}")
    try:
        payload = json.dumps({
            "protocol": PROTOCOL, "backend": backend, "plan": optbridge.to_dict(plan), "steps": steps,
            "metrics": None if metrics is None else [float(m) for m in metrics], "options": options,
        }, allow_nan=True)
    except (TypeError, ValueError) as e:
        raise ConfigError("options", f"must be JSON-serializable to reach the worker ({e})", options) from None
    env = dict(os.environ)
    env[WORKER_ENV] = "1"
    env.setdefault("PYTHONIOENCODING", "utf-8")
    with tempfile.TemporaryDirectory(prefix="optbridge-worker-") as cwd:
        try:
            proc = subprocess.run([python, "-m", "optbridge_adapters.worker"], input=payload, capture_output=True,
                                  text=True, encoding="utf-8", cwd=cwd, env=env,
                                  timeout=DEFAULT_TIMEOUT if timeout is None else timeout)
        except OSError as e:
            raise BackendUnavailable(f"backend {backend!r}: cannot start {python} ({e}){tail}") from e
        except subprocess.TimeoutExpired as e:
            raise WorkerError(f"backend {backend!r}: the worker under {python} did not answer within {e.timeout} s") from None
    stderr = proc.stderr or ""
    text = (proc.stdout or "").strip()
    if proc.returncode != 0 or not text:
        if "No module named 'optbridge" in stderr or "No module named optbridge" in stderr:
            raise BackendUnavailable(
                f"backend {backend!r}: optbridge is not installed in {python} (pip install -e <optbridge checkout> "
                f"with that interpreter){tail}")
        raise WorkerError(f"backend {backend!r}: the worker under {python} exited with code {proc.returncode} "
                          f"and no response; its stderr ends with:\n{_tail(stderr)}")
    try:
        response = json.loads(text)
    except ValueError:
        raise WorkerError(f"backend {backend!r}: the worker under {python} sent something that is not JSON: "
                          f"{text[:200]!r}; stderr ends with:\n{_tail(stderr)}") from None
    if "error" in response:
        raise decode_error(response["error"], where=f"the {backend!r} worker ({python})")
    return decode_trace(response["trace"])


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


if __name__ == "__main__":
    sys.exit(main())
