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

    def touched(self, batches: Sequence[Batch | None]) -> Tensor:
        """(K, len(PARTS)) bool: the members whose loss graph reaches each part this step, i.e.
        where torch would give its parameters a gradient (not None) in the member's own model."""
        has = {m: [b is not None and bool(getattr(b, f"has_{m}").any()) for b in batches] for m in MODALITIES}
        paired = [b is not None and bool(b.paired.any()) for b in batches]
        rows = [[has["audio"][k], has["video"][k], has["audio"][k] or has["video"][k], paired[k]]
                for k in range(len(batches))]
        return torch.tensor(rows, device=next(iter(self.stack.values())).device)


PARTS = ("audio", "video", "shared", "fusion")  # what a parameter belongs to (`part_of`)


def part_of(name: str) -> str:
    """The part of AVModel holding parameter `name`: a modality's own modules (encoder, pooling,
    head, reconstruction head: AVModel.modality_parameters), the fusion strategy, or "shared"
    (the shared block: trained by either modality)."""
    for m in MODALITIES:
        if any(name.startswith(f"{part}.{m}.") for part in ("encoders", "pool", "heads", "recon")):
            return m
    return "fusion" if name.startswith("fusion.") else "shared"


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
    hyperparameters and step counts, computed on one (K, P) buffer (parameters ordered by part)
    so a step is a few dozen tensor operations whatever the parameter count.

    `step(touched)` ((K, len(PARTS)) bool, PackedModel.touched) updates member k of a part only
    where it is touched: torch skips a parameter whose gradient is None, step count included."""

    def __init__(self, stack: dict[str, nn.Parameter], members: Sequence[MemberOptim]):
        kinds = {m.kind for m in members}
        if len(kinds) != 1 or not kinds <= set(OPTIMIZERS):
            raise ValueError(f"a pack needs one optimizer kind of {OPTIMIZERS}, got {sorted(kinds)}")
        self.kind = kinds.pop()
        self.names = sorted(stack, key=lambda n: PARTS.index(part_of(n)))  # stable: model order within a part
        self.params = [stack[n] for n in self.names]
        k, p0 = len(members), self.params[0]
        self.sizes = [p[0].numel() for p in self.params]
        self.part_sizes = torch.tensor([sum(n for n, name in zip(self.sizes, self.names) if part_of(name) == part)
                                        for part in PARTS], device=p0.device)
        col = lambda f: torch.tensor([[getattr(m, f)] for m in members], dtype=torch.float64, device=p0.device)
        self.h = {f: col(f) for f in ("lr", "beta1", "beta2", "weight_decay", "grad_clip", "eps")}  # (K, 1)
        decays = torch.cat([torch.full((n,), self.kind != "adamw" or p.ndim - 1 >= 2, device=p0.device)
                            for n, p in zip(self.sizes, self.params)])  # (P,) "adamw": matrices only
        self.wd = (self.h["weight_decay"] * decays).to(p0.dtype)  # (K, P)
        total = sum(self.sizes)
        self.state = {"m": p0.new_zeros(k, total), "v": p0.new_zeros(k, total),
                      "step": torch.zeros(k, len(PARTS), dtype=torch.float64, device=p0.device)}
        self._grad: Tensor | None = None

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None
        self._grad = None

    def _flat_grad(self) -> Tensor:  # (K, P), zeros where no member had a gradient
        if self._grad is None:
            k = self.params[0].shape[0]
            self._grad = torch.cat([p.new_zeros(k, n) if p.grad is None else p.grad.reshape(k, -1)
                                    for p, n in zip(self.params, self.sizes)], 1)
        return self._grad

    @torch.no_grad()
    def norms(self, part: str) -> Tensor:
        """(K,) L2 norm of each member's gradient over one part's parameters (before clipping)."""
        i = PARTS.index(part)
        start = int(self.part_sizes[:i].sum())
        return self._flat_grad()[:, start:start + int(self.part_sizes[i])].norm(dim=1)

    @torch.no_grad()
    def clip_(self) -> Tensor:
        """clip_grad_norm_ per member (its grad_clip; 0 = none). Returns the (K,) norms before."""
        g = self._flat_grad()
        norms = g.norm(dim=1, keepdim=True)  # (K, 1)
        clip = self.h["grad_clip"].to(g.dtype)
        coef = torch.where(clip > 0, (clip / (norms + 1e-6)).clamp(max=1.0), torch.ones_like(norms))
        g.mul_(coef)
        return norms.squeeze(1)

    @torch.no_grad()
    def step(self, touched: Tensor) -> None:
        g, st, h = self._flat_grad(), self.state, self.h
        p = torch.cat([q.reshape(q.shape[0], -1) for q in self.params], 1)  # (K, P)
        st["step"] += touched.to(torch.float64)
        step = st["step"].clamp(min=1)  # (K, parts)
        expand = lambda t: t.repeat_interleave(self.part_sizes, dim=1)  # (K, parts) -> (K, P)
        on = expand(touched)
        lr = h["lr"].to(p.dtype)
        if self.kind == "adam":
            g = g + self.wd * p  # L2
        else:
            p = torch.where(on, p * (1 - lr * self.wd), p)
        st["m"].lerp_(g, torch.where(on, (1 - h["beta1"]).to(p.dtype), 0.0))
        v = st["v"] * h["beta2"].to(p.dtype) + (1 - h["beta2"]).to(p.dtype) * g * g
        st["v"] = torch.where(on, v, st["v"])
        step_size = expand(h["lr"] / (1 - h["beta1"] ** step)).to(p.dtype)  # torch: python floats
        bc2_sqrt = expand((1 - h["beta2"] ** step).sqrt()).to(p.dtype)
        denom = st["v"].sqrt() / bc2_sqrt + h["eps"].to(p.dtype)
        p = torch.where(on, p - step_size * (st["m"] / denom), p)
        for q, new in zip(self.params, p.split(self.sizes, 1)):
            q.copy_(new.reshape(q.shape))

    def state_dict(self) -> dict:
        return dict(self.state)

    def load_state_dict(self, state: dict) -> None:
        self.state = {k: v.to(self.state[k].device) for k, v in state.items()}
