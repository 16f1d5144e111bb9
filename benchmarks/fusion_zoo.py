"""Fusion strategy zoo at the paper's sizes: parameters and training throughput, side by side.

One fused training step = forward + loss + backward + AdamW step on the same seeded batch
(audio 1024-d at 50 Hz, video 1408-d at 30 fps, ~3 s utterances, batch 8, CPU). Strategies are
measured round-robin in one process (round r times every strategy once) so machine drift hits all
of them alike; the table reports the best (and median) step time and the ratio to "vavl".

    .venv/bin/python benchmarks/fusion_zoo.py                 # paper sizes, ~2-3 minutes
    .venv/bin/python benchmarks/fusion_zoo.py --preset tiny   # seconds, for a smoke run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from random_batches import random_batch  # noqa: E402

from model import build_model, model_config  # noqa: E402
from model.registry import FUSIONS  # noqa: E402


def strategies() -> tuple[str, ...]:
    """Every registered strategy (model/registry.py), read when the benchmark runs."""
    return tuple(FUSIONS)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="paper", choices=["paper", "tiny"])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seconds", type=float, default=3.0, help="mean utterance length")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed rounds on a small batch (2 x 0.5 s): allocates AdamW state, warms kernels")
    p.add_argument("--steps", type=int, default=3, help="timed rounds (at most)")
    p.add_argument("--budget-s", type=float, default=150.0,
                   help="start no timed round after this many seconds (at least one round runs)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def make_batch(cfg, batch_size: int, seconds: float, seed: int):
    """~seconds-long utterances (+-15%) at 50 Hz audio / 30 fps video, every sample paired."""
    audio_len = (int(seconds * 50 * 0.85), int(seconds * 50 * 1.15))
    video_len = (int(seconds * 30 * 0.85), int(seconds * 30 * 1.15))
    return random_batch(cfg, batch_size, audio_len=audio_len, video_len=video_len, seed=seed)


def train_step(model, opt, batch) -> float:
    """One fused training step -> wall seconds."""
    t0 = time.perf_counter()
    losses = model.loss(model(batch), batch)
    opt.zero_grad(set_to_none=True)
    losses["total"].backward()
    opt.step()
    return time.perf_counter() - t0


def run(args: argparse.Namespace) -> list[dict]:
    torch.set_num_threads(args.threads)
    setups = {}
    for name in strategies():
        torch.manual_seed(args.seed)
        cfg = model_config(args.preset, fusion=name)
        model = build_model(cfg).train()
        setups[name] = (model, torch.optim.AdamW(model.param_groups(0.01), lr=1e-4))
    cfg = model_config(args.preset)
    small = make_batch(cfg, 2, 0.5, args.seed)
    batch = make_batch(cfg, args.batch_size, args.seconds, args.seed)
    for _ in range(args.warmup):
        for model, opt in setups.values():
            train_step(model, opt, small)
    t0 = time.perf_counter()
    names = strategies()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.steps):
        if r > 0 and time.perf_counter() - t0 > args.budget_s:
            break
        order = names[r % len(names):] + names[:r % len(names)]  # rotate
        for name in order:
            model, opt = setups[name]
            times[name].append(train_step(model, opt, batch))
    rows = []
    for name, (model, _) in setups.items():
        step = min(times[name])  # best of N, as timeit: other load only ever adds time
        rows.append({"fusion": name, "params": sum(p.numel() for p in model.parameters()),
                     "fusion_params": sum(p.numel() for p in model.fusion_parameters()),
                     "step_s": step, "median_s": statistics.median(times[name]),
                     "samples_per_s": args.batch_size / step,
                     "timed_steps": len(times[name])})
    return rows


def format_table(rows: list[dict]) -> str:
    base = next(r for r in rows if r["fusion"] == "vavl")
    head = (f"{'fusion':<9}{'params':>12}{'fusion params':>15}{'best s':>9}{'median s':>10}"
            f"{'samples/s':>11}{'params/vavl':>13}{'speed/vavl':>12}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['fusion']:<9}{r['params']:>12,}{r['fusion_params']:>15,}{r['step_s']:>9.3f}"
                     f"{r['median_s']:>10.3f}{r['samples_per_s']:>11.2f}{r['params'] / base['params']:>13.3f}"
                     f"{r['samples_per_s'] / base['samples_per_s']:>12.3f}")
    lines.append("best s / median s: wall time of one fused training step (forward + loss + backward + "
                 "AdamW) over the timed rounds; samples/s and speed/vavl use the best")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    t0 = time.perf_counter()
    rows = run(args)
    print(f"preset={args.preset} batch={args.batch_size} ~{args.seconds:g}s utterances "
          f"threads={args.threads} timed rounds={rows[0]['timed_steps']} "
          f"torch={torch.__version__}")
    print(format_table(rows))
    print(f"total wall time {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
