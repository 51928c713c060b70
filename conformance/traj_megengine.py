"""MegEngine trajectories through ``optbridge.to_megengine``, in this interpreter or in MegEngine's.

The contract is in :mod:`optbridge_conformance.trajectory`. Where ``megengine`` is
importable the run happens here; elsewhere (MegEngine lives in its own Python 3.10
environment) one persistent server process under the MegEngine interpreter serves
every trajectory of this process::

    python -m optbridge_conformance.traj_megengine --serve

Requests and responses are one JSON document per line; arrays travel as the
worker protocol's bit-exact base64 float64 (:func:`optbridge_adapters.worker.encode_array`;
float32 values survive float64 exactly), errors as its encoded exceptions (the
same optbridge class comes back). The server answers on a private duplicate of
stdout (MegEngine prints to fd 1) and runs in an empty temporary directory (never in
``site-packages``, where MegEngine ships a module that shadows ``random``).
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from typing import IO, Any

import numpy as np

from .drive import MetricFeed

__all__ = ["trajectory", "serve", "run_here", "TIMEOUT", "shutdown_servers"]

#: Seconds one trajectory may take in the server (start-up included).
TIMEOUT = 300.0


def run_here(plan: Any, steps: int, init: Mapping[str, np.ndarray], grads: np.ndarray,
             metrics: Sequence[float] | None = None) -> np.ndarray:
    """The trajectory in this interpreter (needs ``megengine``)."""
    import megengine as mge

    import optbridge
    from optbridge.errors import ConfigError
    params = {n: mge.Parameter(np.array(v, dtype=np.float32)) for n, v in init.items()}
    feed = MetricFeed(plan, metrics)
    try:
        setup = optbridge.to_megengine(plan, params, total_steps=steps, metrics=feed.upfront)
    except ConfigError as e:  # to_megengine without metrics= yet: the metric goes to scheduler.step(metric=)
        if feed.upfront is None or e.path != "metrics":
            raise
        feed.upfront = None
        setup = optbridge.to_megengine(plan, params, total_steps=steps)
    sizes = np.cumsum([0] + [int(np.asarray(v).size) for v in init.values()])
    g32 = np.ascontiguousarray(grads, dtype=np.float32)
    plist = list(params.values())
    clip = any(gr.clip is not None for gr in plan.groups)
    out = np.empty((steps, int(sizes[-1])), dtype=np.float32)
    for k in range(steps):
        for i, p in enumerate(plist):
            p.grad = mge.tensor(g32[k, sizes[i]:sizes[i + 1]])
        if clip:
            setup.clip_gradients()
        setup.optimizer.step()
        out[k] = np.concatenate([p.numpy().reshape(-1) for p in plist])
        if k + 1 < steps:
            m = feed.after(k)
            setup.scheduler.step() if m is None else setup.scheduler.step(metric=m)
    return out


def trajectory(plan: Any, steps: int, init: Mapping[str, np.ndarray], grads: np.ndarray, *,
               metrics: Sequence[float] | None = None) -> np.ndarray:
    """The ``megengine`` trajectory: in this process when MegEngine runs here (``runs_here``), else in its worker."""
    from optbridge_adapters.megengine.backend import megengine_python, runs_here
    if runs_here():
        return run_here(plan, steps, init, grads, metrics)
    from optbridge.serialize import to_dict
    from optbridge_adapters.worker import decode_array, decode_error, encode_array
    request = {"plan": to_dict(plan), "steps": int(steps),
               "init": {n: encode_array(np.asarray(v, dtype=np.float32)) for n, v in init.items()},
               "grads": encode_array(np.asarray(grads, dtype=np.float32)),
               "metrics": None if metrics is None else [float(m) for m in metrics]}
    response = _server(megengine_python()).call(request)
    if "error" in response:
        raise decode_error(response["error"], where="the MegEngine trajectory server")
    return np.asarray(decode_array(response["trajectory"]), dtype=np.float32)


# --------------------------------------------------------------------------- the server process (client side)

class _Server:
    def __init__(self, python: str) -> None:
        self.python, self.owner = python, os.getpid()
        self.dir = tempfile.TemporaryDirectory(prefix="optbridge-traj-")
        self.err = open(os.path.join(self.dir.name, "stderr.log"), "w+b")  # noqa: SIM115 - closed in close()
        env = dict(os.environ, OPTBRIDGE_WORKER="1", PYTHONIOENCODING="utf-8")
        self.proc = subprocess.Popen([python, "-m", "optbridge_conformance.traj_megengine", "--serve"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err,
                                     cwd=self.dir.name, env=env, bufsize=0)
        self.buf = b""

    def alive(self) -> bool:
        return self.owner == os.getpid() and self.proc.poll() is None

    def call(self, request: Mapping[str, Any]) -> dict[str, Any]:
        from optbridge_adapters.worker import WorkerError
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(request).encode("utf-8") + b"\n")
        except OSError:
            self._fail(f"died before the request (exit status {self.proc.poll()})")
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            ready, _, _ = select.select([fd], [], [], TIMEOUT)
            if not ready:
                self.close(kill=True)
                raise WorkerError(f"the MegEngine trajectory server under {self.python} did not answer within "
                                  f"{TIMEOUT:g} s; it was stopped")
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                self._fail(f"exited with status {self.proc.wait()} while serving a request")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        out: dict[str, Any] = json.loads(line.decode("utf-8"))
        return out

    def _fail(self, what: str) -> None:
        from optbridge_adapters.worker import WorkerError
        self.err.flush()
        with open(self.err.name, "rb") as f:
            tail = "\n".join(f.read().decode("utf-8", "replace").rstrip().splitlines()[-15:])
        self.close(kill=True)
        raise WorkerError(f"the MegEngine trajectory server under {self.python} {what}; its stderr ends with:\n{tail}")

    def close(self, kill: bool = False) -> None:
        if self.owner == os.getpid() and self.proc.poll() is None:
            if kill:
                self.proc.kill()
            elif self.proc.stdin is not None:
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.err.close()
        if self.owner == os.getpid():
            self.dir.cleanup()


_SERVERS: dict[str, _Server] = {}


def _server(python: str) -> _Server:
    s = _SERVERS.get(python)
    if s is None or not s.alive():
        s = _SERVERS[python] = _Server(python)
    return s


@atexit.register
def shutdown_servers() -> None:
    """Stop the trajectory servers this process started (also run at exit)."""
    for s in list(_SERVERS.values()):
        s.close()
    _SERVERS.clear()


# --------------------------------------------------------------------------- the server process (server side)

def _answer(request: Mapping[str, Any]) -> dict[str, Any]:
    import optbridge
    from optbridge_adapters.worker import decode_array, encode_array, encode_error
    try:
        init = {n: decode_array(a).astype(np.float32) for n, a in request["init"].items()}
        grads = decode_array(request["grads"]).astype(np.float32)
        out = run_here(optbridge.from_dict(request["plan"]), int(request["steps"]), init, grads, request.get("metrics"))
        return {"trajectory": encode_array(out)}
    except Exception as e:  # every failure goes back as data; the client re-raises it
        return {"error": encode_error(e)}


def serve(stdin: IO[bytes] | None = None) -> int:
    """Answer one JSON request per line until EOF."""
    inp = sys.stdin.buffer if stdin is None else stdin
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever prints to stdout (MegEngine's banner) lands on stderr
    for line in inp:
        if line.strip():
            out.write(json.dumps(_answer(json.loads(line))).encode("utf-8") + b"\n")
            out.flush()
    return 0


if __name__ == "__main__":  # pragma: no cover - run under the MegEngine interpreter
    sys.exit(serve() if "--serve" in sys.argv[1:] else 2)
