"""Conformer blocks (Gulati et al. 2020) with key padding masks, plus a cross-attention block.

Block = x + 1/2 FF(x) -> x + MHSA(x) -> x + Conv(x) -> x + 1/2 FF(x) -> LayerNorm (macaron).

Choices, stated once:
- Normalisation inside the conv module is LayerNorm over channels (per frame), not BatchNorm:
  BatchNorm would mix padded frames and other samples into its statistics; per-frame LayerNorm
  cannot leak padding.
- Padded frames are zeroed before the depthwise conv (so they do not bleed into real frames
  through the kernel) and at the end of every block.
- No explicit positional encoding: the official code's conformer uses relative positional
  attention; here order information comes from the depthwise convolution, which keeps
  F.scaled_dot_product_attention usable with a plain boolean key mask.
- Initialisation: PyTorch's defaults, or `xavier_init_` (the official conformer's `Linear`
  wrapper: Xavier-uniform weights and zero biases on the input projection, feed-forward and
  attention linears; its pointwise convs keep the default). The depthwise conv's bias is
  switchable (`depthwise_bias`; the official `DepthwiseConv1d` has none).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn import init


def zero_padding(x: Tensor, mask: Tensor) -> Tensor:
    """x: (B, T, D), mask: (B, T) True = real -> x with padded frames set to 0."""
    return x * mask.unsqueeze(-1).to(x.dtype)


class FeedForward(nn.Module):
    def __init__(self, d_model: int, mult: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(d_model),
            nn.Linear(d_model, d_model * mult),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(d_model * mult, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:  # (B, T, D) -> (B, T, D)
        return self.net(x)


class MultiHeadAttention(nn.Module):
    """Multi-head attention of queries x over keys/values y with a key padding mask; y may be
    kv_dim wide (default d_model), the attention and its output are d_model wide."""

    def __init__(self, d_model: int, n_heads: int, dropout: float, kv_dim: int | None = None):
        super().__init__()
        self.n_heads = n_heads
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(kv_dim or d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(self, x: Tensor, y: Tensor, key_mask: Tensor) -> Tensor:
        # x: (B, Tq, D), y: (B, Tk, D), key_mask: (B, Tk) bool, every row has a True
        b, tq, d = x.shape
        q = self._heads(self.q(x))  # (B, H, Tq, Dh)
        k, v = (self._heads(t) for t in self.kv(y).chunk(2, dim=-1))  # (B, H, Tk, Dh)
        attn_mask = key_mask[:, None, None, :]  # (B, 1, 1, Tk), True = attend
        drop = self.dropout if self.training else 0.0
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=drop)
        return self.out(o.transpose(1, 2).reshape(b, tq, d))  # (B, Tq, D)

    def _heads(self, t: Tensor) -> Tensor:  # (B, T, D) -> (B, H, T, D/H)
        b, n, d = t.shape
        return t.view(b, n, self.n_heads, d // self.n_heads).transpose(1, 2)


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # (B, T, D), (B, T) -> (B, T, D)
        h = self.norm(x)
        return self.drop(self.attn(h, h, mask))


class ConvModule(nn.Module):
    """LN -> pointwise (2D) + GLU -> depthwise conv (kernel k) -> LN -> swish -> pointwise.

    The pointwise (1x1) convolutions are nn.Linear over channels: the same function, without
    the (B, T, D) <-> (B, D, T) copies around them.
    """

    def __init__(self, d_model: int, kernel_size: int, dropout: float, depthwise_bias: bool = True):
        super().__init__()
        self.norm_in = nn.LayerNorm(d_model)
        self.pointwise_in = nn.Linear(d_model, 2 * d_model)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel_size, padding=kernel_size // 2,
                                   groups=d_model, bias=depthwise_bias)
        self.norm_mid = nn.LayerNorm(d_model)  # per-frame: padding cannot leak into statistics
        self.pointwise_out = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # (B, T, D), (B, T) -> (B, T, D)
        h = F.glu(self.pointwise_in(self.norm_in(x)), dim=-1)  # (B, T, D)
        h = zero_padding(h, mask)  # padded frames must not enter the kernel
        h = self.depthwise(h.transpose(1, 2)).transpose(1, 2)  # (B, T, D)
        return self.drop(self.pointwise_out(F.silu(self.norm_mid(h))))


class ConformerBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, kernel_size: int, ff_mult: int, dropout: float,
                 depthwise_bias: bool = True):
        super().__init__()
        self.ff1 = FeedForward(d_model, ff_mult, dropout)
        self.attn = SelfAttention(d_model, n_heads, dropout)
        self.conv = ConvModule(d_model, kernel_size, dropout, depthwise_bias)
        self.ff2 = FeedForward(d_model, ff_mult, dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # (B, T, D), (B, T) -> (B, T, D)
        x = x + 0.5 * self.ff1(x)
        x = x + self.attn(x, mask)
        x = x + self.conv(x, mask)
        x = x + 0.5 * self.ff2(x)
        return zero_padding(self.norm(x), mask)


class ConformerStack(nn.Module):
    def __init__(self, n_layers: int, d_model: int, n_heads: int, kernel_size: int, ff_mult: int,
                 dropout: float, depthwise_bias: bool = True):
        super().__init__()
        self.blocks = nn.ModuleList(
            ConformerBlock(d_model, n_heads, kernel_size, ff_mult, dropout, depthwise_bias)
            for _ in range(n_layers))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # (B, T, D), (B, T) -> (B, T, D)
        for block in self.blocks:
            x = block(x, mask)
        return x


def xavier_linear_(linear: nn.Linear, parts: int = 1) -> None:
    """Xavier-uniform weight (each of `parts` equal output slices on its own, as separate
    linears would be) and zero bias: the official conformer's `Linear` wrapper."""
    for w in linear.weight.data.chunk(parts, dim=0):
        init.xavier_uniform_(w)
    if linear.bias is not None:
        init.zeros_(linear.bias)


def xavier_init_(stack: ConformerStack) -> None:
    """The official initialisation of a stack's feed-forward and attention linears (the
    query/key/value maps as three d x d linears; pointwise convs keep PyTorch's default)."""
    for block in stack.blocks:
        for ff in (block.ff1, block.ff2):
            xavier_linear_(ff.net[1])
            xavier_linear_(ff.net[4])
        attn = block.attn.attn
        xavier_linear_(attn.q)
        xavier_linear_(attn.kv, parts=2)
        xavier_linear_(attn.out)


class CrossAttentionBlock(nn.Module):
    """Pre-LN cross-modal block (MulT style): x + Attn(LN x, LN y) -> x + FF(x), queries from x
    (d_model wide), keys/values from y (kv_dim wide, default d_model)."""

    def __init__(self, d_model: int, n_heads: int, ff_mult: int, dropout: float,
                 kv_dim: int | None = None):
        super().__init__()
        self.norm_q = nn.LayerNorm(d_model)
        self.norm_kv = nn.LayerNorm(kv_dim or d_model)
        self.attn = MultiHeadAttention(d_model, n_heads, dropout, kv_dim)
        self.drop = nn.Dropout(dropout)
        self.ff = FeedForward(d_model, ff_mult, dropout)

    def forward(self, x: Tensor, x_mask: Tensor, y: Tensor, y_mask: Tensor) -> Tensor:
        # x: (B, Tx, D) queries, y: (B, Ty, D) keys/values, masks (B, T*) bool -> (B, Tx, D)
        x = x + self.drop(self.attn(self.norm_q(x), self.norm_kv(y), y_mask))
        x = x + self.ff(x)
        return zero_padding(x, x_mask)


class PostLNCrossAttentionBlock(nn.Module):
    """Foal-Net's cross-attention layer (official model.py MultiHeadCrossAttention):
    LN(x + Dropout(Attn(x, y))), no feed-forward, no dropout on the attention weights; queries
    d_model wide, keys/values kv_dim wide (official: encode_dim)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float, kv_dim: int | None = None):
        super().__init__()
        self.attn = MultiHeadAttention(d_model, n_heads, dropout=0.0, kv_dim=kv_dim)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, x_mask: Tensor, y: Tensor, y_mask: Tensor) -> Tensor:
        # x: (B, Tx, D) queries, y: (B, Ty, D) keys/values, masks (B, T*) bool -> (B, Tx, D)
        return zero_padding(self.norm(x + self.drop(self.attn(x, y, y_mask))), x_mask)
