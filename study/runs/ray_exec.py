"""Ray execution of trials, in the Ray Train V2 shape (worker / driver / tuner).

- `study.runs.worker.worker_loop` (no Ray in it): the per-worker training function: a `Session`
  trained epoch by epoch, dev evaluation after each epoch, one report (metrics + checkpoint) per
  epoch; a packed job runs `study.runs.packs.pack_loop` instead.
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
import os
from pathlib import Path
from typing import Any

import ray
from ray import tune

from study.fsio import atomic_write_json
from study.runs.storage import StudyMirror, join_uri
from study.runs.worker import TrialContext, is_pack, worker_loop

DRIVER_RESOURCES = {"CPU": 0, "memory": 2**20}  # {"CPU": 0} alone is rejected by Tune


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
        # a pack trial (study/runs/packs.py) stands for its members: their number and folds
        job = trial.config.get("job")
        jobs = (job.get("pack") or [job]) if job else []  # a searcher's flat config: no job
        folds = sorted({j["meta"]["fold"] for j in jobs if "fold" in j.get("meta", {})})
        self._set(trial, status="running", members=len(jobs) or 1, **({"folds": folds} if folds else {}))

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
