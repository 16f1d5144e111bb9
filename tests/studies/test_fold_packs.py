"""A search trial on the mean over folds trains its folds in lockstep; with resources.pack > 1
they train as one stacked model (study/runs/worker.py `_fold_packs`). Reported per epoch: what the
folds one by one report, within floating point (CPU, dropout 0), and a resumed trial goes on
from the stack's optimiser state as an uninterrupted one does."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch

from study.runs.selection import base_flat
from study.runs.spec import spec_from_dict
from study.runs.stages import trial_context
from study.runs.worker import worker_loop

SPEC = {
    "name": "fp", "dataset": {"synth": {"preset": "crema-d", "scale": "tiny", "seed": 0},
                              "folds": {"by": "speaker", "k": 3, "seed": 0}},
    "search_folds": "mean", "model_preset": "tiny", "spaces": [], "searcher": {"kind": "grid"},
    "fixed": {"dropout": 0.0, "head_dropout": 0.0, "batch_size": 32, "lr": 0.003, "patience": 2},
    "cells": {"fusion": ["vavl"], "train_missing_rate": [0.3]},
    "objectives": [{"metric": "macro_f1", "condition": "av", "mode": "max"}],
}
KEYS = ("train_loss", "score", "best_score", "av_macro_f1", "epoch", "folds_trained", "samples")


class _Ckpt:
    def __init__(self, d: Path):
        self.d = d

    def as_directory(self):
        from contextlib import nullcontext

        return nullcontext(str(self.d))


def _run(ctx, flat, tmp: Path, resume_from: Path | None = None, stop_after: int | None = None):
    reports, saved = [], tmp / "ckpt"

    def report(metrics, checkpoint=None):
        reports.append({k: metrics[k] for k in KEYS})
        if stop_after is not None and len(reports) == stop_after:
            raise KeyboardInterrupt  # the node is lost after this epoch's checkpoint

    def make_checkpoint(d):
        shutil.rmtree(saved, ignore_errors=True)
        shutil.copytree(d, saved)
        return _Ckpt(saved)

    get = (lambda: _Ckpt(resume_from)) if resume_from else (lambda: None)
    try:
        worker_loop({"job": {"flat": flat, "meta": {}}}, ctx, report, get, make_checkpoint)
    except KeyboardInterrupt:
        pass
    return reports, saved


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("foldpacks")
    spec = spec_from_dict(SPEC)
    ctx = trial_context(spec, str(tmp / "ray"), "search", evaluate_test=False)
    ctx = dataclasses.replace(ctx, folds_dir=str(tmp / "folds"))
    flat = base_flat(spec, {"fusion": "vavl", "train_missing_rate": 0.3}, 4, 2)
    return ctx, flat, tmp


def test_packed_folds_report_what_folds_one_by_one_report(setup, monkeypatch):
    ctx, flat, tmp = setup
    torch.set_num_threads(1)
    spy = []
    import study.training.packed as packed

    real = packed.PackedSession.run_epoch
    monkeypatch.setattr(packed.PackedSession, "run_epoch", lambda self: spy.append(1) or real(self))
    alone, _ = _run(dataclasses.replace(ctx, pack=1), flat, tmp / "a")
    assert not spy
    together, _ = _run(dataclasses.replace(ctx, pack=4), flat, tmp / "b")
    assert spy and len(together) == len(alone) >= 2          # the same epochs (early stopping too)
    for a, b in zip(alone, together):
        assert b["folds_trained"] == 3 and b["epoch"] == a["epoch"] and b["samples"] == a["samples"]
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        for k in ("score", "best_score", "av_macro_f1"):
            assert b[k] == pytest.approx(a[k], abs=0.02), k


def test_a_fold_pack_resumes_from_its_checkpoint_as_if_never_stopped(setup):
    ctx, flat, tmp = setup
    ctx = dataclasses.replace(ctx, pack=2)                  # 3 folds: packs of 2 and 1
    torch.set_num_threads(1)
    whole, _ = _run(ctx, flat, tmp / "w")
    first, saved = _run(ctx, flat, tmp / "r", stop_after=2)
    assert sorted(p.name for p in saved.glob("fold-pack*.pt")) == ["fold-pack0.pt", "fold-pack1.pt"]
    rest, _ = _run(ctx, flat, tmp / "r2", resume_from=saved)
    resumed = first + rest
    assert [r["epoch"] for r in resumed] == [r["epoch"] for r in whole]
    for a, b in zip(whole, resumed):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)


def test_rerun_packs_are_near_equal_and_fill_the_cpu_slots(setup):
    """pack_jobs: 9 seeds of one configuration at pack 4 are 3+3+3 (4+4+1 would leave the last
    trial running alone); on CPU, 2 slots and 4 jobs pack 2+2, not one pack of 4 on one core."""
    from study.runs.packs import pack_jobs

    ctx, flat, _ = setup
    jobs = lambda n: [{"flat": {**flat, "seed": s}, "meta": {"fold": 0}} for s in range(n)]  # noqa: E731
    sizes = lambda packed: sorted(len(j.get("pack", [j])) for j in packed)  # noqa: E731
    assert sizes(pack_jobs(jobs(9), 4, ctx)[0]) == [3, 3, 3]
    assert sizes(pack_jobs(jobs(5), 4, ctx)[0]) == [2, 3]
    assert sizes(pack_jobs(jobs(4), 4, ctx, slots=2)[0]) == [2, 2]
    assert sizes(pack_jobs(jobs(4), 4, ctx, slots=8)[0]) == [1, 1, 1, 1]   # every job its own core
    gpu = dataclasses.replace(ctx, gpus_per_worker=0.25)                    # GPU: packing is the gain
    assert sizes(pack_jobs(jobs(4), 4, gpu, slots=8)[0]) == [4]
    # members differ in seed only: another configuration is another pack
    mixed = jobs(2) + [{"flat": {**flat, "seed": 9, "lr": 0.01}, "meta": {"fold": 0}}]
    assert sizes(pack_jobs(mixed, 4, ctx)[0]) == [1, 2]
