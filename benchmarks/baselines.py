"""Deep models vs the pooled linear probe of their own inputs (docs/baselines.md).

Generates the realistic `crema-d` synthetic corpus (docs/synthetic.md), fits the probes
(study/training/baselines.py: mean + std per feature dimension, z-scored, logistic regression,
C chosen on dev) and trains tiny-preset models one configuration at a time (the session loop of
`avstudy train`, checkpoint on dev av), then compares test macro-F1 per condition with the
probes'. Targets: model av >= probe av; audio_only and video_only within 0.05 of their probes.

    python benchmarks/baselines.py                 # small scale, the configurations of docs/baselines.md
    python benchmarks/baselines.py --quick         # tiny scale, one short run (well under a minute)
    python benchmarks/baselines.py --set pooling=mean_std --set max_epochs=10
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NAMED = ("av", "audio_only", "video_only")
BASE = {"preset": "tiny", "fusion": "vavl", "lr": 0.003, "batch_size": 32, "patience": 20}
# (label, overrides): the laptop budget and the demo's, docs/baselines.md has the whole table
FULL_RUNS = (("vavl 10 ep", {"max_epochs": 10}), ("vavl 5 ep (demo budget)", {"max_epochs": 5}))
QUICK_RUNS = (("vavl 2 ep", {"max_epochs": 2}),)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny scale, one short run")
    p.add_argument("--scale", default=None, help="synthetic scale (default: small, tiny with --quick)")
    p.add_argument("--data", type=Path, help="an existing dataset directory instead of generating one")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="one extra configuration: BASE plus these keys (repeatable)")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def corpus(args, tmp: Path) -> Path:
    from study.data.generate import make_corpus

    if args.data:
        return args.data
    scale = args.scale or ("tiny" if args.quick else "small")
    return make_corpus(tmp / f"crema-d-{scale}", "crema-d", scale, seed=0, progress=False)


def train_one(data: Path, flat: dict) -> dict:
    """Test primary metric per named condition of the best dev epoch (checkpoint on dev av)."""
    from study.training.config import config_from_flat
    from study.training.session import Session

    cfg = config_from_flat(flat, data_dir=data)
    t0 = time.perf_counter()
    s = Session(cfg, data, device="cpu")
    while not s.should_stop:
        s.train_epoch()
        s.observe(s.evaluate("dev"))
    s.restore_best()
    rows = {r["condition"]: r for r in s.evaluate("test")}
    return {**{c: float(rows[c]["macro_f1"]) for c in NAMED}, "seconds": time.perf_counter() - t0,
            "best_epoch": s.best_epoch}


def _runs(args) -> list[tuple[str, dict]]:
    import yaml

    runs = list(QUICK_RUNS if args.quick else FULL_RUNS)
    if args.set:
        extra = dict(kv.split("=", 1) for kv in args.set)
        runs.append((" ".join(args.set), {k: yaml.safe_load(v) for k, v in extra.items()}))
    return runs


def run(args) -> dict:
    import torch

    from study.data.dataset import open_dataset
    from study.training.baselines import ProbeSetup, run_probes, summary

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data = corpus(args, Path(tmp))
        t0 = time.perf_counter()
        probe = run_probes(open_dataset(data, check_values=False), ProbeSetup())
        probe_s = time.perf_counter() - t0
        result = {"probe": summary(probe, "test"), "probe_s": probe_s, "reg": probe.config()["reg"], "runs": {}}
        print(f"probe ({probe_s:.1f} s, C {result['reg']}): " + _fmt(result["probe"]), flush=True)
        for label, over in _runs(args):
            got = train_one(data, {**BASE, **over})
            result["runs"][label] = got
            print(f"{label} ({got['seconds']:.0f} s, best epoch {got['best_epoch']}): " + _fmt(got), flush=True)
    return result


def _fmt(scores: dict) -> str:
    return "  ".join(f"{c} {scores[c]:.3f}" for c in NAMED)


def summary(result: dict) -> list[dict]:
    probe = result["probe"]
    rows = [{"measure": "probe fit + every condition (s)", "alternatives": "probe", "ratio": result["probe_s"],
             "target": "<= 30 s (small), a few s (tiny)", "met": result["probe_s"] <= 30}]
    for label, got in result["runs"].items():
        rows.append({"measure": f"test av macro-F1, {label} / probe", "alternatives": f"{got['av']:.3f} / "
                     f"{probe['av']:.3f}", "ratio": got["av"] / max(probe["av"], 1e-9), "target": ">= 1",
                     "met": got["av"] >= probe["av"]})
        for c in ("audio_only", "video_only"):
            rows.append({"measure": f"test {c} macro-F1, {label} - probe", "alternatives": f"{got[c]:.3f} - "
                         f"{probe[c]:.3f}", "ratio": got[c] - probe[c], "target": ">= -0.05",
                         "met": got[c] >= probe[c] - 0.05})
    return rows


if __name__ == "__main__":
    res = run(parse_args())
    for r in summary(res):
        print(r)
