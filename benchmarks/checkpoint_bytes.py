"""Checkpoint bytes written per trial-epoch at paper size (VAVL, wav2vec2-large 1024 + EffNet-B2
1408 inputs, d_model from the paper preset), before and after the checkpoint economy.

Before: every epoch saved the latest model, the AdamW state and a separate copy of the best
weights. After: the best weights are stored once when the latest epoch is the best
(`best_is_latest`), and a checkpoint is written every `failure.checkpoint_every` epochs (plus the
last). What recovery needs (latest model + optimizer) and what selection needs (best weights,
no optimizer state) is always kept.

    .venv/bin/python benchmarks/checkpoint_bytes.py [--epochs 20] [--improving 0.4]
"""

from __future__ import annotations

import argparse
import io

import torch

from model.build import build_model
from study.training.config import config_from_flat
from study.training.session import Session, make_optimizer


def paper_session(preset: str = "paper") -> Session:
    """A Session of the paper preset with a populated AdamW state (no data needed)."""
    s = Session.__new__(Session)
    s.cfg = config_from_flat({"preset": preset, "fusion": "vavl"})
    s.model = build_model(s.cfg.model)
    s.opt = make_optimizer(s.model, s.cfg)
    for p in s.model.parameters():
        p.grad = torch.zeros_like(p)
    s.opt.step()  # exp_avg / exp_avg_sq exist from the first step on
    s.epoch, s.best_epoch, s.best_score, s.history = 2, 2, 0.5, [{"epoch": 1}, {"epoch": 2}]
    s.grad_history = [(1.0, 1.0), (1.0, 1.0)]  # per epoch (G_audio, G_video), as log_grad_norms keeps
    s.best_model = {k: v.detach().clone() for k, v in s.model.state_dict().items()}
    return s


def nbytes(state: dict) -> int:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.tell()


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20, help="epochs of one trial")
    ap.add_argument("--improving", type=float, default=0.4,
                    help="share of epochs that improve the dev score (best = latest)")
    ap.add_argument("--quick", action="store_true", help="the tiny preset (a smoke run)")
    return ap.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    s = paper_session("tiny" if args.quick else "paper")
    params = sum(p.numel() for p in s.model.parameters())
    improving = nbytes(s.state_dict())  # best_epoch == epoch: best weights stored once
    old_improving = nbytes({**s.state_dict(), "best_model": s.best_model})  # the old layout
    s.best_epoch = 1
    other = nbytes(s.state_dict())  # latest and best differ: both kept
    n_imp = round(args.epochs * args.improving)
    before = args.epochs * old_improving  # old: every epoch, best copy always present
    print(f"{s.cfg.preset} preset: {params / 1e6:.2f} M parameters ({params * 4 / 2**20:.1f} MiB fp32)")
    print(f"checkpoint when the epoch improves: before {old_improving / 2**20:.1f} MiB, "
          f"after {improving / 2**20:.1f} MiB; otherwise {other / 2**20:.1f} MiB (both)")
    print(f"per trial-epoch over {args.epochs} epochs ({n_imp} improving):")
    print(f"  before (every epoch, best copy always)       {before / args.epochs / 2**20:8.1f} MiB")
    after = {}
    for every in (1, 2, 5):
        saved = [e for e in range(1, args.epochs + 1) if e % every == 0 or e == args.epochs]
        # improving epochs spread evenly; a checkpoint on one of them stores the weights once
        imp = {round((i + 1) * args.epochs / max(n_imp, 1)) for i in range(n_imp)}
        after[every] = sum(improving if e in imp else other for e in saved)
        print(f"  after, failure.checkpoint_every={every:<2d}            "
              f"{after[every] / args.epochs / 2**20:8.1f} MiB  ({after[every] / before:.0%} of before)")
    return {"before": before, "after": after}


def summary(res: dict) -> list[dict]:
    """For benchmarks/run_all.py: bytes written per trial, after / before."""
    return [{"measure": "checkpoint bytes per trial-epoch", "alternatives": f"checkpoint_every={k} / before",
             "ratio": v / res["before"], "target": "< 1 (report)", "met": None} for k, v in res["after"].items()]


if __name__ == "__main__":
    run(parse_args())
