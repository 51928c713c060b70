"""Supported framework versions: the table, the one-time warning, the extras and the test pins agree.

Versions outside the verified ones are given through ``check_version``'s ``version``
parameter (no framework is faked); the installed torch and MindSpore are the verified
ones, read from their package metadata.
"""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from optbridge import versions
from optbridge.versions import SUPPORT, VersionWarning, check_version, framework_of_backend, parse_version, status

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    """Each test starts as a fresh process would: nothing said yet."""
    saved = set(versions._WARNED)
    versions._WARNED.clear()
    yield
    versions._WARNED.clear()
    versions._WARNED.update(saved)


def test_parse_and_status() -> None:
    assert parse_version("2.13.0+cpu") == (2, 13, 0)
    assert parse_version("2.10.0rc1") == (2, 10, 0)
    assert parse_version("v1.13") == (1, 13)
    assert parse_version("nightly") == ()
    assert status("torch", "2.13.0+cpu") == "verified"
    assert status("torch", "2.13") == "verified"      # 2.13 == 2.13.0
    assert status("torch", "2.9.0") == "modelled"
    assert status("torch", "2.12.1") == "modelled"
    assert status("torch", "2.8.1") == "outside"
    assert status("torch", "2.14.0") == "outside"
    assert status("torch", "3.0") == "outside"
    assert status("mindspore", "2.10.0") == "verified"
    assert status("mindspore", "2.3.0") == "modelled"
    assert status("mindspore", "2.2.14") == "outside"
    assert status("megengine", "1.13.2") == "modelled"
    assert status("megengine", "1.12.0") == "outside"
    assert status("torch", "dev") == "unknown" and status("jax", "0.4") == "unknown"


def test_warns_once_and_plainly_outside_the_verified_versions() -> None:
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        assert check_version("torch", "2.5.1") == "outside"
        assert check_version("torch", "2.6.0") == "outside"   # once per framework and process
        assert check_version("mindspore", "2.11.0") == "outside"
    msgs = [str(w.message) for w in got if issubclass(w.category, VersionWarning)]
    assert len(msgs) == 2
    assert msgs[0].startswith("torch 2.5.1 is outside the versions optbridge models (torch>=2.9,<2.14; verified: "
                              "2.13.0)")
    assert "docs/support.md" in msgs[0]
    assert msgs[1].startswith("mindspore 2.11.0 is outside")


def test_modelled_but_unverified_says_so_and_verified_is_silent() -> None:
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        assert check_version("torch", "2.13.0") == "verified"
        assert check_version("megengine", "1.13.0") == "verified"
        assert check_version("torch", "2.10.0") == "modelled"
        assert check_version("torch", "2.11.0", once=False) == "modelled"
    msgs = [str(w.message) for w in got if issubclass(w.category, VersionWarning)]
    assert len(msgs) == 2
    assert msgs[0] == ("torch 2.10.0 is inside the range optbridge models (torch>=2.9,<2.14) but was not verified "
                       "(verified: 2.13.0); `optbridge conform` runs the conformance suite against it")


def test_the_installed_frameworks_are_the_verified_ones() -> None:
    """The test environment runs the exact verified versions (./dev pins them); nothing is said about them."""
    pytest.importorskip("torch")
    pytest.importorskip("mindspore")
    with warnings.catch_warnings():
        warnings.simplefilter("error", VersionWarning)
        assert check_version("torch") == "verified"
        assert check_version("mindspore") == "verified"
    assert versions.installed_version("megengine") is None or check_version("megengine") == "verified"


def test_first_use_paths_warn_outside_the_table() -> None:
    """``get_backend`` and ``optbridge.to_<fw>`` / ``from_<fw>`` (entry._adapter) consult the table on first use.

    In a fresh process the table is narrowed so that the installed (real) torch and MindSpore fall
    outside it: the first use of each says so once, the second is silent.
    """
    code = """
import dataclasses, warnings
from optbridge import versions
for fw in ("torch", "mindspore"):
    versions.SUPPORT[fw] = dataclasses.replace(versions.SUPPORT[fw], verified=("9.9.0",), low="9.9", high="9.10")
import optbridge
from optbridge.backends import get_backend
from optbridge.entry import _adapter
with warnings.catch_warnings(record=True) as got:
    warnings.simplefilter("always")
    get_backend("reference")
    get_backend("torch")
    get_backend("torch")
    _adapter("mindspore", "read", "from_mindspore")
    _adapter("torch", "read", "from_torch")
for w in got:
    if issubclass(w.category, versions.VersionWarning):
        print(str(w.message).split(" is ")[0])
"""
    pytest.importorskip("torch")
    pytest.importorskip("mindspore")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr
    lines = [x for x in out.stdout.splitlines() if x.startswith(("torch ", "mindspore "))]
    assert [x.split()[0] for x in lines] == ["torch", "mindspore"], out.stdout
    assert lines[0] == f"torch {versions.installed_version('torch')}"


def test_backend_names_map_to_frameworks() -> None:
    assert framework_of_backend("torch") == "torch"
    assert framework_of_backend("mindspore-cell") == "mindspore"
    assert framework_of_backend("mindspore-experimental") == "mindspore"
    assert framework_of_backend("megengine") == "megengine"
    assert framework_of_backend("reference") is None


def test_extras_declare_the_modelled_ranges_and_dev_pins_the_verified_versions() -> None:
    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    dev = (ROOT / "dev").read_text()
    for fw, sup in SUPPORT.items():
        assert extras[fw] == [sup.requirement], fw
        pins = re.findall(rf"\b{re.escape(sup.distribution)}==([0-9.]+)", dev)
        assert pins and set(pins) == set(sup.verified), (fw, pins)


def test_support_doc_lists_the_table() -> None:
    doc = (ROOT / "docs" / "support.md").read_text()
    for sup in SUPPORT.values():
        row = next(line for line in doc.splitlines() if line.startswith(f"| {sup.framework} "))
        assert f"`{sup.requirement}`" in row and all(v in row for v in sup.verified), row
