"""Feature-extraction throughput: utterances/second, shards in one process vs in parallel.

Generates a CREMA-D-layout corpus (tests/rawgen.py: tones + drawn-face FLV videos), then runs the
real `extract()` (scan, shards, merge) once per worker count into fresh output folders, in the
same run, and prints one table. Worker processes are spawned, so their start-up (importing torch,
loading the extractors) is part of the measured time, as it is for a user.

    python benchmarks/extract_throughput.py [--utts 48] [--seconds 2] [--fps 15] \
        [--audio egemaps] [--video pixels] [--workers 1,2] [--shard-size 4]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def make_corpus(root: Path, utts: int, seconds: float, fps: int) -> list[str]:
    import rawgen
    per_speaker = 4
    speakers = max(3, -(-utts // per_speaker))
    info = rawgen.make_cremad(root, speakers=speakers, per_speaker=per_speaker, seconds=seconds,
                              fps=fps, broken=False)
    return info["utts"]


def run_once(raw: Path, out: Path, args, workers: int) -> float:
    from study.data.features.extract import ExtractConfig, extract
    cfg = ExtractConfig(corpus="crema-d", root=str(raw), out=str(out), audio=args.audio, video=args.video,
                        shard_size=args.shard_size, workers=workers, progress=False, device="cpu")
    start = time.perf_counter()
    extract(cfg)
    return time.perf_counter() - start


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--utts", type=int, default=96, help="utterances (rounded up to 4 per speaker)")
    p.add_argument("--seconds", type=float, default=2.0, help="length of each utterance")
    p.add_argument("--fps", type=int, default=15, help="video frame rate of the generated clips")
    p.add_argument("--audio", default="egemaps", help="--audio of features extract")
    p.add_argument("--video", default="pixels", help="--video of features extract")
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts (1: in-process)")
    p.add_argument("--shard-size", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2, help="runs per worker count, alternating")
    p.add_argument("--quick", action="store_true", help="12 utterances of 1 s, one round (smoke run)")
    args = p.parse_args(argv)
    if args.quick:
        args.utts, args.seconds, args.rounds, args.shard_size = 12, 1.0, 1, 4
    return args


def run(args: argparse.Namespace) -> list[tuple[int, float, float]]:
    """(workers, median seconds, utterances/s) per worker count; prints the table."""
    counts = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="extract-bench-") as tmp:
        raw = Path(tmp) / "raw"
        n = len(make_corpus(raw, args.utts, args.seconds, args.fps))
        load = os.getloadavg()[0]
        times: dict[int, list[float]] = {w: [] for w in counts}
        for r in range(args.rounds):
            for w in counts:
                times[w].append(run_once(raw, Path(tmp) / f"out-r{r}-w{w}", args, w))
        rows = [(w, statistics.median(t), n / statistics.median(t)) for w, t in times.items()]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{n} utterances of {args.seconds:g} s (video {args.fps} fps, 160x120), audio={args.audio}, "
          f"video={args.video}, shard size {args.shard_size}, {cpus} CPUs, median of {args.rounds} "
          f"rounds; load average {load:.1f} before, {os.getloadavg()[0]:.1f} after")
    print("| workers | seconds | utt/s | speed-up |")
    print("|---:|---:|---:|---:|")
    for w, secs, rate in rows:
        print(f"| {w}{' (in-process)' if w == 1 else ''} | {secs:.1f} | {rate:.2f} | {rate / rows[0][2]:.2f}x |")
    return rows


def summary(rows: list[tuple[int, float, float]]) -> list[dict]:
    """For benchmarks/run_all.py: parallel over in-process utterances/s."""
    base = rows[0][2]
    return [{"measure": "feature extraction utterances/s", "alternatives": f"{w} workers / in-process",
             "ratio": rate / base, "target": "> 1 (report)", "met": None} for w, _, rate in rows[1:]]


if __name__ == "__main__":
    run(parse_args())
