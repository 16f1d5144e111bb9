"""Small shared pieces: masked mean pooling and the MLP head of the official VAVL code."""

from __future__ import annotations

from torch import Tensor, nn


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """x: (B, T, D), mask: (B, T) bool -> (B, D) mean over real frames (rows need >= 1 frame)."""
    w = mask.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)


class MLPHead(nn.Module):
    """d_in -> hidden -> ReLU -> dropout -> bottleneck -> d_out (VAVL's MLP: 512, 256).

    As in the official net/avmodel.py MLP, nothing sits between the bottleneck and the output
    layer; bottleneck_relu=True inserts a ReLU there.
    """

    def __init__(self, d_in: int, hidden: int, bottleneck: int, d_out: int, dropout: float,
                 bottleneck_relu: bool = False):
        super().__init__()
        act = [nn.ReLU()] if bottleneck_relu else []
        self.net = nn.Sequential(
            nn.Linear(d_in, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, bottleneck),
            *act,
            nn.Linear(bottleneck, d_out),
        )

    def forward(self, x: Tensor) -> Tensor:  # (B, d_in) -> (B, d_out)
        return self.net(x)
