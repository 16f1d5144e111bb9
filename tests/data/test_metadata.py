"""The project's metadata agrees with itself: license, citation, extras and install hints."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_license_is_apache_and_pyproject_says_so():
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]
    assert "Version 2.0" in (ROOT / "LICENSE").read_text()[:200]
    assert PYPROJECT["project"]["license"] == {"text": "Apache-2.0"}


def test_citation_cff_title_version_and_references():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert cff["title"] == "avstudy"
    assert cff["version"] == PYPROJECT["project"]["version"]
    assert cff["license"] == "Apache-2.0"
    titles = " ".join(r["title"] for r in cff["references"])
    urls = " ".join(r["url"] for r in cff["references"])
    assert "Versatile Audio-Visual Learning" in titles and "2305.07216" in urls  # VAVL
    assert "2408.09438" in urls  # Foal-Net
    assert all(r["authors"] and r["year"] for r in cff["references"])


def _hints() -> list[tuple[str, str]]:
    """(file, extra) for every `avstudy[EXTRA]` install hint in the package and setup."""
    found = []
    for path in [*ROOT.glob("study/**/*.py"), *ROOT.glob("reports/**/*.py"), ROOT / "scripts/setup.sh"]:
        for extra in re.findall(r"avstudy\[([a-z,]+)\]|\.\[([a-z,]+)\]", path.read_text()):
            found += [(path.name, e) for e in ",".join(extra).split(",") if e]
    return found


def test_every_install_hint_names_an_extra_of_pyproject():
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    hints = _hints()
    assert len(hints) >= 6
    assert [(f, e) for f, e in hints if e not in extras] == []


def test_the_timm_hints_name_the_extra_that_has_timm():
    extras = PYPROJECT["project"]["optional-dependencies"]
    has_timm = [name for name, reqs in extras.items() if any(r.startswith("timm") for r in reqs)]
    assert has_timm == ["backbones"]
    text = (ROOT / "study/data/features/video.py").read_text()
    messages = [m for m in re.findall(r"ImportError\((.*?)\) from err", text, re.S) if "timm" in m]
    assert len(messages) == 2
    assert all("avstudy[backbones]" in m and "avstudy[media]" not in m for m in messages)


def test_setup_installs_the_dashboard_and_says_which_extras():
    setup = (ROOT / "scripts/setup.sh").read_text()
    assert "media,dashboard,test" in setup and "extras installed" in setup
    assert any(r.startswith("optuna-dashboard") for r in PYPROJECT["project"]["optional-dependencies"]["dashboard"])
