"""Sweep overhead: inline trials vs Ray Train worker groups, the same short trials, one run.

For each mode, runs the same grid of short trials through Tune and prints
  ratio = study wall time / sum of the trials' own training time (train + dev evaluation,
          measured inside the per-worker loop),
and the same ratio normalised by the number of concurrent trials (1.0 = no overhead).

    python benchmarks/sweep_overhead.py --trials 4 --epochs 2               # seconds-long trials
    python benchmarks/sweep_overhead.py --trials 4 --epochs 12 --scale small  # ~1-minute trials

Target: inline overhead (per_slot - 1) <= 10% for one-minute trials.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def trial_jobs(n: int, epochs: int) -> list[dict]:
    """n tiny configurations differing in seed and learning rate."""
    base = {"fusion": "vavl", "d_model": 16, "n_heads": 2, "enc_layers": 1, "shared_layers": 1,
            "batch_size": 32, "max_epochs": epochs, "patience": epochs,
            "train_missing_rate": 0.5}
    return [{"flat": {**base, "seed": i, "lr": 1e-3 * (1 + i % 3)}, "meta": {}} for i in range(n)]


def run_mode(inline: bool, jobs: list[dict], data_dir: str, storage: str, cpus: int) -> dict:
    from ray import tune

    from study.runs.ray_exec import fit_tuner, make_trainable
    from study.runs.worker import TrialContext

    ctx = TrialContext(data_dir=data_dir, model_preset="tiny",
                       objectives=(("av", "macro_f1", "max"),),
                       train_storage=f"{storage}/train-runs")
    name = "inline" if inline else "ray-train"
    start = time.perf_counter()
    grid = fit_tuner(make_trainable(ctx, inline), name=name, storage_path=storage, resume=False,
                     tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=cpus),
                     param_space={"job": tune.grid_search(jobs)}, verbose=0)
    wall = time.perf_counter() - start
    errors = [r.error for r in grid if r.error is not None]
    if errors:
        raise RuntimeError(f"{name}: {len(errors)} trial(s) failed: {errors[0]}")
    own = sum(float(r.metrics["trial_time_s"]) for r in grid)
    return {"mode": name, "trials": len(jobs), "wall_s": wall, "own_s": own,
            "ratio": wall / own, "ratio_per_slot": wall / (own / min(cpus, len(jobs)))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--cpus", type=int, default=2, help="Ray CPUs = concurrent 1-CPU trials")
    p.add_argument("--scale", default="tiny", choices=["tiny", "small"],
                   help="synthetic corpus size (small: ~5 s per epoch on one CPU)")
    args = p.parse_args(argv)

    import ray

    from study.data.generate import make_corpus
    from study.runs.ray_exec import worker_env

    with tempfile.TemporaryDirectory() as tmp:
        data = str(make_corpus(Path(tmp) / "data", scale=args.scale, progress=False))
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
                 runtime_env=worker_env() or None)
        jobs = trial_jobs(args.trials, args.epochs)
        rows = [run_mode(inline, jobs, data, str(Path(tmp) / "ray"), args.cpus)
                for inline in (True, False)]
        ray.shutdown()
    print(f"{args.trials} trials x {args.epochs} epochs ({args.scale} synth), {args.cpus} CPUs, "
          f"1 CPU per trial")
    print(f"{'mode':<10} {'wall_s':>8} {'own_s':>8} {'wall/own':>9} {'per_slot':>9}")
    for r in rows:
        print(f"{r['mode']:<10} {r['wall_s']:8.1f} {r['own_s']:8.1f} {r['ratio']:9.2f} "
              f"{r['ratio_per_slot']:9.2f}")
    print(f"ray-train / inline wall time: {rows[1]['wall_s'] / rows[0]['wall_s']:.2f}x")
    mean_trial = rows[0]["own_s"] / args.trials
    overhead = rows[0]["ratio_per_slot"] - 1
    print(f"inline overhead: {overhead:.1%} at {mean_trial:.0f} s per trial "
          f"(target <= 10% for one-minute trials)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
