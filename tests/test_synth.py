"""The synthetic CREMA-D-like corpus: structure, determinism, and that its signal is real."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from study.data.dataset import open_dataset
from study.data.synth import CLASS_BALANCE, CLASSES, make_corpus


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return open_dataset(make_corpus(tmp_path_factory.mktemp("s") / "d", scale="tiny", seed=3,
                                    progress=False))


def test_structure(tiny):
    m = tiny.manifest
    assert tiny.classes == list(CLASSES)
    assert set(m["split"]) == {"train", "dev", "test"}
    assert m.groupby("speaker")["split"].nunique().max() == 1           # speaker independent
    soft = m[[f"soft_{c}" for c in CLASSES]].to_numpy()
    np.testing.assert_allclose(soft.sum(1), 1.0, atol=0.01)
    assert (soft.argmax(1) == m["label"].map(CLASSES.index)).all()
    assert m[["arousal", "valence", "dominance"]].stack().between(1, 5).all()
    assert tiny.audio(m.utt_id[0]).shape[1] == 32 and tiny.video(m.utt_id[0]).shape[1] == 24


def test_deterministic(tmp_path):
    a = make_corpus(tmp_path / "a", scale="tiny", seed=5, progress=False)
    b = make_corpus(tmp_path / "b", scale="tiny", seed=5, progress=False)
    c = make_corpus(tmp_path / "c", scale="tiny", seed=6, progress=False)
    assert (a / "audio.arrow").read_bytes() == (b / "audio.arrow").read_bytes()
    pd.testing.assert_frame_equal(pd.read_parquet(a / "manifest.parquet"),
                                  pd.read_parquet(b / "manifest.parquet"))
    assert (a / "audio.arrow").read_bytes() != (c / "audio.arrow").read_bytes()


def test_class_balance_follows_crema_d(tmp_path):
    ds = open_dataset(make_corpus(tmp_path / "s", scale="small", seed=0, progress=False),
                      check_values=False)
    share = ds.manifest["label"].value_counts(normalize=True)
    for c, p in CLASS_BALANCE.items():
        assert abs(share[c] - p) < 0.03, (c, share[c], p)
    assert ds.manifest["speaker"].nunique() == 91
    lengths = [len(ds.audio(u)) / 25.0 for u in ds.manifest.utt_id[:300]]
    assert 2.0 < np.median(lengths) < 3.0                               # CREMA-D's ~2.5 s


def _pooled(ds, split, modality):
    df = ds.split(split)
    get = getattr(ds, modality)
    x = np.stack([get(u).astype(np.float32).mean(0) for u in df.utt_id])
    return x, df["label"].to_numpy()


def test_fusion_beats_each_modality_and_signal_is_uneven(tiny):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    scores = {}
    for name, mods in {"audio": ["audio"], "video": ["video"], "av": ["audio", "video"]}.items():
        xtr = np.hstack([_pooled(tiny, "train", m)[0] for m in mods])
        xte = np.hstack([_pooled(tiny, "test", m)[0] for m in mods])
        ytr, yte = _pooled(tiny, "train", "audio")[1], _pooled(tiny, "test", "audio")[1]
        pred = LogisticRegression(max_iter=3000).fit(xtr, ytr).predict(xte)
        scores[name] = f1_score(yte, pred, average="macro")
    assert scores["av"] > max(scores["audio"], scores["video"])
    assert min(scores["audio"], scores["video"]) > 1 / 6                 # above chance
