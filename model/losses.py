"""Task losses: soft-target cross-entropy (categorical) and CCC loss (dimensional)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def soft_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """logits: (N, K), target: (N, K) class distribution (one-hot or soft) -> scalar."""
    return -(target * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def ccc(pred: Tensor, target: Tensor, eps: float = 1e-8) -> Tensor:
    """Concordance correlation per column. pred/target: (N, C) -> (C,). Population moments."""
    pm, tm = pred.mean(0), target.mean(0)
    pv, tv = pred.var(0, unbiased=False), target.var(0, unbiased=False)
    cov = ((pred - pm) * (target - tm)).mean(0)
    return 2 * cov / (pv + tv + (pm - tm) ** 2 + eps)


def ccc_loss(pred: Tensor, target: Tensor) -> Tensor:
    """1 - mean CCC over the dimensions. pred/target: (N, 3) -> scalar."""
    return 1.0 - ccc(pred, target).mean()


def task_loss(pred: Tensor, target: Tensor, task: str) -> Tensor:
    """Loss of (N, K) predictions; 0 (still attached to the graph) for an empty set of samples."""
    if pred.shape[0] == 0:
        return pred.sum() * 0.0
    if task == "categorical":
        return soft_cross_entropy(pred, target)
    return ccc_loss(pred, target)
