"""Accelerator memory of a trial, and of a pack of K (docs/packing.md), from one probe step.

One training step on the training split's longest batch (its `batch_size` longest utterances,
both streams present: a trial's peak), counted two ways:
- on CUDA: `torch.cuda.max_memory_allocated` over the step (what the allocator held; the CUDA
  context, ~0.3-0.5 GiB per process, comes on top);
- elsewhere: parameters x 4 (weights, gradients, Adam's two moments) + the bytes of every tensor
  autograd saves for the backward (`saved_tensors_hooks`, each storage counted once) + the batch.
A pack of K holds K members' parameters, moments and activations at one padded shape: K x one
trial's (the CUDA figure measures the pack itself).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from study.training.config import TrainConfig

MIB = 2.0**20


@dataclass(frozen=True)
class MemoryEstimate:
    trial_mib: float
    pack_mib: float
    pack: int
    source: str  # how it was counted

    def fit(self, device_mib: float | None, headroom: float = 0.9) -> tuple[int | None, int | None]:
        """(trials, packs) that fit in `headroom` of a device's memory (None: unknown device)."""
        if not device_mib:
            return None, None
        usable = device_mib * headroom
        return int(usable // self.trial_mib), int(usable // self.pack_mib)


def probe_memory(cfg: TrainConfig, data_dir: str | Path, pack: int = 1,
                 device: str | None = None) -> MemoryEstimate:
    from study.training.packed import PackedSession
    from study.training.session import Session

    s = Session(cfg, data_dir, device=device)
    split = s.splits["train"]
    idx = np.argsort(split.length, kind="stable")[-cfg.batch_size:]  # (B,) the longest
    both = np.ones(len(split), dtype=bool)
    batch = split.batch(idx, both, both).to(s.device)
    if s.device.type == "cuda":
        one = _cuda_peak(lambda: s._step(batch), s.device)
        if pack > 1:
            packed = PackedSession([Session(cfg, data_dir, device=device, dataset=s.ds) for _ in range(pack)])
            many = _cuda_peak(lambda: packed._step([batch] * pack), s.device)
        else:
            many = one
        return MemoryEstimate(one / MIB, many / MIB, pack, "cuda max_memory_allocated")
    one = _counted_bytes(s, batch)
    return MemoryEstimate(one / MIB, pack * one / MIB, pack,
                          "parameters x 4 + saved activations + batch (counted on CPU)")


def _cuda_peak(step, device) -> float:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    torch.cuda.synchronize(device)
    return float(torch.cuda.max_memory_allocated(device))


def _counted_bytes(session, batch) -> float:
    storages: dict[int, int] = {}
    own = {p.untyped_storage().data_ptr() for p in session.model.parameters()}  # counted below
    own |= {t.untyped_storage().data_ptr() for t in vars(batch).values()}

    def keep(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in own:
            storages[ptr] = max(storages.get(ptr, 0), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        session._step(batch)
    params = sum(p.numel() * p.element_size() for p in session.model.parameters())
    data = sum(t.numel() * t.element_size() for t in vars(batch).values())
    return float(4 * params + sum(storages.values()) + data)


def device_memory_mib() -> float | None:
    """Total memory of the first visible CUDA device, MiB (None without one)."""
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(0).total_memory / MIB
