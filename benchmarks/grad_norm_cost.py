"""What logging the per-modality gradient norms (MissBench's MLI, `log_grad_norms`) costs in
training time, at paper sizes (VAVL defaults: 1024-d audio at 50 Hz, 1408-d video at 30 fps,
~2.5 s utterances, d_model 512), batch 8, the real training loop (`Session.train_epoch`).

Two sessions of the same configuration and seed, logging off and on, train epoch after epoch
alternately in one process (same batches, same threads); the ratio of their mean epoch times is
the cost. Target: under 5 % (issue 24). OGM-GE's extra work (the per-modality scores and the
modulation) is measured beside it, as information.

    python benchmarks/grad_norm_cost.py [--rounds 3] [--utts 32] [--threads 2] [--quick]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train_step import make_data  # noqa: E402  (the paper-size corpus of the throughput benchmark)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="epochs per variant (alternating)")
    ap.add_argument("--utts", type=int, default=32, help="training utterances")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="tiny preset, one round (a smoke run)")
    return ap.parse_args(argv)


VARIANTS = {"off": {"log_grad_norms": False}, "on": {"log_grad_norms": True},
            "on+ogm_ge": {"log_grad_norms": True, "ogm_ge": True}}


def run(args: argparse.Namespace) -> dict:
    from study.training.config import config_from_flat
    from study.training.session import Session

    torch.set_num_threads(args.threads)
    preset, rounds = ("tiny", 1) if args.quick else ("vavl_sizes", args.rounds)
    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(Path(tmp), 8 if args.quick else args.utts)
        sessions = {name: Session(config_from_flat({"preset": preset, "batch_size": 8, "schedule": "fused",
                                                    "max_epochs": rounds + 1, **kw}, data_dir=data), data)
                    for name, kw in VARIANTS.items()}
        for s in sessions.values():  # warm-up epoch (allocator, first-call costs)
            s.train_epoch()
        times = {name: [] for name in sessions}
        for _ in range(rounds):
            for name, s in sessions.items():
                t0 = time.perf_counter()
                s.train_epoch()
                times[name].append(time.perf_counter() - t0)
    mean = {k: statistics.mean(v) for k, v in times.items()}
    for name, t in mean.items():
        print(f"{name:10s} {t:8.3f} s/epoch  ({t / mean['off'] - 1:+.1%} vs off)")
    return {"preset": preset, "mean_s": mean, "times": times}


def summary(res: dict) -> list[dict]:
    """For benchmarks/run_all.py: training time with gradient-norm logging over without."""
    m = res["mean_s"]
    return [{"measure": f"train epoch time, log_grad_norms on / off ({res['preset']})",
             "alternatives": "on vs off", "ratio": m["on"] / m["off"], "target": "< 1.05",
             "met": m["on"] / m["off"] < 1.05},
            {"measure": f"train epoch time, OGM-GE + logging / off ({res['preset']})",
             "alternatives": "on+ogm_ge vs off", "ratio": m["on+ogm_ge"] / m["off"], "target": "info",
             "met": None}]


if __name__ == "__main__":
    summary(run(parse_args()))
