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
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from model.balance import grad_norm, modality_scores, modulate_, ogm_coefficients
from model.batch import Batch
from model.build import build_model
from study.data.dataset import Dataset, open_dataset
from study.data.protocol import (
    GRID,
    NAMED_CONDITIONS,
    Condition,
    Perturbation,
    area_families,
    augmentation,
    condition_availability,
    condition_perturbation,
    epoch_dropout,
    eval_conditions,
    robustness,
    robustness_name,
)
from study.training.config import TrainConfig, objective_value
from study.training.loader import bucketed_batches, class_balanced_order, load_splits, sequential_batches, shard_batches
from study.training.metrics import categorical_metrics, dimensional_metrics, mei, mli
from study.training.sanity import UNTRAINED, nan_metrics, row_flag

# ----------------------------------------------------------------------------- session


class TrialDiverged(FloatingPointError):
    """A non-finite training loss: the run fails with this reason (a Ray trial's searcher is told)."""


def pick_device(device: str | torch.device | None = None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Session:
    """Model + optimizer + data of one configuration, driven epoch by epoch."""

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
        self.model.train()
        start = time.perf_counter()
        split = self.splits["train"]
        has_a, has_v = epoch_dropout(len(split), split.has_audio, split.has_video,
                                     self.cfg.protocol, self.epoch)
        rng = np.random.default_rng([self.cfg.seed, 11, self.epoch])
        order = class_balanced_order(split.label, rng) if self.cfg.class_balanced else None
        batches = bucketed_batches(split.length, self.cfg.batch_size, rng, order)
        batches = shard_batches(batches, self.rank, self.world_size)  # same step count per rank
        total, seen, lost_a, lost_v = 0.0, 0, 0, 0
        perturb = augmentation(self.cfg.frame_dropout, self.cfg.noise_aug, self.cfg.noise_aug_snr_db,
                               self.cfg.seed, self.epoch)  # frame dropout + noise, this epoch's draws
        self._epoch_stats = {k: [] for k in ("grad_norm_audio", "grad_norm_video",
                                             "ogm_coeff_audio", "ogm_coeff_video")}
        for idx in batches:
            batch = split.batch(idx, has_a, has_v, perturb).to(self.device)
            total += self._step(batch) * len(idx)
            seen += len(idx)
            lost_a += int((~has_a[idx]).sum())  # the streams of the batches the model saw
            lost_v += int((~has_v[idx]).sum())
        self.epoch += 1
        stats = {k: float(np.mean(v)) if v else float("nan") for k, v in self._epoch_stats.items()}
        if self.cfg.log_grad_norms and self._epoch_stats["grad_norm_audio"]:
            self.grad_history.append((stats["grad_norm_audio"], stats["grad_norm_video"]))
        return {"epoch": self.epoch, "train_loss": total / max(seen, 1), "samples": seen,
                "seconds": time.perf_counter() - start,
                "unpaired_share": float(np.mean(has_a != has_v)),  # one stream: protocol + dropout
                "missing_audio_share": lost_a / max(seen, 1), "missing_video_share": lost_v / max(seen, 1),
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

    def evaluate(self, split: str = "dev", conditions: list[str] | None = None,
                 extended: bool = False) -> list[dict]:
        """One row per evaluation condition, plus each family's area row, with every metric.

        The named three and `miss_*` always (three forward passes); with `extended`, also every
        level of the families in cfg.protocol.families (a forward pass per level).
        """
        preds = self._whole_stream_preds(split)
        rows = self._rows(split, eval_conditions(self.cfg.protocol), preds, conditions)
        if conditions is None or "mli" in conditions:
            rows += self.mli_row()
        if extended:
            rows += self.evaluate_families(split, conditions, preds=preds)
        return rows

    def evaluate_families(self, split: str = "dev", conditions: list[str] | None = None,
                          preds: dict[str, np.ndarray] | None = None) -> list[dict]:
        """Rows of the conditions evaluated once per trial: the per-modality grid (composed from
        the three whole-stream passes) and the frame-level families (cfg.protocol.families), with
        their areas. A level that changes nothing (drop 0.0, async 0 ms) reuses `av`."""
        extra = [c for c in eval_conditions(self.cfg.protocol, extended=True)
                 if not c.cheap or c.family == GRID]
        if not extra:
            return []
        if preds is None:
            names = NAMED_CONDITIONS if any(c.family == GRID for c in extra) else ("av",)
            preds = self._whole_stream_preds(split, names)
        return self._rows(split, extra, preds, conditions)

    def _whole_stream_preds(self, split: str, names=NAMED_CONDITIONS) -> dict[str, np.ndarray]:
        """Predictions with both streams, audio only (video truly absent), video only."""
        data = self.splits[split]
        native_a, native_v = data.frame["has_audio"].to_numpy(bool), data.frame["has_video"].to_numpy(bool)
        return {c: self.predict(split, *condition_availability(c, data.frame["utt_id"], native_a,
                                                               native_v, self.cfg.protocol)[1:])
                for c in names}

    def _rows(self, split: str, plan: list[Condition], preds: dict[str, np.ndarray],
              conditions: list[str] | None) -> list[dict]:
        data = self.splits[split]
        native_a, native_v = data.frame["has_audio"].to_numpy(bool), data.frame["has_video"].to_numpy(bool)
        rows = []
        for cond in plan:
            if conditions is not None and cond.name not in conditions:
                continue
            keep, a, v = condition_availability(cond, data.frame["utt_id"], native_a, native_v,
                                                self.cfg.protocol)
            pred = self._condition_pred(split, cond, preds, a, v)
            row = self._metrics(pred[keep], data.target[keep], data.label[keep])
            if row["flag"] != "nan" and self._untrained_heads and (a ^ v)[keep].any():
                row["flag"] = UNTRAINED  # some samples are predicted by a head the recipe never trains
            rows.append({"condition": cond.name, "family": cond.family, "level": cond.level,
                         "test_missing_rate": cond.test_missing_rate, "n": int(keep.sum()), **row})
        for family in area_families(plan):
            if conditions is None or robustness_name(family) in conditions:
                rows.append(_robustness_row(rows, family))
        if conditions is None or "mei" in conditions:
            rows += self._mei_rows(split, rows)
        return rows

    def _mei_rows(self, split: str, rows: list[dict]) -> list[dict]:
        """The Modality Equity Index of every metric (study/training/metrics.py mei) from the av,
        audio_only and video_only rows, with a constant prediction as the empty configuration
        (the training split's majority class; its mean target for a dimensional task)."""
        by = {r["condition"]: r for r in rows}
        if not all(c in by for c in NAMED_CONDITIONS):
            return []
        empty = self._empty_scores(split)
        keys = [k for k, v in by["av"].items() if isinstance(v, float) and k not in ("level", "test_missing_rate")]
        out = {"condition": "mei", "family": None, "level": None, "test_missing_rate": None,
               "n": by["av"]["n"], "flag": None}
        out.update({k: mei(by["av"][k], by["audio_only"][k], by["video_only"][k], empty.get(k))
                    for k in keys if k != "loss"})
        return [out]

    def _empty_scores(self, split: str) -> dict:
        """The metrics of the no-information prediction on `split` (the same every epoch: once)."""
        if split not in self._empty:
            data = self.splits[split]
            self._empty[split] = self._metrics(self._constant_prediction(len(data)), data.target, data.label)
        return self._empty[split]

    def _constant_prediction(self, n: int) -> np.ndarray:
        """(n, K): the no-information prediction (majority training class as a one-hot score;
        the mean training target for a dimensional task)."""
        train = self.splits["train"]
        if self.cfg.task == "categorical":
            counts = np.bincount(train.label[train.label >= 0], minlength=self.cfg.model.n_outputs)
            return np.tile(np.eye(self.cfg.model.n_outputs, dtype=np.float32)[counts.argmax()], (n, 1))
        return np.tile(train.target.mean(0).astype(np.float32), (n, 1))

    def mli_row(self) -> list[dict]:
        """The Modality Learning Index of the training so far (metrics.mli over the per-epoch mean
        gradient norms): condition `mli`, metrics `mli` (in [0, 1], 0 = balanced) and
        `mli_signed` (> 0: the audio modules get the larger gradients)."""
        if not self.grad_history:
            return []
        value, signed = mli(self.grad_history)
        return [{"condition": "mli", "family": None, "level": None, "test_missing_rate": None,
                 "n": len(self.grad_history), "flag": None, "mli": value, "mli_signed": signed}]

    @property
    def _untrained_heads(self) -> bool:
        """The single-modality heads get no training signal (unimodal_weight 0)."""
        return self.cfg.model.unimodal_weight == 0

    def _condition_pred(self, split: str, cond: Condition, preds: dict[str, np.ndarray],
                        a: np.ndarray, v: np.ndarray) -> np.ndarray:
        """(N, K): whole-stream conditions pick, per sample, the av / audio-only / video-only
        prediction (a sample's prediction depends only on its own streams); a frame-level
        condition is its own forward pass."""
        perturb = condition_perturbation(cond, self.cfg.protocol)
        if perturb is None:
            return np.where((a & v)[:, None], preds["av"],
                            np.where(a[:, None], preds["audio_only"], preds["video_only"]))
        if perturb.identity:
            return preds["av"]
        return self.predict(split, a, v, perturb)

    def _metrics(self, pred: np.ndarray, target: np.ndarray, label: np.ndarray) -> dict:
        """Every metric of one condition's predictions, plus its sanity `flag` (training/sanity.py)."""
        pred_t, target_t = torch.from_numpy(pred), torch.from_numpy(target)
        if self.cfg.task == "categorical":
            loss = float(-(target_t * F.log_softmax(pred_t, -1)).sum(-1).mean())
            metrics = {"loss": loss, **categorical_metrics(label, pred.argmax(1), self.ds.classes)}
        else:
            metrics = dimensional_metrics(pred, target, self.ds.dimensions)
            metrics = {"loss": 1.0 - metrics["ccc_mean"], **metrics}
        flag = row_flag(pred, self.cfg.task, metrics, label, len(self.ds.classes))
        return {**(nan_metrics(metrics) if flag == "nan" else metrics), "flag": flag}

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


def _robustness_row(rows: list[dict], family: str = "miss") -> dict:
    """Normalised area under every scalar metric vs the family's level (the level values, not
    their index): condition `robustness` for miss, `robustness_<family>` otherwise."""
    curve = [r for r in rows if r.get("family") == family and r.get("level") is not None]
    skip = {"level", "test_missing_rate", "n"}
    keys = [k for k, v in curve[0].items() if isinstance(v, float) and k not in skip] if curve else []
    levels = [r["level"] for r in curve]
    untrained = any(r.get("flag") == UNTRAINED for r in curve)  # the area rests on untrained heads
    out = {"condition": robustness_name(family), "family": family, "level": None,
           "test_missing_rate": None, "n": curve[0]["n"] if curve else 0,
           "flag": UNTRAINED if untrained else None}
    out.update({k: robustness(levels, [r[k] for r in curve]) for k in keys})
    return out
