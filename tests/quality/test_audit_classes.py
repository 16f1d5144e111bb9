"""Tests for the classes of planted bugs a suite missed (issue 26), each with expectations worked
out by hand: normalisation statistics from the training split only, augmentation measured from
the batches the model saw, configuration bounds by behaviour (accepted / refused)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from study.data import normalize as N
from study.data.dataset import open_dataset, write_dataset
from study.data.protocol import ProtocolConfig
from study.keys import table_of
from study.training.config import TrainConfig, config_from_flat
from study.training.loader import load_splits
from study.training.session import Session

# ----------------------------------------------------------------------------- normalisation

# audio (1 dim) per utterance; train frames are 1, 3, 5 -> mean 3, population var 8/3
AUDIO = {"tr0": [[1.0], [3.0]], "tr1": [[5.0]], "dv0": [[100.0], [100.0]], "te0": [[-50.0]]}
# video (2 dims): train frames (0, 10), (2, 10), (4, 40) -> mean (2, 20), var (8/3, 200)
VIDEO = {"tr0": [[0.0, 10.0], [2.0, 10.0]], "tr1": [[4.0, 40.0]], "dv0": [[9.0, 9.0]],
         "te0": [[-9.0, 90.0]]}
SPLIT = {"tr0": "train", "tr1": "train", "dv0": "dev", "te0": "test"}


@pytest.fixture()
def hand(tmp_path):
    rows = [{"utt_id": u, "speaker": f"s{i}", "split": s, "label": "a" if i % 2 else "b",
             "has_audio": True, "has_video": True} for i, (u, s) in enumerate(SPLIT.items())]
    meta = {"classes": ["a", "b"], "audio": {"dim": 1, "rate_hz": 50.0, "dtype": "float32"},
            "video": {"dim": 2, "rate_hz": 30.0, "dtype": "float32"}}
    arr = lambda d: [(u, np.asarray(x, np.float32)) for u, x in d.items()]
    return write_dataset(tmp_path / "ds", pd.DataFrame(rows), meta, arr(AUDIO), arr(VIDEO))


def test_statistics_come_from_the_training_rows_only(hand):
    stats = N.load_stats(open_dataset(hand))
    assert stats["audio"].mean.tolist() == pytest.approx([3.0], abs=1e-12)
    assert stats["audio"].std.tolist() == pytest.approx([math.sqrt(8 / 3)], abs=1e-12)
    assert stats["video"].mean.tolist() == pytest.approx([2.0, 20.0], abs=1e-12)
    assert stats["video"].std.tolist() == pytest.approx([math.sqrt(8 / 3), math.sqrt(200)], abs=1e-12)
    assert (stats["audio"].frames, stats["audio"].utterances) == (3, 2)
    # the file: its key and version, and read back (not recomputed) with the same counts and key
    doc = json.loads(stats.path.read_text())
    assert (doc["version"], doc["key"], doc["split"], doc["dataset"]) == (1, stats.key, "train", str(hand))
    again = N.load_stats(open_dataset(hand))
    assert again.key == stats.key == N.split_key(open_dataset(hand))
    assert (again["video"].frames, again["video"].utterances) == (3, 2)
    assert again["video"].mean.dtype == np.float64


def test_every_split_is_z_scored_with_the_training_statistics(hand):
    cfg = config_from_flat({"preset": "tiny"}, data_dir=hand)
    splits = load_splits(open_dataset(hand), cfg)
    sd = math.sqrt(8 / 3)
    for split, utt, want in (("dev", "dv0", (100 - 3) / sd), ("test", "te0", (-50 - 3) / sd),
                             ("train", "tr1", (5 - 3) / sd)):
        got = splits[split]._features("audio", utt)
        assert got[0, 0] == pytest.approx(want, rel=1e-6)
    got = splits["test"]._features("video", "te0")
    assert got[0].tolist() == pytest.approx([(-9 - 2) / sd, (90 - 20) / math.sqrt(200)], rel=1e-6)


# ----------------------------------------------------------------------------- augmentation


def _seen_batches(session: Session, monkeypatch) -> list:
    """Every batch the model is stepped on (the step's own argument, not the config)."""
    seen, real = [], session._step
    monkeypatch.setattr(session, "_step", lambda batch: (seen.append(batch), real(batch))[1])
    return seen


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from tests.data.test_normalize import _scaled_corpus
    torch.set_num_threads(1)
    return _scaled_corpus(tmp_path_factory.mktemp("aug") / "ds", n_per_split=(120, 9, 9))


def test_modality_dropout_reaches_the_batches(corpus, monkeypatch):
    # r = 0.5 unpaired by the protocol, and dropout 0.6 of the still-paired half: 0.5 + 0.6 * 0.5
    cfg = config_from_flat({"preset": "tiny", "batch_size": 32, "lr": 1e-3, "train_missing_rate": 0.5,
                            "modality_dropout": 0.6}, data_dir=corpus)
    s = Session(cfg, corpus)
    seen = _seen_batches(s, monkeypatch)
    for _ in range(3):
        s.train_epoch()
    has_a = torch.cat([b.has_audio for b in seen])
    has_v = torch.cat([b.has_video for b in seen])
    assert len(has_a) == 3 * 120 and bool((has_a | has_v).all())
    assert float((has_a != has_v).float().mean()) == pytest.approx(0.8, abs=0.08)
    # off: every sample the model saw is paired
    s0 = Session(config_from_flat({"preset": "tiny", "batch_size": 32}, data_dir=corpus), corpus)
    seen0 = _seen_batches(s0, monkeypatch)
    s0.train_epoch()
    assert all(bool((b.has_audio & b.has_video).all()) for b in seen0)


def test_frame_dropout_and_noise_reach_the_batches(corpus, monkeypatch):
    cfg = config_from_flat({"preset": "tiny", "batch_size": 32, "frame_dropout": 0.4, "noise_aug": 0.5,
                            "noise_aug_snr_db": 0.0}, data_dir=corpus)
    s = Session(cfg, corpus)
    seen = _seen_batches(s, monkeypatch)
    s.train_epoch()
    clean = s.splits["train"]
    real = noisy = utts = 0
    order = {u: i for i, u in enumerate(clean.frame["utt_id"])}
    for b in seen:
        real += int(b.audio_mask.sum())
    # share of frames kept among the real frames, measured against the unperturbed lengths
    lengths = np.array([len(clean.ds.audio(u)) for u in clean.frame["utt_id"]])
    assert real / lengths.sum() == pytest.approx(0.6, abs=0.04)
    # noise: a kept frame differs from the clean z-score in about half of the utterances
    for b in seen:
        for j in range(len(b.has_audio)):
            mask = b.audio_mask[j]
            row = b.audio[j][mask].numpy()
            # find which utterance: match on length and the first kept frame's neighbourhood
            utts += 1
            noisy += _is_noisy(row, clean, mask, order)
    assert utts == 120 and noisy / utts == pytest.approx(0.5, abs=0.15)


def _is_noisy(row, clean, mask, order) -> bool:
    """True when no training utterance's clean z-scores equal the batch row's kept frames."""
    t = int(mask.numel())
    for u in clean.frame["utt_id"]:
        x = clean._features("audio", u)
        if len(x) <= t and len(x) >= int(mask.sum()):
            kept = x[mask[:len(x)].numpy()] if len(x) == t or not mask[len(x):].any() else None
            if kept is not None and kept.shape == row.shape and np.allclose(kept, row, atol=1e-5):
                return False
    return True


# ----------------------------------------------------------------------------- bounds


def _bounded(*classes):
    return [(name, spec.rule.bound) for name, spec in table_of(*classes).items()
            if spec.rule.bound is not None and not spec.is_list and spec.kind is float]


@pytest.mark.parametrize("name,bound", _bounded(ProtocolConfig, TrainConfig))
def test_a_bound_refuses_just_outside_and_accepts_just_inside(name, bound):
    eps = 1e-9
    build = lambda v: config_from_flat({"preset": "tiny", name: v})
    if bound.low is not None:
        with pytest.raises(ValueError):
            build(bound.low - eps)
        if bound.low_open:
            with pytest.raises(ValueError):
                build(bound.low)
        assert getattr(_find(build(bound.low + eps), name), name) == bound.low + eps
    if bound.high is not None:
        with pytest.raises(ValueError):
            build(bound.high + eps)
        inside = bound.high - eps
        if bound.high_open:
            with pytest.raises(ValueError):
                build(bound.high)
        else:
            inside = bound.high
        assert getattr(_find(build(inside), name), name) == inside


def _find(cfg, name):
    return cfg.protocol if hasattr(cfg.protocol, name) and not hasattr(cfg, name) else cfg


def test_statistics_go_into_a_cache_whose_parents_do_not_exist_yet(hand, tmp_path, monkeypatch):
    fresh = tmp_path / "node" / "cache" / "stats" / "ds-1"          # a fresh node: nothing exists
    monkeypatch.setattr(N, "stats_dirs", lambda ds: [fresh])
    stats = N.load_stats(open_dataset(hand))
    assert stats.path.parent == fresh and stats.path.is_file()
    assert stats["audio"].mean.tolist() == pytest.approx([3.0], abs=1e-12)
