"""Resume: kill the sweep driver mid-study, `--resume`, nothing lost or counted twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SPEC = {
    "name": "resume", "dataset": {"synth": {"scale": "tiny", "seed": 0}}, "model_preset": "tiny",
    "spaces": ["optimisation", "missing"],
    "fixed": {"d_model": 16, "n_heads": 2, "enc_layers": 1, "use_shared": False,
              "shared_layers": 0, "patience": 5},
    "cells": {"fusion": ["late"], "train_missing_rate": [0.0]},
    "searcher": {"kind": "random", "seed": 1}, "scheduler": {"kind": "none"},
    "budget": {"trials_per_cell": 5, "max_epochs": 3},
    "resources": {"workers": 1, "cpus_per_worker": 1}, "seeds": [0], "top_k": 1,
}
SWEEP = ("import sys; from study.runs.spec import load_spec; from study.runs.stages import sweep; "
         "sweep(load_spec(sys.argv[1]), out=sys.argv[2], resume=sys.argv[3] == '1', verbose=0)")


def _sweep(spec: Path, out: Path, resume: bool, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SWEEP, str(spec), str(out), "1" if resume else "0"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _done(out: Path) -> list[str]:
    path = out / "progress" / "search-late-r0.json"
    if not path.exists():
        return []
    try:
        trials = json.loads(path.read_text())["trials"]
    except (json.JSONDecodeError, KeyError):
        return []
    return [tid for tid, t in trials.items() if t["status"] == "done"]


@pytest.mark.slow
def test_resume_after_driver_killed(ray_session, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    out = tmp_path / "study"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AVSTUDY_CACHE": str(tmp_path / "cache"),
           "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    first = _sweep(spec, out, False, env)
    deadline = time.time() + 240
    while len(_done(out)) < 2 and first.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    assert first.poll() is None, first.stderr.read().decode()[-3000:]
    done_before = _done(out)
    assert len(done_before) >= 2
    first.send_signal(signal.SIGKILL)  # the driver dies mid-study
    first.wait()
    assert json.loads((out / "study.json").read_text())["status"] == "running"
    if (out / "results.parquet").exists():  # only the baseline stage's rows, written when it ended
        assert set(pd.read_parquet(out / "results.parquet").stage) <= {"baseline"}

    again = _sweep(spec, out, True, env)
    _, err = again.communicate(timeout=400)
    assert again.returncode == 0, err.decode()[-3000:]

    res = pd.read_parquet(out / "results.parquet")
    search = res[res.stage == "search"]
    assert search.trial_id.nunique() == 5  # the budget, exactly: nothing lost, nothing extra
    assert not search.duplicated(["trial_id", "condition"]).any()  # each trial's rows once
    assert search.groupby("trial_id").condition.nunique().nunique() == 1  # and all of them
    assert (search.status == "completed").all()
    assert {f"search-late-r0-{t}" for t in done_before} <= set(search.trial_id)
    assert res[res.stage == "final"].trial_id.nunique() == 1
    curves = pd.read_parquet(out / "curves.parquet")
    assert not curves.duplicated(["trial_id", "epoch"]).any()

    study = optuna.load_study(study_name="resume/search/late-r0",
                              storage=f"sqlite:///{out / 'optuna.db'}")
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 5 and "RUNNING" not in states
    orphans = [t for t in study.trials if t.system_attrs.get("avstudy_orphan")]
    assert len(states) == 5 + len(orphans)
    assert json.loads((out / "study.json").read_text())["status"] == "finished"


def _wait_kill(proc: subprocess.Popen, ready, what: str, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.3)
    assert proc.poll() is None, f"{what}: the sweep ended first\n" + proc.stderr.read().decode()[-3000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _progress(out: Path, name: str) -> dict:
    try:
        return json.loads((out / "progress" / f"{name}.json").read_text())["trials"]
    except (OSError, ValueError, KeyError):
        return {}


METRICS = ["macro_f1", "accuracy", "uar", "loss"]


def _final(out: Path) -> pd.DataFrame:
    res = pd.read_parquet(out / "results.parquet")
    final = res[res.stage == "final"]
    return final.sort_values(["config", "seed", "condition"])[["config", "seed", "condition"] + METRICS]


@pytest.mark.slow
def test_driver_killed_in_search_rerun_and_final_equals_uninterrupted(ray_session, tmp_path):
    """Kill the driver during the search, during the seed re-runs and during the final test
    evaluation (which runs inside each re-run trial, from its best dev epoch); each time
    --resume. One trial at a time, so the result order is fixed: the final rows must equal an
    uninterrupted run's, row by row (Tune's random trial ids aside)."""
    raw = {**SPEC, "name": "kill3", "budget": {"trials_per_cell": 3, "max_epochs": 2},
           "seeds": [0, 1], "resources": {"workers": 1, "cpus_per_worker": 1,
                                          "max_concurrent_trials": 1}}
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AVSTUDY_CACHE": str(tmp_path / "cache"),
           "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    whole = _sweep(spec, tmp_path / "whole", False, env)
    assert whole.wait(timeout=400) == 0, whole.stderr.read().decode()[-3000:]

    out = tmp_path / "killed"
    points = [  # (kill when, during)
        (lambda: any(t["status"] == "done" for t in _progress(out, "search-late-r0").values()), "search"),
        (lambda: any((t.get("epoch") or 0) >= 1 for t in _progress(out, "rerun").values()), "rerun"),
        (lambda: any(t["status"] == "done" for t in _progress(out, "rerun").values()), "final"),
    ]
    for i, (ready, what) in enumerate(points):
        _wait_kill(_sweep(spec, out, i > 0, env), ready, what)
    last = _sweep(spec, out, True, env)
    assert last.wait(timeout=400) == 0, last.stderr.read().decode()[-3000:]

    searched = [sorted(pd.read_parquet(d / "results.parquet").query("stage == 'search'").config.unique())
                for d in (tmp_path / "whole", out)]
    assert searched[0] == searched[1]  # the same three configurations were searched
    a, b = _final(tmp_path / "whole"), _final(out)
    assert len(a) == len(b) > 0 and a["seed"].nunique() == 2
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True),
                                  check_exact=False, rtol=1e-6)
    res = pd.read_parquet(out / "results.parquet")
    assert res[res.stage == "search"].trial_id.nunique() == 3
    assert not res.duplicated(["trial_id", "stage", "split", "condition"]).any()
    assert (res.stage == "baseline").sum() == (pd.read_parquet(tmp_path / "whole" / "results.parquet")
                                               .stage == "baseline").sum()  # the probes once
