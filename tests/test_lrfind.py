"""The lr range test on real torch, against torch-lr-finder 0.2.2 and fastai's published algorithm.

Oracles:
* torch-lr-finder 0.2.2 (``pip install 'torch-lr-finder==0.2.2' --no-deps``) runs on the
  same model, data and SGD: its ramp lrs and raw losses must equal ours, its
  ``plot(suggest_lr=True)`` must pick our ``steep`` point.
* fastai's ``AvgSmoothLoss`` (fastai/learner.py) and ``valley`` / ``minimum`` / ``steep``
  (fastai/callback/schedule.py, commit 0a049e8), transcribed below as written there
  (fastai itself pulls torchvision and spacy, so it is not installed).

Tolerances: lrs against torch-lr-finder within 4 float64 ulps (measured 2: numpy's
``power`` in the evaluator against Python's ``**`` in theirs, which may differ by an
ulp on AVX-512 CPUs, then one multiplication); raw losses within 1e-6 relative
(float32 training; measured 0, and 5.8e-8 with accumulation, where theirs sums
``loss / 2`` in float32 and ours averages in float64); smoothing within 1e-12
relative (float64).
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import optbridge  # noqa: E402
from optbridge import lrfind  # noqa: E402
from optbridge.errors import ConfigError  # noqa: E402
from optbridge_adapters.torch.lrfind import example  # noqa: E402

try:  # the oracle; the tests that do not compare with it run without it
    import torch_lr_finder as tlf
except ImportError:  # pragma: no cover
    tlf = None
needs_tlf = pytest.mark.skipif(tlf is None, reason="pip install 'torch-lr-finder==0.2.2' --no-deps")


# --------------------------------------------------------------------------- fastai, as published

def fastai_smooth(losses: list[float], beta: float = 0.98) -> list[float]:
    """fastai AvgSmoothLoss: val = lerp(loss, val, beta); value = val / (1 - beta**count) (float64 here)."""
    val, out = 0.0, []
    for count, loss in enumerate(losses, 1):
        val = loss + beta * (val - loss)  # torch.lerp(start=loss, end=val, weight=beta)
        out.append(val / (1 - beta ** count))
    return out


def fastai_valley(lrs, losses, num_it):  # fastai/callback/schedule.py, verbatim
    n = len(losses)
    max_start, max_end = 0, 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(0, i):
            if (losses[i] < losses[j]) and (lds[i] < lds[j] + 1):
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    idx = max_start + int(sections) + int(sections / 2)
    return float(lrs[idx]), (float(lrs[idx]), losses[idx])


def fastai_minimum(lrs, losses, num_it):  # verbatim
    lr_min = lrs[losses.argmin()].item()
    loss_idx = losses[min(range(len(lrs)), key=lambda i: abs(lrs[i] - lr_min))]
    return lr_min / 10, (lr_min, loss_idx)


def fastai_steep(lrs, losses, num_it):  # verbatim
    grads = (losses[1:] - losses[:-1]) / (lrs[1:].log() - lrs[:-1].log())
    lr_steep = lrs[grads.argmin()].item()
    loss_idx = losses[min(range(len(lrs)), key=lambda i: abs(lrs[i] - lr_steep))]
    return lr_steep, (lr_steep, loss_idx)


def fastai_suggestions(lrs: np.ndarray, smoothed: np.ndarray, num_it: int) -> dict[str, float]:
    """fastai's lr_find: window [num_it//10:-5], cut at the first NaN, then the suggestion functions."""
    lr_t, loss_t = torch.tensor(lrs[num_it // 10:-5]), torch.tensor(smoothed[num_it // 10:-5])
    nan = torch.nonzero(torch.isnan(loss_t.view(-1)))
    if len(nan):
        lr_t, loss_t = lr_t[:min(nan)], loss_t[:min(nan)]
    return {f.__name__.removeprefix("fastai_"): f(lr_t, loss_t, num_it)[0]
            for f in (fastai_valley, fastai_minimum, fastai_steep)}


# --------------------------------------------------------------------------- helpers

def loader(batches):
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=len(batches[0][0]),
                                       shuffle=False)


def their_run(start, end, steps, **kw):
    model, _, loss_fn, batches = example()
    opt = torch.optim.SGD(model.parameters(), lr=start)
    finder = tlf.LRFinder(model, opt, torch.nn.functional.mse_loss)
    finder.range_test(loader(batches), start_lr=start, end_lr=end, num_iter=steps, **kw)
    return finder


def snapshot(model, opt=None):
    out = {f"p.{n}": t.detach().clone() for n, t in model.named_parameters()}
    out.update({f"b.{n}": t.detach().clone() for n, t in model.named_buffers()})
    out.update({f"g.{n}": (None if t.grad is None else t.grad.clone()) for n, t in model.named_parameters()})
    if opt is not None:
        sd = opt.state_dict()
        for pid, st in sd["state"].items():
            out.update({f"s.{pid}.{k}": v.clone() if torch.is_tensor(v) else v for k, v in st.items()})
        out.update({f"o.{i}": {k: v for k, v in g.items()} for i, g in enumerate(sd["param_groups"])})
    return out


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if torch.is_tensor(a[k]):
            assert torch.equal(a[k], b[k]), k
            assert a[k].dtype == b[k].dtype
        else:
            assert a[k] == b[k], k


# --------------------------------------------------------------------------- ramp and losses vs torch-lr-finder

@needs_tlf
def test_exp_ramp_and_raw_losses_equal_torch_lr_finder():
    finder = their_run(1e-4, 0.5, 60, smooth_f=0.0, diverge_th=1e9)
    model, opt, loss_fn, batches = example()
    res = lrfind.lr_find(model, opt, loss_fn, batches, start_lr=1e-4, end_lr=0.5, steps=60, diverge=None)
    assert res.stop == "completed" and res.n == 60
    theirs = np.array(finder.history["lr"])
    np.testing.assert_array_max_ulp(res.lr, theirs, maxulp=4)  # measured 2
    assert res.lr[0] == 1e-4 and abs(res.lr[-1] - 0.5) <= 2 * np.spacing(0.5)
    np.testing.assert_allclose(res.losses, finder.history["loss"], rtol=1e-6, atol=0)
    # the ramp applied is the ramp plan's reference trace
    np.testing.assert_array_equal(res.lrs, optbridge.trace(res.plan, 60)["lr"])  # the reference's values, written


@needs_tlf
def test_linear_ramp_equals_torch_lr_finder():
    finder = their_run(1e-3, 0.3, 40, step_mode="linear", smooth_f=0.0, diverge_th=1e9)
    model, opt, loss_fn, batches = example()
    res = lrfind.lr_find(model, opt, loss_fn, batches, start_lr=1e-3, end_lr=0.3, steps=40, mode="linear",
                         diverge=None)
    # theirs: base + r * (end - base); ours: the linear node base * (1 + (R - 1) * k / T): a few ulps apart
    np.testing.assert_allclose(res.lr, finder.history["lr"], rtol=4e-15, atol=0)
    np.testing.assert_allclose(res.losses, finder.history["loss"], rtol=1e-6, atol=0)


@needs_tlf
def test_smoothing_is_fastais_and_differs_from_torch_lr_finder_on_purpose():
    model, opt, loss_fn, batches = example()
    res = lrfind.lr_find(model, opt, loss_fn, batches, start_lr=1e-4, end_lr=0.5, steps=60, diverge=None)
    np.testing.assert_allclose(res.smoothed, fastai_smooth(res.losses.tolist()), rtol=1e-12, atol=0)
    assert res.smoothed[0] == res.losses[0]  # bias correction: the first value is the first loss
    # torch-lr-finder: an EMA seeded with the first loss, weight smooth_f on the new loss, no bias correction
    finder = their_run(1e-4, 0.5, 60, smooth_f=0.02, diverge_th=1e9)
    seeded = [res.losses[0]]
    for v in res.losses[1:]:
        seeded.append(0.02 * v + 0.98 * seeded[-1])
    np.testing.assert_allclose(finder.history["loss"], seeded, rtol=1e-6, atol=0)
    assert np.max(np.abs(np.array(seeded) - res.smoothed) / res.smoothed) > 1e-2  # the deliberate difference


@needs_tlf
def test_suggestions_equal_torch_lr_finder_and_fastai():
    model, opt, loss_fn, batches = example()
    res = lrfind.lr_find(model, opt, loss_fn, batches, start_lr=1e-4, end_lr=10, steps=100)
    assert res.stop == "diverged"
    finder = tlf.LRFinder(model, opt, loss_fn)
    finder.history = {"lr": res.lr.tolist(), "loss": res.smoothed.tolist()}
    from matplotlib.figure import Figure
    _, theirs = finder.plot(skip_start=10, skip_end=5, suggest_lr=True, ax=Figure().add_subplot())
    assert res.suggestion("steep").lr == theirs
    fa = fastai_suggestions(res.lr, res.smoothed, 100)
    assert res.suggestion("valley").lr == fa["valley"]
    assert res.suggestion("minimum").lr == fa["minimum"]
    # fastai's steep uses forward differences and returns the segment's left end: the neighbouring point here
    steep_k = res.suggestion("steep").step
    assert fa["steep"] in (res.lr[steep_k - 1], res.lr[steep_k], res.lr[steep_k + 1])
    assert all(s.reliable for s in res.suggestions) and not res.warnings


def test_valley_transcription_on_random_curves():
    from optbridge.lrcurve import _valley
    rng = np.random.default_rng(3)
    for _ in range(200):
        n = int(rng.integers(3, 60))
        w = np.cumsum(rng.normal(size=n))
        lrs = np.arange(n, dtype=np.float64)
        assert lrs[_valley(w)[0]] == fastai_valley(lrs, w.tolist(), n)[0]


# --------------------------------------------------------------------------- stops

def test_divergence_stop():
    model, opt, loss_fn, batches = example()
    before = snapshot(model, opt)
    res = lrfind.lr_find(model, opt, loss_fn, batches, start_lr=1e-4, end_lr=10, steps=100, diverge=4.0)
    k = res.stop_step
    assert res.stop == "diverged" and k == res.n - 1
    best = np.minimum.accumulate(res.smoothed)
    assert res.smoothed[k] > 4 * best[k] and np.all(res.smoothed[:k] <= 4 * best[:k])
    assert_same(before, snapshot(model, opt))


def test_nonfinite_loss_stops_and_restores():
    model, opt, loss_fn, batches = example()
    before = snapshot(model, opt)
    calls = []

    def nan_at_7(m, b):
        calls.append(1)
        loss = loss_fn(m, b)
        return loss * float("nan") if len(calls) == 8 else loss

    res = lrfind.lr_find(model, opt, nan_at_7, batches, steps=50)
    assert (res.stop, res.stop_step, res.n) == ("nonfinite", 7, 8)
    assert math.isnan(res.losses[7]) and np.isfinite(res.losses[:7]).all()
    assert_same(before, snapshot(model, opt))


def test_state_restored_after_an_error_in_loss_fn():
    model, opt, loss_fn, batches = example()
    before = snapshot(model, opt)
    n = []

    def boom(m, b):
        n.append(1)
        if len(n) == 5:
            raise RuntimeError("user error")
        return loss_fn(m, b)

    with pytest.raises(RuntimeError, match="user error"):
        lrfind.lr_find(model, opt, boom, batches, steps=20)
    assert_same(before, snapshot(model, opt))


# --------------------------------------------------------------------------- state restored bit for bit

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(),
                                        torch.nn.Dropout(0.2))
        self.head = torch.nn.Linear(16, 1)
        self.register_buffer("calls", torch.zeros(()), persistent=False)

    def forward(self, batch):
        self.calls += 1
        return self.head(self.body(batch["x"]))


def dict_loss(m, b):
    return torch.nn.functional.mse_loss(m(b), b["y"])


def dict_batches(n=6):
    g = torch.Generator().manual_seed(1)
    return [{"x": torch.randn(32, 8, generator=g), "y": torch.randn(32, 1, generator=g)} for _ in range(n)]


def test_model_and_adam_state_restored_bit_for_bit():
    torch.manual_seed(0)
    model, batches = Net(), dict_batches()
    opt = torch.optim.Adam([{"params": model.body.parameters(), "lr": 1e-3},
                            {"params": model.head.parameters(), "lr": 1e-2, "name": "head"}])
    for b in batches[:3]:  # a partly trained model: Adam state, BN running stats, leftover gradients
        opt.zero_grad()
        dict_loss(model, b).backward()
        opt.step()
    model.eval()
    before = snapshot(model, opt)
    groups = list(opt.param_groups)
    rng = torch.random.get_rng_state()
    res = lrfind.lr_find(model, opt, dict_loss, batches, start_lr=1e-5, end_lr=1.0, steps=30)
    assert res.n >= 10
    assert_same(before, snapshot(model, opt))
    assert all(a is b for a, b in zip(groups, opt.param_groups))  # group dicts kept, not replaced
    assert not model.training and not model.body[1].training
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert res.groups == ("group0", "head") and res.reference == "head"


# --------------------------------------------------------------------------- per-group ratios

@needs_tlf
def test_group_ratios_kept_measured_from_parameter_deltas():
    """Two groups at 1x and 0.1x, float64 parameters, loss = sum of the parameters (gradient 1): delta = -lr."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    opt = torch.optim.SGD([{"params": model[0].parameters(), "lr": 0.01},
                           {"params": model[1].parameters(), "lr": 0.1}])
    seen = []

    def loss_fn(m, batch):
        seen.append([float(m[0].bias.detach()[0]), float(m[1].bias.detach()[0])])
        return sum(p.sum() for p in m.parameters())

    res = lrfind.lr_find(model, opt, loss_fn, [None], start_lr=1e-6, end_lr=1.0, steps=40, diverge=None)
    applied = -np.diff(np.array(seen), axis=0).T  # (groups, steps - 1): lr of updates 0 .. 38
    np.testing.assert_allclose(applied, res.lrs[:, :-1], rtol=1e-9, atol=0)  # float64 sums of ~40 lrs
    np.testing.assert_allclose(res.lrs[0] / res.lrs[1], 0.1, rtol=1e-15)
    np.testing.assert_allclose(applied[0] / applied[1], 0.1, rtol=1e-8)
    assert res.reference == "group1" and res.lrs[1, 0] == 1e-6
    # torch-lr-finder ends every group at end_lr: the ratio is lost (pytorch/ignite#2703 asks for it)
    m2 = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    o2 = torch.optim.SGD([{"params": m2[0].parameters(), "lr": 0.01}, {"params": m2[1].parameters(), "lr": 0.1}])
    sched = tlf.lr_finder.ExponentialLR(o2, 1.0, 40)
    for _ in range(39):
        o2.step()
        sched.step()
    assert o2.param_groups[0]["lr"] == pytest.approx(o2.param_groups[1]["lr"]) == pytest.approx(1.0)


def test_plan_with_groups_goes_through_to_torch():
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    plan = optbridge.loads("""
optbridge: 1
optimizer: {type: SGD, lr: 0.2, momentum: 0.9}
groups:
  - {name: body, params: "0.*", lr_mult: 0.1}
  - {name: head, params: rest}
schedule: {lr: {kind: cosine, steps: 10}, momentum: {kind: linear, start_factor: 0.5, steps: 5}}
""")
    _, _, loss_fn, batches = example()
    before = snapshot(model)
    res = lrfind.lr_find(model, plan, loss_fn, batches, start_lr=1e-5, end_lr=1.0, steps=30, diverge=None)
    assert res.groups == ("body", "head") and res.reference == "head"
    assert any("LambdaLR" in str(f) for f in res.fidelity)
    np.testing.assert_array_max_ulp(res.lrs, optbridge.trace(res.plan, res.n)["lr"], maxulp=2)
    np.testing.assert_allclose(res.lrs[0] / res.lrs[1], 0.1, rtol=1e-14)
    assert any("momentum" in w for w in res.warnings)  # the momentum schedule is held for the test
    assert_same(before, snapshot(model))


# --------------------------------------------------------------------------- accumulate, dict batches

@needs_tlf
def test_accumulate_equals_torch_lr_finder():
    finder = their_run(1e-4, 0.5, 30, smooth_f=0.0, diverge_th=1e9, accumulation_steps=2)
    model, opt, loss_fn, batches = example()
    res = lrfind.lr_find(model, opt, loss_fn, batches, start_lr=1e-4, end_lr=0.5, steps=30, accumulate=2,
                         diverge=None)
    np.testing.assert_array_max_ulp(res.lr, np.array(finder.history["lr"]), maxulp=4)  # measured 2
    # theirs: float32 sum of loss / 2; ours: the float64 mean of the two float32 losses
    np.testing.assert_allclose(res.losses, finder.history["loss"], rtol=1e-6, atol=0)


def test_dict_batches_custom_model_and_a_short_one_shot_iterator():
    torch.manual_seed(0)
    a, b = Net(), Net()
    b.load_state_dict(a.state_dict())
    data = dict_batches(4)
    reads = []

    def gen():
        for d in data:
            reads.append(1)
            yield d

    kw = dict(start_lr=1e-4, end_lr=1.0, steps=20, diverge=None)
    torch.manual_seed(5)
    r1 = lrfind.lr_find(a, torch.optim.SGD(a.parameters(), lr=0.1), dict_loss, gen(), **kw)
    torch.manual_seed(5)
    r2 = lrfind.lr_find(b, torch.optim.SGD(b.parameters(), lr=0.1), dict_loss, data, **kw)
    assert len(reads) == 4  # cycled from its cache, read once
    np.testing.assert_array_equal(r1.losses, r2.losses)
    assert r1.n == 20


# --------------------------------------------------------------------------- partly trained, errors, output

def test_partly_trained_model_flags_steep_and_valley():
    model, opt, loss_fn, batches = example()
    train = torch.optim.SGD(model.parameters(), lr=0.3)
    for _ in range(20):  # 320 updates at lr 0.3: close to converged
        for b in batches:
            train.zero_grad()
            loss_fn(model, b).backward()
            train.step()
    res = lrfind.lr_find(model, opt, loss_fn, batches, start_lr=1e-4, end_lr=10, steps=100)
    flags = {s.name: s.reliable for s in res.suggestions}
    assert flags == {"steep": False, "valley": False, "minimum": True}
    assert any(w.startswith("flat curve") for w in res.warnings)


@pytest.mark.parametrize("kw, path", [
    (dict(start_lr=0), "start_lr"), (dict(end_lr=1e-8), "end_lr"), (dict(steps=1), "steps"),
    (dict(mode="cos"), "mode"), (dict(smooth=1.0), "smooth"), (dict(diverge=1.0), "diverge"),
    (dict(accumulate=0), "accumulate"), (dict(backend="jax"), "backend"),
])
def test_bad_settings_are_config_errors(kw, path):
    model, opt, loss_fn, batches = example()
    with pytest.raises(ConfigError) as e:
        lrfind.lr_find(model, opt, loss_fn, batches, **kw)
    assert e.value.path == path


def test_bad_inputs_are_config_errors():
    model, opt, loss_fn, batches = example()
    with pytest.raises(ConfigError, match="model"):
        lrfind.lr_find(object(), opt, loss_fn, batches)
    with pytest.raises(ConfigError, match="optimizer_or_plan"):
        lrfind.lr_find(model, "sgd", loss_fn, batches)
    with pytest.raises(ConfigError, match="batches: must yield at least one batch"):
        lrfind.lr_find(model, opt, loss_fn, [])
    with pytest.raises(ConfigError, match="loss_fn: must return a scalar loss tensor"):
        lrfind.lr_find(model, opt, lambda m, b: m(b[0]), batches)
    with pytest.raises(ConfigError, match="loss_fn: must be callable"):
        lrfind.lr_find(model, opt, None, batches)


def test_json_csv_and_plot(tmp_path):
    import json
    model, opt, loss_fn, batches = example()
    res = lrfind.lr_find(model, opt, loss_fn, batches, start_lr=1e-4, end_lr=10, steps=100)
    doc = json.loads(res.to_json(tmp_path / "r.json"))
    assert doc["stop"]["reason"] == "diverged" and len(doc["losses"]) == res.n
    assert [s["name"] for s in doc["suggestions"]] == ["steep", "valley", "minimum"]
    assert doc["lrs"]["group0"][0] == 1e-4
    rows = (tmp_path / "r.csv").parent.joinpath("r.csv")
    res.to_csv(rows)
    lines = rows.read_text().splitlines()
    assert lines[0] == "step,lr_group0,loss,smoothed" and len(lines) == res.n + 1
    assert float(lines[1].split(",")[1]) == 1e-4
    png = res.plot(tmp_path / "r.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "steep" in str(res) and "stopped at update" in str(res)


def test_importing_the_core_imports_no_numpy_or_framework():
    code = ("import sys, optbridge, optbridge.lrfind; "
            "print(sorted(m for m in ('numpy', 'torch', 'mindspore', 'megengine') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cli_lr_find_writes_json_csv_and_png(tmp_path, capsys):
    import json

    from optbridge.cli import main
    assert main(["lr-find", "--framework", "torch", "--steps", "60", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "lr range test on torch" in out and "valley" in out
    doc = json.loads((tmp_path / "lr_find.json").read_text())
    assert doc["backend"] == "torch" and doc["settings"]["steps"] == 60
    assert (tmp_path / "lr_find.csv").read_text().startswith("step,lr_group0,loss,smoothed")
    assert (tmp_path / "lr_find.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["lr-find", "--steps", "1"]) == 2  # a ConfigError: one line, exit status 2
    assert "steps: must be" in capsys.readouterr().err
