"""Multi-objective early stopping and an Optuna searcher that is told the truth about it.

`MOASHA`: asynchronous successive halving whose promotion decision at a rung ranks the trials
recorded there by non-dominated sorting, as in MO-ASHA (Schmucker et al. 2021, "Multi-objective
asynchronous successive halving"; Syne Tune's `MOASHA`). Each trial at the rung gets a scalar
priority from its Pareto front (NSGA-II) and, within the front, its crowding distance; then
ASHA's rule applies to the priorities: a newcomer is stopped when its priority is below the
(1 - 1/reduction_factor) quantile of the priorities of the trials recorded before it. With one
objective this is ASHA's rule on ranks; trials on the same front with equal crowding tie.

`TruthfulOptunaSearch`: Ray's OptunaSearch tells Optuna that a trial the scheduler stopped is
COMPLETE with the values of its last epoch; this one tells it PRUNED (the last values are kept
as the trial's user attribute `last_values`), so TPE does not model a 2-epoch score as a
finished one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

from study import pareto

# ----------------------------------------------------------------------------- ranking


def crowding_distance(points: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of points (N, M) within one front; boundary points get inf."""
    n, m = points.shape
    dist = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for k in range(m):
        order = np.argsort(points[:, k], kind="stable")
        span = points[order[-1], k] - points[order[0], k]
        dist[order[0]] = dist[order[-1]] = np.inf
        if span > 0:
            dist[order[1:-1]] += (points[order[2:], k] - points[order[:-2], k]) / span
    return dist


def pareto_priority(points: np.ndarray) -> np.ndarray:
    """(N,) priorities of points (N, M), larger is better: minus the front index, plus a bonus in
    [0, 0.5] that grows with the crowding distance within the front (inf -> 0.5)."""
    prio = np.zeros(len(points))
    for k, front in enumerate(pareto.fronts(points)):
        crowd = crowding_distance(points[front])
        finite = np.where(np.isinf(crowd), 0.0, crowd)
        bonus = np.where(np.isinf(crowd), 0.5, 0.5 * finite / (1.0 + finite))
        prio[front] = -k + bonus
    return prio


# ----------------------------------------------------------------------------- scheduler


class MOASHA(FIFOScheduler):
    """Multi-objective asynchronous successive halving (see the module docstring).

    `metrics`/`modes` are the objectives as reported by the trials; `time_attr` must increase
    monotonically (here: epoch). Rungs sit at grace_period * reduction_factor**k < max_t.
    """

    def __init__(self, metrics: Sequence[str], modes: Sequence[str], *, time_attr: str = "epoch",
                 max_t: int = 100, grace_period: int = 1, reduction_factor: float = 3):
        if len(metrics) != len(modes) or not metrics:
            raise ValueError("MOASHA needs one mode per metric")
        if grace_period < 1 or max_t < grace_period or reduction_factor <= 1:
            raise ValueError("MOASHA needs 1 <= grace_period <= max_t and reduction_factor > 1")
        super().__init__()
        self.metrics, self.signs = list(metrics), np.array([1.0 if m == "max" else -1.0 for m in modes])
        self.time_attr, self.max_t, self.rf = time_attr, max_t, float(reduction_factor)
        n_rungs = int(math.floor(math.log(max_t / grace_period, self.rf) + 1e-9)) + 1
        self.milestones = [grace_period * self.rf**k for k in range(n_rungs) if grace_period * self.rf**k < max_t]
        self.rungs: dict[float, dict[str, np.ndarray]] = {m: {} for m in self.milestones}
        self.num_stopped = 0

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True  # the objectives were given explicitly

    def _vector(self, result: dict) -> np.ndarray | None:
        try:
            values = np.array([float(result[m]) for m in self.metrics])
        except (KeyError, TypeError, ValueError):
            return None
        return np.where(np.isfinite(values), values * self.signs, -np.inf)  # larger is better

    def decide(self, trial_id: str, t: float, vector: np.ndarray) -> str:
        """CONTINUE or STOP for a trial reporting `vector` at time t (records it at its rung)."""
        if t >= self.max_t:
            return TrialScheduler.STOP
        for milestone in reversed(self.milestones):
            recorded = self.rungs[milestone]
            if t < milestone or trial_id in recorded:
                continue
            recorded[trial_id] = vector
            ids = list(recorded)
            prio = pareto_priority(np.stack([recorded[i] for i in ids]))  # (n,)
            mine, others = prio[ids.index(trial_id)], np.delete(prio, ids.index(trial_id))
            if len(others) and mine < np.percentile(others, (1 - 1 / self.rf) * 100):
                return TrialScheduler.STOP
            return TrialScheduler.CONTINUE
        return TrialScheduler.CONTINUE

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        vector = self._vector(result)
        if vector is None or self.time_attr not in result:
            return TrialScheduler.CONTINUE
        action = self.decide(trial.trial_id, float(result[self.time_attr]), vector)
        if action == TrialScheduler.STOP and float(result[self.time_attr]) < self.max_t:
            self.num_stopped += 1
        return action

    def debug_string(self) -> str:
        sizes = ", ".join(f"{m:g}: {len(r)}" for m, r in self.rungs.items())
        return f"MOASHA over {self.metrics}: stopped {self.num_stopped}; trials per rung {{{sizes}}}"


# ----------------------------------------------------------------------------- searcher


class TruthfulOptunaSearch(OptunaSearch):
    """OptunaSearch that records scheduler-stopped trials as PRUNED (see the module docstring).

    A trial counts as stopped when its last result says `finished: False` (the trial loop sets
    `finished: True` on its own last epoch). For optuna-dashboard, the study's metric names are
    the objectives' keys and every Optuna trial carries `ray_trial_id` plus `trial_attrs`
    (cell, stage) as user attributes.
    """

    def __init__(self, *args, metric_names: list[str] | None = None, trial_attrs: dict | None = None,
                 **kwargs):
        self._metric_names = list(metric_names or [])
        self._trial_attrs = dict(trial_attrs or {})
        super().__init__(*args, **kwargs)

    def _setup_study(self, mode):
        super()._setup_study(mode)
        if getattr(self, "_metric_names", None):
            self._ot_study.set_metric_names(self._metric_names)

    def suggest(self, trial_id: str):
        new = trial_id not in self._ot_trials
        params = super().suggest(trial_id)
        if new and trial_id in self._ot_trials:
            ot_trial = self._ot_trials[trial_id]
            ot_trial.set_user_attr("ray_trial_id", trial_id)
            for key, value in getattr(self, "_trial_attrs", {}).items():
                ot_trial.set_user_attr(key, value)
        return params

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if error or not result or result.get("finished", True) or trial_id in self._completed_trials:
            return super().on_trial_complete(trial_id, result, error)
        ot_trial = self._ot_trials[trial_id]
        keys = self.metric if isinstance(self.metric, list) else [self.metric]
        last = [result.get(k) for k in keys]
        ot_trial.set_user_attr("last_values", [None if v is None else float(v) for v in last])
        ot_trial.set_user_attr("stopped_at_epoch", result.get("epoch"))
        self._ot_study.tell(ot_trial, state=_pruned())
        self._completed_trials.add(trial_id)


def _pruned():
    import optuna

    return optuna.trial.TrialState.PRUNED
