"""The synthetic corpora: structure, determinism, realism of `crema-d`, and the planted truth of
the known-answer presets (docs/synthetic.md)."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from study.data.dataset import open_dataset
from study.data.generate import make_corpus, preset_names
from study.data.known_answer import CLASSES as KNOWN_CLASSES
from study.data.synth import (
    CLASS_BALANCE,
    CLASSES,
    GENERATOR_VERSION,
    segment_envelope,
    soft_from_votes,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return open_dataset(make_corpus(tmp_path_factory.mktemp("s") / "d", scale="tiny", seed=3,
                                    progress=False))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return open_dataset(make_corpus(tmp_path_factory.mktemp("s") / "d", scale="small", seed=0,
                                    progress=False), check_values=False)


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    return open_dataset(make_corpus(tmp_path_factory.mktemp("k") / "d", preset="known-answer",
                                    scale="small", seed=0, progress=False), check_values=False)


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
    assert set(m["intended"]) <= set(CLASSES) and set(m["session"]) <= {0, 1}
    # the file name carries the intended emotion, as in CREMA-D
    assert (m["utt_id"].str.split("_").str[2] == m["intended"].str[:3].str.upper()).all()
    assert not any(c.startswith("_") for c in m.columns)                  # private columns dropped
    assert tiny.meta["provenance"]["generator_version"] == GENERATOR_VERSION


def test_deterministic(tmp_path):
    a = make_corpus(tmp_path / "a", scale="tiny", seed=5, progress=False)
    b = make_corpus(tmp_path / "b", scale="tiny", seed=5, progress=False)
    c = make_corpus(tmp_path / "c", scale="tiny", seed=6, progress=False)
    assert (a / "audio.arrow").read_bytes() == (b / "audio.arrow").read_bytes()
    pd.testing.assert_frame_equal(pd.read_parquet(a / "manifest.parquet"),
                                  pd.read_parquet(b / "manifest.parquet"))
    assert (a / "audio.arrow").read_bytes() != (c / "audio.arrow").read_bytes()


def test_unknown_preset_names_the_choices(tmp_path):
    with pytest.raises(ValueError, match="known-answer"):
        make_corpus(tmp_path / "x", preset="cremad", scale="tiny", progress=False)
    assert preset_names() == ["crema-d", "known-answer", "known-interaction", "known-redundant"]


def _ensure(out: str, answer: str) -> None:  # a child process: what it got, through a file
    from study.data.generate import ensure_corpus
    Path(answer).write_text(str(ensure_corpus(out, scale="tiny", seed=5)))


def test_ensure_corpus_one_complete_corpus_for_concurrent_callers(tmp_path):
    import multiprocessing as mp
    out = tmp_path / "d"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_ensure, args=(str(out), str(tmp_path / f"a{i}"))) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert {(tmp_path / f"a{i}").read_text() for i in range(2)} == {str(out)}
    ref = make_corpus(tmp_path / "ref", scale="tiny", seed=5, progress=False)
    assert (out / "audio.arrow").read_bytes() == (ref / "audio.arrow").read_bytes()
    # generated beside `out` and renamed into place: no temporary directory is left behind
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_ensure_corpus_reuses_refuses_and_replaces(tmp_path):
    from study.data.generate import ensure_corpus
    out = ensure_corpus(tmp_path / "d", scale="tiny", seed=5)
    stamp = (out / "dataset.json").stat().st_mtime_ns
    assert ensure_corpus(out, scale="tiny", seed=5) == out  # reused, not regenerated
    assert (out / "dataset.json").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match=str(out)):  # `data synth` without --overwrite
        ensure_corpus(out, scale="tiny", seed=6, if_exists="error")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="mine"):  # a foreign directory is never written into
        ensure_corpus(foreign, scale="tiny")
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    replaced = ensure_corpus(out, scale="tiny", seed=6, if_exists="replace")
    assert open_dataset(replaced).meta["provenance"]["seed"] == 6
    with pytest.raises(ValueError, match="if_exists"):
        ensure_corpus(out, if_exists="overwrite")


def test_class_balance_follows_crema_d(small):
    share = small.manifest["label"].value_counts(normalize=True)
    for c, p in CLASS_BALANCE.items():
        assert abs(share[c] - p) < 0.03, (c, share[c], p)
    assert small.manifest["speaker"].nunique() == 91
    lengths = [len(small.audio(u)) / 25.0 for u in small.manifest.utt_id[:300]]
    assert 2.0 < np.median(lengths) < 3.0                               # CREMA-D's ~2.5 s


def test_label_noise_sits_on_ambiguous_clips(small):
    m = small.manifest
    flipped = m["label"] != m["intended"]
    assert 0.05 < flipped.mean() < 0.2                                   # consensus != intended
    top = m[[f"soft_{c}" for c in CLASSES]].max(axis=1)
    assert top[flipped].mean() < top[~flipped].mean() - 0.15             # raters disagreed there
    assert 0.6 < top.mean() < 0.85                                       # CREMA-D's mean ~0.76


def test_soft_labels_from_votes():
    soft = soft_from_votes(np.array([[7.0, 3.0, 0, 0, 0, 0]]))       # 0.7, 0.3, 4 x 0.01, renormalised
    np.testing.assert_allclose(soft, [[0.6731, 0.2885, 0.0096, 0.0096, 0.0096, 0.0096]], atol=1e-4)


def test_evidence_sits_in_segments():
    # onset 1 s, attack 0.2 s, decay 0.5 s at 10 Hz: zero before the onset, peak 1 at 1.2 s
    env = segment_envelope(np.array([[1.0, 0.2, 0.5]]), 30, 10.0)
    assert (env[:11] == 0).all() and env[12] == pytest.approx(1.0)
    assert env[17] == pytest.approx(np.exp(-1.0))
    assert env[29] == pytest.approx(np.exp(-3.4))


def test_feature_scales_are_like_real_extractors(small):
    utts = small.manifest.utt_id[:200]
    audio = np.concatenate([small.audio(u).astype(np.float64) for u in utts])
    video = np.concatenate([small.video(u).astype(np.float64) for u in utts])
    assert -85 < audio.mean(0).min() and audio.mean(0).max() < -45          # log-mel dB
    assert 1.0 < np.median(audio.std(0)) < 10.0
    assert video.min() >= 0.0 and video.max() <= 1.0                        # pixel-like
    assert video.std(0).min() < 0.005 and video.std(0).max() > 0.04         # tiny variance dims


def _pooled(ds, split, modality):
    df = ds.split(split)
    get = getattr(ds, modality)
    x = np.stack([get(u).astype(np.float64).mean(0) for u in df.utt_id])
    return x, df["label"].to_numpy()


def _lr_scores(ds, model, combos) -> dict:
    scores = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                                 # lbfgs on raw dB features
        for name, mods in combos.items():
            xtr = np.hstack([_pooled(ds, "train", m)[0] for m in mods])
            xte = np.hstack([_pooled(ds, "test", m)[0] for m in mods])
            ytr, yte = _pooled(ds, "train", "audio")[1], _pooled(ds, "test", "audio")[1]
            scores[name] = f1_score(yte, model().fit(xtr, ytr).predict(xte), average="macro")
    return scores


COMBOS = {"audio": ["audio"], "video": ["video"], "av": ["audio", "video"]}


def test_pooled_logistic_regression_is_far_from_saturated(small):
    std = _lr_scores(small, lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
                     COMBOS)
    raw = _lr_scores(small, lambda: LogisticRegression(max_iter=300), {"video": ["video"]})
    assert std["av"] > max(std["audio"], std["video"]) + 0.05          # fusion helps
    assert min(std["audio"], std["video"]) > 0.25                       # above chance (1/6)
    assert std["av"] < 0.65                                             # not saturated
    assert raw["video"] < std["video"] - 0.07             # unnormalised pixel-like dims lose most


def test_known_answer_structure(known):
    m = known.manifest
    assert known.classes == list(KNOWN_CLASSES)
    assert m["label"].value_counts(normalize=True).between(0.13, 0.2).all()   # uniform
    assert m.groupby("speaker")["split"].nunique().max() == 1


def _subset(ds, classes, split, modalities):
    xs, y = [], None
    for mod in modalities:
        x, y = _pooled(ds, split, mod)
        xs.append(x)
    keep = np.isin(y, classes)
    return np.hstack(xs)[keep], y[keep]


def test_known_answer_interaction_needs_both_streams_non_linearly(known):
    pair = ["xor_same", "xor_diff"]

    def score(model, modalities):
        xtr, ytr = _subset(known, pair, "train", modalities)
        xte, yte = _subset(known, pair, "test", modalities)
        return f1_score(yte, model.fit(xtr, ytr).predict(xte), average="macro")

    lr = lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    mlp = make_pipeline(StandardScaler(), MLPClassifier((64,), alpha=1e-2, max_iter=1500, random_state=0))
    assert score(lr(), ["audio"]) < 0.62 and score(lr(), ["video"]) < 0.62   # each stream alone
    assert score(lr(), ["audio", "video"]) < 0.62                          # any additive model
    assert score(mlp, ["audio", "video"]) > 0.75                           # an interaction


def test_known_answer_order_classes_have_equal_pooled_features(known):
    xtr, ytr = _subset(known, ["rise", "fall"], "train", ["audio"])
    xte, yte = _subset(known, ["rise", "fall"], "test", ["audio"])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(xtr, ytr)
    assert f1_score(yte, model.predict(xte), average="macro") < 0.62
    # ... yet their frames differ in order: the mean of frame t+1 minus frame t along P - Q
    from study.data.known_answer import _world
    from study.data.synth import SCALES
    w = _world(SCALES["small"], 0)
    direction = np.tanh(w.cue["P"] @ w.proj_a * 3) - np.tanh(w.cue["Q"] @ w.proj_a * 3)   # (Da,)
    m = known.manifest
    sign = {}
    for label in ("rise", "fall"):
        utts = m.loc[m["label"] == label, "utt_id"][:100]
        lag = [np.max(np.diff(known.audio(u).astype(np.float64) @ direction)) for u in utts]
        sign[label] = np.median(lag)
    assert sign["fall"] > sign["rise"] + 1.0                             # Q -> P jumps up along P - Q
