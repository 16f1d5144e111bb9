"""CREMA-D adapter.

Raw layout (the CREMA-D git repository): `AudioWAV/<utt>.wav` and `VideoFlash/<utt>.flv`, with
utt = `ActorID_Sentence_Emotion_Level`, e.g. `1001_DFA_ANG_XX`. Files elsewhere under the root are
found by name when those folders are absent. Optional `VideoDemographics.csv` (ActorID, Sex)
gives the gender when no partition file does.

Partition: VAVL's `label_consensus_N.csv` (FileName, angry, sad, disgust, fear, neutral, happy,
SpkrID, Gender, Split_Set). Its rows define the utterances; label = argmax of the soft labels
(ties broken by the file-name emotion). Without a partition file every file is used, the label is
the file-name emotion and the split is speaker-independent, seeded (`speaker_split`).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from study.data.corpora.common import (
    AUDIO_EXTS,
    SPLIT_SEED,
    VIDEO_EXTS,
    CorpusError,
    attach_media,
    check_speaker_independent,
    check_unique,
    index_media,
    line_of,
    normalise_split,
    numeric_column,
    read_csv,
    speaker_split,
)

NAME = "crema-d"
PARTITION = "CREMA-D: VAVL's label_consensus_N.csv (optional; without it every file is used)"
OPTIONS = (SPLIT_SEED,)
CLASSES = ("angry", "sad", "disgust", "fear", "neutral", "happy")   # VAVL consensus-file order
CODES = {"ANG": "angry", "SAD": "sad", "DIS": "disgust", "FEA": "fear", "NEU": "neutral",
         "HAP": "happy"}
UTT_NAME = re.compile(r"^(?P<actor>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<level>[A-Z]{1,2})$")


def parse_name(utt_id: str, where: str) -> dict:
    """'1001_DFA_ANG_XX' -> speaker, sentence, file_emotion, level."""
    m = UTT_NAME.match(utt_id)
    if not m or m["emotion"] not in CODES:
        raise CorpusError(f"{where}: {utt_id!r} is not a CREMA-D name ActorID_Sentence_Emotion_Level "
                          f"with Emotion in {sorted(CODES)}")
    return {"utt_id": utt_id, "speaker": m["actor"], "sentence": m["sentence"],
            "file_emotion": CODES[m["emotion"]], "level": m["level"]}


def targets(manifest: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(classes, dimensions) of the dataset built from a CREMA-D manifest."""
    return list(CLASSES), []


def scan(root: str | Path, partition: str | Path | None = None, seed: int = 0,
         fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> pd.DataFrame:
    """Manifest of a raw CREMA-D tree (+ media paths); see the module docstring."""
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"{root}: CREMA-D root folder not found")
    audio = index_media(root, AUDIO_EXTS, ["AudioWAV"])
    video = index_media(root, VIDEO_EXTS, ["VideoFlash"])
    if partition is not None:
        df = _from_partition(Path(partition))
    else:
        df = _from_files(root, sorted(set(audio) | set(video)), seed, fractions)
    df = attach_media(df, audio, video)
    check_speaker_independent(df, str(partition or root))
    return df.reset_index(drop=True)


def _from_files(root: Path, utts: list[str], seed: int, fractions) -> pd.DataFrame:
    if not utts:
        raise CorpusError(f"{root}: no CREMA-D media (AudioWAV/*.wav, VideoFlash/*.flv) found")
    df = pd.DataFrame([parse_name(u, f"{root}: file {u}") for u in utts])
    splits = speaker_split(df["speaker"], seed, fractions)
    df["split"] = df["speaker"].map(splits)
    df["label"] = df["file_emotion"]
    gender = _demographics(root)
    df["gender"] = df["speaker"].map(gender) if gender else None
    return df


def _demographics(root: Path) -> dict[str, str]:
    path = root / "VideoDemographics.csv"
    if not path.is_file():
        return {}
    demo = read_csv(path, ["ActorID", "Sex"])
    return dict(zip(demo["ActorID"].str.strip(), demo["Sex"].str.strip()))


def _from_partition(path: Path) -> pd.DataFrame:
    raw = read_csv(path, ["FileName", *CLASSES, "SpkrID", "Gender", "Split_Set"])
    raw["utt_id"] = [Path(f.strip()).stem for f in raw["FileName"]]
    check_unique(raw, "utt_id", path)
    rows = [parse_name(u, f"{path}: {line_of(raw, i)}") for i, u in enumerate(raw["utt_id"])]
    df = pd.DataFrame(rows)
    for i, (spk, name_spk) in enumerate(zip(raw["SpkrID"].str.strip(), df["speaker"])):
        if spk != name_spk:
            raise CorpusError(f"{path}: {line_of(raw, i)} ({raw['FileName'].iloc[i]}): SpkrID {spk!r} "
                              f"does not match the actor in the file name {name_spk!r}")
    soft = np.stack([numeric_column(raw, c, path, 0.0, 1.0) for c in CLASSES], axis=1)  # (N, K)
    sums = soft.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > 0.02)
    if len(bad):
        i = int(bad[0])
        raise CorpusError(f"{path}: {line_of(raw, i)} ({raw['FileName'].iloc[i]}): soft labels sum to "
                          f"{sums[i]:.3f}, expected 1")
    for k, c in enumerate(CLASSES):
        df[f"soft_{c}"] = soft[:, k]
    df["label"] = [_argmax_label(s, e) for s, e in zip(soft, df["file_emotion"])]
    df["gender"] = raw["Gender"].str.strip().to_numpy()
    df["split"] = [normalise_split(v, f"{path}: {line_of(raw, i)}") for i, v in enumerate(raw["Split_Set"])]
    return df


def _argmax_label(soft: np.ndarray, file_emotion: str) -> str:
    """Class with the largest share; among tied classes the file-name emotion wins."""
    tied = [CLASSES[k] for k in np.flatnonzero(np.isclose(soft, soft.max()))]
    return file_emotion if file_emotion in tied else tied[0]
