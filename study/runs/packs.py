"""Packed trials in a Ray stage (issue 21): jobs of one shape run as one Tune trial that trains
them as one stacked model (study/training/packed.py), then come apart again into one record per
member, so results.parquet and curves.parquet hold each member as its own trial.

- `pack_jobs`: the rerun stage's grid (configuration x seed x fold) grouped into packs of up to
  `resources.pack` jobs that differ only in seed and fold, where `train_refusal` finds nothing in
  the way; anything else stays one job per trial. A member keeps its config as it is, its own
  batch order included: the seeds of a pack stay independent replicates of the training's
  randomness (`batch_order: shared`, which pads less, makes them share one order: opt-in).
- `pack_loop`: the trainable's loop for a pack job; reports each member's epoch metrics under
  `m<k>/`, a member's last ones again every epoch after it left (stopped, diverged).
- `unpack_records`: a pack's TrialRecord -> K member records, as unpacked trials would give.

A member's `trial_time_s` is its share of the pack's time: each epoch's time split evenly over
the members that trained in it. `wall_time_s` (Tune's time) is the pack's.
"""
from __future__ import annotations

import itertools
import json
import math
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

from study.runs.results import TrialRecord
from study.runs.worker import (
    CKPT_ROWS,
    FoldRun,
    TrialContext,
    _epoch_report,
    _finish,
    _rows_json,
    _session,
    _tag,
    trial_folds,
)
from study.training.config import config_from_flat, objective_key

MEMBER = re.compile(r"^m(\d+)/(.+)$")
STOPS_NAMESPACE = "avstudy"  # of the PackStops actor that carries a scheduler's stops to a pack
VARIED = ("seed",)  # what the rerun stage's members of one pack differ in (and the fold, in meta)


def pack_jobs(jobs: list[dict], size: int, ctx: TrialContext,
              slots: int | None = None) -> tuple[list[dict], str | None]:
    """(jobs with packs, why nothing was packed or None). A pack job is the first member's job
    with "pack": [member jobs] (so code that reads job["flat"] sees a real configuration).

    A group of n jobs becomes ceil(n / size) packs of near-equal size (9 jobs, size 4: 3+3+3,
    not 4+4+1: the trials of a stage finish together). CPU trials (no GPU share) pack no more
    than fills the `slots` trials that run at once: a pack uses its one trial's CPUs, so fewer
    trials than slots would leave cores idle."""
    if size < 2 or ctx.workers != 1:
        return jobs, None if size < 2 else "resources.workers > 1 (a pack trains in one process)"
    size = cpu_capped(size, len(jobs), slots, ctx)
    groups: dict[str, list[dict]] = {}
    for job in jobs:
        key = json.dumps({k: v for k, v in job["flat"].items() if k not in VARIED}, sort_keys=True)
        groups.setdefault(key, []).append(job)
    out, refused = [], None
    for members in groups.values():
        sizes = near_equal(len(members), size)
        for lo, hi in zip([0, *itertools.accumulate(sizes)], itertools.accumulate(sizes)):
            chunk = members[lo:hi]
            why = _refusal(chunk, ctx) if len(chunk) > 1 else "one job"
            if why is None:
                out.append({**chunk[0], "pack": chunk})
            else:
                refused = refused if len(chunk) == 1 else why
                out.extend(chunk)
    return out, refused


def cpu_capped(size: int, n: int, slots: int | None, ctx: TrialContext) -> int:
    """The pack size for n jobs: CPU trials (no GPU share) pack no more than fills the `slots`
    trials that run at once (a pack uses its one trial's CPUs)."""
    if slots and not ctx.gpus_per_worker:
        return min(size, max(1, math.ceil(n / slots)))
    return size


def near_equal(n: int, size: int) -> list[int]:
    """n jobs in ceil(n / size) packs of near-equal size (9 at size 4: 3+3+3, not 4+4+1)."""
    k = math.ceil(n / size)
    bounds = [round(i * n / k) for i in range(k + 1)]
    return [hi - lo for lo, hi in zip(bounds, bounds[1:])]


def _refusal(chunk: list[dict], ctx: TrialContext) -> str | None:
    from study.training.packed import train_refusal

    if any(len(trial_folds(ctx, j.get("meta", {}))) != 1 for j in chunk):
        return "a member trains several folds"
    # the members share one dataset, so its dimensions cannot tell them apart (not read here: on
    # a cluster the driver may hold no copy of the data)
    cfgs = [config_from_flat(j["flat"], preset=ctx.model_preset) for j in chunk]
    return train_refusal(cfgs)


# ----------------------------------------------------------------------------- the trial


class _Pack:
    """A pack trial's state: the members' runs, their latest reports, times and errors."""

    def __init__(self, config: dict, ctx: TrialContext):
        from study.training.packed import PackedSession

        self.ctx = ctx
        self.jobs = config["job"]["pack"]
        self.runs = [FoldRun(trial_folds(ctx, j.get("meta", {}))[0], None) for j in self.jobs]
        for r, j in zip(self.runs, self.jobs):
            r.s = _session(j["flat"], ctx, r.fold, None)
        self.session = PackedSession([r.s for r in self.runs])
        self.latest: list[dict] = [{} for _ in self.jobs]
        self.time = [0.0] * len(self.jobs)
        self.errors: dict[int, str] = {}
        self.own_time = 0.0

    def epoch(self) -> None:
        t0 = time.perf_counter()
        trained = []
        for k, (r, res) in enumerate(zip(self.runs, self.session.run_epoch())):
            if res is None:
                continue
            trained.append(k)
            if isinstance(res, Exception):
                self.errors[k] = f"{type(res).__name__}: {res}"
                continue
            r.info, r.rows, r.score = res.info, _tag(res.rows, r), res.score
            if r.s.best_epoch == r.s.epoch:
                r.best_rows = r.rows
            report = _epoch_report([r], self.ctx)
            if k in self.session.left:  # stopped this epoch: its final evaluation
                report.update(_finish([r], self.ctx))
            self.latest[k] = report
        spent = time.perf_counter() - t0
        self.own_time += spent
        for k in trained:
            self.time[k] += spent / len(trained)

    def metrics(self) -> dict:
        out = {"epoch": max(r.s.epoch for r in self.runs), "trial_time_s": self.own_time,
               "pack_size": len(self.runs), "finished": self.session.done}
        for condition, metric, _ in self.ctx.objectives:  # the pack's line in `avstudy status`
            key = objective_key(condition, metric)
            values = [m[key] for m in self.latest if key in m]
            out[key] = sum(values) / len(values) if values else float("nan")
        for k, report in enumerate(self.latest):
            member = {**report, "trial_time_s": self.time[k]}
            if k in self.errors:
                member["error"] = self.errors[k]
            out.update({f"m{k}/{key}": v for key, v in member.items()})
        return out

    def save(self, d: Path) -> None:
        self.session.save(d)
        state = {"best_rows": [json.loads(_rows_json(r.best_rows)) for r in self.runs],
                 "latest": self.latest, "time": self.time, "errors": self.errors,
                 "own_time": self.own_time}
        (d / CKPT_ROWS).write_text(json.dumps(state, default=float))

    def restore(self, d: Path) -> None:
        self.session.restore(d)
        state = json.loads((d / CKPT_ROWS).read_text())
        for r, rows in zip(self.runs, state["best_rows"]):
            r.best_rows = rows
        self.latest, self.time = state["latest"], state["time"]
        self.errors = {int(k): v for k, v in state["errors"].items()}
        self.own_time = float(state["own_time"])


def pack_loop(config: dict, ctx: TrialContext, report: Callable, get_checkpoint: Callable,
              make_checkpoint: Callable) -> None:
    """Train a pack job epoch by epoch until every member has left; one report per epoch with
    every member's metrics, a checkpoint every ctx.checkpoint_every epochs and at the end."""
    torch.set_num_threads(ctx.threads)
    pack = _Pack(config, ctx)
    checkpoint = get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            pack.restore(Path(d))
    stopped = scheduler_stops(config, ctx)
    while not pack.session.done:
        for k in stopped():  # a search pack's members the scheduler stopped: they leave
            pack.session.leave(k, "stopped by the scheduler")
        if pack.session.done:
            break
        pack.epoch()
        metrics = pack.metrics()
        with tempfile.TemporaryDirectory() as d:
            ckpt = None
            if pack.session.done or metrics["epoch"] % ctx.checkpoint_every == 0:
                pack.save(Path(d))
                ckpt = make_checkpoint(d)
            report(metrics, checkpoint=ckpt)


def scheduler_stops(config: dict, ctx: TrialContext) -> Callable[[], list[int]]:
    """For a search pack (study/runs/search_packs.py): () -> the members its scheduler stopped so
    far; [] for other packs, or where the PackStops actor cannot be reached (the pack then
    trains on, as Tune would stop it whole)."""
    trial_id = config["job"].get("trial")
    if not ctx.pack_stops or not trial_id:
        return lambda: []
    import ray

    try:
        actor = ray.get_actor(ctx.pack_stops, namespace=STOPS_NAMESPACE)
    except ValueError:
        return lambda: []

    def stopped() -> list[int]:
        try:
            return ray.get(actor.stopped.remote(trial_id), timeout=60)
        except (ray.exceptions.RayError, TimeoutError):  # the actor is gone: train on
            return []

    return stopped


# ----------------------------------------------------------------------------- results


def unpack_records(records: list[TrialRecord]) -> list[TrialRecord]:
    """Every pack record -> one record per member (tune_id `<pack id>-m<k>`); others as they are."""
    out = []
    for rec in records:
        members = rec.config.get("job", {}).get("pack")
        out.extend(_members(rec, members) if members else [rec])
    return out


def member_metrics(result: dict, k: int) -> dict:
    """Member k's view of a pack trial's result: the pack's own keys, its `m<k>/` keys on top."""
    prefix = f"m{k}/"
    own = {key[len(prefix):]: v for key, v in result.items() if key.startswith(prefix)}
    return {**{key: v for key, v in result.items() if not MEMBER.match(key)}, **own}


def _members(rec: TrialRecord, members: list[dict]) -> list[TrialRecord]:
    out = []
    for k, job in enumerate(members):
        last = {**member_metrics(rec.last, k), "pack_id": rec.tune_id}
        error = last.pop("error", None) or rec.error
        out.append(TrialRecord(tune_id=f"{rec.tune_id}-m{k}", config={"job": job}, last=last,
                               error=error, curves=_member_curves(rec.curves, k)))
    return out


def _member_curves(curves: pd.DataFrame | None, k: int) -> pd.DataFrame | None:
    """Member k's columns of the pack's per-epoch results (its epochs only), with Tune's own."""
    if curves is None:
        return None
    prefix = f"m{k}/"
    mine = {c: c[len(prefix):] for c in curves.columns if c.startswith(prefix)}
    shared = [c for c in curves.columns if not MEMBER.match(c) and c not in mine.values()]
    frame = pd.concat([curves[shared], curves[list(mine)].rename(columns=mine)], axis=1)
    if "epoch" not in frame.columns:
        return None
    frame = frame[frame["epoch"].notna()].drop_duplicates("epoch", keep="first")  # after it left
    return frame.reset_index(drop=True) if len(frame) else None
