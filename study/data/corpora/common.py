"""Helpers shared by the corpus adapters: errors, media lookup, speaker-independent splits.

Every adapter returns a manifest DataFrame with the columns of the dataset contract (utt_id,
speaker, split and/or fold, label, soft_<class>, arousal/valence/dominance, gender) plus the
media columns the feature extractor reads: `audio_path`, `video_path` (str or None) and, for
corpora whose utterance video is a segment of a longer file, `video_start`/`video_end` (seconds).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

SPLIT_NAMES = {"train": "train", "development": "dev", "dev": "dev", "validation": "dev",
               "test": "test"}
AUDIO_EXTS = (".wav", ".flac")
VIDEO_EXTS = (".flv", ".avi", ".mp4", ".mkv", ".mov")


class CorpusError(ValueError):
    """A raw corpus or partition file that cannot be used; the message names the file and row."""


def index_media(root: Path, exts: Iterable[str], subdirs: Iterable[str] = ()) -> dict[str, Path]:
    """Map file stem -> path for media files under `root` (the named subdirs first, then anywhere).

    A stem found twice with different paths raises CorpusError: the manifest must not silently
    pick one of two recordings.
    """
    exts = tuple(e.lower() for e in exts)
    bases = [root / s for s in subdirs if (root / s).is_dir()] or [root]
    found: dict[str, Path] = {}
    for base in bases:
        for path in sorted(base.rglob("*")):
            if path.suffix.lower() not in exts or not path.is_file() or path.name.startswith("._"):
                continue
            if path.stem in found and found[path.stem] != path:
                raise CorpusError(f"{path}: a second file for utterance {path.stem!r} "
                                  f"(first: {found[path.stem]})")
            found[path.stem] = path
    return found


def speaker_split(speakers: Iterable[str], seed: int = 0,
                  fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> dict[str, str]:
    """Deterministic speaker-independent split: speaker -> train/dev/test.

    Speakers are sorted, shuffled with `seed`, then cut by `fractions` (at least one speaker in
    dev and test when there are three or more speakers).
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1):
        raise CorpusError(f"split fractions must be three non-negative numbers summing to 1, "
                          f"got {fractions}")
    spk = sorted(set(map(str, speakers)))
    order = np.random.default_rng(seed).permutation(len(spk))
    n = len(spk)
    n_dev = max(int(round(fractions[1] * n)), 1 if n >= 3 else 0)
    n_test = max(int(round(fractions[2] * n)), 1 if n >= 3 else 0)
    names = ["test"] * n_test + ["dev"] * n_dev + ["train"] * (n - n_dev - n_test)
    return {spk[i]: names[k] for k, i in enumerate(order)}


def normalise_split(value: object, where: str) -> str:
    """'Train'/'Development'/'Test' (any case) -> train/dev/test, else CorpusError naming `where`."""
    key = str(value).strip().lower()
    if key not in SPLIT_NAMES:
        raise CorpusError(f"{where}: Split_Set {value!r} is not one of Train/Development/Test")
    return SPLIT_NAMES[key]


def read_csv(path: Path, required: Iterable[str]) -> pd.DataFrame:
    """Read a partition CSV as strings, checking the header; row i is CSV line i + 2."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: partition file not found")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.columns = [c.strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise CorpusError(f"{path}: missing column(s) {missing}; header is {list(df.columns)}")
    return df


def numeric_column(df: pd.DataFrame, col: str, path: Path, lo: float, hi: float) -> np.ndarray:
    """Column as float, every value finite and in [lo, hi]; else CorpusError with the CSV line."""
    values = pd.to_numeric(df[col].str.strip(), errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(values) | (values < lo) | (values > hi))
    if len(bad):
        i = int(bad[0])
        raise CorpusError(f"{path}: line {i + 2} ({df.iloc[i, 0]}): column {col!r} is "
                          f"{df[col].iloc[i]!r}, expected a number in [{lo}, {hi}]")
    return values


def check_unique(df: pd.DataFrame, col: str, path: Path) -> None:
    dup = np.flatnonzero(df[col].duplicated().to_numpy())
    if len(dup):
        i = int(dup[0])
        raise CorpusError(f"{path}: line {i + 2}: {col} {df[col].iloc[i]!r} appears twice")


def check_speaker_independent(df: pd.DataFrame, where: str) -> None:
    """Every speaker in exactly one split."""
    if "split" not in df.columns:
        return
    n = df.groupby("speaker")["split"].nunique()
    if (n > 1).any():
        spk = n[n > 1].index[0]
        splits = sorted(df.loc[df["speaker"] == spk, "split"].unique())
        raise CorpusError(f"{where}: speaker {spk!r} appears in splits {splits}; the partition "
                          "must be speaker-independent")


def attach_media(df: pd.DataFrame, audio: dict[str, Path], video: dict[str, Path]) -> pd.DataFrame:
    """Add audio_path/video_path (None when absent) and has_audio/has_video from existence."""
    df = df.copy()
    df["audio_path"] = [str(audio[u]) if u in audio else None for u in df["utt_id"]]
    df["video_path"] = [str(video[u]) if u in video else None for u in df["utt_id"]]
    df["has_audio"] = df["audio_path"].notna()
    df["has_video"] = df["video_path"].notna()
    return df
