"""Synthetic corpora, so studies run with no download (design and expected results: docs/synthetic.md).

Presets (`PRESETS`):
- `crema-d`: behaves like CREMA-D. Per utterance (deterministic for (seed, utterance index)):
  an *intended* emotion (the one the actor was asked for, in the file name as in CREMA-D) drawn
  with CREMA-D's class balance, an intensity level and a clarity; 6-12 simulated raters perceive
  it (per-rater accuracy ~0.64, CREMA-D's audio-visual figure) and confuse it with similar
  emotions, so the soft label is their vote share and the hard label is the consensus, which
  differs from the intended emotion on ambiguous clips. Frame features = speaker identity +
  sentence content + emotion evidence in 1-3 time segments (onset, peak, decay) + noise, in a
  small latent space, mapped to feature scales like real extractors' (log-mel dB around -50..-80
  or wav2vec2-like activations for audio, pixel-like intensities in [0, 1] with per-dimension
  std down to 0.003 for video), with speaker (identity, expressiveness, channel) and recording
  session (gain, spectral tilt, lighting) effects. A pipeline that forgets to normalise fails.
- `known-answer`, `known-interaction`: corpora whose right answer is set by construction
  (study/data/known_answer.py).

`study/data/generate.py` holds the table of presets and `make_corpus`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

# Bump whenever any preset's output changes: the per-node cache directory carries it
# (study/runs/spec.py data_location), so a stale corpus is never reused.
GENERATOR_VERSION = 2

CLASSES = ("angry", "sad", "disgust", "fear", "neutral", "happy")   # CREMA-D consensus file order
# Share of each class among CREMA-D consensus labels (argmax of label_consensus_1.csv).
CLASS_BALANCE = {"angry": 0.152, "sad": 0.066, "disgust": 0.149, "fear": 0.147,
                 "neutral": 0.280, "happy": 0.204}
# Intended emotions are drawn so that, after the raters' confusions (which drift towards neutral),
# the consensus labels follow CLASS_BALANCE.
INTENDED_BALANCE = {"angry": 0.15, "sad": 0.07, "disgust": 0.144, "fear": 0.171, "neutral": 0.25,
                    "happy": 0.215}
# Strength of each class's evidence per modality.
AUDIO_STRENGTH = {"angry": 1.0, "sad": 1.0, "disgust": 0.35, "fear": 0.75, "neutral": 0.5, "happy": 0.4}
VIDEO_STRENGTH = {"angry": 0.5, "sad": 0.35, "disgust": 1.0, "fear": 0.5, "neutral": 0.5, "happy": 1.0}
# Which emotions raters confuse (symmetric affinities; a confused rater picks j with probability
# proportional to balance_j * affinity, so confusions roughly keep the class balance).
CONFUSABLE = {("angry", "disgust"): 3.0, ("sad", "fear"): 2.0, ("sad", "neutral"): 3.0,
              ("fear", "neutral"): 1.5, ("happy", "neutral"): 2.0, ("disgust", "neutral"): 2.0,
              ("angry", "fear"): 1.0, ("disgust", "sad"): 1.0}
# Typical (arousal, valence, dominance) on a 1..5 scale.
AVD_MEAN = {"angry": (4.0, 1.6, 3.9), "sad": (1.8, 1.7, 2.0), "disgust": (3.0, 1.8, 3.3),
            "fear": (3.8, 1.9, 1.9), "neutral": (2.4, 3.0, 3.0), "happy": (3.7, 4.2, 3.5)}
SENTENCES = ("IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI")
LEVELS = ("LO", "MD", "HI", "XX")
LEVEL_GAIN = np.array([0.6, 0.85, 1.2, 0.85])        # LO/MD/HI/XX (unspecified)
LATENT = 16
SESSIONS_PER_SPEAKER = 2


@dataclass(frozen=True)
class SynthScale:
    n_speakers: int
    n_utterances: int
    audio_dim: int
    video_dim: int
    audio_hz: float
    video_hz: float
    speakers_per_split: tuple[int, int, int]     # train, dev, test
    noise: float
    audio_style: str = "logmel"                  # "logmel" (dB) | "wav2vec2" (activations)
    evidence: float = 1.0                        # emotion evidence gain (crema-d preset)


SCALES = {
    # tiny is for tests: 240 training utterances learnt in a few epochs, so its evidence is stronger
    "tiny": SynthScale(24, 360, 32, 24, 20.0, 10.0, (16, 4, 4), 1.0, evidence=1.6),
    "small": SynthScale(91, 2400, 64, 48, 25.0, 15.0, (63, 14, 14), 1.0),
    "full": SynthScale(91, 7442, 1024, 1408, 50.0, 30.0, (63, 14, 14), 1.0, "wav2vec2"),
}


@dataclass(frozen=True)
class Preset:
    """One synthetic corpus family: how to draw its shared world, its manifest and its frames."""
    world: Callable          # (SynthScale, seed) -> world object
    manifest: Callable       # (SynthScale, seed) -> DataFrame (private columns start with "_")
    utterance: Callable      # (world, SynthScale, seed, i, row) -> (utt_id, (Ta, Da), (Tv, Dv))
    meta: Callable           # (SynthScale, scale, seed) -> dataset.json dict


def stream_meta(sc: SynthScale, audio_extractor: str, video_extractor: str) -> dict:
    return {"audio": {"dim": sc.audio_dim, "rate_hz": sc.audio_hz, "extractor": audio_extractor,
                      "dtype": "float16"},
            "video": {"dim": sc.video_dim, "rate_hz": sc.video_hz, "extractor": video_extractor,
                      "dtype": "float16"}}


def _meta(sc: SynthScale, scale: str, seed: int) -> dict:
    return {
        "name": f"synth-crema-d-{scale}",
        "classes": list(CLASSES),
        "dimensions": ["arousal", "valence", "dominance"],
        **stream_meta(sc, f"synthetic-{sc.audio_style}", "synthetic-pixels"),
        "provenance": {"source": "avstudy synth", "preset": "crema-d", "scale": scale,
                       "seed": seed, "generator_version": GENERATOR_VERSION},
    }


# ----------------------------------------------------------------------------- the world


@dataclass(frozen=True)
class _World:
    """Everything shared by all utterances of one corpus (drawn once from the seed)."""
    proto_a: np.ndarray      # (C, L) audio emotion directions
    proto_v: np.ndarray      # (C, L)
    speaker_a: np.ndarray    # (S, L) identity in the latent space
    speaker_v: np.ndarray    # (S, L)
    speaker_style: np.ndarray  # (S, C, L) a speaker's own way of showing each emotion
    speaker_gain: np.ndarray   # (S,) expressiveness
    sentence: np.ndarray     # (n_sentences, 8, L) content trajectory control points
    proj_a: np.ndarray       # (L, Da)
    proj_v: np.ndarray       # (L, Dv)
    avd_a: np.ndarray        # (3, L) where arousal/valence/dominance deviations show in audio
    avd_v: np.ndarray        # (3, L)
    audio_scale: FeatureScale
    video_scale: FeatureScale


@dataclass(frozen=True)
class FeatureScale:
    """Maps tanh activations h in (-1, 1) to an extractor's value range, with nuisance offsets."""
    base: np.ndarray         # (D,) typical value per dimension
    spread: np.ndarray       # (D,) how far h moves each dimension
    speaker: np.ndarray      # (S, D) speaker channel / face appearance offset
    session: np.ndarray      # (S, SESSIONS_PER_SPEAKER, D) recording gain, tilt, lighting
    utterance_sd: float      # per-utterance offset shared by all dimensions (loudness, exposure)
    lo: float = -np.inf
    hi: float = np.inf

    def apply(self, rng: np.random.Generator, h: np.ndarray, spk: int, session: int) -> np.ndarray:
        offset = self.speaker[spk] + self.session[spk, session] + rng.normal(scale=self.utterance_sd)
        return np.clip(self.base + offset + self.spread * h, self.lo, self.hi)      # (T, D)


def _make_world(sc: SynthScale, seed: int) -> _World:
    rng = np.random.default_rng([seed, 0])
    c, s = len(CLASSES), sc.n_speakers
    unit = lambda n: _normalise(rng.normal(size=(n, LATENT)))
    return _World(
        proto_a=unit(c) * 1.5, proto_v=unit(c) * 1.5,
        speaker_a=rng.normal(size=(s, LATENT)) * 0.4,
        speaker_v=rng.normal(size=(s, LATENT)) * 0.4,
        speaker_style=rng.normal(size=(s, c, LATENT)) * 0.2,
        speaker_gain=rng.lognormal(0.0, 0.3, size=s),
        sentence=rng.normal(size=(len(SENTENCES), 8, LATENT)) * 0.8,
        proj_a=rng.normal(size=(LATENT, sc.audio_dim)) / np.sqrt(LATENT),
        proj_v=rng.normal(size=(LATENT, sc.video_dim)) / np.sqrt(LATENT),
        avd_a=unit(3), avd_v=unit(3),
        audio_scale=(_logmel_scale if sc.audio_style == "logmel" else _wav2vec2_scale)(rng, sc),
        video_scale=_pixel_scale(rng, sc),
    )


def _logmel_scale(rng: np.random.Generator, sc: SynthScale) -> FeatureScale:
    """Log-mel-like dB: bands from about -50 dB (low) to -80 dB (high), a few dB of movement."""
    d, s = sc.audio_dim, sc.n_speakers
    band = np.linspace(0.0, 1.0, d)
    tilt = rng.normal(scale=2.0, size=(s, SESSIONS_PER_SPEAKER, 1)) * (band - 0.5)   # dB per session
    return FeatureScale(
        base=-50.0 - 30.0 * band + rng.normal(scale=2.0, size=d),
        spread=rng.uniform(2.0, 6.0, size=d),
        speaker=rng.normal(scale=2.5, size=(s, d)),
        session=tilt + rng.normal(scale=1.5, size=(s, SESSIONS_PER_SPEAKER, 1)),
        utterance_sd=3.0)


def _wav2vec2_scale(rng: np.random.Generator, sc: SynthScale) -> FeatureScale:
    """wav2vec2-like activations: most dimensions ~0.3 wide around 0, a few outlier dimensions
    with offsets of 5-15 and much wider movement (as in the large models' hidden states)."""
    d, s = sc.audio_dim, sc.n_speakers
    base, spread = rng.normal(scale=0.05, size=d), rng.uniform(0.15, 0.4, size=d)
    outliers = rng.choice(d, size=max(2, d // 200), replace=False)
    base[outliers] = rng.choice([-1.0, 1.0], size=len(outliers)) * rng.uniform(5, 15, size=len(outliers))
    spread[outliers] *= 10.0
    return FeatureScale(base=base, spread=spread, speaker=rng.normal(scale=0.05, size=(s, d)),
                        session=rng.normal(scale=0.03, size=(s, SESSIONS_PER_SPEAKER, d)),
                        utterance_sd=0.02)


def _pixel_scale(rng: np.random.Generator, sc: SynthScale) -> FeatureScale:
    """Pixel-like intensities in [0, 1]; per-dimension movement from 0.003 to 0.06."""
    d, s = sc.video_dim, sc.n_speakers
    light = rng.uniform(0.5, 1.5, size=d)                            # how much lighting reaches a dim
    spread = rng.permutation(np.geomspace(0.003, 0.06, d))
    return FeatureScale(
        base=rng.uniform(0.2, 0.8, size=d), spread=spread,
        speaker=rng.normal(scale=0.7, size=(s, d)) * spread,      # appearance moves with the dim
        session=rng.normal(scale=0.5, size=(s, SESSIONS_PER_SPEAKER, 1)) * light * spread,
        utterance_sd=0.0005, lo=0.0, hi=1.0)


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# ----------------------------------------------------------------------------- manifest & labels


def _make_manifest(sc: SynthScale, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng([seed, 1])
    speakers = [str(1001 + i) for i in range(sc.n_speakers)]
    split_of = speaker_splits(rng, speakers, sc.speakers_per_split)
    gender = {s: ("Female" if rng.random() < 0.47 else "Male") for s in speakers}
    n = sc.n_utterances
    spk = rng.integers(0, sc.n_speakers, size=n)
    intended = rng.choice(len(CLASSES), size=n, p=_balance(INTENDED_BALANCE))
    sentence = rng.integers(0, len(SENTENCES), size=n)
    level = rng.choice(len(LEVELS), size=n, p=(0.1, 0.1, 0.1, 0.7))
    clarity = np.clip(rng.beta(4.0, 2.0, size=n) * LEVEL_GAIN[level] / 0.85, 0.05, 1.0)
    votes = np.stack([_votes(rng, k, c) for k, c in zip(intended, clarity)])    # (N, C) counts
    soft = soft_from_votes(votes)                                               # (N, C)
    avd = _avd(rng, intended, level)                                            # (N, 3)
    rows = {
        "utt_id": [f"{speakers[s]}_{SENTENCES[t]}_{CLASSES[k][:3].upper()}_{LEVELS[lv]}_{i:05d}"
                   for i, (s, t, k, lv) in enumerate(zip(spk, sentence, intended, level))],
        "speaker": [speakers[s] for s in spk],
        "split": [split_of[speakers[s]] for s in spk],
        "gender": [gender[speakers[s]] for s in spk],
        "sentence": [SENTENCES[t] for t in sentence],
        "level": [LEVELS[lv] for lv in level],
        "session": rng.integers(0, SESSIONS_PER_SPEAKER, size=n),
        "intended": [CLASSES[k] for k in intended],
        "label": [CLASSES[k] for k in soft.argmax(1)],
    }
    df = pd.DataFrame(rows)
    for j, c in enumerate(CLASSES):
        df[f"soft_{c}"] = soft[:, j]
    df[["arousal", "valence", "dominance"]] = avd
    df["has_audio"] = True
    df["has_video"] = True
    df["_clarity"] = clarity
    return df


def speaker_splits(rng: np.random.Generator, speakers: list[str], sizes: tuple[int, int, int]) -> dict:
    """Speaker-independent train/dev/test assignment of sizes[0], sizes[1], rest speakers."""
    order = rng.permutation(len(speakers))
    n_tr, n_dev, _ = sizes
    return {speakers[j]: ("train" if k < n_tr else "dev" if k < n_tr + n_dev else "test")
            for k, j in enumerate(order)}


def _balance(balance: dict = CLASS_BALANCE) -> np.ndarray:
    p = np.array([balance[c] for c in CLASSES])
    return p / p.sum()


def _confusion() -> np.ndarray:
    """(C, C) where a rater who misses emotion k lands: rows sum to 1, zero diagonal."""
    c = len(CLASSES)
    aff = np.full((c, c), 0.3)
    for (a, b), w in CONFUSABLE.items():
        i, j = CLASSES.index(a), CLASSES.index(b)
        aff[i, j] = aff[j, i] = w
    np.fill_diagonal(aff, 0.0)
    m = aff * _balance()[None, :]
    return m / m.sum(1, keepdims=True)


_CONFUSION = _confusion()


def _votes(rng: np.random.Generator, k: int, clarity: float) -> np.ndarray:
    """(C,) vote counts of 6-12 raters; each recognises emotion k with probability ~0.2-0.9."""
    n = int(rng.integers(6, 13))
    p_hit = 0.2 + 0.7 * clarity                          # mean ~0.64 (CREMA-D audio-visual)
    p = (1 - p_hit) * _CONFUSION[k]
    p[k] = p_hit
    votes = rng.multinomial(n, p).astype(float)
    top = np.flatnonzero(votes == votes.max())
    if len(top) > 1:                                     # a tie: one more rater decides
        votes[rng.choice(top)] += 1
    return votes


def soft_from_votes(votes: np.ndarray) -> np.ndarray:
    """Vote shares with CREMA-D's 0.01 floor, rounded to 4 decimals; argmax = consensus."""
    share = votes / votes.sum(1, keepdims=True)
    soft = np.maximum(share, 0.01)
    return np.round(soft / soft.sum(1, keepdims=True), 4)


def _avd(rng: np.random.Generator, label_idx: np.ndarray, level: np.ndarray) -> np.ndarray:
    means = np.array([AVD_MEAN[CLASSES[k]] for k in label_idx])                 # (N, 3)
    gain = np.array([0.7, 1.0, 1.3, 1.0])[level][:, None]                       # LO/MD/HI/XX
    values = 3.0 + (means - 3.0) * gain + rng.normal(scale=0.45, size=means.shape)
    return np.clip(values, 1.0, 5.0).round(3)


# ----------------------------------------------------------------------------- frames


def _utterance(world: _World, sc: SynthScale, seed: int, i: int, row: pd.Series):
    """Frame sequences for utterance i: ((Ta, Da), (Tv, Dv)) float32."""
    rng = np.random.default_rng([seed, 2, i])
    k = CLASSES.index(row["intended"])
    spk = int(row["speaker"]) - 1001
    sent, session = SENTENCES.index(row["sentence"]), int(row["session"])
    gain = float(row["_clarity"]) * world.speaker_gain[spk] * sc.evidence
    duration = float(np.clip(rng.lognormal(np.log(2.5), 0.25), 1.2, 5.0))
    avd_dev = (row[["arousal", "valence", "dominance"]].to_numpy(float) - 3.0) / 1.2  # (3,)
    segments = _segment_times(rng, duration)
    style = world.speaker_style[spk, k]
    emo_a = (world.proto_a[k] + style) * AUDIO_STRENGTH[CLASSES[k]] * gain \
        + avd_dev @ (world.avd_a * _W_A) * sc.evidence
    emo_v = (world.proto_v[k] + style) * VIDEO_STRENGTH[CLASSES[k]] * gain \
        + avd_dev @ (world.avd_v * _W_V) * sc.evidence
    za = latent_stream(rng, world.speaker_a[spk], world.sentence[sent], emo_a, segments, duration,
                       sc.audio_hz, sc.noise)
    zv = latent_stream(rng, world.speaker_v[spk], world.sentence[sent] * 0.5, emo_v,
                       _jitter(rng, segments), duration, sc.video_hz, sc.noise)
    audio = world.audio_scale.apply(rng, np.tanh(za @ world.proj_a), spk, session)
    video = world.video_scale.apply(rng, np.tanh(zv @ world.proj_v), spk, session)
    return row["utt_id"], audio.astype(np.float32), video.astype(np.float32)


# Arousal shows mostly in the voice, valence mostly in the face, dominance in both.
_W_A = np.array([[0.9], [0.25], [0.5]])
_W_V = np.array([[0.3], [0.9], [0.5]])


def _segment_times(rng: np.random.Generator, duration: float) -> np.ndarray:
    """(n, 3) emotional segments in seconds: onset, attack, decay; 1-3 per utterance."""
    n = int(rng.choice([1, 2, 3], p=[0.35, 0.45, 0.2]))
    onset = np.sort(rng.uniform(0.0, duration * 0.85, size=n))
    attack = rng.uniform(0.08, 0.25, size=n)
    decay = rng.uniform(0.2, 0.6, size=n)
    return np.stack([onset, attack, decay], axis=1)


def _jitter(rng: np.random.Generator, segments: np.ndarray) -> np.ndarray:
    """The face moves with the voice, give or take 100 ms."""
    out = segments.copy()
    out[:, 0] += rng.uniform(-0.1, 0.1, size=len(out))
    return out


def segment_envelope(segments: np.ndarray, t: int, rate: float) -> np.ndarray:
    """(T,) evidence over time: 0 outside segments, linear rise over the attack to a peak of 1,
    exponential decay after it (time constant `decay`), overlapping segments saturate at 1.5."""
    x = np.arange(t)[:, None] / rate                                           # (T, 1) seconds
    onset, attack, decay = segments[:, 0], segments[:, 1], segments[:, 2]
    rise = np.clip((x - onset) / attack, 0.0, 1.0)
    fall = np.exp(-np.clip(x - onset - attack, 0.0, None) / decay)
    env = (rise * fall * (x >= onset)).sum(1)                                  # (T,)
    return np.minimum(env, 1.5)


def latent_stream(rng, speaker, sentence, evidence, segments, duration, rate, noise) -> np.ndarray:
    """(T, L) latent frames: speaker + content(t) + envelope(t) * evidence + noise."""
    t = max(4, int(round(duration * rate)))
    pos = np.linspace(0, sentence.shape[0] - 1, t)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, sentence.shape[0] - 1)
    content = sentence[lo] * (1 - (pos - lo))[:, None] + sentence[hi] * (pos - lo)[:, None]  # (T, L)
    envelope = segment_envelope(segments, t, rate)[:, None] * 6.0                            # (T, 1)
    return speaker + content + envelope * evidence + rng.normal(scale=noise, size=(t, LATENT))


CREMA_D = Preset(world=_make_world, manifest=_make_manifest, utterance=_utterance, meta=_meta)
