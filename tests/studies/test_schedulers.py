"""MO-ASHA (non-dominated sorting at each rung) and the searcher that tells Optuna the truth."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from ray.tune.schedulers import TrialScheduler

from study.runs.schedulers import MOASHA, crowding_distance, pareto_priority

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP


def test_crowding_distance_by_hand():
    pts = np.array([[0.0, 4.0], [1.0, 2.0], [3.0, 1.0], [4.0, 0.0]])
    d = crowding_distance(pts)
    assert np.isinf(d[0]) and np.isinf(d[3])
    # point 1: (3 - 0)/4 + (4 - 1)/4 = 1.5; point 2: (4 - 1)/4 + (2 - 0)/4 = 1.25
    assert d[1] == pytest.approx(1.5) and d[2] == pytest.approx(1.25)


def test_pareto_priority_puts_fronts_first_then_wide_spread():
    pts = np.array([[0.0, 0.0], [0.0, 4.0], [1.0, 2.0], [3.0, 1.0], [4.0, 0.0]])
    prio = pareto_priority(pts)
    # front 0 = points 1..4 (crowding inf, 1.5, 1.25, inf); front 1 = point 0 alone (inf)
    assert prio.tolist() == pytest.approx([-0.5, 0.5, 0.3, 0.5 * 1.25 / 2.25, 0.5])


def test_rungs_follow_grace_period_and_reduction_factor():
    s = MOASHA(["a"], ["max"], max_t=20, grace_period=1, reduction_factor=3)
    assert s.milestones == [1, 3, 9]


def test_single_objective_matches_asha_on_pairs():
    """With one objective and two trials at a rung, the worse newcomer is stopped (ASHA's rule)."""
    s = MOASHA(["a"], ["max"], max_t=10, grace_period=1, reduction_factor=2)
    assert s.decide("t1", 1, np.array([0.5])) == CONTINUE  # first at the rung
    assert s.decide("t2", 1, np.array([0.3])) == STOP  # worse than the one recorded
    assert s.decide("t3", 1, np.array([0.9])) == CONTINUE


def test_second_objective_keeps_a_trial_that_asha_on_the_first_would_stop():
    """t2 is worse on av but far better on worst-single: not dominated, so it goes on."""
    s = MOASHA(["av", "worst"], ["max", "max"], max_t=10, grace_period=1, reduction_factor=2)
    assert s.decide("t1", 1, np.array([0.70, 0.20])) == CONTINUE
    assert s.decide("t2", 1, np.array([0.65, 0.60])) == CONTINUE  # ASHA on av alone: STOP
    assert s.decide("t3", 1, np.array([0.60, 0.10])) == STOP  # dominated by both
    asha_on_av = MOASHA(["av"], ["max"], max_t=10, grace_period=1, reduction_factor=2)
    asha_on_av.decide("t1", 1, np.array([0.70]))
    assert asha_on_av.decide("t2", 1, np.array([0.65])) == STOP


def test_min_mode_and_nan_are_handled():
    s = MOASHA(["loss", "f1"], ["min", "max"], max_t=10, grace_period=1, reduction_factor=2)
    assert s.decide("a", 1, s._vector({"loss": 0.5, "f1": 0.5})) == CONTINUE
    assert s.decide("b", 1, s._vector({"loss": 0.9, "f1": 0.4})) == STOP  # higher loss and lower f1
    assert s.decide("c", 1, s._vector({"loss": float("nan"), "f1": 0.9})) == CONTINUE  # best f1 keeps it


def test_max_t_stops():
    s = MOASHA(["a"], ["max"], max_t=4, grace_period=1, reduction_factor=2)
    assert s.decide("t", 4, np.array([1.0])) == STOP


def _space(trial) -> dict:
    return {"q": trial.suggest_float("q", 0.0, 1.0)}


def test_tune_run_with_moasha_and_truthful_optuna(ray_session, tmp_path):
    """Stopped trials reach Optuna as PRUNED with their last values; finished ones as COMPLETE."""
    from ray import tune

    from study.runs.schedulers import TruthfulOptunaSearch

    def trainable(config):  # defined here: Ray ships it by value (workers cannot import tests/)
        for epoch in range(1, 7):
            tune.report({"epoch": epoch, "av": config["q"] * epoch / 6, "worst": (1 - config["q"]) * epoch / 6,
                         "finished": epoch == 6})

    url = f"sqlite:///{tmp_path / 'o.db'}"
    storage = optuna.storages.RDBStorage(url)
    search = TruthfulOptunaSearch(space=_space, metric=["av", "worst"],
                                  mode=["max", "max"], sampler=optuna.samplers.RandomSampler(seed=0),
                                  study_name="s", storage=storage)
    sched = MOASHA(["av", "worst"], ["max", "max"], max_t=6, grace_period=1, reduction_factor=3)
    tuner = tune.Tuner(tune.with_resources(trainable, {"CPU": 1}),
                       tune_config=tune.TuneConfig(search_alg=search, scheduler=sched, num_samples=8,
                                                   max_concurrent_trials=2),
                       run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), name="moasha", verbose=0))
    grid = tuner.fit()
    stopped = [r for r in grid if not r.metrics.get("finished")]
    done = [r for r in grid if r.metrics.get("finished")]
    assert stopped and done
    study = optuna.load_study(study_name="s", storage=url)
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.PRUNED) == len(stopped)
    assert states.count(optuna.trial.TrialState.COMPLETE) == len(done)
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert all(len(t.user_attrs["last_values"]) == 2 for t in pruned)
