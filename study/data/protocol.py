"""The missing-modality protocol: which streams each utterance has, in training and evaluation.

- `train_missing_rate` r: the fraction of training utterances that are unpaired, fixed per
  utterance for a seed. Draws are nested: the utterances unpaired at r=0.3 are a subset of those
  unpaired at r=0.5 (same seed), so a sweep over r compares like with like.
- `audio_only_share`: of the unpaired utterances, the share that keeps audio (the rest keep video).
- `modality_dropout` p: a regulariser; each epoch, each still-paired training utterance loses one
  stream (chosen at random) with probability p, re-drawn every epoch.
- Evaluation conditions: `av`, `audio_only`, `video_only`, and `miss_<rate>`: each utterance loses
  one whole stream with probability rate (seeded). `robustness` = normalised area under the
  metric-vs-test-rate curve. A natively missing stream (has_audio/has_video False in the
  manifest) is missing in every condition; utterances without the stream a condition keeps are
  left out of that condition.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np

TEST_RATES = tuple(round(0.1 * i, 1) for i in range(10))       # 0.0 .. 0.9
NAMED_CONDITIONS = ("av", "audio_only", "video_only")


@dataclass(frozen=True)
class ProtocolConfig:
    train_missing_rate: float = 0.0
    audio_only_share: float = 0.5
    modality_dropout: float = 0.0
    test_rates: tuple[float, ...] = TEST_RATES
    seed: int = 0

    def __post_init__(self):
        for name in ("train_missing_rate", "audio_only_share", "modality_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"protocol.{name} must be within [0, 1], got {value}")
        if any(not 0.0 <= r < 1.0 for r in self.test_rates):
            raise ValueError(f"protocol.test_rates must be within [0, 1), got {self.test_rates}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["test_rates"] = list(self.test_rates)
        return d


def uniforms(utt_ids, seed: int, stream: str) -> np.ndarray:
    """(N,) uniform numbers in [0, 1) fixed by (seed, stream, utt_id), independent of order."""
    out = np.empty(len(utt_ids))
    for i, utt in enumerate(utt_ids):
        digest = hashlib.blake2b(f"{seed}|{stream}|{utt}".encode(), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "little") / 2.0**64
    return out


def drop_one(keep_a: np.ndarray, keep_v: np.ndarray, unpaired: np.ndarray,
             audio_share: np.ndarray | float, u_which: np.ndarray):
    """Remove one stream from each `unpaired` utterance that has both; returns new (has_a, has_v)."""
    paired = keep_a & keep_v & unpaired
    keep_audio = u_which < audio_share
    has_a = keep_a & ~(paired & ~keep_audio)
    has_v = keep_v & ~(paired & keep_audio)
    return has_a, has_v


def train_availability(utt_ids, has_a, has_v, cfg: ProtocolConfig):
    """(has_audio, has_video) bool arrays for the training set under the protocol."""
    unpaired = uniforms(utt_ids, cfg.seed, "train-unpaired") < cfg.train_missing_rate
    which = uniforms(utt_ids, cfg.seed, "train-which")
    return drop_one(np.asarray(has_a, bool), np.asarray(has_v, bool), unpaired,
                    cfg.audio_only_share, which)


def epoch_dropout(n: int, has_a, has_v, cfg: ProtocolConfig, epoch: int):
    """Modality dropout for one epoch, applied on top of train_availability."""
    if cfg.modality_dropout <= 0:
        return np.asarray(has_a, bool), np.asarray(has_v, bool)
    rng = np.random.default_rng([cfg.seed, 7, epoch])
    drop = rng.random(n) < cfg.modality_dropout
    return drop_one(np.asarray(has_a, bool), np.asarray(has_v, bool), drop, 0.5, rng.random(n))


def eval_conditions(cfg: ProtocolConfig) -> list[tuple[str, float | None]]:
    """Every evaluation condition as (name, test_missing_rate or None)."""
    named = [(c, None) for c in NAMED_CONDITIONS]
    return named + [(f"miss_{r:.1f}", float(r)) for r in cfg.test_rates]


def condition_availability(condition: str, utt_ids, has_a, has_v, cfg: ProtocolConfig):
    """(keep, has_audio, has_video): which utterances take part and with which streams."""
    has_a, has_v = np.asarray(has_a, bool), np.asarray(has_v, bool)
    if condition == "av":
        return has_a | has_v, has_a, has_v
    if condition == "audio_only":
        return has_a, has_a, np.zeros_like(has_v)
    if condition == "video_only":
        return has_v, np.zeros_like(has_a), has_v
    if condition.startswith("miss_"):
        rate = float(condition[5:])
        unpaired = uniforms(utt_ids, cfg.seed, f"test-{rate:.1f}") < rate
        which = uniforms(utt_ids, cfg.seed, "test-which")
        a, v = drop_one(has_a, has_v, unpaired, 0.5, which)
        return a | v, a, v
    raise ValueError(f"unknown evaluation condition {condition!r}")


def robustness(rates, scores) -> float:
    """Area under score-vs-rate divided by the rate range: the mean score over the range."""
    rates, scores = np.asarray(rates, float), np.asarray(scores, float)
    if len(rates) < 2 or np.isnan(scores).any():
        return float("nan")
    order = np.argsort(rates)
    return float(np.trapezoid(scores[order], rates[order]) / (rates.max() - rates.min()))
