"""Feature normalisation with training-split statistics (study/data/normalize.py, the loader).

The corpus here is hand-made with real extractors' scales: log-mel-like audio in dB around -60
with std 5, pixel-like video in [0, 1] with per-dimension std down to 0.003, and one constant
video dimension. The class evidence is a shift of one standard deviation on a few dimensions.
"""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pandas as pd
import pytest
import torch

from study.data import normalize as N
from study.data.dataset import open_dataset, write_dataset
from study.training.config import config_from_flat
from study.training.fit import fit
from study.training.session import Session

CLASSES = ["a", "b", "c"]
A_DIM, V_DIM = 8, 12
V_STD = np.array([0.003, 0.004, 0.005, 0.006, 0.01, 0.02, 0.003, 0.05, 0.08, 0.1, 0.004, 0.0])


def _scaled_corpus(root, n_per_split=(150, 60, 60), seed=0):
    """Three classes; audio ~ N(-60, 5) dB, video ~ N(0.5, V_STD) with a one-std class shift."""
    rng = np.random.default_rng(seed)
    rows, audio, video = [], [], []
    for split, n in zip(("train", "dev", "test"), n_per_split):
        for i in range(n):
            k = i % 3
            utt = f"{split}{i:04d}"
            rows.append({"utt_id": utt, "speaker": f"{split}-s{i % 5}", "split": split,
                         "label": CLASSES[k], "has_audio": True, "has_video": True})
            t = int(rng.integers(15, 30))
            a = -60.0 + 5.0 * rng.standard_normal((t, A_DIM))
            a[:, k] += 5.0 * 0.6                                    # weak audio evidence
            v = 0.5 + V_STD * rng.standard_normal((t, V_DIM))
            v[:, [k, k + 3]] += 1.5 * V_STD[[k, k + 3]]             # clear, tiny-scale video
            audio.append((utt, a.astype(np.float32)))
            video.append((utt, np.clip(v, 0, 1).astype(np.float32)))
    meta = {"classes": CLASSES, "audio": {"dim": A_DIM, "rate_hz": 50.0, "dtype": "float32"},
            "video": {"dim": V_DIM, "rate_hz": 30.0, "dtype": "float32"}}
    return write_dataset(root, pd.DataFrame(rows), meta, audio, video)


@pytest.fixture(scope="module")
def scaled(tmp_path_factory):
    torch.set_num_threads(1)
    return _scaled_corpus(tmp_path_factory.mktemp("scaled") / "ds")


def _frames(ds, modality, split="train"):
    frame = ds.split(split)
    return np.concatenate([ds.features[modality].get(u) for u in frame["utt_id"]]).astype(np.float64)


def test_statistics_are_the_training_frames_moments_and_stored_beside_the_dataset(scaled):
    ds = open_dataset(scaled)
    stats = N.load_stats(ds)
    assert stats.path.parent == scaled / "stats" and stats.path.name.startswith("train_")
    for m in ("audio", "video"):
        x = _frames(ds, m)
        np.testing.assert_allclose(stats[m].mean, x.mean(0), rtol=0, atol=1e-9)
        np.testing.assert_allclose(stats[m].std, x.std(0), rtol=1e-9, atol=1e-12)
        assert stats[m].frames == len(x) and stats[m].utterances == 150
    # the constant video dimension is only centred; the 0.003-std ones are scaled
    assert stats["video"].std[-1] == 0.0 and stats["video"].scale[-1] == 1.0
    assert stats["video"].scale[0] == pytest.approx(stats["video"].std[0])
    # z-scored training frames: mean 0, std 1 per dimension (centred only where constant)
    z = np.concatenate([stats["video"].apply(ds.video(u)) for u in ds.split("train")["utt_id"]])
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-3)
    np.testing.assert_allclose(z.std(0)[:-1], 1, atol=2e-3)
    assert np.abs(z).max() < 10 and z[:, -1].std() == 0
    # read back, not recomputed; the file is plain JSON with float64 values
    again = N.load_stats(ds)
    np.testing.assert_array_equal(again["audio"].mean, stats["audio"].mean)
    assert json.loads(stats.path.read_text())["split"] == "train"


def test_only_native_training_streams_count(tmp_path):
    root = _scaled_corpus(tmp_path / "ds", n_per_split=(30, 9, 9))
    manifest = pd.read_parquet(root / "manifest.parquet")
    manifest.loc[manifest.utt_id == "train0000", "has_video"] = False
    manifest.to_parquet(root / "manifest.parquet", index=False)
    ds = open_dataset(root)
    stats = N.load_stats(ds)
    kept = [u for u in ds.split("train")["utt_id"] if u != "train0000"]
    x = np.concatenate([ds.video(u) for u in kept]).astype(np.float64)
    np.testing.assert_allclose(stats["video"].mean, x.mean(0), atol=1e-9)
    assert stats["video"].utterances == 29 and stats["audio"].utterances == 30


def test_key_changes_with_the_split_definition(tmp_path):
    root = _scaled_corpus(tmp_path / "ds", n_per_split=(30, 9, 9))
    key = N.split_key(open_dataset(root))
    manifest = pd.read_parquet(root / "manifest.parquet")
    manifest.loc[manifest.utt_id == "train0001", "has_audio"] = False
    manifest.to_parquet(root / "manifest.parquet", index=False)
    assert N.split_key(open_dataset(root)) != key


def test_read_only_dataset_falls_back_to_the_node_cache(tmp_path, monkeypatch):
    root = _scaled_corpus(tmp_path / "ds", n_per_split=(30, 9, 9))
    monkeypatch.setenv("AVSTUDY_CACHE", str(tmp_path / "cache"))
    os.chmod(root, 0o555)
    try:
        if os.access(root, os.W_OK):
            pytest.skip("running as root: a read-only directory is still writable")
        stats = N.load_stats(open_dataset(root))
    finally:
        os.chmod(root, 0o755)
    assert (tmp_path / "cache" / "stats") in stats.path.parents and not (root / "stats").exists()


def test_concurrent_trials_compute_the_statistics_once(tmp_path, monkeypatch):
    root = _scaled_corpus(tmp_path / "ds", n_per_split=(30, 9, 9))
    calls = []
    real = N.compute_stats
    monkeypatch.setattr(N, "compute_stats", lambda *a: calls.append(1) or real(*a))
    ds = open_dataset(root)
    out = []
    threads = [threading.Thread(target=lambda: out.append(N.load_stats(ds))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(out) == 4
    assert len({o.path for o in out}) == 1 and not list((root / "stats").glob("*.tmp*"))


def test_loader_feeds_z_scores_and_the_switch_turns_it_off(scaled):
    on = Session(config_from_flat({"preset": "tiny"}, data_dir=scaled), scaled)
    off = Session(config_from_flat({"preset": "tiny", "normalize": False}, data_dir=scaled), scaled)
    stats = on.splits["train"].norm
    assert off.splits["dev"].norm is None
    assert on.splits["dev"].norm is stats and on.splits["test"].norm is stats  # train statistics
    for split in ("train", "test"):
        data_on, data_off = on.splits[split], off.splits[split]
        idx = np.arange(4)
        b_on = data_on.batch(idx, data_on.has_audio, data_on.has_video)
        b_off = data_off.batch(idx, data_off.has_audio, data_off.has_video)
        utt = data_on.frame["utt_id"].iloc[0]
        raw_a, raw_v = (np.asarray(x, np.float64) for x in (on.ds.audio(utt), on.ds.video(utt)))
        expect_a = (raw_a - stats["audio"].mean) / stats["audio"].std
        expect_v = (raw_v - stats["video"].mean) / stats["video"].scale
        np.testing.assert_allclose(b_on.audio[0, :len(raw_a)].numpy(), expect_a, atol=1e-4)
        np.testing.assert_allclose(b_on.video[0, :len(raw_v)].numpy(), expect_v, rtol=1e-4, atol=2e-3)
        np.testing.assert_allclose(b_off.audio[0, :len(raw_a)].numpy(), raw_a, atol=1e-4)  # dB as is
    assert on.cfg.to_flat()["normalize"] is True and off.cfg.to_flat()["normalize"] is False


def test_tiny_model_learns_scaled_features_only_when_normalised(scaled):
    """Video evidence lives in per-dimension std 0.003..0.1: without z-scoring the video branch
    collapses to one class (measured: on 3 corpora x 2 seeds, video-only test macro-F1 1.0 with
    normalisation, 0.167 = one class without); with it it is far above chance (1/3)."""
    scores = {}
    for norm in (True, False):
        cfg = config_from_flat({"preset": "tiny", "lr": 3e-3, "batch_size": 16, "max_epochs": 8,
                                "patience": 8, "normalize": norm, "seed": 0}, data_dir=scaled)
        record = fit(cfg, scaled, log=lambda s: None)
        scores[norm] = {r["condition"]: r for r in record["test"]}
    assert scores[True]["video_only"]["macro_f1"] > 0.8
    assert scores[True]["av"]["macro_f1"] > 0.8
    assert scores[True]["video_only"]["flag"] is None
    assert scores[False]["video_only"]["macro_f1"] < 0.5
    assert scores[False]["video_only"]["flag"] in ("one_class", "chance")  # flagged, not hidden
    assert scores[True]["video_only"]["macro_f1"] - scores[False]["video_only"]["macro_f1"] > 0.3
