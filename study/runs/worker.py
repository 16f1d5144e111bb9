"""The per-worker loop of a trial, without Ray (Ray passes its report and checkpoint functions in):
`worker_loop` trains one configuration epoch by epoch (one fold, or several in lockstep),
reporting once per epoch with a checkpoint; study/runs/packs.py trains a pack of them.
`TrialContext` is what every trial of one stage shares.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from study.training.config import EPOCH_INFO, config_from_flat, objective_key, objective_value, unwrap_job

CKPT_ROWS = "best_rows.json"  # beside session.pt in every checkpoint

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
    pack: int = 1  # resources.pack: a trial's folds in lockstep train as packs of up to this many
    pack_stops: str | None = None  # search packs: the PackStops actor (study/runs/search_packs.py)

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
    checkpoint = get_checkpoint()
    own_time = _resume(runs, checkpoint)
    packs = _fold_packs(runs, ctx, wrap_model, checkpoint)
    while not all(r.s.should_stop for r in runs):
        t0 = time.perf_counter()
        for r in runs:
            r.info = None
        if packs:
            for pack, members in packs:
                _packed_step(pack, members)
        else:
            for r in runs:
                if not r.s.should_stop:
                    _step(r)
        metrics = _epoch_report(runs, ctx)
        done = all(r.s.should_stop for r in runs)
        if done:
            metrics.update(_finish(runs, ctx))
        own_time += time.perf_counter() - t0
        metrics["trial_time_s"] = own_time  # the trial's own train + eval time (no overhead)
        save = rank == 0 and (done or metrics["epoch"] % ctx.checkpoint_every == 0)
        _report_with_checkpoint(runs, own_time, metrics, report, make_checkpoint, save, packs)


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


def _fold_packs(runs: list[FoldRun], ctx: TrialContext, wrap_model, checkpoint) -> list:
    """A trial's folds in lockstep as packs of up to ctx.pack (one stacked model each,
    study/training/packed.py), or [] where they train one by one: one fold, pack 1, DDP
    (wrap_model), or a configuration a pack refuses. Folds that had stopped stay out."""
    if len(runs) < 2 or ctx.pack < 2 or wrap_model is not None:
        return []
    from study.training.packed import PackedSession, train_refusal

    if train_refusal([r.s.cfg for r in runs]):
        return []
    packs = []
    for i, start in enumerate(range(0, len(runs), ctx.pack)):
        members = runs[start:start + ctx.pack]
        pack = PackedSession([r.s for r in members])
        for k, r in enumerate(members):
            if r.s.should_stop:
                pack.leave(k, "stopped")
        if checkpoint is not None:  # a checkpoint of an unpacked run has none: fresh moments
            with checkpoint.as_directory() as d:
                if (Path(d) / f"fold-pack{i}.pt").exists():
                    pack.restore_stack(Path(d) / f"fold-pack{i}.pt")
        packs.append((pack, members))
    return packs


def _packed_step(pack, members: list[FoldRun]) -> None:
    """One epoch of a pack of folds: each fold's results as _step gives them."""
    for r, res in zip(members, pack.run_epoch()):
        if res is None:
            continue
        if isinstance(res, Exception):  # TrialDiverged: the trial fails, as unpacked
            raise res
        r.info, r.score = res.info, res.score
        r.rows = _tag(res.rows, r)
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
                            save: bool, packs: list = ()) -> None:
    """Report; with `save` (rank 0, every failure.checkpoint_every epochs and the last) attach
    the checkpoint: the latest state for recovery, the best weights for selection."""
    with tempfile.TemporaryDirectory() as d:
        checkpoint = None
        if save:  # other ranks, and the epochs between checkpoints, report metrics only
            for r in runs:
                r.s.save(_ckpt_dir(d, runs, r))
            for i, (pack, _) in enumerate(packs):  # the stack's optimiser state
                pack.save_stack(Path(d) / f"fold-pack{i}.pt")
            best_rows = [row for r in runs for row in r.best_rows]
            (Path(d) / CKPT_ROWS).write_text(json.dumps(
                {"best_rows": json.loads(_rows_json(best_rows)), "own_time": own_time}))
            checkpoint = make_checkpoint(d)
        report(metrics, checkpoint=checkpoint)
