"""optbridge.plot: differences to the reference, folding many groups, overlay figures that stay on the page.

The differences are checked against hand-computed values and against real
framework traces (torch in-process; MegEngine through its worker when its
interpreter exists). Figures are laid out for real (Agg) and every text and
legend must lie inside the figure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import optbridge
from optbridge import recipes
from optbridge.plan import Group, OptimizerSpec, Plan
from optbridge.plot import MAX_LINES, differences, draw_trace, fold_groups, plot_trace
from optbridge.tracing import Trace

pytest.importorskip("matplotlib")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FINETUNE = Path(optbridge.__file__).parent / "examples" / "finetune_torch.yaml"


def layer_decay_plan(groups: int = 150, steps: int = 400, *, odd: int = 0) -> Plan:
    """``groups`` layer-decay groups sharing warmup + cosine; the last ``odd`` with an absolute cosine end."""
    from optbridge import ir
    bases = 1e-3 * 0.75 ** np.arange(groups)[::-1]
    other = ir.Sequence(parts=(ir.Linear(start_factor=0.0, steps=40), ir.Cosine(steps=steps - 40, end=1e-6)),
                        boundaries=(40,))
    gs = tuple(Group(name=f"layer{i}", options={"lr": float(b)},
                     schedule={"lr": other} if i >= groups - odd else {}) for i, b in enumerate(bases))
    return Plan(optimizers=(OptimizerSpec(type="AdamW", groups=gs),),
                schedule={"lr": recipes.warmup_cosine(40, steps)}, total_steps=steps)


def all_axes(fig) -> list:
    """The figure's axes and their insets (the colour bars of many-group panels)."""
    return [a for ax in fig.axes for a in (ax, *ax.child_axes)]


def legend_labels(fig) -> list[str]:
    return [t.get_text().replace("\n", " ") for ax in all_axes(fig) if ax.get_legend()
            for t in ax.get_legend().get_texts()]


def texts_inside(fig) -> None:
    """Every legend, label and title lies inside the figure (nothing runs off the page)."""
    renderer = fig.canvas.get_renderer()
    page = fig.bbox
    for ax in all_axes(fig):
        for artist in [ax.get_legend(), ax.yaxis.label, ax.xaxis.label, ax.title, *ax.artists, *ax.texts]:
            if artist is None or not artist.get_visible():
                continue
            box = artist.get_window_extent(renderer)
            if box.width == 0 and box.height == 0:
                continue
            assert page.x0 - 1 <= box.x0 and box.x1 <= page.x1 + 1, (artist, box, page)
            assert page.y0 - 1 <= box.y0 and box.y1 <= page.y1 + 1, (artist, box, page)


# --------------------------------------------------------------------------- differences (hand-computed)

def _trace(values: np.ndarray, backend: str, applied: np.ndarray | None = None) -> Trace:
    return Trace(("a", "b"), {"lr": values}, backend, applied={} if applied is None else {"lr": applied})


def test_relative_difference_hand_computed() -> None:
    ref = np.array([[1.0, 0.5, 0.0, 0.25], [2.0, 1.0, 0.5, np.nan]])
    got = ref.copy()
    got[0, 1] = 0.5 * (1 + 2.0**-52)       # one float64 ulp of 0.5, relative 2**-52
    got[1, 2] = 0.5 * (1 + 3 * 2.0**-52)   # three
    d, = differences(_trace(ref, "reference"), _trace(got, "x"))
    assert d.unit == "relative" and d.source == "held"
    assert d.per_step.tolist() == [0.0, 2.0**-52, 3 * 2.0**-52, 0.0]  # NaN in both: equal; 0 == 0
    assert (d.worst, d.step, d.group) == (3 * 2.0**-52, 2, "b")
    # 0 in the reference and not in the backend, or NaN on one side only: infinitely far
    got[0, 2], got[1, 3] = 1e-300, 0.25
    d, = differences(_trace(ref, "reference"), _trace(got, "x"))
    assert d.per_step[2] == np.inf and d.per_step[3] == np.inf


def test_float32_ulps_hand_computed() -> None:
    ref = np.array([[0.1, 0.2, 0.3], [1e-5, 2e-5, 3e-5]])
    f32 = ref.astype(np.float32)
    got = f32.astype(np.float64)
    # update 1 of group a: 3 float32 ulps above float32(ref)
    got[0, 1] = float(np.nextafter(np.nextafter(np.nextafter(f32[0, 1], np.float32(1)), np.float32(1)),
                                   np.float32(1)))
    # the backend measured what it applied: that is what is judged, not what it holds
    d, = differences(_trace(ref, "reference"), _trace(ref, "x", applied=got))
    assert (d.unit, d.source) == ("ulps", "applied")
    assert d.per_step.tolist() == [0.0, 3.0, 0.0]
    assert (d.worst, d.step, d.group) == (3.0, 1, "a")
    assert "3 float32 ulps (update 1, a)" == d.describe()


def test_differences_refuse_other_windows() -> None:
    ref = _trace(np.ones((2, 3)), "reference")
    with pytest.raises(optbridge.ConfigError, match="same groups"):
        differences(ref, Trace(("a",), {"lr": np.ones((1, 3))}, "x"))
    with pytest.raises(optbridge.ConfigError, match="updates 0..2"):
        differences(ref, Trace(("a", "b"), {"lr": np.ones((2, 3))}, "x", start=5))


# --------------------------------------------------------------------------- differences (real frameworks)

def test_differences_torch_against_its_own_numbers() -> None:
    pytest.importorskip("torch")
    plan = optbridge.load(FINETUNE)
    ref = optbridge.trace(plan, 120)
    tr = optbridge.trace(plan, 120, backend="torch")
    d, = differences(ref, tr)
    applied = tr.applied["lr"]
    want = np.abs(applied - ref["lr"]) / np.abs(ref["lr"])
    assert (d.unit, d.source) == ("relative", "applied")
    np.testing.assert_array_equal(d.per_step, want.max(axis=0))
    assert d.worst <= 1e-12  # docs/adapters.md rule 5: float64 backends within 1e-12 relative


def test_differences_megengine_in_float32_ulps() -> None:
    from optbridge_adapters.megengine.backend import availability
    why = availability()
    if why is not None:
        pytest.skip(why)
    plan = optbridge.load(FINETUNE)
    ref = optbridge.trace(plan, 60)
    tr = optbridge.trace(plan, 60, backend="megengine")
    d, = differences(ref, tr)
    assert (d.unit, d.source) == ("ulps", "applied")  # MegEngine applies a float32 lr
    exact = tr.applied["lr"] == ref["lr"].astype(np.float32).astype(np.float64)
    assert (d.worst == 0) == bool(exact.all())
    assert d.worst <= 1  # a table of reference values, rounded once to float32


# --------------------------------------------------------------------------- folding

def test_fold_groups_by_shape_up_to_the_base() -> None:
    k = np.arange(50)
    shape = (1 + np.cos(np.pi * k / 50)) / 2
    other = np.minimum(1.0, k / 10)
    rows = np.array([1e-3 * shape, 1e-5 * shape, 0.5 * other, 3e-7 * shape, np.zeros(50), np.zeros(50)])
    assert fold_groups(rows) == [[0, 1, 3], [2], [4, 5]]
    # a cosine to an absolute end is not the same shape at another base
    ends = np.array([(b - 1e-6) * shape + 1e-6 for b in (1e-3, 1e-4)])
    assert fold_groups(ends) == [[0], [1]]
    # groups not there yet (NaN) fold with each other where their values match
    late = np.array([1e-3 * shape, 2e-3 * shape])
    late[:, :5] = np.nan
    assert fold_groups(late) == [[0, 1]]


def test_fold_groups_layer_decay_plan() -> None:
    tr = optbridge.trace(layer_decay_plan(150, 200, odd=4), 200)
    shapes = fold_groups(tr["lr"])
    assert shapes[0] == list(range(146)) and sorted(len(s) for s in shapes[1:]) == [1, 1, 1, 1]


# --------------------------------------------------------------------------- figures

def test_few_groups_one_line_each(tmp_path: Path) -> None:
    plan = optbridge.load(FINETUNE)
    tr = optbridge.trace(plan, 300)
    fig = draw_trace(tr, title="t", subtitle="s", steps_per_epoch=100, marks=[30])
    texts_inside(fig)
    legend = fig.axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["backbone", "no_decay", "head (= no_decay)"]
    out = plot_trace(tr, tmp_path / "few.png", marks=[30])
    assert out.read_bytes()[:8] == PNG_SIGNATURE


def test_150_groups_fold_into_one_legend_entry(tmp_path: Path) -> None:
    tr = optbridge.trace(layer_decay_plan(150, 400), 400)
    assert len(tr.groups) > MAX_LINES
    fig = draw_trace(tr, log=None, title="150 groups", marks=[40])
    texts_inside(fig)
    legends = [ax.get_legend() for ax in all_axes(fig) if ax.get_legend() is not None]
    assert legend_labels(fig) == ["150 groups: layer0 … layer149"]
    title = legends[0].get_title().get_text()
    assert "1 shape" in title and "equal up to the base" in title
    main = fig.axes[0]
    assert main.get_yscale() == "log"  # auto: 150 layer-decay groups span 40 decades
    assert len(main.get_lines()) == 150 + 1  # every group drawn, coloured by its peak; the phase mark
    colorbar = main.child_axes
    assert len(colorbar) == 1 and "peak lr" in colorbar[0].get_ylabel()
    assert plot_trace(tr, tmp_path / "many.png", log=None).read_bytes()[:8] == PNG_SIGNATURE


def test_many_shapes_are_summarised(tmp_path: Path) -> None:
    tr = optbridge.trace(layer_decay_plan(150, 200, odd=12), 200)
    fig = draw_trace(tr, log=True)
    texts_inside(fig)
    assert legend_labels(fig) == ["138 groups: layer0 … layer137", "12 groups, each its own shape: layer138 … layer149"]


def test_overlay_with_difference_panels(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    plan = optbridge.load(FINETUNE)
    ref = optbridge.trace(plan, 100, start=20)
    torch_tr = optbridge.trace(plan, 100, backend="torch", start=20)
    # a float32 backend: the reference's values as a framework holding float32 would apply them
    f32 = Trace(ref.groups, dict(ref.data), "float32-table", applied={"lr": ref["lr"].astype(np.float32) * 1.0},
                start=20)
    fig = draw_trace(ref, overlay=[torch_tr, f32], steps_per_epoch=100, marks=[30])
    texts_inside(fig)
    values, rel, ulps = fig.axes[:3]
    assert values.get_xlim()[0] == 20  # real update numbers
    assert "relative" in rel.get_ylabel() and "float32 ulps" in ulps.get_ylabel()
    rel_labels = [t.get_text().replace("\n", " ") for t in rel.get_legend().get_texts()]
    assert len(rel_labels) == 1 and rel_labels[0].startswith("torch, applied:")
    ulp_labels = [t.get_text().replace("\n", " ") for t in ulps.get_legend().get_texts()]
    assert ulp_labels == ["float32-table, applied: 0 at every update"]
    out = plot_trace(ref, tmp_path / "overlay.png", overlay=[torch_tr, f32])
    assert out.read_bytes()[:8] == PNG_SIGNATURE


def test_overlay_150_groups(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    plan = layer_decay_plan(150, 80)
    ref = optbridge.trace(plan, 80)
    tr = optbridge.trace(plan, 80, backend="torch")
    fig = draw_trace(ref, overlay=[tr], log=None)
    texts_inside(fig)
    d, = differences(ref, tr)
    assert d.worst <= 1e-12


def test_long_traces_keep_their_extremes() -> None:
    from optbridge.plot import _reduce
    x = np.arange(100_000, dtype=np.float64)
    y = np.sin(x / 7.0)
    y[54_321] = 5.0
    xs, ys = _reduce(x, y)
    assert ys.size <= 2500 and ys.max() == 5.0 and ys.min() == y.min()


def test_identical_groups_need_no_colour_ramp() -> None:
    from optbridge import ir
    plan = layer_decay_plan(150, 100)
    opt = plan.optimizers[0]
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", options={"momentum": 0.9}, groups=opt.groups),),
                schedule={"lr": plan.schedule["lr"], "momentum": ir.Linear(start_factor=0.9, steps=10)},
                total_steps=100)
    fig = draw_trace(optbridge.trace(plan, 100), log=None)
    texts_inside(fig)
    lr_ax, momentum_ax = fig.axes[:2]
    assert len(lr_ax.child_axes) == 1 and not momentum_ax.child_axes  # equal peaks: no colour bar
    labels = [t.get_text().replace("\n", " ") for t in momentum_ax.get_legend().get_texts()]
    assert labels == ["150 groups (all equal): layer0 … layer149"]
