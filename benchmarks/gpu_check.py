"""The accelerator check of packed trials (issue 21): one script, under 8 minutes on one GPU.

For the paper preset (`vavl_sizes`), batch 32 of random utterances: per K = 1, 2, 4, 8 the
training steps/s of K separate models run one after another (as K unpacked trials sharing a GPU
would, minus their processes) against one pack of K (model/packed.py), the trials-per-hour ratio
that gives, and the peak memory of each; the pack of 4 in fp32 and under bf16 autocast;
`torch.compile` of a separate model's step; DDP over NCCL on 2 processes where the machine has 2
GPUs. `--write FILE` puts the table into FILE's "## GPU check" section (docs/benchmarks.md).

    bash benchmarks/gpu_check.sh                                  # on the GPU machine
    python benchmarks/gpu_check.py --device cpu --quick           # the script's own smoke run (CI)

Never run on a machine without an accelerator to produce GPU figures: on CPU it says "cpu".
"""
from __future__ import annotations

import argparse
import copy
import os
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model.build import build_model  # noqa: E402
from model.config import model_config  # noqa: E402
from model.packed import MemberOptim, PackedModel, StackedAdam  # noqa: E402
from tests.random_batches import random_batch  # noqa: E402

SECTION = "## GPU check"


LENGTHS = {"tiny": ((8, 20), (5, 12)), "vavl_sizes": ((150, 300), (60, 120))}  # frames: audio, video


def batches(cfg, k: int, n: int, device: str, seed: int = 0, preset: str = "vavl_sizes"):
    i = torch.arange(n)
    (a, v) = LENGTHS[preset]
    return [random_batch(cfg, n, seed=seed + j, audio_len=a, video_len=v,
                         has_audio=i % 5 != 0, has_video=(i % 7 != 0) | (i % 5 == 0)).to(device)
            for j in range(k)]


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(step, device: str, steps: int) -> tuple[float, float]:
    """(seconds per step, peak MiB: CUDA allocator, NaN elsewhere) after one warm-up step."""
    step()
    _sync(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else float("nan")
    return (time.perf_counter() - t) / steps, peak


def separate_step(models, opts, data, bf16: bool, device: str):
    def step():
        for m, o, b in zip(models, opts, data):
            o.zero_grad(set_to_none=True)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                loss = m.loss(m(b), b)["total"]
            loss.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            o.step()
    return step


def packed_step(pack, opt, data, bf16: bool, device: str):
    def step():
        opt.zero_grad()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            outs = pack(data)
            total = sum(m.loss(o, b)["total"] for m, o, b in zip(pack.members, outs, data))
        total.backward()
        opt.clip_()
        opt.step(pack.touched(data))
    return step


def compare(cfg, k: int, n: int, device: str, steps: int, bf16: bool = False, preset: str = "vavl_sizes") -> dict:
    models = [build_model(cfg).to(device) for _ in range(k)]
    alone = [copy.deepcopy(m) for m in models]
    data = batches(cfg, k, n, device, preset=preset)
    opts = [torch.optim.AdamW(m.param_groups(1e-4), lr=1e-4) for m in alone]
    sep, sep_mib = timed(separate_step(alone, opts, data, bf16, device), device, steps)
    del alone, opts
    pack = PackedModel(models)
    opt = StackedAdam(pack.stack, [MemberOptim(lr=1e-4, weight_decay=1e-4, grad_clip=1.0)] * k)
    packed, pack_mib = timed(packed_step(pack, opt, data, bf16, device), device, steps)
    return {"k": k, "bf16": bf16, "separate_s": sep, "packed_s": packed, "ratio": sep / packed,
            "separate_mib": sep_mib, "packed_mib": pack_mib}


def compile_check(cfg, n: int, device: str, steps: int, preset: str) -> str:
    model = build_model(cfg).to(device)
    opt = torch.optim.AdamW(model.param_groups(1e-4), lr=1e-4)
    data = batches(cfg, 1, n, device, preset=preset)
    eager, _ = timed(separate_step([model], [opt], data, False, device), device, steps)
    try:
        compiled = torch.compile(model)
        compiled.loss = model.loss
        t, _ = timed(separate_step([compiled], [opt], data, False, device), device, steps)
    except Exception as exc:  # report it: the check is whether it works
        return f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    return f"works: {eager * 1e3:.0f} ms eager, {t * 1e3:.0f} ms compiled per step"


def _ddp_worker(rank: int, port: int, out) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("nccl", rank=rank, world_size=2)
    torch.cuda.set_device(rank)
    torch.manual_seed(0)
    cfg = model_config("tiny", dropout=0.0, head_dropout=0.0)
    model = torch.nn.parallel.DistributedDataParallel(build_model(cfg).cuda(), device_ids=[rank],
                                                      find_unused_parameters=True)
    b = batches(cfg, 1, 8, "cuda", seed=rank, preset="tiny")[0]
    model.module.loss(model(b), b)["total"].backward()
    g = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    gathered = [torch.zeros_like(g) for _ in range(2)]
    dist.all_gather(gathered, g)
    if rank == 0:
        out.put(bool(torch.equal(gathered[0], gathered[1])))
    dist.destroy_process_group()


def ddp_check() -> str:
    if torch.cuda.device_count() < 2:
        return f"skipped: {torch.cuda.device_count()} GPU(s) on this machine"
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    mp.start_processes(_ddp_worker, args=(port, out), nprocs=2, start_method="spawn")
    return "works: 2 ranks, identical all-reduced gradients" if out.get(timeout=60) else \
        "FAILED: the ranks' gradients differ after all-reduce"


def table(rows: list[dict], device: str, compile_note: str, ddp_note: str, preset: str) -> str:
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    lines = [SECTION, "", f"`bash benchmarks/gpu_check.sh` on {name} (torch {torch.__version__}), "
             f"{preset} preset, batch 32 random utterances.", "",
             "| K | precision | K separate s/step | one pack s/step | packed/unpacked trials per hour | "
             "peak MiB separate | peak MiB pack |", "|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['k']} | {'bf16' if r['bf16'] else 'fp32'} | {r['separate_s']:.4f} | "
                     f"{r['packed_s']:.4f} | {r['ratio']:.2f} | {r['separate_mib']:.0f} | {r['packed_mib']:.0f} |")
    lines += ["", f"torch.compile: {compile_note}. DDP over NCCL: {ddp_note}.", ""]
    return "\n".join(lines)


def write_section(path: Path, text: str) -> None:
    doc = path.read_text() if path.exists() else ""
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    doc = pattern.sub(lambda _: text + "\n", doc) if pattern.search(doc) else doc.rstrip() + "\n\n" + text
    path.write_text(doc)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="tiny preset, K = 1, 2, two steps")
    p.add_argument("--write", type=Path, help="put the table into this markdown file")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    preset = "tiny" if args.quick else "vavl_sizes"
    cfg = model_config(preset)
    ks, steps = ((1, 2), 2) if args.quick else ((1, 2, 4, 8), 10)
    rows = [compare(cfg, k, 32, args.device, steps, preset=preset) for k in ks]
    rows.append(compare(cfg, ks[-1] if args.quick else 4, 32, args.device, steps, bf16=True, preset=preset))
    compile_note = compile_check(cfg, 32, args.device, steps, preset) if args.device == "cuda" else "not run on cpu"
    ddp_note = ddp_check() if args.device == "cuda" else "not run on cpu"
    text = table(rows, args.device, compile_note, ddp_note, preset)
    print(text)
    if args.write:
        write_section(args.write, text)
    best = max(r["ratio"] for r in rows if not r["bf16"])
    print(f"packed/unpacked trials per hour (best K, fp32 step): {best:.2f}")
    return {"device": args.device, "best": best}


def summary(res: dict) -> list[dict]:
    """For benchmarks/run_all.py (on CPU: the script's smoke run, no GPU figure)."""
    return [{"measure": f"training step, best pack / separate models ({res['device']})",
             "alternatives": "packed vs separate", "ratio": res["best"], "target": "info", "met": None}]


if __name__ == "__main__":
    summary(run(parse_args()))
