"""Training throughput and peak memory: fused schedule vs the paper's three-pass schedule.

Paper sizes (VAVL defaults: 1024-d audio at 50 Hz, 1408-d video at 30 fps, ~2.5 s utterances,
d_model 512, 3 + 2 conformer blocks), batch 8, the real training loop (`Session.train_epoch`).
Each (schedule, precision) runs in its own child process (so peak RSS is its own), alternating
over rounds; ratios are taken from the same run. Target: fused >= 1.6x the three-pass
samples/second. bf16 autocast is measured too where the CPU has native bf16 (avx512_bf16/AMX).

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
    from study.data.dataset import write_dataset
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


def child(schedule: str, precision: str, data: str, threads: int, device: str, queue) -> None:
    import torch
    torch.set_num_threads(threads)
    from study.training.config import config_from_flat
    from study.training.session import Session
    cfg = config_from_flat({"preset": "paper", "batch_size": 8, "schedule": schedule,
                            "precision": precision}, data_dir=data)
    session = Session(cfg, data, device=device)
    session.train_epoch()                                            # warm-up epoch
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    info = session.train_epoch()
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    params = sum(p.numel() for p in session.model.parameters())
    queue.put({"schedule": schedule, "precision": precision, "samples_per_s": info["samples"] / info["seconds"],
               "peak_mib": peak, "params": params})


def measure(schedule: str, precision: str, data: Path, threads: int, device: str) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=child, args=(schedule, precision, str(data), threads, device, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def native_bf16(device: str) -> bool:
    if device == "cuda":
        return True
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return "avx512_bf16" in flags or "amx_bf16" in flags


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--utts", type=int, default=32, help="training utterances per epoch")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    precisions = ["fp32", "bf16"] if native_bf16(args.device) else ["fp32"]
    combos = [(s, p) for p in precisions for s in ("fused", "three_pass")]
    runs = {c: [] for c in combos}
    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(Path(tmp) / "paper", args.utts)
        for r in range(args.rounds):
            for schedule, precision in combos:
                last = measure(schedule, precision, data, args.threads, args.device)
                runs[(schedule, precision)].append(last)
                print(f"round {r + 1} {schedule:<10} {precision} {last['samples_per_s']:.2f} "
                      f"samples/s, peak {last['peak_mib']:.0f} MiB", flush=True)
    report(runs, precisions, args)


def report(runs: dict, precisions: list[str], args) -> None:
    speed = {c: statistics.median(x["samples_per_s"] for x in v) for c, v in runs.items()}
    peak = {c: max(x["peak_mib"] for x in v) for c, v in runs.items()}
    params = next(iter(runs.values()))[0]["params"]
    print(f"\nVAVL at paper sizes: {params / 1e6:.1f} M parameters, batch 8, {args.threads} threads, "
          f"{args.device}")
    print(f"{'schedule':<12}{'precision':<10}{'samples/s':>10}{'peak MiB':>10}")
    for (s, p) in runs:
        print(f"{s:<12}{p:<10}{speed[(s, p)]:>10.2f}{peak[(s, p)]:>10.0f}")
    for p in precisions:
        ratio = speed[("fused", p)] / speed[("three_pass", p)]
        print(f"{p}: fused / three_pass throughput {ratio:.2f}x (target >= 1.6x) "
              f"{'OK' if ratio >= 1.6 else 'BELOW TARGET'}; peak memory "
              f"{peak[('fused', p)] / peak[('three_pass', p)]:.2f}x")
    if "bf16" in precisions:
        print(f"fused bf16 / three_pass fp32 throughput: "
              f"{speed[('fused', 'bf16')] / speed[('three_pass', 'fp32')]:.2f}x")


if __name__ == "__main__":
    main()
