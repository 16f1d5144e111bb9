"""Small shared pieces: masked mean pooling and the MLP head of the official VAVL code."""

from __future__ import annotations

from torch import Tensor, nn


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """x: (B, T, D), mask: (B, T) bool -> (B, D) mean over real frames (rows need >= 1 frame)."""
    w = mask.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)


class MLPHead(nn.Module):
    """d_in -> hidden -> bottleneck -> d_out, ReLU + dropout between (VAVL's MLP: 512, 256)."""

    def __init__(self, d_in: int, hidden: int, bottleneck: int, d_out: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_in, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, bottleneck),
            nn.ReLU(),
            nn.Linear(bottleneck, d_out),
        )

    def forward(self, x: Tensor) -> Tensor:  # (B, d_in) -> (B, d_out)
        return self.net(x)
