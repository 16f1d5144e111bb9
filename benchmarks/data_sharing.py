"""Data shared, not copied: memory of concurrent trials reading one dataset, and loader speed.

1. Memory. A dataset at paper feature sizes (1024-d audio at 50 Hz, 1408-d video at 30 fps,
   float16; `--utts 7442` is CREMA-D's size, ~3.5 GB) is written once. Then, side by side in
   one run: one trial alone, and 4 concurrent trials, each a process that imports torch, builds
   the tiny model, opens the dataset and pulls every training batch through the real loader
   (`study.training.loader.load_splits` -> `SplitData.batch`), once with the memory-mapped
   Arrow files (avstudy's loader) and once with a loader that reads every utterance into its
   own memory first (what a per-trial `np.load`/pickle cache does). Memory is the proportional
   set size (PSS, /proc/PID/smaps_rollup): shared page-cache pages count once across processes.
   Target: 4 trials <= 1.3x the PSS of one.
2. Loader throughput: batches/s of the loader alone (batch 8, paper sizes) vs the batches/s one
   paper-size training step consumes (fused schedule, fp32, measured here too). Target >= 5x.

    python benchmarks/data_sharing.py [--utts 7442] [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_data(root: Path, n: int) -> str:
    """n utterances (80% train), 2-3 s each, paper feature sizes, float16, 6 classes."""
    from study.data.dataset import write_dataset

    rng = np.random.default_rng(0)
    splits = np.where(np.arange(n) % 10 < 8, "train", np.where(np.arange(n) % 10 == 8, "dev", "test"))
    ids = [f"u{i:05d}" for i in range(n)]
    speakers = [f"{s}{i % 7}" for i, s in enumerate(splits)]
    manifest = pd.DataFrame({"utt_id": ids, "speaker": speakers, "split": splits,
                             "label": [f"c{i % 6}" for i in range(n)]})
    secs = rng.uniform(2.0, 3.0, n)

    def frames(rate: int, dim: int):
        for u, s in zip(ids, secs):
            yield u, (rng.standard_normal((int(s * rate), dim), dtype=np.float32) * 0.5).astype(np.float16)

    meta = {"classes": [f"c{i}" for i in range(6)], "audio": {"dim": 1024, "rate_hz": 50},
            "video": {"dim": 1408, "rate_hz": 30}}
    return str(write_dataset(root, manifest, meta, frames(50, 1024), frames(30, 1408)))


def pss_mib(pid: int | str = "self") -> dict[str, float]:
    """Pss, and its anonymous (the process's own) and file-backed (page cache) parts, in MiB."""
    got = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Pss", "Pss_Anon", "Pss_File"):
            got[key] = int(rest.split()[0]) / 1024
    if "Pss" not in got:
        raise RuntimeError("no Pss line in smaps_rollup")
    return got


def trial(data: str, copy_all: bool, ready, go, out) -> None:
    """One trial's memory: torch + the model + every training batch through the loader."""
    import torch

    from model.build import build_model
    from study.data.dataset import open_dataset
    from study.training.config import config_from_flat
    from study.training.loader import load_splits

    torch.set_num_threads(1)
    cfg = config_from_flat({"preset": "tiny"}, data_dir=data)
    build_model(cfg.model)
    ds = open_dataset(data, check_values=False)
    if copy_all:  # the alternative: every utterance read into this process's own memory
        cache = {m: {u: np.array(getattr(ds, m)(u)) for u in ds.manifest["utt_id"]} for m in ("audio", "video")}
        ds.audio, ds.video = cache["audio"].__getitem__, cache["video"].__getitem__
    train = load_splits(ds, cfg)["train"]
    order = np.arange(len(train))
    for start in range(0, len(order), 8):
        train.batch(order[start:start + 8], train.has_audio, train.has_video)
    ready.put(1)
    go.wait()
    out.put(pss_mib())


def measure_pss(data: str, n: int, copy_all: bool) -> dict[str, float]:
    """Total PSS (MiB, and its parts) of n concurrent trials, each measured once all have read everything."""
    ctx = mp.get_context("spawn")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=trial, args=(data, copy_all, ready, go, out)) for _ in range(n)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=1800)
    go.set()
    got = [out.get(timeout=300) for _ in procs]
    total = {k: sum(g.get(k, 0.0) for g in got) for k in got[0]}
    for p in procs:
        p.join()
    return total


def loader_vs_step(data: str, batches: int) -> tuple[float, float]:
    """(loader batches/s, batches/s a paper-size fused fp32 training step consumes), batch 8."""
    import torch

    from study.data.dataset import open_dataset
    from study.training.config import config_from_flat
    from study.training.loader import load_splits
    from study.training.session import Session

    torch.set_num_threads(2)
    cfg = config_from_flat({"preset": "paper", "batch_size": 8}, data_dir=data)
    train = load_splits(open_dataset(data, check_values=False), cfg)["train"]
    order = np.random.default_rng(0).permutation(len(train))
    t0 = time.perf_counter()
    for k in range(batches):
        train.batch(order[8 * k:8 * k + 8], train.has_audio, train.has_video)
    loader = batches / (time.perf_counter() - t0)
    s = Session(cfg, data)
    batch = train.batch(order[:8], train.has_audio, train.has_video)
    s._step(batch)  # warm-up (allocates optimizer state)
    t0 = time.perf_counter()
    for _ in range(2):
        s._step(batch)
    step = 2 / (time.perf_counter() - t0)
    return loader, step


def run(args) -> dict:
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        t0 = time.perf_counter()
        data = make_data(Path(tmp) / "data", args.utts)
        size = sum(f.stat().st_size for f in Path(data).glob("*.arrow")) / 2**20
        took = time.perf_counter() - t0
        print(f"dataset: {args.utts} utterances, {size:.0f} MiB of features, written in {took:.0f} s")
        res = {"size_mib": size}
        for copy_all in (False, True):
            one, four = measure_pss(data, 1, copy_all), measure_pss(data, 4, copy_all)
            name = "read-all" if copy_all else "mmap"
            res[name] = (one, four)
            print(f"{name:>8}: PSS one trial {one['Pss']:.0f} MiB, four trials {four['Pss']:.0f} MiB, "
                  f"ratio {four['Pss'] / one['Pss']:.2f}; of which each process's own (anonymous) "
                  f"{one.get('Pss_Anon', 0):.0f} / {four.get('Pss_Anon', 0) / 4:.0f} MiB per trial, "
                  f"page cache of the dataset (file) {one.get('Pss_File', 0):.0f} / {four.get('Pss_File', 0):.0f} MiB")
        res["loader"], res["step"] = loader_vs_step(data, args.batches)
        print(f"loader {res['loader']:.1f} batches/s vs training step {res['step']:.3f} batches/s: "
              f"{res['loader'] / res['step']:.0f}x (target >= 5x)")
    return res


def summary(res: dict) -> list[dict]:
    mm, ra = [(one["Pss"], four["Pss"]) for one, four in (res["mmap"], res["read-all"])]
    return [
        {"measure": "PSS of 4 concurrent trials / 1 trial", "alternatives": "memory-mapped loader",
         "ratio": mm[1] / mm[0], "target": "<= 1.3", "met": mm[1] / mm[0] <= 1.3},
        {"measure": "PSS of 4 concurrent trials / 1 trial", "alternatives": "read-everything loader",
         "ratio": ra[1] / ra[0], "target": "(reference)", "met": None},
        {"measure": "loader batches/s / training-step batches/s", "alternatives": "loader / paper step",
         "ratio": res["loader"] / res["step"], "target": ">= 5", "met": res["loader"] / res["step"] >= 5},
    ]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--utts", type=int, default=7442, help="utterances (7442 = CREMA-D)")
    p.add_argument("--batches", type=int, default=40, help="batches timed for the loader")
    p.add_argument("--quick", action="store_true", help="400 utterances")
    p.add_argument("--tmp", default=None, help="where to write the dataset (default: the system temp dir)")
    args = p.parse_args(argv)
    if args.quick:
        args.utts, args.batches = 400, 20
    return args


if __name__ == "__main__":
    run(parse_args())
