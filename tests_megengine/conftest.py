"""Tests run by the MegEngine interpreter (``./dev test`` runs them with .venv-mge/bin/python).

Run from the repo root, never from MegEngine's site-packages (it shadows ``random`` there).
"""

from __future__ import annotations

import pytest

pytest.importorskip("megengine", reason="tests_megengine/ needs MegEngine: run it with .venv-mge/bin/python")


@pytest.fixture(autouse=True)
def _convert_inputs_guard():
    """Fail a test that leaves MegEngine's global input conversion off (the step() KeyError hazard)."""
    from megengine.core.tensor.utils import set_convert_inputs
    yield
    was = set_convert_inputs(True)
    assert was, "a test left MegEngine's input conversion disabled (an exception escaped Optimizer.step())"
