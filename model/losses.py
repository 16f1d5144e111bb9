"""Task losses: soft-target cross-entropy (categorical) and CCC loss (dimensional), and the
reconstruction weight, as in the official VAVL train.py:

- categorical: CE + 2 * MSE_rec per unimodal step;
- dimensional: sum over arousal/valence/dominance of (1 - CCC) + 1 * MSE_rec.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

RECON_WEIGHT = {"categorical": 2.0, "dimensional": 1.0}  # official train.py, per task


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
    """sum over the dimensions of (1 - CCC) (official train.py). pred/target: (N, 3) -> scalar in [0, 6]."""
    return (1.0 - ccc(pred, target)).sum()


def task_loss(pred: Tensor, target: Tensor, task: str) -> Tensor:
    """Loss of (N, K) predictions; 0 (still attached to the graph) for an empty set of samples."""
    if pred.shape[0] == 0:
        return pred.sum() * 0.0
    if task == "categorical":
        return soft_cross_entropy(pred, target)
    return ccc_loss(pred, target)


def share_weighted(pred: Tensor, target: Tensor, task: str, batch_size: int) -> Tensor:
    """task_loss of a subset of N of the batch's B samples, times N / B.

    Cross-entropy: the sum of the subset's per-sample losses / B, so every sample weighs 1/B
    whatever subset it falls in. CCC is not a per-sample loss: the subset's loss counts by its
    share of the batch.
    """
    return task_loss(pred, target, task) * (pred.shape[0] / max(batch_size, 1))


def recon_sum(recon: Tensor, target: Tensor, batch_size: int) -> Tensor:
    """Per-sample MSE (mean over feature dims) summed over the N rows, / B. (N, D) -> scalar.

    Over a batch where every sample has the modality this is the official MSE_loss.
    """
    return F.mse_loss(recon, target, reduction="none").mean(-1).sum() / max(batch_size, 1)
