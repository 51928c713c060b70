"""The torch fixture of tests_megengine/test_exact_optimizers.py is what torch 2.13 computes here.

``tests_megengine/make_exact_fixtures.py`` runs real torch optimizers (every class the
torch-exact MegEngine optimizers reproduce, every flag) and stores their trajectories
in ``tests_megengine/fixtures/torch_exact_optimizers.npz``; the MegEngine env has no
torch, so this main-env test re-derives the data and compares:

* configs, inputs and scheduled values: identical;
* trajectories, torch's float32 error and final states: bit-identical when torch runs
  the kernels that wrote the file (the recorded CPU capability, AVX512 here); on
  another CPU torch's vectorised kernels round differently, so there within 2 ulps
  of each update's largest parameter (a stale file misses by far more);
* the fixture's single-tensor path (``foreach=False``) is torch's CPU default.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent


def _generator():
    spec = importlib.util.spec_from_file_location("mge_make_exact_fixtures",
                                                  ROOT / "tests_megengine" / "make_exact_fixtures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


MF = _generator()


def _stale(committed: dict[str, np.ndarray], fresh: dict[str, np.ndarray], exact: bool) -> list[str]:
    """Keys that differ; computed float arrays within 2 ulps of their scale count as equal unless ``exact``."""
    stale = sorted(set(committed) ^ set(fresh))
    for key in sorted(set(committed) & set(fresh)):
        old, new = committed[key], fresh[key]
        if old.dtype != new.dtype or old.shape != new.shape:
            stale.append(key)
        elif old.dtype.kind != "f":
            stale += [key] if str(old) != str(new) else []
        elif exact or not any(f"/{part}" in key for part in ("traj", "noise", "state")):
            stale += [] if np.array_equal(old, new) else [key]
        else:  # per update (row) for trajectories, whole array otherwise
            mag = np.abs(old).max(axis=-1, keepdims=True) if old.ndim == 2 else np.abs(old).max()
            scale = np.spacing(np.asarray(mag, np.float32)).astype(np.float64)
            stale += [] if (np.abs(old.astype(np.float64) - new) <= 2 * scale).all() else [key]
    return stale


def test_fixture_is_current() -> None:
    committed = MF.load()
    fresh = MF.build()
    same_cpu = str(committed["torch_cpu_capability"]) == torch.backends.cpu.get_cpu_capability()
    hint = "stale fixture: run .venv/bin/python tests_megengine/make_exact_fixtures.py"
    assert not _stale(committed, fresh, exact=same_cpu), (hint, _stale(committed, fresh, exact=same_cpu)[:5])
    assert not _stale(committed, fresh, exact=False)  # the tolerant rule other CPUs use accepts the same data
    changed = {**fresh, "adam_normal/traj": fresh["adam_normal/traj"] * np.float32(1 + 1e-5)}
    assert _stale(committed, changed, exact=False) == ["adam_normal/traj"]  # and still sees a real change


@pytest.mark.parametrize("name", ["sgd_groups_normal", "adam_all_tiny", "rmsprop_all_normal", "nadam_skip_normal",
                                  "radam_decoupled_normal", "adagrad_all_tiny"])
def test_fixture_path_is_torch_default_on_cpu(name: str) -> None:
    data = MF.load()
    cfg = json.loads(str(data[f"{name}/config"]))
    default, _ = MF.run(cfg, data, foreach=None)
    np.testing.assert_array_equal(default, data[f"{name}/traj"])


def test_fixture_is_small_and_covers_every_optimizer() -> None:
    assert MF.FIXTURE.stat().st_size < 2_000_000
    types = {json.loads(str(v))["type"] for k, v in MF.load().items() if k.endswith("/config")}
    assert types == {"SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax", "NAdam", "RAdam"}
