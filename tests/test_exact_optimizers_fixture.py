"""The torch fixture of tests_megengine/test_exact_optimizers.py is what torch 2.13 computes here.

``tests_megengine/make_exact_fixtures.py`` runs real torch optimizers (every class the
torch-exact MegEngine optimizers reproduce, every flag) and stores their trajectories
in ``tests_megengine/fixtures/torch_exact_optimizers.npz``; the MegEngine env has no
torch, so this main-env test re-derives the data and compares:

* configs, inputs and scheduled values: identical;
* trajectories and final states: torch's float32 results depend on the CPU (two AVX512
  machines differ by up to 619 ulps of the update's largest parameter on
  ``rmsprop_all_tiny``, measured), so a fresh run is held to the bound both runs
  satisfy on any CPU: ``|old - new| <= noise_old + noise_new + 1e-12 * scale``,
  each run's ``noise`` being its distance from the same optimizer in float64 (the
  triangle inequality through the float64 runs, which agree to ~1e-16); the
  recorded noise itself is derived data (shape and finiteness only);
* the CPU capability torch reports where the fixture was made is provenance, not compared (a fixture made
  with AVX512 kernels holds on an AVX2 machine within the same bounds);
* the fixture's single-tensor path (``foreach=False``) is torch's CPU default (both
  run here, bit for bit).
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


def _noise_key(key: str) -> str | None:
    """The key of the float64 distance that bounds ``key``'s rounding (None: not a computed array)."""
    if key.endswith("/traj"):
        return key[: -len("/traj")] + "/noise"
    if "/state/" in key:
        return key.replace("/state/", "/state_noise/")
    return None


#: Provenance, not data: the CPU kernels torch picked where the fixture was made (AVX512 there, AVX2 on another
#: x86-64 machine); the bounds below hold whichever ran.
_PROVENANCE = frozenset({"torch_cpu_capability"})


def _stale(committed: dict[str, np.ndarray], fresh: dict[str, np.ndarray]) -> list[str]:
    """Keys that differ: exactly for inputs and configs, beyond the rounding bound for computed arrays."""
    stale = sorted(set(committed) ^ set(fresh))
    for key in sorted((set(committed) & set(fresh)) - _PROVENANCE):
        old, new = committed[key], fresh[key]
        noise = _noise_key(key)
        if old.dtype != new.dtype or old.shape != new.shape:
            stale.append(key)
        elif old.dtype.kind != "f":
            stale += [key] if str(old) != str(new) else []
        elif "/noise" in key or "/state_noise/" in key:  # derived: each run's own distance from float64
            stale += [] if np.isfinite(new).all() else [key]
        elif noise is None:
            stale += [] if np.array_equal(old, new) else [key]
        else:  # per update (row) for trajectories, whole array for states
            diff = np.abs(old.astype(np.float64) - new)
            scale = np.abs(old).max(axis=-1) if key.endswith("/traj") else np.abs(old).max()
            lim = committed[noise] + fresh[noise] + 1e-12 * scale
            if key.endswith("/traj"):
                diff = diff.max(axis=-1)
            stale += [] if (diff <= lim).all() else [key]
    return stale


def test_fixture_is_current() -> None:
    committed = MF.load()
    fresh = MF.build()
    hint = "stale fixture: run .venv/bin/python tests_megengine/make_exact_fixtures.py"
    assert not _stale(committed, fresh), (hint, _stale(committed, fresh)[:5])
    assert not _stale(committed, committed)
    assert not _stale(committed, {**committed, "torch_cpu_capability": np.array("another CPU")})
    for key, factor in (("adam_normal/traj", 1 + 1e-5), ("rmsprop_tiny/state/0/square_avg", 1 + 1e-4)):
        changed = {**fresh, key: fresh[key] * np.float32(factor)}
        assert _stale(committed, changed) == [key]  # the bound still sees a real change
    assert _stale(committed, {**fresh, "inputs/p0/normal": fresh["inputs/p0/normal"] + 0}) == []
    moved = {**fresh, "inputs/p0/normal": np.nextafter(fresh["inputs/p0/normal"], np.float32(np.inf))}
    assert _stale(committed, moved) == ["inputs/p0/normal"]  # inputs are exact


@pytest.mark.parametrize("name", ["sgd_groups_normal", "adam_all_tiny", "rmsprop_all_normal", "nadam_skip_normal",
                                  "radam_decoupled_normal", "adagrad_all_tiny"])
def test_fixture_path_is_torch_default_on_cpu(name: str) -> None:
    data = MF.load()
    cfg = json.loads(str(data[f"{name}/config"]))
    default, _ = MF.run(cfg, data, foreach=None)
    single, _ = MF.run(cfg, data, foreach=False)
    np.testing.assert_array_equal(default, single)


def test_fixture_is_small_and_covers_every_optimizer() -> None:
    assert MF.FIXTURE.stat().st_size < 2_000_000
    types = {json.loads(str(v))["type"] for k, v in MF.load().items() if k.endswith("/config")}
    assert types == {"SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax", "NAdam", "RAdam"}
