"""Property-based tests of the corpus adapters: generated partition CSVs and IEMOCAP label files,
valid, mutated or random bytes. Every case ends in a manifest that keeps the adapters' invariants
or in a CorpusError naming the file; nothing else (no pandas/csv/regex exception escapes)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from study.data.corpora import CorpusError, scan_corpus

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
JUNK = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                    st.integers(-3, 9).map(str), st.sampled_from(["0.5", "1", "0", "", " 1.0 ", "1e400"]))


def _check_scan(name: str, root: Path, part: Path | None = None, **options) -> pd.DataFrame | None:
    """scan_corpus must give a consistent manifest or a CorpusError naming the file."""
    try:
        df = scan_corpus(name, root, part, **options)
    except CorpusError as err:
        event("CorpusError")
        where = str(part if part is not None else root)
        assert where in str(err) or "test_session" in str(err) or "Session" in str(err), str(err)
        return None
    event("manifest")
    assert len(df) and df["utt_id"].is_unique
    if "split" in df:
        assert set(df["split"]) <= {"train", "dev", "test"}
        assert (df.groupby("speaker")["split"].nunique() == 1).all()
    return df


# ----------------------------------------------------------------------------- CREMA-D partition


CREMA_COLUMNS = ["FileName", "angry", "sad", "disgust", "fear", "neutral", "happy", "SpkrID", "Gender",
                 "Split_Set"]


def sometimes(draw, valid, broken, clean: bool = False):
    """`valid` four times in five (always when `clean`), else a value drawn from `broken`."""
    return valid if clean or draw(st.integers(0, 4)) else draw(broken)


@st.composite
def crema_rows(draw, clean: bool = False) -> list[str]:
    def pick(valid, broken):
        return sometimes(draw, valid, broken, clean)

    actor = draw(st.integers(1001, 1004))
    emo = pick(draw(st.sampled_from(["ANG", "SAD", "DIS", "FEA", "NEU", "HAP"])), st.just("XYZ"))
    name = pick(f"{actor}_DFA_{emo}_XX.wav", JUNK)
    soft = pick(draw(st.permutations(["1", "0", "0", "0", "0.0", "0"])),
                     st.lists(NUMBERS, min_size=6, max_size=6))
    spk = pick(str(actor), JUNK)
    split = pick(["Train", "Train", "Development", "Test"][actor - 1001],
                      st.sampled_from(["Train", "test", "Validate", ""]))
    return [name, *soft, spk, draw(st.sampled_from(["Male", "Female", ""])), split]


@st.composite
def csv_bytes(draw, columns: list[str], rows) -> bytes:
    """A CSV of clean rows, at times with one row that has broken fields, or broken bytes."""
    header = sometimes(draw, columns, st.one_of(st.permutations(columns), st.lists(JUNK, max_size=4)))
    body = draw(st.lists(rows(clean=True), max_size=6, unique_by=lambda r: r[0]))
    if body and draw(st.booleans()):
        body[draw(st.integers(0, len(body) - 1))] = draw(rows())
    lines = [",".join(header)] + [",".join(r) for r in body]
    if body and not draw(st.integers(0, 4)):             # a row with one field too many or too few
        k = draw(st.integers(1, len(lines) - 1))
        lines[k] = lines[k] + ",x" if draw(st.booleans()) else lines[k].rsplit(",", 1)[0]
    data = ("\r\n" if draw(st.booleans()) else "\n").join(lines).encode()
    return sometimes(draw, data, st.one_of(st.just(data[:draw(st.integers(0, len(data)))]),
                                           st.just(data + draw(st.binary(max_size=8))), st.binary(max_size=60)))


@pytest.fixture(scope="module")
def empty_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz-root")


@SETTINGS
@given(data=csv_bytes(CREMA_COLUMNS, crema_rows))
def test_cremad_partition_fuzz(empty_root, data):
    part = empty_root / "label_consensus.csv"
    part.write_bytes(data)
    df = _check_scan("crema-d", empty_root, part)
    if df is not None:
        soft = df[[c for c in df.columns if c.startswith("soft_")]].to_numpy()
        assert soft.shape[1] == 6 and np.isfinite(soft).all() and np.allclose(soft.sum(1), 1, atol=0.021)
        assert df["label"].notna().all()


# ----------------------------------------------------------------------------- MSP-IMPROV labels


MSP_COLUMNS = ["FileName", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set"]


@st.composite
def msp_rows(draw, clean: bool = False) -> list[str]:
    def pick(valid, broken):
        return sometimes(draw, valid, broken, clean)

    n, g = draw(st.integers(1, 3)), pick(draw(st.sampled_from("FM")), st.just("X"))
    target = pick(draw(st.sampled_from("AHSN")), st.just("Q"))
    name = pick(f"MSP-IMPROV-S0{draw(st.integers(1, 9))}{target}-{g}0{n}-R-FM0{n}.wav", JUNK)
    avd = pick(["3", "2.5", "4"], st.lists(NUMBERS, min_size=3, max_size=3))
    spk = pick(str(n), JUNK)
    gender = pick({"F": "Female", "M": "Male"}.get(g, ""), st.sampled_from(["Female", "Male", ""]))
    split = pick(["Train", "Development", "Test"][n - 1], st.sampled_from(["Dev", "", "Train"]))
    return [name, *avd, spk, gender, split]


@SETTINGS
@given(data=csv_bytes(MSP_COLUMNS, msp_rows), target_labels=st.booleans())
def test_mspimprov_labels_fuzz(empty_root, data, target_labels):
    part = empty_root / "labels_consensus.csv"
    part.write_bytes(data)
    df = _check_scan("msp-improv", empty_root, part, target_labels=target_labels)
    if df is not None:
        dims = df[["arousal", "valence", "dominance"]].to_numpy()
        assert np.isfinite(dims).all() and ((dims >= 1) & (dims <= 5)).all()


# ----------------------------------------------------------------------------- IEMOCAP label files


@st.composite
def iemocap_lines(draw, clean: bool = False) -> str:
    def pick(valid, broken):
        return sometimes(draw, valid, broken, clean)

    utt = pick(f"Ses01F_impro01_{draw(st.sampled_from('FM'))}00{draw(st.integers(0, 5))}",
                    st.one_of(st.just("Ses02F_impro01_F009"), JUNK))
    start = draw(st.floats(0, 50, allow_nan=False))
    times = pick(f"{start:.4f} - {start + draw(st.floats(0.1, 5)):.4f}",
                      st.one_of(st.just(f"{start:.4f} - {start:.4f}"), JUNK))
    emo = pick(draw(st.sampled_from(["neu", "hap", "exc", "sad", "ang", "fru", "xxx", "oth"])),
                    st.sampled_from(["foo", "", "Neu"]))
    vad = pick(draw(st.sampled_from(["2.5, 3.0, 3.5", "1, 5, 1", "4.5000, 2.0000, 3.0000"])),
                    st.lists(NUMBERS, min_size=2, max_size=4).map(", ".join))
    utterance = f"[{times}]\t{utt}\t{emo}\t[{vad}]"
    return pick(utterance, st.one_of(st.just("C-E2:\tNeutral;\t()"), st.just(""),
                                                st.just("% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]"),
                                                JUNK, st.just(" " + utterance + " ")))


@st.composite
def label_file(draw) -> bytes:
    lines = draw(st.lists(iemocap_lines(clean=True), max_size=6))
    if lines and draw(st.booleans()):
        lines[draw(st.integers(0, len(lines) - 1))] = draw(iemocap_lines())
    data = "\n".join(lines).encode()
    return sometimes(draw, data, st.one_of(st.just(data + draw(st.binary(max_size=6))), st.binary(max_size=40)))


@SETTINGS
@given(files=st.lists(label_file(), min_size=1, max_size=2), task=st.sampled_from(["categorical", "dimensional"]),
       test_session=st.integers(1, 3))
def test_iemocap_label_files_fuzz(tmp_path_factory, files, task, test_session):
    root = tmp_path_factory.mktemp("iemo")
    for n in (1, 2):
        (root / f"Session{n}" / "dialog" / "EmoEvaluation").mkdir(parents=True)
    for k, data in enumerate(files):
        (root / "Session1" / "dialog" / "EmoEvaluation" / f"Ses01F_impro0{k}.txt").write_bytes(data)
    (root / "Session2" / "dialog" / "EmoEvaluation" / "Ses02F_impro01.txt").write_text(
        "[1.0 - 2.0]\tSes02F_impro01_F000\tneu\t[2.5, 3.0, 3.5]\n")
    df = _check_scan("iemocap", root, task=task, test_session=test_session)
    if df is not None:
        dims = df[["arousal", "valence", "dominance"]].to_numpy()
        assert np.isfinite(dims).all() and ((dims >= 1) & (dims <= 5)).all()
        assert (df["video_end"] > df["video_start"]).all()
        if task == "categorical":
            assert set(df["label"]) <= {"neutral", "happy", "sad", "angry"}
