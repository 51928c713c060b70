"""Compare a backend's trace with the reference, per step, per group and per hyperparameter.

The values compared are the ones the framework really applied where the backend
measured them (``trace.applied[h]``, the parameter-delta probe), else the values it
holds (``trace.data[h]``). Tolerances are data (``tolerances.yaml``), chosen by the
backend's precision and the fidelity form it reports for each series.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Tolerance", "tolerance_for", "backend_tolerances", "SeriesResult", "compare_traces", "FORM_ORDER"]

HERE = Path(__file__).resolve().parent

#: Fidelity forms from the most to the least exact (a series in several forms takes the loosest tolerance).
FORM_ORDER = ("table", "native", "generated")


@dataclass(frozen=True)
class Tolerance:
    """How close a backend's value must be to the reference.

    float64: ``|got - ref| <= rtol*|ref| + ptol*peak``.
    float32: ``min(|got - f32(ref)|, |got - ref|) <= ulps*ulp32(f32(ref)) + peak_ulps*ulp32(peak)``.
    """

    precision: str = "float64"
    rtol: float = 0.0
    ptol: float = 0.0
    ulps: float = 0.0
    peak_ulps: float = 0.0
    reason: str = ""
    source: str = "default"

    def bound(self, ref: np.ndarray, peak: float) -> np.ndarray:
        if self.precision == "float32":
            e32 = ref.astype(np.float32)
            return self.ulps * _ulp32(e32) + self.peak_ulps * float(_ulp32(np.float32(peak)))
        return self.rtol * np.abs(ref) + self.ptol * peak

    def error(self, got: np.ndarray, ref: np.ndarray) -> np.ndarray:
        """The error the bound applies to (float32: against f32(ref), or ref itself if closer)."""
        if self.precision == "float32":
            e32 = ref.astype(np.float32).astype(np.float64)
            return np.minimum(np.abs(got - e32), np.abs(got - ref))
        return np.abs(got - ref)

    def describe(self) -> str:
        if self.precision == "float32":
            return f"float32: {_num(self.ulps)} ulp + {_num(self.peak_ulps)} ulp of peak"
        return f"float64: rtol {_num(self.rtol)}" + (f" + {_num(self.ptol)} x peak" if self.ptol else "")

    def merged(self, override: Mapping[str, Any], source: str) -> Tolerance:
        kw: dict[str, Any] = {k: float(v) for k, v in override.items() if k in ("rtol", "ptol", "ulps", "peak_ulps")}
        kw["reason"] = " ".join(str(override.get("reason", self.reason)).split())
        return replace(self, source=source, **kw)

    def looser(self, other: Tolerance) -> Tolerance:
        """The looser of two tolerances of the same precision (by their components)."""
        if (other.rtol, other.ptol, other.ulps, other.peak_ulps) > (self.rtol, self.ptol, self.ulps, self.peak_ulps):
            return other
        return self


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e6 else f"{x:.3g}"


def _ulp32(x: Any) -> np.ndarray:
    return np.spacing(np.abs(np.asarray(x, dtype=np.float32))).astype(np.float64)


@lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    import yaml
    return yaml.safe_load((HERE / "tolerances.yaml").read_text(encoding="utf-8"))


def _make(d: Mapping[str, Any], precision: str, source: str) -> Tolerance:
    return Tolerance(precision=precision, rtol=float(d.get("rtol", 0)), ptol=float(d.get("ptol", 0)),
                     ulps=float(d.get("ulps", 0)), peak_ulps=float(d.get("peak_ulps", 0)),
                     reason=" ".join(str(d.get("reason", "")).split()), source=source)


def backend_tolerances(backend: str) -> dict[str, Tolerance]:
    """``{"default": ..., form: ...}`` for ``backend`` from ``tolerances.yaml``."""
    t = _table()
    entry = t["backends"].get(backend)
    if entry is None:
        return {"default": _make(t["default"], t["default"]["precision"], "tolerances.yaml: default")}
    prec = entry["precision"]
    out = {"default": _make(entry, prec, f"tolerances.yaml: {backend}")}
    for form, d in (entry.get("forms") or {}).items():
        out[form] = _make(d, prec, f"tolerances.yaml: {backend}.{form}")
    return out


def tolerance_for(backend: str, forms: Iterable[str] = (), override: Mapping[str, Any] | None = None,
                  case_id: str = "") -> Tolerance:
    """The tolerance of one series: by backend and reported forms, then the case's override."""
    table = backend_tolerances(backend)
    tol: Tolerance | None = None
    for form in forms:
        t = table.get(form, table["default"])
        tol = t if tol is None else tol.looser(t)
    tol = tol or table["default"]
    if override:
        tol = tol.merged(override, f"case {case_id}")
    return tol


@dataclass
class SeriesResult:
    """One (group, hyperparameter) series of one backend against the reference."""

    group: str
    hyper: str
    source: str                     # "applied" (parameter-delta probe) or "held" (trace.data)
    tolerance: Tolerance
    forms: tuple[str, ...] = ()
    ok: bool = True
    first_step: int | None = None   # first divergent step
    expected: float | None = None
    got: float | None = None
    bound: float | None = None
    n_bad: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0
    max_ulps: float | None = None   # float32 backends
    worst_ratio: float = 0.0        # max error / bound (inf where the bound is 0 and the error is not)
    max_peak: float = 0.0           # max error relative to the series' peak (float32: in ulps of the peak)
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["tolerance"] = {"rule": self.tolerance.describe(), "reason": self.tolerance.reason,
                          "source": self.tolerance.source}
        return {k: _jsonable(v) for k, v in d.items()}


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, tuple):
        return list(v)
    return v


def series_values(tr: Any, hyper: str) -> tuple[np.ndarray | None, str]:
    """What a backend's trace says about ``hyper``: the applied values where measured, else held."""
    applied = getattr(tr, "applied", None) or {}
    if hyper in applied and applied[hyper] is not None:
        return np.asarray(applied[hyper], dtype=np.float64), "applied"
    data = getattr(tr, "data", {}) or {}
    if hyper in data:
        return np.asarray(data[hyper], dtype=np.float64), "held"
    return None, "missing"


def forms_by_series(fidelity: Iterable[Any]) -> dict[tuple[str, str], list[Any]]:
    """``(group, hyper) -> [Fidelity]``; group ``"*"`` stands for every group."""
    out: dict[tuple[str, str], list[Any]] = {}
    for f in fidelity:
        out.setdefault((str(f.group), str(f.hyper)), []).append(f)
    return out


def compare_traces(ref: Any, got: Any, backend: str, *, steps: int, override: Mapping[str, Any] | None = None,
                   case_id: str = "") -> tuple[list[SeriesResult], list[str]]:
    """Compare ``got`` (a backend's Trace) with ``ref`` (the reference's) over the first ``steps`` steps.

    Returns the per-series results and structural problems (groups or steps that
    do not line up), each of which makes the comparison fail.
    """
    problems: list[str] = []
    ref_groups = tuple(ref.groups)
    got_groups = tuple(getattr(got, "groups", ()))
    if got_groups != ref_groups:
        problems.append(f"groups differ: expected {list(ref_groups)}, got {list(got_groups)}")
    fid = forms_by_series(getattr(got, "fidelity", ()) or ())
    out: list[SeriesResult] = []
    for hyper in ref.data:
        rv_all = np.asarray(ref.data[hyper], dtype=np.float64)[:, :steps]
        gv_all, source = series_values(got, hyper)
        if gv_all is None:
            has = ", ".join(getattr(got, "data", {})) or "nothing"
            problems.append(f"{hyper}: not in the backend's trace (it has {has})")
            continue
        if gv_all.ndim != 2 or gv_all.shape[1] < steps:
            problems.append(f"{hyper}: shape {gv_all.shape}, expected ({len(ref_groups)}, {steps})")
            continue
        for gi, gname in enumerate(ref_groups):
            if gname not in got_groups:
                continue
            records = fid.get((gname, hyper), []) + fid.get(("*", hyper), [])
            forms = tuple(sorted({r.form for r in records}))
            tol = tolerance_for(backend, [f for f in forms if f != "unsupported"], override, case_id)
            rv = rv_all[gi]
            gv = gv_all[got_groups.index(gname), :steps]
            out.append(_series(gname, hyper, source, tol, forms, rv, gv))
    return out, problems


def _series(group: str, hyper: str, source: str, tol: Tolerance, forms: tuple[str, ...],
            rv: np.ndarray, gv: np.ndarray) -> SeriesResult:
    r = SeriesResult(group=group, hyper=hyper, source=source, tolerance=tol, forms=forms)
    if tol.precision == "float32":
        r.max_ulps = 0.0
    if np.array_equal(gv, rv):  # the common case for tables and the reference: nothing to measure
        return r
    finite = np.isfinite(rv)
    peak = float(np.max(np.abs(rv[finite]))) if finite.any() else 0.0
    chunk = 1 << 20  # long horizons: bounded temporaries
    for lo in range(0, rv.size, chunk):
        _chunk(r, tol, rv[lo:lo + chunk], gv[lo:lo + chunk], peak, lo)
    return r


def _chunk(r: SeriesResult, tol: Tolerance, rv: np.ndarray, gv: np.ndarray, peak: float, offset: int) -> None:
    with np.errstate(all="ignore"):
        err = tol.error(gv, rv)
        bound = tol.bound(rv, peak)
        same = (gv == rv) | (np.isnan(gv) & np.isnan(rv))
        bad = ~same & ~(err <= bound)          # NaN errors count as bad
        absd = np.where(same, 0.0, np.abs(gv - rv))
        rel = np.where(rv != 0, absd / np.abs(rv), np.where(absd == 0, 0.0, np.inf))
        ratio = np.where(same, 0.0, np.where(bound > 0, err / bound, np.where(err == 0, 0.0, np.inf)))
        if tol.precision == "float32":
            u = np.where(same, 0.0, err / _ulp32(rv.astype(np.float32)))
            r.max_ulps = max(r.max_ulps or 0.0, _nanmax(u))
    unit = float(_ulp32(np.float32(peak))) if tol.precision == "float32" else peak
    if unit > 0:
        r.max_peak = max(r.max_peak, _nanmax(np.where(same, 0.0, err)) / unit)
    r.max_abs = max(r.max_abs, _nanmax(absd))
    r.max_rel = max(r.max_rel, _nanmax(rel))
    r.worst_ratio = max(r.worst_ratio, _nanmax(ratio))
    if bad.any():
        if r.ok:
            k = int(np.argmax(bad))
            r.ok = False
            r.first_step, r.expected, r.got, r.bound = offset + k, float(rv[k]), float(gv[k]), float(bound[k])
        r.n_bad += int(bad.sum())


def _nanmax(a: np.ndarray) -> float:
    """Largest value; NaN (a NaN from the backend) counts as infinite."""
    if not a.size:
        return 0.0
    if np.isnan(a).any():
        return math.inf
    return float(a.max())
