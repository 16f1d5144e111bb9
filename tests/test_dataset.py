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
