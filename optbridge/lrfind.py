"""A framework-neutral lr range test (``optbridge.lr_find``).

The range test trains for one short pass while the lr grows from ``start_lr`` to
``end_lr``, records the loss of every update, smooths it, stops when it diverges,
and reads a good lr off the curve (see ``docs/lr_find.md``).

What is framework-neutral lives here:

* the **ramp as a plan**: :func:`ramp_plan` turns any plan (or the plan of a live
  optimizer) into one whose plan-wide lr schedule is the ramp, relative to each
  group's base, with the groups' bases set to ``start_lr`` times their lr ratio to
  the group with the largest lr (the *reference group*). So the groups keep their
  ratios, and the same plan is traced by :func:`optbridge.trace` and applied by
  every backend;
* the **loop** (:func:`run`): batches cycled, gradient accumulation, the loss
  record, the stop, restoring the state, over a small :class:`Session` protocol
  that each framework's runner implements (``optbridge_adapters.<framework>.lrfind``);
* the **curve** (:mod:`optbridge.lrcurve`) and the **result**
  (:class:`optbridge.lrfind_result.LRFindResult`).

Ramp, for update ``k`` of ``N = steps`` and ``R = end_lr / start_lr``:

* ``"exp"``: a ``lambda`` node ``R ** (k / (N - 1))`` (torch-lr-finder's
  ``ExponentialLR``, in the same operation order);
* ``"linear"``: a ``linear`` node from factor 1 to ``R`` over ``N - 1`` updates.

Update 0 uses ``start_lr``, update ``N - 1`` uses ``end_lr`` (reference group).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from . import ir
from .errors import ConfigError
from .lrfind_settings import MODES, RangeTest
from .plan import Plan, hyper_base

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from .lrfind_result import LRFindResult
    from .report import Fidelity

__all__ = ["RangeTest", "Ramp", "Session", "ramp_plan", "ramp_values", "run", "lr_find", "framework_of",
           "FRAMEWORKS", "MODES"]

#: backend name -> (module of its runner, the class a model of that framework derives from).
FRAMEWORKS = {
    "torch": ("optbridge_adapters.torch.lrfind", ("torch", "Module")),
    "mindspore": ("optbridge_adapters.mindspore.lrfind", ("mindspore", "Cell")),
    "megengine": ("optbridge_adapters.megengine.lrfind", ("megengine", "Module")),
}


@dataclasses.dataclass(frozen=True)
class Ramp:
    """A plan whose lr follows the range test, and how it was made from the original.

    Attributes:
        plan: The ramp plan (``optbridge.trace(plan, steps)`` gives every group's lrs).
        reference: The reference group (largest base lr; its lr runs start_lr .. end_lr).
        ratios: ``group -> base lr / reference base lr`` of the original plan.
        held: Hyperparameters whose schedules were dropped (held at their base value).
    """

    plan: Plan
    reference: str
    ratios: dict[str, float]
    held: tuple[str, ...]


def ramp_plan(plan: Plan, test: RangeTest) -> Ramp:
    """The plan of the range test over ``plan``'s optimizers and groups.

    Every trained group keeps its options, except that its lr becomes
    ``start_lr * (base / reference base)`` (absolute; ``lr_mult`` folded in); the
    plan-wide lr schedule is :meth:`RangeTest.node`; every other schedule is dropped
    (the hyperparameter holds its base value) and the clock is the update count.

    Raises:
        ConfigError: no trained group has a positive lr (nothing to ramp).
    """
    bases = {g.name: hyper_base(plan, g, "lr") for g in plan.groups if g.frozen != "exclude"}
    positive = {n: b for n, b in bases.items() if b > 0}
    if not positive:
        raise ConfigError("optimizer.lr", "must be > 0 in at least one trained group for a range test", bases)
    top = max(positive.values())
    reference = next(n for n, b in positive.items() if b == top)
    ratios = {n: b / top for n, b in bases.items()}
    held = sorted({h for h in plan.schedule if h != "lr"} | {h for g in plan.groups for h in g.schedule if h != "lr"})
    optimizers = []
    for o in plan.optimizers:
        groups = []
        for g in o.groups:
            opts = {k: v for k, v in g.options.items() if k not in ("lr", "lr_mult")}
            if g.name in ratios and g.frozen is None:
                opts["lr"] = test.start_lr * ratios[g.name]
            groups.append(dataclasses.replace(g, options=ir.FrozenMap(opts), schedule=ir.FrozenMap()))
        optimizers.append(dataclasses.replace(o, groups=tuple(groups)))
    desc = (f"lr range test: {test.mode} ramp of the lr from {test.start_lr:g} to {test.end_lr:g} over {test.steps} "
            f"updates in group {reference!r}, the other groups at their lr ratio to it")
    new = Plan(optimizers=tuple(optimizers), schedule=ir.FrozenMap(lr=test.node()), step_unit="iter",
               total_steps=test.steps, description=desc)
    return Ramp(new, reference, ratios, tuple(held))


def ramp_values(plan: Plan, steps: int, *, chunk: int = 1024) -> Iterator[np.ndarray]:
    """The reference lrs of every trained group, one ``(groups,)`` column per update.

    Evaluated ``chunk`` updates at a time (``optbridge.tracing.reference_trace`` windows),
    so a long ramp is never held whole. Runners that drive a live optimizer write these.
    """
    from .tracing import reference_trace

    for start in range(0, steps, chunk):
        block = reference_trace(plan, min(chunk, steps - start), start=start)["lr"]
        yield from block.T


class Session(Protocol):
    """What a framework's runner gives :func:`run` (``optbridge_adapters.<framework>.lrfind.open_session``).

    Attributes:
        backend: ``"torch"``, ``"mindspore"`` or ``"megengine"``.
        groups: Trained group names, in the ramp plan's order.
        ramp: The ramp plan and its reference group.
        fidelity: How the ramp reaches the framework (per group).
    """

    backend: str
    groups: tuple[str, ...]
    ramp: Ramp
    fidelity: tuple[Fidelity, ...]

    def lrs(self) -> Sequence[float]:
        """The lr each group's next update uses, as the framework holds it."""

    def zero_grad(self) -> None:
        """Clear the gradients before the first pass of an update."""

    def backward(self, batch: Any, divisor: int) -> float:
        """Forward ``loss_fn(model, batch)``, backward ``loss / divisor`` (accumulating); return the loss."""

    def step(self) -> None:
        """One optimizer update, then move the lrs to the next update's."""

    def restore(self) -> None:
        """Put the model and the optimizer back as they were, bit for bit."""


def _cycle(batches: Iterable[Any]) -> Iterator[Any]:
    """``batches`` over and over: a re-iterable is iterated again, a one-shot iterator is cached."""
    it = iter(batches)
    one_shot = it is batches
    seen: list[Any] = []
    while True:
        got = False
        for b in it:
            got = True
            if one_shot:
                seen.append(b)
            yield b
        if not got and not seen:
            raise ConfigError("batches", "must yield at least one batch", type(batches).__name__)
        it = iter(seen) if one_shot else iter(batches)


def run(session: Session, batches: Iterable[Any], test: RangeTest) -> LRFindResult:
    """The range test's loop over a runner's session; the state is restored even on error.

    For update ``k``: read every group's lr (``lrs[:, k]``), clear the gradients, run
    ``accumulate`` forward/backward passes, record their mean loss and the smoothed
    loss, stop if the loss diverged (that update is not taken), else step.
    """
    import numpy as np

    from .lrcurve import LossMonitor, suggest
    from .lrfind_result import LRFindResult

    n_groups, steps, acc = len(session.groups), test.steps, test.accumulate
    lrs = np.full((n_groups, steps), np.nan)
    raw, smoothed = np.full(steps, np.nan), np.full(steps, np.nan)
    monitor = LossMonitor(test.smooth, test.diverge)
    stop, at = "completed", None
    source = _cycle(batches)
    try:
        for k in range(steps):
            lrs[:, k] = session.lrs()
            session.zero_grad()
            total = 0.0
            for _ in range(acc):
                total += session.backward(next(source), acc)
            raw[k] = total / acc
            smoothed[k], reason = monitor.add(float(raw[k]))
            if reason is not None:
                stop, at = reason, k
                break
            session.step()
    finally:
        session.restore()
    n = steps if at is None else at + 1
    lrs, raw, smoothed = lrs[:, :n], raw[:n], smoothed[:n]
    ref = session.groups.index(session.ramp.reference)
    suggestions, warnings = suggest(lrs, ref, raw, smoothed, steps=steps, log_uniform=test.mode == "exp",
                                    groups=session.groups)
    if stop == "diverged":
        text = (f"stopped at update {at} (lr {lrs[ref, at]:.3g}): the smoothed loss {smoothed[at]:.4g} exceeded "
                f"{test.diverge:g} x the best smoothed loss {monitor.best:.4g}")
    elif stop == "nonfinite":
        text = f"stopped at update {at} (lr {lrs[ref, at]:.3g}): the loss is {raw[at]} (not finite)"
    else:
        text = f"completed all {steps} updates up to lr {lrs[ref, -1]:.3g} without diverging"
    if session.ramp.held:
        warnings = warnings + (f"schedules of {', '.join(session.ramp.held)} were dropped for the range test: "
                               f"those hyperparameters hold their base values",)
    return LRFindResult(groups=session.groups, reference=session.ramp.reference, lrs=lrs, losses=raw,
                        smoothed=smoothed, stop=stop, stop_step=at, stop_text=text, suggestions=suggestions,
                        warnings=warnings, settings=test, backend=session.backend, plan=session.ramp.plan,
                        fidelity=session.fidelity)


def framework_of(model: Any) -> str | None:
    """``"torch"``, ``"mindspore"`` or ``"megengine"`` from the model's class hierarchy (no import), else None."""
    for cls in type(model).__mro__:
        top = (getattr(cls, "__module__", "") or "").partition(".")[0]
        for name, (_, (package, base)) in FRAMEWORKS.items():
            if top == package and cls.__name__ == base:
                return name
    return None


def lr_find(model: Any, optimizer_or_plan: Any, loss_fn: Callable[[Any, Any], Any], batches: Iterable[Any], *,
            backend: str | None = None, start_lr: float = 1e-7, end_lr: float = 10.0, steps: int = 100,
            mode: str = "exp", smooth: float = 0.98, diverge: float | None = 4.0,
            accumulate: int = 1) -> LRFindResult:
    """Run an lr range test on a real model and suggest an lr.

    Args:
        model: A torch ``nn.Module``, a MindSpore ``nn.Cell`` or a MegEngine ``Module``
            (MegEngine: call this from MegEngine's own Python 3.10 environment).
        optimizer_or_plan: A live optimizer of that framework (it is used as is, its
            groups keep their lr ratios, and its state is restored afterwards) or an
            optbridge :class:`~optbridge.plan.Plan` (built with ``optbridge.to_torch`` /
            ``to_mindspore`` / ``to_megengine`` over ``model``).
        loss_fn: ``loss_fn(model, batch) -> scalar loss tensor``. The batch is passed
            as the iterable yields it (a tuple, a dict, anything), so custom models and
            dict batches work: ``lambda m, b: F.cross_entropy(m(b["x"]), b["y"])``.
        batches: Any iterable of batches, cycled when it is shorter than
            ``steps * accumulate`` (a one-shot iterator is cached as it is read).
        backend: ``"torch"``, ``"mindspore"`` or ``"megengine"``; default: from the model.
        start_lr: lr of the first update in the reference group (largest lr).
        end_lr: lr of the last update in the reference group.
        steps: Optimizer updates planned.
        mode: ``"exp"`` or ``"linear"`` ramp.
        smooth: Weight of the past in the bias-corrected smoothed loss, in ``[0, 1)``.
        diverge: Stop when the smoothed loss exceeds this multiple of the best one
            (None: only on NaN/inf).
        accumulate: Forward/backward passes per update (losses averaged).

    Returns:
        An :class:`~optbridge.lrfind_result.LRFindResult`.

    Raises:
        ConfigError: a bad setting, an unknown model or optimizer type, no batches.
        BackendUnavailable: the framework is not installed here.
    """
    test = RangeTest(start_lr=start_lr, end_lr=end_lr, steps=steps, mode=mode, smooth=smooth, diverge=diverge,
                     accumulate=accumulate)
    if not callable(loss_fn):
        raise ConfigError("loss_fn", "must be callable as loss_fn(model, batch)", type(loss_fn).__name__)
    name = backend if backend is not None else framework_of(model)
    if name is None:
        raise ConfigError("model", "must be a torch nn.Module, a MindSpore nn.Cell or a MegEngine Module "
                          "(or pass backend=)", type(model).__name__)
    if name not in FRAMEWORKS:
        raise ConfigError("backend", "must be one of " + ", ".join(map(repr, FRAMEWORKS)), name)
    runner = _runner(name)
    session = runner.open_session(model, optimizer_or_plan, loss_fn, test)
    return run(session, batches, test)


def _runner(name: str) -> Any:
    from .errors import BackendUnavailable

    module = FRAMEWORKS[name][0]
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise BackendUnavailable(f"lr_find on {name} needs {name} ({e})") from e
