"""Tiny studies on the session Ray instance (2 CPUs): search + ASHA + rerun + final test,
failing trials, and the Ray Train worker-group path."""

from __future__ import annotations

import json

import optuna
import pandas as pd
import pytest
import torch

from study.data.protocol import EXTRA_FAMILIES, ProtocolConfig, eval_conditions
from study.runs.spec import spec_from_dict
from study.runs.stages import sweep
from study.runs.status import progress_table

CONDITIONS = {"av", "audio_only", "video_only", "robustness", "mei", "mli"} | {
    f"miss_{i / 10:.1f}" for i in range(10)}  # mei, mli: the imbalance indices (docs/imbalance.md)
# + the frame-level families: on dev once per trial that ran to its end, and on test
FULL = CONDITIONS | {c.name for c in eval_conditions(ProtocolConfig(), extended=True)} | {
    f"robustness_{f}" for f in EXTRA_FAMILIES}


@pytest.fixture(scope="module")
def synth_cache(tmp_path_factory, monkeypatch_module):
    path = tmp_path_factory.mktemp("avcache")
    monkeypatch_module.setenv("AVSTUDY_CACHE", str(path))
    return path


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _spec(**overrides) -> dict:
    raw = {
        # known-answer: learnt in a few tiny epochs, so trials differ and ASHA has something to stop
        "name": "tiny", "dataset": {"synth": {"preset": "known-answer", "scale": "tiny", "seed": 0}},
        "model_preset": "tiny", "spaces": ["architecture_tiny", "optimisation_tiny", "missing"],
        "fixed": {"d_model": 16, "n_heads": 2, "enc_layers": 1, "use_shared": False,
                  "shared_layers": 0, "batch_size": 16, "patience": 5},
        "cells": {"fusion": ["late"], "train_missing_rate": [0.5]},
        "searcher": {"kind": "optuna-tpe", "seed": 0, "n_startup_trials": 2},
        "scheduler": {"kind": "asha", "grace_period": 1, "reduction_factor": 2},
        "budget": {"trials_per_cell": 6, "max_epochs": 4},
        "resources": {"workers": 1, "cpus_per_worker": 1},
        "objectives": [{"metric": "macro_f1", "condition": "av", "mode": "max"},
                       {"metric": "macro_f1", "condition": "worst_single", "mode": "max"}],
        "seeds": [3], "top_k": 1,
    }
    raw.update(overrides)
    return raw


def test_search_asha_rerun_final(ray_session, synth_cache, tmp_path):
    torch.set_num_threads(1)
    out = sweep(spec_from_dict(_spec()), out=tmp_path / "study", verbose=0)
    res = pd.read_parquet(out / "results.parquet")
    curves = pd.read_parquet(out / "curves.parquet")
    meta = json.loads((out / "study.json").read_text())
    assert meta["status"] == "finished" and meta["primary_metric"] == "macro_f1"
    assert [o["key"] for o in meta["objectives"]] == ["av_macro_f1", "worst_single_macro_f1"]

    search = res[res.stage == "search"]
    assert search.trial_id.nunique() == 6 and set(search.split) == {"dev"}
    assert set(search.status) <= {"completed", "early_stopped"}
    status = search.groupby("trial_id").status.first()
    assert (status == "early_stopped").sum() >= 1  # ASHA stopped some trials
    epochs = search.groupby("trial_id").epochs.first()
    assert (epochs[status == "early_stopped"] < 4).all() and (epochs[status == "completed"] == 4).all()
    conds = search.groupby("trial_id").condition.agg(set)
    assert all(c == FULL for c in conds[status == "completed"])
    assert all(c == CONDITIONS for c in conds[status == "early_stopped"])
    size = search.groupby("trial_id").size()  # counted once
    assert (size[status == "completed"] == len(FULL)).all() and (size[status != "completed"] == len(CONDITIONS)).all()
    assert {"param__lr", "param__modality_dropout", "param__dropout"} <= set(res.columns)
    assert "param__audio_only_share" not in res.columns  # a data condition: not searched in a cell
    assert "param__fusion" not in res.columns and "param__train_missing_rate" not in res.columns
    assert (search.fusion == "late").all() and (search.train_missing_rate == 0.5).all()
    assert search.cell.eq("fusion=late|r=0.5").all()
    assert json.loads(search.confusion.dropna().iloc[0])  # JSON list of lists

    # top-1 by dev av macro-F1 (never test) is re-run with the rerun seed, then tested once
    av = search[search.condition == "av"].set_index("trial_id").macro_f1
    rerun, final = res[res.stage == "rerun"], res[res.stage == "final"]
    assert set(rerun.parent_trial_id) == {av.idxmax()} == set(final.parent_trial_id)
    assert set(rerun.seed) == {3} and set(rerun.split) == {"dev"}
    assert set(search.seed) == {4}  # search trials use a seed above every rerun seed: fresh reruns
    assert meta["selection"]["seeds"]["rerun"] == [3] and meta["selection"]["split"] == "dev"
    assert {"flag", "degenerate", "normalize", "unpaired_share"} <= set(res.columns)
    assert res.normalize.all() and search.unpaired_share.between(0.4, 0.8).all()
    assert set(final.split) == {"test"} and set(final.condition) == FULL
    assert final.trial_id.nunique() == 1 and (final.status == "completed").all()
    assert res.trial_id.str.startswith(("search-", "rerun-", "final-", "baseline-")).all()
    # the linear probes: one trial per training missing rate, dev and test, every condition
    base = res[res.kind == "baseline"]
    assert (res.kind == "model").sum() == (res.stage != "baseline").sum()
    assert set(base.trial_id) == {"baseline-probe-r0.5"} and set(base.stage) == {"baseline"}
    assert set(base.fusion) == {"probe"} and base.cell.eq("fusion=probe|r=0.5").all()
    assert set(base.split) == {"dev", "test"} and (base.status == "completed").all() and set(base.seed) == {0}
    assert all(set(g.condition) == FULL - {"mei", "mli"} for _, g in base.groupby("split"))  # a probe: no indices
    assert json.loads(base.config.iloc[0])["pooling"] == "mean+std"
    miss = final[final.condition.str.startswith("miss_")]
    assert miss.test_missing_rate.notna().all() and final[final.condition == "av"].test_missing_rate.isna().all()

    # curves: one row per reported epoch of every trial
    per_trial = curves.groupby("trial_id").epoch.agg(["min", "max", "count"])
    assert set(per_trial.index) == set(search.trial_id) | set(rerun.trial_id)
    assert (per_trial["min"] == 1).all() and (per_trial["count"] == per_trial["max"]).all()
    assert {"time_s", "train_loss", "dev_loss", "dev_macro_f1", "dev_av_macro_f1",
            "unpaired_share"} <= set(curves.columns)

    # the Optuna study (two objectives) is in STUDY_DIR/optuna.db with every trial told
    study = optuna.load_study(study_name="tiny/search/late-r0.5",
                              storage=f"sqlite:///{out / 'optuna.db'}")
    assert len(study.trials) == 6 and len(study.directions) == 2
    states = sorted(t.state.name for t in study.trials)  # ASHA-stopped trials are PRUNED, not COMPLETE
    n_stopped = int((status == "early_stopped").sum())
    assert states == ["COMPLETE"] * (6 - n_stopped) + ["PRUNED"] * n_stopped
    # optuna-dashboard: named objectives, each Optuna trial linked to its Ray trial, cell, stage
    assert study.metric_names == ["av_macro_f1", "worst_single_macro_f1"]
    attrs = [t.user_attrs for t in study.trials]
    assert {a["cell"] for a in attrs} == {"fusion=late|r=0.5"} and {a["stage"] for a in attrs} == {"search"}
    ray_ids = [a["ray_trial_id"] for a in attrs]
    assert len(set(ray_ids)) == 6 and all(isinstance(i, str) and i for i in ray_ids)
    from study.cli import dashboard_command
    assert dashboard_command(out)[-1] == f"sqlite:///{(out / 'optuna.db').resolve()}"
    table = progress_table(out)
    assert "fusion=late|r=0.5" in table and "rerun" in table


def test_failing_trials_are_recorded_not_fatal(ray_session, synth_cache, tmp_path):
    """A sampled configuration the model refuses (the spec checks `fixed:` up front, but a
    searched key meets the fixed ones only when it is sampled) fails its trial, not the study."""
    raw = _spec(spaces=[], searcher={"kind": "random", "seed": 0}, scheduler={"kind": "none"},
                budget={"trials_per_cell": 2, "max_epochs": 1},
                search={"n_heads": {"choices": [3]}})  # d_model=16 is not divisible by 3
    del raw["fixed"]["n_heads"]
    out = sweep(spec_from_dict(raw), out=tmp_path / "study", verbose=0)
    res = pd.read_parquet(out / "results.parquet")
    res = res[res.kind == "model"]  # the baseline stage's rows aside
    assert len(res) == 2 and (res.status == "failed").all()
    assert res.split.isna().all() and res.condition.isna().all()
    assert res.error.str.contains("n_heads").all()
    assert json.loads((out / "study.json").read_text())["status"] == "finished"


def test_ray_train_worker_group_mode(ray_session, synth_cache, tmp_path):
    raw = _spec(spaces=[], searcher={"kind": "grid"}, scheduler={"kind": "none"},
                budget={"trials_per_cell": 1, "max_epochs": 2},
                resources={"workers": 1, "cpus_per_worker": 1, "mode": "train"})
    out = sweep(spec_from_dict(raw), out=tmp_path / "study", verbose=0)
    res = pd.read_parquet(out / "results.parquet")
    res = res[res.kind == "model"]  # the baseline stage's rows aside
    assert set(res.stage) == {"search", "rerun", "final"}
    assert (res.status == "completed").all() and set(res[res.stage == "final"].split) == {"test"}
    assert (out / "ray" / "train-runs").is_dir()  # the TorchTrainer runs' own storage
    curves = pd.read_parquet(out / "curves.parquet")
    assert sorted(curves[curves.stage == "search"].epoch) == [1, 2]


@pytest.mark.slow
def test_two_worker_ray_train_trial_finishes(ray_session, synth_cache, tmp_path):
    """2 Ray Train workers (gloo, 1 CPU each) train one model together and finish every stage
    (before the equal-step sharding, ranks took unequal step counts and DDP hung), with VAVL's
    three-pass schedule: every pass on every rank, even where a rank's batch has no pair."""
    base = _spec()
    raw = _spec(spaces=[], searcher={"kind": "grid"}, scheduler={"kind": "none"},
                cells={"fusion": ["vavl"], "train_missing_rate": [0.5]},
                fixed={**base["fixed"], "schedule": "three_pass"},
                budget={"trials_per_cell": 1, "max_epochs": 2},
                resources={"workers": 2, "cpus_per_worker": 1, "mode": "train"})
    out = sweep(spec_from_dict(raw), out=tmp_path / "study", verbose=0)
    res = pd.read_parquet(out / "results.parquet")
    res = res[res.kind == "model"]  # the baseline stage's rows aside
    assert set(res.stage) == {"search", "rerun", "final"} and (res.status == "completed").all()
    assert set(res.workers) == {2} and set(res.cpus) == {2.0}
    assert {json.loads(c)["schedule"] for c in res.config} == {"three_pass"}
    curves = pd.read_parquet(out / "curves.parquet")
    assert sorted(curves[curves.stage == "search"].epoch) == [1, 2]
