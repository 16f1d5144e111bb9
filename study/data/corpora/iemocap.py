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

import math
import re
from pathlib import Path

import pandas as pd

from study.data.corpora.common import CorpusError, CorpusOption, check_speaker_independent
from study.data.manifest import DIMENSIONS

NAME = "iemocap"
PARTITION = "IEMOCAP: none (folds are sessions; pick the held-out one with --test-session)"
OPTIONS = (
    CorpusOption("test_session", "--test-session", "IEMOCAP: the held-out session (test = its two "
                 "speakers, dev = the female speaker of the next session)", default=5, type=int),
    CorpusOption("merge_excited", "--keep-excited", "IEMOCAP: do not merge excited into happy "
                 "(excited is then dropped from the 4 classes)", default=True, flag_value=False),
    CorpusOption("task", "--iemocap-task", "IEMOCAP: categorical keeps the 4 classes only; "
                 "dimensional keeps every utterance for A/V/D (label null outside the 4)",
                 default="categorical", type=str, choices=("categorical", "dimensional")),
)
CLASSES = ("neutral", "happy", "sad", "angry")
CODES = {"neu": "neutral", "hap": "happy", "sad": "sad", "ang": "angry"}
# every code of the release: exc(ited), fru(strated), fea(r), sur(prised), dis(gusted), oth(er),
# xxx (no agreement); those outside CODES are kept for dimensional tasks, never silently dropped
KNOWN_CODES = (*CODES, "exc", "fru", "fea", "sur", "dis", "oth", "xxx")
VAD_RANGE = (1.0, 5.0)
NUMBER = r"\d+(?:\.\d*)?"
LINE = re.compile(rf"^\[\s*(?P<start>{NUMBER})\s*-\s*(?P<end>{NUMBER})\s*\]\s+(?P<utt>\S+)\s+"
                  r"(?P<emo>\S+)\s+\[(?P<vad>[^\]]*)\]$")
UTT = re.compile(r"^Ses(?P<session>\d{2})[FM]_[A-Za-z0-9_]+_(?P<gender>[FM])\d{3}$")
# lines that carry no utterance: the '%' header, per-evaluator categorical (C-E1:) and attribute
# (A-E3:) ratings, blank lines; anything else is reported, not skipped
OTHER = re.compile(r"^(%.*|[CA]-[A-Za-z]+\d*:.*|)$")
SESSION_DIR = re.compile(r"^Session(?P<n>\d+)$")


def targets(manifest: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(classes, dimensions): the 4 classes and IEMOCAP's A/V/D, whatever the task."""
    return list(CLASSES), list(DIMENSIONS)


def scan(root: str | Path, partition: str | Path | None = None, test_session: int = 5,
         merge_excited: bool = True, task: str = "categorical") -> pd.DataFrame:
    """Manifest of a raw IEMOCAP tree (+ media paths); see the module docstring."""
    root = Path(root)
    if partition is not None:
        raise CorpusError("IEMOCAP takes no partition file: folds are sessions (`fold`), and "
                          "the split is chosen with test_session (--test-session)")
    if task not in ("categorical", "dimensional"):
        raise CorpusError(f"task must be 'categorical' or 'dimensional', got {task!r}")
    sessions = _sessions(root)
    rows = [r for n, s in sessions.items() for r in _session_rows(s, n)]
    if not rows:
        raise CorpusError(f"{root}: no labelled utterances found in Session*/dialog/EmoEvaluation")
    df = pd.DataFrame(rows)
    dup = df[df["utt_id"].duplicated()]
    if len(dup):
        raise CorpusError(f"{dup['source'].iloc[0]}: utterance {dup['utt_id'].iloc[0]!r} is "
                          "labelled twice")
    df["label"] = [_label(e, merge_excited) for e in df["emotion_code"]]
    if task == "categorical":
        df = df[df["label"].notna()]
    if df.empty:
        raise CorpusError(f"{root}: no utterance of the classes {list(CLASSES)} in "
                          "Session*/dialog/EmoEvaluation")
    df["split"] = _split(df, test_session, set(sessions))
    check_speaker_independent(df, str(root))
    return df.drop(columns=["source"]).reset_index(drop=True)


def _sessions(root: Path) -> dict[int, Path]:
    """{n: Session<n>/} for the folders named exactly Session<n>; other entries are ignored."""
    if not root.is_dir():
        raise CorpusError(f"{root}: IEMOCAP root folder not found")
    found: dict[int, Path] = {}
    for path in sorted(root.iterdir()):
        m = SESSION_DIR.match(path.name)
        if m and path.is_dir():
            n = int(m["n"])
            if n in found:
                raise CorpusError(f"{path}: a second folder for session {n} (first: {found[n]})")
            found[n] = path
    if not found:
        raise CorpusError(f"{root}: no Session<n>/ folders (expected IEMOCAP_full_release)")
    return found


def _label(code: str, merge_excited: bool) -> str | None:
    if code == "exc" and merge_excited:
        return "happy"
    return CODES.get(code)


def _session_rows(session: Path, n: int) -> list[dict]:
    rows = []
    for txt in sorted((session / "dialog" / "EmoEvaluation").glob("*.txt")):
        if not txt.is_file() or txt.name.startswith("._"):        # folders, macOS resource forks
            continue
        for lineno, line in enumerate(_read_lines(txt), start=1):
            line = line.strip()
            if line.startswith("["):
                rows.append(_parse_line(line, f"{txt}: line {lineno}", session, n))
            elif not OTHER.match(line):
                raise CorpusError(f"{txt}: line {lineno}: unexpected line {_short(line)!r} (expected "
                                  "'[start - end]<TAB>utterance<TAB>emotion<TAB>[v, a, d]', an "
                                  "evaluator line 'C-E1:...'/'A-E1:...', a '%' comment or a blank line)")
    return rows


def _read_lines(txt: Path) -> list[str]:
    """Lines of a UTF-8 (or ASCII) label file, numbered as in an editor."""
    data = txt.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise CorpusError(f"{txt}: line {line}: byte 0x{data[err.start]:02x} is not UTF-8 "
                          "text") from None
    return [line.rstrip("\r") for line in text.split("\n")]


def _short(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[:n] + "..."


def _parse_line(line: str, where: str, session: Path, n: int) -> dict:
    m = LINE.match(line)
    u = UTT.match(m["utt"]) if m else None
    if not m or not u:
        raise CorpusError(f"{where}: cannot parse {_short(line)!r} (expected "
                          "'[start - end]<TAB>SesNN..._F000<TAB>emo<TAB>[v, a, d]')")
    if int(u["session"]) != n:
        raise CorpusError(f"{where}: utterance {m['utt']} is not from {session.name}")
    if m["emo"] not in KNOWN_CODES:
        raise CorpusError(f"{where}: unknown emotion code {_short(m['emo'])!r}; IEMOCAP's codes "
                          f"are {list(KNOWN_CODES)}")
    start, end = float(m["start"]), float(m["end"])
    if not (math.isfinite(end) and end > start):
        raise CorpusError(f"{where}: segment [{start} - {end}] is empty or not finite")
    val, act, dom = _vad(m["vad"], where)
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


def _vad(text: str, where: str) -> tuple[float, float, float]:
    """'2.5, 3.0, 3.5' -> (valence, activation, dominance), each finite and within VAD_RANGE."""
    parts = text.split(",")
    try:
        values = tuple(float(x) for x in parts)
    except ValueError:
        values = ()
    if len(values) != 3:
        raise CorpusError(f"{where}: [{_short(text)}] is not three numbers [v, a, d]")
    lo, hi = VAD_RANGE
    for name, v in zip(("valence", "activation", "dominance"), values):
        if not (math.isfinite(v) and lo <= v <= hi):
            raise CorpusError(f"{where}: {name} {v} is not a number in [{lo}, {hi}]")
    return values


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
