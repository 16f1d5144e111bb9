"""Reading and checking a dataset's dataset.json and manifest.parquet: every problem a
`DatasetError` naming the file, row or utterance at fault (dataset.py opens the feature files)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

SCHEMA_VERSION = 1
SPLITS = ("train", "dev", "test")
DIMENSIONS = ("arousal", "valence", "dominance")
MODALITIES = ("audio", "video")

class DatasetError(ValueError):
    """A dataset that cannot be used as it is; the message names the file/row at fault."""


def need(path: Path) -> Path:
    if not path.exists():
        raise DatasetError(f"{path}: missing (a dataset needs dataset.json, manifest.parquet, "
                           "audio.arrow and video.arrow)")
    return path


def read_meta(root: Path) -> dict:
    path = need(root / "dataset.json")
    if not path.is_file():
        raise DatasetError(f"{path}: not a file")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise DatasetError(f"{path}: not valid JSON ({clip(str(err))})") from err
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise DatasetError(f"{path}: schema_version {clip(repr(meta.get('schema_version')))} is "
                           f"not {SCHEMA_VERSION}")
    for key in ("audio", "video"):
        dim = meta[key].get("dim") if isinstance(meta.get(key), dict) else None
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise DatasetError(f"{path}: field {key}.dim must be a positive integer")
    for key in ("classes", "dimensions"):
        names = meta.get(key)
        if names is not None and (not isinstance(names, list)
                                  or not all(isinstance(n, str) and n for n in names)
                                  or len(set(names)) != len(names)):
            raise DatasetError(f"{path}: field {key!r} must be a list of distinct names, got "
                               f"{clip(repr(names))}")
    if not meta.get("classes") and not meta.get("dimensions"):
        raise DatasetError(f"{path}: needs 'classes' or 'dimensions' (or both)")
    return meta


def clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def read_manifest(root: Path, meta: dict) -> pd.DataFrame:
    path = need(root / "manifest.parquet")
    try:
        df = pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as err:
        raise DatasetError(f"{path}: not a readable Parquet file ({clip(str(err))})") from err
    for col in ("utt_id", "speaker"):
        if col not in df.columns:
            raise DatasetError(f"{path}: missing column {col!r}")
    if "split" not in df.columns and "fold" not in df.columns:
        raise DatasetError(f"{path}: needs a 'split' or a 'fold' column")
    dup = df["utt_id"][df["utt_id"].duplicated()]
    if len(dup):
        raise DatasetError(f"{path}: utt_id {dup.iloc[0]!r} appears more than once")
    nulls = df["utt_id"].isna()
    if nulls.any():
        raise DatasetError(f"{path}: row {int(np.flatnonzero(nulls)[0])} has no utt_id")
    for col in ("has_audio", "has_video"):
        df[col] = _flags(path, df, col) if col in df.columns else True
    both_missing = df[~df["has_audio"] & ~df["has_video"]]
    if len(both_missing):
        raise DatasetError(f"{path}: row {both_missing.index[0]} (utt_id "
                           f"{both_missing['utt_id'].iloc[0]!r}) has neither audio nor video")
    _check_splits(path, df, meta.get("dev_from"))
    _check_labels(path, df, meta)
    return df


def _flags(path: Path, df: pd.DataFrame, col: str) -> pd.Series:
    """A has_audio/has_video column as bool; the string "False" (or any non-flag) is an error,
    never read as True."""
    if pd.api.types.is_bool_dtype(df[col]) and not df[col].isna().any():
        return df[col].astype(bool)
    ok = df[col].map(lambda v: isinstance(v, (bool, np.bool_)) or (
        isinstance(v, (int, np.integer)) and v in (0, 1)))
    if not ok.all():
        i = int(np.flatnonzero(~ok.to_numpy())[0])
        raise DatasetError(f"{path}: row {i} (utt_id {df['utt_id'].iloc[i]!r}) column {col!r} is "
                           f"{clip(repr(df[col].iloc[i]))}, expected a boolean")
    return df[col].astype(bool)


def _check_splits(path: Path, df: pd.DataFrame, dev_from: str | None = None) -> None:
    """Splits are speaker-independent. dataset.json `dev_from` (fold resplits): "train" = dev is
    a share of the training speakers' utterances (only test must be speaker-disjoint); "test" =
    dev is the test split itself (no dev rows)."""
    if "split" not in df.columns:
        return
    if dev_from not in (None, "speakers", "train", "test"):
        raise DatasetError(f"{path.parent / 'dataset.json'}: dev_from {clip(repr(dev_from))} is "
                           "not one of 'speakers', 'train', 'test'")
    if dev_from == "train":
        df = df.assign(split=df["split"].replace({"dev": "train"}))
    bad = df[~df["split"].isin(SPLITS)]
    if len(bad):
        raise DatasetError(f"{path}: row {bad.index[0]} (utt_id {bad['utt_id'].iloc[0]!r}) has "
                           f"split {bad['split'].iloc[0]!r}, expected one of {SPLITS}")
    n_splits = df.groupby("speaker")["split"].nunique()
    leaked = n_splits[n_splits > 1]
    if len(leaked):
        spk = leaked.index[0]
        splits = sorted(df.loc[df["speaker"] == spk, "split"].unique())
        raise DatasetError(f"{path}: speaker {spk!r} appears in several splits {splits}; "
                           "splits must be speaker-independent")


def _check_labels(path: Path, df: pd.DataFrame, meta: dict) -> None:
    classes = meta.get("classes") or []
    if classes:
        if "label" not in df.columns:
            raise DatasetError(f"{path}: dataset.json lists classes but there is no 'label' column")
        labelled = df["label"].notna()
        bad = df[labelled & ~df["label"].isin(classes)]
        if len(bad):
            raise DatasetError(f"{path}: row {bad.index[0]} (utt_id {bad['utt_id'].iloc[0]!r}) has "
                               f"label {bad['label'].iloc[0]!r}, not in classes {classes}")
        soft = [f"soft_{c}" for c in classes if f"soft_{c}" in df.columns]
        _check_numeric(path, df, soft)
        _check_soft(path, df, soft, len(classes))
    dims = [d for d in meta.get("dimensions") or [] if d in df.columns]
    missing = [d for d in meta.get("dimensions") or [] if d not in df.columns]
    if missing:
        raise DatasetError(f"{path}: dataset.json lists dimensions {missing} but the manifest has "
                           "no such columns")
    _check_numeric(path, df, dims)


def _check_numeric(path: Path, df: pd.DataFrame, cols: list[str]) -> None:
    for col in cols:
        values = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            i = bad[0]
            raise DatasetError(f"{path}: row {i} (utt_id {df['utt_id'].iloc[i]!r}) column {col!r} "
                               f"is {df[col].iloc[i]!r}, expected a finite number")


def _check_soft(path: Path, df: pd.DataFrame, cols: list[str], n_classes: int) -> None:
    """Soft-label rows are proportions: none negative, summing to about 1 (an all-zero row
    would train on a 0/0 target)."""
    if not cols or not len(df):
        return
    if len(cols) != n_classes:
        raise DatasetError(f"{path}: soft-label columns {cols} do not cover all {n_classes} classes")
    values = df[cols].to_numpy(dtype=float)                       # (N, K)
    checks = [((values < 0).any(axis=1), "has a negative soft label"),
              (np.abs(values.sum(axis=1) - 1.0) > 1e-2, "has soft labels that do not sum to 1")]
    for bad, what in checks:
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DatasetError(f"{path}: row {i} (utt_id {df['utt_id'].iloc[i]!r}) {what} "
                               f"({', '.join(f'{c}={v:g}' for c, v in zip(cols, values[i]))})")
