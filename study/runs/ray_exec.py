"""Ray execution of trials, in the Ray Train V2 shape (worker / driver / tuner).

- `worker_loop`: the per-worker training function: a `Session` trained epoch by epoch, dev
  evaluation after each epoch, one report (metrics + checkpoint) per epoch.
- `train_worker` + `train_driver`: the Ray Train path. The Tune trial runs `train_driver`, which
  builds a `TorchTrainer` (ScalingConfig: workers x CPUs/GPUs) whose workers run `train_worker`
  (`prepare_model` = DDP); `TuneReportCallback` forwards rank 0's reports to Tune.
- `inline_trial`: the same loop run directly inside the Tune trial (no worker group start-up),
  used when a trial needs one worker and no GPU.
- `make_trainable`: the Tune trainable with resources that cannot deadlock: a driver holds no
  CPU or GPU (only a token of memory), so only workers compete for the cluster, and the number
  of concurrent trials is computed from `ray.cluster_resources()` (study.runs.spec.max_concurrent).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from study.fsio import atomic_write_json
from study.runs.storage import StudyMirror, join_uri
from study.training.config import EPOCH_INFO, config_from_flat, objective_key, objective_value, unwrap_job

CKPT_ROWS = "best_rows.json"  # beside session.pt in every checkpoint
DRIVER_RESOURCES = {"CPU": 0, "memory": 2**20}  # {"CPU": 0} alone is rejected by Tune

@dataclass(frozen=True)
class TrialContext:
    """What every trial of one stage shares (the config it searches arrives separately)."""

    data_dir: str
    model_preset: str
    objectives: tuple[tuple[str, str, str], ...]  # (condition, metric, mode)
    evaluate_test: bool = False  # final evaluation on test from the best dev epoch (rerun stage)
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    train_storage: str = ""  # RunConfig.storage_path of the Ray Train runs (train mode)
    synth: tuple[str, str, int] | None = None  # regenerate the synthetic corpus where missing
    worker_retries: int = 0  # Ray Train FailureConfig.max_failures (spec failure.worker_retries)
    checkpoint_every: int = 1  # epochs between checkpoints; the last epoch always saves one
    folds: Any = None  # dataset.folds (FoldsSpec.to_dict(), entries absolute), None: one partition
    trial_folds: tuple[int, ...] = (0,)  # folds a trial trains when its job names none (search)
    folds_dir: str | None = None  # where the driver's folds are (made again there if missing)

    @property
    def threads(self) -> int:
        return max(1, int(self.cpus_per_worker))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrialContext:
        d = dict(d)
        d["objectives"] = tuple(tuple(o) for o in d["objectives"])
        d["synth"] = tuple(d["synth"]) if d.get("synth") else None
        d["trial_folds"] = tuple(d.get("trial_folds", (0,)))
        return cls(**d)


# ----------------------------------------------------------------------------- data


def ensure_data(ctx: TrialContext) -> str:
    """The dataset directory; a synthetic corpus is generated once per node (study.data.generate)."""
    if ctx.synth is None:
        return str(ctx.data_dir)
    from study.data.generate import ensure_corpus

    preset, scale, seed = ctx.synth
    return str(ensure_corpus(ctx.data_dir, preset=preset, scale=scale, seed=seed))


def fold_data_dir(ctx: TrialContext, fold: int) -> str:
    """The dataset directory of one fold (a one-partition study: the dataset itself, fold 0)."""
    data_dir = ensure_data(ctx)
    if ctx.folds is None:
        return data_dir
    from study.data.folds import ensure_folds, folds_from_dict

    return ensure_folds(folds_from_dict(ctx.folds), data_dir, ctx.folds_dir)[fold]


def trial_folds(ctx: TrialContext, meta: dict) -> tuple[int, ...]:
    """A rerun job names its fold; a search trial trains ctx.trial_folds (first, or all)."""
    return (int(meta["fold"]),) if "fold" in meta else ctx.trial_folds


# ----------------------------------------------------------------------------- metrics


def objective_values(rows: list[dict], objectives) -> dict[str, float]:
    """Objective values from dev rows for Tune/Optuna; NaN (e.g. constant predictions) becomes
    the worst value of its metric so Optuna always receives a number."""
    out = {}
    for condition, metric, mode in objectives:
        value = objective_value(rows, condition, metric, mode)
        out[objective_key(condition, metric)] = value if math.isfinite(value) else (
            -1.0 if mode == "max" else 1e6)
    return out


def _rows_json(rows: list[dict]) -> str:
    return json.dumps(rows, default=float)


# ----------------------------------------------------------------------------- per-worker loop


@dataclass
class FoldRun:
    """One fold's session inside a trial, its best-epoch dev rows and this epoch's results."""
    fold: int
    s: Any  # study.training.session.Session
    best_rows: list = dataclasses.field(default_factory=list)
    rows: list = dataclasses.field(default_factory=list)
    info: dict | None = None  # this epoch's training info; None when the fold had stopped
    score: float = float("nan")


def _tag(rows: list[dict], run: FoldRun) -> list[dict]:
    """Rows of one fold: `fold`, and `best_epoch` (per fold when a trial trains several)."""
    return [{**r, "fold": run.fold, "best_epoch": run.s.best_epoch} for r in rows]


def worker_loop(config: dict, ctx: TrialContext, report: Callable, get_checkpoint: Callable,
                make_checkpoint: Callable, wrap_model: Callable | None = None,
                rank: int = 0) -> None:
    """Train one configuration, reporting once per epoch; resumes from the latest checkpoint.

    A trial trains one fold, or (a search on the mean over folds) every fold in lockstep: each
    epoch, every fold not yet stopped trains one epoch and is evaluated on its dev; the report
    holds the mean over folds (objectives of each fold's best epoch) and each fold's rows."""
    torch.set_num_threads(ctx.threads)
    flat, meta = unwrap_job(config)  # meta (parent trial, searched names, fold) is for results
    runs = [FoldRun(f, _session(flat, ctx, f, wrap_model)) for f in trial_folds(ctx, meta)]
    own_time = _resume(runs, get_checkpoint())
    while not all(r.s.should_stop for r in runs):
        t0 = time.perf_counter()
        for r in runs:
            r.info = None
            if not r.s.should_stop:
                _step(r)
        metrics = _epoch_report(runs, ctx)
        done = all(r.s.should_stop for r in runs)
        if done:
            metrics.update(_finish(runs, ctx))
        own_time += time.perf_counter() - t0
        metrics["trial_time_s"] = own_time  # the trial's own train + eval time (no overhead)
        save = rank == 0 and (done or metrics["epoch"] % ctx.checkpoint_every == 0)
        _report_with_checkpoint(runs, own_time, metrics, report, make_checkpoint, save)


def is_pack(config: dict) -> bool:
    """A packed job (study/runs/packs.py): several members trained as one stacked model."""
    return "pack" in config.get("job", {})


def _session(flat: dict, ctx: TrialContext, fold: int, wrap_model):
    from study.data.dataset import open_dataset
    from study.training.session import Session

    data_dir = fold_data_dir(ctx, fold)
    cfg = config_from_flat(flat, preset=ctx.model_preset, data_dir=data_dir)
    # the study validated every frame once (stages.sweep); trials skip that scan
    return Session(cfg, data_dir, wrap_model=wrap_model,
                   dataset=open_dataset(data_dir, check_values=False))


def _step(r: FoldRun) -> None:
    """One epoch of one fold: train, evaluate dev, keep the best epoch's rows."""
    r.info, rows, r.score = r.s.run_epoch()
    r.rows = _tag(rows, r)
    if r.s.best_epoch == r.s.epoch:
        r.best_rows = r.rows


def _ckpt_dir(d, runs: list[FoldRun], r: FoldRun) -> Path:
    """A one-fold trial's checkpoint is laid out as before folds; several folds: fold<i>/."""
    return Path(d) if len(runs) == 1 else Path(d) / f"fold{r.fold}"


def _resume(runs: list[FoldRun], checkpoint) -> float:
    if checkpoint is None:
        return 0.0
    with checkpoint.as_directory() as d:
        for r in runs:
            r.s.restore(_ckpt_dir(d, runs, r))
        saved = json.loads((Path(d) / CKPT_ROWS).read_text())
    for r in runs:  # rows of a checkpoint written before folds carry no fold: the only one
        r.best_rows = [row for row in saved["best_rows"] if row.get("fold", r.fold) == r.fold]
    return float(saved["own_time"])


def _mean(values) -> float:
    values = [float(v) for v in values]
    return sum(values) / len(values) if values else float("nan")


def _epoch_report(runs: list[FoldRun], ctx: TrialContext) -> dict:
    from study.training.fit import curve_metrics

    ran = [r for r in runs if r.info is not None]
    curves = [curve_metrics(r.rows, r.s.cfg) for r in ran]
    objectives = [objective_values(r.best_rows, ctx.objectives) for r in runs]
    cfg = runs[0].s.cfg
    return {
        "epoch": max(r.s.epoch for r in runs),
        "train_loss": _mean(r.info["train_loss"] for r in ran),
        "samples": sum(r.info["samples"] for r in ran),
        **{k: _mean(r.info[k] for r in ran if k in r.info) for k in EPOCH_INFO},
        "normalize": cfg.normalize,
        "score": _mean(r.score for r in ran), "best_score": _mean(r.s.best_score for r in runs),
        "best_epoch": max(r.s.best_epoch for r in runs), "folds_trained": len(runs),
        **{k: _mean(c[k] for c in curves) for k in curves[0]},
        **{k: _mean(o[k] for o in objectives) for k in objectives[0]},
        "best_rows": _rows_json([row for r in runs for row in r.best_rows]), "finished": False,
        "config_json": json.dumps(cfg.to_flat(), sort_keys=True, default=list),
        "recipe_json": json.dumps(cfg.recipe(), sort_keys=True),
        "protocol_json": json.dumps(cfg.protocol.to_dict(), sort_keys=True),
    }


def _finish(runs: list[FoldRun], ctx: TrialContext) -> dict:
    """Last epoch: mark finished; from each fold's selected (best dev) checkpoint, evaluate the
    frame-level condition families on dev once (added to the reported best_rows), and in the
    rerun stage every condition on test once."""
    best, test = [], []
    for r in runs:
        r.s.restore_best()
        best += r.best_rows + _tag(r.s.evaluate_families("dev"), r)
        if ctx.evaluate_test:
            test += _tag(r.s.evaluate("test", extended=True), r)
    out = {"finished": True, "best_rows": _rows_json(best)}
    if ctx.evaluate_test:
        out["test_rows"] = _rows_json(test)
    return out


def _report_with_checkpoint(runs: list[FoldRun], own_time, metrics, report, make_checkpoint,
                            save: bool) -> None:
    """Report; with `save` (rank 0, every failure.checkpoint_every epochs and the last) attach
    the checkpoint: the latest state for recovery, the best weights for selection."""
    with tempfile.TemporaryDirectory() as d:
        checkpoint = None
        if save:  # other ranks, and the epochs between checkpoints, report metrics only
            for r in runs:
                r.s.save(_ckpt_dir(d, runs, r))
            best_rows = [row for r in runs for row in r.best_rows]
            (Path(d) / CKPT_ROWS).write_text(json.dumps(
                {"best_rows": json.loads(_rows_json(best_rows)), "own_time": own_time}))
            checkpoint = make_checkpoint(d)
        report(metrics, checkpoint=checkpoint)


# ----------------------------------------------------------------------------- Ray Train path


def train_worker(loop_config: dict) -> None:
    """Ray Train per-worker function (runs in every worker of the TorchTrainer)."""
    import ray.train
    import ray.train.torch

    ctx = TrialContext.from_dict(loop_config["ctx"])
    if is_pack(loop_config["config"]):  # one worker: no DDP
        from study.runs.packs import pack_loop

        return pack_loop(loop_config["config"], ctx, report=ray.train.report,
                         get_checkpoint=ray.train.get_checkpoint,
                         make_checkpoint=ray.train.Checkpoint.from_directory)
    worker_loop(loop_config["config"], ctx, report=ray.train.report,
                get_checkpoint=ray.train.get_checkpoint,
                make_checkpoint=ray.train.Checkpoint.from_directory,
                wrap_model=_prepare_ddp,
                rank=ray.train.get_context().get_world_rank())


def _prepare_ddp(model):
    """DDP that tolerates parameters without a gradient in a step: a batch with no paired
    sample leaves the fusion unused, and the three-pass schedule uses one branch per step."""
    import ray.train.torch

    return ray.train.torch.prepare_model(
        model, parallel_strategy_kwargs={"find_unused_parameters": True})


def train_driver(config: dict, ctx: TrialContext) -> None:
    """Tune trainable: one TorchTrainer run per trial, reporting back through TuneReportCallback.

    The run name is the Tune trial id, so a restored trial finds its Train run (and latest
    checkpoint) again under the same storage path.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = tune.get_context().get_trial_id()
    per_worker = {"CPU": ctx.cpus_per_worker}
    if ctx.gpus_per_worker:
        per_worker["GPU"] = ctx.gpus_per_worker
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"config": config, "ctx": ctx.to_dict()},
        scaling_config=ScalingConfig(num_workers=ctx.workers, use_gpu=ctx.gpus_per_worker > 0,
                                     resources_per_worker=per_worker),
        run_config=RunConfig(name=f"train-{trial_id}", storage_path=ctx.train_storage,
                             callbacks=[TuneReportCallback()],
                             checkpoint_config=CheckpointConfig(num_to_keep=1),
                             failure_config=FailureConfig(max_failures=ctx.worker_retries)),
    )
    trainer.fit()


def inline_trial(config: dict, ctx: TrialContext) -> None:
    """Tune trainable: the per-worker loop inside the trial itself (1 worker, no worker group)."""
    if is_pack(config):
        from study.runs.packs import pack_loop

        return pack_loop(config, ctx, report=tune.report, get_checkpoint=tune.get_checkpoint,
                         make_checkpoint=tune.Checkpoint.from_directory)
    worker_loop(config, ctx, report=tune.report, get_checkpoint=tune.get_checkpoint,
                make_checkpoint=tune.Checkpoint.from_directory)


def make_trainable(ctx: TrialContext, inline: bool) -> Any:
    """The Tune trainable of a stage, with its resources (see the module docstring)."""
    if inline:
        res = {"CPU": ctx.cpus_per_worker}
        if ctx.gpus_per_worker:
            res["GPU"] = ctx.gpus_per_worker
        return tune.with_resources(tune.with_parameters(inline_trial, ctx=ctx), res)
    return tune.with_resources(tune.with_parameters(train_driver, ctx=ctx), DRIVER_RESOURCES)


# ----------------------------------------------------------------------------- tuner


class ProgressCallback(tune.Callback):
    """Writes a live progress file per experiment (read by `avstudy status`); with a remote
    study, pushes the changed study files (progress, the optuna.db snapshot) at every change
    of a trial's status, so a new head resumes with the searcher's trials."""

    def __init__(self, path: str, score_key: str, mode: str, label: dict,
                 mirror: StudyMirror | None = None):
        self.path, self.score_key, self.mode, self.label = path, score_key, mode, label
        self.mirror = mirror
        self.trials: dict[str, dict] = {}

    def setup(self, **info) -> None:
        if os.path.exists(self.path):  # restored experiment: keep what was recorded
            self.trials = json.loads(Path(self.path).read_text()).get("trials", {})

    def _set(self, trial, push: bool = True, **fields) -> None:
        entry = self.trials.setdefault(trial.trial_id, {"status": "pending", "score": None})
        entry.update(fields)
        atomic_write_json(self.path, {**self.label, "score_key": self.score_key,
                                      "mode": self.mode, "trials": self.trials})
        if self.mirror is not None and push:
            self.mirror.push()

    def on_trial_start(self, iteration, trials, trial, **info):
        _, meta = unwrap_job(trial.config)
        self._set(trial, status="running", **({"fold": meta["fold"]} if "fold" in meta else {}))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._set(trial, push=False, status="running", score=result.get(self.score_key),
                  epoch=result.get("epoch"))

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        self._set(trial, status="done" if last.get("finished") else "early_stopped")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._set(trial, status="failed")

    def on_trial_recover(self, iteration, trials, trial, **info):
        restarts = self.trials.get(trial.trial_id, {}).get("restarts", 0) + 1
        self._set(trial, status="retrying", restarts=restarts)  # from its last checkpoint


def fit_tuner(trainable, *, name: str, storage_path: str, resume: bool,
              tune_config: tune.TuneConfig, param_space: dict | None = None,
              callbacks: list | None = None, verbose: int = 1,
              retries: int = 0) -> tune.ResultGrid:
    """Run (or, with resume, restore and continue) one Tune experiment; returns its ResultGrid."""
    path = join_uri(storage_path, name)
    if resume and tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_errored=True,
                                   param_space=param_space)
    else:
        run_config = tune.RunConfig(name=name, storage_path=storage_path, verbose=verbose,
                                    callbacks=callbacks or [],
                                    # a failed trial restarts from its last checkpoint
                                    failure_config=tune.FailureConfig(max_failures=retries),
                                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1))
        # reuse trial actors: a new trial skips the process start and the torch imports (~3 s)
        tune_config = dataclasses.replace(tune_config, reuse_actors=True)
        tuner = tune.Tuner(trainable, param_space=param_space or {}, tune_config=tune_config,
                           run_config=run_config)
    return tuner.fit()


def trials_of(grid: tune.ResultGrid) -> list[tuple[Any, Any]]:
    """(Trial, Result) pairs of a ResultGrid (trial ids and configs even for trials that failed
    before their first report)."""
    trials = grid._experiment_analysis.trials  # same order as the grid's results
    return list(zip(trials, grid))


def worker_env() -> dict:
    """runtime_env that lets Ray workers import this project when it runs from a source
    checkout rather than an installed package (an installed package needs nothing)."""
    root = str(Path(__file__).resolve().parents[2])  # the checkout (study/runs/ray_exec.py)
    if "site-packages" in root:
        return {}
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    return {"env_vars": {"PYTHONPATH": path}}


def init_ray(num_cpus: int | None = None) -> None:
    """Connect to the running cluster (`ray up` / `ray start`, or RAY_ADDRESS), or start a
    local instance; a no-op when Ray is already initialised (tests, notebooks)."""
    if not ray.is_initialized():
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                 runtime_env=worker_env() or None)
