"""Training and evaluation of one configuration on one dataset (no Ray here).

`Session` is the per-worker loop that the CLI (`avstudy train`) and the Ray Train/Tune layers
share: train_epoch -> evaluate("dev") -> early stopping on dev -> evaluate("test") once, from the
best dev checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from model.batch import Batch
from model.build import build_model
from model.config import ModelConfig, model_config
from study.dataset import Dataset, open_dataset
from study.metrics import categorical_metrics, dimensional_metrics
from study.protocol import (NAMED_CONDITIONS, ProtocolConfig, condition_availability,
                            epoch_dropout, eval_conditions, robustness, train_availability)

SCHEDULES = ("fused", "three_pass")
LABEL_KINDS = ("hard", "soft")
SELECT_CONDITIONS = ("av", "robustness", "worst_single")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig
    protocol: ProtocolConfig = ProtocolConfig()
    preset: str = "paper"
    lr: float = 1e-4
    weight_decay: float = 1e-4
    batch_size: int = 32
    max_epochs: int = 30
    patience: int = 5
    schedule: str = "fused"          # or "three_pass" (the paper's visual, audio, AV-head steps)
    label_kind: str = "hard"         # categorical targets: one-hot or consensus proportions
    select_condition: str = "av"     # dev condition used for model selection
    grad_clip: float = 1.0
    precision: str = "auto"          # auto: bf16 autocast on CUDA, fp32 on CPU; bf16: on both
    seed: int = 0

    def __post_init__(self):
        checks = [("schedule", SCHEDULES), ("label_kind", LABEL_KINDS),
                  ("select_condition", SELECT_CONDITIONS), ("precision", PRECISIONS)]
        for name, allowed in checks:
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} not in {allowed}")
        if self.lr <= 0 or self.batch_size < 1 or self.max_epochs < 1 or self.patience < 1:
            raise ValueError("lr > 0, batch_size >= 1, max_epochs >= 1 and patience >= 1 needed")

    @property
    def task(self) -> str:
        return self.model.task

    @property
    def primary_metric(self) -> str:
        return "macro_f1" if self.task == "categorical" else "ccc_mean"

    def to_flat(self) -> dict:
        flat = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("model", "protocol")}
        flat.update(self.model.to_dict())
        flat.update(self.protocol.to_dict())
        flat.pop("seed", None)
        flat["seed"] = self.seed
        return flat


_TRAIN_KEYS = {f.name for f in dataclasses.fields(TrainConfig)} - {"model", "protocol"}
_PROTOCOL_KEYS = {f.name for f in dataclasses.fields(ProtocolConfig)} - {"seed"}
_MODEL_KEYS = {f.name for f in dataclasses.fields(ModelConfig)}


def config_from_flat(flat: dict, preset: str | None = None, data_dir: str | Path | None = None,
                     task: str | None = None) -> TrainConfig:
    """Build a TrainConfig from one flat dict of ModelConfig/ProtocolConfig/TrainConfig fields.

    Feature dims, class count and task defaults come from the dataset when `data_dir` is given.
    Unknown keys are an error that names them.
    """
    flat = dict(flat)
    preset = flat.pop("preset", None) or preset or "paper"
    unknown = sorted(set(flat) - _TRAIN_KEYS - _PROTOCOL_KEYS - _MODEL_KEYS - {"seed"})
    if unknown:
        raise ValueError(f"unknown config keys {unknown}")
    model_kw = {k: v for k, v in flat.items() if k in _MODEL_KEYS}
    if task:
        model_kw["task"] = task
    if data_dir is not None:
        model_kw.update(_dataset_dims(Path(data_dir), model_kw.get("task", "categorical")))
    seed = int(flat.get("seed", 0))
    protocol = ProtocolConfig(seed=seed, **{k: _tuple(v) for k, v in flat.items()
                                           if k in _PROTOCOL_KEYS})
    train_kw = {k: v for k, v in flat.items() if k in _TRAIN_KEYS}
    return TrainConfig(model=model_config(preset, **model_kw), protocol=protocol, preset=preset,
                       **train_kw)


def _tuple(v):
    return tuple(v) if isinstance(v, list) else v


def _dataset_dims(root: Path, task: str) -> dict:
    meta = json.loads((root / "dataset.json").read_text())
    n_out = len(meta.get("classes") or []) if task == "categorical" else 3
    return {"audio_dim": meta["audio"]["dim"], "video_dim": meta["video"]["dim"],
            "n_outputs": n_out, "task": task}


# ----------------------------------------------------------------------------- data


@dataclass
class SplitData:
    """One split: utterance ids, targets and lengths, and a view on the shared feature files."""
    ds: Dataset
    frame: pd.DataFrame
    target: np.ndarray          # (N, K) float32
    label: np.ndarray           # (N,) int64, -1 when dimensional
    has_audio: np.ndarray       # (N,) bool, after the training protocol for the train split
    has_video: np.ndarray
    length: np.ndarray = field(init=False)  # (N,) seconds, for length bucketing

    def __post_init__(self):
        a_hz = self.ds.meta["audio"].get("rate_hz") or 50.0
        v_hz = self.ds.meta["video"].get("rate_hz") or 30.0
        utt = self.frame["utt_id"]
        la = [len(self.ds.audio(u)) / a_hz if h else 0.0 for u, h in zip(utt, self.has_audio)]
        lv = [len(self.ds.video(u)) / v_hz if h else 0.0 for u, h in zip(utt, self.has_video)]
        self.length = np.maximum(la, lv)

    def __len__(self) -> int:
        return len(self.frame)

    def batch(self, idx: np.ndarray, has_a: np.ndarray, has_v: np.ndarray) -> Batch:
        utts = self.frame["utt_id"].to_numpy()[idx]
        audio = [torch.from_numpy(np.asarray(self.ds.audio(u), np.float32)) if h else None
                 for u, h in zip(utts, has_a[idx])]
        video = [torch.from_numpy(np.asarray(self.ds.video(u), np.float32)) if h else None
                 for u, h in zip(utts, has_v[idx])]
        return Batch.from_arrays(audio, video, has_a[idx], has_v[idx],
                                 torch.from_numpy(self.target[idx]),
                                 torch.from_numpy(self.label[idx]),
                                 audio_dim=self.ds.meta["audio"]["dim"],
                                 video_dim=self.ds.meta["video"]["dim"])


def load_splits(ds: Dataset, cfg: TrainConfig) -> dict[str, SplitData]:
    stats = _dim_stats(ds)
    out = {}
    for name in ("train", "dev", "test"):
        frame = ds.split(name)
        if frame.empty:
            raise ValueError(f"{ds.root}/manifest.parquet: split {name!r} has no utterances")
        target, label = _targets(ds, frame, cfg, stats)
        has_a, has_v = frame["has_audio"].to_numpy(bool), frame["has_video"].to_numpy(bool)
        if name == "train":
            has_a, has_v = train_availability(frame["utt_id"], has_a, has_v, cfg.protocol)
        out[name] = SplitData(ds, frame, target, label, has_a, has_v)
    return out


def _dim_stats(ds: Dataset) -> dict[str, tuple[float, float]]:
    """Mean/std of each dimension on train, for z-scoring (CCC is unchanged by it)."""
    train = ds.split("train")
    return {d: (float(train[d].mean()), float(train[d].std()) or 1.0) for d in ds.dimensions}


def _targets(ds: Dataset, frame: pd.DataFrame, cfg: TrainConfig, stats) -> tuple[np.ndarray, np.ndarray]:
    n = len(frame)
    if cfg.task == "dimensional":
        if not ds.dimensions:
            raise ValueError(f"{ds.root}: dimensional task but dataset.json lists no dimensions")
        cols = [(frame[d].to_numpy(float) - stats[d][0]) / stats[d][1] for d in ds.dimensions]
        return np.stack(cols, 1).astype(np.float32), np.full(n, -1, np.int64)
    classes = ds.classes
    if frame["label"].isna().any():
        bad = frame.loc[frame["label"].isna(), "utt_id"].iloc[0]
        raise ValueError(f"{ds.root}/manifest.parquet: utterance {bad!r} has no label")
    label = frame["label"].map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64)
    soft_cols = ds.soft_columns()
    if cfg.label_kind == "soft" and soft_cols:
        soft = frame[soft_cols].to_numpy(np.float32)
        return soft / soft.sum(1, keepdims=True), label
    if cfg.label_kind == "soft":
        raise ValueError(f"{ds.root}: label_kind='soft' but the manifest has no soft_<class> columns")
    return np.eye(len(classes), dtype=np.float32)[label], label


def bucketed_batches(length: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle, sort by length within chunks of 50 batches, cut, then shuffle the batches."""
    order = rng.permutation(len(length))
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start:start + chunk]
        part = part[np.argsort(length[part], kind="stable")]
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def sequential_batches(length: np.ndarray, batch_size: int) -> list[np.ndarray]:
    order = np.argsort(length, kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


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
        batches = batches[self.rank::self.world_size]
        total, seen = 0.0, 0
        for idx in batches:
            batch = split.batch(idx, has_a, has_v).to(self.device)
            total += self._step(batch) * len(idx)
            seen += len(idx)
        self.epoch += 1
        return {"epoch": self.epoch, "train_loss": total / max(seen, 1), "samples": seen,
                "seconds": time.perf_counter() - start}

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
        pred_t, target_t = torch.from_numpy(pred), torch.from_numpy(target)
        if self.cfg.task == "categorical":
            loss = float(-(target_t * F.log_softmax(pred_t, -1)).sum(-1).mean())
            return {"loss": loss, **categorical_metrics(label, pred.argmax(1), self.ds.classes)}
        metrics = dimensional_metrics(pred, target, self.ds.dimensions)
        return {"loss": 1.0 - metrics["ccc_mean"], **metrics}

    def selection_score(self, rows: list[dict]) -> float:
        by = {r["condition"]: r for r in rows}
        key = self.cfg.primary_metric
        if self.cfg.select_condition == "worst_single":
            return min(by["audio_only"][key], by["video_only"][key])
        return float(by[self.cfg.select_condition][key])

    # -- early stopping and checkpoints

    def observe(self, rows: list[dict]) -> float:
        """Record dev rows of the epoch just trained; keep the best model. Returns the score."""
        score = self.selection_score(rows)
        if score > self.best_score:
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
    session.restore_best()
    record = {"config": cfg.to_flat(), "protocol": cfg.protocol.to_dict(),
              "best_epoch": session.best_epoch, "epochs": session.epoch,
              "wall_time_s": time.perf_counter() - start,
              "dev": session.evaluate("dev"), "test": session.evaluate("test")}
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
    for key in ("epochs", "best_epoch", "wall_time_s"):
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


def copy_config(cfg: TrainConfig, **changes) -> TrainConfig:
    """A copy of cfg with flat field changes (model, protocol or training fields)."""
    flat = {**cfg.to_flat(), **changes}
    return config_from_flat(flat, preset=cfg.preset)
