"""Feature normalisation with training-split statistics (z-scoring per feature dimension).

Statistics are computed once per dataset and split definition, streamed over the memory-mapped
Arrow files with float64 accumulators, from the utterances of the training split that natively
have the stream (manifest `has_audio` / `has_video`; the training protocol's unpairing does not
change them). They are stored beside the dataset, `DIR/stats/train_<key>.json`, or, when the
dataset directory is not writable, in the per-node cache `$AVSTUDY_CACHE/stats/` (default
~/.cache/avstudy). The key hashes what defines the split: the training utterances and their
native streams, the feature files (size, modification time) and the feature dims. Writes are
atomic under a file lock, so concurrent trials compute the file once.

A dimension whose training std is at most `floor = max(1e-6, 1e-4 * the modality's largest
std)` is only centred (scale 1), so a constant dimension never divides by ~0.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from study.data.dataset import MODALITIES, Dataset
from study.fsio import atomic_write_json

STATS_VERSION = 1
FLOOR_REL, FLOOR_ABS = 1e-4, 1e-6


@dataclass(frozen=True)
class ModalityStats:
    mean: np.ndarray    # (D,) float64
    std: np.ndarray     # (D,) float64, population std over every training frame
    scale: np.ndarray   # (D,) float64: std, or 1.0 where std <= floor
    frames: int
    utterances: int

    def __post_init__(self):
        object.__setattr__(self, "_shift", self.mean.astype(np.float32))
        object.__setattr__(self, "_inv", (1.0 / self.scale).astype(np.float32))

    def apply(self, x: np.ndarray) -> np.ndarray:
        """(T, D) features -> (T, D) float32 z-scores."""
        return (np.asarray(x, np.float32) - self._shift) * self._inv

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "scale": self.scale.tolist(),
                "frames": self.frames, "utterances": self.utterances}

    @classmethod
    def from_dict(cls, d: dict) -> ModalityStats:
        arr = lambda k: np.asarray(d[k], np.float64)
        return cls(arr("mean"), arr("std"), arr("scale"), int(d["frames"]), int(d["utterances"]))


@dataclass(frozen=True)
class FeatureStats:
    key: str
    path: Path
    modalities: dict[str, ModalityStats]

    def __getitem__(self, modality: str) -> ModalityStats:
        return self.modalities[modality]


def split_key(ds: Dataset, split: str = "train") -> str:
    """Hash of what defines the statistics of `split` (see the module docstring)."""
    frame = ds.split(split)
    h = hashlib.blake2b(digest_size=10)
    h.update(f"v{STATS_VERSION}|{split}".encode())
    for m in MODALITIES:
        f = ds.feature_path(m)
        st = f.stat()
        h.update(f"|{m}:{ds.meta[m]['dim']}:{st.st_size}:{st.st_mtime_ns}".encode())
    rows = sorted(zip(frame["utt_id"].astype(str), frame["has_audio"], frame["has_video"]))
    for utt, a, v in rows:
        h.update(f"|{utt}:{int(a)}{int(v)}".encode())
    return h.hexdigest()


def compute_stats(ds: Dataset, split: str = "train") -> dict[str, ModalityStats]:
    """Per-dimension mean/std of each modality over the split's native streams (float64)."""
    frame = ds.split(split)
    out = {}
    for m in MODALITIES:
        utts = frame.loc[frame[f"has_{m}"], "utt_id"]
        if not len(utts):
            raise ValueError(f"{ds.root}/manifest.parquet: split {split!r} has no utterance with "
                             f"{m}; cannot compute its normalisation statistics")
        out[m] = _stream_stats(ds.features[m].get(u) for u in utts)
    return out


def _stream_stats(arrays) -> ModalityStats:
    """Chan et al.'s pairwise merge of per-utterance (count, mean, M2), all float64."""
    n, mean, m2, utts = 0, None, None, 0
    for a in arrays:
        x = np.asarray(a, np.float64)                              # (T, D)
        nb, mb = len(x), x.mean(0)
        m2b = ((x - mb) ** 2).sum(0)
        if mean is None:
            n, mean, m2 = nb, mb, m2b
        else:
            delta, total = mb - mean, n + nb
            mean = mean + delta * (nb / total)
            m2 = m2 + m2b + delta ** 2 * (n * nb / total)
            n = total
        utts += 1
    std = np.sqrt(m2 / n)
    floor = max(FLOOR_ABS, FLOOR_REL * float(std.max()))
    scale = np.where(std > floor, std, 1.0)
    return ModalityStats(mean, std, scale, int(n), utts)


def stats_dirs(ds: Dataset) -> list[Path]:
    """Where statistics live: beside the dataset, then the per-node cache."""
    cache = Path(os.environ.get("AVSTUDY_CACHE", Path.home() / ".cache" / "avstudy"))
    name = hashlib.blake2b(str(ds.root.resolve()).encode(), digest_size=6).hexdigest()
    return [ds.root / "stats", cache / "stats" / f"{ds.root.name}-{name}"]


def load_stats(ds: Dataset, split: str = "train") -> FeatureStats:
    """The split's statistics: read from disk, or computed once and stored (atomic, locked)."""
    key = split_key(ds, split)
    for d in stats_dirs(ds):
        path = d / f"{split}_{key}.json"
        if path.exists():
            return _read(path, key)
    errors = []
    for d in stats_dirs(ds):
        try:
            return _compute_locked(ds, split, key, d)
        except OSError as err:  # not writable: try the next location
            errors.append(f"{d}: {err}")
    raise OSError(f"{ds.root}: cannot store normalisation statistics ({'; '.join(errors)})")


def _compute_locked(ds: Dataset, split: str, key: str, d: Path) -> FeatureStats:
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{split}_{key}.json"
    with open(d / f"{split}_{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():  # another trial wrote it while this one waited
            return _read(path, key)
        stats = compute_stats(ds, split)
        doc = {"version": STATS_VERSION, "key": key, "split": split, "dataset": str(ds.root),
               **{m: s.to_dict() for m, s in stats.items()}}
        atomic_write_json(path, doc)
    return FeatureStats(key, path, stats)


def _read(path: Path, key: str) -> FeatureStats:
    try:
        doc = json.loads(path.read_text())
        return FeatureStats(key, path, {m: ModalityStats.from_dict(doc[m]) for m in MODALITIES})
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: unreadable normalisation statistics ({err}); delete it to "
                         "recompute") from err
