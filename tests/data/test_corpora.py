"""Corpus adapters on tiny generated raw corpora: manifests, labels, splits, errors naming rows."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rawgen

from study.data.corpora import CORPORA, CorpusError, CorpusOption, corpus_targets, scan_corpus
from study.data.corpora.common import index_media, speaker_split


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


@pytest.fixture(scope="module")
def crema(tmp_path_factory) -> tuple[Path, list[str]]:
    """CREMA-D layout with empty placeholder media (scan only checks that files exist)."""
    root = tmp_path_factory.mktemp("crema")
    utts = [f"{1001 + s}_{sent}_{code}_XX" for s in range(6)
            for sent, code in (("DFA", "ANG"), ("IEO", "SAD"), ("TIE", "HAP"))]
    for u in utts:
        touch(root / "AudioWAV" / f"{u}.wav")
        if u != utts[0]:
            touch(root / "VideoFlash" / f"{u}.flv")
    return root, utts


SPLITS = {"1001": "Train", "1002": "Train", "1003": "Train", "1004": "Train",
          "1005": "Development", "1006": "Test"}


# ----------------------------------------------------------------------------- CREMA-D


def test_cremad_without_partition_is_speaker_independent_and_seeded(crema):
    root, utts = crema
    df = scan_corpus("crema-d", root)
    assert sorted(df["utt_id"]) == sorted(utts)
    assert set(df["split"]) == {"train", "dev", "test"}
    assert (df.groupby("speaker")["split"].nunique() == 1).all()
    assert df.set_index("utt_id").loc["1001_DFA_ANG_XX", "label"] == "angry"
    assert list(scan_corpus("crema-d", root, seed=0)["split"]) == list(df["split"])
    splits = {tuple(scan_corpus("crema-d", root, seed=s)["split"]) for s in range(6)}
    assert len(splits) > 1                               # the seed changes the speaker split
    first = df.set_index("utt_id").loc[utts[0]]
    assert first["has_audio"] and not first["has_video"] and pd.isna(first["video_path"])


def test_cremad_partition_soft_labels_and_splits(crema, tmp_path):
    root, utts = crema
    part = rawgen.write_cremad_partition(tmp_path / "label_consensus_1.csv", utts, SPLITS)
    df = scan_corpus("crema-d", root, part).set_index("utt_id")
    soft = df[[f"soft_{c}" for c in rawgen.CREMA_CLASSES]].to_numpy()
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-6)
    expected = [rawgen.CREMA_CLASSES[i] for i in soft.argmax(axis=1)]
    assert list(df["label"]) == expected
    assert df.loc["1005_DFA_ANG_XX", "split"] == "dev" and df.loc["1006_TIE_HAP_XX", "split"] == "test"
    assert set(df["gender"]) == {"Female", "Male"}
    assert corpus_targets("crema-d", df.reset_index()) == (list(rawgen.CREMA_CLASSES), [])


def test_cremad_tie_goes_to_file_name_emotion(crema, tmp_path):
    root, _ = crema
    part = tmp_path / "p.csv"
    part.write_text("FileName,angry,sad,disgust,fear,neutral,happy,SpkrID,Gender,Split_Set\n"
                    "1002_IEO_SAD_XX.wav,0.45,0.45,0.025,0.025,0.025,0.025,1002,Male,Train\n"
                    "1003_IEO_SAD_XX.wav,0.5,0.0,0.0,0.0,0.0,0.5,1003,Male,Test\n")
    df = scan_corpus("crema-d", root, part)
    assert list(df["label"]) == ["sad", "angry"]          # tie with the file emotion / without


@pytest.mark.parametrize("row, needle", [
    ("1002_IEO_SAD_XX.wav,0.5,0.5,0,0,0,0,1002,Male,Validate", "line 3"),
    ("1002_IEO_SAD_XX.wav,0.5,abc,0,0,0,0,1002,Male,Train", "'sad'"),
    ("1002_IEO_SAD_XX.wav,0.5,0.1,0,0,0,0,1002,Male,Train", "sum to 0.600"),
    ("1002_IEO_SAD_XX.wav,0.5,0.5,0,0,0,0,1009,Male,Train", "SpkrID '1009'"),
    ("1002_IEO_XYZ_XX.wav,0.5,0.5,0,0,0,0,1002,Male,Train", "1002_IEO_XYZ_XX"),
    ("1001_DFA_ANG_XX.wav,1,0,0,0,0,0,1001,Male,Train", "appears twice"),
    ("1001_IEO_SAD_XX.wav,0,1,0,0,0,0,1001,Male,Test", "speaker '1001'"),
])
def test_cremad_partition_errors_name_the_row(crema, tmp_path, row, needle):
    root, _ = crema
    part = tmp_path / "bad.csv"
    part.write_text("FileName,angry,sad,disgust,fear,neutral,happy,SpkrID,Gender,Split_Set\n"
                    "1001_DFA_ANG_XX.wav,1,0,0,0,0,0,1001,Male,Train\n" + row + "\n")
    with pytest.raises(CorpusError, match="bad.csv") as err:
        scan_corpus("crema-d", root, part)
    assert needle in str(err.value)


def test_cremad_rejects_foreign_file_and_missing_header(tmp_path):
    touch(tmp_path / "AudioWAV" / "hello.wav")
    with pytest.raises(CorpusError, match="hello"):
        scan_corpus("crema-d", tmp_path)
    part = tmp_path / "p.csv"
    part.write_text("FileName,angry\nx.wav,1\n")
    with pytest.raises(CorpusError, match="missing column"):
        scan_corpus("crema-d", tmp_path, part)


# ----------------------------------------------------------------------------- MSP-IMPROV


@pytest.fixture(scope="module")
def msp(tmp_path_factory):
    root = tmp_path_factory.mktemp("msp")
    lines = ["FileName,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set"]
    for n, split in ((1, "Train"), (2, "Development"), (3, "Test")):
        for g in "FM":
            utt = f"MSP-IMPROV-S01A-{g}{n:02d}-R-FM{n:02d}"
            touch(root / "Audio" / f"session{n}" / "S01A" / "R" / f"{utt}.wav")
            touch(root / "Video" / f"session{n}" / "S01A" / "R" / f"{utt}.avi")
            lines.append(f"{utt}.wav,{n + 1},2.5,4,{n},{'Female' if g == 'F' else 'Male'},{split}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def test_mspimprov_dimensional_manifest(msp):
    df = scan_corpus("msp-improv", msp, msp / "labels.csv").set_index("utt_id")
    row = df.loc["MSP-IMPROV-S01A-M02-R-FM02"]
    assert (row["speaker"], row["session"], row["split"], row["gender"]) == ("M02", 2, "dev", "Male")
    assert (row["arousal"], row["valence"], row["dominance"]) == (3.0, 2.5, 4.0)   # raw 1-5 scale
    assert row["audio_path"].endswith("session2/S01A/R/MSP-IMPROV-S01A-M02-R-FM02.wav")
    assert df["has_audio"].all() and df["has_video"].all() and df["label"].isna().all()
    assert corpus_targets("msp-improv", df.reset_index()) == ([], ["arousal", "valence", "dominance"])
    targets = scan_corpus("msp-improv", msp, msp / "labels.csv", target_labels=True)
    assert set(targets["label"]) == {"angry"}


def test_mspimprov_generated_layout(tmp_path):
    info = rawgen.make_mspimprov(tmp_path, sessions=2, seconds=0.2, fps=5)
    df = scan_corpus("msp-improv", tmp_path, info["partition"])
    assert sorted(df["utt_id"]) == sorted(info["utts"]) and df["has_video"].all()


@pytest.mark.parametrize("row, needle", [
    ("MSP-IMPROV-S01A-F04-R-FM04.wav,7,2,2,4,Female,Train", "'EmoAct'"),
    ("MSP-IMPROV-S01A-F04-R-FM04.wav,3,2,2,4,Male,Train", "Gender 'Male'"),
    ("MSP-IMPROV-S01A-F04-R-FM04.wav,3,2,2,3,Female,Train", "SpkrID '3'"),
    ("MSP-IMPROV-S01A-X04-R-FM04.wav,3,2,2,4,Female,Train", "not an MSP-IMPROV name"),
])
def test_mspimprov_errors_name_the_row(msp, tmp_path, row, needle):
    part = tmp_path / "bad.csv"
    part.write_text((msp / "labels.csv").read_text() + row + "\n")
    with pytest.raises(CorpusError, match="line 8") as err:
        scan_corpus("msp-improv", msp, part)
    assert needle in str(err.value)


def test_mspimprov_needs_labels(msp):
    with pytest.raises(CorpusError, match="labels file"):
        scan_corpus("msp-improv", msp)


# ----------------------------------------------------------------------------- IEMOCAP


EVAL = """% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]

[6.2901 - 8.2357]\tSes0{n}F_impro01_F000\tneu\t[2.5000, 3.0000, 3.5000]
C-E2:\tNeutral;\t()

[10.0 - 12.5]\tSes0{n}F_impro01_M000\texc\t[4.0000, 4.5000, 3.0000]

[13.0 - 14.0]\tSes0{n}F_impro01_F001\tfru\t[2.0000, 3.5000, 3.5000]

[15.0 - 16.5]\tSes0{n}F_script01_1b_M001\tang\t[1.5000, 4.5000, 4.0000]
"""


@pytest.fixture(scope="module")
def iemocap(tmp_path_factory):
    root = tmp_path_factory.mktemp("iemocap")
    for n in (1, 2, 3):
        ev = root / f"Session{n}" / "dialog" / "EmoEvaluation"
        ev.mkdir(parents=True)
        (ev / f"Ses0{n}F_impro01.txt").write_text(EVAL.format(n=n))
        (ev / "Categorical").mkdir()                       # sub-folders are not label files
        touch(root / f"Session{n}" / "sentences" / "wav" / f"Ses0{n}F_impro01" / f"Ses0{n}F_impro01_F000.wav")
        touch(root / f"Session{n}" / "dialog" / "avi" / "DivX" / f"Ses0{n}F_impro01.avi")
    return root


def test_iemocap_labels_folds_and_split(iemocap):
    df = scan_corpus("iemocap", iemocap, test_session=3).set_index("utt_id")
    assert len(df) == 9                                       # fru dropped, exc -> happy kept
    row = df.loc["Ses01F_impro01_M000"]
    assert (row["label"], row["speaker"], row["fold"]) == ("happy", "Ses01M", 1)
    assert (row["valence"], row["arousal"], row["dominance"]) == (4.0, 4.5, 3.0)   # [V, A, D]
    assert df.loc["Ses02F_script01_1b_M001", "dialog"] == "Ses02F_script01_1b"
    assert set(df.loc[df["fold"] == 3, "split"]) == {"test"}
    assert set(df.loc[df["split"] == "dev", "speaker"]) == {"Ses01F"}   # session 4 absent -> 1
    first = df.loc["Ses01F_impro01_F000"]
    assert first["has_audio"] and first["has_video"] and (first["video_start"], first["video_end"]) == (6.2901, 8.2357)
    assert not df.loc["Ses01F_impro01_M000", "has_audio"]


def test_iemocap_switches(iemocap):
    assert len(scan_corpus("iemocap", iemocap, merge_excited=False, test_session=1)) == 6   # exc dropped too
    dim = scan_corpus("iemocap", iemocap, task="dimensional", test_session=2)
    assert len(dim) == 12 and dim["label"].isna().sum() == 3
    assert set(dim.loc[dim["fold"] == 2, "split"]) == {"test"}
    assert set(dim.loc[dim["split"] == "dev", "speaker"]) == {"Ses03F"}


def test_iemocap_bad_line_names_file_and_line(tmp_path):
    ev = tmp_path / "Session1" / "dialog" / "EmoEvaluation"
    ev.mkdir(parents=True)
    (ev / "Ses01F_impro02.txt").write_text("% header\n\n[1.0 - 2.0]\tSes01F_impro02_F000\tneu\t[2, 3]\n")
    with pytest.raises(CorpusError, match=r"Ses01F_impro02.txt: line 3.*three numbers"):
        scan_corpus("iemocap", tmp_path, test_session=1)
    with pytest.raises(CorpusError, match="root folder not found"):
        scan_corpus("iemocap", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="no Session"):
        scan_corpus("iemocap", tmp_path / "empty")


# ----------------------------------------------------------------------------- helpers


def test_speaker_split_fractions_and_duplicates(tmp_path):
    split = speaker_split([str(i) for i in range(20)], seed=3)
    counts = {s: list(split.values()).count(s) for s in ("train", "dev", "test")}
    assert counts == {"train": 14, "dev": 3, "test": 3}
    assert speaker_split(list("abc"), seed=1) == speaker_split(list("cba"), seed=1)
    touch(tmp_path / "a" / "x.wav")
    touch(tmp_path / "b" / "x.wav")
    with pytest.raises(CorpusError, match="second file"):
        index_media(tmp_path, [".wav"])
    with pytest.raises(CorpusError, match="unknown corpus"):
        scan_corpus("ravdess", tmp_path)



# ----------------------------------------------------------------------------- CSV errors


HEADER = "FileName,angry,sad,disgust,fear,neutral,happy,SpkrID,Gender,Split_Set\n"
GOOD = "1001_DFA_ANG_XX.wav,1,0,0,0,0,0,1001,Male,Train\n"


@pytest.mark.parametrize("content, needle", [
    (b"", "empty file"),
    (b"\n  \n", "empty file"),
    (HEADER.encode(), "header only, no data rows"),
    ((HEADER + GOOD + "1002_IEO_SAD_XX.wav,0,1,0,0,0,0,1002,Male,Train,extra\n").encode(),
     "line 3: 11 fields, the header has 10"),
    ((HEADER + GOOD + "1002_IEO_SAD_XX.wav,0,1,0,0,0,0,1002,Male\n").encode(), "line 3: 9 fields"),
    ((HEADER + GOOD).encode() + "1002_IEO_SAD_XX.wav,0,1,0,0,0,0,1002,Mâle,Train\n".encode("latin-1"),
     "line 3: byte 0xe2 is not UTF-8"),
    ((HEADER + GOOD + '"1002_IEO_SAD_XX.wav,0,1,0,0,0,0,1002,Male,Train\n').encode(), "cannot parse CSV"),
    ((HEADER + GOOD + "\n\n1002_IEO_SAD_XX.wav,0,1,x,0,0,0,1002,Male,Train\n").encode(),
     "line 5 (1002_IEO_SAD_XX.wav): column 'disgust'"),
    (("FileName,sad," + HEADER[9:] + GOOD).encode(), "line 1: column(s) ['sad'] appear twice"),
])
def test_partition_csv_errors_name_file_and_line(crema, tmp_path, content, needle):
    root, _ = crema
    part = tmp_path / "bad.csv"
    part.write_bytes(content)
    with pytest.raises(CorpusError) as err:
        scan_corpus("crema-d", root, part)
    assert str(err.value).startswith(f"{part}: ") and needle in str(err.value)


def test_partition_csv_with_bom_crlf_and_blank_lines_reads(crema, tmp_path):
    root, _ = crema
    part = tmp_path / "ok.csv"
    text = HEADER + GOOD + "\n" + "1002_IEO_SAD_XX.wav,0,1,0,0,0,0,1002,Male,Test\n"
    part.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    df = scan_corpus("crema-d", root, part)
    assert list(df["utt_id"]) == ["1001_DFA_ANG_XX", "1002_IEO_SAD_XX"] and list(df["split"]) == ["train", "test"]


def test_mspimprov_csv_errors_name_file_and_line(msp, tmp_path):
    part = tmp_path / "bad.csv"
    lines = (msp / "labels.csv").read_text().splitlines()
    part.write_text("\n".join(lines[:3] + [lines[3] + ",9"] + lines[4:]) + "\n")
    with pytest.raises(CorpusError, match=r"bad.csv: line 4: 8 fields, the header has 7"):
        scan_corpus("msp-improv", msp, part)
    part.write_text(lines[0] + "\n")
    with pytest.raises(CorpusError, match=r"bad.csv: header only"):
        scan_corpus("msp-improv", msp, part)


# ----------------------------------------------------------------------------- IEMOCAP strictness


def _iemocap_with(tmp_path: Path, body: str | bytes) -> Path:
    """Session1 (the given label file) + Session2 (one valid utterance) under tmp_path/raw."""
    root = tmp_path / "raw"
    for n, text in ((1, body), (2, "[1.0 - 2.0]\tSes02F_impro01_F000\tneu\t[2.5, 3.0, 3.5]\n")):
        ev = root / f"Session{n}" / "dialog" / "EmoEvaluation"
        ev.mkdir(parents=True, exist_ok=True)
        path = ev / f"Ses0{n}F_impro01.txt"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return root


@pytest.mark.parametrize("line, needle", [
    ("Ses01F_impro01_F001\tneu\t[2.5, 3.0, 3.5]", "line 3: unexpected line"),
    ("1.0 - 2.0]\tSes01F_impro01_F001\tneu\t[2.5, 3.0, 3.5]", "line 3: unexpected line"),
    ("[3.0 - 4.0]\tSes01F_impro01_F001\tneu\t[5.5, 3.0, 3.5]", "line 3: valence 5.5 is not a number in [1.0, 5.0]"),
    ("[3.0 - 4.0]\tSes01F_impro01_F001\tneu\t[2.5, 0.0, 3.5]", "line 3: activation 0.0 is not a number"),
    ("[3.0 - 4.0]\tSes01F_impro01_F001\tneu\t[2.5, 3.0, nan]", "line 3: dominance nan is not a number"),
    ("[3.0 - 4.0]\tSes01F_impro01_F001\tneu\t[2.5, inf, 3]", "line 3: activation inf"),
    ("[3.0 - 4.0]\tSes01F_impro01_F001\thappy\t[2.5, 3.0, 3.5]", "line 3: unknown emotion code 'happy'"),
    ("[3.0 - 4.0]\tSes01F_impro01_F001\tNeu\t[2.5, 3.0, 3.5]", "unknown emotion code 'Neu'"),
    ("[4.0 - 3.0]\tSes01F_impro01_F001\tneu\t[2.5, 3.0, 3.5]", "line 3: segment [4.0 - 3.0] is empty"),
    ("[3.0 - 4.0]\tSes01F/../x_F001\tneu\t[2.5, 3.0, 3.5]", "line 3: cannot parse"),
])
def test_iemocap_reports_bad_lines(tmp_path, line, needle):
    body = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n" + line + "\n"
    with pytest.raises(CorpusError, match="Ses01F_impro01.txt") as err:
        scan_corpus("iemocap", _iemocap_with(tmp_path, body), test_session=2)
    assert needle in str(err.value)


def test_iemocap_reads_every_utterance_line_and_known_codes(tmp_path):
    body = ("% header\n\n  [1.0 - 2.0]\tSes01F_impro01_F000\tneu\t[2.5, 3.0, 3.5]\r\n"     # indented, CRLF
            "C-E2:\tNeutral;\t()\nA-E3:\tval 3; act 2; dom  2;\t()\nC-F1:\tNeutral;\t(curious)\n"
            "[2.5 - 3.0]\tSes01F_impro01_M000\tsur\t[4.0, 4.5, 3.0]\n"
            "[3.5 - 4.0]\tSes01F_impro01_M001\txxx\t[1.0, 5.0, 1.0]\n")
    root = _iemocap_with(tmp_path, body)
    dim = scan_corpus("iemocap", root, test_session=2, task="dimensional").set_index("utt_id")
    assert list(dim.index) == ["Ses01F_impro01_F000", "Ses01F_impro01_M000", "Ses01F_impro01_M001",
                               "Ses02F_impro01_F000"]
    assert list(dim["emotion_code"]) == ["neu", "sur", "xxx", "neu"] and dim["label"].isna().sum() == 2
    assert dim.loc["Ses01F_impro01_M001", ["valence", "arousal", "dominance"]].tolist() == [1.0, 5.0, 1.0]
    cat = scan_corpus("iemocap", root, test_session=2)
    assert sorted(cat["utt_id"]) == ["Ses01F_impro01_F000", "Ses02F_impro01_F000"]


def test_iemocap_ignores_unexpected_folders_and_files(tmp_path):
    root = _iemocap_with(tmp_path, "[1.0 - 2.0]\tSes01F_impro01_F000\tang\t[2.5, 3.0, 3.5]\n")
    (root / "Session1_backup" / "dialog").mkdir(parents=True)            # not Session<n>
    (root / "SessionX").mkdir()
    (root / "Session3").write_text("a file, not a folder")
    (root / "Session4").mkdir()                                          # no dialog/ at all
    (root / "Documentation").mkdir()
    ev = root / "Session1" / "dialog" / "EmoEvaluation"
    (ev / "Categorical").mkdir()
    (ev / "odd.txt").mkdir()                                             # a folder named *.txt
    (ev / "._Ses01F_impro01.txt").write_bytes(b"\x00\x05\x16\x07\xff\xfe")   # macOS resource fork
    df = scan_corpus("iemocap", root, test_session=2)
    assert sorted(df["utt_id"]) == ["Ses01F_impro01_F000", "Ses02F_impro01_F000"]
    assert sorted(df["fold"].unique()) == [1, 2]


def test_iemocap_label_file_encoding_names_the_line(tmp_path):
    body = b"% header\n[1.0 - 2.0]\tSes01F_impro01_F000\tneu\t[2.5, 3.0, 3.5]\nC-E2:\tNeutral;\t(caf\xe9)\n"
    with pytest.raises(CorpusError, match=r"Ses01F_impro01.txt: line 3: byte 0xe9 is not UTF-8"):
        scan_corpus("iemocap", _iemocap_with(tmp_path, body), test_session=2)


# ----------------------------------------------------------------------------- the table


def test_every_corpus_module_exposes_the_interface():
    for name, module in CORPORA.items():
        assert module.NAME == name and callable(module.scan) and callable(module.targets)
        assert isinstance(module.PARTITION, str) and module.PARTITION
        assert all(isinstance(o, CorpusOption) and o.flag.startswith("--") for o in module.OPTIONS)


def test_corpus_options_are_checked(crema, iemocap):
    root, _ = crema
    with pytest.raises(CorpusError, match=r"'crema-d' takes no option\(s\) \['test_session'\]"):
        scan_corpus("crema-d", root, test_session=3)
    assert corpus_targets("iemocap", scan_corpus("iemocap", iemocap, test_session=3)) == (
        ["neutral", "happy", "sad", "angry"], ["arousal", "valence", "dominance"])
