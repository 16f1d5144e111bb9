"""Helpers shared by the corpus adapters: errors, media lookup, speaker-independent splits.

Every adapter returns a manifest DataFrame with the columns of the dataset contract (utt_id,
speaker, split and/or fold, label, soft_<class>, arousal/valence/dominance, gender) plus the
media columns the feature extractor reads: `audio_path`, `video_path` (str or None) and, for
corpora whose utterance video is a segment of a longer file, `video_start`/`video_end` (seconds).
"""
from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

SPLIT_NAMES = {"train": "train", "development": "dev", "dev": "dev", "validation": "dev",
               "test": "test"}
AUDIO_EXTS = (".wav", ".flac")
VIDEO_EXTS = (".flv", ".avi", ".mp4", ".mkv", ".mov")


class CorpusError(ValueError):
    """A raw corpus or partition file that cannot be used; the message names the file and row."""


@dataclass(frozen=True)
class CorpusOption:
    """One keyword of a corpus's scan(), and the `features extract` flag that sets it.

    `flag_value`: the flag takes no argument and sets the keyword to this value (else `default`).
    Several corpora may declare the same flag for the same keyword (e.g. `--seed`).
    """
    key: str                                 # scan() keyword
    flag: str                                # CLI flag, e.g. "--test-session"
    help: str
    default: object = None
    type: type | None = None                 # argparse type for flags that take a value
    choices: tuple | None = None
    flag_value: object = None


# the split seed of the adapters that draw a speaker-independent split when no partition is given
SPLIT_SEED = CorpusOption("seed", "--seed", "split seed when there is no partition file "
                          "(CREMA-D, MSP-IMPROV without Split_Set)", default=0, type=int)


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
    """Read a partition CSV as strings, checking encoding, header and field counts.

    Every problem is a CorpusError naming the file and the line: a missing or empty file, text
    that is not UTF-8, a header without data rows, a row with more or fewer fields than the
    header, broken quoting. Blank lines are skipped. The CSV line of row i is `line_of(df, i)`.
    """
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: partition file not found")
    header, rows, lines = _csv_rows(path, _decode(path, path.read_bytes()))
    names = [c.strip() for c in header]
    missing = [c for c in required if c not in names]
    if missing:
        raise CorpusError(f"{path}: missing column(s) {missing}; header is {names}")
    if not rows:
        raise CorpusError(f"{path}: header only, no data rows")
    df = pd.DataFrame(rows, columns=names, dtype=str)
    df.attrs["lines"] = lines
    return df


def line_of(df: pd.DataFrame, i: int) -> str:
    """'line N' of row i of a frame from read_csv (the physical line where the record ends)."""
    lines = df.attrs.get("lines")
    return f"line {lines[i] if lines is not None else i + 2}"


def _decode(path: Path, data: bytes) -> str:
    """UTF-8 text (a BOM is dropped); else CorpusError with the line of the first bad byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise CorpusError(f"{path}: line {line}: byte 0x{data[err.start]:02x} is not UTF-8 text; "
                          "save the file as UTF-8") from None


def _csv_rows(path: Path, text: str) -> tuple[list[str], list[list[str]], list[int]]:
    """(header, rows, line number of each row); rows must have as many fields as the header."""
    if not text.strip():
        raise CorpusError(f"{path}: empty file (expected a header line and data rows)")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header, rows, lines = None, [], []
    try:
        for fields in reader:
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue                                   # blank line
            if header is None:
                header = _check_header(path, fields, reader.line_num)
            elif len(fields) != len(header):
                raise CorpusError(f"{path}: line {reader.line_num}: {len(fields)} fields, the header "
                                  f"has {len(header)}")
            else:
                rows.append(fields)
                lines.append(reader.line_num)
    except csv.Error as err:
        raise CorpusError(f"{path}: line {reader.line_num}: cannot parse CSV ({err})") from None
    return header, rows, lines


def _check_header(path: Path, fields: list[str], line: int) -> list[str]:
    names = [c.strip() for c in fields]
    dup = sorted({c for c in names if c and names.count(c) > 1})
    if dup:
        raise CorpusError(f"{path}: line {line}: column(s) {dup} appear twice in the header")
    return fields


def numeric_column(df: pd.DataFrame, col: str, path: Path, lo: float, hi: float) -> np.ndarray:
    """Column as float, every value finite and in [lo, hi]; else CorpusError with the CSV line."""
    values = pd.to_numeric(df[col].str.strip(), errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(values) | (values < lo) | (values > hi))
    if len(bad):
        i = int(bad[0])
        raise CorpusError(f"{path}: {line_of(df, i)} ({df.iloc[i, 0]}): column {col!r} is "
                          f"{df[col].iloc[i]!r}, expected a number in [{lo}, {hi}]")
    return values


def check_unique(df: pd.DataFrame, col: str, path: Path) -> None:
    dup = np.flatnonzero(df[col].duplicated().to_numpy())
    if len(dup):
        i = int(dup[0])
        raise CorpusError(f"{path}: {line_of(df, i)}: {col} {df[col].iloc[i]!r} appears twice")


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
