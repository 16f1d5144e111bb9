"""Tests written against the mutation survivors of study/data/protocol.py and
study/data/normalize.py (scripts/mutation.sh, 2026-12-07; docs/testing.md lists the rest as
equivalent). Every expectation is worked out by hand from the definitions."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from study.data import normalize as N
from study.data import protocol as P
from study.data.dataset import open_dataset
from study.vocab import GRID, Condition
from tests.data.test_normalize import _frames, _scaled_corpus

IDS = [f"u{i:04d}" for i in range(400)]
ONES = np.ones(len(IDS), bool)


# ----------------------------------------------------------------------------- protocol


def test_availability_reads_zero_one_integers_as_booleans():
    """has_audio/has_video as 0/1 integers (a CSV or a parquet int column) mean what bools do:
    `~1` is -2 for an int, so a missing cast would keep every stream."""
    has_a = np.array([1, 1, 0, 1] * 100)
    has_v = np.array([1, 0, 1, 1] * 100)
    cfg = P.ProtocolConfig(train_missing_rate=0.6, audio_only_share=0.5, seed=3,
                           modality_dropout=0.5)
    as_bool = (has_a.astype(bool), has_v.astype(bool))
    pairs = [(P.keep_streams, (np.ones(400, bool), np.ones(400, bool))),
             (lambda a, v, *r: P.epoch_dropout(400, a, v, cfg, 0), ()),
             (lambda a, v, *r: P.epoch_dropout(400, a, v, P.ProtocolConfig(), 0), ())]
    for fn, rest in pairs:
        for got, want in zip(fn(has_a, has_v, *rest), fn(*as_bool, *rest)):
            assert got.dtype == bool and (got == want).all()
    for cond in ("miss_0.5", "miss_a0.3_v0.3", "av"):
        for got, want in zip(P.condition_availability(cond, IDS, has_a, has_v, cfg),
                             P.condition_availability(cond, IDS, *as_bool, cfg)):
            assert got.dtype == bool and (got == want).all(), cond
    # an utterance with only audio keeps it whatever is lost: paired rows only
    a, v = P.keep_streams(np.array([1, 1]), np.array([0, 1]), np.array([True, True]),
                          np.array([False, False]))
    assert a.tolist() == [True, False] and v.tolist() == [False, True]


@pytest.mark.parametrize("cond", ["miss_0.5", "miss_a0.3_v0.3"])
def test_test_conditions_draw_with_the_protocol_seed(cond):
    """Another protocol seed, other utterances made unpaired (same seed, the same ones)."""
    draw = lambda seed: P.condition_availability(cond, IDS, ONES, ONES, P.ProtocolConfig(seed=seed))
    (_, a0, v0), (_, a0b, v0b), (_, a1, v1) = draw(0), draw(0), draw(1)
    assert (a0 == a0b).all() and (v0 == v0b).all()
    assert ((a0 & v0) != (a1 & v1)).any()                      # which utterances lose a stream
    if cond.startswith("miss_0"):                               # ... and which stream they lose
        both = ~(a0 & v0) & ~(a1 & v1)
        assert both.sum() > 50 and (a0[both] != a1[both]).any()


def test_evaluation_uses_the_configured_missing_rates():
    cfg = P.ProtocolConfig(test_rates=(0.15, 0.35))
    miss = [c for c in P.eval_conditions(cfg) if c.family == "miss"]
    assert [c.level for c in miss] == [0.15, 0.35]
    assert [c.level for c in P.family_conditions("miss", [0.2])] == [0.2]


def test_area_families_leave_out_the_grid_and_the_named_conditions():
    plan = [Condition("av"), Condition("miss_0.1", "miss", 0.1),
            Condition("miss_a0.1_v0.1", GRID, 0.1, 0.1), Condition("drop_audio_0.2", "drop_audio", 0.2)]
    assert P.area_families(plan) == ["miss", "drop_audio"]


def test_rates_that_add_up_to_one_are_accepted():
    assert P.from_missing_rates(0.5, 0.5) == {"train_missing_rate": 1.0, "audio_only_share": 0.5}
    with pytest.raises(ValueError, match="> 1"):
        P.from_missing_rates(0.6, 0.5)


def _noise(snr_db, scale=None, t=4000, d=8):
    x = np.zeros((t, d))                                        # float64 in
    p = P.Perturbation("k", audio=P.StreamChange(snr_db=snr_db))
    args = () if scale is None else (scale,)
    return P.perturb_frames(x, "u1", "audio", p, 100.0, *args)


def test_noise_has_the_stated_std_and_the_output_is_float32():
    out, keep = _noise(20.0)                                    # std 10^(-20/20) = 0.1
    assert out.dtype == np.float32 and keep.all()
    assert abs(out.std() - 0.1) < 0.003 and abs(out.mean()) < 0.003
    out, _ = _noise(20.0, scale=np.full(8, 3.0))                # training std 3: noise std 0.3
    assert abs(out.std() - 0.3) < 0.01


def test_a_one_frame_utterance_is_perturbed_and_an_empty_one_passes():
    p = P.Perturbation("k", audio=P.StreamChange(snr_db=0.0))
    out, keep = P.perturb_frames(np.zeros((1, 4)), "u", "audio", p, 100.0)
    assert keep.tolist() == [True] and np.abs(out).sum() > 0    # noise reached the one frame
    for change in (P.StreamChange(snr_db=0.0), P.StreamChange(drop=0.5, gap=0.3, delay_ms=10.0)):
        out, keep = P.perturb_frames(np.zeros((0, 4)), "u", "audio", P.Perturbation("k", audio=change), 100.0)
        assert out.shape == (0, 4) and keep.shape == (0,)


def test_noise_is_drawn_per_key_and_per_stream():
    x = np.zeros((50, 4))
    change = P.StreamChange(snr_db=0.0)
    noise = lambda key, stream: P.perturb_frames(  # noqa: E731
        x, "u1", stream, P.Perturbation(key, **{stream: change}), 50.0)[0]
    assert np.array_equal(noise("k", "audio"), noise("k", "audio"))
    assert not np.allclose(noise("k", "audio"), noise("j", "audio"))   # another seed, other noise
    assert not np.allclose(noise("k", "audio"), noise("k", "video"))   # the streams' noise apart


def _keep(change, t, rate_hz=1000.0):
    x = np.ones((t, 2))
    return P.perturb_frames(x, "u3", "video", P.Perturbation("k", video=change), rate_hz)[1]


def test_delay_masks_exactly_its_frames_and_never_the_last():
    keep = _keep(P.StreamChange(delay_ms=1001.0), 2000)         # 1001 ms at 1 kHz = 1001 frames
    assert (~keep).sum() == 1001 and not keep[:1001].any() and keep[1001:].all()
    assert _keep(P.StreamChange(delay_ms=1.0), 10).tolist() == [False] + [True] * 9
    keep = _keep(P.StreamChange(delay_ms=50_000.0), 10)         # longer than the utterance
    assert keep.tolist() == [False] * 9 + [True]


def test_a_whole_gap_keeps_one_frame_and_gaps_start_anywhere():
    assert _keep(P.StreamChange(gap=1.0), 10).sum() == 1
    starts = []
    for i in range(200):                                        # a 10-frame gap in 100 frames
        x = np.ones((100, 1))
        keep = P.perturb_frames(x, f"u{i}", "video", P.Perturbation("k", video=P.StreamChange(gap=0.1)),
                                30.0)[1]
        starts.append(int(np.argmin(keep)))
    starts = np.array(starts)                                   # uniform over 0..90
    assert (starts < 30).any() and (starts > 60).any()


def test_when_every_frame_is_dropped_the_kept_one_is_not_one_the_delay_removed():
    for i in range(10):
        change = P.StreamChange(delay_ms=500.0, drop=1.0)       # 15 leading frames at 30 Hz
        keep = P.perturb_frames(np.ones((40, 1)), f"u{i}", "video", P.Perturbation("k", video=change), 30.0)[1]
        assert keep.sum() == 1 and not keep[:15].any()


def test_frame_dropout_on_top_of_a_gap_keeps_the_gap_and_one_frame_outside_it():
    for i in range(20):
        x = np.ones((40, 1))
        gap = P.Perturbation("k", video=P.StreamChange(gap=0.5))
        both = P.Perturbation("k", video=P.StreamChange(gap=0.5, drop=0.3))
        everything = P.Perturbation("k", video=P.StreamChange(gap=0.5, drop=1.0))
        g = P.perturb_frames(x, f"u{i}", "video", gap, 30.0)[1]
        b = P.perturb_frames(x, f"u{i}", "video", both, 30.0)[1]
        e = P.perturb_frames(x, f"u{i}", "video", everything, 30.0)[1]
        assert not b[~g].any()                                  # the gap stays masked
        assert e.sum() == 1 and g[e].all()                      # the kept frame is outside the gap


# ----------------------------------------------------------------------------- normalisation


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return _scaled_corpus(tmp_path_factory.mktemp("kills") / "ds")


def test_statistics_of_another_split_are_its_own_and_stored_beside_the_train_ones(corpus):
    ds = open_dataset(corpus)
    train, dev = N.load_stats(ds, "train"), N.load_stats(ds, "dev")
    assert dev.key == N.split_key(ds, "dev") != train.key
    assert dev.path.parent == train.path.parent == corpus / "stats"   # the folder already existed
    for m in ("audio", "video"):
        x = _frames(ds, m, "dev")
        np.testing.assert_allclose(dev[m].mean, x.mean(0), rtol=0, atol=1e-9)
        np.testing.assert_allclose(dev[m].std, x.std(0), rtol=1e-9, atol=1e-12)
    again = N.load_stats(open_dataset(corpus), "dev")                 # read back from disk
    assert again.key == dev.key and again.path == dev.path
    out = again["audio"].apply(_frames(ds, "audio", "dev"))
    assert out.dtype == np.float32 and abs(float(out.mean())) < 1e-3


def test_statistics_written_while_waiting_for_the_lock_are_read_with_their_key(corpus):
    """Another trial wrote the file while this one waited for the lock: it is read, not redone."""
    ds = open_dataset(corpus)
    first = N.load_stats(ds, "test")
    again = N._compute_locked(ds, "test", first.key, first.path.parent)
    assert again.key == first.key and again.path == first.path
    np.testing.assert_array_equal(again["video"].mean, first["video"].mean)


def test_statistics_go_to_the_cache_when_the_dataset_folder_cannot_hold_them(tmp_path, monkeypatch):
    roots = [_scaled_corpus(tmp_path / p / "ds", n_per_split=(12, 6, 6)) for p in ("one", "two")]
    for root in roots:
        (root / "stats").write_text("a file where the folder would be")
    monkeypatch.setenv("AVSTUDY_CACHE", str(tmp_path / "cache"))
    dirs = [N.load_stats(open_dataset(r)).path.parent for r in roots]
    for root, d in zip(roots, dirs):
        digest = hashlib.blake2b(str(root.resolve()).encode(), digest_size=6).hexdigest()
        assert d == tmp_path / "cache" / "stats" / f"ds-{digest}"
    assert dirs[0] != dirs[1]                                         # same folder name, own place
    monkeypatch.delenv("AVSTUDY_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert N.stats_dirs(open_dataset(roots[0]))[1].parent == tmp_path / "home" / ".cache" / "avstudy" / "stats"


def test_nowhere_to_store_statistics_names_the_dataset_and_every_place(tmp_path, monkeypatch):
    root = _scaled_corpus(tmp_path / "ds", n_per_split=(12, 6, 6))
    (root / "stats").write_text("not a folder")
    (tmp_path / "cache").write_text("not a folder either")
    monkeypatch.setenv("AVSTUDY_CACHE", str(tmp_path / "cache"))
    with pytest.raises(OSError) as err:
        N.load_stats(open_dataset(root))
    text = str(err.value)
    assert text.startswith(f"{root}: cannot store normalisation statistics")
    assert f"{root / 'stats'}: " in text and f"{tmp_path / 'cache' / 'stats'}" in text and "; " in text


def test_unreadable_statistics_and_a_split_without_a_stream_name_the_file(tmp_path):
    root = _scaled_corpus(tmp_path / "ds", n_per_split=(12, 6, 6))
    ds = open_dataset(root)
    path = N.load_stats(ds).path
    path.write_text("{")
    with pytest.raises(ValueError) as err:
        N.load_stats(open_dataset(root))
    assert str(err.value).startswith(f"{path}: unreadable normalisation statistics")
    assert str(err.value).endswith("delete it to recompute")
    ds = open_dataset(root)
    ds.manifest.loc[ds.manifest.split == "dev", "has_video"] = False
    with pytest.raises(ValueError) as err:
        N.compute_stats(ds, "dev")
    assert str(err.value) == (f"{root}/manifest.parquet: split 'dev' has no utterance with video; "
                              "cannot compute its normalisation statistics")


def test_an_invalid_protocol_says_every_fault_in_one_message():
    """What a user reads (the spec and `train --set` show this text): every key at fault, joined."""
    with pytest.raises(ValueError) as err:
        P.ProtocolConfig(grid_audio=(0.3, 0.1), grid_video=(0.2, 0.2))
    assert str(err.value) == (
        "invalid protocol: grid_audio: [0.3, 0.1] must be strictly increasing (the grid's draws are "
        "nested along each axis); grid_video: [0.2, 0.2] must be strictly increasing (the grid's "
        "draws are nested along each axis)")


# ----------------------------------------------------------------------------- vocabulary


@pytest.mark.parametrize("name, text", [
    ("av", "both streams"), ("audio_only", "audio only (video removed)"),
    ("video_only", "video only (audio removed)"),
    ("miss_0.3", "30% of test utterances lose one whole stream"),
    ("drop_video_0.5", "50% of the video frames are masked at random"),
    ("gap_audio_0.3", "one contiguous masked gap covers 30% of the audio"),
    ("noise_audio_10db", "Gaussian noise on the audio features at 10 dB SNR"),
    ("async_200ms", "the audio is delayed by 200 ms against the other stream"),
    ("miss_a0.3_v0.1", "30% of test utterances lose their audio, 10% their video (never both)"),
])
def test_every_kind_of_condition_is_described_in_words(name, text):
    from study.vocab import parse_condition

    assert parse_condition(name).describe() == text


def test_condition_names_keep_one_decimal_for_tenths_and_whole_levels():
    from study.vocab import condition_name

    assert [condition_name("miss", x) for x in (0.0, 0.3, 1.0, 0.25, 0.05)] == [
        "miss_0.0", "miss_0.3", "miss_1.0", "miss_0.25", "miss_0.05"]
    assert condition_name("noise_audio", 10.0) == "noise_audio_10db"
    assert condition_name("async", 200.0) == "async_200ms"


def test_study_dir_names_its_progress_and_stage_files(tmp_path):
    from study.vocab import StudyDir

    d = StudyDir(str(tmp_path))
    assert d.root == tmp_path and isinstance(d.root, type(tmp_path))
    assert d.progress("search-late-r0") == tmp_path / "progress" / "search-late-r0.json"
    assert d.stage_marker("rerun") == tmp_path / "stages" / "rerun.done"
