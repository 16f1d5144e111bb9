"""IEMOCAP adapter (IEMOCAP_full_release layout).

Labels: `Session<n>/dialog/EmoEvaluation/*.txt`, one line per utterance:
`[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]`, the bracket
holding IEMOCAP's [valence, activation, dominance] (1-5). Media:
`Session<n>/sentences/wav/<dialog>/<utt>.wav` and the dialog video
`Session<n>/dialog/avi/DivX/<dialog>.avi`, of which an utterance is the [start, end] segment
(`video_start`, `video_end`). The dialog video shows both actors; the feature extractor keeps the
largest face in each frame.

Classes: the usual four (neutral, happy, sad, angry), excited merged into happy when
`merge_excited`. task="categorical" keeps those utterances only; task="dimensional" keeps every
utterance (label null outside the four classes).

Speakers: `Ses01F_impro01_M003` is spoken by `Ses01M` (session + the gender letter of the last
part). Folds: `fold` = session number, for leave-one-session-out. `split` for `test_session` t:
test = both speakers of session t; dev = the female speaker of session t % 5 + 1; train = the
other seven speakers. Speaker-independent, and dev never shares a session with test.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from study.data.corpora.common import CorpusError, check_speaker_independent

CLASSES = ("neutral", "happy", "sad", "angry")
CODES = {"neu": "neutral", "hap": "happy", "sad": "sad", "ang": "angry"}
LINE = re.compile(r"^\[\s*(?P<start>[\d.]+)\s*-\s*(?P<end>[\d.]+)\s*\]\s+(?P<utt>Ses\S+)\s+"
                  r"(?P<emo>\S+)\s+\[(?P<vad>[^\]]*)\]\s*$")
UTT = re.compile(r"^Ses(?P<session>\d{2})[FM]_.+_(?P<gender>[FM])\d{3}$")


def scan(root: str | Path, partition: str | Path | None = None, test_session: int = 5,
         merge_excited: bool = True, task: str = "categorical") -> pd.DataFrame:
    """Manifest of a raw IEMOCAP tree (+ media paths); see the module docstring."""
    root = Path(root)
    if partition is not None:
        raise CorpusError("IEMOCAP takes no partition file: folds are sessions (`fold`), and "
                          "the split is chosen with test_session (--test-session)")
    if task not in ("categorical", "dimensional"):
        raise CorpusError(f"task must be 'categorical' or 'dimensional', got {task!r}")
    sessions = sorted(p for p in root.glob("Session[0-9]*") if p.is_dir())
    if not sessions:
        raise CorpusError(f"{root}: no Session<n>/ folders (expected IEMOCAP_full_release)")
    rows = [r for s in sessions for r in _session_rows(s)]
    df = pd.DataFrame(rows)
    dup = df[df["utt_id"].duplicated()]
    if len(dup):
        raise CorpusError(f"{dup['source'].iloc[0]}: utterance {dup['utt_id'].iloc[0]!r} is "
                          "labelled twice")
    df["label"] = [_label(e, merge_excited) for e in df["emotion_code"]]
    if task == "categorical":
        df = df[df["label"].notna()]
    if df.empty:
        raise CorpusError(f"{root}: no labelled utterances found in Session*/dialog/EmoEvaluation")
    df["split"] = _split(df, test_session, {int(s.name[7:]) for s in sessions})
    check_speaker_independent(df, str(root))
    return df.drop(columns=["source"]).reset_index(drop=True)


def _label(code: str, merge_excited: bool) -> str | None:
    if code == "exc" and merge_excited:
        return "happy"
    return CODES.get(code)


def _session_rows(session: Path) -> list[dict]:
    n = int(session.name[len("Session"):])
    rows = []
    for txt in sorted((session / "dialog" / "EmoEvaluation").glob("*.txt")):
        for lineno, line in enumerate(txt.read_text(errors="replace").splitlines(), start=1):
            if line.startswith("["):
                rows.append(_parse_line(line, f"{txt}: line {lineno}", session, n))
    return rows


def _parse_line(line: str, where: str, session: Path, n: int) -> dict:
    m = LINE.match(line.strip())
    u = UTT.match(m["utt"]) if m else None
    if not m or not u:
        raise CorpusError(f"{where}: cannot parse {line.strip()!r} (expected "
                          "'[start - end]<TAB>SesNN..._F000<TAB>emo<TAB>[v, a, d]')")
    if int(u["session"]) != n:
        raise CorpusError(f"{where}: utterance {m['utt']} is not from {session.name}")
    start, end = float(m["start"]), float(m["end"])
    try:
        val, act, dom = (float(x) for x in m["vad"].split(","))
    except ValueError as err:
        raise CorpusError(f"{where}: [{m['vad']}] is not three numbers [v, a, d]") from err
    if not end > start:
        raise CorpusError(f"{where}: segment [{start} - {end}] is empty")
    utt = m["utt"]
    dialog = utt.rsplit("_", 1)[0]
    wav = session / "sentences" / "wav" / dialog / f"{utt}.wav"
    avi = session / "dialog" / "avi" / "DivX" / f"{dialog}.avi"
    return {"utt_id": utt, "speaker": f"Ses{n:02d}{u['gender']}", "gender":
            "Female" if u["gender"] == "F" else "Male", "fold": n, "dialog": dialog,
            "emotion_code": m["emo"], "arousal": act, "valence": val, "dominance": dom,
            "audio_path": str(wav) if wav.is_file() else None,
            "video_path": str(avi) if avi.is_file() else None,
            "video_start": start, "video_end": end,
            "has_audio": wav.is_file(), "has_video": avi.is_file(), "source": where}


def _split(df: pd.DataFrame, test_session: int, sessions: set[int]) -> list[str]:
    if test_session not in sessions:
        raise CorpusError(f"test_session {test_session} is not one of the sessions found "
                          f"{sorted(sessions)}")
    dev_session = test_session % 5 + 1
    if dev_session not in sessions:
        others = sorted(sessions - {test_session})
        if not others:
            raise CorpusError("IEMOCAP split needs at least two sessions")
        dev_session = others[0]
    dev_speaker = f"Ses{dev_session:02d}F"
    return ["test" if f == test_session else "dev" if s == dev_speaker else "train"
            for f, s in zip(df["fold"], df["speaker"])]
