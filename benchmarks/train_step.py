"""Training throughput and peak memory: one-pass schedules (fused, detached) vs three-pass.

Paper sizes (VAVL defaults: 1024-d audio at 50 Hz, 1408-d video at 30 fps, ~2.5 s utterances,
d_model 512, 3 + 2 conformer blocks), batch 8, the real training loop (`Session.train_epoch`).
Each (schedule, precision) runs in its own child process (so peak RSS is its own), alternating
over rounds; ratios are taken from the same run. Target: each one-pass schedule (fused: joint
training; detached: VAVL's semantics, the `vavl` default) >= 1.6x the three-pass samples/second.
bf16 autocast is measured too where the CPU has native bf16 (avx512_bf16/AMX). Also reported:
the padding fraction of the length-bucketed batches, and the achieved GFLOP/s of each schedule
(FLOPs of one training step counted by torch's FlopCounterMode) against this CPU's sgemm peak,
measured by the script itself with a large fp32 matmul (target fp32 >= 75% of it).

    python benchmarks/train_step.py [--threads 2] [--rounds 2] [--utts 32] [--device cpu] [--quick]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import queue as queue_mod
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
    official = schedule == OFFICIAL
    cfg = config_from_flat({"preset": "paper", "batch_size": 8, "schedule": "three_pass" if official else schedule,
                            "precision": precision}, data_dir=data)
    session = (official_cost_session() if official else Session)(cfg, data, device=device)
    session.train_epoch()                                            # warm-up epoch
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    info = session.train_epoch()
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    params = sum(p.numel() for p in session.model.parameters())
    flops, padding = step_flops_and_padding(session)
    queue.put({"schedule": schedule, "precision": precision, "samples_per_s": info["samples"] / info["seconds"],
               "peak_mib": peak, "params": params, "flops_per_sample": flops, "padding": padding,
               "matmul_share": matmul_time_share(session) if (device, schedule) == ("cpu", "detached")
               else float("nan")})


def official_cost_session():
    """A Session whose three-pass fusion step costs what the official code's does: the official
    `weights` step runs the encoders in eval mode but not under no_grad, so its backward goes
    through them and their gradients are then dropped (the next step's zero_grad). Same update
    as `three_pass` (only the fusion module moves); measured only, to bound the ratio."""
    import functools

    from model.vavl import AVModel
    from study.training.session import Session

    AVModel._frozen = functools.partialmethod(AVModel._frozen, no_grad=False)  # this child process only

    class OfficialCost(Session):
        def _update(self, batch, mode="fused", scale=1.0):
            if mode != "fusion_only":
                return super()._update(batch, mode, scale)
            self.opt.zero_grad(set_to_none=True)
            with self._autocast():
                total = self.model.loss(self.net(batch, fusion_only=True), batch)["total"] * scale
            total.backward()  # through the encoders, as the official step
            for name, p in self.model.named_parameters():
                if not name.startswith("fusion."):
                    p.grad = None  # computed, then dropped: only the fusion module steps
            self.opt.step()
            return float(total.detach())

    return OfficialCost


def step_flops_and_padding(session) -> tuple[float, float]:
    """(FLOPs per sample of one training step, padded share of the frames of the epoch's batches)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from study.training.loader import bucketed_batches

    train = session.splits["train"]
    batches = bucketed_batches(train.length, session.cfg.batch_size, np.random.default_rng(0))
    real = padded = 0
    for idx in batches:
        b = train.batch(idx, train.has_audio, train.has_video)
        for mask in (b.audio_mask, b.video_mask):
            real += int(mask.sum())
            padded += mask.numel()
    first = train.batch(batches[0], train.has_audio, train.has_video).to(session.device)
    with FlopCounterMode(display=False) as counter:
        session._step(first)
    torch.manual_seed(0)
    return counter.get_total_flops() / len(batches[0]), 1.0 - real / max(padded, 1)


def matmul_time_share(session, steps: int = 2) -> float:
    """Share of a training step's CPU time spent in matmul/convolution kernels (torch.profiler,
    self time): what the rest of the step (norms, activations, softmax, the optimizer) costs."""
    from torch.profiler import ProfilerActivity, profile

    from study.training.loader import bucketed_batches

    train = session.splits["train"]
    batches = bucketed_batches(train.length, session.cfg.batch_size, np.random.default_rng(1))[:steps]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for idx in batches:
            session._step(train.batch(idx, train.has_audio, train.has_video).to(session.device))
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events)
    mm = sum(e.self_cpu_time_total for e in events if "mm" in e.key or "conv" in e.key)  # mm, bmm, addmm, convs
    return mm / max(total, 1)


def sgemm_peak_gflops(threads: int, shape: tuple[int, int, int] = (4096, 4096, 4096), reps: int = 5) -> float:
    """Best-of-reps fp32 matmul GFLOP/s of this CPU with `threads` threads for (m, k) @ (k, n):
    the roofline with the default square shape, or what a layer of the step's shape can reach."""
    import time

    import torch

    torch.set_num_threads(threads)
    m, k, n = shape
    a, b = torch.randn(m, k), torch.randn(k, n)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(max(reps, 4096**3 // (m * k * n))):  # small shapes: more repetitions
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * m * k * n / best / 1e9


# a conformer feed-forward matmul of the step: batch 8 x ~125 audio frames, d_model 512 -> 4 x 512
FFN_SHAPE = (8 * 125, 512, 2048)


def measure(schedule: str, precision: str, data: Path, threads: int, device: str) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=child, args=(schedule, precision, str(data), threads, device, queue))
    proc.start()
    while True:  # a child that dies (an exception, the OOM killer) must not hang the run
        try:
            result = queue.get(timeout=5)
            break
        except queue_mod.Empty:
            if not proc.is_alive():
                raise RuntimeError(f"train_step child {schedule}/{precision} died (exit {proc.exitcode})") from None
    proc.join()
    return result


def native_bf16(device: str) -> bool:
    if device == "cuda":
        return True
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return "avx512_bf16" in flags or "amx_bf16" in flags


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--utts", type=int, default=32, help="training utterances per epoch")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true",
                    help="8 utterances, one round, fp32 only, no official-cost three-pass (a smoke run)")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.utts = 1, 8
    return args


def run(args: argparse.Namespace) -> dict:
    precisions = ["fp32", "bf16"] if native_bf16(args.device) and not args.quick else ["fp32"]
    combos = [(s, p) for p in precisions for s in ONE_PASS + ("three_pass",)]
    combos += [] if args.quick else [(OFFICIAL, "fp32")]  # the smoke run stays under its time
    runs = {c: [] for c in combos}
    cpu = args.device == "cpu"
    peak = sgemm_peak_gflops(args.threads) if cpu else float("nan")
    ffn = sgemm_peak_gflops(args.threads, FFN_SHAPE) if cpu else float("nan")
    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(Path(tmp) / "paper", args.utts)
        for r in range(args.rounds):
            for schedule, precision in combos:
                last = measure(schedule, precision, data, args.threads, args.device)
                runs[(schedule, precision)].append(last)
                print(f"round {r + 1} {schedule:<24} {precision} {last['samples_per_s']:.2f} "
                      f"samples/s, peak {last['peak_mib']:.0f} MiB", flush=True)
    return report(runs, precisions, args, peak, ffn)


def main(argv=None) -> None:
    run(parse_args(argv))


ONE_PASS = ("fused", "detached")
OFFICIAL = "three_pass@official_cost"  # three_pass whose fusion step back-propagates through the encoders


def report(runs: dict, precisions: list[str], args, sgemm: float, ffn: float) -> dict:
    speed = {c: statistics.median(x["samples_per_s"] for x in v) for c, v in runs.items()}
    peak = {c: max(x["peak_mib"] for x in v) for c, v in runs.items()}
    flops = {c: v[0]["flops_per_sample"] for c, v in runs.items()}
    gflops = {c: flops[c] * speed[c] / 1e9 for c in runs}
    first = next(iter(runs.values()))[0]
    print(f"\nVAVL at paper sizes: {first['params'] / 1e6:.1f} M parameters, batch 8, {args.threads} threads, "
          f"{args.device}; sgemm peak {sgemm:.0f} GFLOP/s (4096^3), {ffn:.0f} GFLOP/s at the step's "
          f"feed-forward shape {FFN_SHAPE}; padding {first['padding']:.1%} of the frames")
    print(f"{'schedule':<26}{'precision':<10}{'samples/s':>10}{'peak MiB':>10}{'GFLOP/sample':>13}"
          f"{'GFLOP/s':>9}{'of peak':>9}")
    for (s, p) in runs:
        print(f"{s:<26}{p:<10}{speed[(s, p)]:>10.2f}{peak[(s, p)]:>10.0f}{flops[(s, p)] / 1e9:>13.1f}"
              f"{gflops[(s, p)]:>9.1f}{gflops[(s, p)] / sgemm:>9.0%}")
    for p in precisions:
        for s in ONE_PASS:
            ratio = speed[(s, p)] / speed[("three_pass", p)]
            print(f"{p}: {s} / three_pass throughput {ratio:.2f}x (target >= 1.6x) "
                  f"{'OK' if ratio >= 1.6 else 'BELOW TARGET'}; peak memory "
                  f"{peak[(s, p)] / peak[('three_pass', p)]:.2f}x")
    nan = float("nan")
    one_pass, official = flops[("detached", "fp32")], flops.get((OFFICIAL, "fp32"), nan)
    print(f"fp32: FLOPs per sample three_pass / detached {flops[('three_pass', 'fp32')] / one_pass:.2f}x (the ratio "
          f"at equal GFLOP/s); official-cost three_pass / detached {official / one_pass:.2f}x")
    share = statistics.median(x["matmul_share"] for x in runs[("detached", "fp32")])
    print(f"fp32 detached: {share:.0%} of the step's CPU time in matmul kernels (torch.profiler): they run at "
          f"{gflops[('detached', 'fp32')] / share / sgemm:.0%} of the sgemm peak; the other {1 - share:.0%} "
          f"(norms, activations, softmax, masking, the optimizer) does no matmul FLOPs")
    print(f"fp32: detached / three_pass@official_cost throughput "
          f"{speed[('detached', 'fp32')] / speed.get((OFFICIAL, 'fp32'), nan):.2f}x")
    if "bf16" in precisions:
        print(f"fused bf16 / three_pass fp32 throughput: "
              f"{speed[('fused', 'bf16')] / speed[('three_pass', 'fp32')]:.2f}x")
    return {"speed": speed, "gflops": gflops, "flops": flops, "sgemm": sgemm, "ffn": ffn, "matmul_share": share,
            "padding": first["padding"], "precisions": precisions}


def summary(res: dict) -> list[dict]:
    """For benchmarks/run_all.py."""
    sp, gf, fl = res["speed"], res["gflops"], res["flops"]
    rows = [{"measure": "training samples/s, paper sizes, fp32", "alternatives": f"{s} / three_pass",
             "ratio": sp[(s, "fp32")] / sp[("three_pass", "fp32")], "target": ">= 1.6",
             "met": sp[(s, "fp32")] / sp[("three_pass", "fp32")] >= 1.6} for s in ONE_PASS]
    rows += [
        {"measure": "FLOPs per training sample, fp32", "alternatives": "three_pass / detached",
         "ratio": fl[("three_pass", "fp32")] / fl[("detached", "fp32")], "target": "(bounds the above)", "met": None},
        {"measure": "training samples/s, paper sizes, fp32", "alternatives": "detached / official-cost three_pass",
         "ratio": sp[("detached", "fp32")] / sp.get((OFFICIAL, "fp32"), float("nan")), "target": "(report)",
         "met": None},
        {"measure": "achieved GFLOP/s of the detached step, fp32", "alternatives": "step / sgemm peak",
         "ratio": gf[("detached", "fp32")] / res["sgemm"], "target": ">= 0.75",
         "met": gf[("detached", "fp32")] / res["sgemm"] >= 0.75},
        {"measure": "sgemm GFLOP/s at the step's feed-forward shape", "alternatives": "FFN shape / 4096^3 peak",
         "ratio": res["ffn"] / res["sgemm"], "target": "(bounds the above)", "met": None},
        {"measure": "CPU time of the detached step, fp32", "alternatives": "matmul kernels / whole step",
         "ratio": res["matmul_share"], "target": "(bounds the above)", "met": None},
    ]
    if "bf16" in res["precisions"]:
        rows.append({"measure": "training samples/s, detached", "alternatives": "bf16 / fp32",
                     "ratio": sp[("detached", "bf16")] / sp[("detached", "fp32")], "target": "(report)", "met": None})
    return rows


if __name__ == "__main__":
    main()
