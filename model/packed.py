"""K same-shape AVModels trained as one stacked model (horizontal fusion: HFTA, Wang et al.,
MLSys 2021), for trials that differ only in what does not change a tensor's shape: the seed, the
data protocol (missing rates, augmentation), lr, weight decay, betas, clipping, loss weights.

The members' parameters are stacked, (K, ...) per tensor (torch.func.stack_module_state); one
vmapped call runs every member's per-sample path (AVModel.trunk per modality, then the fusion
strategy) over its own batch. What depends on the data (which samples have which stream, the
paired rows) is worked out per member outside the vmap, and the members' subsets are padded to one
(N_max, T_max): a padded row has one zero frame (attention never sees an all-masked row) and is
sliced away before any loss, so a member's outputs, losses and gradients are those of its own
unpacked model (tests/modelling/test_packed.py measures the difference). Dropout draws differ
(vmap randomness "different": every member has its own masks, not the unpacked run's stream).

A member with no batch this step (it left the pack: early stopping, ASHA, divergence) is left out
of the vmap and of the update. StackedAdam is torch's Adam/AdamW written over the stack, with
each member's own hyperparameters, and a parameter skipped for a member exactly where torch skips
it (its gradient is None: the modality, or the paired rows, absent from that member's batch).
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from model.batch import Batch
from model.config import ModelConfig
from model.fusion import FusionInput
from model.registry import strategy
from model.vavl import MODALITIES, AVModel, Encoded, ModelOutput, _subset_frames

# ModelConfig keys a pack may vary: they enter the loss only (read from each member's own model),
# never a module or a tensor's shape
LOSS_KEYS = ("unimodal_weight", "recon_weight", "unimodal_loss")


def pack_refusal(cfgs: Sequence[ModelConfig]) -> str | None:
    """Why these model configurations cannot train as one pack (None: they can)."""
    first = cfgs[0]
    if not strategy(first.fusion).packable:
        return f"fusion {first.fusion!r} is not packable (its forward mixes samples)"
    for i, cfg in enumerate(cfgs[1:], 1):
        diff = sorted(k for k, v in vars(cfg).items()
                      if k not in LOSS_KEYS and v != getattr(first, k))
        if (cfg.recon_weight > 0) != (first.recon_weight > 0):
            diff.append("recon_weight (0 removes the reconstruction heads)")
        if diff:
            return f"member {i} differs from member 0 in {', '.join(diff)}"
    return None


class _Call(nn.Module):
    """functional_call target: runs a named part of the wrapped model."""

    def __init__(self, model: AVModel):
        super().__init__()
        self.model = model

    def forward(self, part: str, *args):
        if part == "fusion":
            out = self.model.fusion(FusionInput(**args[0]))
            if out.aux:
                raise RuntimeError(f"fusion {self.model.cfg.fusion!r} returned auxiliary losses "
                                   f"{sorted(out.aux)}: it is not packable")
            return out.pred
        return self.model.trunk(part, *args)


class PackedModel(nn.Module):
    """Members' parameters stacked (K, ...); `forward(batches)` -> one ModelOutput per member."""

    def __init__(self, models: Sequence[AVModel]):
        super().__init__()
        reason = pack_refusal([m.cfg for m in models])
        if reason:
            raise ValueError(f"cannot pack these models: {reason}")
        self.members = list(models)  # views: load_members() copies the stack into them
        params, buffers = stack_module_state(list(models))
        self.stack = {k: nn.Parameter(v.detach().clone()) for k, v in params.items()}
        self.buffers_ = buffers
        for i, v in enumerate(self.stack.values()):
            self.register_parameter(f"p{i}", v)
        self.caller = _Call(copy.deepcopy(models[0]).to("meta"))

    @property
    def size(self) -> int:
        return len(self.members)

    def train(self, mode: bool = True) -> PackedModel:
        self.caller.train(mode)
        return self

    # -- forward

    def forward(self, batches: Sequence[Batch | None], detach_fusion: bool = False) -> list[ModelOutput | None]:
        """One step of every member that has a batch (None: the member sits this step out)."""
        active = [k for k, b in enumerate(batches) if b is not None]
        if not active:
            return [None] * len(batches)
        params = self._params(active)
        live = [batches[k] for k in active]
        enc = {m: self._encode(m, params, live) for m in MODALITIES}  # m -> [Encoded | None] per live
        encs = [{m: enc[m][j] for m in MODALITIES} for j in range(len(live))]
        fused = self._fuse(params, live, encs, detach_fusion)
        outs: list[ModelOutput | None] = [None] * len(batches)
        for j, k in enumerate(active):
            pair_idx, pred_f = fused[j]
            model = self.members[k]
            pred = model._route(live[j], encs[j], pair_idx, pred_f)
            outs[k] = ModelOutput(pred=pred, audio=encs[j]["audio"], video=encs[j]["video"],
                                  pair_idx=pair_idx, fusion_pred=pred_f, detached=detach_fusion)
        return outs

    def _params(self, active: list[int]) -> dict[str, Tensor]:
        full = {f"model.{k}": v for k, v in {**self.stack, **self.buffers_}.items()}
        if len(active) == self.size:
            return full
        idx = torch.tensor(active, device=next(iter(self.stack.values())).device)
        return {k: v.index_select(0, idx) for k, v in full.items()}

    def _vmapped(self, part: str, params: dict[str, Tensor], *args):
        def run(p, *a):
            return functional_call(self.caller, p, (part, *a))
        with sdpa_kernel(SDPBackend.MATH):  # batchable: the fused CPU kernel has no vmap rule
            return vmap(run, randomness="different")(params, *args)

    def _encode(self, modality: str, params: dict[str, Tensor], batches: list[Batch]) -> list[Encoded | None]:
        subsets = []
        for b in batches:
            idx = getattr(b, f"has_{modality}").nonzero().squeeze(1)  # (N_k,)
            subsets.append(None if idx.numel() == 0 else
                           (idx, *_subset_frames(getattr(b, modality), getattr(b, f"{modality}_mask"), idx)))
        if all(s is None for s in subsets):
            return [None] * len(batches)
        x, mask = _pad_frames([None if s is None else s[1:] for s in subsets])  # (K, N, T, D), (K, N, T)
        out = self._vmapped(modality, params, x, mask)  # name -> (K, N, ...)
        encoded = []
        for j, s in enumerate(subsets):
            if s is None:
                encoded.append(None)
                continue
            idx, xs, ms = s
            n, t = xs.shape[:2]
            rows = {k: v[j, :n, :t] if k == "frames" else v[j, :n] for k, v in out.items()}
            encoded.append(Encoded(idx, mask=ms, **rows))
        return encoded

    def _fuse(self, params: dict[str, Tensor], batches: list[Batch], encs: list[dict],
              detach: bool) -> list[tuple[Tensor, Tensor | None]]:
        view = self.members[0]  # fusion_input is index work only: no parameter is read
        inputs = [view.fusion_input(b, e, detach) for b, e in zip(batches, encs)]
        if all(inp is None for _, inp in inputs):
            return [(pair_idx, None) for pair_idx, _ in inputs]
        padded = _pad_fusion([inp for _, inp in inputs])
        pred = self._vmapped("fusion", params, padded)  # (K, P_max, n_outputs)
        return [(pair_idx, None if inp is None else pred[j, :pair_idx.numel()])
                for j, (pair_idx, inp) in enumerate(inputs)]

    # -- members

    @torch.no_grad()
    def load_members(self, which: Sequence[int] | None = None) -> None:
        """Copy each member's slice of the stack into its own AVModel (evaluation, checkpoints)."""
        for k in range(self.size) if which is None else which:
            for name, p in self.members[k].named_parameters():
                p.copy_(self.stack[name][k])

    def touched(self, batches: Sequence[Batch | None]) -> dict[str, Tensor]:
        """name -> (K,) bool: the members whose loss graph reaches the parameter this step, i.e.
        where torch would give it a gradient (not None) in the member's own model."""
        dev = next(iter(self.stack.values())).device
        has = {m: torch.tensor([b is not None and bool(getattr(b, f"has_{m}").any()) for b in batches],
                               device=dev) for m in MODALITIES}
        paired = torch.tensor([b is not None and bool(b.paired.any()) for b in batches], device=dev)
        either = has["audio"] | has["video"]
        return {name: _part_touched(name, has, paired, either) for name in self.stack}


def modality_of(name: str) -> str | None:
    """The modality whose own modules hold parameter `name` (AVModel.modality_parameters:
    encoder, pooling, head, reconstruction head); None for the shared block and the fusion."""
    for m in MODALITIES:
        if any(name.startswith(f"{part}.{m}.") for part in ("encoders", "pool", "heads", "recon")):
            return m
    return None


def _part_touched(name: str, has: dict[str, Tensor], paired: Tensor, either: Tensor) -> Tensor:
    m = modality_of(name)
    if m is not None:
        return has[m]
    return paired if name.startswith("fusion.") else either


def _pad_frames(items: list[tuple[Tensor, Tensor] | None]) -> tuple[Tensor, Tensor]:
    """Per member (N_k, T_k, D) frames and (N_k, T_k) masks (None: no row) -> (K, N, T, D) and
    (K, N, T), zero-padded; a padded row keeps one real (zero) frame."""
    ref = next(it for it in items if it is not None)[0]
    n = max(it[0].shape[0] for it in items if it is not None)
    t = max(it[0].shape[1] for it in items if it is not None)
    x = ref.new_zeros(len(items), n, t, *ref.shape[2:])
    mask = torch.zeros(len(items), n, t, dtype=torch.bool, device=ref.device)
    mask[:, :, 0] = True
    for j, it in enumerate(items):
        if it is not None:
            nk, tk = it[0].shape[:2]
            x[j, :nk, :tk] = it[0]
            mask[j, :nk] = False
            mask[j, :nk, :tk] = it[1]
    return x, mask


def _pad_fusion(inputs: list[FusionInput | None]) -> dict[str, Tensor]:
    """Per member FusionInput (P_k rows; None: no pair) -> one dict of (K, P_max, ...) tensors."""
    ref = next(inp for inp in inputs if inp is not None)
    out: dict[str, Tensor] = {}
    for m in MODALITIES:
        frames = [None if inp is None else (getattr(inp, m), getattr(inp, f"{m}_mask")) for inp in inputs]
        out[m], out[f"{m}_mask"] = _pad_frames(frames)
    p = out["audio"].shape[1]
    for name, value in vars(ref).items():
        if name in out or value is None:
            continue
        rows = value.new_zeros(len(inputs), p, *value.shape[1:])
        for j, inp in enumerate(inputs):
            if inp is not None:
                v = getattr(inp, name)
                rows[j, :v.shape[0]] = v
        out[name] = rows
    return out


# ----------------------------------------------------------------------------- optimiser

OPTIMIZERS = ("adamw", "adam", "adamw_all")


@dataclass(frozen=True)
class MemberOptim:
    """One member's optimiser (study/training/session.py make_optimizer, as numbers)."""

    lr: float
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 0.0
    kind: str = "adamw"  # adamw: decoupled, matrices only; adam: L2 on all; adamw_all: decoupled, all
    grad_clip: float = 0.0  # 0: none
    eps: float = 1e-8


class StackedAdam:
    """torch.optim.Adam / AdamW over stacked (K, ...) parameters, each member with its own
    hyperparameters and step counts. `step(touched)` updates member k of a parameter only where
    touched[name][k] (torch skips a parameter whose gradient is None)."""

    def __init__(self, stack: dict[str, nn.Parameter], members: Sequence[MemberOptim]):
        kinds = {m.kind for m in members}
        if len(kinds) != 1 or not kinds <= set(OPTIMIZERS):
            raise ValueError(f"a pack needs one optimizer kind of {OPTIMIZERS}, got {sorted(kinds)}")
        self.kind = kinds.pop()
        self.stack = stack
        p0 = next(iter(stack.values()))
        col = {f: torch.tensor([getattr(m, f) for m in members], dtype=torch.float64, device=p0.device)
               for f in ("lr", "beta1", "beta2", "weight_decay", "grad_clip", "eps")}
        self.h = col  # (K,) float64 each
        self.state = {k: {"m": torch.zeros_like(p), "v": torch.zeros_like(p),
                          "step": torch.zeros(p.shape[0], dtype=torch.float64, device=p.device)}
                      for k, p in stack.items()}

    def zero_grad(self) -> None:
        for p in self.stack.values():
            p.grad = None

    @torch.no_grad()
    def clip_(self) -> Tensor:
        """clip_grad_norm_ per member (its grad_clip; 0 = none). Returns the (K,) norms before."""
        grads = [p.grad for p in self.stack.values() if p.grad is not None]
        k = self.h["lr"].shape[0]
        norms = torch.stack([g.reshape(k, -1).norm(dim=1) for g in grads], 1).norm(dim=1)  # (K,)
        clip = self.h["grad_clip"].to(norms.dtype)
        coef = torch.where(clip > 0, (clip / (norms + 1e-6)).clamp(max=1.0), torch.ones_like(norms))
        for g in grads:
            g.mul_(_col(coef, g))
        return norms

    @torch.no_grad()
    def step(self, touched: dict[str, Tensor]) -> None:
        for name, p in self.stack.items():
            if p.grad is not None:
                self._update(p, p.grad, self.state[name], touched[name])

    def _update(self, p: Tensor, g: Tensor, st: dict, on: Tensor) -> None:
        h = self.h
        st["step"] += on.to(torch.float64)
        step = st["step"].clamp(min=1)
        decays = self.kind != "adamw" or p.ndim - 1 >= 2  # "adamw": matrices and kernels only
        wd = h["weight_decay"] if decays else torch.zeros_like(h["weight_decay"])
        if self.kind == "adam":
            g = g + _col(wd, p) * p  # L2
        else:
            p.copy_(torch.where(_col(on, p), p * _col(1 - h["lr"] * wd, p), p))
        b1 = torch.where(on, h["beta1"], torch.ones_like(h["beta1"]))
        b2 = torch.where(on, h["beta2"], torch.ones_like(h["beta2"]))
        st["m"].lerp_(g, _col(1 - b1, p))
        st["v"].mul_(_col(b2, p)).addcmul_(g, g * _col(1 - b2, p))
        step_size = h["lr"] / (1 - h["beta1"] ** step)  # (K,) float64, as torch's python floats
        bc2_sqrt = (1 - h["beta2"] ** step).sqrt()
        denom = st["v"].sqrt() / _col(bc2_sqrt, p) + _col(h["eps"], p)
        p.copy_(torch.where(_col(on, p), p - _col(step_size, p) * (st["m"] / denom), p))


def _col(v: Tensor, like: Tensor) -> Tensor:
    """(K,) -> (K, 1, ..., 1) in like's dtype (bool stays bool) for broadcasting over a member."""
    v = v if v.dtype == torch.bool else v.to(like.dtype)
    return v.reshape(-1, *([1] * (like.ndim - 1)))
