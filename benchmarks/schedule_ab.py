"""`three_pass` vs `detached`: the same model, corpus and seeds, only the schedule differs.

`detached` (model/registry.py) is meant to give VAVL's gradient paths in one pass; `three_pass`
is the official code's visual step, audio step and fusion-only step (docs/fidelity.md V15).
This benchmark measures what the difference costs or buys: it generates the realistic
`crema-d` synthetic corpus (docs/synthetic.md) once, trains the tiny VAVL under each schedule
for every seed (same initialisation, same batch order, same recipe otherwise: the project's
AdamW, clip 1, a fixed number of epochs, checkpoint on dev av macro-F1), and compares test
macro-F1 per condition paired by seed: mean difference (detached - three_pass) with a Student-t
95% interval over the seeds, and the wall time of one training epoch under each schedule.

    python benchmarks/schedule_ab.py            # small scale, 6 seeds x 6 epochs (~8 min on 2 cores)
    python benchmarks/schedule_ab.py --quick    # tiny scale, 5 seeds x 3 epochs (~1 min)
    python benchmarks/schedule_ab.py --seeds 10 --epochs 8 --set lr=0.001
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NAMED = ("av", "audio_only", "video_only")
SCHEDULES = ("three_pass", "detached")  # the difference is detached - three_pass
BASE = {"preset": "tiny", "fusion": "vavl", "lr": 0.003, "batch_size": 32}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny scale, 5 seeds x 3 epochs")
    p.add_argument("--scale", help="synthetic scale (default: small, tiny with --quick)")
    p.add_argument("--seeds", type=int, help="paired seeds (default 6, 5 with --quick; at least 2)")
    p.add_argument("--epochs", type=int, help="epochs per run, no early stopping (default 6, 3 with --quick)")
    p.add_argument("--data", type=Path, help="an existing dataset directory instead of generating one")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a key of both runs, e.g. lr=0.001 (repeatable)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    args.seeds = args.seeds or (5 if args.quick else 6)
    args.epochs = args.epochs or (3 if args.quick else 6)
    if args.seeds < 2:
        p.error("--seeds: a paired interval needs at least 2 seeds")
    return args


def corpus(args, tmp: Path) -> Path:
    from study.data.generate import make_corpus

    if args.data:
        return args.data
    scale = args.scale or ("tiny" if args.quick else "small")
    return make_corpus(tmp / f"crema-d-{scale}", "crema-d", scale, seed=0, progress=False)


def train_one(data: Path, flat: dict) -> dict:
    """Test macro-F1 per named condition at the best dev epoch, and the epochs' wall times."""
    from study.training.config import config_from_flat
    from study.training.session import Session

    cfg = config_from_flat(flat, data_dir=data)
    s = Session(cfg, data, device="cpu")
    epoch_s = []
    while not s.should_stop:
        epoch_s.append(s.train_epoch()["seconds"])
        s.observe(s.evaluate("dev"))
    s.restore_best()
    rows = {r["condition"]: r for r in s.evaluate("test")}
    return {**{c: float(rows[c]["macro_f1"]) for c in NAMED}, "epoch_s": epoch_s,
            "best_epoch": s.best_epoch}


def paired(a: list[float], b: list[float]) -> dict:
    """Mean of b - a over pairs, its Student-t 95% interval (n - 1 degrees of freedom)."""
    from scipy import stats

    d = [y - x for x, y in zip(a, b)]
    n, mean = len(d), statistics.fmean(d)
    half = stats.t.ppf(0.975, n - 1) * statistics.stdev(d) / math.sqrt(n) if n > 1 else math.nan
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": n}


def _extra(args) -> dict:
    import yaml

    return {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.set)}


def run(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    flat = {**BASE, "max_epochs": args.epochs, "patience": args.epochs, **_extra(args)}
    runs: dict[str, list[dict]] = {s: [] for s in SCHEDULES}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data = corpus(args, Path(tmp))
        for seed in range(args.seeds):
            order = SCHEDULES if seed % 2 == 0 else SCHEDULES[::-1]  # machine drift hits both alike
            for schedule in order:
                runs[schedule].append(train_one(data, {**flat, "schedule": schedule, "seed": seed}))
            print(f"seed {seed}: " + "  |  ".join(_fmt(s, runs[s][-1]) for s in SCHEDULES), flush=True)
    diff = {c: paired([r[c] for r in runs["three_pass"]], [r[c] for r in runs["detached"]]) for c in NAMED}
    epoch_s = {s: statistics.median([t for r in runs[s] for t in r["epoch_s"]]) for s in SCHEDULES}
    return {"runs": runs, "diff": diff, "epoch_s": epoch_s, "seconds": time.perf_counter() - t0,
            "flat": flat, "scale": args.scale or ("tiny" if args.quick else "small")}


def _fmt(schedule: str, got: dict) -> str:
    scores = " ".join(f"{c} {got[c]:.3f}" for c in NAMED)
    return f"{schedule} {scores} (epoch {statistics.fmean(got['epoch_s']):.2f} s, best {got['best_epoch']})"


def format_result(result: dict) -> str:
    lines = [f"{'condition':<11}{'three_pass':>12}{'detached':>10}{'detached - three_pass [95% t]':>34}"]
    for c in NAMED:
        d = result["diff"][c]
        means = [statistics.fmean(r[c] for r in result["runs"][s]) for s in SCHEDULES]
        lines.append(f"{c:<11}{means[0]:>12.3f}{means[1]:>10.3f}"
                     f"{d['mean']:>+14.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]")
    e = result["epoch_s"]
    lines.append(f"epoch wall time (median s): three_pass {e['three_pass']:.2f}, detached {e['detached']:.2f} "
                 f"(three_pass / detached {e['three_pass'] / e['detached']:.2f})")
    av = result["diff"]["av"]
    verdict = "no difference shown" if av["lo"] <= 0 <= av["hi"] else (
        "detached better" if av["lo"] > 0 else "three_pass better")
    lines.append(f"summary: av macro-F1 detached - three_pass {av['mean']:+.3f} "
                 f"[{av['lo']:+.3f}, {av['hi']:+.3f}] over {av['n']} seeds ({verdict}); "
                 f"epoch {e['three_pass'] / e['detached']:.2f}x slower under three_pass")
    return "\n".join(lines)


def summary(result: dict) -> list[dict]:
    """Rows for benchmarks/run_all.py."""
    rows = []
    for c in NAMED:
        d = result["diff"][c]
        rows.append({"measure": f"test {c} macro-F1, paired over {d['n']} seeds",
                     "alternatives": f"detached - three_pass [{d['lo']:+.3f}, {d['hi']:+.3f}]",
                     "ratio": d["mean"], "target": "(report)", "met": None})
    e = result["epoch_s"]
    rows.append({"measure": "training epoch wall time, tiny preset", "alternatives": "three_pass / detached",
                 "ratio": e["three_pass"] / e["detached"], "target": "(report)", "met": None})
    return rows


def main(argv=None) -> None:
    args = parse_args(argv)
    result = run(args)
    print(f"crema-d {result['scale']}, {args.seeds} seeds x {args.epochs} epochs, "
          f"{ {k: v for k, v in result['flat'].items() if k != 'preset'} }, preset tiny, "
          f"threads {args.threads}, {result['seconds']:.0f} s")
    print(format_result(result))


if __name__ == "__main__":
    main()
