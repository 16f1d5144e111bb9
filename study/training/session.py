"""Training and evaluation of one configuration on one dataset (no Ray here).

`Session` is the per-worker loop that the CLI (`avstudy train`) and the Ray Train/Tune layers
share: train_epoch -> evaluate("dev") -> early stopping on dev -> evaluate("test") once, from the
best dev checkpoint.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from model.batch import Batch
from model.build import build_model
from study.data.dataset import Dataset, open_dataset
from study.data.protocol import (
    NAMED_CONDITIONS,
    condition_availability,
    epoch_dropout,
    eval_conditions,
    robustness,
)
from study.training.config import TrainConfig, objective_value
from study.training.loader import bucketed_batches, load_splits, sequential_batches, shard_batches
from study.training.metrics import categorical_metrics, dimensional_metrics
from study.training.sanity import degenerate, nan_metrics, row_flag

# ----------------------------------------------------------------------------- session


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
        self.opt = torch.optim.AdamW(self.model.param_groups(cfg.weight_decay), lr=cfg.lr)
        self.epoch = 0
        self.best_score = -float("inf")
        self.best_epoch = 0
        self.best_model: dict | None = None
        self.history: list[dict] = []

    # -- training

    def train_epoch(self) -> dict:
        self.model.train()
        start = time.perf_counter()
        split = self.splits["train"]
        has_a, has_v = epoch_dropout(len(split), split.has_audio, split.has_video,
                                     self.cfg.protocol, self.epoch)
        rng = np.random.default_rng([self.cfg.seed, 11, self.epoch])
        batches = bucketed_batches(split.length, self.cfg.batch_size, rng)
        batches = shard_batches(batches, self.rank, self.world_size)  # same step count per rank
        total, seen = 0.0, 0
        for idx in batches:
            batch = split.batch(idx, has_a, has_v).to(self.device)
            total += self._step(batch) * len(idx)
            seen += len(idx)
        self.epoch += 1
        return {"epoch": self.epoch, "train_loss": total / max(seen, 1), "samples": seen,
                "seconds": time.perf_counter() - start,
                "unpaired_share": float(np.mean(has_a != has_v))}  # one stream: protocol + dropout

    def _step(self, batch: Batch) -> float:
        if self.cfg.schedule == "three_pass":
            return self._three_pass(batch)
        return self._update(batch)

    def _update(self, batch: Batch, fusion_only: bool = False) -> float:
        self.opt.zero_grad(set_to_none=True)
        with self._autocast():
            out = self.net(batch, fusion_only=fusion_only) if fusion_only else self.net(batch)
            losses = self.model.loss(out, batch)
        losses["total"].backward()
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        return float(losses["total"].detach())

    def _three_pass(self, batch: Batch) -> float:
        """The paper's schedule: a visual step, an audio step, then the AV head alone."""
        total = 0.0
        if batch.has_video.any():
            total += self._update(batch.select(batch.has_video).drop(audio=_all(batch.has_video)))
        if batch.has_audio.any():
            total += self._update(batch.select(batch.has_audio).drop(video=_all(batch.has_audio)))
        if batch.paired.any():
            total += self._update(batch.select(batch.paired), fusion_only=True)
        return total

    def _autocast(self):
        bf16 = self.cfg.precision == "bf16" or (self.cfg.precision == "auto"
                                                and self.device.type == "cuda")
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16)

    # -- evaluation

    @torch.no_grad()
    def predict(self, split: str, has_a: np.ndarray, has_v: np.ndarray) -> np.ndarray:
        """(N, K) float32 predictions with the given stream availability (eval mode)."""
        self.model.eval()
        data = self.splits[split]
        out = np.zeros((len(data), self.cfg.model.n_outputs), np.float32)
        keep = has_a | has_v
        for idx in sequential_batches(data.length, max(self.cfg.batch_size, 64)):
            idx = idx[keep[idx]]
            if len(idx):
                with self._autocast():
                    pred = self.model(data.batch(idx, has_a, has_v).to(self.device)).pred
                out[idx] = pred.float().cpu().numpy()
        return out

    def evaluate(self, split: str = "dev", conditions: list[str] | None = None) -> list[dict]:
        """One row per evaluation condition (plus `robustness`), with every metric."""
        data = self.splits[split]
        native_a, native_v = (data.frame["has_audio"].to_numpy(bool),
                              data.frame["has_video"].to_numpy(bool))
        # A sample's prediction depends only on its own streams, so three passes cover every
        # condition: miss_<r> picks, per sample, the av / audio-only / video-only prediction.
        preds = {c: self.predict(split, *condition_availability(c, data.frame["utt_id"], native_a,
                                                                native_v, self.cfg.protocol)[1:])
                 for c in NAMED_CONDITIONS}
        rows = []
        for name, rate in eval_conditions(self.cfg.protocol):
            if conditions is not None and name not in conditions:
                continue
            keep, a, v = condition_availability(name, data.frame["utt_id"], native_a, native_v,
                                                self.cfg.protocol)
            pred = np.where((a & v)[:, None], preds["av"],
                            np.where(a[:, None], preds["audio_only"], preds["video_only"]))
            row = self._metrics(pred[keep], data.target[keep], data.label[keep])
            rows.append({"condition": name, "test_missing_rate": rate, "n": int(keep.sum()), **row})
        if conditions is None or "robustness" in conditions:
            rows.append(_robustness_row(rows))
        return rows

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

    @property
    def should_stop(self) -> bool:
        return (self.epoch >= self.cfg.max_epochs
                or self.epoch - self.best_epoch >= self.cfg.patience)

    def restore_best(self) -> None:
        if self.best_model is not None:
            self.model.load_state_dict(self.best_model)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "epoch": self.epoch, "best_score": self.best_score, "best_epoch": self.best_epoch,
                "best_model": self.best_model or {}, "history": json.dumps(self.history),
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
        self.history = json.loads(state["history"])
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


def _all(mask: torch.Tensor) -> torch.Tensor:
    return torch.ones(int(mask.sum()), dtype=torch.bool, device=mask.device)


def _rank_world(rank, world_size, wrap_model) -> tuple[int, int]:
    if rank is not None:
        return rank, world_size or 1
    if wrap_model is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _robustness_row(rows: list[dict]) -> dict:
    """Normalised area under every scalar metric vs test missing rate."""
    curve = [r for r in rows if r["test_missing_rate"] is not None]
    keys = [k for k, v in curve[0].items() if isinstance(v, float) and k != "test_missing_rate"] if curve else []
    rates = [r["test_missing_rate"] for r in curve]
    out = {"condition": "robustness", "test_missing_rate": None, "n": curve[0]["n"] if curve else 0}
    out.update({k: robustness(rates, [r[k] for r in curve]) for k in keys})
    return out


# ----------------------------------------------------------------------------- fit (CLI path)


def fit(cfg: TrainConfig, data_dir: str | Path, out_dir: str | Path | None = None,
        log: Callable[[str], None] = print, device=None) -> dict:
    """Train with early stopping on dev, evaluate the best epoch on dev and test; write records."""
    start = time.perf_counter()
    session = Session(cfg, data_dir, device=device)
    curves = []
    while not session.should_stop:
        info = session.train_epoch()
        rows = session.evaluate("dev")
        score = session.observe(rows)
        curves.append({**info, **curve_metrics(rows, cfg)})
        log(_epoch_line(info, rows, score, cfg))
    session.restore_best()  # the best dev epoch; test is evaluated once, from it
    record = {"config": cfg.to_flat(), "protocol": cfg.protocol.to_dict(),
              "best_epoch": session.best_epoch, "epochs": session.epoch,
              "wall_time_s": time.perf_counter() - start,
              "dev": session.evaluate("dev"), "test": session.evaluate("test"),
              "normalize": cfg.normalize,
              "unpaired_share": float(np.mean([c["unpaired_share"] for c in curves]))}
    record["degenerate"] = degenerate(record["dev"]) or degenerate(record["test"])
    if out_dir is not None:
        write_record(record, curves, session, Path(out_dir))
    return record


CURVE_CONDITIONS = ("av", "audio_only", "video_only", "robustness")
CURVE_METRICS = {"categorical": ("loss", "accuracy", "uar", "macro_f1"),
                 "dimensional": ("loss", "ccc_arousal", "ccc_valence", "ccc_dominance", "ccc_mean")}


def curve_metrics(rows: list[dict], cfg: TrainConfig) -> dict[str, float]:
    """Per-epoch dev metrics for curves: dev_loss, dev_<primary>, dev_<condition>_<metric>."""
    by = {r["condition"]: r for r in rows}
    primary = cfg.primary_metric
    out = {"dev_loss": by["av"]["loss"], f"dev_{primary}": by["av"][primary]}
    for c in CURVE_CONDITIONS:
        for m in CURVE_METRICS[cfg.task]:
            if c in by and m in by[c]:
                out[f"dev_{c}_{m}"] = by[c][m]
    return {k: (float(v) if v is not None else float("nan")) for k, v in out.items()}


def _epoch_line(info: dict, rows: list[dict], score: float, cfg: TrainConfig) -> str:
    key = cfg.primary_metric
    by = {r["condition"]: r for r in rows}
    parts = " ".join(f"{c}={by[c][key]:.3f}" for c in ("av", "audio_only", "video_only", "robustness"))
    return (f"epoch {info['epoch']:3d}  train_loss {info['train_loss']:.4f}  dev {key}: {parts}  "
            f"({info['seconds']:.1f}s)")


def records_frame(record: dict, classes: list[str]) -> pd.DataFrame:
    """Tidy rows (split x condition) in the results.parquet column layout."""
    rows = []
    for split in ("dev", "test"):
        for r in record[split]:
            row = {k: v for k, v in r.items() if k != "confusion"}
            row["confusion"] = json.dumps(r["confusion"]) if "confusion" in r else None
            rows.append({"split": split, **row})
    df = pd.DataFrame(rows)
    df["config"] = json.dumps(record["config"])
    df["protocol"] = json.dumps(record["protocol"])
    for key in ("epochs", "best_epoch", "wall_time_s", "normalize", "unpaired_share", "degenerate"):
        df[key] = record[key]
    return df


def write_record(record: dict, curves: list[dict], session: Session, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "record.json").write_text(json.dumps(record, indent=1))
    records_frame(record, session.ds.classes).to_parquet(out / "record.parquet", index=False)
    pd.DataFrame(curves).to_parquet(out / "curves.parquet", index=False)
    session.save(out)


def summary_table(record: dict, cfg: TrainConfig) -> str:
    """Test metrics per condition, one line each."""
    key = cfg.primary_metric
    extra = ("accuracy", "uar") if cfg.task == "categorical" else ("ccc_arousal", "ccc_valence", "ccc_dominance")
    lines = [f"{'condition':<12} {key:>9} " + " ".join(f"{k:>13}" for k in extra)]
    for r in record["test"]:
        lines.append(f"{r['condition']:<12} {r[key]:>9.3f} " + " ".join(f"{r[k]:>13.3f}" for k in extra))
    return "\n".join(lines)
