"""Search-stage packs (issue 21): one Tune trial of the search trains up to K configurations the
searcher drew as one stacked model (study/runs/packs.py `pack_loop`); each member is an Optuna
trial, a scheduler candidate and a results row of its own (tune id `<pack trial>-m<k>`).

- `search_pack_plan`: a cell's pack size and the keys its members may differ in
  (`resources.pack_vary`), or why its search trials train alone.
- `PackedSearch`: TruthfulOptunaSearch that answers one Tune trial with a pack of Optuna trials:
  the first member drawn as usual, each other one asked after `enqueue_trial` of the first's
  shared keys (every searched key outside `pack_vary`), so the sampler draws only the keys a pack
  may vary. Until the cell's `trials_per_cell` members are drawn; then FINISHED.
- `PackScheduler`: the spec's ASHA or MO-ASHA applied to every member as a trial of its own. A
  member it stops leaves the pack (the decision reaches the trial through the `PackStops` actor,
  read before each epoch); the others go on; the pack trial stops when no member is left.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from study.runs.packs import STOPS_NAMESPACE, cpu_capped, member_metrics, near_equal
from study.runs.schedulers import TruthfulOptunaSearch
from study.vocab import PACK_VARIES


@dataclass(frozen=True)
class SearchPacks:
    """How a cell's search packs: up to `size` members per trial, differing only in `vary`."""

    size: int
    vary: frozenset[str]
    members: int  # the cell's trials_per_cell: configurations drawn in all


def search_pack_plan(spec, ctx, space, slots: int | None) -> tuple[SearchPacks | None, str | None]:
    """(the plan, None) where the search packs; (None, why not) where it could but does not;
    (None, None) where packing is off (resources.pack 1, the CPU default)."""
    r, n = spec.resources, spec.budget.trials_per_cell
    size = cpu_capped(r.pack_size, n, slots, ctx)
    if r.pack_size < 2 or size < 2:
        return None, None
    if r.pack_vary == ():
        return None, "resources.pack_vary is [] (the search does not pack)"
    if ctx.workers != 1:
        return None, "resources.workers > 1 (a pack trains in one process)"
    if len(ctx.trial_folds) != 1:
        return None, "a search trial trains several folds (they pack as folds instead)"
    vary = frozenset(PACK_VARIES if r.pack_vary is None else r.pack_vary)
    shaping = sorted(space.searched_keys() - vary)
    if r.pack_vary is None and shaping:
        return None, (f"the searched keys {shaping} are not ones a pack may vary: list in "
                      "resources.pack_vary the keys a pack's members may differ in (the others "
                      "are then drawn once per pack)")
    return SearchPacks(size=size, vary=vary, members=n), None


def packable(flat: dict, preset: str) -> bool:
    """Whether a configuration can be a pack's first member (its fusion strategy, schedule)."""
    from study.training.config import config_from_flat
    from study.training.packed import train_refusal

    try:
        return train_refusal([config_from_flat(flat, preset=preset)]) is None
    except (ValueError, TypeError):
        return False  # trains alone, where its error is reported as an unpacked trial's


# ----------------------------------------------------------------------------- searcher


class PackedSearch(TruthfulOptunaSearch):
    """TruthfulOptunaSearch drawing a pack of configurations per Tune trial (module docstring).

    A first member that cannot pack (a fusion strategy that mixes samples, three_pass, ogm_ge)
    trains alone, as an unpacked trial under the Tune trial's own id; the cell still draws
    `trials_per_cell` configurations in all. Every attribute is saved with the searcher."""

    def __init__(self, *args, packs: SearchPacks, preset: str, **kwargs):
        self._plan, self._preset = packs, preset
        self._packs: dict[str, list[str]] = {}  # Tune trial id -> its members' ids (packs only)
        self._drawn = 0
        self._told: dict[str, object] = {}  # member id -> the epoch last reported to Optuna
        super().__init__(*args, **kwargs)

    def suggest(self, trial_id: str):
        left = self._plan.members - self._drawn
        if left <= 0:
            return Searcher.FINISHED
        size = near_equal(left, self._plan.size)[0]
        first_id = f"{trial_id}-m0"
        first = super().suggest(first_id)
        if size < 2 or not packable(first, self._preset):
            self._alone(first_id, trial_id)
            return first
        shared = {k: v for k, v in self._ot_trials[first_id].params.items() if k not in self._plan.vary}
        ids, flats = [first_id], [first]
        for k in range(1, size):
            if shared:  # else every searched key may vary: the member is drawn as any trial is
                self._ot_study.enqueue_trial(shared, skip_if_exists=False)
            ids.append(f"{trial_id}-m{k}")
            flats.append(super().suggest(ids[-1]))
        self._packs[trial_id] = ids
        self._drawn += size
        jobs = [{"flat": flat, "meta": {}} for flat in flats]
        return {"job": {**jobs[0], "pack": jobs, "trial": trial_id}}

    def _alone(self, member_id: str, trial_id: str) -> None:
        """The Optuna trial drawn as member 0 becomes the Tune trial's own."""
        self._ot_trials[trial_id] = ot_trial = self._ot_trials.pop(member_id)
        ot_trial.set_user_attr("ray_trial_id", trial_id)
        self._drawn += 1

    def on_trial_result(self, trial_id: str, result: dict):
        if trial_id not in self._packs:
            return super().on_trial_result(trial_id, result)
        for k, mid in enumerate(self._packs[trial_id]):
            mine = member_metrics(result, k)
            single = not isinstance(self.metric, list)
            if mid in self._completed_trials or (single and self.metric not in mine):
                continue
            if self._told.get(mid) != mine.get("epoch"):  # a member that left repeats its last
                self._told[mid] = mine.get("epoch")
                super().on_trial_result(mid, mine)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if trial_id not in self._packs:
            return super().on_trial_complete(trial_id, result, error)
        for k, mid in enumerate(self._packs[trial_id]):
            mine = member_metrics(result or {}, k)
            failed = error or "error" in mine  # a member that diverged: FAIL, as alone
            super().on_trial_complete(mid, None if failed else (mine or None), error=failed)


# ----------------------------------------------------------------------------- scheduler


@dataclass(frozen=True)
class _Member:
    """What a scheduler reads of a trial: its id (a pack's member `<trial>-m<k>`)."""

    trial_id: str


class PackScheduler(FIFOScheduler):
    """Applies `inner` (ASHA, MO-ASHA) to each member of a pack trial; other trials as they are."""

    def __init__(self, inner, stops: str):
        super().__init__()
        self.inner, self.stops = inner, stops  # stops: the PackStops actor's name
        self.open: dict[str, dict[int, str]] = {}  # pack trial -> its members still racing
        self.stopped: dict[str, list[int]] = {}  # pack trial -> the members this scheduler stopped
        self.seen: dict[str, object] = {}  # member id -> its last epoch shown to inner
        self._actor = None

    def __getstate__(self) -> dict:  # Tune pickles the scheduler with the experiment: no handle
        return {**self.__dict__, "_actor": None}

    def _tell(self, trial_id: str) -> None:
        """The pack's stopped members to its trial, every report (a driver restored from the
        experiment's state starts a new PackStops of the same name: it learns them again)."""
        import ray

        try:
            self._actor = self._actor or ray.get_actor(self.stops, namespace=STOPS_NAMESPACE)
            self._actor.stop.remote(trial_id, self.stopped[trial_id])
        except (ValueError, ray.exceptions.RayError):  # gone: the pack trains on, Tune stops it whole
            self._actor = None

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return self.inner.set_search_properties(metric, mode, **spec)

    @staticmethod
    def _pack(trial) -> list | None:
        return (trial.config.get("job") or {}).get("pack")

    def on_trial_add(self, tune_controller, trial):
        members = self._pack(trial)
        if members is None:
            return self.inner.on_trial_add(tune_controller, trial)
        self.open[trial.trial_id] = {k: f"{trial.trial_id}-m{k}" for k in range(len(members))}
        for mid in self.open[trial.trial_id].values():
            self.inner.on_trial_add(tune_controller, _Member(mid))

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if self._pack(trial) is None:
            return self.inner.on_trial_result(tune_controller, trial, result)
        racing, stopped = self.open.setdefault(trial.trial_id, {}), []
        for k, mid in sorted(racing.items()):
            mine = member_metrics(result, k)
            if mine.get("finished") or "error" in mine:  # left by itself: patience, max_epochs, diverged
                self._close(tune_controller, trial.trial_id, k, mine if mine.get("finished") else None)
            elif self.seen.get(mid) != mine.get("epoch"):
                self.seen[mid] = mine.get("epoch")
                if self.inner.on_trial_result(tune_controller, _Member(mid), mine) == TrialScheduler.STOP:
                    self._close(tune_controller, trial.trial_id, k, None)
                    stopped.append(k)
        if stopped:
            self.stopped[trial.trial_id] = sorted({*self.stopped.get(trial.trial_id, ()), *stopped})
        if self.stopped.get(trial.trial_id):
            self._tell(trial.trial_id)
        return TrialScheduler.CONTINUE if racing else TrialScheduler.STOP

    def _close(self, tune_controller, trial_id: str, k: int, result: dict | None) -> None:
        """Member k is out of the race: its final result to inner, or (stopped, failed) removed."""
        mid = self.open[trial_id].pop(k)
        if result is not None:
            self.inner.on_trial_complete(tune_controller, _Member(mid), result)
        else:
            self.inner.on_trial_remove(tune_controller, _Member(mid))

    def _close_all(self, tune_controller, trial, result: dict | None) -> None:
        for k in list(self.open.get(trial.trial_id, {})):
            self._close(tune_controller, trial.trial_id, k, member_metrics(result, k) if result else None)
        self.open.pop(trial.trial_id, None)

    def on_trial_complete(self, tune_controller, trial, result: dict):
        if self._pack(trial) is None:
            return self.inner.on_trial_complete(tune_controller, trial, result)
        self._close_all(tune_controller, trial, result)

    def on_trial_error(self, tune_controller, trial):
        if self._pack(trial) is None:
            return self.inner.on_trial_error(tune_controller, trial)
        self._close_all(tune_controller, trial, None)

    def on_trial_remove(self, tune_controller, trial):
        if self._pack(trial) is None:
            return self.inner.on_trial_remove(tune_controller, trial)
        self._close_all(tune_controller, trial, None)

    def choose_trial_to_run(self, tune_controller):
        return self.inner.choose_trial_to_run(tune_controller)

    def debug_string(self) -> str:
        return f"{self.inner.debug_string()} (members of packed trials judged one by one)"


# ----------------------------------------------------------------------------- the channel


class PackStops:
    """Which members of which pack trial the scheduler stopped (a named Ray actor: the scheduler
    runs in the driver, the pack trial anywhere in the cluster)."""

    def __init__(self):
        self._stopped: dict[str, set[int]] = {}

    def stop(self, trial_id: str, members: list[int]) -> None:
        self._stopped.setdefault(trial_id, set()).update(members)

    def stopped(self, trial_id: str) -> list[int]:
        return sorted(self._stopped.get(trial_id, ()))


def start_stops(experiment: str) -> tuple[str, object]:
    """(name, handle) of the PackStops actor of one experiment (a study directory's search cell:
    the same name when the study resumes), on the driver's node (a lost worker node must not take
    the scheduler's decisions with it). It lives as long as the driver."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    name = f"avstudy-pack-stops-{hashlib.sha1(experiment.encode()).hexdigest()[:16]}"
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    actor = ray.remote(num_cpus=0)(PackStops).options(
        name=name, namespace=STOPS_NAMESPACE, scheduling_strategy=here, get_if_exists=True).remote()
    return name, actor
