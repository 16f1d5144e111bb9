"""The project's metadata agrees with itself: license, citation, extras and install hints."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
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
