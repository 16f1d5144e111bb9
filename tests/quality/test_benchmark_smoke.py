"""The cheap benchmarks run in the fast suite: a benchmark that crashes on a new Session field
fails here, not only in CI's `benchmarks/run_all.py --quick` (the rest run there)."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _module(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    import importlib
    return importlib.import_module(name)


def test_checkpoint_bytes_quick_runs_and_saves_bytes():
    m = _module("checkpoint_bytes")
    res = m.run(m.parse_args(["--quick", "--epochs", "4"]))
    assert 0 < res["after"][1] <= res["before"]  # best weights stored once when best is latest
    rows = m.summary(res)
    assert rows and all(r["ratio"] <= 1 for r in rows)
