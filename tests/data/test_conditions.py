"""Frame-level condition families and their training-time counterparts: every condition is the
prediction with that stream really removed or perturbed; draws seeded and nested across levels;
dropped frames masked (never zeros presented as data), at least one frame kept."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from study.data.protocol import (
    FAMILIES,
    Perturbation,
    ProtocolConfig,
    StreamChange,
    augmentation,
    condition_perturbation,
    eval_conditions,
    parse_condition,
    perturb_frames,
    robustness,
)
from study.training.config import config_from_flat
from study.training.evaluation import _robustness_row
from study.training.session import Session

UTTS = [f"u{i}" for i in range(300)]


def _frames(t: int, d: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(t, d)).astype(np.float32) + 3.0  # no zeros


def _keep(utt: str, change: StreamChange, t: int = 50, key: str = "eval|0", stream: str = "audio",
          rate_hz: float = 50.0) -> np.ndarray:
    p = Perturbation(key, **{stream: change})
    return perturb_frames(_frames(t), utt, stream, p, rate_hz)[1]


# ----------------------------------------------------------------------------- perturb_frames


def test_frame_drops_nested_seeded_and_at_rate():
    for utt in UTTS[:50]:
        k3, k5, k9 = (_keep(utt, StreamChange(drop=r)) for r in (0.3, 0.5, 0.9))
        assert (~k5[~k3]).all() and (~k9[~k5]).all()       # 0.3's dropped frames are among 0.5's
        assert (k3 == _keep(utt, StreamChange(drop=0.3))).all()               # seeded
    dropped = np.concatenate([~_keep(u, StreamChange(drop=0.3), t=200) for u in UTTS])
    assert abs(dropped.mean() - 0.3) < 0.02
    other_key = [(_keep(u, StreamChange(drop=0.3), key="eval|1") != _keep(u, StreamChange(drop=0.3))).any()
                 for u in UTTS[:20]]
    other_utt = (_keep("a", StreamChange(drop=0.3)) != _keep("b", StreamChange(drop=0.3))).any()
    assert all(other_key) and other_utt
    video = _keep("u1", StreamChange(drop=0.3), stream="video")
    assert (video != _keep("u1", StreamChange(drop=0.3))).any()                # streams independent


def test_dropped_frames_are_zeroed_and_masked_kept_frames_unchanged():
    x = _frames(40)
    out, keep = perturb_frames(x, "u7", "video", Perturbation("k", video=StreamChange(drop=0.5)), 30.0)
    assert 0 < keep.sum() < 40
    assert (out[~keep] == 0).all() and (out[keep] == x[keep]).all()
    untouched, keep_a = perturb_frames(x, "u7", "audio", Perturbation("k", video=StreamChange(drop=0.5)), 50.0)
    assert keep_a.all() and (untouched == x).all()                # the other stream is left alone


@pytest.mark.parametrize("change", [StreamChange(drop=0.999), StreamChange(gap=1.0),
                                    StreamChange(delay_ms=10_000.0),
                                    StreamChange(drop=0.99, gap=0.9, delay_ms=500.0),
                                    StreamChange(gap=0.9, delay_ms=500.0)])
def test_at_least_one_frame_is_kept(change):
    for t in (1, 2, 3, 7):
        for utt in UTTS[:40]:
            assert _keep(utt, change, t=t).sum() >= 1


def test_gap_is_one_contiguous_block_nested_in_larger_gaps():
    for utt in UTTS[:60]:
        t = 37 + len(utt)
        gaps = {}
        for share in (0.1, 0.3, 0.5, 0.9):
            keep = _keep(utt, StreamChange(gap=share), t=t)
            hole = np.flatnonzero(~keep)
            assert len(hole) == min(int(np.floor(share * t + 0.5)), t - 1)
            assert (np.diff(hole) == 1).all()                                      # contiguous
            gaps[share] = set(hole.tolist())
        assert gaps[0.1] <= gaps[0.3] <= gaps[0.5] <= gaps[0.9]
    starts = {int(np.flatnonzero(~_keep(u, StreamChange(gap=0.3)))[0]) for u in UTTS[:60]}
    assert len(starts) > 10                                            # the position is drawn


def test_noise_is_one_vector_scaled_by_snr_and_training_scale():
    x = _frames(400, d=3)
    scale = np.array([1.0, 2.0, 0.5], np.float32)
    noisy = {db: perturb_frames(x, "u3", "audio", Perturbation("k", audio=StreamChange(snr_db=db)),
                                50.0, scale)[0] - x for db in (20.0, 10.0, 0.0)}
    np.testing.assert_allclose(noisy[20.0], noisy[10.0] * 10 ** (-0.5), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(noisy[0.0], noisy[10.0] * 10 ** 0.5, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(noisy[0.0].std(0), scale, rtol=0.12)  # 0 dB: noise std = feature std
    np.testing.assert_allclose(noisy[10.0].std(0), scale * 10 ** -0.5, rtol=0.12)
    again = perturb_frames(x, "u3", "audio", Perturbation("k", audio=StreamChange(snr_db=10.0)), 50.0,
                           scale)[0] - x
    other = perturb_frames(x, "u4", "audio", Perturbation("k", audio=StreamChange(snr_db=10.0)), 50.0,
                           scale)[0] - x
    assert (again == noisy[10.0]).all() and not np.allclose(other, noisy[10.0])


def test_async_delays_audio_by_the_level_in_frames():
    x = _frames(60)
    out, keep = perturb_frames(x, "u1", "audio", Perturbation("k", audio=StreamChange(delay_ms=200.0)), 50.0)
    k = 10                                                         # 200 ms at 50 Hz
    assert not keep[:k].any() and keep[k:].all()
    assert (out[k:] == x[:-k]).all() and (out[:k] == 0).all()     # content later: audio lags video
    out25, keep25 = perturb_frames(x, "u1", "audio", Perturbation("k", audio=StreamChange(delay_ms=200.0)),
                                   25.0)
    assert (~keep25).sum() == 5 and (out25[5:] == x[:-5]).all()   # rate_hz converts ms to frames


def test_condition_perturbations_and_augmentation():
    cfg = ProtocolConfig(seed=3)
    p = condition_perturbation(parse_condition("gap_video_0.3"), cfg)
    assert p.video == StreamChange(gap=0.3) and p.audio.identity and p.key == "eval|3"
    assert condition_perturbation(parse_condition("async_200ms"), cfg).audio.delay_ms == 200.0
    assert condition_perturbation(parse_condition("noise_audio_10db"), cfg).audio.snr_db == 10.0
    assert condition_perturbation(parse_condition("miss_0.3"), cfg) is None
    assert condition_perturbation(parse_condition("drop_audio_0.0"), cfg).identity
    assert augmentation(0.0, 0.0, 10.0, 0, 0) is None
    a0, a1 = augmentation(0.2, 0.5, 10.0, 0, 0), augmentation(0.2, 0.5, 10.0, 0, 1)
    assert a0.audio == a0.video == StreamChange(drop=0.2, snr_db=10.0, noise_share=0.5)
    assert a0.key != a1.key                                        # re-drawn every epoch
    noise_only = augmentation(0.0, 0.5, 10.0, 0, 0)
    shares = [(perturb_frames(_frames(5), u, "audio", noise_only, 50.0)[0] != _frames(5)).any() for u in UTTS]
    assert 0.4 < np.mean(shares) < 0.6                              # noise_share: about half


# ----------------------------------------------------------------------------- on a corpus


@pytest.fixture(scope="module")
def session(tiny_corpus):
    torch.manual_seed(0)
    cfg = config_from_flat({"preset": "tiny", "batch_size": 32, "dropout": 0.0}, data_dir=tiny_corpus)
    return Session(cfg, tiny_corpus)


def test_batch_masks_dropped_frames_and_leaves_the_other_stream(session):
    dev = session.splits["dev"]
    idx = np.arange(8)
    clean = dev.batch(idx, dev.has_audio, dev.has_video)
    p = condition_perturbation(parse_condition("drop_audio_0.5"), session.cfg.protocol)
    pert = dev.batch(idx, dev.has_audio, dev.has_video, p)
    real = clean.audio_mask
    assert (pert.audio_mask <= real).all() and 0.3 < (real & ~pert.audio_mask).sum() / real.sum() < 0.7
    assert pert.audio_mask.any(1).all() and pert.has_audio.all()           # never a whole stream
    kept = pert.audio_mask
    assert torch.equal(pert.audio[kept], clean.audio[kept])                # kept frames unchanged
    assert (pert.audio[real & ~kept] == 0).all()                           # dropped: masked + zero
    assert torch.equal(pert.video, clean.video) and torch.equal(pert.video_mask, clean.video_mask)


def test_async_uses_the_dataset_rate(session):
    dev = session.splits["dev"]
    hz = session.ds.meta["audio"]["rate_hz"]
    p = condition_perturbation(parse_condition("async_400ms"), session.cfg.protocol)
    clean = dev.batch(np.arange(4), dev.has_audio, dev.has_video)
    shifted = dev.batch(np.arange(4), dev.has_audio, dev.has_video, p)
    k = int(round(0.4 * hz))
    assert not shifted.audio_mask[:, :k].any()
    n = int(clean.audio_mask[0].sum())
    assert torch.equal(shifted.audio[0, k:n], clean.audio[0, :n - k])
    assert torch.equal(shifted.video, clean.video)


def test_noise_is_scaled_by_training_statistics(session):
    dev = session.splits["dev"]
    assert session.cfg.normalize
    stats = dev.norm["video"]
    np.testing.assert_allclose(dev._noise_scale("video"), stats.std / stats.scale, rtol=1e-5)
    idx = np.arange(len(dev))
    p = condition_perturbation(parse_condition("noise_video_0db"), session.cfg.protocol)
    clean = dev.batch(idx, dev.has_audio, dev.has_video)
    noisy = dev.batch(idx, dev.has_audio, dev.has_video, p)
    m = clean.video_mask
    noise = (noisy.video - clean.video)[m]                                # (frames, D)
    assert abs(float(noise.std()) - 1.0) < 0.1        # 0 dB on z-scored features: unit std
    assert torch.equal(noisy.audio, clean.audio) and torch.equal(noisy.video_mask, m)


def _manual_loss(session, split: str, drop_audio: bool, drop_video: bool) -> float:
    """Cross-entropy of predictions on batches where a stream is truly absent (has False, no frame)."""
    part = session.splits[split]
    has_a = part.frame["has_audio"].to_numpy(bool) & (not drop_audio)
    has_v = part.frame["has_video"].to_numpy(bool) & (not drop_video)
    keep = np.flatnonzero(has_a | has_v)
    session.model.eval()
    preds = []
    with torch.no_grad():
        for start in range(0, len(keep), 16):
            batch = part.batch(keep[start:start + 16], has_a, has_v)
            if drop_video:
                assert not batch.has_video.any() and not batch.video_mask.any()
            if drop_audio:
                assert not batch.has_audio.any() and not batch.audio_mask.any()
            preds.append(session.model(batch).pred.float())
    pred, target = torch.cat(preds), torch.from_numpy(part.target[keep])
    return float(-(target * F.log_softmax(pred, -1)).sum(-1).mean())


def test_single_stream_conditions_truly_remove_the_other_stream(session):
    rows = {r["condition"]: r for r in session.evaluate("dev")}
    audio_only = _manual_loss(session, "dev", drop_audio=False, drop_video=True)
    video_only = _manual_loss(session, "dev", drop_audio=True, drop_video=False)
    av = _manual_loss(session, "dev", drop_audio=False, drop_video=False)
    assert rows["audio_only"]["loss"] == pytest.approx(audio_only, abs=1e-5)
    assert rows["video_only"]["loss"] == pytest.approx(video_only, abs=1e-5)
    assert rows["av"]["loss"] == pytest.approx(av, abs=1e-5)
    # both streams carry signal: removing one changes the prediction
    assert abs(audio_only - av) > 1e-4 and abs(video_only - av) > 1e-4


def test_evaluate_cheap_per_epoch_and_families_once(session, monkeypatch):
    calls = []
    real = session.predict
    monkeypatch.setattr(session, "predict", lambda *a, **k: calls.append(a[3:] or k) or real(*a, **k))
    cheap = session.evaluate("dev")
    assert len(calls) == 3 and {r["family"] for r in cheap} == {None, "miss"}
    calls.clear()
    rows = session.evaluate("dev", extended=True)
    free = sum(1 for f in session.cfg.protocol.families for x in FAMILIES[f].levels
               if FAMILIES[f].kind in ("drop", "gap", "shift") and x == 0)
    extra = sum(len(FAMILIES[f].levels) for f in session.cfg.protocol.families)
    assert len(calls) == 3 + extra - free                      # one forward pass per level
    by = {r["condition"]: r for r in rows}
    assert [r["condition"] for r in rows[:len(cheap)]] == [r["condition"] for r in cheap]
    for name in ("drop_audio_0.0", "gap_video_0.0", "async_0ms"):
        assert by[name]["loss"] == by["av"]["loss"]                          # identity levels
    for name in ("drop_audio_0.9", "gap_audio_0.6", "noise_video_0db", "async_400ms"):
        assert by[name]["loss"] != by["av"]["loss"]                          # really perturbed
    for family in session.cfg.protocol.families:
        curve = [r for r in rows if r["family"] == family and r["level"] is not None]
        area = by[f"robustness_{family}"]
        assert [r["level"] for r in curve] == list(FAMILIES[family].levels)
        assert area["family"] == family and area["level"] is None
        assert area["loss"] == pytest.approx(robustness([r["level"] for r in curve], [r["loss"] for r in curve]))
    assert by["robustness"]["family"] == "miss"
    again = {r["condition"]: r["loss"] for r in session.evaluate_families("dev")}
    assert all(again[k] == by[k]["loss"] for k in again)                   # seeded: reproducible


def test_robustness_row_integrates_levels_per_family():
    rows = [{"condition": f"noise_audio_{x:g}db", "family": "noise_audio", "level": x,
             "test_missing_rate": None, "n": 10, "macro_f1": y}
            for x, y in ((20.0, 0.9), (5.0, 0.9), (0.0, 0.3))]
    rows += [{"condition": "miss_0.0", "family": "miss", "level": 0.0, "test_missing_rate": 0.0, "n": 10,
              "macro_f1": 0.0}, {"condition": "miss_0.9", "family": "miss", "level": 0.9,
                                 "test_missing_rate": 0.9, "n": 10, "macro_f1": 0.0}]
    area = _robustness_row(rows, "noise_audio")
    assert area["condition"] == "robustness_noise_audio" and area["family"] == "noise_audio"
    assert area["macro_f1"] == pytest.approx((15 * 0.9 + 5 * 0.6) / 20)  # index-integration: 0.75
    assert _robustness_row(rows)["condition"] == "robustness" and _robustness_row(rows)["macro_f1"] == 0.0


def test_training_augmentation_redrawn_each_epoch_and_recorded(tiny_corpus, monkeypatch):
    cfg = config_from_flat({"preset": "tiny", "batch_size": 64, "frame_dropout": 0.3, "noise_aug": 0.5,
                            "noise_aug_snr_db": 0.0, "max_epochs": 2}, data_dir=tiny_corpus)
    s = Session(cfg, tiny_corpus)
    train = s.splits["train"]
    seen, masked = [], []
    real = train.batch

    def spy(idx, has_a, has_v, perturb=None):
        seen.append(perturb)
        clean, out = real(idx, has_a, has_v), real(idx, has_a, has_v, perturb)
        masked.append(float((clean.audio_mask & ~out.audio_mask).sum() / clean.audio_mask.sum()))
        return out

    monkeypatch.setattr(train, "batch", spy)
    s.train_epoch()
    first = seen[0]
    s.train_epoch()
    assert first.audio == StreamChange(drop=0.3, snr_db=0.0, noise_share=0.5) and first.video == first.audio
    assert seen[-1].key != first.key                               # epoch 2 draws other frames
    assert abs(np.mean(masked) - 0.3) < 0.05
    flat = json.loads(json.dumps(cfg.to_flat()))
    assert (flat["frame_dropout"], flat["noise_aug"], flat["noise_aug_snr_db"]) == (0.3, 0.5, 0.0)
    assert config_from_flat(flat) == cfg
    with pytest.raises(ValueError, match=r"frame_dropout: must be in \[0, 1\)"):
        config_from_flat({"preset": "tiny", "frame_dropout": 1.0})


def test_finish_evaluates_families_on_dev_once_and_everything_on_test():
    from study.runs.worker import FoldRun, TrialContext, _finish

    class Stub:
        best_epoch = 3

        def __init__(self):
            self.log = []

        def restore_best(self):
            self.log.append("restore")

        def evaluate_families(self, split):
            self.log.append(("families", split))
            return [{"condition": "async_200ms", "family": "async"}]

        def evaluate(self, split, extended=False):
            self.log.append(("evaluate", split, extended))
            return [{"condition": "av"}]

    ctx = TrialContext(data_dir="x", model_preset="tiny", objectives=(("av", "macro_f1", "max"),))
    s = Stub()
    out = _finish([FoldRun(0, s, best_rows=[{"condition": "av"}])], ctx)
    assert s.log == ["restore", ("families", "dev")] and "test_rows" not in out
    assert [r["condition"] for r in json.loads(out["best_rows"])] == ["av", "async_200ms"]
    s = Stub()
    out = _finish([FoldRun(2, s)], TrialContext(**{**ctx.to_dict(), "evaluate_test": True}))
    assert s.log == ["restore", ("families", "dev"), ("evaluate", "test", True)]
    assert json.loads(out["test_rows"]) == [{"condition": "av", "fold": 2, "best_epoch": 3}]


def test_default_levels_cover_the_issue_ranges():
    levels = {f: FAMILIES[f].levels for f in FAMILIES}
    assert max(levels["drop_audio"]) >= 0.9 and max(levels["async"]) >= 200
    assert all(len(v) >= 2 for v in levels.values())               # an area needs two levels
    assert len(eval_conditions(ProtocolConfig(), extended=True)) > len(eval_conditions(ProtocolConfig()))
