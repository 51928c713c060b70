"""The backend-neutral worker: trace a plan in another Python interpreter, one persistent process per interpreter.

A framework may need its own environment (MegEngine has wheels only for
Python <= 3.10). The worker runs ``optbridge.trace`` there and sends the
:class:`~optbridge.Trace` back, so one program can compare backends that live in
different environments. :func:`run_in_worker` keeps **one worker process per
(interpreter, backend)**, started on first use and reused by every later call (a
whole conformance run or trace batch pays MegEngine's import once), restarted when
it died, and shut down when this interpreter exits. Backends never share a worker:
a framework may change process-wide floating-point state (``import megengine``
switches the CPU to flush-to-zero), which must not leak into another backend.

**Framing.** The persistent worker (``python -m optbridge_adapters.worker --serve``)
reads requests from stdin and writes responses to stdout, each one frame: the
ASCII decimal length of the body, a newline, then the body (UTF-8 JSON). On start
it sends a ready frame ``{"protocol": 1, "ready": true, "pid": ..., "python": ...}``.
A request ``{"op": "shutdown"}`` (or EOF on stdin) ends it. Without ``--serve`` the
module serves one unframed request (``python -m optbridge_adapters.worker <
request.json > response.json``), for use by hand.

Request body::

    {"protocol": 1, "backend": "megengine", "plan": optbridge.to_dict(plan),
     "steps": 1000, "metrics": [..] or null, "options": {...}}

Response body::

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

**Failures.** A worker that dies while serving a request (killed, crashed, out of
memory) raises :class:`WorkerError` with its exit status and the tail of its
stderr, and the next call starts a fresh worker; one that does not answer within
the timeout is stopped and raises :class:`WorkerError`; it never hangs. A missing
interpreter, or one without optbridge, raises
:class:`~optbridge.errors.BackendUnavailable`.

The worker writes its frames through a private duplicate of stdout and points file
descriptor 1 at stderr first, so a framework that prints to stdout (MegEngine prints
its CUDA banner there) cannot corrupt a response; stderr goes to a file the client
reads only on failure (a pipe nobody reads would block a chatty worker). The worker
runs in a fresh empty temporary directory: never in ``site-packages`` (MegEngine
ships a module that shadows the stdlib ``random`` there) and never where stray
``.py`` files could shadow modules. POSIX only (the client waits with ``select``).
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from typing import IO, Any

from optbridge import errors as _errors
from optbridge.errors import BackendUnavailable, OptbridgeError

__all__ = ["run_in_worker", "encode_array", "decode_array", "encode_trace", "decode_trace", "encode_error",
           "decode_error", "handle", "main", "serve", "read_frame", "write_frame", "worker_pid", "shutdown_workers",
           "WorkerError", "PROTOCOL", "DEFAULT_TIMEOUT", "START_TIMEOUT", "IDLE_SECONDS"]

PROTOCOL = 1
WORKER_ENV = "OPTBRIDGE_WORKER"
#: Seconds a request may take before the worker is stopped.
DEFAULT_TIMEOUT = 600.0
#: Seconds a new worker may take to send its ready frame.
START_TIMEOUT = 120.0
#: Seconds a worker may sit idle before it is stopped; the next call starts a new one (~1.5 s for MegEngine).
#: An idle MegEngine 1.13 interpreter keeps ~25% of a core busy (its ``CompNodeSync`` thread polls every 10 us,
#: measured: 1.2 s of CPU per 5 s idle), which a user's notebook or training script would otherwise pay until exit.
IDLE_SECONDS = 60.0
_MAX_HEADER = 32


class WorkerError(OptbridgeError, RuntimeError):
    """The worker failed in a way that is not an optbridge or builtin exception (it died, hung, or garbled a frame).

    Attributes:
        remote_type: Exception class name in the worker ("" when the worker died).
        remote_traceback: The worker's traceback text, or the tail of its stderr.
        returncode: The worker's exit status when it died (negative: killed by that signal), else None.
    """

    def __init__(self, message: str, remote_type: str = "", remote_traceback: str = "",
                 returncode: int | None = None) -> None:
        super().__init__(message)
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback
        self.returncode = returncode


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
    if dataclasses.is_dataclass(f) and not isinstance(f, type):
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
        setattr(err, "remote_traceback", tb)  # noqa: B010 - an attribute the builtin classes do not declare
        return err
    bcls = _BUILTIN_ERRORS.get(name)
    if bcls is not None:
        args = d.get("args")
        err = bcls(*args) if isinstance(args, list) and args else bcls(message)
        setattr(err, "remote_traceback", tb)  # noqa: B010 - an attribute the builtin classes do not declare
        return err
    return WorkerError(f"{name} in {where}: {message}", name, tb)


# --------------------------------------------------------------------------- framing

def write_frame(stream: IO[bytes], obj: Any) -> None:
    """Write ``obj`` as one frame: ``b"<length>\\n"`` then its UTF-8 JSON."""
    _write_body(stream, json.dumps(obj, allow_nan=True).encode("utf-8"))


def _write_body(stream: IO[bytes], body: bytes) -> None:
    stream.write(b"%d\n" % len(body) + body)
    stream.flush()


def read_frame(stream: IO[bytes]) -> Any:
    """Read one frame (blocking); EOFError at the end of the stream.

    Raises:
        EOFError: the stream ended (before or inside a frame).
        WorkerError: the header is not a length.
    """
    header = stream.readline(_MAX_HEADER)
    if not header:
        raise EOFError("end of stream")
    if not header.endswith(b"\n") or not header[:-1].isdigit():
        raise WorkerError(f"worker protocol: a frame must start with its length and a newline, got {header[:40]!r}")
    n = int(header)
    body = stream.read(n)
    if len(body) != n:
        raise EOFError(f"the stream ended inside a frame ({len(body)} of {n} bytes)")
    return json.loads(body.decode("utf-8"))


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


def _private_stdout() -> IO[bytes]:
    """A private duplicate of stdout for the responses; fd 1 then points at stderr (so C-level chatter goes there)."""
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    os.environ[WORKER_ENV] = "1"
    return out


def serve(stdin: IO[bytes] | None = None) -> int:
    """``python -m optbridge_adapters.worker --serve``: answer framed requests until EOF or ``{"op": "shutdown"}``."""
    inp = sys.stdin.buffer if stdin is None else stdin
    out = _private_stdout()
    sys.stderr.write(f"optbridge worker {os.getpid()}: serving framed requests (python {sys.version.split()[0]}, "
                     f"{sys.executable})\n")
    sys.stderr.flush()
    write_frame(out, {"protocol": PROTOCOL, "ready": True, "pid": os.getpid(), "python": sys.version.split()[0]})
    while True:
        try:
            request = read_frame(inp)
        except EOFError:
            return 0
        except (WorkerError, ValueError) as e:  # a garbled frame: the stream cannot be resynchronised
            write_frame(out, {"protocol": PROTOCOL, "error": encode_error(
                _errors.ConfigError("request", f"is not a valid frame ({e})", None, show_value=False))})
            return 2
        op = request.get("op", "trace") if isinstance(request, Mapping) else "trace"
        if op == "shutdown":
            write_frame(out, {"protocol": PROTOCOL, "bye": True})
            return 0
        if op == "ping":
            write_frame(out, {"protocol": PROTOCOL, "pid": os.getpid()})
            continue
        write_frame(out, handle(request))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m optbridge_adapters.worker [--serve]``: framed requests with --serve, else one unframed request."""
    args = sys.argv[1:] if argv is None else list(argv)
    if "--serve" in args:
        return serve()
    out = _private_stdout()
    try:
        request = json.load(sys.stdin)
    except ValueError as e:
        response = {"protocol": PROTOCOL, "error": encode_error(
            _errors.ConfigError("request", f"is not valid JSON ({e})", None, show_value=False))}
    else:
        response = handle(request)
    out.write(json.dumps(response).encode("utf-8") + b"\n")
    out.flush()
    return 0


# --------------------------------------------------------------------------- client side

class _Worker:
    """One persistent worker process (client side)."""

    def __init__(self, python: str, backend: str, hint: str | None) -> None:
        self.python, self.backend, self.hint = python, backend, hint
        self.owner = os.getpid()
        self.lock = threading.Lock()
        self._dir = tempfile.TemporaryDirectory(prefix="optbridge-worker-")
        self._err = open(os.path.join(self._dir.name, "stderr.log"), "w+b")  # noqa: SIM115 - closed in close()
        self._buf = bytearray()
        env = dict(os.environ)
        env[WORKER_ENV] = "1"
        env.setdefault("PYTHONIOENCODING", "utf-8")
        try:
            self.proc = subprocess.Popen([python, "-m", "optbridge_adapters.worker", "--serve"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=self._err, cwd=self._dir.name, env=env,
                                         bufsize=0)
        except OSError as e:
            self._cleanup()
            raise BackendUnavailable(f"backend {backend!r}: cannot start {python} ({e}){self._hint()}") from e
        hello = self._receive(START_TIMEOUT, "start")
        if not isinstance(hello, Mapping) or not hello.get("ready") or hello.get("protocol") != PROTOCOL:
            self.close()
            raise WorkerError(f"backend {backend!r}: the worker under {python} did not start with protocol {PROTOCOL} "
                              f"(it sent {str(hello)[:200]})")
        self.pid = int(hello.get("pid", self.proc.pid))
        self.last_used = time.monotonic()
        threading.Thread(target=self._stop_when_idle, name=f"optbridge-worker-{self.pid}-idle", daemon=True).start()

    def _stop_when_idle(self) -> None:
        """Stop this worker once it has been idle :data:`IDLE_SECONDS` (a thread per worker, ends with it)."""
        key = (self.python, self.backend)
        while True:
            time.sleep(max(0.05, self.last_used + IDLE_SECONDS - time.monotonic()))
            with _POOL_LOCK:
                if _POOL.get(key) is not self or not self.alive():
                    return
                if time.monotonic() - self.last_used < IDLE_SECONDS or not self.lock.acquire(blocking=False):
                    continue  # used since, or serving a request now
                del _POOL[key]
            try:
                self.close()
            finally:
                self.lock.release()
            return

    def _hint(self) -> str:
        return f"; {self.hint}" if self.hint else ""

    def alive(self) -> bool:
        return self.owner == os.getpid() and self.proc.poll() is None

    def stderr_tail(self, lines: int = 15) -> str:
        try:
            if not self._err.closed:
                self._err.flush()
            with open(self._err.name, "rb") as f:
                f.seek(max(0, os.path.getsize(self._err.name) - 65536))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def request(self, body: bytes, timeout: float) -> Any:
        """Send one request frame (its JSON body) and return the response (raises WorkerError when the worker fails)."""
        assert self.proc.stdin is not None
        try:
            _write_body(self.proc.stdin, body)
        except (BrokenPipeError, OSError):
            self._died("while receiving a request")
        return self._receive(timeout, "request")

    def _receive(self, timeout: float, what: str) -> Any:
        self._limit = timeout
        deadline = time.monotonic() + timeout
        header = self._read_until(b"\n", deadline, what)
        if not header[:-1].isdigit():
            tail = self.stderr_tail()
            self.close()
            raise WorkerError(f"backend {self.backend!r}: the worker under {self.python} sent a garbled frame "
                              f"header {bytes(header[:40])!r}; stderr ends with:\n{tail}")
        body = self._read_exact(int(header[:-1]), deadline, what)
        try:
            return json.loads(body.decode("utf-8"))
        except ValueError:
            self.close()
            raise WorkerError(f"backend {self.backend!r}: the worker under {self.python} sent something that is not "
                              f"JSON: {bytes(body[:200])!r}") from None

    def _fill(self, deadline: float, what: str) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        left = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(0.0, left))
        if not ready:
            self._timeout(what, deadline)
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            self._died("at start-up" if what == "start" else "while serving a request")
        self._buf += chunk

    def _read_until(self, sep: bytes, deadline: float, what: str) -> bytes:
        while True:
            i = self._buf.find(sep)
            if i >= 0:
                out = bytes(self._buf[:i + 1])
                del self._buf[:i + 1]
                return out
            if len(self._buf) > _MAX_HEADER:
                self.close()
                raise WorkerError(f"backend {self.backend!r}: the worker under {self.python} sent a frame without "
                                  f"a length header ({bytes(self._buf[:40])!r})")
            self._fill(deadline, what)

    def _read_exact(self, n: int, deadline: float, what: str) -> bytes:
        while len(self._buf) < n:
            self._fill(deadline, what)
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def _timeout(self, what: str, deadline: float) -> None:
        tail = self.stderr_tail()
        self.close(kill=True)
        verb = "start" if what == "start" else "answer"
        raise WorkerError(f"backend {self.backend!r}: the worker under {self.python} did not {verb} within "
                          f"{self._limit:g} s; it was stopped, and the next call starts a fresh one. Its stderr ends "
                          f"with:\n{tail or '(nothing)'}", remote_traceback=tail)

    def _died(self, when: str) -> None:
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        tail = self.stderr_tail()
        self.close()
        if "No module named 'optbridge" in tail or "No module named optbridge" in tail:
            raise BackendUnavailable(
                f"backend {self.backend!r}: optbridge is not installed in {self.python} (pip install -e <optbridge "
                f"checkout> with that interpreter){self._hint()}")
        how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        raise WorkerError(f"backend {self.backend!r}: the worker under {self.python} (pid {self.proc.pid}) {how} "
                          f"{when}; the next call starts a fresh one. Its stderr ends with:\n"
                          f"{tail or '(nothing)'}", remote_traceback=tail, returncode=code)

    def close(self, kill: bool = False) -> None:
        """Stop the worker (EOF on its stdin; killed after 5 s, or at once with ``kill``) and remove its files."""
        if self.owner == os.getpid() and self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                try:
                    assert self.proc.stdin is not None
                    self.proc.stdin.close()
                except OSError:
                    pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        self._cleanup()

    def _cleanup(self) -> None:
        try:
            self._err.close()
        except OSError:
            pass
        if self.owner == os.getpid():
            self._dir.cleanup()


_POOL: dict[tuple[str, str], _Worker] = {}
_POOL_LOCK = threading.Lock()


def _forget_after_fork() -> None:
    _POOL.clear()  # a forked child must not talk to its parent's workers


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def shutdown_workers(python: str | None = None) -> None:
    """Stop the workers this interpreter started (all of them, or those under ``python``); also run at exit."""
    with _POOL_LOCK:
        keys = [k for k in _POOL if python is None or k[0] == python]
        workers = [_POOL.pop(k) for k in keys]
    for w in workers:
        w.close()


atexit.register(shutdown_workers)


def worker_pid(python: str, backend: str) -> int | None:
    """The pid of the live worker serving ``backend`` under ``python``, or None."""
    w = _POOL.get((python, backend))
    return w.pid if w is not None and w.alive() else None


def _worker(python: str, backend: str, hint: str | None) -> _Worker:
    with _POOL_LOCK:
        w = _POOL.get((python, backend))
        if w is not None and w.alive():
            w.last_used = time.monotonic()  # under the pool lock: the idle check sees it (_stop_when_idle)
            return w
        if w is not None:
            w.close()  # it died since its last request
        w = _POOL[(python, backend)] = _Worker(python, backend, hint)
        return w


def run_in_worker(python: str, backend: str, plan: Any, steps: int, metrics: Sequence[float] | None = None, *,
                  timeout: float | None = None, hint: str | None = None, **options: Any) -> Any:
    """``optbridge.trace(plan, steps, backend=backend, metrics=metrics, **options)`` run by ``python``.

    Works for any backend and interpreter that has optbridge installed. The worker
    process is started on the first call for ``(python, backend)`` and reused.

    Args:
        python: The interpreter (path).
        backend: Backend name, as for :func:`optbridge.trace`.
        plan: The plan (sent as ``optbridge.to_dict(plan)``).
        steps: Number of updates.
        metrics: Plateau metric series.
        timeout: Seconds to wait for the answer (default :data:`DEFAULT_TIMEOUT`); the
            worker is stopped when it does not answer in time.
        hint: Appended to BackendUnavailable messages (how to create the interpreter).
        **options: Backend options; must be JSON-serializable.

    Returns:
        The :class:`~optbridge.Trace`, arrays bit-exact.

    Raises:
        BackendUnavailable: the interpreter does not exist, does not start, or lacks optbridge.
        WorkerError: the worker died, hung or garbled its answer (the next call starts a fresh one).
        The worker's own exception class for errors raised there (ConfigError,
        UnsupportedError, EvaluationError, BackendUnavailable, builtins), else WorkerError.
    """
    import optbridge
    from optbridge.errors import ConfigError

    tail = f"; {hint}" if hint else ""
    if not python or not os.path.isfile(python) or not os.access(python, os.X_OK):
        raise BackendUnavailable(f"backend {backend!r}: interpreter {python!r} does not exist or is not "
                                 f"executable{tail}")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise ConfigError("timeout", "must be a positive number of seconds", timeout)
    try:
        payload = {"protocol": PROTOCOL, "backend": backend, "plan": optbridge.to_dict(plan), "steps": steps,
                   "metrics": None if metrics is None else [float(m) for m in metrics], "options": options}
        body = json.dumps(payload, allow_nan=True).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise ConfigError("options", f"must be JSON-serializable to reach the worker ({e})", options) from None
    w = _worker(python, backend, hint)
    with w.lock:
        try:
            response = w.request(body, DEFAULT_TIMEOUT if timeout is None else float(timeout))
        except (WorkerError, BackendUnavailable):
            with _POOL_LOCK:
                if _POOL.get((python, backend)) is w:
                    del _POOL[(python, backend)]
            raise
        finally:
            w.last_used = time.monotonic()
    if not isinstance(response, Mapping):
        raise WorkerError(f"backend {backend!r}: the worker under {python} answered {str(response)[:200]}")
    if "error" in response:
        raise decode_error(response["error"], where=f"the {backend!r} worker ({python})")
    return decode_trace(response["trace"])


if __name__ == "__main__":
    sys.exit(main())
