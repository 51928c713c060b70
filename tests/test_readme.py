"""The README's examples run and say what the README claims."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

import optbridge
from optbridge.params import ParamRecord, resolve

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
YAML_BLOCKS = re.findall(r"```yaml\n(.*?)```", README, re.S)


def test_readme_plan_and_torch_dialect_agree(tmp_path) -> None:
    canonical, torch_style = (optbridge.loads(b) for b in YAML_BLOCKS[:2])
    records = [ParamRecord("backbone.conv.weight", (8, 3, 3, 3), "Conv2d"), ParamRecord("backbone.conv.bias", (8,), "Conv2d"),
               ParamRecord("head.norm.weight", (8,), "LayerNorm"), ParamRecord("head.fc.weight", (10, 8), "Linear"),
               ParamRecord("head.fc.bias", (10,), "Linear")]
    r = resolve(canonical, records)
    assert [g.name for g in r.groups] == ["backbone", "no_decay", "head"]
    tr = optbridge.trace(canonical, 3000)
    assert tr.groups == ("backbone", "no_decay", "head") and tr["lr"].shape == (3, 3000)
    assert tr["lr"][2, 0] == 0.0 and tr["lr"][2, 500] == 0.1 and abs(tr["lr"][2, -1] - 1e-5) < 1e-7
    np.testing.assert_allclose(optbridge.trace(torch_style, 3000)["lr"][0], tr["lr"][2], rtol=1e-14, atol=0)
    path = tmp_path / "plan.json"
    optbridge.dump(canonical, path)
    assert optbridge.load(path) == canonical
