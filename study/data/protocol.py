"""The missing-modality protocol: which streams and frames each utterance has, in training and
evaluation.

Training:
- `train_missing_rate` r: the fraction of training utterances that are unpaired, fixed per
  utterance for a seed.
- `audio_only_share` s: of the unpaired utterances, the share that keeps audio (the rest keep video).
  Per modality (`missing_rates`, the spec's `train_missing: {audio: p_a, video: p_v}`): p_v = r·s
  of the utterances lose their video, p_a = r·(1−s) their audio, never both. One uniform u per
  utterance: video lost when u < p_v, audio lost when u >= 1 − p_a. The draws are nested in each
  rate: the utterances without video at p_v=0.3 are among those without video at p_v=0.5 (same
  seed, whatever p_a), so a sweep over either rate compares like with like.
- `modality_dropout` p: a regulariser; each epoch, each still-paired training utterance loses one
  stream (chosen at random) with probability p, re-drawn every epoch. With
  `modality_dropout_curriculum` E > 0 the rate rises linearly over the first E epochs to p
  (curriculum modality dropout, as MuteBench, arXiv 2605.15235, evaluates it).
- Frame dropout and noise augmentation (TrainConfig.frame_dropout / noise_aug /
  noise_aug_snr_db) are `augmentation(...)`: a `Perturbation` re-drawn every epoch.

Evaluation conditions (one row each; see README "Missing-modality protocol"):
- `av`, `audio_only`, `video_only`: both streams, or one stream truly removed.
- family `miss`, `miss_<rate>`: each utterance loses one whole stream with probability rate.
  A sample's prediction depends only on its own streams, so these are composed from the three
  passes above (cheap: evaluated on dev every epoch).
- the families of `FAMILIES` with their own forward pass per level (`drop_*`, `gap_*`,
  `noise_*`, `async`): evaluated on dev once per trial from its selected checkpoint and on
  test in the final stage. Which ones run: `ProtocolConfig.families`.
- family `miss_grid`, `miss_a<p_a>_v<p_v>`: p_a of the test utterances lose their audio and p_v
  their video (never both), the same nested draw as training's; composed from the three passes.
  Levels: `grid_audio` x `grid_video`, the pairs with p_a + p_v <= 1.
- `robustness` (miss) and `robustness_<family>`: normalised area under the metric-vs-level curve,
  integrated over the level values.

Every draw is seeded (protocol seed, stream, utterance id; never the level), so the draws are
nested across levels: the utterances missing at 0.3 are among those missing at 0.5, the frames
dropped at 0.3 among those dropped at 0.5, a gap of 0.3 lies inside the gap of 0.5, and the noise
at 20 dB is the 10 dB noise vector scaled down. A natively missing stream (has_audio/has_video
False in the manifest) is missing in every condition; utterances without the stream a condition
keeps are left out of that condition.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np

from study.keys import NON_NEGATIVE, UNIT, UNIT_OPEN, key, problems_of
from study.vocab import (  # noqa: F401 (re-exported: the protocol's conditions)
    EXTRA_FAMILIES,
    FAMILIES,
    GRID,
    GRID_RATES,
    NAMED_CONDITIONS,
    STREAMS,
    TEST_RATES,
    Condition,
    Family,
    area_name,
    condition_name,
    grid_conditions,
    parse_condition,
)


# the vocabulary (condition names, families and what each level does) is study/vocab.py
@dataclass(frozen=True)
class ProtocolConfig:
    """The protocol's keys, each declared with its rule (study/keys.py)."""

    train_missing_rate: float = key(0.0, bound=UNIT, doc="share of training utterances unpaired (data)")
    audio_only_share: float = key(0.5, bound=UNIT, doc="of the unpaired, the share keeping audio (data)")
    modality_dropout: float = key(0.0, bound=UNIT, doc="augmentation: P(a paired utterance loses a stream)")
    modality_dropout_curriculum: int = key(0, bound=NON_NEGATIVE,
                                           doc="augmentation: epochs over which modality_dropout rises "
                                               "linearly to its value (0: constant)")
    test_rates: tuple[float, ...] = key(TEST_RATES, bound=UNIT_OPEN, doc="levels of the miss family")
    families: tuple[str, ...] = key(EXTRA_FAMILIES, choices=EXTRA_FAMILIES,
                                    doc="extra condition families evaluated (FAMILIES)")
    grid_audio: tuple[float, ...] = key(GRID_RATES, bound=UNIT_OPEN,
                                        doc="test grid: audio missing rates (increasing; [] = no grid)")
    grid_video: tuple[float, ...] = key(GRID_RATES, bound=UNIT_OPEN,
                                        doc="test grid: video missing rates (increasing; [] = no grid)")
    seed: int = 0

    def __post_init__(self):
        errors = problems_of(self)
        for name in ("grid_audio", "grid_video"):
            levels = list(getattr(self, name))
            if levels != sorted(set(levels)):
                errors.append(f"{name}: {levels} must be strictly increasing (the grid's draws are "
                              "nested along each axis)")
        if errors:
            raise ValueError("invalid protocol: " + "; ".join(errors))

    @property
    def missing_rates(self) -> tuple[float, float]:
        """(p_a, p_v): the share of training utterances without audio, without video."""
        r, s = self.train_missing_rate, self.audio_only_share
        return r * (1.0 - s), r * s

    def to_dict(self) -> dict:
        d = asdict(self)
        for name in ("test_rates", "families", "grid_audio", "grid_video"):
            d[name] = list(d[name])
        return d


def from_missing_rates(p_audio: float, p_video: float) -> dict:
    """The protocol keys of per-modality training rates: {train_missing_rate, audio_only_share}
    (r = p_a + p_v, s = p_v / r; s = 0.5 when nothing is missing). ValueError naming the rate at
    fault when a rate is outside [0, 1) or p_a + p_v > 1."""
    for name, p in (("audio", p_audio), ("video", p_video)):
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p < 1.0:
            raise ValueError(f"{name}: {p!r} not in [0, 1)")
    r = float(p_audio) + float(p_video)
    if r > 1.0 + 1e-9:
        raise ValueError(f"audio + video = {r:g} > 1 (an utterance never loses both streams)")
    return {"train_missing_rate": r, "audio_only_share": float(p_video) / r if r > 0 else 0.5}


def family_conditions(family: str, levels=None) -> list[Condition]:
    levels = FAMILIES[family].levels if levels is None else levels
    return [Condition(condition_name(family, float(x)), family, float(x)) for x in levels]


def eval_conditions(cfg: ProtocolConfig, extended: bool = False) -> list[Condition]:
    """The evaluation conditions: the named three and `miss_*`, plus, when `extended`, the
    per-modality grid (`miss_grid`) and every level of the families in `cfg.families`."""
    out = [Condition(c) for c in NAMED_CONDITIONS] + family_conditions("miss", cfg.test_rates)
    if extended:
        out += grid_conditions(cfg.grid_audio, cfg.grid_video)
        out += [c for f in cfg.families for c in family_conditions(f)]
    return out


# ----------------------------------------------------------------------------- seeded draws


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def uniforms(utt_ids, seed: int | str, stream: str) -> np.ndarray:
    """(N,) uniform numbers in [0, 1) fixed by (seed, stream, utt_id), independent of order."""
    return np.array([_hash(f"{seed}|{stream}|{utt}") / 2.0**64 for utt in utt_ids], dtype=float)


def _rng(key: str, stream: str, what: str, utt: str) -> np.random.Generator:
    return np.random.default_rng(_hash(f"{key}|{stream}|{what}|{utt}"))


# ----------------------------------------------------------------------------- whole streams


def drop_one(keep_a: np.ndarray, keep_v: np.ndarray, unpaired: np.ndarray,
             audio_share: np.ndarray | float, u_which: np.ndarray):
    """Remove one stream from each `unpaired` utterance that has both; returns new (has_a, has_v)."""
    paired = keep_a & keep_v & unpaired
    keep_audio = u_which < audio_share
    has_a = keep_a & ~(paired & ~keep_audio)
    has_v = keep_v & ~(paired & keep_audio)
    return has_a, has_v


def per_modality_loss(u: np.ndarray, p_audio: float, p_video: float) -> tuple[np.ndarray, np.ndarray]:
    """(lose_audio, lose_video) from one uniform per utterance: video lost when u < p_v, audio
    when u >= 1 - p_a (disjoint while p_a + p_v <= 1; nested in each rate)."""
    return u >= 1.0 - p_audio, u < p_video


def keep_streams(has_a, has_v, lose_a: np.ndarray, lose_v: np.ndarray):
    """(has_a, has_v) after the losses, applied only where the utterance has both streams."""
    has_a, has_v = np.asarray(has_a, bool), np.asarray(has_v, bool)
    paired = has_a & has_v
    return has_a & ~(paired & lose_a), has_v & ~(paired & lose_v)


def train_availability(utt_ids, has_a, has_v, cfg: ProtocolConfig):
    """(has_audio, has_video) bool arrays for the training set under the protocol."""
    lose_a, lose_v = per_modality_loss(uniforms(utt_ids, cfg.seed, "train-unpaired"), *cfg.missing_rates)
    return keep_streams(has_a, has_v, lose_a, lose_v)


def dropout_rate(cfg: ProtocolConfig, epoch: int) -> float:
    """This epoch's modality dropout rate: constant, or rising linearly over the first
    `modality_dropout_curriculum` epochs (epoch 0 -> p/E, epoch E-1 and after -> p)."""
    if cfg.modality_dropout_curriculum <= 0:
        return cfg.modality_dropout
    return cfg.modality_dropout * min(1.0, (epoch + 1) / cfg.modality_dropout_curriculum)


def epoch_dropout(n: int, has_a, has_v, cfg: ProtocolConfig, epoch: int):
    """Modality dropout for one epoch, applied on top of train_availability."""
    rate = dropout_rate(cfg, epoch)
    if rate <= 0:
        return np.asarray(has_a, bool), np.asarray(has_v, bool)
    rng = np.random.default_rng([cfg.seed, 7, epoch])
    drop = rng.random(n) < rate
    return drop_one(np.asarray(has_a, bool), np.asarray(has_v, bool), drop, 0.5, rng.random(n))


def condition_availability(condition: str | Condition, utt_ids, has_a, has_v, cfg: ProtocolConfig):
    """(keep, has_audio, has_video): which utterances take part and with which streams."""
    cond = parse_condition(condition) if isinstance(condition, str) else condition
    has_a, has_v = np.asarray(has_a, bool), np.asarray(has_v, bool)
    if cond.name == "audio_only":
        return has_a, has_a, np.zeros_like(has_v)
    if cond.name == "video_only":
        return has_v, np.zeros_like(has_a), has_v
    if cond.family == "miss":
        # one uniform per utterance, compared with the rate: nested in the rate
        unpaired = uniforms(utt_ids, cfg.seed, "test-unpaired") < cond.level
        which = uniforms(utt_ids, cfg.seed, "test-which")
        a, v = drop_one(has_a, has_v, unpaired, 0.5, which)
        return a | v, a, v
    if cond.family == GRID:
        u = uniforms(utt_ids, cfg.seed, "test-grid")
        a, v = keep_streams(has_a, has_v, *per_modality_loss(u, cond.level, cond.level_video))
        return a | v, a, v
    return has_a | has_v, has_a, has_v  # av, and the frame-level families (both streams kept)


# ----------------------------------------------------------------------------- frame level


@dataclass(frozen=True)
class StreamChange:
    """What a condition (or an epoch's augmentation) does to one stream's frames."""
    drop: float = 0.0              # share of frames masked at random
    gap: float = 0.0               # share of frames masked in one contiguous block
    snr_db: float | None = None    # additive Gaussian noise at this SNR (None: no noise)
    noise_share: float = 1.0       # share of utterances that get the noise (augmentation)
    delay_ms: float = 0.0          # content shifted later by this much; leading frames masked

    @property
    def identity(self) -> bool:
        return (self.drop <= 0 and self.gap <= 0 and self.delay_ms <= 0
                and (self.snr_db is None or self.noise_share <= 0))


@dataclass(frozen=True)
class Perturbation:
    """Per-stream frame changes; `key` seeds every draw (same key, same draws at any level)."""
    key: str
    audio: StreamChange = StreamChange()
    video: StreamChange = StreamChange()

    @property
    def identity(self) -> bool:
        return self.audio.identity and self.video.identity


def condition_perturbation(cond: Condition, cfg: ProtocolConfig) -> Perturbation | None:
    """The frame changes of a frame-level condition; None for the whole-stream conditions."""
    if cond.cheap:
        return None
    fam = FAMILIES[cond.family]
    change = {"drop": StreamChange(drop=cond.level), "gap": StreamChange(gap=cond.level),
              "noise": StreamChange(snr_db=cond.level),
              "shift": StreamChange(delay_ms=cond.level)}[fam.kind]
    return Perturbation(f"eval|{cfg.seed}", **{fam.stream: change})


def augmentation(frame_dropout: float, noise_share: float, snr_db: float, seed: int,
                 epoch: int) -> Perturbation | None:
    """One epoch's frame dropout and noise augmentation on both streams (None when off)."""
    change = StreamChange(drop=frame_dropout, snr_db=snr_db if noise_share > 0 else None,
                          noise_share=noise_share)
    if change.identity:
        return None
    return Perturbation(f"train|{seed}|{epoch}", audio=change, video=change)


def perturb_frames(x: np.ndarray, utt: str, stream: str, p: Perturbation, rate_hz: float,
                   scale: np.ndarray | float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Apply p's change of `stream` to one utterance's (T, D) frames.

    Returns (x', keep): x' (T, D) float32 with masked frames zeroed, keep (T,) bool, True = real
    frame. At least one frame is always kept. `scale` is the training-set feature std (per
    dimension, or 1.0 for z-scored features): the noise at s dB has std scale * 10^(-s/20).
    """
    c: StreamChange = getattr(p, stream)
    x = np.array(x, dtype=np.float32)               # (T, D) copy
    t = len(x)
    keep = np.ones(t, bool)
    if t == 0 or c.identity:
        return x, keep
    if c.snr_db is not None and _hash(f"{p.key}|{stream}|noise-pick|{utt}") / 2.0**64 < c.noise_share:
        noise = _rng(p.key, stream, "noise", utt).standard_normal(x.shape)  # (T, D), any SNR
        x += (np.asarray(scale, np.float32) * 10.0 ** (-c.snr_db / 20.0) * noise).astype(np.float32)
    if c.delay_ms > 0:
        k = min(int(round(c.delay_ms / 1000.0 * rate_hz)), t - 1)
        x[k:] = x[:t - k].copy()
        keep[:k] = False
    if c.gap > 0:
        length = min(int(np.floor(c.gap * t + 0.5)), t - 1)
        anchor = _hash(f"{p.key}|{stream}|gap|{utt}") / 2.0**64
        start = int(np.floor(anchor * (t - length)))     # nested: a shorter gap lies inside a longer
        keep[start:start + length] = False
    structural = keep.copy()
    if c.drop > 0:
        u = _rng(p.key, stream, "drop", utt).random(t)   # (T,) one uniform per frame, any rate
        keep &= u >= c.drop
        if not keep.any():                                # the frame dropped last stays
            keep[np.where(structural, u, -1.0).argmax()] = True
    x[~keep] = 0.0  # the delay and the gap never reach the last frame: one always stays
    return x, keep


# ----------------------------------------------------------------------------- areas


def robustness(rates, scores) -> float:
    """Area under score-vs-level divided by the level range: the mean score over the range.

    Integrated over the level values (trapezoid), so an uneven grid weighs each interval by its
    width; the order of the levels does not matter.
    """
    rates, scores = np.asarray(rates, float), np.asarray(scores, float)
    if len(rates) < 2 or np.isnan(scores).any() or rates.max() == rates.min():
        return float("nan")
    order = np.argsort(rates)
    return float(np.trapezoid(scores[order], rates[order]) / (rates.max() - rates.min()))


def area_families(plan) -> list[str]:
    """The families of an evaluation plan that get an area row (every family with a level axis;
    the per-modality grid is two-dimensional: its heatmap, no area)."""
    return list(dict.fromkeys(c.family for c in plan if c.family and c.family != GRID))


robustness_name = area_name  # one rule for an area row's name (study/vocab.py)
