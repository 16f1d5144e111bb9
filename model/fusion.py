"""Fusion strategies behind one interface.

A strategy sees only the P samples that have both modalities (FusionInput) and returns the fused
prediction plus unweighted auxiliary losses (FusionOutput); `aux_weights` says how much each aux
loss counts in the total. Samples with one modality are predicted by that modality's unimodal
branch (routing in AVModel), which is what every strategy reduces to when a modality is missing
(for "late"/"gated": a missing modality gets weight 0).

Strategies (cfg.fusion) are registered in model/registry.py (FUSIONS).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.config import ModelConfig
from model.conformer import CrossAttentionBlock, PostLNCrossAttentionBlock
from model.heads import MLPHead
from model.pooling import build_pool


@dataclass
class FusionInput:
    audio: Tensor  # (P, Ta, D) encoded audio frames (after the shared block)
    audio_mask: Tensor  # (P, Ta) bool
    video: Tensor  # (P, Tv, D)
    video_mask: Tensor  # (P, Tv) bool
    audio_pooled: Tensor  # (P, D)
    video_pooled: Tensor  # (P, D)
    audio_pred: Tensor  # (P, K) unimodal head outputs (logits or values)
    video_pred: Tensor  # (P, K)
    target: Tensor  # (P, K)
    label: Tensor  # (P,) long, -1 for dimensional
    audio_input: Tensor | None = None  # (P, D_audio) masked mean of the input features
    video_input: Tensor | None = None  # (P, D_video)


@dataclass
class FusionOutput:
    pred: Tensor  # (P, K) logits (categorical) or values (dimensional)
    aux: dict[str, Tensor] = field(default_factory=dict)  # unweighted auxiliary losses


class FusionStrategy(nn.Module):
    """Base class: subclasses set aux_weights and implement forward(FusionInput) -> FusionOutput."""

    aux_weights: dict[str, float] = {}

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.task = cfg.task


def _head(cfg: ModelConfig, d_in: int) -> MLPHead:
    return MLPHead(d_in, cfg.d_model, cfg.head_hidden, cfg.n_outputs, cfg.head_dropout,
                   cfg.head_bottleneck_relu)


def mix_predictions(audio_pred: Tensor, video_pred: Tensor, w_audio: Tensor, task: str) -> Tensor:
    """Weighted average of unimodal outputs. w_audio: () or (P, 1) in [0, 1] -> (P, K).

    Categorical: probabilities are averaged and returned as log-probabilities, which are valid
    logits (softmax(log p) = p). Dimensional: values are averaged.
    """
    if task == "dimensional":
        return w_audio * audio_pred + (1 - w_audio) * video_pred
    probs = w_audio * audio_pred.softmax(-1) + (1 - w_audio) * video_pred.softmax(-1)
    return probs.clamp_min(1e-12).log()


class ConcatFusion(FusionStrategy):
    """"vavl": the paper's audio-visual head, an MLP on concat(pooled audio, pooled video)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.head = _head(cfg, 2 * cfg.d_model)

    def forward(self, inp: FusionInput) -> FusionOutput:
        return FusionOutput(self.head(torch.cat([inp.audio_pooled, inp.video_pooled], dim=-1)))


class LateFusion(FusionStrategy):
    """"late": average of the unimodal heads' outputs.

    One learned global mixing weight sigmoid(mix), initialised to the plain average (0.5), so the
    strategy has something to train in the paper's fusion-only pass.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.mix = nn.Parameter(torch.zeros(()))

    def forward(self, inp: FusionInput) -> FusionOutput:
        w = torch.sigmoid(self.mix)
        return FusionOutput(mix_predictions(inp.audio_pred, inp.video_pred, w, self.task))


class GatedFusion(FusionStrategy):
    """"gated": per-sample modality weights softmax(gate(concat(pooled a, pooled v))) mixing the
    unimodal outputs as in late fusion. A missing modality has weight 0, i.e. the sample is
    predicted by the present modality's branch (the routing in AVModel)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.gate = nn.Sequential(
            nn.Linear(2 * cfg.d_model, cfg.gated_hidden),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.gated_hidden, 2),
        )

    def weights(self, inp: FusionInput) -> Tensor:  # -> (P, 2) [audio, video], rows sum to 1
        return self.gate(torch.cat([inp.audio_pooled, inp.video_pooled], dim=-1)).softmax(-1)

    def forward(self, inp: FusionInput) -> FusionOutput:
        w = self.weights(inp)[:, :1]  # (P, 1)
        return FusionOutput(mix_predictions(inp.audio_pred, inp.video_pred, w, self.task))


class CrossModalFusion(nn.Module):
    """MulT-style cross-modal attention in both directions -> concat of the pooled results.

    audio queries attend over the video frames (layer by layer, keys/values stay the video
    stream) and vice versa; returns (P, Wa + Wv): [a2v pooled | v2a pooled].
    form "pre_ln": pre-LN blocks with a feed-forward (MulT); "post_ln": Foal-Net's official layer.
    widths (Wa, Wv): each stream's width; a stream narrower or wider than d_model is first mapped
    by its own Linear(d_model, W) (Foal-Net's official streams: 1024 audio, 768 video).
    """

    def __init__(self, cfg: ModelConfig, n_layers: int, n_heads: int | None = None, form: str = "pre_ln",
                 widths: tuple[int, int] | None = None):
        super().__init__()
        heads = n_heads or cfg.n_heads
        wa, wv = widths or (cfg.d_model, cfg.d_model)
        self.widths = (wa, wv)
        self.map_audio = nn.Linear(cfg.d_model, wa) if wa != cfg.d_model else nn.Identity()
        self.map_video = nn.Linear(cfg.d_model, wv) if wv != cfg.d_model else nn.Identity()

        def block(q_dim: int, kv_dim: int) -> nn.Module:
            if form == "post_ln":
                return PostLNCrossAttentionBlock(q_dim, heads, cfg.dropout, kv_dim)
            return CrossAttentionBlock(q_dim, heads, cfg.ff_mult, cfg.dropout, kv_dim)

        self.a2v = nn.ModuleList(block(wa, wv) for _ in range(n_layers))
        self.v2a = nn.ModuleList(block(wv, wa) for _ in range(n_layers))
        self.pool = nn.ModuleDict({"a2v": build_pool(cfg.pooling, wa), "v2a": build_pool(cfg.pooling, wv)})

    def direction(self, name: str, x: Tensor, x_mask: Tensor, y: Tensor, y_mask: Tensor) -> Tensor:
        """Queries x (P, Tx, Wx) attend over y (P, Ty, Wy) through the `name` ("a2v" | "v2a") stack
        -> pooled (P, Wx) (ModelConfig.pooling)."""
        for blk in getattr(self, name):
            x = blk(x, x_mask, y, y_mask)
        return self.pool[name](x, x_mask)

    def streams(self, a: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """(P, Ta, D), (P, Tv, D) encoded frames -> (P, Ta, Wa), (P, Tv, Wv) streams."""
        return self.map_audio(a), self.map_video(v)

    def attend(self, sa: Tensor, a_mask: Tensor, sv: Tensor, v_mask: Tensor) -> Tensor:
        """Both directions over already mapped streams -> (P, Wa + Wv)."""
        xa = self.direction("a2v", sa, a_mask, sv, v_mask)  # (P, Wa)
        xv = self.direction("v2a", sv, v_mask, sa, a_mask)  # (P, Wv)
        return torch.cat([xa, xv], dim=-1)

    def forward(self, a: Tensor, a_mask: Tensor, v: Tensor, v_mask: Tensor) -> Tensor:
        sa, sv = self.streams(a, v)
        return self.attend(sa, a_mask, sv, v_mask)  # (P, Wa + Wv)


class CrossAttentionFusion(FusionStrategy):
    """"xattn": cross-modal attention (xattn_layers per direction), pooled + concat + MLP head."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.fuse = CrossModalFusion(cfg, cfg.xattn_layers)
        self.head = _head(cfg, 2 * cfg.d_model)

    def forward(self, inp: FusionInput) -> FusionOutput:
        fused = self.fuse(inp.audio, inp.audio_mask, inp.video, inp.video_mask)
        return FusionOutput(self.head(fused))


class Projection(nn.Module):
    """Foal-Net's projection: LN(W1 x + Dropout(W2 gelu(W1 x)))."""

    def __init__(self, d_in: int, d_out: int, dropout: float):
        super().__init__()
        self.linear1 = nn.Linear(d_in, d_out, bias=False)
        self.linear2 = nn.Linear(d_out, d_out, bias=False)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_out)

    def forward(self, x: Tensor) -> Tensor:  # (P, d_in) -> (P, d_out)
        e = self.linear1(x)
        return self.norm(e + self.drop(self.linear2(F.gelu(e))))


def emotion_groups(target: Tensor, label: Tensor, task: str) -> Tensor:
    """(P,) long group ids that define "same emotion" for Foal-Net.

    Categorical: the class label (argmax of the target when label is -1).
    Dimensional: the arousal/valence quadrant of the z-scored targets, 2*(arousal > 0) + (valence > 0)
    (4 groups; sign is used rather than batch terciles so the grouping does not depend on the batch).
    """
    if task == "categorical":
        return torch.where(label >= 0, label, target.argmax(-1))
    return 2 * (target[:, 0] > 0).long() + (target[:, 1] > 0).long()


def alignment_loss(sim: Tensor, groups: Tensor, positives: str = "mean") -> Tensor:
    """Multi-positive InfoNCE. sim: (P, P) scaled audio-to-video similarities, groups: (P,).

    Positives of audio i = every video j with the same group (including j = i). positives="mean":
    the target distribution is uniform over them (each anchor weighs 1); "sum": every positive
    has target 1, so an anchor weighs its number of positives (official model.py, loss_a2v).
    Average of the audio->video and video->audio directions.
    """
    pos = (groups[:, None] == groups[None, :]).to(sim.dtype)  # (P, P), symmetric
    t = pos / pos.sum(1, keepdim=True) if positives == "mean" else pos
    a2v = -(t * F.log_softmax(sim, dim=1)).sum(1).mean()
    v2a = -(t * F.log_softmax(sim.t(), dim=1)).sum(1).mean()
    return 0.5 * (a2v + v2a)


@torch.no_grad()
def hard_negatives(sim: Tensor, groups: Tensor, mode: str = "argmax") -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One different-group partner per anchor, for the label matching task.

    sim: (P, P) audio-row x video-column similarity (scaled logits for mode "sample"), groups: (P,).
    Returns (rows, video of each row, cols, audio of each col): audio anchors that have a
    different-group video and the chosen video, then video anchors and the chosen audio.
    mode "argmax": the most similar different-group partner; "sample": drawn with probability
    softmax(sim) over the different-group partners (official model.py, torch.multinomial).
    """
    diff = groups[:, None] != groups[None, :]  # (P, P)
    masked = sim.float().masked_fill(~diff, float("-inf"))
    rows = diff.any(1).nonzero().squeeze(1)  # audio with a possible negative
    cols = diff.any(0).nonzero().squeeze(1)  # video with a possible negative
    if mode == "sample":
        row_neg = torch.multinomial(masked[rows].softmax(1), 1).squeeze(1) if rows.numel() else rows
        col_neg = torch.multinomial(masked[:, cols].t().softmax(1), 1).squeeze(1) if cols.numel() else cols
    else:
        row_neg, col_neg = masked[rows].argmax(1), masked[:, cols].argmax(0)
    return rows, row_neg, cols, col_neg


@torch.no_grad()
def matching_pairs(sim: Tensor, groups: Tensor, mode: str = "argmax") -> tuple[Tensor, Tensor, Tensor]:
    """Pairs for the cross-modal emotion label matching task.

    sim: (P, P) audio-row x video-column similarity, groups: (P,).
    Returns audio indices, video indices and targets (1. = same emotion), each (N,):
    the P original pairs (i, i) as positives, then for every audio i a video with a different
    group, then for every video j an audio with a different group (see hard_negatives; rows and
    columns without any different-group sample get no negative).
    """
    p = groups.shape[0]
    rows, row_neg, cols, col_neg = hard_negatives(sim, groups, mode)
    idx = torch.arange(p, device=sim.device)
    a_idx = torch.cat([idx, rows, col_neg])
    v_idx = torch.cat([idx, row_neg, cols])
    target = (groups[a_idx] == groups[v_idx]).to(sim.dtype)
    return a_idx, v_idx, target


class FoalNetFusion(FusionStrategy):
    """"foalnet": fusion after alignment (Li et al., arXiv 2408.09438; official code layout
    ASolitaryMan/Foal-Net model.py).

    (a) audio-video emotion alignment: projected (foal_proj_dropout), L2-normalised pooled
        embeddings, multi-positive InfoNCE with positives = same emotion group (see
        emotion_groups; foal_positives mean | sum), learnable temperature (init foal_temperature;
        foal_temperature_form "paper": logits = cos * exp(s), s = log(1/tau); "official":
        logits = cos / t with t initialised to log(1/tau)) -> aux "align" (weight foal_align_weight);
    (b) cross-modal emotion label matching: does a cross-attention fused (audio, video) pair carry
        the same emotion? Negatives are different-group partners (foal_negatives argmax | sample).
        foal_match_heads "directional": an a2v and a v2a 2-way head, each on its own direction's
        pooled stream, P positives + one negative per anchor (official); "joint": one binary
        head on both directions, P positives + a negative per audio and per video
        -> aux "match" (weight foal_match_weight);
    (c) classification from the bidirectional cross-attention fusion (foal_layers per direction,
        foal_heads heads, foal_xattn post_ln (official) | pre_ln; stream widths foal_audio_width,
        foal_video_width, 0 = d_model; foal_cls_head mlp | linear (official)).
    Switches foal_use_align / foal_use_match remove (a) / (b) and their parameters. Batches with
    fewer than two paired samples give zero aux losses.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        wa, wv = cfg.foal_audio_width or cfg.d_model, cfg.foal_video_width or cfg.d_model
        self.fuse = CrossModalFusion(cfg, cfg.foal_layers, cfg.foal_heads, cfg.foal_xattn, (wa, wv))
        self.head = (nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(wa + wv, cfg.n_outputs))
                     if cfg.foal_cls_head == "linear" else _head(cfg, wa + wv))
        self.use_align, self.use_match = cfg.foal_use_align, cfg.foal_use_match
        self.temperature, self.temperature_form = cfg.foal_temperature, cfg.foal_temperature_form
        self.positives, self.negatives = cfg.foal_positives, cfg.foal_negatives
        self.match_heads, self.align_input = cfg.foal_match_heads, cfg.foal_align_input
        self.aux_weights = {}
        if self.use_align:
            d_a, d_v = ((cfg.audio_dim, cfg.video_dim) if self.align_input == "features"
                        else (cfg.d_model, cfg.d_model))
            self.proj_audio = Projection(d_a, cfg.foal_proj_dim, cfg.foal_proj_dropout)
            self.proj_video = Projection(d_v, cfg.foal_proj_dim, cfg.foal_proj_dropout)
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.foal_temperature)))
            self.aux_weights["align"] = cfg.foal_align_weight
        if self.use_match:
            if self.match_heads == "directional":
                self.match_a2v = nn.Linear(wa, 2)
                self.match_v2a = nn.Linear(wv, 2)
            else:
                self.match_head = nn.Linear(wa + wv, 1)
            self.aux_weights["match"] = cfg.foal_match_weight

    def embeddings(self, inp: FusionInput) -> tuple[Tensor, Tensor]:
        """L2-normalised (P, E) audio and video embeddings used for alignment and mining.

        foal_align_input "encoded": pooled encoded frames (the cross-attention's inputs);
        "features": pooled input features (the pretrained extractors' outputs, as the official
        AVEL pools WavLM's output and the CLIP frame features)."""
        if self.use_align and self.align_input == "features":
            za, zv = self.proj_audio(inp.audio_input), self.proj_video(inp.video_input)
        elif self.use_align:
            za, zv = self.proj_audio(inp.audio_pooled), self.proj_video(inp.video_pooled)
        else:
            za, zv = inp.audio_pooled, inp.video_pooled
        return F.normalize(za, dim=-1), F.normalize(zv, dim=-1)

    def logits(self, sim: Tensor) -> Tensor:
        """(P, P) cosine similarities -> contrastive logits (the temperature form)."""
        if not self.use_align:
            return sim / self.temperature
        if self.temperature_form == "official":
            return sim / self.logit_scale  # official: sim / temp, temp initialised to log(1/0.07)
        return sim * self.logit_scale.exp().clamp(max=100.0)

    def forward(self, inp: FusionInput) -> FusionOutput:
        sa, sv = self.fuse.streams(inp.audio, inp.video)  # (P, Ta, Wa), (P, Tv, Wv)
        fused = self.fuse.attend(sa, inp.audio_mask, sv, inp.video_mask)  # (P, Wa + Wv)
        out = FusionOutput(self.head(fused))
        p = fused.shape[0]
        groups = emotion_groups(inp.target, inp.label, self.task)
        za, zv = self.embeddings(inp)
        logits = self.logits(za @ zv.t())  # (P, P)
        if self.use_align:
            out.aux["align"] = alignment_loss(logits, groups, self.positives) if p >= 2 else logits.sum() * 0.0
        if self.use_match:
            streams = (sa, inp.audio_mask, sv, inp.video_mask)
            out.aux["match"] = self._match_loss(streams, fused, logits.detach(), groups)
        return out

    def _match_loss(self, streams: tuple, fused: Tensor, sim: Tensor, groups: Tensor) -> Tensor:
        if self.match_heads == "directional":
            return self._directional_match_loss(streams, fused, sim, groups)
        sa, a_mask, sv, v_mask = streams
        a_idx, v_idx, target = matching_pairs(sim, groups, self.negatives)
        p = fused.shape[0]
        neg_a, neg_v = a_idx[p:], v_idx[p:]
        parts = [fused]  # the original pairs are the positives: reuse their fusion
        if neg_a.numel():
            parts.append(self.fuse.attend(sa[neg_a], a_mask[neg_a], sv[neg_v], v_mask[neg_v]))
        logits = self.match_head(torch.cat(parts)).squeeze(-1)  # (N,)
        return F.binary_cross_entropy_with_logits(logits, target)

    def _directional_match_loss(self, streams: tuple, fused: Tensor, sim: Tensor, groups: Tensor) -> Tensor:
        """Official MEM: mean of the a2v and v2a 2-way cross-entropies, each over the P original
        pairs (label 1) and one different-group partner per anchor (label 0)."""
        sa, a_mask, sv, v_mask = streams
        rows, row_neg, cols, col_neg = hard_negatives(sim, groups, self.negatives)
        wa = self.fuse.widths[0]
        a2v = [fused[:, :wa]]  # audio-query stream of the original pairs
        if rows.numel():
            a2v.append(self.fuse.direction("a2v", sa[rows], a_mask[rows], sv[row_neg], v_mask[row_neg]))
        v2a = [fused[:, wa:]]
        if cols.numel():
            v2a.append(self.fuse.direction("v2a", sv[cols], v_mask[cols], sa[col_neg], a_mask[col_neg]))
        return 0.5 * (_pair_ce(self.match_a2v(torch.cat(a2v)), fused.shape[0])
                      + _pair_ce(self.match_v2a(torch.cat(v2a)), fused.shape[0]))


def _pair_ce(logits: Tensor, n_pos: int) -> Tensor:
    """2-way cross-entropy of (N, 2) logits whose first n_pos rows are matches (label 1)."""
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    labels[:n_pos] = 1
    return F.cross_entropy(logits.float(), labels)


def build_fusion(cfg: ModelConfig) -> FusionStrategy:
    """The strategy registered under cfg.fusion (model/registry.py)."""
    from model.registry import fusion_class

    return fusion_class(cfg.fusion)(cfg)
