"""Provenance recorded with datasets and studies: package versions and the git SHA (a leaf:
imports nothing of the project)."""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys
from pathlib import Path

STUDY_PACKAGES = ("torch", "ray", "optuna", "numpy", "pandas", "pyarrow")


def versions(packages: tuple[str, ...] = STUDY_PACKAGES) -> dict[str, str]:
    """Python and the installed version of each package (absent ones are left out)."""
    out = {"python": sys.version.split()[0]}
    for pkg in packages:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def git_sha() -> str | None:
    """HEAD of the checkout this code runs from, or None outside a git checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
