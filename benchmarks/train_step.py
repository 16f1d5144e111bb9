"""Training throughput and peak memory: fused schedule vs the paper's three-pass schedule.

Paper sizes (VAVL defaults: 1024-d audio at 50 Hz, 1408-d video at 30 fps, ~2.5 s utterances,
d_model 512, 3 + 2 conformer blocks), batch 8, the real training loop (`Session.train_epoch`).
Each schedule runs in its own child process (so peak RSS is its own), alternating over rounds;
the ratio is taken from the same rounds. Target: fused >= 1.6x the three-pass samples/second.

    python benchmarks/train_step.py [--threads 2] [--rounds 2] [--utts 32] [--device cpu]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_data(root: Path, n: int) -> Path:
    from study.dataset import write_dataset
    rng = np.random.default_rng(0)
    splits = ["train"] * n + ["dev"] * 4 + ["test"] * 4
    ids = [f"u{i}" for i in range(len(splits))]
    manifest = pd.DataFrame({"utt_id": ids, "speaker": [f"{s}{i % 4}" for i, s in enumerate(splits)],
                             "split": splits, "label": [f"c{i % 6}" for i in range(len(ids))]})
    secs = rng.uniform(2.0, 3.0, len(ids))
    audio = ((u, rng.normal(size=(int(s * 50), 1024))) for u, s in zip(ids, secs))
    video = ((u, rng.normal(size=(int(s * 30), 1408))) for u, s in zip(ids, secs))
    meta = {"classes": [f"c{i}" for i in range(6)], "audio": {"dim": 1024, "rate_hz": 50},
            "video": {"dim": 1408, "rate_hz": 30}}
    return write_dataset(root, manifest, meta, audio, video)


def child(schedule: str, data: str, threads: int, device: str, queue) -> None:
    import torch
    torch.set_num_threads(threads)
    from study.train import Session, config_from_flat
    cfg = config_from_flat({"preset": "paper", "batch_size": 8, "schedule": schedule}, data_dir=data)
    session = Session(cfg, data, device=device)
    session.train_epoch()                                            # warm-up epoch
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    info = session.train_epoch()
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    params = sum(p.numel() for p in session.model.parameters())
    queue.put({"schedule": schedule, "samples_per_s": info["samples"] / info["seconds"],
               "peak_mib": peak, "params": params})


def measure(schedule: str, data: Path, threads: int, device: str) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=child, args=(schedule, str(data), threads, device, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--utts", type=int, default=32, help="training utterances per epoch")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(Path(tmp) / "paper", args.utts)
        runs = {"fused": [], "three_pass": []}
        for r in range(args.rounds):
            for schedule in runs:
                runs[schedule].append(measure(schedule, data, args.threads, args.device))
                last = runs[schedule][-1]
                print(f"round {r + 1} {schedule:<10} {last['samples_per_s']:.2f} samples/s, "
                      f"peak {last['peak_mib']:.0f} MiB", flush=True)
    speed = {s: statistics.median(x["samples_per_s"] for x in v) for s, v in runs.items()}
    peak = {s: max(x["peak_mib"] for x in v) for s, v in runs.items()}
    params = runs["fused"][0]["params"]
    print(f"\nVAVL at paper sizes: {params / 1e6:.1f} M parameters, batch 8, {args.threads} threads, "
          f"{args.device}")
    print(f"{'schedule':<12}{'samples/s':>10}{'peak MiB':>10}")
    for s in runs:
        print(f"{s:<12}{speed[s]:>10.2f}{peak[s]:>10.0f}")
    ratio = speed["fused"] / speed["three_pass"]
    print(f"fused / three_pass throughput: {ratio:.2f}x (target >= 1.6x) "
          f"{'OK' if ratio >= 1.6 else 'BELOW TARGET'}")
    print(f"fused / three_pass peak memory: {peak['fused'] / peak['three_pass']:.2f}x")


if __name__ == "__main__":
    main()
