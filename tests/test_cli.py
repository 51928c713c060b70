"""The ``optbridge`` command line: validate, trace, plot, demo, errors, help."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import optbridge
from optbridge.cli import main, table_rows

EXAMPLES = Path(optbridge.__file__).parent / "examples"
DEMO = EXAMPLES / "demo.yaml"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

PLAN = """\
optbridge: 1
steps_per_epoch: 10
optimizer: {type: SGD, lr: 0.1, momentum: 0.9}
groups:
  - {name: backbone, params: ["backbone.*"], lr_mult: 0.1}
  - {name: head, params: rest}
schedule:
  lr: {kind: sequence, boundaries: [5], parts: [{kind: linear, start_factor: 0.0, steps: 5}, {kind: cosine, steps: 95}]}
  momentum: {kind: linear, start_factor: 0.9, steps: 5}
"""


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    p = tmp_path / "plan.yaml"
    p.write_text(PLAN)
    return p


def trace(plan, steps: int, **kw):
    return optbridge.trace(plan, steps, **kw)


def expected(path: Path, steps: int):
    return trace(optbridge.load(path), steps)


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("optbridge: error: "), err
    assert "Traceback" not in err
    return lines[0]


# --------------------------------------------------------------------------- validate

def test_validate_ok(plan_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(plan_file), str(DEMO)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.splitlines() == [
        f"OK {plan_file}: 1 optimizer, 2 groups, schedules: lr, momentum",
        f"OK {DEMO}: 1 optimizer, 3 groups, schedules: lr, momentum",
    ]


def test_validate_verbose_describes(plan_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "-v", str(plan_file)]) == 0
    out = capsys.readouterr().out
    assert "backbone" in out and "0.01" in out and "cosine(steps=95)" in out


@pytest.mark.parametrize("text, needle", [
    ("optbridge: 1\nschedule: {lr: {kind: cosin}}\n", "schedule.lr.kind"),
    ("optbridge: 1\noptimizer: {type: SGD, lr: 0.1, momentun: 0.9}\n", "momentun"),
    ("optbridge: 1\nschedule: {lr: {kind: linear, steps: 0}}\n", "steps"),
    ("optbridge: 1\nschedule: [unclosed\n", "not valid YAML"),
    ("- just\n- a list\n", "mapping"),
])
def test_validate_invalid_config(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, needle: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    assert main(["validate", str(bad)]) == 2
    out, err = capsys.readouterr()
    line = one_error_line(err)
    assert str(bad) in line and needle in line
    assert out == ""


def test_validate_missing_file_and_mixed(plan_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    assert main(["validate", str(missing)]) == 2
    assert one_error_line(capsys.readouterr().err) == f"optbridge: error: {missing}: no such file"
    # one good and one bad file: the good one is reported, the status is still 2
    assert main(["validate", str(plan_file), str(missing)]) == 2
    out, err = capsys.readouterr()
    assert out.startswith(f"OK {plan_file}")
    one_error_line(err)


def test_validate_directory_and_bad_suffix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path)]) == 2
    assert "directory" in one_error_line(capsys.readouterr().err)
    txt = tmp_path / "plan.txt"
    txt.write_text(PLAN)
    assert main(["validate", str(txt)]) == 2
    assert ".yaml" in one_error_line(capsys.readouterr().err)


# --------------------------------------------------------------------------- trace: table

def parse_table(text: str) -> tuple[list[str], list[list[str]]]:
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    header = lines[0].split()
    return header, [ln.split() for ln in lines[1:]]


def test_trace_table_matches_trace(plan_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", str(plan_file), "--steps", "30"]) == 0
    header, rows = parse_table(capsys.readouterr().out)
    assert header == ["step", "epoch", "lr[backbone]", "lr[head]", "momentum[backbone]", "momentum[head]"]
    assert [int(r[0]) for r in rows] == list(range(30))  # short traces: every step
    tr = expected(plan_file, 30)
    got = np.array([[float(x) for x in r[2:]] for r in rows])
    want = np.vstack([tr["lr"], tr["momentum"]]).T
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=0)  # %.6g
    assert [int(r[1]) for r in rows] == [k // 10 for k in range(30)]


def test_trace_table_long_samples_with_boundaries(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", str(DEMO), "--hyper", "lr"]) == 0  # steps = the plan's total_steps
    out = capsys.readouterr().out
    header, rows = parse_table(out)
    assert header == ["step", "epoch", "lr[backbone]", "lr[no_decay]", "lr[head]"]
    steps = [int(r[0]) for r in rows]
    assert steps[0] == 0 and steps[-1] == 2999 and 500 in steps and 8 <= len(steps) <= 40
    tr = expected(DEMO, 3000)
    for r in rows:
        np.testing.assert_allclose([float(x) for x in r[2:]], tr["lr"][:, int(r[0])], rtol=1e-5)
    assert "# showing" in out


def test_trace_table_every_and_ellipsis(plan_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", str(plan_file), "--steps", "100", "--every", "1", "--max-rows", "10"]) == 0
    _, rows = parse_table(capsys.readouterr().out)
    assert [r[0] for r in rows] == ["0", "1", "2", "3", "4", "...", "95", "96", "97", "98", "99"]
    assert main(["trace", str(plan_file), "--steps", "100", "--every", "25"]) == 0
    _, rows = parse_table(capsys.readouterr().out)
    assert [r[0] for r in rows] == ["0", "25", "50", "75", "99"]


def test_table_rows_helper() -> None:
    assert table_rows(5) == [0, 1, 2, 3, 4]
    assert table_rows(1000, None, [37]) == [0, 37, 100, 200, 300, 400, 500, 600, 700, 800, 900, 999]
    assert table_rows(10, 1, max_rows=4) == [0, 1, None, 8, 9]
    assert table_rows(10, 1, max_rows=0) == list(range(10))


# --------------------------------------------------------------------------- trace: csv / json / npy

def test_trace_csv_roundtrip(plan_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sub" / "trace.csv"
    assert main(["trace", str(plan_file), "--steps", "50", "--format", "csv", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["step", "epoch", "group", "hyper", "value"]
    tr = expected(plan_file, 50)
    assert len(rows) == 50 * 2 * 2
    for r in rows:
        k = int(r["step"])
        assert int(r["epoch"]) == k // 10
        assert float(r["value"]) == tr[r["hyper"]][tr.groups.index(r["group"]), k]  # exact


def test_trace_csv_stdout_without_epoch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"optbridge": 1, "optimizer": {"type": "Adam", "lr": 0.001},
                             "schedule": {"kind": "exponential", "gamma": 0.5}}))
    assert main(["trace", str(p), "--steps", "4", "--format", "csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows == [["step", "group", "hyper", "value"]] + [
        [str(k), "all", "lr", repr(0.001 * 0.5 ** k)] for k in range(4)]


def test_trace_json_roundtrip(plan_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "trace.json"
    assert main(["trace", str(plan_file), "--steps", "40", "--format", "json", "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out}\n"
    doc = json.loads(out.read_text())
    tr = expected(plan_file, 40)
    assert doc["groups"] == ["backbone", "head"] and doc["steps"] == 40 and doc["backend"] == "reference"
    assert doc["hypers"] == ["lr", "momentum"] and doc["steps_per_epoch"] == 10
    for h in ("lr", "momentum"):
        np.testing.assert_array_equal(np.array(doc["values"][h]), tr[h])
    # to stdout, one hyperparameter
    assert main(["trace", str(plan_file), "--steps", "40", "--format", "json", "--hyper", "momentum"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc["values"]) == ["momentum"]
    np.testing.assert_array_equal(np.array(doc["values"]["momentum"]), tr["momentum"])


def test_trace_npy(plan_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tr = expected(plan_file, 60)
    one = tmp_path / "lr.npy"
    assert main(["trace", str(plan_file), "--steps", "60", "--format", "npy", "--hyper", "lr", "--out", str(one)]) == 0
    np.testing.assert_array_equal(np.load(one), tr["lr"])
    many = tmp_path / "t.npy"
    assert main(["trace", str(plan_file), "--steps", "60", "--format", "npy", "--out", str(many)]) == 0
    out = capsys.readouterr().out
    assert "backbone, head" in out
    for h in ("lr", "momentum"):
        arr = np.load(tmp_path / f"t.{h}.npy")
        assert arr.shape == (2, 60) and arr.dtype == np.float64
        np.testing.assert_array_equal(arr, tr[h])
    assert not many.exists()


def test_trace_npy_needs_out(plan_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", str(plan_file), "--steps", "5", "--format", "npy"]) == 2
    assert "--out" in one_error_line(capsys.readouterr().err)


# --------------------------------------------------------------------------- trace: metrics

PLATEAU = "optbridge: 1\noptimizer: {type: SGD, lr: 1.0}\nschedule: {lr: {kind: plateau, patience: 0, factor: 0.5}}\n"


@pytest.mark.parametrize("name, writer", [
    ("m.txt", lambda p, v: p.write_text("# val loss\n" + "\n".join(map(str, v)) + "\n\n")),
    ("m.json", lambda p, v: p.write_text(json.dumps(v))),
    ("m.npy", lambda p, v: np.save(p, np.asarray(v))),
])
def test_trace_metrics_files(tmp_path: Path, capsys: pytest.CaptureFixture[str], name, writer) -> None:
    cfg = tmp_path / "plateau.yaml"
    cfg.write_text(PLATEAU)
    metrics = [1.0, 0.5, 0.6, 0.7, 0.4]
    writer(tmp_path / name, metrics)
    out = tmp_path / "t.json"
    assert main(["trace", str(cfg), "--steps", "6", "--metrics", str(tmp_path / name),
                 "--format", "json", "--out", str(out)]) == 0
    want = trace(optbridge.load(cfg), 6, metrics=metrics)
    np.testing.assert_array_equal(np.array(json.loads(out.read_text())["values"]["lr"]), want["lr"])


def test_trace_metrics_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "plateau.yaml"
    cfg.write_text(PLATEAU)
    assert main(["trace", str(cfg), "--steps", "6"]) == 2  # plateau without metrics
    assert "metric" in one_error_line(capsys.readouterr().err)
    bad = tmp_path / "m.txt"
    bad.write_text("1.0\nabc\n")
    assert main(["trace", str(cfg), "--steps", "3", "--metrics", str(bad)]) == 2
    assert "m.txt:2" in one_error_line(capsys.readouterr().err)
    assert main(["trace", str(cfg), "--steps", "3", "--metrics", str(tmp_path / "missing.txt")]) == 2
    one_error_line(capsys.readouterr().err)


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("argv, needle", [
    (["trace", "{plan}", "--steps", "0"], "--steps"),
    (["trace", "{plan}", "--steps", "-3"], "--steps"),
    (["trace", "{plan}", "--steps", "ten"], "--steps"),
    (["trace", "{plan}"], "--steps"),                       # no total_steps in the plan
    (["trace", "{plan}", "--steps", "5", "--hyper", "beta9"], "beta9"),
    (["trace", "{plan}", "--steps", "5", "--backend", "nosuch"], "backend"),
    (["trace", "{plan}", "--steps", "5", "--format", "xml"], "--format"),
    (["trace", "{plan}", "--steps", "5", "--every", "0"], "--every"),
    (["trace", "{missing}", "--steps", "5"], "no such file"),
    (["plot", "{plan}", "--steps", "0"], "--steps"),
    (["demo", "--steps", "0"], "--steps"),
    (["frobnicate"], "invalid choice"),
    ([], "required"),
])
def test_bad_input_one_line_exit_2(plan_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   argv: list[str], needle: str) -> None:
    argv = [a.format(plan=plan_file, missing=tmp_path / "missing.yaml") for a in argv]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert needle in one_error_line(err)


def test_schedule_undefined_past_its_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the example's total_steps
    assert main(["trace", str(EXAMPLES / "one_cycle.yaml"), "--steps", "1200"]) == 2
    assert "1000" in one_error_line(capsys.readouterr().err)
    # the evaluator itself: one_cycle past total_steps, and a table past its end
    cfg = tmp_path / "oc.yaml"
    cfg.write_text("optbridge: 1\noptimizer: {type: SGD, lr: 0.1}\nschedule: {kind: one_cycle, total_steps: 10}\n")
    assert main(["trace", str(cfg), "--steps", "20"]) == 2
    assert "one_cycle" in one_error_line(capsys.readouterr().err)
    cfg.write_text("optbridge: 1\noptimizer: {type: SGD, lr: 0.1}\nschedule: {kind: table, values: [0.1, 0.2]}\n")
    assert main(["trace", str(cfg), "--steps", "3", "--format", "csv"]) == 2
    out, err = capsys.readouterr()
    assert "past the end of the schedule" in one_error_line(err) and out == ""  # the value source's policy


def test_unscheduled_hyper_of_optimizer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "adam.yaml"
    cfg.write_text("optbridge: 1\noptimizer: {type: Adam, lr: 0.1}\nschedule: {momentum: {kind: constant}}\n")
    assert main(["trace", str(cfg), "--steps", "3"]) == 2
    assert "momentum" in one_error_line(capsys.readouterr().err)


# --------------------------------------------------------------------------- help / version

@pytest.mark.parametrize("argv", [["--help"], ["validate", "--help"], ["trace", "--help"],
                                  ["plot", "--help"], ["demo", "--help"], ["trace", "-h"]])
def test_help_exits_0(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: optbridge")
    assert "examples:" in out


def test_trace_help_documents_formats(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", "--help"]) == 0
    out = capsys.readouterr().out
    assert "step,epoch,group,hyper,value" in out and ".<hyper>.npy" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"optbridge {optbridge.__version__}"


def test_python_dash_m_help_is_cheap() -> None:
    """`python -m optbridge --help` works and imports neither numpy nor matplotlib."""
    root = Path(optbridge.__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "optbridge", "--help"],
                          capture_output=True, text=True, cwd=root, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: optbridge")
    for line in proc.stdout.splitlines():
        if line.strip().startswith("demo"):
            break
    else:
        pytest.fail("no demo command in --help")
    imported = {ln.rsplit("|", 1)[-1].strip() for ln in proc.stderr.splitlines() if ln.startswith("import time:")}
    assert not {m for m in imported if m.split(".")[0] in ("numpy", "matplotlib", "torch", "mindspore", "megengine")}


# --------------------------------------------------------------------------- plot

def test_plot_png(plan_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "img" / "plan.png"
    assert main(["plot", str(plan_file), "--steps", "100", "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    data = out.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 10_000
    log = tmp_path / "log.png"
    assert main(["plot", str(DEMO), "--log", "--hyper", "lr", "--out", str(log)]) == 0
    data = log.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 10_000


def test_plot_default_name(plan_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    assert main(["plot", str(plan_file), "--steps", "20"]) == 0
    assert (tmp_path / "plan.png").read_bytes()[:8] == PNG_SIGNATURE


def test_plot_without_matplotlib(plan_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    import builtins
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    assert main(["plot", str(plan_file), "--steps", "20", "--out", str(tmp_path / "x.png")]) == 2
    assert "pip install matplotlib" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "x.png").exists()


# --------------------------------------------------------------------------- demo

FINETUNE = EXAMPLES / "finetune_torch.yaml"


def demo_rows(out: str) -> dict[str, list[str]]:
    """The demo's per-backend table: backend -> its cells (split on runs of 2+ spaces)."""
    import re
    lines = out.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.strip().startswith("backend ") and "worst difference" in ln)
    rows = {}
    for ln in lines[i + 1:]:
        if not ln.startswith("  ") or ln.startswith("   "):
            break
        cells = re.split(r"\s{2,}", ln.strip())
        rows[cells[0]] = cells[1:]
    return rows


def test_demo_example_is_the_torch_setup() -> None:
    plan = optbridge.load(FINETUNE)
    assert [g.name for g in plan.groups] == ["backbone", "no_decay", "head"]
    assert plan.optimizers[0].type == "AdamW" and plan.step_unit == "iter" and plan.total_steps == 300
    tr = trace(plan, 300)
    # SequentialLR[LinearLR(0.01, 30), CosineAnnealingLR(270, eta_min=1e-6)]: hand-computed values
    np.testing.assert_allclose(tr["lr"][:, 0], [5e-7, 5e-6, 5e-6], rtol=1e-15)
    np.testing.assert_allclose(tr["lr"][:, 30], [5e-5, 5e-4, 5e-4], rtol=1e-15)
    k = 150 - 30
    want = 1e-6 + (np.array([5e-5, 5e-4, 5e-4]) - 1e-6) * (1 + np.cos(np.pi * k / 270)) / 2
    np.testing.assert_allclose(tr["lr"][:, 150], want, rtol=1e-13)


def test_demo_compares_backends(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    pytest.importorskip("torch")
    from optbridge_adapters.megengine.backend import availability
    out_dir = tmp_path / "demo"
    assert main(["demo", "--out", str(out_dir), "--backends", "torch,megengine"]) == 0
    out = capsys.readouterr().out
    for needle in ("AdamW", "backbone", "no_decay", "head", "cosine", "lr[backbone]", "demo_trace.csv", "demo.png"):
        assert needle in out
    rows = demo_rows(out)
    assert list(rows) == ["torch", "megengine"]
    plan = optbridge.load(FINETUNE)
    ref = trace(plan, 300)
    torch_tr = trace(plan, 300, backend="torch")
    # the printed worst difference is the measured one: |applied - reference| / reference, at most 1e-12
    worst = float(np.max(np.abs(torch_tr.applied["lr"] - ref["lr"]) / ref["lr"]))
    assert worst <= 1e-12
    printed = rows["torch"][1]
    assert printed == ("lr (applied): 0 (bit-identical)" if worst == 0 else f"lr (applied): {worst:.2g} relative")
    assert rows["torch"][2] == "lr: native"  # SequentialLR[LinearLR, CosineAnnealingLR] is torch's own
    if availability() is None:
        assert rows["megengine"][1].endswith("float32 ulps") and "table" in rows["megengine"][2]
    else:
        assert rows["megengine"][1] == "unavailable"
    # the CSV: every backend's values, bit for bit
    with (out_dir / "demo_trace.csv").open(newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 300 * 3
    assert list(table[0])[:6] == ["step", "epoch", "group", "hyper", "reference", "torch"]
    for r in table[::7]:
        k, g = int(r["step"]), ref.groups.index(r["group"])
        assert float(r["reference"]) == ref["lr"][g, k]
        assert float(r["torch"]) == torch_tr["lr"][g, k] and float(r["torch.applied"]) == torch_tr.applied["lr"][g, k]
    png = (out_dir / "demo.png").read_bytes()
    assert png[:8] == PNG_SIGNATURE and len(png) > 10_000


def test_demo_lists_unavailable_backends(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib")
    # a MegEngine interpreter that does not exist: the real backend refuses to start, the demo goes on
    monkeypatch.setenv("OPTBRIDGE_MGE_PYTHON", str(tmp_path / "no-such-python"))
    assert main(["demo", "--out", str(tmp_path), "--backends", "megengine", "--steps", "40"]) == 0
    out = capsys.readouterr().out
    assert demo_rows(out)["megengine"][1] == "unavailable"
    notes = " ".join(out.split())
    assert "megengine: unavailable:" in notes and "no-such-python" in notes and "./dev setup" in notes
    assert (tmp_path / "demo_trace.csv").exists() and (tmp_path / "demo.png").exists()
    with (tmp_path / "demo_trace.csv").open(newline="") as f:
        assert next(csv.reader(f)) == ["step", "epoch", "group", "hyper", "reference"]


def test_demo_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--out", str(tmp_path), "--backends", "tensorflow"]) == 2
    assert "tensorflow" in one_error_line(capsys.readouterr().err)
    assert main(["demo", "--out", str(tmp_path), "--steps", "5000"]) == 2  # past total_steps
    assert "300" in one_error_line(capsys.readouterr().err)


# --------------------------------------------------------------------------- bundled examples

def test_demo_example_values() -> None:
    plan = optbridge.load(DEMO)
    assert plan.steps_per_epoch == 100 and plan.total_steps == 3000
    tr = trace(plan, 3000)
    assert tr.groups == ("backbone", "no_decay", "head")
    lr = tr["lr"]
    assert lr[:, 0].tolist() == [0.0, 0.0, 0.0]
    np.testing.assert_allclose(lr[:, 500], [0.01, 0.1, 0.1], rtol=1e-15)
    assert np.all(np.diff(lr[:, 500:], axis=1) <= 0) and np.all(lr[:, -1] > 1e-5)
    np.testing.assert_allclose(tr["momentum"][:, [0, 500, 2999]], [[0.81, 0.9, 0.9]] * 3, rtol=1e-15)


def test_demo_example_groups_are_disjoint() -> None:
    from optbridge.params import ParamRecord, resolve
    records = [
        ParamRecord("backbone.conv1.weight", (64, 3, 7, 7), "Conv2d"),
        ParamRecord("backbone.bn1.weight", (64,), "BatchNorm2d"),
        ParamRecord("backbone.bn1.bias", (64,), "BatchNorm2d"),
        ParamRecord("head.norm.weight", (64,), "LayerNorm"),
        ParamRecord("head.fc.weight", (10, 64), "Linear"),
        ParamRecord("head.fc.bias", (10,), "Linear"),
    ]
    by = {g.name: g for g in resolve(optbridge.load(DEMO), records).groups}
    assert by["backbone"].params == ("backbone.conv1.weight", "backbone.bn1.weight", "backbone.bn1.bias")
    assert by["no_decay"].params == ("head.norm.weight", "head.fc.bias")
    assert by["head"].params == ("head.fc.weight",)


@pytest.mark.parametrize("name, steps", [("one_cycle.yaml", 1000), ("sgdr.yaml", 3500)])
def test_canonical_examples(name: str, steps: int, capsys: pytest.CaptureFixture[str]) -> None:
    path = EXAMPLES / name
    assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().out.startswith(f"OK {path}")
    tr = trace(optbridge.load(path), steps)
    assert tr.steps == steps and np.all(np.isfinite(tr["lr"]))


def test_sgdr_example_restarts() -> None:
    lr = trace(optbridge.load(EXAMPLES / "sgdr.yaml"), 3500)["lr"][0]
    # epochs of 50 updates; restarts at epochs 10 and 30 (updates 500 and 1500)
    assert lr[500] == lr[1500] == lr[0] == 1e-3
    assert lr[499] < 1e-4 and lr[1499] < 1e-5


def test_torch_dialect_example() -> None:
    plan = optbridge.load(EXAMPLES / "torch_sequential.yaml")
    assert [g.name for g in plan.groups] == ["backbone", "head"]
    tr = trace(plan, 1000)
    # SequentialLR[LinearLR(0.1, 5), CosineAnnealingLR(95)], milestones [5], stepped per epoch of 10 updates
    np.testing.assert_allclose(tr["lr"][:, 0], [0.001, 0.01], rtol=1e-12)
    np.testing.assert_allclose(tr["lr"][:, 50], [0.01, 0.1], rtol=1e-12)
    assert np.all(tr["lr"][:, 9] == tr["lr"][:, 0])  # held within an epoch


def test_mindspore_dialect_example() -> None:
    plan = optbridge.load(EXAMPLES / "mindspore_lists.yaml")
    tr = trace(plan, 1000)
    lr = tr["lr"][0]
    # warmup_lr: 0.1 * min(epoch, 2) / 2 per epoch of 100 updates (from 0), then cosine_decay_lr
    np.testing.assert_allclose(lr[[0, 99, 100, 199]], [0.0, 0.0, 0.05, 0.05], rtol=1e-12)
    assert lr[200] == pytest.approx(0.1) and lr[999] < lr[200]
    with pytest.raises(optbridge.EvaluationError):
        trace(plan, 1001)


# --------------------------------------------------------------------------- resume: --start

def test_trace_start_labels_real_updates(plan_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    full = expected(plan_file, 100)
    assert main(["trace", str(plan_file), "--start", "40", "--steps", "20"]) == 0
    out = capsys.readouterr().out
    header, rows = parse_table(out)
    assert [int(r[0]) for r in rows] == list(range(40, 60)) and [int(r[1]) for r in rows] == [k // 10 for k in
                                                                                               range(40, 60)]
    got = np.array([[float(x) for x in r[2:]] for r in rows])
    np.testing.assert_allclose(got, np.vstack([full["lr"], full["momentum"]])[:, 40:60].T, rtol=1e-5)  # %.6g
    assert "updates 40..59" in out
    # csv / json / npy: exactly the columns 40.. of a trace from 0
    assert main(["trace", str(plan_file), "--start", "40", "--steps", "20", "--format", "csv",
                 "--out", str(tmp_path / "t.csv")]) == 0
    with (tmp_path / "t.csv").open(newline="") as f:
        table = list(csv.DictReader(f))
    assert [int(r["step"]) for r in table[::4]] == list(range(40, 60))
    for r in table:
        assert float(r["value"]) == full[r["hyper"]][full.groups.index(r["group"]), int(r["step"])]
    assert main(["trace", str(plan_file), "--start", "40", "--steps", "20", "--format", "json",
                 "--out", str(tmp_path / "t.json")]) == 0
    doc = json.loads((tmp_path / "t.json").read_text())
    assert doc["start"] == 40 and doc["steps"] == 20
    np.testing.assert_array_equal(np.array(doc["values"]["lr"]), full["lr"][:, 40:60])
    assert main(["trace", str(plan_file), "--start", "40", "--steps", "20", "--format", "npy", "--hyper", "lr",
                 "--out", str(tmp_path / "t.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "t.npy"), full["lr"][:, 40:60])
    capsys.readouterr()


def test_trace_start_defaults_to_the_rest_of_the_plan(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", str(DEMO), "--start", "2990", "--hyper", "lr"]) == 0  # total_steps 3000: 10 left
    _, rows = parse_table(capsys.readouterr().out)
    assert [int(r[0]) for r in rows] == list(range(2990, 3000))
    assert main(["trace", str(DEMO), "--start", "3000"]) == 2
    assert "2999" in one_error_line(capsys.readouterr().err)
    assert main(["trace", str(DEMO), "--start", "2990", "--steps", "20"]) == 2  # past total_steps
    assert "3000" in one_error_line(capsys.readouterr().err)


def test_table_rows_from_a_start() -> None:
    assert table_rows(1000, 250, start=1100) == [1100, 1250, 1500, 1750, 2000, 2099]
    assert table_rows(5, start=7) == [7, 8, 9, 10, 11]
    assert table_rows(1000, None, [1337], start=1000) == [1000, 1100, 1200, 1300, 1337, 1400, 1500, 1600, 1700,
                                                          1800, 1900, 1999]


# --------------------------------------------------------------------------- streaming

def _windows(plan, steps: int, window: int, **kw):
    from optbridge.cli._export import Windows
    return Windows(plan, steps, window=window, **kw)


def test_streamed_csv_json_npy_equal_the_whole_trace(plan_file: Path, tmp_path: Path) -> None:
    """Windows of 7 updates (uneven last one), written in bulk: the same bytes' values as a trace from 0."""
    from optbridge.cli._export import write_csv, write_json, write_npy
    plan = optbridge.load(plan_file)
    full = trace(plan, 100)
    win = _windows(plan, 59, 7, start=30)
    parts = list(win)
    assert [p.start for p in parts] == list(range(30, 89, 7)) and sum(p.steps for p in parts) == 59
    buf = io.BytesIO()
    n = write_csv(win, buf, plan.steps_per_epoch, list(win.hypers))
    rows = list(csv.DictReader(io.StringIO(buf.getvalue().decode())))
    assert n == len(rows) == 59 * 2 * 2
    for r in rows:
        k = int(r["step"])
        assert int(r["epoch"]) == k // 10
        assert float(r["value"]) == full[r["hyper"]][full.groups.index(r["group"]), k]  # bit for bit
    with open(tmp_path / "t.json", "wb") as f:  # several windows: through temporary .npy files
        write_json(win, f, {"start": 30}, {"fidelity": []})
    doc = json.loads((tmp_path / "t.json").read_text())
    assert list(doc) == ["start", "values", "fidelity"] and not list(tmp_path.glob(".optbridge-json-*"))
    for h in ("lr", "momentum"):
        np.testing.assert_array_equal(np.array(doc["values"][h]), full[h][:, 30:89])
    write_npy(win, [tmp_path / "lr.npy", tmp_path / "m.npy"])
    np.testing.assert_array_equal(np.load(tmp_path / "lr.npy"), full["lr"][:, 30:89])
    np.testing.assert_array_equal(np.load(tmp_path / "m.npy"), full["momentum"][:, 30:89])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lr.npy", "m.npy", "plan.yaml", "t.json"]  # no leftovers


def test_windows_are_bounded() -> None:
    """The reference backend is evaluated WINDOW_VALUES values at a time, whatever the horizon."""
    from optbridge.cli._export import WINDOW_VALUES
    from optbridge.plan import Group, OptimizerSpec, Plan
    plan = Plan(optimizers=(OptimizerSpec(type="AdamW", groups=tuple(
        Group(name=f"g{i}", options={"lr": 1e-3 * 0.9**i}) for i in range(150))),),
        schedule={"lr": optbridge.recipes.warmup_cosine(10, 1_000_000)}, total_steps=1_000_000)
    win = _windows(plan, 1_000_000, 0)
    assert win.window * 150 <= WINDOW_VALUES and win.window >= 1000
    first = next(iter(win))
    assert first["lr"].shape == (150, win.window) and first.start == 0


def test_failing_trace_leaves_no_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "t.yaml"
    cfg.write_text("optbridge: 1\noptimizer: {type: SGD, lr: 0.1}\nschedule: {kind: table, values: [0.1, 0.2]}\n")
    for fmt in ("csv", "json", "npy"):
        assert main(["trace", str(cfg), "--steps", "3", "--format", fmt, "--out", str(tmp_path / f"x.{fmt}")]) == 2
        assert "update 2 is past the end" in one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.yaml"]


def test_trace_takes_one_backend(plan_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", str(plan_file), "--steps", "5", "--backend", "reference,torch"]) == 2
    assert "plot" in one_error_line(capsys.readouterr().err)


# --------------------------------------------------------------------------- numbers in bulk

def test_bulk_floats_read_back_bit_for_bit() -> None:
    """Random bit patterns (every exponent, both signs, subnormals, NaN/inf) and schedule-like values."""
    from optbridge.cli._numtext import compact, float_chars
    rng = np.random.default_rng(12)
    bits = rng.integers(0, 2**64, size=200_000, dtype=np.uint64)
    x = np.concatenate([bits.view(np.float64), 10.0 ** np.arange(-300, 300), 2.0 ** np.arange(-1074, 1024),
                        [0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, 1.7976931348623157e308, 1e-280, 1e280]])
    with np.errstate(over="ignore", invalid="ignore"):
        x = np.concatenate([x, np.nextafter(x, np.inf), np.nextafter(x, -np.inf)])
    text = compact(np.concatenate([float_chars(x), np.full((x.size, 1), ord("\n"), np.uint8)], axis=1))
    back = np.array([float(t) for t in text.decode().split("\n")[:-1]])
    same = (back.view(np.uint64) == x.view(np.uint64)) | (np.isnan(back) & np.isnan(x))
    assert same.all(), x[~same][:5]
    # Python's repr, except where a shorter form is within 1e-9 of half a gap (none here) or a tie
    k = np.arange(10_000)
    lr = np.concatenate([0.1 * (1 + np.cos(np.pi * k / 10_000)) / 2, [0.1, 1e-3, 5e-5, 0.9, 0.999, 100.0, 1e16,
                                                                       1e-4, 2.5e-7, 123.456, 7.0, -0.3]])
    lines = compact(np.concatenate([float_chars(lr), np.full((lr.size, 1), 10, np.uint8)], axis=1)).decode()
    assert lines.split("\n")[:-1] == [repr(v) for v in lr.tolist()]


def test_bulk_json_specials() -> None:
    from optbridge.cli._numtext import JSON_SPECIALS, compact, float_chars
    got = [compact(r).decode() for r in float_chars(np.array([np.nan, np.inf, -np.inf, 0.5]), JSON_SPECIALS)]
    assert got == ["NaN", "Infinity", "-Infinity", "0.5"]
    assert json.loads("[" + ", ".join(got) + "]")[3] == 0.5


# --------------------------------------------------------------------------- plot: overlays

def test_plot_overlays_backends(plan_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    pytest.importorskip("torch")
    out = tmp_path / "ov.png"
    assert main(["plot", str(FINETUNE), "--backend", "reference,torch", "--start", "20",
                 "--steps", "60", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"wrote {out}" and lines[1].startswith("  torch lr (applied): ")
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    # the reference comes first even when not named; one framework backend alone is plotted as before
    assert main(["plot", str(FINETUNE), "--backend", "torch", "--steps", "30", "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out}\n"
    assert main(["plot", str(FINETUNE), "--backend", "torch,nosuch", "--steps", "30", "--out", str(out)]) == 2
    assert "nosuch" in one_error_line(capsys.readouterr().err)


def test_long_table_is_streamed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"optbridge": 1, "optimizer": {"type": "Adam", "lr": 0.001},
                             "schedule": {"kind": "exponential", "gamma": 0.999}}))
    assert main(["trace", str(p), "--steps", "6000", "--every", "1", "--max-rows", "0"]) == 0
    header, rows = parse_table(capsys.readouterr().out)
    assert header == ["step", "lr[all]"] and [int(r[0]) for r in rows] == list(range(6000))
    np.testing.assert_allclose([float(r[1]) for r in rows], 0.001 * 0.999 ** np.arange(6000), rtol=5e-6)  # %.6g


def test_written_files_have_plain_permissions(plan_file: Path, tmp_path: Path) -> None:
    import os
    import stat
    umask = os.umask(0o022)
    try:
        for fmt in ("csv", "json", "npy"):
            out = tmp_path / f"t.{fmt}"
            assert main(["trace", str(plan_file), "--steps", "5", "--format", fmt, "--hyper", "lr",
                         "--out", str(out)]) == 0
            assert stat.S_IMODE(out.stat().st_mode) == 0o644
    finally:
        os.umask(umask)
