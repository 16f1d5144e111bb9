"""Stages of a study: search per (fusion, train_missing_rate) cell -> top-k re-run over seeds ->
final test evaluation under every missing condition.

Each stage is one Tune experiment under `<ray storage>/<stage name>`; when it finishes its rows go
to `STUDY_DIR/parts/` and a done-marker to `STUDY_DIR/stages/<name>.done`, so `--resume` skips
finished stages and restores the interrupted one with `Tuner.restore` (trials that finished are
kept, unfinished ones continue from their last checkpoint, the Optuna study in
`STUDY_DIR/optuna.db` carries on). Model selection (top-k) reads dev rows only; the test split
is evaluated once per re-run trial, from its best dev epoch, after training has finished.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from study.fsio import atomic_write_text
from study.runs import results as R
from study.runs.selection import base_flat, order_top, search_seed, search_seeds
from study.runs.spec import SpecError, StudySpec, data_location, max_concurrent, study_paths, study_remote
from study.runs.storage import StudyLock, StudyMirror, join_uri, optuna_storage
from study.training.config import objective_value, unwrap_job

os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")  # experiment state fresh for --resume
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def _marker(study_dir: Path, stage: str) -> Path:
    return study_dir / "stages" / f"{stage}.done"


def _mark_done(study_dir: Path, stage: str, summary: dict) -> None:
    atomic_write_text(_marker(study_dir, stage), json.dumps(summary))


def prepare_study_dir(spec: StudySpec, study_dir: Path, resume: bool,
                      mirror: StudyMirror | None = None) -> None:
    """Create STUDY_DIR with spec.yaml; refuse to overwrite or to resume a different spec. With a
    remote study, a new head's empty working copy is first pulled from the remote (--resume)."""
    spec_file = study_dir / "spec.yaml"
    if mirror is not None and not spec_file.exists() and mirror.holds_study():
        if not resume:
            raise SpecError(f"{mirror.remote} already holds a study; pass --resume to continue it "
                            "or change the spec's name or storage to start a new one")
        _pull(mirror, study_dir)
    if spec_file.exists():
        if not resume:
            raise SpecError(f"{study_dir} already holds a study; pass --resume to continue it "
                            "or --out to start a new one")
        try:
            saved = yaml.safe_load(spec_file.read_text())
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise SpecError(f"{spec_file}: unreadable ({type(exc).__name__}); restore it from the "
                            "spec this study started with, then resume") from None
        if saved != spec.to_dict():
            raise SpecError(f"{spec_file}: the spec differs from the one this study started "
                            "with; resume with the same spec")
    atomic_write_text(spec_file, yaml.safe_dump(spec.to_dict(), sort_keys=False))


def _pull(mirror: StudyMirror, study_dir: Path) -> None:
    """Bring a remote study onto this head. Ray's restored searcher and callbacks name the
    working copy's path, so it must be the one the study ran in."""
    ran_in = json.loads(mirror.read("study.json") or b"{}").get("work_dir")
    if ran_in and Path(ran_in) != study_dir:
        raise SpecError(f"{mirror.remote} ran with its working copy at {ran_in}; resume with "
                        f"--out {ran_in} (Ray's restored searcher state points there)")
    mirror.pull()


# ----------------------------------------------------------------------------- trial configs


def trial_context(spec: StudySpec, ray_storage: str, stage: str, evaluate_test: bool):
    from study.runs.worker import TrialContext

    data_dir, synth = data_location(spec)
    r = spec.resources
    return TrialContext(**fold_context(spec, data_dir), data_dir=data_dir, model_preset=spec.model_preset,
                        objectives=tuple((o.condition, o.metric, o.mode) for o in spec.objectives),
                        evaluate_test=evaluate_test, workers=r.workers,
                        cpus_per_worker=r.cpus_per_worker, gpus_per_worker=r.gpus_per_worker,
                        train_storage=join_uri(ray_storage, "train-runs", stage), synth=synth,
                        worker_retries=spec.failure.worker_retries,
                        checkpoint_every=spec.failure.checkpoint_every, pack=r.pack_size)


def fold_context(spec: StudySpec, data_dir: str) -> dict:
    """TrialContext's folds: the spec's (listed paths made absolute: trials run elsewhere), the
    folds a search trial trains (the first, or every one for search_folds: mean), and where the
    driver keeps them (every trial uses that path, whatever its own $AVSTUDY_CACHE)."""
    from study.data.folds import folds_home

    folds = spec.dataset.folds
    if folds is None:
        return {}
    if folds.entries:
        folds = dataclasses.replace(folds, entries=tuple(
            str(Path(e).expanduser().resolve()) for e in folds.entries))
    search = tuple(range(folds.n)) if spec.search_folds == "mean" else (0,)
    home = (str(folds_home(folds, data_dir)) if (Path(data_dir) / "manifest.parquet").exists()
            else None)  # a synthetic corpus not generated yet: the driver asks again after
    return {"folds": folds.to_dict(), "trial_folds": search, "folds_dir": home}


def study_folds(spec: StudySpec) -> tuple[int, ...]:
    """Every fold of the study ((0,) without dataset.folds)."""
    return tuple(range(spec.dataset.folds.n)) if spec.dataset.folds is not None else (0,)


def _search_alg(spec: StudySpec, space, study_dir: Path, cell_index: int, slug: str,
                cell: str | None = None, packs=None):
    import optuna

    from study.runs.schedulers import TruthfulOptunaSearch
    from study.runs.search_packs import PackedSearch

    seed = spec.searcher.seed + cell_index
    if spec.searcher.kind == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=spec.searcher.n_startup_trials,
                                             constant_liar=spec.searcher.constant_liar)
    storage = optuna_storage(spec.optuna_storage, study_dir)
    keys = [o.key for o in spec.objectives]
    modes = [o.mode for o in spec.objectives]
    single = len(keys) == 1
    kind, extra = ((TruthfulOptunaSearch, {}) if packs is None
                   else (PackedSearch, {"packs": packs, "preset": spec.model_preset}))
    return kind(space=space, metric=keys[0] if single else keys,
                mode=modes[0] if single else modes, sampler=sampler,
                study_name=f"{spec.name}/search/{slug}", storage=storage, metric_names=keys,
                trial_attrs={"cell": cell or slug, "stage": "search"}, **extra)


def close_orphans(study_dir: Path, study_name: str, url: str | None = None) -> int:
    """Mark FAIL the Optuna trials still RUNNING after their cell's experiment finished.

    Only a driver killed between Optuna's `ask` and Tune's next experiment snapshot leaves
    such a trial: Tune never knew it, so it never ran and nothing will ever `tell` it.
    """
    import optuna

    storage = optuna_storage(url, study_dir)
    study = optuna.load_study(study_name=study_name, storage=storage)
    orphans = [t for t in study.get_trials(deepcopy=False)
               if t.state == optuna.trial.TrialState.RUNNING]
    for t in orphans:
        storage.set_trial_system_attr(t._trial_id, "avstudy_orphan", True)
        storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
    return len(orphans)


def _scheduler(spec: StudySpec):
    if spec.scheduler.kind == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler

    if spec.scheduler.kind == "moasha":
        from study.runs.schedulers import MOASHA

        return MOASHA([o.key for o in spec.objectives], [o.mode for o in spec.objectives], time_attr="epoch",
                      max_t=spec.budget.max_epochs, grace_period=spec.scheduler.grace_period,
                      reduction_factor=spec.scheduler.reduction_factor)

    o = spec.objectives[0]
    return ASHAScheduler(time_attr="epoch", metric=o.key, mode=o.mode,
                         max_t=spec.budget.max_epochs, grace_period=spec.scheduler.grace_period,
                         reduction_factor=spec.scheduler.reduction_factor)


# ----------------------------------------------------------------------------- stages


class Sweep:
    """One study run: the spec, where it lives, and what the cluster can hold at once."""

    def __init__(self, spec: StudySpec, study_dir: Path, ray_storage: str, resume: bool,
                 verbose: int = 1, mirror: StudyMirror | None = None):
        import ray

        from study.runs.spec import check_resources

        self.spec, self.dir, self.ray_storage = spec, study_dir, ray_storage
        self.resume, self.verbose, self.mirror = resume, verbose, mirror
        cluster = ray.cluster_resources()
        if not spec.resources.max_concurrent_trials:  # else: autoscaling, nodes come later
            check_resources(spec, cluster)
        self.concurrency = max_concurrent(spec, cluster)
        self.inline = spec.resources.inline
        self.stops_actor = None  # a packed search cell's PackStops (study/runs/search_packs.py)

    def _fit(self, name: str, ctx, tune_config, param_space=None, label=None):
        from ray import tune

        from study.runs.ray_exec import ProgressCallback, fit_tuner, make_trainable, trials_of
        from study.runs.tracking import tracking_callbacks

        o = self.spec.objectives[0]
        progress = self.dir / "progress" / f"{name}.json"
        progress.parent.mkdir(parents=True, exist_ok=True)
        cb = ProgressCallback(str(progress), o.key, o.mode, label or {"experiment": name}, self.mirror)
        tc = tune.TuneConfig(max_concurrent_trials=self.concurrency, **tune_config)
        grid = fit_tuner(make_trainable(ctx, self.inline), name=name,
                         storage_path=self.ray_storage, resume=self.resume, tune_config=tc,
                         param_space=param_space, callbacks=[cb, *tracking_callbacks(self.spec, name)],
                         verbose=self.verbose,
                         retries=self.spec.failure.trial_retries)
        return [R.record_from_tune(t, res) for t, res in trials_of(grid)]

    def search_cell(self, index: int, cell: dict) -> None:
        from ray import tune

        from search_spaces import combine
        from study.runs.packs import unpack_records

        spec = self.spec
        slug = R.cell_slug(*R.cell_of(cell))
        name = f"search-{slug}"
        if _marker(self.dir, name).exists():
            return
        fixed = base_flat(spec, cell, spec.budget.max_epochs, search_seed(spec))
        ctx = trial_context(spec, self.ray_storage, name, evaluate_test=False)
        label = {"stage": "search", "cell": R.cell_name(*R.cell_of(cell))}
        if spec.searcher.kind == "grid":
            jobs = [{"flat": {**fixed, "seed": seed}, "meta": {}}
                    for seed in search_seeds(spec)]
            records = self._fit(name, ctx, {"num_samples": 1, "scheduler": _scheduler(spec)},
                                {"job": tune.grid_search(jobs)}, label)
        else:
            space = combine(spec.spaces, fixed, data_conditions=spec.search_data_conditions,
                            search=spec.search)
            packs, ctx, scheduler = self._search_packs(space, ctx, slug)
            search = _search_alg(spec, space, self.dir, index, slug, cell=label["cell"], packs=packs)
            records = unpack_records(self._fit(name, ctx, {"num_samples": spec.budget.trials_per_cell,
                                                           "search_alg": search,
                                                           "scheduler": scheduler}, label=label))
            close_orphans(self.dir, f"{spec.name}/search/{slug}", spec.optuna_storage)
        searched = lambda rec: sorted(set(unwrap_job(rec.config)[0]) - set(fixed))
        rows, curves = [], []
        for rec in records:
            tid = f"{name}-{rec.tune_id}"
            rows += R.trial_rows(rec, spec=spec, stage="search", trial_id=tid,
                                 parent_trial_id=None, searched=searched(rec))
            curves.append(R.curve_rows(rec, study=spec.name, stage="search", trial_id=tid))
        R.write_part(self.dir, name, rows, curves)
        _mark_done(self.dir, name, _summary(records))
        R.write_results(self.dir)
        self.push()

    def _search_packs(self, space, ctx, slug: str):
        """(SearchPacks or None, the stage's TrialContext, its scheduler): where the cell's search
        packs (study/runs/search_packs.py), a scheduler that judges every member on its own."""
        from study.runs.search_packs import PackScheduler, search_pack_plan, start_stops

        packs, why_not = search_pack_plan(self.spec, ctx, space, self.concurrency)
        scheduler = _scheduler(self.spec)
        if why_not and self.verbose:
            print(f"search {slug}: trials train alone, not packed: {why_not}")
        if packs is None or scheduler is None:
            return packs, ctx, scheduler
        name, self.stops_actor = start_stops(f"{self.dir.resolve()}/search-{slug}")  # held: alive
        return packs, dataclasses.replace(ctx, pack_stops=name), PackScheduler(scheduler, name)

    def push(self) -> None:
        """Copy the study's changed files to its remote (a no-op for a local study)."""
        if self.mirror is not None:
            self.mirror.push()

    def rerun_and_final(self) -> None:
        from ray import tune

        from study.runs.packs import pack_jobs, unpack_records

        spec = self.spec
        if _marker(self.dir, "rerun").exists() and _marker(self.dir, "final").exists():
            return
        search = R.read_parts(self.dir, "results")
        jobs = rerun_jobs(spec, search[search["stage"] == "search"] if len(search) else search)
        records = []
        if jobs:
            ctx = trial_context(spec, self.ray_storage, "rerun", evaluate_test=True)
            jobs, why_not = pack_jobs(jobs, spec.resources.pack_size, ctx, slots=self.concurrency)
            if why_not and self.verbose:
                print(f"rerun: some jobs train alone, not packed: {why_not}")
            records = unpack_records(self._fit("rerun", ctx, {"num_samples": 1},
                                               {"job": tune.grid_search(jobs)}, {"stage": "rerun"}))
        rerun_rows, final_rows, curves = [], [], []
        for rec in records:
            meta = rec.config["job"]["meta"]
            searched = meta["searched"]
            rid, fid = f"rerun-{rec.tune_id}", f"final-{rec.tune_id}"
            common = dict(spec=spec, parent_trial_id=meta["parent_trial_id"], searched=searched)
            rerun_rows += R.trial_rows(rec, stage="rerun", trial_id=rid, **common)
            final_rows += R.trial_rows(rec, stage="final", trial_id=fid, rows_key="test_rows",
                                       split="test", **common)
            curves.append(R.curve_rows(rec, study=spec.name, stage="rerun", trial_id=rid))
        R.write_part(self.dir, "rerun", rerun_rows, curves)
        _mark_done(self.dir, "rerun", _summary(records))
        R.write_part(self.dir, "final", final_rows, [])
        _mark_done(self.dir, "final", {"trials": len(records)})
        R.write_results(self.dir)
        self.push()


def _summary(records) -> dict:
    status = [R.trial_status(r) for r in records]
    return {s: status.count(s) for s in ("completed", "early_stopped", "failed")}


def select_top_k(spec: StudySpec, search: pd.DataFrame) -> list[tuple[str, pd.Series]]:
    """Per cell, the top_k search trials on dev (never test): Pareto rank over the objectives,
    then the first objective, then the configuration (study/runs/selection.py)."""
    ok = search[(search["status"] != "failed") & (search["split"] == "dev")]
    picks = []
    for _, cell_rows in ok.groupby("cell", sort=False):
        ids, firsts, values = [], [], []
        for tid, rows in cell_rows.groupby("trial_id", sort=True):
            ids.append(tid)
            firsts.append(rows.iloc[0])
            values.append([_signed(fold_mean(rows, o), o.mode) for o in spec.objectives])
        ties = [f"{first['config']}\0{tid}" for tid, first in zip(ids, firsts)]
        order = order_top(np.asarray(values, float).reshape(len(ids), -1), ties)
        picks += [(ids[i], firsts[i]) for i in order[:spec.top_k]]
    return picks


def fold_mean(rows: pd.DataFrame, o) -> float:
    """An objective's value on one trial's dev rows: the mean over the folds it trained (one
    fold: its value)."""
    folds = rows.groupby("fold", sort=True) if "fold" in rows.columns else [(0, rows)]
    values = [objective_value(r.to_dict("records"), o.condition, o.metric, o.mode)
              for _, r in folds]
    return float(np.mean(values))


def _signed(value: float, mode: str) -> float:
    return value if mode == "max" else -value


def rerun_jobs(spec: StudySpec, search: pd.DataFrame) -> list[dict]:
    """Grid of (top-k configuration x seed) jobs for the rerun stage."""
    if not len(search):
        return []
    epochs = spec.budget.rerun_max_epochs or spec.budget.max_epochs
    jobs = []
    for tid, row in select_top_k(spec, search):
        flat = json.loads(row["config"])
        searched = [c[len("param__"):] for c in row.index
                    if c.startswith("param__") and pd.notna(row[c])]
        if int(row["seed"]) in spec.seeds:  # a search made before seeds were kept apart
            raise ValueError(f"search trial {tid} ran with seed {int(row['seed'])}, one of the "
                             f"rerun seeds {list(spec.seeds)}: its rerun would not be fresh")
        for seed in spec.seeds:  # fresh: search trials use seeds above these (selection.py)
            for fold in study_folds(spec):  # each selected configuration x seed x fold
                meta = {"parent_trial_id": tid, "searched": searched}
                if spec.dataset.folds is not None:
                    meta["fold"] = fold
                jobs.append({"flat": {**flat, "seed": seed, "max_epochs": epochs}, "meta": meta})
    return jobs


# ----------------------------------------------------------------------------- entry points


def sweep(spec: StudySpec, out: str | Path | None = None, resume: bool = False,
              verbose: int = 1) -> Path:
    """Run (or resume) every stage of a study; returns STUDY_DIR. One driver per STUDY_DIR: a
    second sweep on a directory in use raises StudyInUse (study/runs/storage.py). With a URI
    `storage`, the study's files are mirrored there as they are written."""
    study_dir, ray_storage = study_paths(spec, out)
    remote = study_remote(spec)
    mirror = StudyMirror(study_dir, remote) if remote else None
    with StudyLock(study_dir):
        return _sweep_locked(spec, study_dir, ray_storage, resume, verbose, mirror)


def check_folds_once(spec: StudySpec, ctx) -> None:
    """Make the study's folds (no feature is copied) and check them: each opens, none shares a
    speaker (session) between its splits or tests one another fold tests."""
    if spec.dataset.folds is None:
        return
    from study.data.folds import check_study_folds, folds_from_dict
    from study.runs.worker import fold_data_dir

    dirs = [fold_data_dir(ctx, f) for f in study_folds(spec)]
    check_study_folds(folds_from_dict(ctx.folds), dirs)


def resolve_gpus_once(spec: StudySpec, ray_storage: str, verbose: int):
    """`gpus_per_worker: auto` -> a number, from a memory probe on a GPU (study/runs/plan.py)."""
    import ray

    from study.runs.plan import probe_memory_on_gpu
    from study.runs.spec import resolve_gpus

    ctx = trial_context(spec, ray_storage, "data", evaluate_test=False)
    spec, note = resolve_gpus(spec, ray.cluster_resources(), lambda: probe_memory_on_gpu(spec, ctx))
    if note and verbose:
        print(f"resources.gpus_per_worker: auto -> {note['gpus_per_worker']:g} ({note['why']})")
    return spec, note


def _sweep_locked(spec: StudySpec, study_dir: Path, ray_storage: str, resume: bool,
                  verbose: int, mirror: StudyMirror | None) -> Path:
    from study.data.dataset import check_splits, open_dataset
    from study.runs.baselines import run_baselines
    from study.runs.ray_exec import init_ray
    from study.runs.worker import ensure_data

    prepare_study_dir(spec, study_dir, resume, mirror)
    init_ray()
    data_dir = ensure_data(trial_context(spec, ray_storage, "data", evaluate_test=False))
    check_splits(open_dataset(data_dir))  # validate every file and frame once, before any trial starts
    check_folds_once(spec, trial_context(spec, ray_storage, "data", evaluate_test=False))
    spec, gpu_auto = resolve_gpus_once(spec, ray_storage, verbose)
    study = Sweep(spec, study_dir, ray_storage, resume=resume, verbose=verbose, mirror=mirror)
    R.write_study_json(study_dir, spec, "running", gpu_auto=gpu_auto or {})
    study.push()
    try:
        if run_baselines(spec, study_dir, data_dir):  # the probes' rows, once per study
            study.push()
        for i, cell in enumerate(spec.cells.items()):
            study.search_cell(i, cell)
        study.rerun_and_final()
    except BaseException:
        R.write_study_json(study_dir, spec, "interrupted")
        try:
            study.push()
        except Exception as err:  # the bucket unreachable: never hide why the study stopped
            print(f"avstudy: could not copy the interrupted study to {mirror.remote}: {err}", file=sys.stderr)
        raise
    R.write_results(study_dir)
    R.write_study_json(study_dir, spec, "finished")
    study.push()
    return study_dir
