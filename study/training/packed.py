"""Packed training: K sessions of one shape trained as one stacked model (model/packed.py).

Each member is a whole `Session` (its own data order, missing-modality draws, augmentation,
hyperparameters, early stopping, best checkpoint and evaluation); only its training steps run
through the pack. After every epoch the stack is copied into each member's own model, which the
member evaluates and checkpoints as an unpacked session would. A member that stops (patience,
max_epochs) or diverges leaves the pack: it gets no more batches, the others go on.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from model.packed import MemberOptim, PackedModel, StackedAdam, pack_refusal
from study.training.config import TrainConfig
from study.training.session import Session, TrialDiverged

PACK_FILE = "pack.pt"  # beside the members' m<k>/session.pt in a pack's checkpoint
PACK_SCHEDULES = ("fused", "detached")  # three_pass updates three times per batch


def train_refusal(cfgs: Sequence[TrainConfig]) -> str | None:
    """Why these training configurations cannot share one pack (None: they can)."""
    first = cfgs[0]
    for i, cfg in enumerate(cfgs):
        if cfg.train_schedule not in PACK_SCHEDULES:
            return f"member {i}: schedule {cfg.train_schedule!r} (a pack runs {'/'.join(PACK_SCHEDULES)})"
        if cfg.ogm_ge:
            return f"member {i}: ogm_ge modulates one model's gradients by its own batch scores"
        same = ("train_schedule", "optimizer", "batch_size", "precision")
        diff = [k for k in same if getattr(cfg, k) != getattr(first, k)]
        if diff:
            return f"member {i} differs from member 0 in {', '.join(diff)}"
    return pack_refusal([c.model for c in cfgs])


def member_optim(cfg: TrainConfig) -> MemberOptim:
    return MemberOptim(lr=cfg.lr, beta1=cfg.beta1, beta2=cfg.beta2, weight_decay=cfg.weight_decay,
                        kind=cfg.optimizer, grad_clip=cfg.grad_clip)


@dataclass
class MemberEpoch:
    """One member's epoch: what `Session.run_epoch` returns, or why it left the pack."""

    info: dict
    rows: list[dict]
    score: float


class PackedSession:
    """K sessions, one stacked model, one step for all (the members' own Session objects hold
    everything else)."""

    def __init__(self, members: Sequence[Session]):
        reason = train_refusal([s.cfg for s in members])
        if reason:
            raise ValueError(f"these trials cannot be packed: {reason}")
        self.members = list(members)
        self.model = PackedModel([s.model for s in members])
        self.opt = StackedAdam(self.model.stack, [member_optim(s.cfg) for s in members])
        self.left: dict[int, str] = {}  # member -> why it left ("stopped" | the divergence)

    @property
    def active(self) -> list[int]:
        return [k for k in range(len(self.members)) if k not in self.left]

    @property
    def done(self) -> bool:
        return not self.active

    # -- training

    def train_epoch(self) -> list[dict | None]:
        """One epoch of every active member (None for those that left)."""
        self.model.train()
        runs = [None if k in self.left else s.begin_epoch() for k, s in enumerate(self.members)]
        steps = max((len(r.batches) for r in runs if r is not None), default=0)
        for i in range(steps):
            idx = [None if r is None or i >= len(r.batches) else r.batches[i] for r in runs]
            batches = [None if j is None else r.batch(j) for r, j in zip(runs, idx)]
            for r, j, loss in zip(runs, idx, self._step(batches)):
                if j is not None:
                    r.add(j, loss)
        return [None if r is None else s.end_epoch(r) for s, r in zip(self.members, runs)]

    def _step(self, batches) -> list[float | None]:
        self.opt.zero_grad()
        first = self.members[0]
        with first._autocast():
            outs = self.model(batches, detach_fusion=first.cfg.train_schedule == "detached")
            losses = [None if o is None else s.model.loss(o, b)
                      for s, o, b in zip(self.members, outs, batches)]
        total = sum(loss["total"] for loss in losses if loss is not None)
        if torch.is_tensor(total) and total.requires_grad:
            total.backward()
        self._log_grad_norms(batches)
        self.opt.clip_()
        self.opt.step(self.model.touched(batches))
        return [None if loss is None else float(loss["total"].detach()) for loss in losses]

    def _log_grad_norms(self, batches) -> None:
        """Each member's per-modality gradient norm, before clipping (Session._balance)."""
        for m in ("audio", "video"):
            norms = self.opt.norms(m)  # (K,)
            for k, (s, b) in enumerate(zip(self.members, batches)):
                if b is not None and s.cfg.log_grad_norms:
                    s._epoch_stats.setdefault(f"grad_norm_{m}", []).append(float(norms[k]))

    # -- epochs

    def run_epoch(self) -> list[MemberEpoch | TrialDiverged | None]:
        """Session.run_epoch for every active member: train, evaluate dev, observe. A member
        whose loss is not finite gets its TrialDiverged (it leaves the pack); None: had left."""
        infos = self.train_epoch()
        self.model.load_members([k for k, info in enumerate(infos) if info is not None])
        out: list[MemberEpoch | TrialDiverged | None] = []
        for k, (s, info) in enumerate(zip(self.members, infos)):
            if info is None:
                out.append(None)
            elif not math.isfinite(info["train_loss"]):
                self.left[k] = "diverged"
                out.append(TrialDiverged(f"train loss is {info['train_loss']} at epoch "
                                         f"{info['epoch']} (diverged: lower lr or set grad_clip)"))
            else:
                rows = s.evaluate("dev")
                out.append(MemberEpoch(info, rows, s.observe(rows)))
                if s.should_stop:
                    self.left[k] = "stopped"
        return out

    def leave(self, k: int, why: str) -> None:
        """Member k stops training (a scheduler's decision, a failure); the others go on."""
        self.left.setdefault(k, why)

    # -- checkpoints

    def save(self, path_dir: str | Path) -> None:
        """m<k>/session.pt per member (its model, epochs, best weights) + pack.pt (the stack's
        optimizer state, which the members' own optimizers never held)."""
        path = Path(path_dir)
        for k, s in enumerate(self.members):
            s.save(path / f"m{k}")
        self.save_stack(path / PACK_FILE)

    def restore(self, path_dir: str | Path) -> None:
        path = Path(path_dir)
        for k, s in enumerate(self.members):
            s.restore(path / f"m{k}")
        self.restore_stack(path / PACK_FILE)

    def save_stack(self, file: str | Path) -> None:
        """What the members' own checkpoints lack: the stack's optimiser state, who left."""
        torch.save({"state": self.opt.state_dict(), "left": self.left}, file)

    def restore_stack(self, file: str | Path) -> None:
        """After the members were restored: the stack from their weights, the optimiser state."""
        saved = torch.load(file, map_location=self.members[0].device, weights_only=True)
        with torch.no_grad():
            for name, p in self.model.stack.items():
                p.copy_(torch.stack([dict(s.model.named_parameters())[name] for s in self.members]))
        self.opt.load_state_dict(saved["state"])
        self.left = {int(k): v for k, v in saved["left"].items()}
