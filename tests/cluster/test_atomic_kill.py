"""Atomic writes, tested by killing: for every file a study writes, a child process rewrites it
in a loop through the project's own writer, with a payload large enough that the child is almost
always in the middle of a write, and is SIGKILLed. The file must still be readable and whole:
the old version or a complete new one, never a truncated mix."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from study.vocab import StudyDir

ROOT = Path(__file__).resolve().parents[2]
N_TEXT = 20_000_000     # characters of a text/JSON payload
N_ROWS = 1_000_000       # rows of a parquet payload

CHILD = r"""
import json, sys, time
import pandas as pd
from pathlib import Path
from study import fsio
from reports.fsio import locate, write_text
kind, path, ready = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
N_TEXT, N_ROWS = int(sys.argv[4]), int(sys.argv[5])
def make(v):
    if kind == "parquet":
        return pd.DataFrame({"version": [v] * N_ROWS, "x": range(N_ROWS)})
    return json.dumps({"version": v, "fill": "x" * N_TEXT})
made = {v: make(v) for v in (1, 2)}   # made once: the loop's time is spent writing
docs = {v: json.loads(made[v]) for v in (1, 2)} if kind == "json" else {}
raw = {v: made[v].encode() for v in (1, 2)} if kind == "bytes" else {}
payload = lambda v: made[1 + v % 2]
write = {"json": lambda p, v: fsio.atomic_write_json(p, docs[1 + v % 2]),
         "text": lambda p, v: fsio.atomic_write_text(p, payload(v)),
         "bytes": lambda p, v: fsio.atomic_write_bytes(p, raw[1 + v % 2]),
         "parquet": lambda p, v: fsio.atomic_write_parquet(p, payload(v)),
         "report": lambda p, v: write_text(locate(p), payload(v))}[kind]
v = 1
while True:
    write(path, v)
    if v == 1:
        ready.write_text("1")
    v += 1
"""


def _valid_version(kind: str, path: Path) -> int:
    """The version a whole file holds (raises on a truncated or mixed file)."""
    if kind == "parquet":
        df = pd.read_parquet(path)
        assert len(df) == N_ROWS and df["version"].nunique() == 1 and df["x"].iloc[-1] == N_ROWS - 1
        return int(df["version"].iloc[0])
    doc = json.loads(path.read_text())
    assert len(doc["fill"]) == N_TEXT
    return int(doc["version"])


# every file a study writes (study/vocab.py StudyDir), with the writer that writes it
STUDY_FILES = [
    ("json", StudyDir.META),                              # study.json (study/runs/results.py)
    ("parquet", StudyDir.RESULTS),                        # results.parquet
    ("parquet", StudyDir.CURVES),                         # curves.parquet
    ("parquet", "parts/search-0.results.parquet"),        # an experiment's part
    ("text", StudyDir.SPEC),                              # spec.yaml (study/runs/stages.py)
    ("text", "stages/search.done"),                       # a stage marker
    ("json", "progress/search-0.json"),                   # live progress (study/runs/ray_exec.py)
    ("json", "stats/train_0123.json"),                    # normalisation statistics (beside the data)
    ("bytes", StudyDir.OPTUNA_DB),                        # a file pulled from remote storage
    ("report", StudyDir.REPORT),                          # report.html (reports/build.py)
    ("report", "index.html"),                             # report --index
    ("text", "best.yaml"),                                # export-best output
]


@pytest.mark.parametrize("kind,name", STUDY_FILES, ids=[n for _, n in STUDY_FILES])
def test_killed_mid_write_leaves_a_whole_file(tmp_path, kind, name):
    path, ready = tmp_path / name, tmp_path / "ready"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, kind, str(path), str(ready), str(N_TEXT),
                              str(N_ROWS)], env=env, cwd=ROOT, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the child never finished its first write"
            time.sleep(0.01)
        time.sleep(0.15)                                  # well inside a later write
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert _valid_version(kind, path) in (1, 2)               # whole: the old version or a new one
    strays = [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert len(strays) <= 1                               # at most the killed write's temporary file
