"""Batches for training and evaluation: one split's targets and stream availability over the
shared, memory-mapped feature files, and length-bucketed batch orders."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from model.batch import Batch
from study.data.dataset import Dataset
from study.data.normalize import FeatureStats, load_stats
from study.data.protocol import train_availability
from study.training.config import TrainConfig


@dataclass
class SplitData:
    """One split: utterance ids, targets and lengths, and a view on the shared feature files."""
    ds: Dataset
    frame: pd.DataFrame
    target: np.ndarray          # (N, K) float32
    label: np.ndarray           # (N,) int64, -1 when dimensional
    has_audio: np.ndarray       # (N,) bool, after the training protocol for the train split
    has_video: np.ndarray
    norm: FeatureStats | None = None  # training-split statistics: features are z-scored
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
        audio = [torch.from_numpy(self._features("audio", u)) if h else None
                 for u, h in zip(utts, has_a[idx])]
        video = [torch.from_numpy(self._features("video", u)) if h else None
                 for u, h in zip(utts, has_v[idx])]
        return Batch.from_arrays(audio, video, has_a[idx], has_v[idx],
                                 torch.from_numpy(self.target[idx]),
                                 torch.from_numpy(self.label[idx]),
                                 audio_dim=self.ds.meta["audio"]["dim"],
                                 video_dim=self.ds.meta["video"]["dim"])

    def _features(self, modality: str, utt: str) -> np.ndarray:
        """(T, D) float32, z-scored with the training statistics when normalising."""
        raw = self.ds.features[modality].get(utt)
        if self.norm is None:
            return np.asarray(raw, np.float32)
        return self.norm[modality].apply(raw)


def load_splits(ds: Dataset, cfg: TrainConfig) -> dict[str, SplitData]:
    """train/dev/test; features z-scored with training statistics unless cfg.normalize is off."""
    stats = _dim_stats(ds)
    norm = load_stats(ds, "train") if cfg.normalize else None
    out = {}
    for name in ("train", "dev", "test"):
        frame = ds.split(name)
        if frame.empty:
            raise ValueError(f"{ds.root}/manifest.parquet: split {name!r} has no utterances")
        target, label = _targets(ds, frame, cfg, stats)
        has_a, has_v = frame["has_audio"].to_numpy(bool), frame["has_video"].to_numpy(bool)
        if name == "train":
            has_a, has_v = train_availability(frame["utt_id"], has_a, has_v, cfg.protocol)
        out[name] = SplitData(ds, frame, target, label, has_a, has_v, norm)
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


def shard_batches(batches: list[np.ndarray], rank: int, world_size: int) -> list[np.ndarray]:
    """This rank's part of every global batch: rank r takes samples r, r+W, ... of each.

    Every rank gets the same number of steps (one per global batch), so DDP's gradient
    all-reduce never waits on a rank that has run out of batches; a global batch smaller than
    the world (only the last, partial one) is dropped so that no rank steps on nothing.
    Within a length-sorted bucket the interleave gives every rank similar lengths.
    """
    if world_size <= 1:
        return batches
    return [b[rank::world_size] for b in batches if len(b) >= world_size]
