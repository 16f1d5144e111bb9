"""VAVL (Goncalves et al., arXiv 2305.07216) with a pluggable fusion strategy.

audio/video frames -> 1x1 conv projection -> linear to d_model -> conformer encoder (per modality)
-> shared conformer layers (same weights for both modalities) + residual + LayerNorm
-> masked mean pooling -> unimodal head (prediction) and reconstruction head (pooled input)
paired samples additionally -> fusion strategy (model/fusion.py).

Each modality is encoded only for the samples that have it (index_select), so no attention ever
runs over an all-masked row. out.pred routes: paired -> fusion, audio-only -> audio head,
video-only -> video head.

Three forward modes, one per training pass kind (study/training/session.py schedules):
- joint (default): every loss trains everything it touches (the `fused` schedule);
- detach_fusion=True: the fusion strategy sees detached encoder outputs, so its loss trains only
  the fusion module while the unimodal losses train the encoders (the `detached` schedule: the
  official VAVL semantics in one pass);
- fusion_only=True: encoders in eval mode under no_grad, only the fusion loss (third pass of
  `three_pass`, as the official train.py 'weights' step).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from model.batch import Batch
from model.config import ModelConfig
from model.conformer import ConformerStack, xavier_init_, xavier_linear_, zero_padding
from model.fusion import FusionInput, build_fusion
from model.heads import MLPHead, masked_mean
from model.losses import RECON_WEIGHT, recon_sum, share_weighted, task_loss
from model.pooling import build_pool

MODALITIES = ("audio", "video")


class ModalityEncoder(nn.Module):
    """(N, T, D_in) features -> (N, T, d_model) frames. One class, instantiated per modality."""

    def __init__(self, in_dim: int, cfg: ModelConfig):
        super().__init__()
        self.proj = nn.Conv1d(in_dim, cfg.proj_dim, kernel_size=1, bias=False)
        self.inp = nn.Linear(cfg.proj_dim, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = ConformerStack(cfg.enc_layers, cfg.d_model, cfg.n_heads, cfg.kernel_size,
                                     cfg.ff_mult, cfg.dropout, cfg.depthwise_bias)
        if cfg.conformer_init == "xavier":
            xavier_linear_(self.inp)
            xavier_init_(self.blocks)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h = self.proj(x.transpose(1, 2)).transpose(1, 2)  # (N, T, proj_dim)
        h = zero_padding(self.drop(self.inp(h)), mask)  # (N, T, d_model)
        return self.blocks(h, mask)


class SharedBlock(nn.Module):
    """Shared conformer layers: LayerNorm(conformer(x) + x) (residual switchable).

    shared_input_proj: the official Shared block's conformer starts with its own input projection,
    Linear(d, d) + dropout, which the residual skips: LayerNorm(conformer(drop(W x)) + x).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.inp = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_model), nn.Dropout(cfg.dropout)) \
            if cfg.shared_input_proj else None
        self.blocks = ConformerStack(cfg.shared_layers, cfg.d_model, cfg.n_heads, cfg.kernel_size,
                                     cfg.ff_mult, cfg.dropout, cfg.depthwise_bias)
        self.residual = cfg.shared_residual
        self.norm = nn.LayerNorm(cfg.d_model)
        if cfg.conformer_init == "xavier":
            xavier_init_(self.blocks)
            if self.inp is not None:
                xavier_linear_(self.inp[0])

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # (N, T, D) -> (N, T, D)
        h = x if self.inp is None else zero_padding(self.inp(x), mask)  # (N, T, D)
        h = self.blocks(h, mask)
        if self.residual:
            h = h + x
        return zero_padding(self.norm(h), mask)


@dataclass
class Encoded:
    """One modality, for the N samples of the batch that have it."""

    idx: Tensor  # (N,) long, positions in the batch
    frames: Tensor  # (N, T, D) after the shared block
    mask: Tensor  # (N, T) bool
    pooled: Tensor  # (N, D)
    pred: Tensor  # (N, K) unimodal head output
    input_pooled: Tensor | None = None  # (N, D_in) masked mean of the input features
    recon: Tensor | None = None  # (N, D_in) reconstructed pooled input
    recon_target: Tensor | None = None  # (N, D_in) pooled input features


@dataclass
class ModelOutput:
    pred: Tensor  # (B, K) routed by availability
    audio: Encoded | None
    video: Encoded | None
    pair_idx: Tensor  # (P,) long, samples with both modalities
    fusion_pred: Tensor | None  # (P, K), None when P = 0
    aux: dict[str, Tensor] = field(default_factory=dict)  # unweighted fusion aux losses
    fusion_only: bool = False
    detached: bool = False  # the fusion strategy saw detached encoder outputs

    def encoded(self, modality: str) -> Encoded | None:
        return self.audio if modality == "audio" else self.video


class AVModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        dims = {"audio": cfg.audio_dim, "video": cfg.video_dim}
        self.encoders = nn.ModuleDict({m: ModalityEncoder(dims[m], cfg) for m in MODALITIES})
        self.shared = SharedBlock(cfg) if cfg.use_shared and cfg.shared_layers > 0 else None
        self.pool = nn.ModuleDict({m: build_pool(cfg.pooling, cfg.d_model) for m in MODALITIES})
        self.heads = nn.ModuleDict({m: _unimodal_head(cfg, cfg.n_outputs) for m in MODALITIES})
        self.recon = (nn.ModuleDict({m: _unimodal_head(cfg, dims[m]) for m in MODALITIES})
                      if cfg.recon_weight > 0 else None)
        self.fusion = build_fusion(cfg)

    # ---- forward -------------------------------------------------------------------------
    def forward(self, batch: Batch, fusion_only: bool = False, detach_fusion: bool = False) -> ModelOutput:
        """fusion_only: the paper's third pass -- everything but the fusion strategy runs in
        eval mode under no_grad, so only the audio-visual path gets gradients.
        detach_fusion: one pass where the fusion strategy sees detached encoder outputs (its
        gradient never reaches the encoders, the unimodal heads or the shared block)."""
        frozen = self._frozen() if fusion_only else contextlib.nullcontext()
        with frozen:
            enc = {m: self._encode(m, batch) for m in MODALITIES}
        pair_idx, fused = self._fuse(batch, enc, detach=detach_fusion)
        pred = self._route(batch, enc, pair_idx, fused.pred if fused else None)
        return ModelOutput(pred=pred, audio=enc["audio"], video=enc["video"], pair_idx=pair_idx,
                           fusion_pred=fused.pred if fused else None,
                           aux=dict(fused.aux) if fused else {}, fusion_only=fusion_only,
                           detached=detach_fusion)

    def _encode(self, modality: str, batch: Batch) -> Encoded | None:
        has = batch.has_audio if modality == "audio" else batch.has_video
        idx = has.nonzero().squeeze(1)  # (N,)
        if idx.numel() == 0:
            return None
        x, mask = _subset_frames(getattr(batch, modality), getattr(batch, f"{modality}_mask"), idx)
        return Encoded(idx, mask=mask, **self.trunk(modality, x, mask))

    def trunk(self, modality: str, x: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """The per-sample path of one modality: (N, T, D_in) frames of samples that have it ->
        frames, pooled, pred, input_pooled (and recon, recon_target). No sample sees another, so
        model/packed.py runs it under vmap for K stacked models."""
        h = self.encoders[modality](x, mask)  # (N, T, D)
        if self.shared is not None:
            h = self.shared(h, mask)
        pooled = self.pool[modality](h, mask)  # (N, D)
        out = {"frames": h, "pooled": pooled, "pred": self.heads[modality](pooled),
               "input_pooled": masked_mean(x, mask).float()}
        if self.recon is not None:
            out["recon"] = self.recon[modality](pooled)
            out["recon_target"] = out["input_pooled"]
        return out

    def _fuse(self, batch: Batch, enc: dict[str, Encoded | None], detach: bool = False):
        pair_idx, inp = self.fusion_input(batch, enc, detach)
        return pair_idx, None if inp is None else self.fusion(inp)

    def fusion_input(self, batch: Batch, enc: dict[str, Encoded | None],
                     detach: bool = False) -> tuple[Tensor, FusionInput | None]:
        """The paired samples' (P,) positions and what the fusion strategy sees (None if P = 0)."""
        pair = batch.has_audio & batch.has_video
        pair_idx = pair.nonzero().squeeze(1)  # (P,)
        if pair_idx.numel() == 0:
            return pair_idx, None
        rows = {m: (torch.cumsum(getattr(batch, f"has_{m}").long(), 0) - 1)[pair_idx] for m in MODALITIES}
        a_frames, a_mask = _subset_frames(enc["audio"].frames, enc["audio"].mask, rows["audio"])
        v_frames, v_mask = _subset_frames(enc["video"].frames, enc["video"].mask, rows["video"])
        inp = FusionInput(
            audio=a_frames, audio_mask=a_mask, video=v_frames, video_mask=v_mask,
            audio_pooled=enc["audio"].pooled[rows["audio"]], video_pooled=enc["video"].pooled[rows["video"]],
            audio_pred=enc["audio"].pred[rows["audio"]], video_pred=enc["video"].pred[rows["video"]],
            target=batch.target[pair_idx], label=batch.label[pair_idx],
            audio_input=enc["audio"].input_pooled[rows["audio"]],
            video_input=enc["video"].input_pooled[rows["video"]])
        if detach:
            inp = FusionInput(**{k: None if v is None else v.detach() for k, v in vars(inp).items()})
        return pair_idx, inp

    def _route(self, batch: Batch, enc: dict[str, Encoded | None], pair_idx: Tensor,
               fusion_pred: Tensor | None) -> Tensor:
        pred = batch.target.new_zeros(batch.size, self.cfg.n_outputs, dtype=torch.float32)  # (B, K)
        for e in enc.values():  # video after audio, fusion last: paired rows end as fusion
            if e is not None:
                pred = pred.index_copy(0, e.idx, e.pred.float())
        if fusion_pred is not None:
            pred = pred.index_copy(0, pair_idx, fusion_pred.float())
        return pred

    @contextlib.contextmanager
    def _frozen(self, no_grad: bool = True) -> Iterator[None]:
        """Everything but the fusion module in eval mode (and, by default, under no_grad)."""
        modules = [m for name, m in self.named_children() if name != "fusion"]
        modes = [m.training for m in modules]
        for m in modules:
            m.eval()
        try:
            with torch.no_grad() if no_grad else contextlib.nullcontext():
                yield
        finally:
            for m, mode in zip(modules, modes):
                m.train(mode)

    # ---- loss & optimisation --------------------------------------------------------------
    def loss(self, out: ModelOutput, batch: Batch) -> dict[str, Tensor]:
        """Loss components and "total" (what to backward).

        Joint and detached passes: every sample of the B in the batch weighs 1/B in each term it
        takes part in, whatever its pairing (model.losses.share_weighted, recon_sum):
          task   the fusion output on the P paired samples (P/B x mean);
          audio  the audio head on the samples with audio (N_a/B x mean; the mean alone with
                 unimodal_loss "mean"); video likewise;
          recon  per-sample MSE of the reconstructed pooled input, summed over present modalities;
          total = task + unimodal_weight * (audio + video) + recon_weight * RECON_WEIGHT[task] * recon
                  + weighted fusion aux losses.
        A pass over one modality's samples (three_pass) is therefore the official unimodal step:
        CE + 2 MSE_rec (categorical), sum(1 - CCC) + MSE_rec (dimensional).
        fusion_only pass: the mean task loss of the paired samples' fusion output + aux losses
        (the official 'weights' step). "total" has no gradient when nothing in the batch trains
        (fusion_only without paired samples): skip the backward then (check total.requires_grad).
        """
        cfg, b = self.cfg, batch.size
        zero = batch.target.new_zeros(())
        fusion_pred = out.fusion_pred
        if out.fusion_only:
            losses = {"task": zero if fusion_pred is None
                      else task_loss(fusion_pred.float(), batch.target[out.pair_idx], cfg.task)}
            total = losses["task"]
        else:
            losses = {"task": zero if fusion_pred is None
                      else share_weighted(fusion_pred.float(), batch.target[out.pair_idx], cfg.task, b)}
            for m in MODALITIES:
                e = out.encoded(m)
                losses[m] = zero if e is None else self._unimodal_loss(e, batch)
            total = losses["task"] + cfg.unimodal_weight * (losses["audio"] + losses["video"])
            if self.recon is not None:
                losses["recon"] = _recon_loss(out, b)
                total = total + cfg.recon_weight * RECON_WEIGHT[cfg.task] * losses["recon"]
        for name, value in out.aux.items():
            losses[name] = value
            total = total + self.fusion.aux_weights.get(name, 1.0) * value
        losses["total"] = total
        return losses

    def _unimodal_loss(self, e: Encoded, batch: Batch) -> Tensor:
        """One head's loss on its N_m samples: N_m/B x mean (`share`, VAVL), or the mean alone
        (`mean`: each modality's loss weighs 1 per batch however rarely its stream is present)."""
        pred, target = e.pred.float(), batch.target[e.idx]                 # (N_m, K)
        if self.cfg.unimodal_loss == "mean":
            return task_loss(pred, target, self.cfg.task)
        return share_weighted(pred, target, self.cfg.task, batch.size)

    def param_groups(self, weight_decay: float) -> list[dict]:
        """Two groups for one AdamW: matrices/conv kernels decay; norms, biases, scalars do not."""
        decay, no_decay = [], []
        for p in self.parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
                {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]

    def fusion_parameters(self) -> list[nn.Parameter]:
        """What the fusion_only pass trains."""
        return list(self.fusion.parameters())

    def modality_parameters(self, modality: str) -> list[nn.Parameter]:
        """The parameters only `modality` reaches: its encoder, pooling, prediction head and
        reconstruction head (the shared layers and the fusion module belong to neither). MissBench's
        MLI compares the gradient norms of these sets; OGM-GE modulates the encoder's."""
        parts = [self.encoders[modality], self.pool[modality], self.heads[modality]]
        if self.recon is not None:
            parts.append(self.recon[modality])
        return [p for part in parts for p in part.parameters() if p.requires_grad]


def _unimodal_head(cfg: ModelConfig, d_out: int) -> MLPHead:
    return MLPHead(cfg.d_model, cfg.d_model, cfg.head_hidden, d_out, cfg.head_dropout,
                   cfg.head_bottleneck_relu)


def _subset_frames(x: Tensor, mask: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    """Rows idx of (B, T, D) frames and (B, T) mask, time trimmed to the last real frame."""
    x, mask = x.index_select(0, idx), mask.index_select(0, idx)
    t = int(mask.any(0).nonzero().max()) + 1
    return x[:, :t], mask[:, :t]


def _recon_loss(out: ModelOutput, batch_size: int) -> Tensor:
    """Sum over present modalities of the per-sample MSE(reconstructed pooled input, pooled input)
    summed over the samples with the modality, / B."""
    terms = [recon_sum(e.recon.float(), e.recon_target, batch_size) for e in (out.audio, out.video)
             if e is not None]
    return torch.stack(terms).sum()
