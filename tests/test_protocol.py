"""The missing-modality protocol."""
from __future__ import annotations

import numpy as np
import pytest

from study.data.protocol import (
    ProtocolConfig,
    condition_availability,
    epoch_dropout,
    eval_conditions,
    robustness,
    train_availability,
)

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
    names = [n for n, _ in eval_conditions(cfg)]
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


def test_invalid_rate_rejected():
    with pytest.raises(ValueError, match="train_missing_rate must be within"):
        ProtocolConfig(train_missing_rate=1.5)
