"""Work-arounds for MegEngine 1.13 bugs that would reach a user of the native optimizers (imports megengine).

Each item was measured (``tests_megengine/test_mge_traps.py`` shows the bug in plain
MegEngine, then that optbridge avoids it):

* :class:`LAMB`: ``megengine.optimizer.LAMB(...)`` raises TypeError for every input
  (its ``_create_state`` passes ``dtype=`` to ``_add_state``, which has no such
  argument);
* :class:`SGD`: ``SGD.load_state_dict(sgd.state_dict())`` raises KeyError when a group
  has no momentum (it looks up a saved state for every parameter);
* :func:`construction_momentum`: SGD creates a momentum buffer only for groups whose
  momentum is non-zero in the constructor, so a momentum scheduled up from 0 raises
  KeyError in ``step()`` (and ``step()`` then leaves MegEngine's input conversion off
  for the whole process).

optbridge's torch-exact optimizers (:mod:`.optimizers`) have none of these bugs: they
create state lazily and restore MegEngine's global switches when an update raises.
"""

from __future__ import annotations

from typing import Any

import megengine.optimizer as mopt

__all__ = ["LAMB", "SGD", "construction_momentum"]


class LAMB(mopt.LAMB):
    """MegEngine's LAMB with its constructor repaired.

    MegEngine 1.13's ``LAMB._create_state`` calls ``_add_state(..., dtype="float32")``,
    but ``Optimizer._add_state`` has no ``dtype`` argument, so ``megengine.optimizer.LAMB(...)``
    raises TypeError for every input (measured). States are float32 by default, so
    dropping the argument is what the code meant; the update itself is MegEngine's.
    """

    def _create_state(self, param_group: dict[str, Any]) -> None:
        for param in param_group["params"]:
            self._add_state(param, "exp_avg")
            self._add_state(param, "exp_avg_sq")
            self._add_state(param, "step", initializer=0.0)


class SGD(mopt.SGD):
    """MegEngine's SGD whose ``load_state_dict`` accepts its own ``state_dict``.

    MegEngine 1.13's ``Optimizer.load_state_dict`` looks up a saved state for every
    parameter, but SGD keeps none for groups without momentum, so
    ``SGD(...).load_state_dict(sgd.state_dict())`` raises KeyError (measured).
    Parameters without saved state get none here; everything else is MegEngine's.
    """

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = dict(state["state"])
        for g in state["param_groups"]:
            for i in g["params"]:
                saved.setdefault(i, {})
        super().load_state_dict({**state, "state": saved})
        for p in [p for p, st in self._state.items() if not st]:
            del self._state[p]


def construction_momentum(momentum: float, scheduled: bool) -> float:
    """The momentum to give MegEngine's SGD constructor for a group.

    MegEngine creates a group's momentum buffer only when its momentum is non-zero in
    the constructor. When the momentum is scheduled (it may start at 0 and rise), the
    group is built with momentum 1.0 and the driver writes the real value before the
    first update: a zero buffer is torch's "no buffer yet", because both start the
    buffer at the gradient (MegEngine's ``v = momentum*0 + g``, torch's ``buf = g``).
    """
    return 1.0 if scheduled and momentum == 0.0 else momentum
