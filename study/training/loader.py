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
from study.data.protocol import Perturbation, perturb_frames, train_availability
from study.training.config import TrainConfig

DEFAULT_HZ = {"audio": 50.0, "video": 30.0}  # frame rates when dataset.json gives no rate_hz


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
    _scales: dict = field(init=False, default_factory=dict, repr=False)  # noise scale per stream

    def __post_init__(self):
        a_hz = self.ds.meta["audio"].get("rate_hz") or DEFAULT_HZ["audio"]
        v_hz = self.ds.meta["video"].get("rate_hz") or DEFAULT_HZ["video"]
        utt = self.frame["utt_id"]
        la = [len(self.ds.audio(u)) / a_hz if h else 0.0 for u, h in zip(utt, self.has_audio)]
        lv = [len(self.ds.video(u)) / v_hz if h else 0.0 for u, h in zip(utt, self.has_video)]
        self.length = np.maximum(la, lv)

    def __len__(self) -> int:
        return len(self.frame)

    def batch(self, idx: np.ndarray, has_a: np.ndarray, has_v: np.ndarray,
              perturb: Perturbation | None = None) -> Batch:
        """Samples idx with the given streams; `perturb` (a frame-level condition or an epoch's
        augmentation) applies after normalisation: its masked frames are mask False and zero."""
        utts = self.frame["utt_id"].to_numpy()[idx]
        perturb = None if perturb is None or perturb.identity else perturb
        streams = {m: [self._stream(m, u, perturb) if h else (None, None)
                       for u, h in zip(utts, has[idx])]
                   for m, has in (("audio", has_a), ("video", has_v))}
        batch = Batch.from_arrays([x for x, _ in streams["audio"]], [x for x, _ in streams["video"]],
                                  has_a[idx], has_v[idx],
                                  torch.from_numpy(self.target[idx]),
                                  torch.from_numpy(self.label[idx]),
                                  audio_dim=self.ds.meta["audio"]["dim"],
                                  video_dim=self.ds.meta["video"]["dim"])
        if perturb is not None:
            for m in ("audio", "video"):
                _mask_frames(getattr(batch, f"{m}_mask"), [k for _, k in streams[m]])
        return batch

    def _stream(self, modality: str, utt: str, perturb: Perturbation | None):
        """(T, D) tensor and (T,) keep mask (None when nothing is masked) of one stream."""
        x = self._features(modality, utt)
        if perturb is None or getattr(perturb, modality).identity:
            return torch.from_numpy(x), None
        rate_hz = self.ds.meta[modality].get("rate_hz") or DEFAULT_HZ[modality]
        x, keep = perturb_frames(x, utt, modality, perturb, rate_hz, self._noise_scale(modality))
        return torch.from_numpy(x), keep

    def _noise_scale(self, modality: str) -> np.ndarray:
        """(D,) training-set std of the features as the model sees them (after z-scoring)."""
        if modality not in self._scales:
            s = (self.norm or load_stats(self.ds, "train"))[modality]
            self._scales[modality] = (s.std / s.scale if self.norm is not None else s.std
                                      ).astype(np.float32)
        return self._scales[modality]

    def _features(self, modality: str, utt: str) -> np.ndarray:
        """(T, D) float32, z-scored with the training statistics when normalising."""
        raw = self.ds.features[modality].get(utt)
        if self.norm is None:
            return np.array(raw, np.float32)  # a copy: the memory map is read-only
        return self.norm[modality].apply(raw)


def _mask_frames(mask: torch.Tensor, keeps: list[np.ndarray | None]) -> None:
    """mask (B, T) bool &= each sample's (T_i,) keep array, in place (None: unchanged)."""
    for i, keep in enumerate(keeps):
        if keep is not None:
            mask[i, :len(keep)] &= torch.from_numpy(keep)


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


def bucketed_batches(length: np.ndarray, batch_size: int, rng: np.random.Generator,
                     order: np.ndarray | None = None) -> list[np.ndarray]:
    """Shuffle (or take the sample order given), sort by length within chunks of 50 batches, cut,
    then shuffle the batches."""
    order = rng.permutation(len(length)) if order is None else order
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start:start + chunk]
        part = part[np.argsort(length[part], kind="stable")]
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def shared_order(batches: list[np.ndarray], length: np.ndarray, epoch: int) -> list[np.ndarray]:
    """The batches in the order of a random permutation of their length ranks, drawn from the
    epoch and the number of batches alone. Every trial of a pack (study/training/packed.py) then
    trains, at each step, on batches of about the same length rank, so little of the stacked
    model's padding is wasted; for each trial alone the order is still uniformly random (a fixed
    bijection composed with a uniform permutation)."""
    by_length = np.argsort([length[b].max() for b in batches], kind="stable")  # (n_batches,)
    pi = np.random.default_rng([7, epoch, len(batches)]).permutation(len(batches))
    return [batches[by_length[j]] for j in pi]


def class_balanced_order(label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N,) sample indices drawn with replacement, each with probability proportional to 1 / the
    count of its class, so every class is equally likely (Foal-Net's official
    WeightedRandomSampler). label: (N,) class indices >= 0."""
    counts = np.bincount(label)
    weight = 1.0 / counts[label]
    return rng.choice(len(label), size=len(label), replace=True, p=weight / weight.sum())


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
