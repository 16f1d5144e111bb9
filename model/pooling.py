"""Temporal pooling of encoder frames into one vector per sample (ModelConfig.pooling).

- "mean": masked mean over the real frames (VAVL's pooling; no parameters).
- "mean_std": statistics pooling (x-vector style): the masked mean and the masked standard
  deviation of every dimension, concatenated and projected back to d_model by one linear layer,
  so every head and fusion strategy sees the same (N, D) shape. The standard deviation tells a
  model how much each dimension moves within the utterance, which a mean alone averages away
  (docs/baselines.md measures what it is worth).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from model.heads import masked_mean


def masked_std(x: Tensor, mask: Tensor, mean: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """x: (B, T, D), mask: (B, T) bool -> (B, D) population std over real frames."""
    mean = masked_mean(x, mask) if mean is None else mean                   # (B, D)
    w = mask.unsqueeze(-1).to(x.dtype)                                      # (B, T, 1)
    var = (((x - mean.unsqueeze(1)) ** 2) * w).sum(1) / w.sum(1).clamp_min(1.0)  # (B, D)
    return torch.sqrt(var + eps)


class MeanPool(nn.Module):
    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # (B, T, D), (B, T) -> (B, D)
        return masked_mean(x, mask)


class StatsPool(nn.Module):
    """[mean | std] over real frames -> Linear(2D, D)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.proj = nn.Linear(2 * d_model, d_model)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # (B, T, D), (B, T) -> (B, D)
        mean = masked_mean(x, mask)                                          # (B, D)
        return self.proj(torch.cat([mean, masked_std(x, mask, mean)], -1))   # (B, D)


def build_pool(pooling: str, d_model: int) -> nn.Module:
    if pooling == "mean":
        return MeanPool()
    if pooling == "mean_std":
        return StatsPool(d_model)
    raise ValueError(f"pooling={pooling!r} not in ('mean', 'mean_std')")
