"""A study over folds, end to end: the known-answer corpus cut into 3 speaker-disjoint folds,
the search on the mean dev score over folds, each selected configuration re-run x seed x fold,
`fold` in results.parquet, folds in status and study.json, and the designed ranking (vavl, which
can combine the streams non-linearly, above late fusion) on the fold mean of the test scores."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from study.runs.spec import spec_from_dict
from study.runs.stages import sweep
from study.runs.status import progress_table

SEEDS = [0, 1]
SPEC = {
    "name": "folds", "dataset": {"synth": {"preset": "known-answer", "scale": "small", "seed": 0},
                                 "folds": {"by": "speaker", "k": 3, "seed": 0}},
    "search_folds": "mean",
    "task": {"kind": "categorical", "label_kind": "hard"},
    "model_preset": "tiny", "spaces": [],
    "fixed": {"lr": 0.003, "batch_size": 32, "patience": 20, "weight_decay": 1e-4},
    "cells": {"fusion": ["late", "vavl"], "train_missing_rate": [0.0]},
    "searcher": {"kind": "grid"}, "scheduler": {"kind": "none"},
    "budget": {"trials_per_cell": 1, "max_epochs": 1, "rerun_max_epochs": 6},
    "resources": {"workers": 1, "cpus_per_worker": 1},
    "objectives": [{"metric": "macro_f1", "condition": "av", "mode": "max"}],
    "seeds": SEEDS, "top_k": 1,
}


@pytest.mark.slow
def test_a_study_over_three_speaker_folds(ray_session, tmp_path, monkeypatch):
    monkeypatch.setenv("AVSTUDY_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    out = sweep(spec_from_dict(SPEC), out=tmp_path / "study", verbose=0)
    res = pd.read_parquet(out / "results.parquet")
    meta = json.loads((out / "study.json").read_text())
    assert meta["folds"]["k"] == 3 and meta["folds"]["search"] == "mean"
    assert meta["folds"]["selected_on_test"] is False and meta["selection"]["selected_on_test"] is False
    assert not res.selected_on_test.any() and res.fold.dtype.kind == "i"

    # search: one trial per cell trained all three folds (in lockstep): rows of every fold
    search = res[res.stage == "search"]
    assert (search.groupby("trial_id").fold.agg(set) == {0, 1, 2}).all()
    # rerun and final: the selected configuration x seed x fold, one fold per trial
    for stage, split in (("rerun", "dev"), ("final", "test")):
        rows = res[res.stage == stage]
        assert set(rows.split) == {split} and (rows.groupby("trial_id").fold.nunique() == 1).all()
        runs = rows.groupby(["fusion", "trial_id"])[["seed", "fold"]].first().reset_index()
        for _, cell in runs.groupby("fusion"):
            assert sorted(zip(cell.seed, cell.fold)) == [(s, f) for s in SEEDS for f in (0, 1, 2)]

    # each fold trained on its own dataset: statistics from its own training split
    folds_dir = next((tmp_path / "cache" / "folds").iterdir())
    assert all(list((folds_dir / f"fold{i}" / "stats").glob("train_*.json")) for i in range(3))

    # the designed ranking on the fold mean (mean over seeds within a fold, then over folds)
    av = res[(res.stage == "final") & (res.condition == "av")]
    per_fold = av.groupby(["fusion", "fold"]).macro_f1.mean().unstack("fold")
    mean = per_fold.mean(axis=1)
    print("final test av macro-F1, mean over seeds, per fold:\n", per_fold.round(3).to_string())
    assert mean["vavl"] > mean["late"] + 0.05, per_fold

    table = progress_table(out)
    assert "folds: 3 speaker-disjoint folds" in table and "folds" in table.splitlines()[2]
    rerun_line = next(line for line in table.splitlines() if line.startswith("rerun"))
    assert rerun_line.split()[-1] == "3"                       # the rerun covered 3 folds
    assert Path(meta["work_dir"]) == out

    # the report: the per-fold table, comparisons corrected (Holm), the paper tables on disk
    from study.cli import main

    assert main(["report", str(out), "--tables", str(tmp_path / "tables")]) == 0
    written = sorted(p.name for p in (tmp_path / "tables").iterdir())
    assert {"folds.csv", "folds.tex", "paired.csv", "paired.tex", "leaderboard.tex"} <= set(written)
    page = (out / "report.html").read_text()
    assert "Holm" in page and "fold" in page
    per_fold_table = pd.read_csv(tmp_path / "tables" / "folds.csv")
    assert {"fold 0", "fold 1", "fold 2"} <= set(per_fold_table["column"].str.split(" · ").str[-1])
