"""A synthetic corpus that behaves like CREMA-D, so studies run with no download.

Generative story (per utterance, deterministic for (seed, utterance index)):
- a perceived emotion drawn with CREMA-D's consensus class balance, an intensity level, and a
  soft consensus label (raters agree on that class with probability ~0.76, the rest is spread
  over the confusable classes, with CREMA-D's 0.01 floor);
- arousal/valence/dominance from the class's typical position plus a per-utterance deviation;
- frame-level audio and video feature sequences = speaker identity + sentence content trajectory +
  emotion evidence + noise, in a small latent space projected to the feature width. Emotion
  evidence is uneven across modalities: anger and sadness are clearest in the voice, happiness and
  disgust in the face; arousal lives mostly in audio, valence mostly in video. Ambiguous (flat
  consensus) utterances carry weaker evidence. So fusion beats either modality, and a missing
  modality costs accuracy, for different classes in different ways.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from study.data.dataset import FeatureWriter, finish_dataset

CLASSES = ("angry", "sad", "disgust", "fear", "neutral", "happy")   # CREMA-D consensus file order
# Share of each class among CREMA-D consensus labels (argmax of label_consensus_1.csv).
CLASS_BALANCE = {"angry": 0.152, "sad": 0.066, "disgust": 0.149, "fear": 0.147,
                 "neutral": 0.280, "happy": 0.204}
# Strength of each class's evidence per modality.
AUDIO_STRENGTH = {"angry": 1.0, "sad": 1.0, "disgust": 0.25, "fear": 0.7, "neutral": 0.55, "happy": 0.3}
VIDEO_STRENGTH = {"angry": 0.45, "sad": 0.3, "disgust": 1.0, "fear": 0.45, "neutral": 0.55, "happy": 1.0}
# Typical (arousal, valence, dominance) on a 1..5 scale.
AVD_MEAN = {"angry": (4.0, 1.6, 3.9), "sad": (1.8, 1.7, 2.0), "disgust": (3.0, 1.8, 3.3),
            "fear": (3.8, 1.9, 1.9), "neutral": (2.4, 3.0, 3.0), "happy": (3.7, 4.2, 3.5)}
SENTENCES = ("IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI")
LEVELS = ("LO", "MD", "HI", "XX")
LATENT = 16


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


SCALES = {
    "tiny": SynthScale(24, 360, 32, 24, 20.0, 10.0, (16, 4, 4), 1.0),
    "small": SynthScale(91, 2400, 64, 48, 25.0, 15.0, (63, 14, 14), 1.0),
    "full": SynthScale(91, 7442, 1024, 1408, 50.0, 30.0, (63, 14, 14), 1.0),
}


@dataclass(frozen=True)
class _World:
    """Everything shared by all utterances of one corpus (drawn once from the seed)."""
    proto_a: np.ndarray      # (C, L) audio emotion directions
    proto_v: np.ndarray      # (C, L)
    speaker_a: np.ndarray    # (S, L)
    speaker_v: np.ndarray    # (S, L)
    sentence: np.ndarray     # (n_sentences, 8, L) content trajectory control points
    proj_a: np.ndarray       # (L, Da)
    proj_v: np.ndarray       # (L, Dv)
    avd_a: np.ndarray        # (3, L) where arousal/valence/dominance deviations show in audio
    avd_v: np.ndarray        # (3, L)


def make_corpus(out_dir: str | Path, preset: str = "crema-d", scale: str = "small",
                seed: int = 0, progress: bool = True) -> Path:
    """Generate a CREMA-D-like dataset directory and return its path."""
    if preset != "crema-d":
        raise ValueError(f"unknown synth preset {preset!r}; available: 'crema-d'")
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; available: {sorted(SCALES)}")
    sc = SCALES[scale]
    world = _make_world(sc, seed)
    manifest = _make_manifest(sc, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = _meta(sc, scale, seed)
    rows = tqdm(manifest.iterrows(), total=len(manifest), desc=f"synth {scale}", unit="utt",
                delay=2.0, disable=not progress)
    with FeatureWriter(out / "audio.arrow", sc.audio_dim) as fa, \
            FeatureWriter(out / "video.arrow", sc.video_dim) as fv:
        for i, row in rows:                       # streamed: the full scale is several GB
            utt, audio, video = _utterance(world, sc, seed, i, row)
            fa.write(utt, audio)
            fv.write(utt, video)
    return finish_dataset(out, manifest, meta)


def _meta(sc: SynthScale, scale: str, seed: int) -> dict:
    return {
        "name": f"synth-crema-d-{scale}",
        "classes": list(CLASSES),
        "dimensions": ["arousal", "valence", "dominance"],
        "audio": {"dim": sc.audio_dim, "rate_hz": sc.audio_hz, "extractor": "synthetic",
                  "dtype": "float16"},
        "video": {"dim": sc.video_dim, "rate_hz": sc.video_hz, "extractor": "synthetic",
                  "dtype": "float16"},
        "provenance": {"source": "avstudy synth", "preset": "crema-d", "scale": scale,
                       "seed": seed},
    }


def _make_world(sc: SynthScale, seed: int) -> _World:
    rng = np.random.default_rng([seed, 0])
    c = len(CLASSES)
    unit = lambda n: _normalise(rng.normal(size=(n, LATENT)))       # noqa: E731
    return _World(
        proto_a=unit(c) * 1.4, proto_v=unit(c) * 1.4,
        speaker_a=rng.normal(size=(sc.n_speakers, LATENT)) * 0.8,
        speaker_v=rng.normal(size=(sc.n_speakers, LATENT)) * 0.8,
        sentence=rng.normal(size=(len(SENTENCES), 8, LATENT)) * 0.8,
        proj_a=rng.normal(size=(LATENT, sc.audio_dim)) / np.sqrt(LATENT),
        proj_v=rng.normal(size=(LATENT, sc.video_dim)) / np.sqrt(LATENT),
        avd_a=unit(3), avd_v=unit(3),
    )


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _make_manifest(sc: SynthScale, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng([seed, 1])
    speakers = [str(1001 + i) for i in range(sc.n_speakers)]
    order = rng.permutation(sc.n_speakers)
    n_tr, n_dev, _ = sc.speakers_per_split
    split_of = {speakers[j]: ("train" if k < n_tr else "dev" if k < n_tr + n_dev else "test")
                for k, j in enumerate(order)}
    gender = {s: ("Female" if rng.random() < 0.47 else "Male") for s in speakers}
    spk = rng.integers(0, sc.n_speakers, size=sc.n_utterances)
    label_idx = rng.choice(len(CLASSES), size=sc.n_utterances, p=_balance())
    sentence = rng.integers(0, len(SENTENCES), size=sc.n_utterances)
    level = rng.choice(len(LEVELS), size=sc.n_utterances, p=(0.1, 0.1, 0.1, 0.7))
    soft = np.stack([_soft_label(rng, k) for k in label_idx])                   # (N, C)
    avd = _avd(rng, label_idx, level)                                           # (N, 3)
    rows = {
        "utt_id": [f"{speakers[s]}_{SENTENCES[t]}_{CLASSES[k][:3].upper()}_{LEVELS[l]}_{i:05d}"
                   for i, (s, t, k, l) in enumerate(zip(spk, sentence, label_idx, level))],
        "speaker": [speakers[s] for s in spk],
        "split": [split_of[speakers[s]] for s in spk],
        "gender": [gender[speakers[s]] for s in spk],
        "sentence": [SENTENCES[t] for t in sentence],
        "level": [LEVELS[l] for l in level],
        "label": [CLASSES[k] for k in soft.argmax(1)],
    }
    df = pd.DataFrame(rows)
    for j, c in enumerate(CLASSES):
        df[f"soft_{c}"] = soft[:, j]
    df[["arousal", "valence", "dominance"]] = avd
    df["has_audio"] = True
    df["has_video"] = True
    return df


def _balance() -> np.ndarray:
    p = np.array([CLASS_BALANCE[c] for c in CLASSES])
    return p / p.sum()


def _soft_label(rng: np.random.Generator, k: int) -> np.ndarray:
    """Consensus proportions: the class wins with ~0.76 (CREMA-D's mean), floor 0.01."""
    top = float(np.clip(rng.beta(8.0, 2.5), 0.52, 0.95))
    rest = rng.dirichlet(np.full(len(CLASSES) - 1, 0.6)) * (1.0 - top)
    soft = np.insert(rest, k, top)
    soft = np.maximum(soft, 0.01)
    return np.round(soft / soft.sum(), 3)


def _avd(rng: np.random.Generator, label_idx: np.ndarray, level: np.ndarray) -> np.ndarray:
    means = np.array([AVD_MEAN[CLASSES[k]] for k in label_idx])                 # (N, 3)
    gain = np.array([0.7, 1.0, 1.3, 1.0])[level][:, None]                       # LO/MD/HI/XX
    values = 3.0 + (means - 3.0) * gain + rng.normal(scale=0.45, size=means.shape)
    return np.clip(values, 1.0, 5.0).round(3)


def _utterance(world: _World, sc: SynthScale, seed: int, i: int, row: pd.Series):
    """Frame sequences for utterance i: ((Ta, Da), (Tv, Dv)) float32."""
    rng = np.random.default_rng([seed, 2, i])
    k = CLASSES.index(row["label"])
    clarity = (float(row[f"soft_{row['label']}"]) - 0.4) / 0.55                 # ambiguous -> weak
    spk = int(row["speaker"]) - 1001
    sent = SENTENCES.index(row["sentence"])
    duration = float(np.clip(rng.lognormal(np.log(2.5), 0.25), 1.2, 5.0))
    avd_dev = (row[["arousal", "valence", "dominance"]].to_numpy(float) - 3.0) / 1.2  # (3,)
    audio = _stream(rng, world.proto_a[k] * AUDIO_STRENGTH[CLASSES[k]] * clarity,
                    world.speaker_a[spk], world.sentence[sent], avd_dev @ (world.avd_a * _W_A),
                    duration, sc.audio_hz, sc.noise, world.proj_a)
    video = _stream(rng, world.proto_v[k] * VIDEO_STRENGTH[CLASSES[k]] * clarity,
                    world.speaker_v[spk], world.sentence[sent] * 0.5,
                    avd_dev @ (world.avd_v * _W_V), duration, sc.video_hz, sc.noise, world.proj_v)
    return row["utt_id"], audio, video


# Arousal shows mostly in the voice, valence mostly in the face, dominance in both.
_W_A = np.array([[0.9], [0.25], [0.5]])
_W_V = np.array([[0.3], [0.9], [0.5]])


def _stream(rng, emotion, speaker, sentence, avd, duration, rate, noise, proj) -> np.ndarray:
    """(T, D) frames: latent = speaker + content(t) + envelope(t) * (emotion + avd) + noise."""
    t = max(4, int(round(duration * rate)))
    pos = np.linspace(0, sentence.shape[0] - 1, t)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, sentence.shape[0] - 1)
    content = sentence[lo] * (1 - (pos - lo))[:, None] + sentence[hi] * (pos - lo)[:, None]  # (T, L)
    envelope = _envelope(rng, t)[:, None]                                                     # (T, 1)
    latent = speaker + content + envelope * (emotion + avd) + rng.normal(scale=noise, size=(t, LATENT))
    return np.tanh(latent @ proj).astype(np.float32)                                          # (T, D)


def _envelope(rng: np.random.Generator, t: int) -> np.ndarray:
    """Emotion shows in bursts: a smooth positive envelope of mean ~1 over the utterance."""
    centers = rng.uniform(0, t, size=3)
    width = max(2.0, t / 5)
    x = np.arange(t)[:, None]
    env = np.exp(-0.5 * ((x - centers) / width) ** 2).sum(1)                   # (T,)
    return 0.4 + 1.2 * env / env.mean()
