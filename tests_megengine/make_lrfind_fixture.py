"""The torch lr range test curve of the bundled example, for ``test_lrfind_mge.py`` (torch is not in .venv-mge).

Run with the MAIN interpreter from the repo root:

    .venv/bin/python tests_megengine/make_lrfind_fixture.py          # (re)writes fixtures/lrfind_torch_example.npz
    .venv/bin/python tests_megengine/make_lrfind_fixture.py --check  # exit 1 if the committed file is stale

The curve is ``optbridge.lrfind.lr_find`` on ``optbridge_adapters.torch.lrfind.example()``
(the same float32 weights and batches MegEngine's example builds from
``optbridge.lrfind_example``), exponential ramp 1e-4 -> 10 over 100 updates.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "lrfind_torch_example.npz"


def curve() -> dict[str, np.ndarray]:
    from optbridge import lrfind
    from optbridge_adapters.torch.lrfind import example

    model, opt, loss_fn, batches = example()
    res = lrfind.lr_find(model, opt, loss_fn, batches, start_lr=1e-4, end_lr=10.0, steps=100)
    return {"lrs": res.lrs, "losses": res.losses, "smoothed": res.smoothed,
            "stop_step": np.array(-1 if res.stop_step is None else res.stop_step),
            "suggestion_steps": np.array([s.step for s in res.suggestions])}


def main(argv: list[str]) -> int:
    data = curve()
    if "--check" in argv:
        old = np.load(FIXTURE)
        same = all(np.array_equal(old[k], v) for k, v in data.items())
        print("up to date" if same else f"stale: rerun {Path(__file__).name}")
        return 0 if same else 1
    np.savez(FIXTURE, **data)
    print(f"wrote {FIXTURE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
