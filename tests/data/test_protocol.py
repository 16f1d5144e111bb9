"""The missing-modality protocol."""
from __future__ import annotations

import numpy as np
import pytest

from study.data.protocol import (
    EXTRA_FAMILIES,
    FAMILIES,
    Condition,
    ProtocolConfig,
    condition_availability,
    condition_name,
    dropout_rate,
    epoch_dropout,
    eval_conditions,
    from_missing_rates,
    parse_condition,
    robustness,
    robustness_name,
    train_availability,
)
from study.training.config import config_from_flat

IDS = [f"utt{i}" for i in range(4000)]
ONES = np.ones(len(IDS), bool)


def test_train_missing_rate_and_share():
    cfg = ProtocolConfig(train_missing_rate=0.5, audio_only_share=0.25, seed=1)
    a, v = train_availability(IDS, ONES, ONES, cfg)
    unpaired = ~(a & v)
    assert abs(unpaired.mean() - 0.5) < 0.03
    assert abs((a & ~v)[unpaired].mean() - 0.25) < 0.04                 # audio-only share
    assert (a | v).all()


def test_fixed_per_utterance_and_nested():
    lo = train_availability(IDS, ONES, ONES, ProtocolConfig(train_missing_rate=0.3, seed=2))
    hi = train_availability(IDS, ONES, ONES, ProtocolConfig(train_missing_rate=0.6, seed=2))
    again = train_availability(IDS[::-1], ONES, ONES, ProtocolConfig(train_missing_rate=0.3, seed=2))
    assert (again[0][::-1] == lo[0]).all()                               # order independent
    unpaired_lo, unpaired_hi = ~(lo[0] & lo[1]), ~(hi[0] & hi[1])
    assert (unpaired_hi[unpaired_lo]).all()                              # nested in r
    other = train_availability(IDS, ONES, ONES, ProtocolConfig(train_missing_rate=0.3, seed=3))
    assert (other[0] != lo[0]).any()


def test_natively_missing_stays_missing():
    has_v = ONES.copy()
    has_v[:10] = False
    a, v = train_availability(IDS, ONES, has_v, ProtocolConfig(train_missing_rate=0.9))
    assert not v[:10].any() and a[:10].all()


def test_modality_dropout_redrawn_each_epoch():
    cfg = ProtocolConfig(modality_dropout=0.2)
    a0, v0 = epoch_dropout(len(IDS), ONES, ONES, cfg, 0)
    a1, v1 = epoch_dropout(len(IDS), ONES, ONES, cfg, 1)
    assert abs((~(a0 & v0)).mean() - 0.2) < 0.03
    assert (a0 != a1).any()
    assert (epoch_dropout(len(IDS), ONES, ONES, ProtocolConfig(), 0)[0] == ONES).all()


def test_conditions():
    cfg = ProtocolConfig(seed=4)
    names = [c.name for c in eval_conditions(cfg)]
    assert names[:3] == ["av", "audio_only", "video_only"] and names[-1] == "miss_0.9"
    keep, a, v = condition_availability("audio_only", IDS, ONES, ONES, cfg)
    assert a.all() and not v.any() and keep.all()
    keep, a, v = condition_availability("miss_0.4", IDS, ONES, ONES, cfg)
    assert abs((~(a & v)).mean() - 0.4) < 0.03 and keep.all()
    keep, a, v = condition_availability("miss_0.0", IDS, ONES, ONES, cfg)
    assert (a & v).all()
    with pytest.raises(ValueError, match="unknown evaluation condition"):
        condition_availability("both", IDS, ONES, ONES, cfg)


def test_robustness_area():
    assert robustness([0.0, 0.5, 1.0], [1.0, 0.5, 0.0]) == pytest.approx(0.5)
    assert robustness([0.0, 0.9], [0.6, 0.6]) == pytest.approx(0.6)


def test_robustness_integrates_over_level_values_not_index():
    # uneven grid: by value 0.1 * 1 + 0.9 * 0.5 = 0.55; by list index it would be 0.75
    assert robustness([0.0, 0.1, 1.0], [1.0, 1.0, 0.0]) == pytest.approx(0.55)
    # SNR levels listed high to low: order does not matter, the range normalises
    assert robustness([20.0, 10.0, 0.0], [0.9, 0.6, 0.3]) == pytest.approx(0.6)
    assert robustness([20.0, 5.0, 0.0], [0.9, 0.9, 0.3]) == pytest.approx((15 * 0.9 + 5 * 0.6) / 20)
    assert np.isnan(robustness([0.3], [0.5])) and np.isnan(robustness([0.0, 0.5], [0.5, np.nan]))


def test_miss_draws_nested_across_rates():
    cfg = ProtocolConfig(seed=5)
    out = {r: condition_availability(f"miss_{r:.1f}", IDS, ONES, ONES, cfg) for r in (0.3, 0.5, 0.9)}
    for lo, hi in ((0.3, 0.5), (0.5, 0.9)):
        _, a_lo, v_lo = out[lo]
        _, a_hi, v_hi = out[hi]
        assert (~a_hi[~a_lo]).all() and (~v_hi[~v_lo]).all()      # same stream lost, and more
        assert (~(a_hi & v_hi)).sum() > (~(a_lo & v_lo)).sum()
    again = condition_availability("miss_0.3", IDS[::-1], ONES, ONES, cfg)
    assert (again[1][::-1] == out[0.3][1]).all()                         # seeded per utterance
    other = condition_availability("miss_0.3", IDS, ONES, ONES, ProtocolConfig(seed=6))
    assert (other[1] != out[0.3][1]).any()


def test_family_table_names_and_parsing():
    cfg = ProtocolConfig()
    assert cfg.families == EXTRA_FAMILIES and "miss" not in EXTRA_FAMILIES
    conds = eval_conditions(cfg, extended=True)
    grid = 8  # (0, .3, .6) x (0, .3, .6) without (.6, .6): an utterance never loses both streams
    assert len(conds) == 3 + len(cfg.test_rates) + grid + sum(len(FAMILIES[f].levels) for f in EXTRA_FAMILIES)
    assert parse_condition("miss_a0.3_v0.6") == Condition("miss_a0.3_v0.6", "miss_grid", 0.3, 0.6)
    assert parse_condition("miss_a0.3_v0.6").cheap
    assert [c.name for c in eval_conditions(cfg)] == [c.name for c in conds[:13]]  # cheap first
    assert condition_name("drop_audio", 0.3) == "drop_audio_0.3"
    assert condition_name("gap_video", 0.25) == "gap_video_0.25"
    assert condition_name("noise_audio", 10.0) == "noise_audio_10db"
    assert condition_name("async", 200.0) == "async_200ms"
    for c in conds:
        assert parse_condition(c.name) == c
    assert parse_condition("noise_video_-5db") == Condition("noise_video_-5db", "noise_video", -5.0)
    assert parse_condition("miss_0.3").test_missing_rate == 0.3
    assert parse_condition("drop_audio_0.3").test_missing_rate is None
    assert not parse_condition("async_100ms").cheap and parse_condition("miss_0.1").cheap
    assert robustness_name("miss") == "robustness" and robustness_name("async") == "robustness_async"
    with pytest.raises(ValueError, match="unknown evaluation condition 'drop_audio_x'"):
        parse_condition("drop_audio_x")


def test_families_chosen_by_config():
    cfg = ProtocolConfig(families=("async", "noise_video"))
    names = {c.family for c in eval_conditions(cfg, extended=True)}
    assert names == {None, "miss", "miss_grid", "async", "noise_video"}
    none = ProtocolConfig(families=(), grid_audio=(), grid_video=())
    assert {c.family for c in eval_conditions(none, extended=True)} == {None, "miss"}
    flat = config_from_flat({"preset": "tiny", "families": ["gap_audio"]})
    assert flat.protocol.families == ("gap_audio",)
    assert config_from_flat(flat.to_flat()) == flat                    # survives the flat dict
    with pytest.raises(ValueError, match=r"families\[0\]: 'drop_both' not one of"):
        ProtocolConfig(families=("drop_both",))


def test_frame_level_conditions_keep_every_stream():
    has_v = ONES.copy()
    has_v[:5] = False
    keep, a, v = condition_availability("drop_video_0.5", IDS, ONES, has_v, ProtocolConfig())
    assert keep.all() and a.all() and (v == has_v).all()


def test_invalid_rate_rejected():
    with pytest.raises(ValueError, match=r"train_missing_rate: must be in \[0, 1\]"):
        ProtocolConfig(train_missing_rate=1.5)


# ----------------------------------------------------------------------------- per-modality rates

def test_per_modality_training_rates_realised_and_nested():
    ids = [f"u{i:05d}" for i in range(20000)]
    ones = np.ones(len(ids), bool)
    lost = {}
    for pa, pv in [(0.1, 0.6), (0.1, 0.3), (0.3, 0.3), (0.0, 0.0)]:
        cfg = ProtocolConfig(**from_missing_rates(pa, pv))
        assert cfg.missing_rates == pytest.approx((pa, pv))
        a, v = train_availability(ids, ones, ones, cfg)
        assert (a | v).all()                                   # never both streams lost
        assert np.mean(~a) == pytest.approx(pa, abs=0.01) and np.mean(~v) == pytest.approx(pv, abs=0.01)
        lost[pa, pv] = (~a, ~v)
    # nested in each rate: fewer lost videos at 0.3 are among those lost at 0.6 (audio rate fixed)
    assert not (lost[0.1, 0.3][1] & ~lost[0.1, 0.6][1]).any()
    assert not (lost[0.1, 0.3][0] & ~lost[0.3, 0.3][0]).any()
    assert not lost[0.0, 0.0][0].any() and not lost[0.0, 0.0][1].any()
    # the shared-rate keys are the special case {audio: r(1-s), video: r s}
    assert ProtocolConfig(train_missing_rate=0.5, audio_only_share=0.2).missing_rates == pytest.approx((0.4, 0.1))
    assert from_missing_rates(0.0, 0.0) == {"train_missing_rate": 0.0, "audio_only_share": 0.5}
    # a natively missing stream stays missing; the loss never takes the other one
    has_v = ones.copy()
    has_v[:10] = False
    a, v = train_availability(ids, ones, has_v, ProtocolConfig(**from_missing_rates(0.9, 0.0)))
    assert a[:10].all() and not v[:10].any()


@pytest.mark.parametrize("pa, pv, why", [(1.0, 0.0, "audio: 1.0 not in"), (-0.1, 0.0, "audio: -0.1"),
                                         (0.0, 1.2, "video: 1.2"), (0.6, 0.5, "audio \\+ video = 1.1 > 1"),
                                         ("x", 0.1, "audio: 'x'")])
def test_per_modality_rates_refused(pa, pv, why):
    with pytest.raises(ValueError, match=why):
        from_missing_rates(pa, pv)


def test_grid_conditions_rates_and_nesting():
    ids = [f"t{i:05d}" for i in range(20000)]
    ones = np.ones(len(ids), bool)
    cfg = ProtocolConfig(grid_audio=(0.0, 0.2, 0.5), grid_video=(0.1, 0.5))
    grid = [c for c in eval_conditions(cfg, extended=True) if c.family == "miss_grid"]
    assert [c.name for c in grid] == ["miss_a0_v0.1", "miss_a0_v0.5", "miss_a0.2_v0.1", "miss_a0.2_v0.5",
                                      "miss_a0.5_v0.1", "miss_a0.5_v0.5"]
    out = {}
    for c in grid:
        keep, a, v = condition_availability(c, ids, ones, ones, cfg)
        assert keep.all() and (a | v).all()
        assert np.mean(~a) == pytest.approx(c.level, abs=0.01)
        assert np.mean(~v) == pytest.approx(c.level_video, abs=0.01)
        out[c.level, c.level_video] = (~a, ~v)
    assert not (out[0.2, 0.1][0] & ~out[0.5, 0.1][0]).any()         # nested along the audio axis
    assert not (out[0.2, 0.1][1] & ~out[0.2, 0.5][1]).any()         # and along the video axis
    assert "never both" in grid[0].describe()
    for bad in [(0.3, 0.1), (0.1, 0.1)]:
        with pytest.raises(ValueError, match=r"grid_audio: .* strictly increasing"):
            ProtocolConfig(grid_audio=bad)
    with pytest.raises(ValueError, match=r"grid_video\[0\]"):
        ProtocolConfig(grid_video=(1.0,))


def test_curriculum_dropout_rises_to_its_maximum():
    cfg = ProtocolConfig(modality_dropout=0.4, modality_dropout_curriculum=4)
    assert [dropout_rate(cfg, e) for e in range(6)] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4, 0.4])
    assert dropout_rate(ProtocolConfig(modality_dropout=0.4), 0) == 0.4
    n = 40000
    ones = np.ones(n, bool)
    for e, want in [(0, 0.1), (3, 0.4)]:
        a, v = epoch_dropout(n, ones, ones, cfg, e)
        assert np.mean(a != v) == pytest.approx(want, abs=0.01)     # realised, not configured
