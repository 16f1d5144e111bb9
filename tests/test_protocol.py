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
    epoch_dropout,
    eval_conditions,
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
    assert len(conds) == 3 + len(cfg.test_rates) + sum(len(FAMILIES[f].levels) for f in EXTRA_FAMILIES)
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
    assert names == {None, "miss", "async", "noise_video"}
    assert {c.family for c in eval_conditions(ProtocolConfig(families=()), extended=True)} == {None, "miss"}
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
