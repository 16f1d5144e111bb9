"""MSP-IMPROV adapter (dimensional: arousal, valence, dominance on the raw 1-5 scale).

Utterance names: `MSP-IMPROV-S01A-F02-R-FF01` = sentence 01, target emotion A(ngry)/H(appy)/
S(ad)/N(eutral), speaker F02 (female actor of session 2), scenario R(ead)/T(arget improvised)/
P (other improvised)/S (natural interaction), then the dyad code.

Assumed media layout (the MSP-IMPROV release): `Audio/session<N>/<S01A>/<R>/<utt>.wav` and
`Video/session<N>/<S01A>/<R>/<utt>.avi`. Files are matched by name anywhere under `Audio/` and
`Video/` (or under the root when those folders are absent), so a flattened copy works as well.

Labels: VAVL's `labels_consensus_N.csv` (FileName, EmoAct, EmoVal, EmoDom, SpkrID, Gender,
Split_Set); its SpkrID is the session number. The manifest's `speaker` is the actor (`F02`), its
`session` the session number. Without Split_Set, sessions are split seeded (whole sessions, so the
split stays speaker-independent). With `target_labels=True`, `label` is the elicitation target
emotion from the file name (not a perceptual label) and the dataset gets 4 classes.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from study.data.corpora.common import (
    AUDIO_EXTS,
    SPLIT_SEED,
    VIDEO_EXTS,
    CorpusError,
    CorpusOption,
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
from study.data.manifest import DIMENSIONS

NAME = "msp-improv"
PARTITION = "MSP-IMPROV: VAVL's labels_consensus_N.csv (required: it holds the A/V/D labels)"
OPTIONS = (
    SPLIT_SEED,
    CorpusOption("target_labels", "--target-labels", "MSP-IMPROV: add the elicitation target "
                 "emotion of the file name as a 4-class label (not a perceptual label)",
                 default=False, flag_value=True),
)
COLUMNS = {"arousal": "EmoAct", "valence": "EmoVal", "dominance": "EmoDom"}
TARGETS = {"A": "angry", "H": "happy", "S": "sad", "N": "neutral"}
CLASSES = ("neutral", "happy", "sad", "angry")
UTT_NAME = re.compile(r"^MSP-IMPROV-S(?P<sentence>\d{2})(?P<target>[A-Z])-(?P<gender>[FM])"
                  r"(?P<session>\d{2})-(?P<scenario>[A-Z])-(?P<dyad>[A-Z]{2}\d{2})$")


def parse_name(utt_id: str, where: str) -> dict:
    m = UTT_NAME.match(utt_id)
    if not m or m["target"] not in TARGETS:
        raise CorpusError(f"{where}: {utt_id!r} is not an MSP-IMPROV name like "
                          "MSP-IMPROV-S01A-F02-R-FF01")
    return {"utt_id": utt_id, "speaker": f"{m['gender']}{m['session']}",
            "session": int(m["session"]), "sentence": m["sentence"],
            "target_emotion": TARGETS[m["target"]], "scenario": m["scenario"]}


def targets(manifest: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(classes, dimensions): the 4 target classes only when the manifest has labels."""
    return (list(CLASSES) if manifest["label"].notna().any() else []), list(DIMENSIONS)


def scan(root: str | Path, partition: str | Path | None = None, seed: int = 0,
         target_labels: bool = False,
         fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> pd.DataFrame:
    """Manifest of a raw MSP-IMPROV tree from a labels file (required: it holds the A/V/D labels)."""
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"{root}: MSP-IMPROV root folder not found")
    if partition is None:
        raise CorpusError("MSP-IMPROV needs a labels file (VAVL's labels_consensus_N.csv with "
                          "FileName, EmoAct, EmoVal, EmoDom, SpkrID, Gender, Split_Set): "
                          "pass --partition")
    path = Path(partition)
    raw = read_csv(path, ["FileName", *COLUMNS.values()])
    raw["utt_id"] = [Path(f.strip()).stem for f in raw["FileName"]]
    check_unique(raw, "utt_id", path)
    df = pd.DataFrame([parse_name(u, f"{path}: {line_of(raw, i)}") for i, u in enumerate(raw["utt_id"])])
    for dim, col in COLUMNS.items():
        df[dim] = numeric_column(raw, col, path, 1.0, 5.0)
    _check_ids(raw, df, path)
    df["gender"] = ["Female" if s[0] == "F" else "Male" for s in df["speaker"]]
    df["split"] = _splits(raw, df, path, seed, fractions)
    df["label"] = df["target_emotion"] if target_labels else None
    audio = index_media(root, AUDIO_EXTS, ["Audio"])
    video = index_media(root, VIDEO_EXTS, ["Video"])
    df = attach_media(df, audio, video)
    check_speaker_independent(df, str(path))
    return df.reset_index(drop=True)


def _check_ids(raw: pd.DataFrame, df: pd.DataFrame, path: Path) -> None:
    """SpkrID (session) and Gender columns, when present, must agree with the file name."""
    for i in range(len(df)):
        name, session, speaker = raw["FileName"].iloc[i], df["session"].iloc[i], df["speaker"].iloc[i]
        if "SpkrID" in raw.columns and raw["SpkrID"].iloc[i].strip() not in ("", str(session)):
            raise CorpusError(f"{path}: {line_of(raw, i)} ({name}): SpkrID {raw['SpkrID'].iloc[i]!r} "
                              f"is not the session {session} in the file name")
        if "Gender" in raw.columns and raw["Gender"].iloc[i].strip()[:1] not in ("", speaker[0]):
            raise CorpusError(f"{path}: {line_of(raw, i)} ({name}): Gender {raw['Gender'].iloc[i]!r} "
                              f"contradicts speaker {speaker} in the file name")


def _splits(raw: pd.DataFrame, df: pd.DataFrame, path: Path, seed: int, fractions) -> list[str]:
    if "Split_Set" in raw.columns:
        return [normalise_split(v, f"{path}: {line_of(raw, i)}") for i, v in enumerate(raw["Split_Set"])]
    by_session = speaker_split(df["session"].astype(str), seed, fractions)
    return [by_session[str(s)] for s in df["session"]]
