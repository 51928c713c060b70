"""The conformance suite: its data, its runner, and the suite itself on every available backend.

* the case files validate against ``conformance/case.schema.json`` and every node kind and
  every feature the issue lists is covered (computed from the plans, not claimed by tags);
* the runner passes every case on the reference backend;
* deliberately wrong backends are caught: the right first divergent step, group and
  hyperparameter; an expected deviation that passes fails loudly; unsupported, errors
  and unavailable backends get their own statuses; the CLI's exit codes;
* the conformance package has no import cycles; a backend is available only when it can
  run (a missing MegEngine interpreter skips with the set-up command);
* plain config files run like cases (``--steps``, ``--metrics``), shortened runs say so
  with the reason, the terminal table, report.json and the PNG name the same first
  divergence, refusal advice is kept only where the advised form runs the plan;
* the lr-find and trajectory families: the ramp case is the range test's ramp, the
  trajectory oracle is torch itself, and the trajectory comparison catches a wrong
  parameter at the right update;
* random plans (hypothesis) and the whole suite run on every available framework
  backend at a CI size: ``CI_STEPS`` updates per case, and every ``CI_SAMPLE``-th case on
  the backends with a large fixed cost per trace (about 2 minutes in all). The full-size
  run is ``optbridge conform --require-all --jobs 2`` (benchmarks/bench_conformance.py
  times it). ``OPTBRIDGE_CONFORMANCE_FULL=1`` makes this file run it too, and lets
  hypothesis shrink a failing random plan.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import optbridge
from optbridge import ir
from optbridge.backends import register_backend
from optbridge.cli import main
from optbridge_conformance import testing
from optbridge_conformance.cases import (
    CASES_DIR,
    FEATURES,
    XFAIL_DIR,
    Case,
    features,
    load_cases,
    load_deviations,
    validate_case_doc,
)
from optbridge_conformance.probe import probe_backend
from optbridge_conformance.runner import ALL_BACKENDS, run, run_one
from optbridge_conformance.schema import SchemaError, errors, load_schema

CASE_FILES = sorted(CASES_DIR.glob("*.yaml"))
FULL = bool(os.environ.get("OPTBRIDGE_CONFORMANCE_FULL"))
#: CI size of the whole-suite run: updates per case on each backend (cost per update: benchmarks/bench_conformance.py).
CI_STEPS = {"torch": 300, "mindspore-list": 100, "mindspore-cell": 60, "mindspore-experimental": 30, "megengine": 100}
#: Backends with a large fixed cost per trace run every k-th case in CI (all with FULL): mindspore-experimental
#: builds its schedulers from Parameters (~0.6 s per trace). (MegEngine's worker interpreter is persistent now: one
#: start-up per run, so it runs every case.)
CI_SAMPLE = {"mindspore-experimental": 4}
#: Every TRAJ_SAMPLE-th trajectory case in CI (ids sort by optimizer, then schedule: the sample mixes both).
TRAJ_SAMPLE = 5


@pytest.fixture
def test_backends():
    """Register the misbehaving test backends for one test, then remove them again."""
    from optbridge import backends
    for name, target in testing.TARGETS.items():
        register_backend(name, target, "test backend", clobber=True)
    yield
    for name in testing.TARGETS:
        backends._TABLE.pop(name, None)
        backends._CACHE.pop(name, None)
    testing.perturb(0, "")


def _doc(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- the data

def test_there_are_at_least_80_case_files() -> None:
    assert len(CASE_FILES) >= 80


@pytest.mark.parametrize("path", CASE_FILES, ids=lambda p: p.stem)
def test_case_file_validates(path: Path) -> None:
    assert validate_case_doc(_doc(path), str(path)) == []


def test_schemas_use_only_implemented_keywords() -> None:
    for name in ("case.schema.json", "xfail.schema.json"):
        schema = load_schema(name)
        errors({}, schema)  # raises SchemaError on an unimplemented keyword anywhere it looks
        assert schema["$schema"].endswith("2020-12/schema")
    with pytest.raises(SchemaError):
        errors(1, {"type": "integer", "multipleOf": 2})


BASE_DOC = {"id": "x-case", "family": "decay", "description": "a case that is valid as it stands",
            "plan": {"optbridge": 1, "optimizer": {"type": "SGD", "lr": 0.1},
                     "schedule": {"kind": "cosine", "steps": 5}}, "steps": 10}


@pytest.mark.parametrize("patch,message", [
    ({"id": None}, "id: is required"),
    ({"family": "Not A Family"}, "family: must match"),
    ({"steps": 0}, "steps: must be >= 1"),
    ({"steps": 2.5}, "steps: must be of type integer"),
    ({"extra": 1}, "extra: is not a known field"),
    ({"description": "short"}, "description: must have at least 20 characters"),
    ({"id": "Bad_Id"}, "id: must match"),
    ({"backends": {"only": ["reference"]}}, "backends: matches none of the allowed forms"),
    ({"backends": {"only": ["reference"], "reason": "long enough reason", "skip": {"torch": "some reason here"}}},
     "backends: matches none of the allowed forms"),
    ({"tolerance": {"torch": {"rtol": 1e-9}}}, "tolerance.torch.reason: is required"),
    ({"metrics": {"expr": "k"}}, "metrics: matches none of the allowed forms"),
    ({"steps_by_backend": {"torch": 5}}, "steps_by_backend needs steps_reason"),
    ({"plan": {"optbridge": 1, "optimizer": {"type": "SGD", "lr": 0.1}, "schedule": {"kind": "cosine", "steps": 0}}},
     "schedule.steps: must be a positive integer"),
    ({"plan": {"optbridge": 1, "optimizer": {"type": "SGD", "lr": 0.1}, "total_steps": 5,
               "schedule": {"kind": "cosine", "steps": 5}}}, "exceed the plan's total_steps"),
    ({"lr_find": {"start_lr": 1.0, "end_lr": 0.5}}, "lr_find.end_lr: must be > start_lr"),
    ({"trajectory": {"size": 2, "seed": 0, "grad_scales": [1.0]},
      "plan": {"optbridge": 1, "optimizer": {"type": "SGD", "lr": 0.1},
               "groups": [{"name": "a", "params": "*"}, {"name": "b", "params": "b.*"}]}},
     "trajectory: the groups must select <group>.w: groups[1].params: parameter 'b.w' is matched by group 'a'"),
])
def test_the_validator_rejects_bad_cases(patch: dict, message: str) -> None:
    doc = copy.deepcopy(BASE_DOC)
    for k, v in patch.items():
        if v is None:
            doc.pop(k)
        else:
            doc[k] = v
    assert validate_case_doc(BASE_DOC) == []
    errs = validate_case_doc(doc)
    assert any(message in e for e in errs), errs


def test_the_validator_agrees_with_jsonschema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    for path in CASE_FILES:
        validator.validate(_doc(path))
    bad = dict(BASE_DOC, steps=0)
    assert errors(bad) and jsonschema.Draft202012Validator(schema).is_valid(bad) is not True


def test_case_ids_are_unique_and_equal_file_names() -> None:
    cases = load_cases()
    assert [c.id for c in cases] == sorted(p.stem for p in CASE_FILES)


def test_every_node_kind_and_feature_is_covered() -> None:
    cases = load_cases()
    seen: set[str] = set()
    for c in cases:
        seen |= features(c)
    missing_kinds = [k for k in ir.NODE_TYPES if f"kind:{k}" not in seen]
    missing = [f for f in FEATURES if f not in seen]
    assert not missing_kinds, f"node kinds without a case: {missing_kinds}"
    assert not missing, f"features without a case: {missing}"
    assert len({f for f in seen if f.startswith("optimizer:")}) >= 4  # several optimizers


def test_expected_deviation_files_are_valid_and_name_real_cases() -> None:
    ids = {c.id for c in load_cases()}
    devs = load_deviations()
    for path in sorted(XFAIL_DIR.glob("*.yaml")):  # <backend>.yaml or <backend>.<topic>.yaml
        assert _doc(path)["backend"] == path.name.split(".")[0], path
    for backend, entries in devs.items():
        assert backend in ALL_BACKENDS, backend
        for d in entries:
            assert d.case in ids, f"{d.source}: {d.case} is not a case"


def test_docs_matrix_is_generated_and_current() -> None:
    """docs/conformance.md comes from the runner and lists every case (regenerate after adding one)."""
    docs = Path(__file__).resolve().parent.parent / "docs" / "conformance.md"
    text = docs.read_text(encoding="utf-8")
    assert text.startswith("<!-- GENERATED by `optbridge conform --write-docs docs/conformance.md`")
    missing = [p.stem for p in CASE_FILES if f"| `{p.stem}` |" not in text]
    assert not missing, f"regenerate docs/conformance.md (optbridge conform --require-all --write-docs ...): {missing}"
    assert f"({len(CASE_FILES)} files)" in text


# --------------------------------------------------------------------------- the runner on the reference

def test_reference_passes_every_case() -> None:
    r = run(backends=["reference"])
    bad = {k: v.status for k, v in r.results.items() if v.status != "pass"
           and not (k[0].startswith("trajectory-") and v.status == "skip")}  # trajectories: torch is the oracle
    assert not bad
    assert r.exit_code == 0 and len(r.cases) == len(CASE_FILES)


def test_a_wrong_pin_fails_the_reference(tmp_path: Path) -> None:
    doc = _doc(CASES_DIR / "linear-warmup-from-zero.yaml")
    doc["pins"][1]["value"] = 0.0500001
    path = tmp_path / "linear-warmup-from-zero.yaml"
    path.write_text(yaml.safe_dump(doc))
    res = run([str(path)], backends=["reference"]).result("linear-warmup-from-zero", "reference")
    assert res.status == "fail"
    assert any("pin: step 100, group g0, lr: hand-computed 0.0500001, reference 0.05" in p for p in res.problems)


# --------------------------------------------------------------------------- wrong backends are caught

@pytest.mark.parametrize("case,step,group,hyper", [
    ("exponential-continuous", 137, "g1", "lr"),
    ("multistep-milestone-zero", 0, "g0", "lr"),
    ("cyclic-triangular-momentum", 321, "g1", "momentum"),
    ("frozen-zero-lr", 17, "backbone", "lr"),
])
def test_a_perturbed_backend_is_caught_at_the_right_step_and_group(test_backends, case, step, group, hyper) -> None:
    testing.perturb(step, group, hyper, delta=1e-9)
    r = run([case], backends=["reference", "test-perturbed"])
    res = r.result(case, "test-perturbed")
    assert res.status == "fail" and r.exit_code == 1
    fd = res.first_divergence()
    assert (fd.first_step, fd.group, fd.hyper) == (step, group, hyper)
    tr = optbridge.trace(Case(_doc(CASES_DIR / f"{case}.yaml")).plan, step + 1)
    ref = tr[hyper][tr.groups.index(group), step]
    assert fd.expected == ref
    assert fd.got == (ref * (1 + 1e-9) if ref != 0 else 1e-9)
    assert fd.n_bad == 1
    assert all(s.ok for s in res.series if (s.group, s.hyper) != (group, hyper))


def test_a_perturbation_below_the_tolerance_passes(test_backends) -> None:
    testing.perturb(50, "g0", delta=1e-14)
    r = run(["exponential-continuous"], backends=["test-perturbed"])
    assert r.result("exponential-continuous", "test-perturbed").status == "pass"


def test_the_applied_value_is_what_is_compared(test_backends) -> None:
    testing.perturb(10, "g0", delta=1e-6, applied=False)  # held value off, applied lr exact: judged on applied
    plan = Case(_doc(CASES_DIR / "exponential-continuous.yaml")).plan
    tr = optbridge.trace(plan, 30, backend="test-perturbed")
    assert "lr" not in tr.applied
    testing.perturb(10, "g0", delta=1e-6, applied=True)
    res = run(["exponential-continuous"], backends=["test-perturbed"]).result("exponential-continuous",
                                                                              "test-perturbed")
    assert res.first_divergence().source == "applied"


def test_groups_out_of_order_fail(test_backends) -> None:
    res = run(["multistep-basic"], backends=["test-shuffled"]).result("multistep-basic", "test-shuffled")
    assert res.status == "fail"
    assert any("groups differ" in p for p in res.problems)


def _xfail_file(tmp_path: Path, backend: str, entries: list[dict]) -> str:
    p = tmp_path / f"{backend}.yaml"
    p.write_text(yaml.safe_dump({"backend": backend, "deviations": entries}))
    return str(p)


def test_an_expected_deviation_that_passes_fails_loudly(tmp_path: Path) -> None:
    xf = _xfail_file(tmp_path, "reference", [{"case": "cosine-clamped", "expect": "mismatch",
                                               "reason": "pretend the reference deviates here"}])
    r = run(["cosine-clamped", "multistep-basic"], backends=["reference"], xfail_files=[xf])
    res = r.result("cosine-clamped", "reference")
    assert res.status == "xpass" and r.exit_code == 1
    from optbridge_conformance.report import terminal
    text = terminal(r)
    assert "XPASS cosine-clamped @ reference" in text and "FAILED" in text


def test_an_expected_mismatch_is_xfail_only_where_listed(test_backends, tmp_path: Path) -> None:
    testing.perturb(5, "g1", "lr", delta=1e-6)
    covered = _xfail_file(tmp_path, "test-perturbed", [{"case": "multistep-basic", "group": "g1", "hyper": "lr",
                                                        "expect": "mismatch",
                                                        "reason": "a known deviation of g1's lr"}])
    r = run(["multistep-basic"], backends=["test-perturbed"], xfail_files=[covered])
    res = r.result("multistep-basic", "test-perturbed")
    assert (res.status, res.expected, r.exit_code) == ("xfail", True, 0)
    assert "a known deviation" in res.deviations[0]
    other = _xfail_file(tmp_path / "..", "test-perturbed", [{"case": "multistep-basic", "group": "g0",
                                                             "expect": "mismatch",
                                                             "reason": "a known deviation of g0 only"}])
    r = run(["multistep-basic"], backends=["test-perturbed"], xfail_files=[other])
    res = r.result("multistep-basic", "test-perturbed")
    assert res.status == "fail" and "g1/lr" in res.message and r.exit_code == 1


def test_unsupported_is_its_own_status(test_backends, tmp_path: Path) -> None:
    r = run(["cosine-clamped"], backends=["test-unsupported"])
    res = r.result("cosine-clamped", "test-unsupported")
    assert res.status == "unsupported" and "supports nothing" in res.message and r.exit_code == 0
    assert run(["cosine-clamped"], backends=["test-unsupported"], strict_unsupported=True).exit_code == 1
    xf = _xfail_file(tmp_path, "test-unsupported", [{"case": "cosine-clamped", "expect": "unsupported",
                                                     "reason": "this backend cannot express it"}])
    r = run(["cosine-clamped"], backends=["test-unsupported"], xfail_files=[xf], strict_unsupported=True)
    assert r.result("cosine-clamped", "test-unsupported").expected and r.exit_code == 0


def test_errors_and_unavailable_backends(test_backends) -> None:
    r = run(["cosine-clamped"], backends=["reference", "test-crashing", "test-missing"])
    assert r.result("cosine-clamped", "test-crashing").status == "error"
    assert "simulated backend bug" in r.result("cosine-clamped", "test-crashing").message
    assert r.result("cosine-clamped", "test-missing").status == "unavailable"
    assert r.exit_code == 1  # the crash
    r = run(["cosine-clamped"], backends=["reference", "test-missing"])
    assert r.exit_code == 0
    assert run(["cosine-clamped"], backends=["reference", "test-missing"], require_all=True).exit_code == 1


def test_max_steps_caps_and_does_not_demand_far_deviations(test_backends, tmp_path: Path) -> None:
    testing.perturb(150, "g0", delta=1e-6)
    xf = _xfail_file(tmp_path, "test-perturbed", [{"case": "exponential-continuous", "expect": "mismatch",
                                                   "reason": "a deviation past update 100"}])
    r = run(["exponential-continuous"], backends=["test-perturbed"], xfail_files=[xf], max_steps=100)
    res = r.result("exponential-continuous", "test-perturbed")
    assert res.steps == 100 and res.capped and res.status == "pass" and r.exit_code == 0


# --------------------------------------------------------------------------- the command line

def test_cli_exit_codes(test_backends, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conform", "--backends", "reference", "-q", "cosine-*"]) == 0
    assert "OK" in capsys.readouterr().out
    testing.perturb(3, "g0")
    assert main(["conform", "--backends", "test-perturbed", "-q", "cosine-clamped"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  cosine-clamped @ test-perturbed: step 3, group g0, lr (applied)" in out
    assert main(["conform", "no-such-case"]) == 2
    assert "matches no case" in capsys.readouterr().err
    assert main(["conform", "--backends", "no-such-backend", "cosine-clamped"]) == 2
    assert main(["conform", "--jobs", "0"]) == 2
    assert main(["conform", "--list", "family:plateau"]) == 0
    assert "plateau-min-rel" in capsys.readouterr().out


def test_cli_writes_reports_plots_and_docs(test_backends, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    testing.perturb(40, "g1", delta=1e-3)
    out = tmp_path / "out"
    docs = tmp_path / "conformance.md"
    rc = main(["conform", "--backends", "reference,test-perturbed", "--out", str(out), "--write-docs", str(docs),
               "-q", "cosine-clamped", "multistep-basic"])
    assert rc == 1
    rep = json.loads((out / "report.json").read_text())
    bad = [x for x in rep["results"] if x["status"] == "fail"]
    assert {x["case"] for x in bad} == {"cosine-clamped", "multistep-basic"}
    assert bad[0]["first_divergence"]["step"] == 40 and bad[0]["first_divergence"]["group"] == "g1"
    md = (out / "report.md").read_text()
    assert "Failures (2)" in md and "step 40, group g1" in md
    text = docs.read_text()
    assert text.startswith("<!-- GENERATED by `optbridge conform --write-docs")
    assert "| decay (1) |" in text or "| decay (1) " in text
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    png = out / "plots" / "cosine-clamped.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_in_a_subprocess() -> None:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    p = subprocess.run([sys.executable, "-m", "optbridge", "conform", "--backends", "reference", "-q", "family:data"],
                       capture_output=True, text=True, env=env, cwd=Path(__file__).parent.parent)
    assert p.returncode == 0, p.stderr
    assert "4 pass" in p.stdout
    p = subprocess.run([sys.executable, "-m", "optbridge_conformance", "nope"], capture_output=True, text=True,
                       env=env, cwd=Path(__file__).parent.parent)
    assert p.returncode == 2 and p.stderr.startswith("optbridge: error: CASES: 'nope' matches no case")


# --------------------------------------------------------------------------- random plans

def test_random_plans_are_valid_and_reproducible() -> None:
    pytest.importorskip("hypothesis")
    from optbridge_conformance.randplans import random_cases
    a = random_cases(6, seed=3, max_steps=40)
    b = random_cases(6, seed=3, max_steps=40)
    assert [c.doc for c in a] == [c.doc for c in b]
    assert len(a) == 6
    for c in a:
        assert validate_case_doc(dict(c.doc)) == []
    r = run(a, backends=["reference"])
    assert r.exit_code == 0


def _available(names=ALL_BACKENDS[1:]) -> list[str]:
    return [b for b in names if probe_backend(b).available]


FRAMEWORK_BACKENDS = [pytest.param(b, id=b) for b in ALL_BACKENDS[1:]]


def test_cases_made_in_memory_are_cached_by_content() -> None:
    """Expected values of a case without a file are cached by its document's content, never by id(doc): a freed
    document's id comes back for the next one (hypothesis plans), which then got the earlier plan's reference."""
    from optbridge_conformance.execute import _key
    from optbridge_conformance.randplans import random_cases
    a, b = random_cases(2)[:2]
    doc = dict(b.doc, id=a.doc["id"])
    assert _key(Case(dict(a.doc))) == _key(a)
    assert _key(Case(doc)) != _key(a)


@pytest.mark.parametrize("backend", FRAMEWORK_BACKENDS)
def test_random_plans_agree_on_every_available_backend(backend: str) -> None:
    """Hypothesis draws plans and shrinks any disagreement to a minimal plan."""
    hyp = pytest.importorskip("hypothesis")
    if not _available([backend]):
        pytest.skip(f"{backend} is not available here")
    from hypothesis import HealthCheck, Phase, given, settings

    from optbridge_conformance.randplans import case_docs, usable
    devs = load_deviations().get(backend, [])

    phases = list(Phase) if FULL else [Phase.explicit, Phase.generate]  # shrinking re-runs the backend many times
    @settings(max_examples=int(os.environ.get("OPTBRIDGE_CONFORMANCE_RANDOM", "6")), deadline=None, database=None,
              suppress_health_check=list(HealthCheck), derandomize=True, phases=phases)
    @given(doc=case_docs(max_steps=30))
    def check(doc: dict) -> None:
        hyp.assume(usable(doc))
        case = Case(doc)
        res = run_one(case, backend, steps=case.steps, ref_steps=case.steps, deviations=devs, keep_plot=False)
        assert res.status in ("pass", "unsupported", "xfail"), \
            f"{res.status}: {res.message} {res.first_divergence()} plan={json.dumps(doc['plan'])}"

    check()


# --------------------------------------------------------------------------- dialect cases, run literally

def _dialect_cases(dialect: str) -> list[Case]:
    return [c for c in load_cases() if c.family == f"dialect-{dialect}"]


#: Dialect cases whose document the dialect translates wrongly (core bugs, reported): strict xfails.
DIALECT_BUGS: dict[str, str] = {}  # torch-dialect documents torch runs differently (none known)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(reason=DIALECT_BUGS[c.id],
                                                                                      strict=True)]
                                               if c.id in DIALECT_BUGS else [])
                                  for c in _dialect_cases("torch")])
def test_torch_dialect_documents_run_literally_in_torch_agree_with_the_reference(case: Case) -> None:
    """The backends all start from the plan; this checks the translation itself: build the document's
    classes in torch as written, step them, compare with the reference (float64, 1e-12)."""
    torch = pytest.importorskip("torch")
    import math
    import warnings

    import numpy as np
    from torch.optim import lr_scheduler as S
    env = {n: getattr(math, n) for n in ("cos", "sin", "sqrt", "exp", "log", "floor", "ceil", "pi")}

    def lam(src: str):
        return eval(f"lambda epoch: {src}", dict(env))  # test-only: the library never evals

    def build(o, spec):
        spec = dict(spec)
        t = spec.pop("type")
        spec.pop("step_unit", None)
        if t in ("SequentialLR", "ChainedScheduler"):
            spec["schedulers"] = [build(o, s) for s in spec["schedulers"]]
            if t == "ChainedScheduler":
                return S.ChainedScheduler(spec["schedulers"])
        if "lr_lambda" in spec:
            f = spec["lr_lambda"]
            spec["lr_lambda"] = [lam(x) for x in f] if isinstance(f, list) else lam(f)
        return getattr(S, t)(o, **spec)

    d = case.doc["plan"]
    ref = optbridge.trace(case.plan, case.steps, metrics=case.metrics)["lr"]
    opt = dict(d["optimizer"])
    otype = opt.pop("type")
    groups = d.get("param_groups") or [{"params": "rest"}]
    ps = [torch.nn.Parameter(torch.zeros(1, dtype=torch.float64)) for _ in groups]
    o = getattr(torch.optim, otype)([{"params": [p], **{k: v for k, v in g.items() if k not in ("params", "name")}}
                                     for p, g in zip(ps, groups)], **opt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sch = d["scheduler"]
        scheds = [build(o, s) for s in sch] if isinstance(sch, list) else [build(o, sch)]
        unit, spe, e = d.get("step_unit", "iter"), d.get("steps_per_epoch", 1), 0
        got = np.zeros_like(ref)
        for k in range(case.steps):
            got[:, k] = [g["lr"] for g in o.param_groups]
            o.step()
            if unit == "iter" or (k + 1) % spe == 0:
                for s in scheds:
                    s.step(float(case.metrics[e])) if isinstance(s, S.ReduceLROnPlateau) else s.step()
                e += 1
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=0)


@pytest.mark.parametrize("case", _dialect_cases("mindspore"), ids=lambda c: c.id)
def test_mindspore_dialect_documents_evaluated_in_mindspore_agree_with_the_reference(case: Case) -> None:
    """Evaluate the document's lr as MindSpore does (its list functions, its cells at global_step = k) and
    compare with the reference: list functions are float64 (1e-12), cells float32 (3e-8 absolute: semantics.md
    section 2.2 measured 2.4e-8 for CosineDecayLR)."""
    pytest.importorskip("mindspore")
    import warnings

    import numpy as np
    from mindspore import Tensor, nn

    def lr_values(spec, n: int) -> tuple[np.ndarray, float]:
        if isinstance(spec, (int, float)):
            return np.full(n, float(spec)), 0.0
        specs = spec if isinstance(spec, list) else [spec]
        out: list[float] = []
        for s in specs:
            s = dict(s)
            fn = getattr(nn, s.pop("type"))
            if isinstance(fn, type):  # a LearningRateSchedule cell
                return fn(**s)(Tensor(np.arange(n, dtype=np.int32))).asnumpy().astype(np.float64).reshape(-1), 3e-8
            out += fn(**s)
        return np.asarray(out[:n], dtype=np.float64), 1e-12

    d = case.doc["plan"]
    tr = optbridge.trace(case.plan, case.steps)
    top = d.get("learning_rate", d["optimizer"].get("learning_rate"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, g in enumerate(d.get("group_params") or [{}]):
            want, atol = lr_values(g.get("lr", top), case.steps)
            np.testing.assert_allclose(tr["lr"][i], want, rtol=1e-12, atol=atol)


# --------------------------------------------------------------------------- the whole suite on every backend

@pytest.mark.parametrize("backend", FRAMEWORK_BACKENDS)
def test_the_whole_suite_on_an_available_backend(backend: str) -> None:
    """Every case at CI size (the first CI_STEPS[backend] updates); the full run is `optbridge conform`.

    As `optbridge conform --jobs 2` runs them: in two worker processes (pinned, PROCESS_ENV set, the oracle
    trajectories shared); MindSpore's default mode runs in this process in the other tests (random plans, traces).

    A backend that cannot run here (framework or worker interpreter missing) skips with the reason and the
    set-up command; one that is here but fails to run fails (its results are errors)."""
    info = probe_backend(backend)
    if not info.available:
        pytest.skip(f"{backend}: {info.message}")
    cases = load_cases()
    if not FULL:  # the schedule cases (every CI_SAMPLE-th on costly backends) and every TRAJ_SAMPLE-th trajectory
        cases = ([c for c in cases if c.trajectory is None][::CI_SAMPLE.get(backend, 1)]
                 + [c for c in cases if c.trajectory is not None][::TRAJ_SAMPLE])
    r = run(cases, backends=[backend], jobs=2, max_steps=None if FULL else CI_STEPS[backend],
            strict_unsupported=True)
    from optbridge_conformance.report import terminal
    assert r.exit_code == 0, terminal(r, full=False)


# --------------------------------------------------------------------------- structure and availability

def test_a_missing_megengine_interpreter_is_unavailable_with_the_setup_command(monkeypatch) -> None:
    """Without the worker interpreter MegEngine is unavailable (reason + set-up command) and the suite skips it."""
    from optbridge_adapters.megengine import backend as mge_backend
    if mge_backend.runs_here():
        pytest.skip("megengine runs in this process: no worker interpreter is needed")
    monkeypatch.setenv("OPTBRIDGE_MGE_PYTHON", "/nonexistent/python3.10")
    info = probe_backend("megengine")
    assert not info.available
    assert "OPTBRIDGE_MGE_PYTHON=/nonexistent/python3.10" in info.message and "./dev setup" in info.message
    r = run(["cosine-clamped"], backends=["reference", "megengine"])
    assert r.result("cosine-clamped", "megengine").status == "unavailable" and r.exit_code == 0
    assert run(["cosine-clamped"], backends=["megengine"], require_all=True).exit_code == 1
    with pytest.raises(pytest.skip.Exception, match="megengine: .*./dev setup"):
        test_the_whole_suite_on_an_available_backend("megengine")


def test_batches_hold_one_framework_and_start_with_the_most_expensive() -> None:
    """A batch holds one framework's tasks (the MindSpore forms are one framework), a case's tasks next to each
    other (its forms reuse each other's compiled optimizers), the most expensive batch first."""
    from optbridge_conformance.execute import Task
    from optbridge_conformance.runner import batches, framework
    cases = load_cases()[:12]
    backends = ("torch", "mindspore-list", "mindspore-cell", "mindspore-experimental", "megengine")
    tasks = [Task(i, c, b, 100 if b == "torch" else 60, []) for i, (c, b) in
             enumerate((c, b) for c in cases for b in backends)]
    out = batches(tasks, jobs=2)
    assert sorted(t.index for b in out for t in b) == list(range(len(tasks)))
    assert all(len({framework(t.backend) for t in b}) == 1 for b in out)
    assert {framework(b) for b in backends} == {"torch", "mindspore", "megengine"}
    for b in out:
        ids = [t.case.id for t in b]
        assert ids == sorted(ids, key=ids.index)  # each case's tasks next to each other
        if framework(b[0].backend) == "mindspore":
            assert len(ids) == 3 * len(set(ids))  # every form of each of its cases
    costs = [sum(t.cost for t in b) for b in out]
    assert costs == sorted(costs, reverse=True) and len(out) > 2


def test_a_process_takes_its_share_of_the_work_left() -> None:
    """Guided self-scheduling: a process takes at most remaining / (2 jobs) of the estimated work (at least one
    task) and leaves the rest of the batch pending, so the last batches shrink and the processes finish together."""
    from optbridge_conformance.execute import Task
    from optbridge_conformance.runner import guided
    cases = load_cases()[:10]
    batch = [Task(i, c, "megengine", 200, []) for i, c in enumerate(cases)]  # the same estimate each
    each = batch[0].cost
    head, rest = guided(batch, 100 * each, 2)  # early in a run: the whole batch
    assert head == batch and rest == []
    head, rest = guided(batch, 12 * each, 2)   # near the end: 3 of 12 remaining
    assert [t.index for t in head] == [0, 1, 2] and [t.index for t in rest] == list(range(3, 10))
    head, rest = guided(batch[:2], 2 * each, 2)  # the share is half a task: one task still runs
    assert [t.index for t in head] == [0] and [t.index for t in rest] == [1]
    forms = [Task(i, cases[i // 3], b, 400, []) for i, b in enumerate(["mindspore-list", "mindspore-cell",
                                                                       "mindspore-experimental"] * 3)]
    head, rest = guided(forms, 4 * forms[0].cost, 2)  # a case's forms are not cut apart
    assert [t.index for t in head] == [0, 1, 2] and {t.case.id for t in rest} == {cases[1].id, cases[2].id}


def test_the_suite_is_cut_into_balanced_batches() -> None:
    """The whole suite with --jobs 2 (the run CI makes): the reference's long horizons are estimated as the seconds
    they take (budget.yaml `costs`), so no backend's estimate dwarfs the others; MindSpore (its three forms, a case's
    together) is cut into several batches of about equal estimated time, and no batch of one backend's cases is much
    longer than the target, so the two processes finish together (before: every backend was one batch, one process
    idled 30 s)."""
    from optbridge_conformance.cases import estimated_seconds
    from optbridge_conformance.results import BackendInfo
    from optbridge_conformance.runner import BATCHES_PER_JOB, batches, plan_tasks
    infos = [BackendInfo(b, True, "") for b in ALL_BACKENDS]
    tasks, _ = plan_tasks(load_cases(), infos, {}, max_steps=None, budget=True, plot=False)
    ref = sum(t.cost for t in tasks if t.backend == "reference")
    assert ref < 10 and estimated_seconds("reference", 16_777_300) < 2
    out = batches(tasks, jobs=2)
    target = sum(t.cost for t in tasks) / (2 * BATCHES_PER_JOB)
    assert len([x for x in out if x[0].backend.startswith("mindspore-")]) >= 9
    assert max(sum(t.cost for t in x) for x in out if len(x) > 1) <= 1.5 * target


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="the platform cannot pin processes to CPUs")
def test_workers_get_disjoint_cpu_shares(monkeypatch: pytest.MonkeyPatch) -> None:
    """--jobs N pins each worker process to its share of this process's CPUs (MindSpore's busy runtime threads
    slow an unpinned neighbour down); no pinning with one job or fewer CPUs than jobs. The initializer also sets
    PROCESS_ENV (MindSpore launches in the calling thread), unless the user set those variables, and the run's
    shared directory."""
    from optbridge_conformance.execute import SHARED_DIR
    from optbridge_conformance.runner import PROCESS_ENV, _worker_init, cpu_shares
    cpus = sorted(os.sched_getaffinity(0))
    shares = cpu_shares(2)
    if len(cpus) >= 2:
        assert all(shares) and set().union(*shares) == set(cpus) and not shares[0] & shares[1]
    assert cpu_shares(1) == [None] and cpu_shares(len(cpus) + 1) == [None] * (len(cpus) + 1)
    assert PROCESS_ENV == {"MS_DEV_LAUNCH_BLOCKING": "1", "MS_DEV_HOST_BLOCKING_RUN": "1"}
    for k in [*PROCESS_ENV, SHARED_DIR]:  # set, then deleted: monkeypatch restores what was there before
        monkeypatch.setenv(k, "")
        monkeypatch.delenv(k)
    _worker_init(None, "/run/dir")
    assert sorted(os.sched_getaffinity(0)) == cpus and all(os.environ[k] == "1" for k in PROCESS_ENV)
    assert os.environ[SHARED_DIR] == "/run/dir"
    monkeypatch.setenv("MS_DEV_LAUNCH_BLOCKING", "0")
    monkeypatch.setenv("MS_DEV_HOST_BLOCKING_RUN", "0")
    _worker_init(None, "/run/dir")
    assert os.environ["MS_DEV_LAUNCH_BLOCKING"] == "0" and os.environ["MS_DEV_HOST_BLOCKING_RUN"] == "0"


def test_worker_processes_share_each_oracle_trajectory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The torch oracle of a trajectory case is computed once per run: the first process writes it into the run's
    shared directory (whole, under a temporary name first), the others read the same float32 values back
    without pickle; without the directory (or where it cannot write) every call computes it."""
    import numpy as np

    from optbridge_conformance import execute
    made: list[int] = []

    def make() -> np.ndarray:
        made.append(1)
        return np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    key = ("case", "cases/x.yaml", "", "oracle", 3)
    monkeypatch.delenv(execute.SHARED_DIR, raising=False)
    execute._shared(key, make), execute._shared(key, make)
    assert len(made) == 2 and not list(tmp_path.iterdir())
    monkeypatch.setenv(execute.SHARED_DIR, str(tmp_path))
    first = execute._shared(key, make)
    again = execute._shared(key, make)
    other = execute._shared((*key[:-1], 4), make)
    assert len(made) == 4  # the second call read the file; another step count is another trajectory
    assert again.dtype == np.float32 and np.array_equal(again, first) and np.array_equal(other, first)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".npy", ".npy"]
    monkeypatch.setenv(execute.SHARED_DIR, str(tmp_path / "gone"))  # a directory that cannot take the file
    assert np.array_equal(execute._shared(key, make), first) and len(made) == 5


# --------------------------------------------------------------------------- conformance for users

def _write(path: Path, doc: dict) -> str:
    path.write_text(json.dumps(doc) if path.suffix == ".json" else yaml.safe_dump(doc, sort_keys=False))
    return str(path)


def test_a_plain_config_runs_with_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _write(tmp_path / "My Schedule.yaml", {
        "dialect": "torch", "optimizer": {"type": "SGD", "lr": 0.1, "momentum": 0.9},
        "scheduler": {"type": "SequentialLR", "milestones": [10],
                      "schedulers": [{"type": "LinearLR", "start_factor": 0.1, "total_iters": 10},
                                     {"type": "CosineAnnealingLR", "T_max": 40}]}})
    assert main(["conform", cfg, "--steps", "50", "--backends", "reference,torch", "-q"]) == 0
    out = capsys.readouterr().out
    assert "1 cases x 2 backends" in out and "OK" in out
    r = run([cfg], backends=["reference", "torch"], steps=50)
    (case,) = r.cases
    assert (case.id, case.family, case.steps, case.dialect) == ("my-schedule", "user", 50, "torch")
    assert r.result("my-schedule", "torch").status == "pass"
    assert main(["conform", cfg, "--backends", "reference"]) == 2   # no --steps, no total_steps
    assert "--steps: is required for" in capsys.readouterr().err


def test_a_plain_config_with_a_plateau_takes_metrics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _write(tmp_path / "plateau.json", {
        "optbridge": 1, "optimizer": {"type": "Adam", "lr": 1e-3}, "total_steps": 30,
        "schedule": {"lr": {"kind": "plateau", "factor": 0.5, "patience": 2}}})
    metrics = tmp_path / "val.txt"
    metrics.write_text("\n".join(str(1.0 / (1 + min(k, 5))) for k in range(30)))
    assert main(["conform", cfg, "--metrics", str(metrics), "--backends", "reference,torch", "-q"]) == 0
    assert "OK" in capsys.readouterr().out
    tr = optbridge.trace(run([cfg], backends=["reference"], metrics=[1.0 / (1 + min(k, 5)) for k in range(30)])
                         .cases[0].plan, 30, metrics=[1.0 / (1 + min(k, 5)) for k in range(30)])
    assert tr["lr"][0, 0] == 1e-3 and tr["lr"][0, -1] < 1e-3  # the metric reached the plateau
    assert main(["conform", cfg, "--backends", "reference", "-q"]) == 1  # plateau without its metric: an error
    assert "metric" in capsys.readouterr().out


def test_family_is_an_open_name(tmp_path: Path) -> None:
    doc = dict(copy.deepcopy(BASE_DOC), id="my-own", family="my-family")
    path = _write(tmp_path / "my-own.yaml", doc)
    r = run([path, "cosine-clamped"], backends=["reference"])
    from optbridge_conformance.sections import family_matrix
    rows = family_matrix(r)
    assert rows[2].startswith("| cosine (1) |") and rows[3].startswith("| my-family (1) |")


def test_a_shortened_run_says_so_with_the_budget_and_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from optbridge_conformance.cases import budget_caps
    cap, why = budget_caps()["torch"]
    cfg = _write(tmp_path / "long.yaml", {"optbridge": 1, "optimizer": {"type": "SGD", "lr": 0.1},
                                          "schedule": {"lr": {"kind": "cosine", "steps": cap + 500}}})
    out_dir = tmp_path / "out"
    assert main(["conform", cfg, "--steps", str(cap + 500), "--backends", "reference,torch", "-q",
                 "--out", str(out_dir), "--no-plots"]) == 0
    text = capsys.readouterr().out
    assert f"torch: ran the first {cap:,} updates of `long` ({cap + 500:,} updates); budget.yaml: {why}" in text
    rep = json.loads((out_dir / "report.json").read_text())
    res = {x["backend"]: x for x in rep["results"]}
    assert res["torch"]["budget"] == {"ran": cap, "of": cap + 500, "source": "budget.yaml", "reason": why}
    assert res["reference"]["budget"] is None and res["reference"]["steps"] == cap + 500
    assert "## Shortened runs" in (out_dir / "report.md").read_text()
    r = run([cfg], backends=["torch"], steps=cap + 500, budget=False)
    assert r.result("long", "torch").steps == cap + 500 and not r.shortened()


def test_terminal_json_and_png_name_the_same_first_divergence(test_backends, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Two groups diverge at the same step: every output names the first in trace order (zeta, not alpha)."""
    doc = dict(copy.deepcopy(BASE_DOC), id="tie")
    doc["plan"]["groups"] = [{"name": "zeta", "lr": 0.1}, {"name": "alpha", "lr": 0.05}]
    path = _write(tmp_path / "tie.yaml", doc)
    testing.perturb(4, "alpha,zeta", delta=1e-6)
    out_dir = tmp_path / "out"
    assert main(["conform", path, "--backends", "test-perturbed", "-q", "--out", str(out_dir)]) == 1
    text = capsys.readouterr().out
    r = run([path], backends=["test-perturbed"], plot=True)
    res = r.result("tie", "test-perturbed")
    fd = res.first_divergence()
    assert (fd.first_step, fd.group, fd.hyper) == (4, "zeta", "lr")
    tr = optbridge.trace(Case(doc).plan, 5)
    assert fd.expected == tr["lr"][0, 4] and fd.got == tr["lr"][0, 4] * (1 + 1e-6)
    from optbridge_conformance.sections import fmt
    assert f"FAIL  tie @ test-perturbed: step 4, group zeta, lr (applied): expected {fmt(fd.expected)}, " \
           f"got {fmt(fd.got)}" in text
    js = json.loads((out_dir / "report.json").read_text())["results"][0]["first_divergence"]
    assert (js["step"], js["group"], js["hyper"], js["expected"], js["got"]) == (4, "zeta", "lr", fd.expected, fd.got)
    pytest.importorskip("matplotlib")
    from optbridge_conformance.plots import figure
    titles = [ax.get_title() for ax in figure(r.cases[0], [res]).axes]
    assert f"first divergence: test-perturbed, step 4, group zeta, lr\nexpected {fmt(fd.expected)}, " \
           f"got {fmt(fd.got)}" in titles
    assert (out_dir / "plots" / "tie.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_draws_passing_cases_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    out_dir = tmp_path / "o"
    assert main(["conform", "cosine-clamped", "--backends", "reference,torch", "-q", "--plot",
                 "--out", str(out_dir)]) == 0
    assert (out_dir / "plots" / "cosine-clamped.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out_dir2 = tmp_path / "o2"
    assert main(["conform", "cosine-clamped", "--backends", "reference,torch", "-q", "--out", str(out_dir2)]) == 0
    assert not (out_dir2 / "plots").exists()  # without --plot: only failing / expected-failing cases


def test_many_groups_stay_readable() -> None:
    """150 groups in three schedule shapes (layer decay): one line per shape (its largest) plus the divergent one."""
    import numpy as np

    from optbridge_conformance.plots import MAX_GROUPS, _shown_groups
    shapes = [np.linspace(1, 0, 50), np.cos(np.linspace(0, 3, 50)) + 1, np.full(50, 0.5)]
    ref = np.stack([shapes[i % 3] * 0.9 ** (i // 3) for i in range(150)])
    shown = _shown_groups([f"g{i}" for i in range(150)], ref, "g77")
    assert shown == [0, 1, 2, 77] and len(shown) <= MAX_GROUPS
    assert _shown_groups(["a", "b"], ref[:2], None) == [0, 1]


def test_refusal_advice_is_kept_only_where_the_advised_form_runs_the_plan(test_backends) -> None:
    testing.advise("use form='unsupported'")
    r = run(["cosine-clamped"], backends=["test-advising", "test-unsupported"])
    res = r.result("cosine-clamped", "test-advising")
    assert res.status == "unsupported" and "use form" not in res.message
    assert res.advice.startswith("advice to use form='unsupported' removed: test-unsupported refuses this plan too")
    r = run(["cosine-clamped"], backends=["test-advising"])  # the advised backend did not run: it is tried
    assert "removed" in r.result("cosine-clamped", "test-advising").advice
    testing.advise("use form='perturbed'")
    testing.perturb(0, "")
    r = run(["cosine-clamped"], backends=["test-advising", "test-perturbed"])
    res = r.result("cosine-clamped", "test-advising")
    assert "use form='perturbed'" in res.message and res.advice == "checked: test-perturbed runs this case (pass)"


# --------------------------------------------------------------------------- lr-find and trajectory families

def test_the_lr_find_case_is_the_range_tests_ramp() -> None:
    case = next(c for c in load_cases() if c.id == "lr-find-exp-three-groups")
    tr = optbridge.trace(case.plan, case.steps)
    np = pytest.importorskip("numpy")
    np.testing.assert_allclose(tr["lr"][:, 0], [1e-7, 1e-8, 1e-9], rtol=1e-15)
    np.testing.assert_allclose(tr["lr"][:, -1], [10.0, 1.0, 0.1], rtol=1e-14)
    np.testing.assert_allclose(tr["lr"][1] / tr["lr"][0], 0.1, rtol=1e-15)  # the ratios are kept at every step


def test_the_trajectory_oracle_is_torch_itself() -> None:
    """The oracle equals a hand-written torch loop (torch.optim.SGD, the lr written from the reference trace)."""
    torch = pytest.importorskip("torch")
    import numpy as np

    from optbridge_conformance import trajectory as T
    case = next(c for c in load_cases() if c.id == "trajectory-sgd-momentum-warmup-cosine")
    ins = T.inputs(case, case.steps)
    want = T.run_backend(T.oracle(), case.plan, case.steps, ins, None)
    lrs = optbridge.trace(case.plan, case.steps)["lr"]
    params = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in ins.init.values()]
    opt = torch.optim.SGD([{"params": [p]} for p in params], lr=0.05, momentum=0.9, weight_decay=1e-3)
    for k in range(case.steps):
        for i, p in enumerate(params):
            p.grad = torch.from_numpy(ins.grads[k, ins.columns(ins.groups[i])].copy())
            opt.param_groups[i]["lr"] = float(lrs[i, k])
        opt.step()
        got = np.concatenate([p.detach().numpy() for p in params])
        np.testing.assert_array_equal(want[k], got)  # exact: the same float32 updates in the same order
    assert ins.grads.dtype == np.float32 and np.abs(ins.grads[:, 1::3]).max() < 1e-5  # the 1e-7 scale is there


@pytest.mark.parametrize("form", ["list", "cell", "experimental"])
def test_mindspore_trajectories_on_reused_optimizers_are_the_new_ones_bit_for_bit(
        form: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A MindSpore trajectory whose optimizers have the structure of an earlier one's runs on the kept ones
    (their graphs compiled once): every parameter after every update equals the run on new optimizers
    (OPTBRIDGE_MS_REUSE=0), bit for bit, and the third case of one optimizer reuses an earlier case's."""
    if not probe_backend(f"mindspore-{form}").available:
        pytest.skip(f"mindspore-{form}: " + probe_backend(f"mindspore-{form}").message)
    import numpy as np

    from optbridge_adapters.mindspore.reuse import Setups
    from optbridge_conformance import traj_mindspore as TM
    from optbridge_conformance import trajectory as T
    cases = {c.id: c for c in load_cases()}
    ids = ["trajectory-adagrad-one-cycle", "trajectory-adagrad-plateau", "trajectory-adagrad-warmup-cosine"]
    fn = getattr(TM, f"trajectory_{form}")

    def runs() -> list[np.ndarray]:
        return [T.run_backend(fn, cases[i].plan, 12, T.inputs(cases[i], 12), cases[i].metrics) for i in ids]
    monkeypatch.setenv("OPTBRIDGE_MS_REUSE", "0")
    new = runs()
    monkeypatch.setenv("OPTBRIDGE_MS_REUSE", "1")
    kept = Setups()
    monkeypatch.setattr(TM, "_KEPT", kept)
    again = runs()
    assert kept.hits >= 1 and kept.misses >= 1
    for i, a, b in zip(ids, new, again):
        assert a.dtype == b.dtype == np.float32 and a.tobytes() == b.tobytes(), i


def test_a_wrong_trajectory_is_caught_at_the_right_update_and_parameter() -> None:
    import numpy as np

    from optbridge_conformance import trajectory as T
    case = next(c for c in load_cases() if c.id == "trajectory-adam-warmup-cosine")
    ins = T.inputs(case, case.steps)
    want = T.run_backend(T.oracle(), case.plan, case.steps, ins, None)
    tol = T.trajectory_tolerance("megengine")
    got = want.copy()
    col = ins.columns("b").start + 2
    got[17, col] = np.nextafter(got[17, col], np.float32(np.inf))  # one ulp: within every bound
    series, problems = T.compare_trajectories(want, got, ins, tol)
    assert not problems and all(s.ok for s in series)
    got[17, col] += np.float32(1e-3)
    series, _ = T.compare_trajectories(want, got, ins, tol)
    bad = [s for s in series if not s.ok]
    assert [(s.group, s.first_step, s.note) for s in bad] == [("b", 17, "parameter b.w[2]")]
    assert bad[0].expected == float(want[17, col]) and bad[0].got == float(got[17, col])


def test_an_idle_process_keeps_to_the_backends_it_runs() -> None:
    from optbridge_conformance.execute import Task
    from optbridge_conformance.runner import pick
    case = load_cases()[0]
    pending = [[Task(i, case, b, 10, [])] for i, b in enumerate(["torch", "megengine", "mindspore-list"])]
    assert pick(pending, {"megengine"}, {"torch"}) == 1        # its own framework first
    assert pick(pending, {"mindspore"}, {"torch"}) == 2        # any MindSpore form is MindSpore's
    assert pick(pending, set(), {"torch", "megengine"}) == 2   # then one nobody runs
    assert pick(pending, set(), {"torch", "megengine", "mindspore"}) == 0  # else the most expensive


def test_two_processes_give_the_same_results_as_one() -> None:
    names = ["cosine-clamped", "multistep-basic", "lr-find-exp-three-groups"]
    one = run(names, backends=["reference"])
    two = run(names, backends=["reference"], jobs=2)  # three batches, two spawned processes
    assert list(one.results) == list(two.results)
    for k, r in one.results.items():
        s = two.results[k]
        assert (r.status, r.steps, r.message) == (s.status, s.steps, s.message), k
        assert [(x.group, x.hyper, x.max_abs) for x in r.series] == [(x.group, x.hyper, x.max_abs) for x in s.series]


def test_a_jobs_run_probes_in_a_worker_and_imports_no_framework_here() -> None:
    """With --jobs 2 the first worker probes the backends for the run: the parent imports no framework (its
    imports took CPU from the workers'), and reports the availability a probe here reports."""
    code = ("import sys, json; from optbridge_conformance.runner import run; "
            "r = run(['cosine-clamped'], backends=['reference', 'torch', 'megengine'], jobs=2); "
            "print(json.dumps([sorted(m for m in ('torch', 'mindspore', 'megengine') if m in sys.modules), "
            "[[b.name, b.available, b.message] for b in r.backends], [x.status for x in r.results.values()]]))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    imported, infos, statuses = json.loads(p.stdout.strip().splitlines()[-1])
    assert imported == []
    here = [probe_backend(b) for b in ("reference", "torch", "megengine")]
    assert infos == [[b.name, b.available, b.message] for b in here]
    assert statuses == ["pass" if b.available else "unavailable" for b in here]


def test_the_megengine_trajectory_server_keeps_errors_and_one_process() -> None:
    """Through the MegEngine interpreter: an UnsupportedError comes back as itself; one server serves every call."""
    if not probe_backend("megengine").available:
        pytest.skip("megengine: " + probe_backend("megengine").message)
    from optbridge_adapters.megengine.backend import runs_here
    if runs_here():
        pytest.skip("megengine runs in this process: no server")
    from optbridge.errors import UnsupportedError
    from optbridge_conformance import traj_megengine
    from optbridge_conformance import trajectory as T
    case = next(c for c in load_cases() if c.id == "trajectory-adagrad-warmup-cosine")
    ins = T.inputs(case, case.steps)
    a = traj_megengine.trajectory(case.plan, 5, ins.init, ins.grads[:5])
    pid = next(iter(traj_megengine._SERVERS.values())).proc.pid
    lion = Case(dict(case.doc, plan=dict(case.doc["plan"], optimizer={"type": "Lion", "lr": 1e-3}))).plan
    with pytest.raises(UnsupportedError):
        traj_megengine.trajectory(lion, 5, ins.init, ins.grads[:5])
    b = traj_megengine.trajectory(case.plan, 5, ins.init, ins.grads[:5])
    assert next(iter(traj_megengine._SERVERS.values())).proc.pid == pid
    assert str(a.dtype) == str(b.dtype) == "float32" and (a == b).all()


def test_a_worker_process_stops_its_megengine_interpreters_before_another_backend() -> None:
    """An idle MegEngine interpreter keeps ~25% of a core busy (its CompNodeSync thread polls every 10 us): a --jobs
    worker stops the interpreters a MegEngine batch started before it runs a batch of another backend
    (run_batch(release=True)), so that batch has the pinned core to itself; the next MegEngine batch keeps them
    (a restart costs ~1.5 s), and without release they stay (one interpreter serves a whole in-process run)."""
    if not probe_backend("megengine").available:
        pytest.skip("megengine: " + probe_backend("megengine").message)
    from optbridge_adapters.megengine.backend import megengine_python, runs_here
    if runs_here():
        pytest.skip("megengine runs in this process: no interpreter to stop")
    from optbridge_adapters import worker
    from optbridge_conformance import traj_megengine
    from optbridge_conformance.execute import Task, run_batch
    cases = {c.id: c for c in load_cases()}
    tasks = [Task(0, cases["cosine-clamped"], "megengine", 20, []),
             Task(1, cases["trajectory-adagrad-warmup-cosine"], "megengine", 5, [])]
    python = megengine_python()

    def pids() -> tuple[int | None, list[int]]:
        return worker.worker_pid(python, "megengine"), [s.proc.pid for s in traj_megengine._SERVERS.values()]
    assert [r.status for r in run_batch(tasks)] == ["pass", "pass"]
    first = pids()
    assert first[0] is not None and len(first[1]) == 1
    assert [r.status for r in run_batch(tasks, release=True)] == ["pass", "pass"]
    assert pids() == first  # another MegEngine batch: the same interpreters
    assert [r.status for r in run_batch([Task(0, cases["cosine-clamped"], "reference", 20, [])], release=True)
            ] == ["pass"]
    assert worker.worker_pid(python, "megengine") is None and not traj_megengine._SERVERS
    for pid in (first[0], *first[1]):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
