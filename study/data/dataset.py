"""Dataset directories: manifest.parquet + memory-mapped Arrow IPC feature files + dataset.json.

A dataset is validated when it is opened. Every problem raises `DatasetError` naming the file,
row or utterance at fault; nothing is silently dropped.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.ipc as ipc

from study.data.manifest import (
    MODALITIES,
    SCHEMA_VERSION,
    SPLITS,
    DatasetError,
    clip,
    need,
    read_manifest,
    read_meta,
)

_DTYPES = {"float16": pa.float16(), "float32": pa.float32()}


# ----------------------------------------------------------------------------- writing


class FeatureWriter:
    """Streams (utt_id, (T, D) array) rows into one Arrow IPC file, a record batch at a time."""

    def __init__(self, path: str | Path, dim: int, dtype: str = "float16", batch_rows: int = 64):
        if dtype not in _DTYPES:
            raise DatasetError(f"{path}: dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        self.path, self.dim, self.dtype = Path(path), int(dim), dtype
        self.schema = pa.schema([
            ("utt_id", pa.string()),
            ("features", pa.list_(pa.list_(_DTYPES[dtype], self.dim))),
        ])
        self._sink = pa.OSFile(str(self.path), "wb")
        self._writer = ipc.new_file(self._sink, self.schema)
        self._ids: list[str] = []
        self._arrays: list[np.ndarray] = []
        self._batch_rows = batch_rows
        self.rows = 0

    def write(self, utt_id: str, array: np.ndarray) -> None:
        array = np.asarray(array)
        if array.ndim != 2 or array.shape[1] != self.dim or array.shape[0] == 0:
            raise DatasetError(
                f"{self.path.name}: utterance {utt_id!r} has features of shape {array.shape}, "
                f"expected (T>0, {self.dim})")
        self._ids.append(str(utt_id))
        self._arrays.append(array.astype(self.dtype, copy=False))
        if len(self._ids) >= self._batch_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._ids:
            return
        lengths = np.array([a.shape[0] for a in self._arrays], dtype=np.int32)
        flat = pa.array(np.concatenate(self._arrays).reshape(-1), type=_DTYPES[self.dtype])
        frames = pa.FixedSizeListArray.from_arrays(flat, self.dim)            # (sum T, D)
        offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
        seqs = pa.ListArray.from_arrays(offsets, frames)                       # (N, T_i, D)
        batch = pa.record_batch([pa.array(self._ids, pa.string()), seqs], schema=self.schema)
        self._writer.write_batch(batch)
        self.rows += len(self._ids)
        self._ids, self._arrays = [], []

    def close(self) -> None:
        self._flush()
        self._writer.close()
        self._sink.close()

    def __enter__(self) -> FeatureWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_dataset(out_dir: str | Path, manifest: pd.DataFrame, meta: dict,
                  audio: Iterable[tuple[str, np.ndarray]],
                  video: Iterable[tuple[str, np.ndarray]]) -> Path:
    """Write a complete dataset directory; `meta` needs classes, audio/video dims and rates."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = _complete_meta(meta)
    for modality, rows in (("audio", audio), ("video", video)):
        spec = meta[modality]
        with FeatureWriter(out / f"{modality}.arrow", spec["dim"], spec["dtype"]) as writer:
            for utt_id, array in rows:
                writer.write(utt_id, array)
    return finish_dataset(out, manifest, meta)


def finish_dataset(out_dir: str | Path, manifest: pd.DataFrame, meta: dict) -> Path:
    """Write manifest.parquet and dataset.json beside feature files written with FeatureWriter."""
    out = Path(out_dir)
    manifest.reset_index(drop=True).to_parquet(out / "manifest.parquet", index=False)
    (out / "dataset.json").write_text(json.dumps(_complete_meta(meta), indent=2))
    return out


def _complete_meta(meta: dict) -> dict:
    meta = {**meta, "schema_version": SCHEMA_VERSION}
    meta.setdefault("dimensions", [])
    meta.setdefault("provenance", {})
    for modality in MODALITIES:
        if modality not in meta or "dim" not in meta[modality]:
            raise DatasetError(f"dataset.json: meta[{modality!r}] needs at least 'dim'")
        meta[modality] = {"rate_hz": None, "extractor": "unknown", "dtype": "float16",
                          **meta[modality]}
    return meta


# ----------------------------------------------------------------------------- reading


class FeatureFile:
    """Memory-mapped view of one modality's Arrow file: utt_id -> (T, D) numpy array (zero copy)."""

    def __init__(self, path: Path, dim: int, full_check: bool = False):
        self.path, self.dim = path, dim
        try:
            reader = ipc.open_file(pa.memory_map(str(path), "r"))
            table = reader.read_all()
            if full_check:  # offsets, lengths and buffers of every batch (once per study)
                table.validate(full=True)
        except (OSError, pa.ArrowException) as err:
            raise DatasetError(f"{path}: not a readable Arrow IPC file ({clip(str(err))})") from err
        self._check_schema(table.schema)
        self._index: dict[str, tuple[np.ndarray, int, int]] = {}
        self.rows = 0
        for batch in table.to_batches():
            self._index_batch(batch)

    def _check_schema(self, schema: pa.Schema) -> None:
        names = schema.names
        if names[:2] != ["utt_id", "features"]:
            raise DatasetError(f"{self.path}: columns must be ['utt_id', 'features'], got {names}")
        frame_type = schema.field("features").type.value_type
        if not pa.types.is_fixed_size_list(frame_type) or frame_type.list_size != self.dim:
            raise DatasetError(
                f"{self.path}: frame width is {getattr(frame_type, 'list_size', frame_type)}, "
                f"dataset.json says {self.dim}")

    def _index_batch(self, batch: pa.RecordBatch) -> None:
        seqs = batch.column(1)                                     # ListArray of (T_i, D)
        ids = batch.column(0).to_pylist()
        self._check_nulls(batch, seqs, ids)
        values = seqs.values.values.to_numpy(zero_copy_only=False)  # (sum T * D,) zero-copy when no nulls
        frames = values.reshape(-1, self.dim)                      # (sum T, D)
        offsets = seqs.offsets.to_numpy()
        if len(offsets) != len(ids) + 1 or np.any(np.diff(offsets) < 0) or (
                len(ids) and (offsets[0] < 0 or offsets[-1] > len(frames))):
            raise DatasetError(f"{self.path}: sequence offsets are inconsistent (damaged file)")
        for i, utt in enumerate(ids):
            if utt in self._index:
                raise DatasetError(f"{self.path}: utterance {utt!r} appears twice")
            if offsets[i + 1] == offsets[i]:
                raise DatasetError(f"{self.path}: row {self.rows + i} (utterance {utt!r}) has a "
                                   "zero-length sequence")
            self._index[utt] = (frames, int(offsets[i]), int(offsets[i + 1]))
        self.rows += len(ids)

    def _check_nulls(self, batch: pa.RecordBatch, seqs: pa.Array, ids: list) -> None:
        """Null utterance ids, sequences, frames or values: named by row."""
        for what, arr in (("utt_id", batch.column(0)), ("sequence", seqs)):
            if arr.null_count:
                i = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
                raise DatasetError(f"{self.path}: row {self.rows + i} (utterance {ids[i]!r}) has a "
                                   f"null {what}")
        if seqs.values.null_count or seqs.values.values.null_count:
            raise DatasetError(f"{self.path}: a batch from row {self.rows} holds null frames or "
                               "values")

    def __contains__(self, utt_id: str) -> bool:
        return utt_id in self._index

    def __len__(self) -> int:
        return len(self._index)

    def ids(self) -> list[str]:
        return list(self._index)

    def get(self, utt_id: str) -> np.ndarray:
        frames, start, end = self._index[utt_id]
        return frames[start:end]                                   # (T, D)


@dataclass
class Dataset:
    root: Path
    meta: dict
    manifest: pd.DataFrame
    features: dict[str, FeatureFile] = field(repr=False)

    @property
    def classes(self) -> list[str]:
        return list(self.meta.get("classes", []))

    @property
    def dimensions(self) -> list[str]:
        return list(self.meta.get("dimensions", []))

    def audio(self, utt_id: str) -> np.ndarray:
        return self.features["audio"].get(utt_id)

    def video(self, utt_id: str) -> np.ndarray:
        return self.features["video"].get(utt_id)

    def split(self, name: str) -> pd.DataFrame:
        """The rows of split `name`; a dataset whose dev is its test split (dataset.json
        `dev_from: "test"`, a fold resplit for Foal-Net's protocol) returns test for dev."""
        if name == "dev" and self.meta.get("dev_from") == "test":
            name = "test"
        return self.manifest[self.manifest["split"] == name].reset_index(drop=True)

    def feature_path(self, modality: str) -> Path:
        return feature_dir(self.root, self.meta) / f"{modality}.arrow"

    def soft_columns(self) -> list[str]:
        cols = [f"soft_{c}" for c in self.classes]
        return cols if all(c in self.manifest.columns for c in cols) else []


def open_dataset(root: str | Path, check_values: bool = True) -> Dataset:
    """Open and validate a dataset directory. `check_values` (once per study) also validates the
    Arrow files fully (offsets, buffers) and scans every frame for NaN/Inf."""
    root = Path(root)
    meta = read_meta(root)
    manifest = read_manifest(root, meta)
    feats_at = feature_dir(root, meta)
    features = {m: FeatureFile(need(feats_at / f"{m}.arrow"), int(meta[m]["dim"]),
                               full_check=check_values)
                for m in MODALITIES}
    for modality, feats in features.items():
        _check_coverage(manifest, modality, feats)
        if check_values:
            _check_finite(manifest, modality, feats)
    return Dataset(root, meta, manifest, features)


def feature_dir(root: Path, meta: dict) -> Path:
    """Where the Arrow feature files are: the dataset directory, or, for a resplit dataset
    (study/data/folds.py), dataset.json `features_dir` (relative to the dataset directory)."""
    rel = meta.get("features_dir")
    if rel is None:
        return root
    if not isinstance(rel, str) or not rel:
        raise DatasetError(f"{root / 'dataset.json'}: field 'features_dir' must be a path (the "
                           f"directory holding audio.arrow and video.arrow), got {clip(repr(rel))}")
    return (root / rel).resolve()


def check_splits(ds: Dataset, splits: tuple[str, ...] = ("train", "dev", "test")) -> None:
    """Raises DatasetError naming the manifest when one of a study's splits has no utterance
    (a sweep needs train to fit, dev to select on and test for its final stage)."""
    counts = {s: int((ds.manifest["split"] == s).sum()) if "split" in ds.manifest else 0 for s in splits}
    empty = [s for s, n in counts.items() if n == 0]
    if empty:
        have = ", ".join(f"{s}: {n}" for s, n in counts.items())
        raise DatasetError(f"{ds.root}/manifest.parquet: split {empty[0]!r} has no utterances ({have}); "
                           f"a study needs utterances in each of {', '.join(splits)} (column 'split')")


def _check_coverage(manifest: pd.DataFrame, modality: str, feats: FeatureFile) -> None:
    needed = manifest.loc[manifest[f"has_{modality}"], "utt_id"]
    absent = [u for u in needed if u not in feats]
    if absent:
        raise DatasetError(
            f"{feats.path}: {len(absent)} utterance(s) with has_{modality}=True have no features, "
            f"e.g. {absent[0]!r} (set has_{modality}=False in manifest.parquet if the stream is "
            "truly missing)")


def _check_finite(manifest: pd.DataFrame, modality: str, feats: FeatureFile) -> None:
    for utt in manifest.loc[manifest[f"has_{modality}"], "utt_id"]:
        array = feats.get(utt)
        finite = np.isfinite(array).all(axis=1)                    # (T,)
        if not finite.all():
            frame = int(np.flatnonzero(~finite)[0])
            raise DatasetError(f"{feats.path}: utterance {utt!r} frame {frame} holds NaN or Inf")


def describe(ds: Dataset) -> str:
    """One paragraph a researcher can read: sizes, splits, class balance."""
    m = ds.manifest
    parts = [f"{len(m)} utterances, {m['speaker'].nunique()} speakers"]
    if "split" in m.columns:
        parts.append(", ".join(f"{s}={int((m['split'] == s).sum())}" for s in SPLITS))
    if ds.classes:
        counts = m["label"].value_counts()
        parts.append("classes: " + ", ".join(f"{c}={int(counts.get(c, 0))}" for c in ds.classes))
    lengths = [ds.audio(u).shape[0] for u in m.loc[m["has_audio"], "utt_id"][:200]]
    if lengths:
        parts.append(f"audio frames median {int(np.median(lengths))}")
    return "; ".join(parts)

