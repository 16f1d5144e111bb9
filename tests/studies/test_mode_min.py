"""`mode: min` objectives through every consumer: the top-k of each cell, Pareto ranks, the
schedulers the sweep builds (ASHA, MOASHA), export-best and the report's best configuration.
In every case the trial with the LOWEST loss must win; the numbers are chosen by hand so that a
consumer that maximises instead picks a different trial."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from study.runs.selection import checkpoint_selection, order_top, selection_note
from study.runs.spec import spec_from_dict
from study.runs.stages import select_top_k

LOSS_MIN = [{"metric": "loss", "condition": "av", "mode": "min"}]


def _spec(objectives=LOSS_MIN, **kw):
    raw = {"name": "s", "dataset": {"synth": {"scale": "tiny"}}, "model_preset": "tiny",
           "spaces": ["optimisation_tiny"], "budget": {"trials_per_cell": 4, "max_epochs": 4},
           "seeds": [0, 1], "top_k": 2, "objectives": objectives}
    return spec_from_dict({**raw, **kw})


def _rows(tid: str, loss: float, f1: float, stage="search", parent=None, seed=3, split="dev",
          lr=0.01) -> list[dict]:
    cfg = json.dumps({"fusion": "late", "train_missing_rate": 0.0, "seed": seed, "lr": lr}, sort_keys=True)
    base = {"trial_id": tid, "cell": "fusion=late|r=0", "status": "completed", "stage": stage,
            "parent_trial_id": parent, "split": split, "seed": seed, "config": cfg, "fusion": "late",
            "train_missing_rate": 0.0, "wall_time_s": 1.0, "epochs": 2, "cpus": 1.0, "gpus": 0.0}
    return [{**base, "condition": "av", "loss": loss, "macro_f1": f1},
            {**base, "condition": "audio_only", "loss": loss + 0.1, "macro_f1": f1 - 0.1},
            {**base, "condition": "video_only", "loss": loss + 0.2, "macro_f1": f1 - 0.2}]


# losses A 0.9, B 0.3, C 0.5, D 0.4: min-first order B, D, C, A (max would give A, C, D, B)
SEARCH = pd.DataFrame(_rows("A", 0.9, 0.7) + _rows("B", 0.3, 0.4) + _rows("C", 0.5, 0.6)
                      + _rows("D", 0.4, 0.3) + _rows("T", 0.01, 0.99, split="test"))


def test_top_k_takes_the_lowest_loss():
    assert [tid for tid, _ in select_top_k(_spec(), SEARCH)] == ["B", "D"]
    assert "av_loss (min)" in selection_note(_spec())["top_k"]["text"]
    assert checkpoint_selection(_spec()) == ("av", "loss", "min")


def test_pareto_with_a_min_and_a_max_objective():
    # (loss min, macro-F1 max): A (0.9, 0.7), B (0.3, 0.4), C (0.5, 0.6), D (0.4, 0.3).
    # D is dominated by B (lower loss 0.3 < 0.4 and higher F1 0.4 > 0.3); A, B, C are not.
    # Rank 0 ordered by the first objective (loss ascending): B 0.3, C 0.5, A 0.9; then D.
    spec = _spec(LOSS_MIN + [{"metric": "macro_f1", "condition": "av", "mode": "max"}], top_k=4)
    assert [tid for tid, _ in select_top_k(spec, SEARCH)] == ["B", "C", "A", "D"]


def test_order_top_drops_a_nan_first_objective_whatever_the_mode():
    values = np.array([[-0.3], [np.nan], [-0.5]])     # signed: -loss, larger is better
    assert order_top(values, ["x", "y", "z"]) == [0, 2]


def test_moasha_built_from_the_spec_stops_the_highest_loss():
    from ray.tune.schedulers import TrialScheduler

    from study.runs.stages import _scheduler

    sched = _scheduler(_spec(scheduler={"kind": "moasha", "grace_period": 1, "reduction_factor": 2}))
    # rung at epoch 1, keep the better half: B (0.3) first, then A (0.9) is worse than B -> STOP
    assert sched.decide("B", 1, sched._vector({"av_loss": 0.3})) == TrialScheduler.CONTINUE
    assert sched.decide("A", 1, sched._vector({"av_loss": 0.9})) == TrialScheduler.STOP
    assert sched.decide("E", 1, sched._vector({"av_loss": 0.1})) == TrialScheduler.CONTINUE


def test_asha_built_from_the_spec_stops_the_highest_loss():
    from ray.tune.schedulers import TrialScheduler

    from study.runs.stages import _scheduler

    sched = _scheduler(_spec(scheduler={"kind": "asha", "grace_period": 1, "reduction_factor": 2}))
    trials = [SimpleNamespace(trial_id=t, is_finished=lambda: False) for t in "BAE"]
    for t in trials:
        sched.on_trial_add(None, t)
    act = {t.trial_id: sched.on_trial_result(None, t, {"epoch": 1, "av_loss": v, "training_iteration": 1})
           for t, v in zip(trials, (0.3, 0.9, 0.1))}
    # B alone: continue; A 0.9 is above the rung's median loss: stop; E 0.1 is the best: continue
    assert act == {"B": TrialScheduler.CONTINUE, "A": TrialScheduler.STOP, "E": TrialScheduler.CONTINUE}


def _study(tmp_path, rows: list[dict]) -> object:
    d = tmp_path / "study"
    d.mkdir()
    obj = {"metric": "loss", "condition": "av", "mode": "min", "key": "av_loss"}
    (d / "study.json").write_text(json.dumps({"name": "s", "status": "finished", "task": "categorical",
                                              "primary_metric": "macro_f1", "objectives": [obj]}))
    pd.DataFrame(rows).to_parquet(d / "results.parquet", index=False)
    return d


# rerun losses: config A over seeds 0, 1: 0.50, 0.30 (mean 0.40); config B: 0.45, 0.45 (mean 0.45);
# on test B would be far better (0.01) and must never count. min-best is A (0.40 < 0.45).
RERUN = (_rows("rA0", 0.50, 0.5, "rerun", "A", 0, lr=0.1) + _rows("rA1", 0.30, 0.5, "rerun", "A", 1, lr=0.1)
         + _rows("rB0", 0.45, 0.9, "rerun", "B", 0, lr=0.2) + _rows("rB1", 0.45, 0.9, "rerun", "B", 1, lr=0.2)
         + _rows("fB0", 0.01, 0.99, "final", "B", 0, split="test", lr=0.2))


def test_export_best_takes_the_lowest_mean_loss(tmp_path):
    from study.runs.export import best_config

    flat, note = best_config(_study(tmp_path, RERUN), "rerun")
    assert flat["lr"] == 0.1 and flat["seed"] == 0            # config A with its first seed
    assert "rerun trial rA0" in note and "0.4000" in note       # mean (0.50 + 0.30) / 2


def test_report_best_configuration_takes_the_lowest_mean_loss(tmp_path):
    from reports import gather
    from reports.fsio import locate
    from reports.load import load_study, make_context

    d = _study(tmp_path, RERUN)
    ctx = make_context(load_study(locate(d)))
    # the study ranks by av loss (min); ranking its primary metric macro-F1 with mode min (the bug
    # this caught) would pick B's 0.9 ... as the worst, i.e. A; by macro-F1 max it would be B
    assert (ctx.condition, ctx.metric, ctx.maximize) == ("av", "loss", False)
    best = gather.best_configs(pd.read_parquet(d / "results.parquet"), ctx, "rerun", "dev", by=())
    assert best["config_id"].tolist() == ["A"] and best["objective"].tolist() == pytest.approx([0.40])
    from reports.build import write_report

    text = write_report(d).read_text()
    assert "objective: av loss" in text and "could not be built" not in text
