"""from_megengine warns where a user's native MegEngine optimizer computed another update than torch's.

The sizes are the measured ones of ``adapters/megengine/native.py`` (re-measured by
test_exact_optimizers.py); here the importer must attach them to the right optimizers.
"""

from __future__ import annotations

import warnings

import megengine as mge
import megengine.optimizer as mopt
import numpy as np

import optbridge
from optbridge.lint import Lint, LintWarning
from optbridge_adapters.megengine import native
from optbridge_adapters.megengine import optimizers as exact


def _params() -> list[mge.Parameter]:
    return [mge.Parameter(np.zeros(3, np.float32))]


def _warned(opt: object) -> list[Lint]:
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        optbridge.from_megengine(opt)
    return [w.message.lint for w in got if isinstance(w.message, LintWarning)]


def test_native_adagrad_and_adam_warn_with_the_measured_size() -> None:
    (a,) = _warned(mopt.Adagrad(_params(), lr=0.1))
    row = native.native_equivalent("Adagrad", {})
    assert (a.code, a.path, a.size, a.frameworks) == ("native-update", "optimizer", row.worst_vs_noise, ("megengine",))
    assert "eps inside the square root" in a.message and "megengine.optimizer.Adagrad" in a.message
    (b,) = _warned(mopt.Adam(_params(), lr=1e-3))
    assert b.size == native.native_equivalent("Adam", {}).worst_vs_noise == 26.0


def test_native_sgd_and_exact_optimizers_are_quiet() -> None:
    assert _warned(mopt.SGD(_params(), lr=0.1, momentum=0.9)) == []  # torch's SGD with dampening 0
    assert _warned(exact.Adagrad(_params(), lr=0.1)) == []          # optbridge's torch-exact class
    assert _warned(exact.SGD(_params(), lr=0.1, momentum=0.9, dampening=0.5)) == []


def test_several_optimizers_are_matched_by_type() -> None:
    found = _warned([mopt.SGD(_params(), lr=0.1), mopt.Adagrad(_params(), lr=0.1)])
    assert [(x.path, x.code) for x in found] == [("optimizers[1]", "native-update")]
