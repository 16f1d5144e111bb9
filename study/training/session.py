"""Training and evaluation of one configuration on one dataset (no Ray here).

`Session` is what the CLI (`avstudy train`, study/training/fit.py) and the Ray Train/Tune layers
share: per epoch `run_epoch` (train_epoch -> evaluate("dev") -> observe: early stopping on dev),
then evaluate("test") once, from the best dev checkpoint.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.balance import grad_norm, modality_scores, modulate_, ogm_coefficients
from model.batch import Batch
from model.build import build_model
from study.data.dataset import Dataset, open_dataset
from study.data.protocol import (
    Perturbation,
    augmentation,
    epoch_dropout,
)
from study.training.config import TrainConfig, objective_value
from study.training.evaluation import Evaluation
from study.training.loader import (
    bucketed_batches,
    class_balanced_order,
    load_splits,
    sequential_batches,
    shard_batches,
    shared_order,
)

# ----------------------------------------------------------------------------- session


class TrialDiverged(FloatingPointError):
    """A non-finite training loss: the run fails with this reason (a Ray trial's searcher is told)."""


def pick_device(device: str | torch.device | None = None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class EpochRun:
    """One training epoch of a session: its draws and what the steps saw."""

    split: Any  # the training split (study.training.loader)
    has_a: np.ndarray  # (N,) bool, this epoch's stream availability
    has_v: np.ndarray
    perturb: Perturbation
    batches: list[np.ndarray]  # sample indices per step
    device: torch.device
    start: float = field(default_factory=time.perf_counter)
    total: float = 0.0
    seen: int = 0
    lost_a: int = 0
    lost_v: int = 0

    def batch(self, idx: np.ndarray) -> Batch:
        return self.split.batch(idx, self.has_a, self.has_v, self.perturb).to(self.device)

    def add(self, idx: np.ndarray, loss: float) -> None:
        """Count a step: its mean loss, and the streams of the batch the model saw."""
        self.total += loss * len(idx)
        self.seen += len(idx)
        self.lost_a += int((~self.has_a[idx]).sum())
        self.lost_v += int((~self.has_v[idx]).sum())


class Session(Evaluation):
    """Model + optimizer + data of one configuration, driven epoch by epoch (its evaluation:
    study/training/evaluation.py)."""

    def __init__(self, cfg: TrainConfig, data_dir: str | Path, device=None,
                 wrap_model: Callable | None = None, rank: int | None = None,
                 world_size: int | None = None, dataset: Dataset | None = None):
        self.cfg = cfg
        self.device = pick_device(device)
        torch.manual_seed(cfg.seed)
        self.ds = dataset or open_dataset(data_dir)
        self.splits = load_splits(self.ds, cfg)
        self.model = build_model(cfg.model).to(self.device)
        self.net = wrap_model(self.model) if wrap_model else self.model
        self.rank, self.world_size = _rank_world(rank, world_size, wrap_model)
        self.opt = make_optimizer(self.model, cfg)
        self.epoch = 0
        self.best_score = -float("inf")
        self.best_epoch = 0
        self.best_model: dict | None = None
        self.history: list[dict] = []
        self.grad_history: list[tuple[float, float]] = []  # per epoch: mean (G_audio, G_video)
        self._modality_params = {m: self.model.modality_parameters(m) for m in ("audio", "video")}
        self._ogm_noise = torch.Generator().manual_seed(cfg.seed)
        self._epoch_stats: dict[str, list[float]] = {}
        self._empty: dict[str, dict] = {}  # split -> metrics of the no-information prediction (MEI)

    # -- training

    def train_epoch(self) -> dict:
        run = self.begin_epoch()
        for idx in run.batches:
            run.add(idx, self._step(run.batch(idx)))
        return self.end_epoch(run)

    def begin_epoch(self) -> EpochRun:
        """This epoch's draws: stream availability (protocol + dropout), batch order, perturbation."""
        self.model.train()
        split = self.splits["train"]
        has_a, has_v = epoch_dropout(len(split), split.has_audio, split.has_video,
                                     self.cfg.protocol, self.epoch)
        rng = np.random.default_rng([self.cfg.seed, 11, self.epoch])
        order = class_balanced_order(split.label, rng) if self.cfg.class_balanced else None
        batches = bucketed_batches(split.length, self.cfg.batch_size, rng, order)
        if self.cfg.batch_order == "shared":
            batches = shared_order(batches, split.length, self.epoch)
        batches = shard_batches(batches, self.rank, self.world_size)  # same step count per rank
        perturb = augmentation(self.cfg.frame_dropout, self.cfg.noise_aug, self.cfg.noise_aug_snr_db,
                               self.cfg.seed, self.epoch)  # frame dropout + noise, this epoch's draws
        self._epoch_stats = {k: [] for k in ("grad_norm_audio", "grad_norm_video",
                                             "ogm_coeff_audio", "ogm_coeff_video")}
        return EpochRun(split, has_a, has_v, perturb, batches, self.device)

    def end_epoch(self, run: EpochRun) -> dict:
        self.epoch += 1
        stats = {k: float(np.mean(v)) if v else float("nan") for k, v in self._epoch_stats.items()}
        if self.cfg.log_grad_norms and self._epoch_stats["grad_norm_audio"]:
            self.grad_history.append((stats["grad_norm_audio"], stats["grad_norm_video"]))
        seen = max(run.seen, 1)
        return {"epoch": self.epoch, "train_loss": run.total / seen, "samples": run.seen,
                "seconds": time.perf_counter() - run.start,
                "unpaired_share": float(np.mean(run.has_a != run.has_v)),  # one stream: protocol + dropout
                "missing_audio_share": run.lost_a / seen, "missing_video_share": run.lost_v / seen,
                **stats}

    def _step(self, batch: Batch) -> float:
        """One training step of the schedule (TrainConfig.train_schedule):
        fused: one pass, joint multitask training (the fusion loss reaches the encoders);
        detached: one pass, the fusion module sees detached encoder outputs (VAVL's semantics);
        three_pass: the official code's visual step, audio step, then the fusion module alone."""
        schedule = self.cfg.train_schedule
        if schedule == "three_pass":
            return self._three_pass(batch)
        return self._update(batch, mode=schedule)

    def _update(self, batch: Batch, mode: str = "fused", scale: float = 1.0) -> float:
        """One optimizer step on `batch`. mode: fused | detached | fusion_only (model.vavl forward
        modes). scale=0 runs the pass for its graph only (a rank whose subset is empty under DDP):
        every parameter the pass touches gets an exactly-zero gradient."""
        self.opt.zero_grad(set_to_none=True)
        kwargs = {"fused": {}, "detached": {"detach_fusion": True}, "fusion_only": {"fusion_only": True}}[mode]
        with self._autocast():
            out = self.net(batch, **kwargs)
            losses = self.model.loss(out, batch)
        total = losses["total"] * scale if scale != 1.0 else losses["total"]
        if total.requires_grad:
            total.backward()
        self._balance(out, batch, mode)
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        return float(total.detach())

    def _balance(self, out, batch: Batch, mode: str) -> None:
        """After backward: log each modality's gradient norm (before any modulation: what the
        loss asks of each modality, MissBench's MLI), then OGM-GE when on (the dominant
        modality's encoder gradients scaled by k, Gaussian noise added)."""
        stats = self._epoch_stats
        if self.cfg.log_grad_norms:
            for m, params in self._modality_params.items():
                stats.setdefault(f"grad_norm_{m}", []).append(grad_norm(params))
        if not self.cfg.ogm_ge or mode == "fusion_only":
            return
        coeff = ogm_coefficients(modality_scores(out, batch, self.cfg.task), self.cfg.ogm_alpha)
        for m, k in coeff.items():
            modulate_(list(self.model.encoders[m].parameters()), k, self._ogm_noise)
            stats.setdefault(f"ogm_coeff_{m}", []).append(k)

    def _three_pass(self, batch: Batch) -> float:
        """The official schedule: a visual step, an audio step, then the fusion module alone
        (encoders frozen, model.vavl fusion_only).

        Every pass runs on every rank (DDP needs the same backward calls everywhere): a pass is
        skipped only when its subset is empty on all ranks; a rank whose own subset is empty runs
        it on a one-sample placeholder with loss x 0 (zero gradient, same graph)."""
        passes = [
            (batch.has_video, lambda sub: sub.drop(audio=_all(sub.has_video)), "fused", "video"),
            (batch.has_audio, lambda sub: sub.drop(video=_all(sub.has_audio)), "fused", "audio"),
            (batch.paired, lambda sub: sub, "fusion_only", "paired"),
        ]
        local = [int(keep.sum()) for keep, *_ in passes]
        total = 0.0
        for (keep, shape, mode, kind), n_local, n_all in zip(passes, local, self._pass_sizes(local)):
            if n_all == 0:
                continue
            if n_local:
                total += self._update(shape(batch.select(keep)), mode)
            else:
                total += self._update(placeholder_batch(batch, kind), mode, scale=0.0)
        return total

    def _pass_sizes(self, local: list[int]) -> list[int]:
        """Subset sizes of the passes summed over ranks (the local sizes in one process)."""
        dist = torch.distributed
        if self.world_size <= 1 or not (dist.is_available() and dist.is_initialized()):
            return local
        sizes = torch.tensor(local, dtype=torch.long,
                             device=self.device if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(sizes)
        return [int(n) for n in sizes.tolist()]

    def _autocast(self):
        bf16 = self.cfg.precision == "bf16" or (self.cfg.precision == "auto"
                                                and self.device.type == "cuda")
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16)

    # -- evaluation

    @torch.no_grad()
    def predict(self, split: str, has_a: np.ndarray, has_v: np.ndarray,
                perturb: Perturbation | None = None) -> np.ndarray:
        """(N, K) float32 predictions with the given stream availability and frame-level
        perturbation (eval mode); rows of samples with no stream stay 0."""
        self.model.eval()
        data = self.splits[split]
        out = np.zeros((len(data), self.cfg.model.n_outputs), np.float32)
        keep = has_a | has_v
        for idx in sequential_batches(data.length, max(self.cfg.batch_size, 64)):
            idx = idx[keep[idx]]
            if len(idx):
                with self._autocast():
                    pred = self.model(data.batch(idx, has_a, has_v, perturb).to(self.device)).pred
                out[idx] = pred.float().cpu().numpy()
        return out

    def selection_score(self, rows: list[dict]) -> float:
        """The dev value the best epoch is chosen on: cfg.selection (the study's first objective)."""
        condition, metric, mode = self.cfg.selection
        return objective_value(rows, condition, metric, mode)

    def _better(self, score: float) -> bool:
        """Strictly better than the best so far (NaN never is; the first finite score always is)."""
        if not np.isfinite(score):
            return False
        if self.best_model is None or not np.isfinite(self.best_score):
            return True
        return score < self.best_score if self.cfg.select_mode == "min" else score > self.best_score

    # -- early stopping and checkpoints

    def observe(self, rows: list[dict]) -> float:
        """Record dev rows of the epoch just trained; keep the best model. Returns the score."""
        score = self.selection_score(rows)
        if self._better(score):
            self.best_score, self.best_epoch = score, self.epoch
            self.best_model = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        self.history.append({"epoch": self.epoch, "score": score})
        return score

    def run_epoch(self) -> tuple[dict, list[dict], float]:
        """The one epoch of every path (`avstudy train` and a Ray trial): train, refuse a
        non-finite loss, evaluate on dev, observe the selection score (best epoch, early stop)."""
        info = self.train_epoch()
        if not math.isfinite(info["train_loss"]):
            raise TrialDiverged(f"train loss is {info['train_loss']} at epoch {info['epoch']} "
                                "(diverged: lower lr or set grad_clip)")
        rows = self.evaluate("dev")
        return info, rows, self.observe(rows)

    @property
    def should_stop(self) -> bool:
        return (self.epoch >= self.cfg.max_epochs
                or self.epoch - self.best_epoch >= self.cfg.patience)

    def restore_best(self) -> None:
        if self.best_model is not None:
            self.model.load_state_dict(self.best_model)

    def state_dict(self) -> dict:
        """Recovery needs the latest model + optimizer state; selection needs the best weights
        (no optimizer state). When the latest epoch is the best they are the same tensors, saved
        once (`best_is_latest`): benchmarks/checkpoint_bytes.py measures the saving."""
        same = self.best_model is not None and self.best_epoch == self.epoch
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "epoch": self.epoch, "best_score": self.best_score, "best_epoch": self.best_epoch,
                "best_model": {} if same else (self.best_model or {}), "best_is_latest": same,
                "history": json.dumps(self.history), "grad_history": json.dumps(self.grad_history),
                "config": json.dumps(self.cfg.to_flat()), "torch_rng": torch.get_rng_state()}

    def load_state_dict(self, state: dict) -> None:
        saved = json.loads(state["config"])
        if saved != json.loads(json.dumps(self.cfg.to_flat())):
            diff = sorted(k for k in saved if saved.get(k) != self.cfg.to_flat().get(k))
            raise ValueError(f"checkpoint was made with a different config (keys {diff})")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.epoch, self.best_epoch = int(state["epoch"]), int(state["best_epoch"])
        self.best_score = float(state["best_score"])
        self.best_model = state["best_model"] or None
        if state.get("best_is_latest"):
            self.best_model = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        self.history = json.loads(state["history"])
        self.grad_history = [tuple(g) for g in json.loads(state.get("grad_history", "[]"))]
        torch.set_rng_state(state["torch_rng"])

    def save(self, path_dir: str | Path) -> Path:
        path = Path(path_dir)
        path.mkdir(parents=True, exist_ok=True)
        torch.save(self.state_dict(), path / "session.pt")
        return path / "session.pt"

    def restore(self, path_dir: str | Path) -> None:
        """Load a checkpoint written by `save`; never unpickles arbitrary objects."""
        state = torch.load(Path(path_dir) / "session.pt", map_location=self.device,
                           weights_only=True)
        self.load_state_dict(state)


def make_optimizer(model, cfg: TrainConfig) -> torch.optim.Optimizer:
    """adamw: AdamW, decoupled weight decay on matrices/conv kernels only (model.param_groups);
    adam: Adam with L2 weight_decay on every parameter, as the official VAVL code;
    adamw_all: AdamW with decoupled decay on every parameter, as the official Foal-Net code."""
    betas = (cfg.beta1, cfg.beta2)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw_all":  # Foal-Net's AdamW(model.parameters()): norms and biases decay too
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(model.param_groups(cfg.weight_decay), lr=cfg.lr, betas=betas)


def placeholder_batch(batch: Batch, kind: str) -> Batch:
    """One sample with one zero frame of the modality `kind` needs ("audio" | "video" | "paired"),
    zero target, on batch's device: runs a pass's graph where a rank has no sample for it."""
    dev = batch.has_audio.device
    has_a = torch.tensor([kind in ("audio", "paired")], device=dev)
    has_v = torch.tensor([kind in ("video", "paired")], device=dev)
    return Batch(audio=batch.audio.new_zeros(1, 1, batch.audio.shape[2]), audio_mask=has_a[:, None].clone(),
                 video=batch.video.new_zeros(1, 1, batch.video.shape[2]), video_mask=has_v[:, None].clone(),
                 has_audio=has_a, has_video=has_v, target=batch.target.new_zeros(1, batch.target.shape[1]),
                 label=batch.label.new_full((1,), -1))


def _all(mask: torch.Tensor) -> torch.Tensor:
    return torch.ones(int(mask.sum()), dtype=torch.bool, device=mask.device)


def _rank_world(rank, world_size, wrap_model) -> tuple[int, int]:
    if rank is not None:
        return rank, world_size or 1
    if wrap_model is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1
