"""The dataset format: writing, memory-mapped reading, and every validation error."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from study.data.dataset import DatasetError, FeatureWriter, open_dataset, write_dataset


def _manifest(n=6):
    return pd.DataFrame({
        "utt_id": [f"u{i}" for i in range(n)],
        "speaker": [f"s{i // 2}" for i in range(n)],
        "split": ["train", "train", "dev", "dev", "test", "test"][:n],
        "label": ["a", "b", "a", "b", "a", "b"][:n],
        "has_audio": True, "has_video": True,
    })


def _feats(n, dim, rng, skip=()):
    return [(f"u{i}", rng.normal(size=(3 + i, dim))) for i in range(n) if f"u{i}" not in skip]


def _write(tmp_path, manifest=None, meta=None, audio=None, video=None):
    rng = np.random.default_rng(0)
    manifest = _manifest() if manifest is None else manifest
    meta = meta or {"classes": ["a", "b"], "audio": {"dim": 4}, "video": {"dim": 3}}
    audio = _feats(len(manifest), 4, rng) if audio is None else audio
    video = _feats(len(manifest), 3, rng) if video is None else video
    return write_dataset(tmp_path / "ds", manifest, meta, audio, video)


def test_roundtrip_is_memory_mapped_and_exact(tmp_path):
    rng = np.random.default_rng(1)
    audio = _feats(6, 4, rng)
    ds = open_dataset(_write(tmp_path, audio=audio))
    got = ds.audio("u5")                                   # (8, 4)
    assert got.shape == (8, 4) and got.dtype == np.float16
    np.testing.assert_allclose(got, audio[5][1], atol=2e-3)
    assert not got.flags.owndata                           # a view on the mapped file
    assert json.loads((tmp_path / "ds" / "dataset.json").read_text())["schema_version"] == 1


def test_float32_storage(tmp_path):
    meta = {"classes": ["a", "b"], "audio": {"dim": 4, "dtype": "float32"}, "video": {"dim": 3}}
    ds = open_dataset(_write(tmp_path, meta=meta))
    assert ds.audio("u0").dtype == np.float32


def test_wrong_feature_dim_is_named(tmp_path):
    root = _write(tmp_path)
    meta = json.loads((root / "dataset.json").read_text())
    meta["audio"]["dim"] = 5
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=r"audio\.arrow: frame width is 4, dataset.json says 5"):
        open_dataset(root)


def test_writer_rejects_wrong_shape(tmp_path):
    with FeatureWriter(tmp_path / "a.arrow", 4) as w:
        with pytest.raises(DatasetError, match="'u1' has features of shape \\(3, 5\\)"):
            w.write("u1", np.zeros((3, 5)))


def test_nan_frame_is_named(tmp_path):
    rng = np.random.default_rng(0)
    video = _feats(6, 3, rng)
    video[2][1][1, 0] = np.nan
    with pytest.raises(DatasetError, match="video.arrow: utterance 'u2' frame 1 holds NaN"):
        open_dataset(_write(tmp_path, video=video))


def test_inf_frame_is_named(tmp_path):
    rng = np.random.default_rng(0)
    audio = _feats(6, 4, rng)
    audio[4][1][3, 2] = np.inf
    with pytest.raises(DatasetError, match="utterance 'u4' frame 3 holds NaN or Inf"):
        open_dataset(_write(tmp_path, audio=audio))


def test_unknown_label_is_named(tmp_path):
    m = _manifest()
    m.loc[3, "label"] = "surprise"
    with pytest.raises(DatasetError, match="row 3 \\(utt_id 'u3'\\) has label 'surprise'"):
        open_dataset(_write(tmp_path, manifest=m))


def test_utterance_without_features_is_named(tmp_path):
    rng = np.random.default_rng(0)
    with pytest.raises(DatasetError, match="with has_audio=True have no features, e.g. 'u1'"):
        open_dataset(_write(tmp_path, audio=_feats(6, 4, rng, skip={"u1"})))


def test_natively_missing_stream_is_allowed(tmp_path):
    rng = np.random.default_rng(0)
    m = _manifest()
    m.loc[1, "has_audio"] = False
    ds = open_dataset(_write(tmp_path, manifest=m, audio=_feats(6, 4, rng, skip={"u1"})))
    assert not ds.manifest.loc[1, "has_audio"]


def test_speaker_in_two_splits_is_named(tmp_path):
    m = _manifest()
    m.loc[2, "speaker"] = "s0"                             # s0 is in train
    with pytest.raises(DatasetError, match="speaker 's0' appears in several splits \\['dev', 'train'\\]"):
        open_dataset(_write(tmp_path, manifest=m))


def test_duplicate_utterance_and_bad_split(tmp_path):
    m = _manifest()
    m.loc[5, "split"] = "validation"
    with pytest.raises(DatasetError, match="row 5 \\(utt_id 'u5'\\) has split 'validation'"):
        open_dataset(_write(tmp_path, manifest=m))


def test_missing_file_is_named(tmp_path):
    root = _write(tmp_path)
    (root / "video.arrow").unlink()
    with pytest.raises(DatasetError, match="video.arrow: missing"):
        open_dataset(root)


def test_non_finite_dimension_value_is_named(tmp_path):
    m = _manifest()
    m["arousal"] = [1.0, 2.0, np.nan, 3.0, 4.0, 5.0]
    m["valence"] = m["dominance"] = 3.0
    meta = {"classes": ["a", "b"], "dimensions": ["arousal", "valence", "dominance"],
            "audio": {"dim": 4}, "video": {"dim": 3}}
    with pytest.raises(DatasetError, match="row 2 \\(utt_id 'u2'\\) column 'arousal'"):
        open_dataset(_write(tmp_path, manifest=m, meta=meta))


@pytest.mark.parametrize("soft,match", [
    ([0.0, 0.0], r"row 3 \(utt_id 'u3'\) has soft labels that do not sum to 1 \(soft_a=0, soft_b=0\)"),
    ([1.5, -0.5], r"row 3 \(utt_id 'u3'\) has a negative soft label"),
    ([0.7, 0.7], r"row 3 \(utt_id 'u3'\) has soft labels that do not sum to 1"),
])
def test_bad_soft_label_rows_are_named(tmp_path, soft, match):
    m = _manifest()
    m["soft_a"], m["soft_b"] = 0.5, 0.5
    m.loc[3, ["soft_a", "soft_b"]] = soft
    with pytest.raises(DatasetError, match=r"manifest.parquet: " + match):
        open_dataset(_write(tmp_path, manifest=m))


def test_soft_labels_summing_to_one_are_fine(tmp_path):
    m = _manifest()
    m["soft_a"], m["soft_b"] = 0.25, 0.75
    assert open_dataset(_write(tmp_path, manifest=m)).soft_columns() == ["soft_a", "soft_b"]


def test_has_audio_as_the_string_false_is_an_error(tmp_path):
    m = _manifest()
    m["has_audio"] = ["True", "True", "True", "False", "True", "True"]
    with pytest.raises(DatasetError, match=r"row 0 \(utt_id 'u0'\) column 'has_audio' is 'True', "
                                           r"expected a boolean"):
        open_dataset(_write(tmp_path, manifest=m))
    m["has_audio"] = [1, 1, 1, 0, 1, 1]  # 0/1 integers are flags
    ds = open_dataset(_write(tmp_path, manifest=m, audio=_feats(6, 4, np.random.default_rng(0),
                                                                 skip={"u3"})))
    assert ds.manifest["has_audio"].tolist() == [True, True, True, False, True, True]


@pytest.mark.parametrize("text,match", [
    ("[1, 2]", r"dataset.json: expected a JSON object, got list"),
    ("null", r"dataset.json: expected a JSON object, got NoneType"),
    ('"x"', r"dataset.json: expected a JSON object, got str"),
    ("{nope", r"dataset.json: not valid JSON"),
])
def test_malformed_dataset_json_is_named(tmp_path, text, match):
    root = _write(tmp_path)
    (root / "dataset.json").write_text(text)
    with pytest.raises(DatasetError, match=match):
        open_dataset(root)


@pytest.mark.parametrize("field,value,match", [
    ("classes", "ab", r"field 'classes' must be a list of distinct names, got 'ab'"),
    ("classes", ["a", "a"], r"field 'classes' must be a list of distinct names"),
    ("classes", [1, 2], r"field 'classes' must be a list of distinct names"),
    ("dimensions", {"arousal": 1}, r"field 'dimensions' must be a list"),
    ("audio", {"dim": True}, r"field audio.dim must be a positive integer"),
    ("video", {"dim": 0}, r"field video.dim must be a positive integer"),
])
def test_malformed_dataset_json_fields_are_named(tmp_path, field, value, match):
    root = _write(tmp_path)
    meta = json.loads((root / "dataset.json").read_text())
    meta[field] = value
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=r"dataset.json: " + match):
        open_dataset(root)


def test_dataset_json_as_a_directory_is_named(tmp_path):
    root = _write(tmp_path)
    (root / "dataset.json").unlink()
    (root / "dataset.json").mkdir()
    with pytest.raises(DatasetError, match=r"dataset.json: not a file"):
        open_dataset(root)


def _raw_feature_file(path, ids, offsets, frames, dim, seq_mask=None):
    """An Arrow file written below FeatureWriter, so it can hold what the writer refuses."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    flat = pa.array(np.asarray(frames, dtype=np.float16).reshape(-1), type=pa.float16())
    inner = pa.FixedSizeListArray.from_arrays(flat, dim)
    seqs = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), inner,
                                    mask=None if seq_mask is None else pa.array(seq_mask))
    schema = pa.schema([("utt_id", pa.string()), ("features", pa.list_(pa.list_(pa.float16(), dim)))])
    batch = pa.record_batch([pa.array(ids, pa.string()), seqs], schema=schema)
    with pa.OSFile(str(path), "wb") as sink, ipc.new_file(sink, schema) as w:
        w.write_batch(batch)


def test_zero_length_and_null_sequences_are_named(tmp_path):
    root = _write(tmp_path)
    ids = [f"u{i}" for i in range(6)]
    frames = np.ones((10, 4))
    _raw_feature_file(root / "audio.arrow", ids, [0, 2, 2, 4, 6, 8, 10], frames, 4)
    with pytest.raises(DatasetError, match=r"audio.arrow: row 1 \(utterance 'u1'\) has a zero-length sequence"):
        open_dataset(root)
    _raw_feature_file(root / "audio.arrow", ids, [0, 2, 4, 4, 6, 8, 10], frames, 4,
                      seq_mask=[False, False, True, False, False, False])
    with pytest.raises(DatasetError, match=r"audio.arrow: row 2 \(utterance 'u2'\) has a null sequence"):
        open_dataset(root)


def test_damaged_offsets_are_caught_by_the_full_validation(tmp_path):
    root = _write(tmp_path)
    path = root / "video.arrow"
    ds = open_dataset(root)
    assert ds.video("u0").shape == (3, 3)
    data = bytearray(path.read_bytes())
    # the list offsets of the first batch are int32 [0, 3, 7, 12, ...]: make one run backwards
    needle = np.array([0, 3, 7, 12], dtype=np.int32).tobytes()
    at = data.find(needle)
    assert at > 0
    data[at + 8:at + 12] = np.array([1, ], dtype=np.int32).tobytes()  # 7 -> 1
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"video.arrow: "):
        open_dataset(root)
