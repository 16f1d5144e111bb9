"""The training session: schedules, tasks, model selection on dev, safe checkpoints."""
from __future__ import annotations

import numpy as np
import pytest

from study.training.config import config_from_flat
from study.training.fit import fit
from study.training.session import Session, bucketed_batches


def _cfg(tiny_corpus, **kw):
    return config_from_flat({"preset": "tiny", "lr": 2e-3, "batch_size": 32, **kw}, data_dir=tiny_corpus)


def test_config_from_flat_fills_dataset_dims_and_rejects_unknown(tiny_corpus):
    cfg = _cfg(tiny_corpus, d_model=16, train_missing_rate=0.3)
    assert (cfg.model.audio_dim, cfg.model.video_dim, cfg.model.n_outputs) == (32, 24, 6)
    assert cfg.model.d_model == 16 and cfg.protocol.train_missing_rate == 0.3
    assert config_from_flat(cfg.to_flat()) == cfg
    with pytest.raises(ValueError, match=r"d_modle: unknown config key .*did you mean `d_model`"):
        _cfg(tiny_corpus, d_modle=16)


@pytest.mark.parametrize("schedule", ["fused", "three_pass"])
def test_training_learns_above_chance(tiny_corpus, schedule):
    record = fit(_cfg(tiny_corpus, max_epochs=6, patience=6, schedule=schedule), tiny_corpus, log=lambda s: None)
    by = {r["condition"]: r for r in record["dev"]}
    assert by["av"]["macro_f1"] > 0.3                         # chance is ~0.17 (6 classes)
    assert {r["condition"] for r in record["test"]} >= {"av", "audio_only", "video_only",
                                                        "miss_0.5", "robustness"}


def test_missing_rate_training_reports_unimodal_conditions(tiny_corpus):
    record = fit(_cfg(tiny_corpus, max_epochs=2, train_missing_rate=0.5), tiny_corpus, log=lambda s: None)
    by = {r["condition"]: r for r in record["test"]}
    for cond in ("audio_only", "video_only"):
        assert 0.0 <= by[cond]["macro_f1"] <= 1.0 and by[cond]["n"] == by["av"]["n"]
    assert record["protocol"]["train_missing_rate"] == 0.5


def test_dimensional_task_and_soft_labels(tiny_corpus):
    dim = config_from_flat({"preset": "tiny", "max_epochs": 1}, data_dir=tiny_corpus, task="dimensional")
    rows = fit(dim, tiny_corpus, log=lambda s: None)["test"]
    assert {"ccc_arousal", "ccc_valence", "ccc_dominance", "ccc_mean"} <= set(rows[0])
    soft = Session(_cfg(tiny_corpus, label_kind="soft"), tiny_corpus)
    target = soft.splits["train"].target
    assert np.allclose(target.sum(1), 1) and (target.max(1) < 1).any()


# best-epoch selection on dev and the single test evaluation: tests/studies/test_selection.py


def test_early_stopping_on_patience(tiny_corpus):
    session = Session(_cfg(tiny_corpus, max_epochs=50, patience=2, lr=1e-9), tiny_corpus)
    while not session.should_stop:
        session.train_epoch()
        session.observe(session.evaluate("dev", conditions=["av"]))
    assert session.epoch - session.best_epoch == 2 and session.epoch < 50


def test_checkpoint_resume_continues_identically(tiny_corpus, tmp_path):
    cfg = _cfg(tiny_corpus, max_epochs=3, modality_dropout=0.2)
    a = Session(cfg, tiny_corpus)
    a.train_epoch()
    a.observe(a.evaluate("dev", conditions=["av"]))
    a.save(tmp_path)
    la = a.train_epoch()["train_loss"]
    b = Session(cfg, tiny_corpus)
    b.restore(tmp_path)                                           # also restores the torch RNG
    assert b.epoch == 1 and b.best_epoch == a.best_epoch
    lb = b.train_epoch()["train_loss"]
    assert la == pytest.approx(lb, rel=1e-5)


def test_checkpoint_refuses_other_config(tiny_corpus, tmp_path):
    Session(_cfg(tiny_corpus), tiny_corpus).save(tmp_path)
    with pytest.raises(ValueError, match="different config"):
        Session(_cfg(tiny_corpus, d_model=16), tiny_corpus).restore(tmp_path)


def test_bucketed_batches_cover_everything_once():
    lengths = np.random.default_rng(0).uniform(1, 5, 1000)
    batches = bucketed_batches(lengths, 32, np.random.default_rng(1))
    flat = np.concatenate(batches)
    assert sorted(flat) == list(range(1000))
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < 0.5                                           # similar lengths together


def test_bf16_autocast_path_trains(tiny_corpus):
    session = Session(_cfg(tiny_corpus, precision="bf16"), tiny_corpus)
    info = session.train_epoch()
    assert np.isfinite(info["train_loss"])
    rows = session.evaluate("dev", conditions=["av"])
    assert 0.0 <= rows[0]["macro_f1"] <= 1.0
    with pytest.raises(ValueError, match=r"precision: 'fp8' not one of \['auto', 'fp32', 'bf16'\]"):
        _cfg(tiny_corpus, precision="fp8")


def test_train_command_refuses_a_diverged_epoch_as_a_ray_trial_does(tiny_corpus, monkeypatch):
    # one epoch loop (Session.run_epoch) for `avstudy train` and the Ray worker: same refusal
    from study.training.session import TrialDiverged
    monkeypatch.setattr(Session, "train_epoch", lambda s: {"epoch": 1, "train_loss": float("inf"),
                                                           "samples": 3, "unpaired_share": 0.0})
    with pytest.raises(TrialDiverged, match="train loss is inf at epoch 1"):
        fit(_cfg(tiny_corpus, max_epochs=2), tiny_corpus, log=lambda s: None)
