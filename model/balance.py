"""Modality balance in training: gradient norms per modality (MissBench's MLI, arXiv 2603.09874)
and on-the-fly gradient modulation with generalisation enhancement (OGM-GE, Peng et al., CVPR
2022). Pure torch; the session calls these around its optimizer step (docs/imbalance.md).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from model.batch import Batch


def grad_norm(params: list[nn.Parameter]) -> float:
    """The L2 norm of the gradients of `params` taken together (0.0 when none has a gradient)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))


def modality_scores(out, batch: Batch, task: str) -> dict[str, float]:
    """OGM-GE's per-modality score on the paired samples of a batch: the sum over them of each
    unimodal head's probability of the true class (categorical), or of exp(-squared error) of the
    head's prediction (dimensional: the same quantity for a Gaussian likelihood's mean). Empty when
    the batch has no paired sample or a modality was not encoded."""
    paired = batch.has_audio & batch.has_video                       # (B,)
    scores = {}
    for m in ("audio", "video"):
        e = out.encoded(m)
        if e is None:
            return {}
        keep = paired[e.idx]                                         # (N_m,) of e's rows
        if not bool(keep.any()):
            return {}
        pred = e.pred[keep].float().detach()                         # (P, K)
        target = batch.target[e.idx][keep].float()                   # (P, K)
        if task == "categorical":
            scores[m] = float((pred.softmax(-1) * target).sum())     # soft labels: expected prob.
        else:
            scores[m] = float(torch.exp(-((pred - target) ** 2).mean(-1)).sum())
    return scores


def ogm_coefficients(scores: dict[str, float], alpha: float) -> dict[str, float]:
    """k_m = 1 - tanh(alpha * rho_m) for the modality whose score ratio rho_m = s_m / s_other
    exceeds 1 (the dominant one), 1 for the other (Peng et al. 2022, eq. 10)."""
    if len(scores) != 2 or min(scores.values()) <= 0:
        return {m: 1.0 for m in ("audio", "video")}
    a, v = scores["audio"], scores["video"]
    rho = {"audio": a / v, "video": v / a}
    return {m: (1.0 - math.tanh(alpha * r)) if r > 1.0 else 1.0 for m, r in rho.items()}


@torch.no_grad()
def modulate_(params: list[nn.Parameter], coeff: float, generator: torch.Generator | None = None,
              enhance: bool = True) -> None:
    """In place: grad <- coeff * grad (+ N(0, std(grad)^2) noise on every weight matrix, the
    "generalisation enhancement" of OGM-GE, drawn with the gradient's own std before scaling)."""
    for p in params:
        if p.grad is None:
            continue
        g: Tensor = p.grad
        noise = None
        if enhance and g.ndim >= 2 and g.numel() > 1:
            std = float(g.float().std()) + 1e-8
            noise = torch.randn(g.shape, generator=generator, device="cpu").to(g.device, g.dtype) * std
        g.mul_(coeff)
        if noise is not None:
            g.add_(noise)
