"""Synthetic corpora whose right answer is set by construction (docs/synthetic.md).

Six classes, each defined by which cue appears in which stream (a cue = a latent direction shown
during one time segment, on top of speaker identity, shared sentence content and noise):

  class      audio                              video
  xor_same   +A or -A (sign s)                  +F if s = +, -F if s = -
  xor_diff   +A or -A (sign s)                  -F if s = +, +F if s = -
  rise       P then Q, back to back             nothing
  fall       Q then P, back to back             nothing
  face       nothing                            G
  none       nothing                            nothing

- xor_same / xor_diff differ only in whether the audio and video signs agree: each stream alone
  is uninformative, and so is any sum of per-stream evidence (late fusion, a linear model on
  pooled features). A model that combines the streams non-linearly (vavl's MLP on the concat,
  cross-attention) separates them.
- rise / fall have the same frames in a different order: equal mean-pooled features. The
  per-modality conformer's depthwise convolution sees the local order; a pooled-feature baseline
  cannot. Frame drops and gaps that cut the P|Q boundary remove the evidence.
- face / none differ only in video; rise / fall only in audio.

Presets: `known-answer` (all six classes, uniform balance), `known-interaction` (xor_same and
xor_diff only), `known-redundant` (four classes that each stream tells apart on its own, with cues
of equal strength, weaker than the others' (REDUNDANT_CUE): audio +A, -A, +P, -P and video +F,
-F, +G, -G in the same segment, and the sentence content at full weight in both streams (0.5 in
video in the other presets), so that trained with both streams the two modalities score alike;
tests/studies/test_known_imbalance.py trains it with the video mostly missing, docs/imbalance.md). Hard
labels are the generating class (no label noise); soft labels put 0.9 on it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from study.data.synth import (
    GENERATOR_VERSION,
    LATENT,
    SENTENCES,
    Preset,
    SynthScale,
    latent_stream,
    speaker_splits,
    stream_meta,
)

CLASSES = ("xor_same", "xor_diff", "rise", "fall", "face", "none")
INTERACTION_CLASSES = ("xor_same", "xor_diff")
# class -> (audio cue, video cue) as (sign, direction): either stream alone names the class
REDUNDANT = {"both_1": ((1.0, "A"), (1.0, "F")), "both_2": ((-1.0, "A"), (-1.0, "F")),
             "both_3": ((1.0, "P"), (1.0, "G")), "both_4": ((-1.0, "P"), (-1.0, "G"))}
CUE = 5.0                 # cue amplitude (latent units; frame noise has std 1 per latent dim)
SPEAKER_SD = 0.5
REDUNDANT_CUE = 2.0       # known-redundant's cue amplitude: learnable, not at a glance


@dataclass(frozen=True)
class _World:
    cue: dict                # name -> (L,) unit direction: A, F (xor), P, Q (order), G (face)
    speaker_a: np.ndarray    # (S, L)
    speaker_v: np.ndarray    # (S, L)
    sentence: np.ndarray     # (n_sentences, 8, L)
    proj_a: np.ndarray       # (L, Da)
    proj_v: np.ndarray       # (L, Dv)


def _world(sc: SynthScale, seed: int) -> _World:
    rng = np.random.default_rng([seed, 10])
    q, _ = np.linalg.qr(rng.normal(size=(LATENT, 5)))            # orthonormal cue directions
    cue = dict(zip("AFPQG", q.T))
    return _World(cue=cue,
                  speaker_a=rng.normal(size=(sc.n_speakers, LATENT)) * SPEAKER_SD,
                  speaker_v=rng.normal(size=(sc.n_speakers, LATENT)) * SPEAKER_SD,
                  sentence=rng.normal(size=(len(SENTENCES), 8, LATENT)) * 0.8,
                  proj_a=rng.normal(size=(LATENT, sc.audio_dim)) / np.sqrt(LATENT),
                  proj_v=rng.normal(size=(LATENT, sc.video_dim)) / np.sqrt(LATENT))


def _manifest(classes: tuple[str, ...]):
    def make(sc: SynthScale, seed: int) -> pd.DataFrame:
        rng = np.random.default_rng([seed, 11])
        speakers = [str(2001 + i) for i in range(sc.n_speakers)]
        split_of = speaker_splits(rng, speakers, sc.speakers_per_split)
        n = sc.n_utterances
        spk = rng.integers(0, sc.n_speakers, size=n)
        label = rng.integers(0, len(classes), size=n)
        df = pd.DataFrame({
            "utt_id": [f"{speakers[s]}_{classes[k]}_{i:05d}" for i, (s, k) in enumerate(zip(spk, label))],
            "speaker": [speakers[s] for s in spk],
            "split": [split_of[speakers[s]] for s in spk],
            "sentence": [SENTENCES[t] for t in rng.integers(0, len(SENTENCES), size=n)],
            "label": [classes[k] for k in label],
        })
        rest = 0.1 / (len(classes) - 1)
        for j, c in enumerate(classes):
            df[f"soft_{c}"] = np.where(label == j, 0.9, rest)
        df["has_audio"] = True
        df["has_video"] = True
        return df
    return make


def _utterance_of(video_content: float):
    def make(world: _World, sc: SynthScale, seed: int, i: int, row: pd.Series):
        return _utterance(world, sc, seed, i, row, video_content)
    return make


def _utterance(world: _World, sc: SynthScale, seed: int, i: int, row: pd.Series, video_content: float = 0.5):
    """Frames for utterance i: ((Ta, Da), (Tv, Dv)) float32 in (-1, 1). `video_content`: the
    weight of the shared sentence content in the video stream (the audio's is 1)."""
    rng = np.random.default_rng([seed, 12, i])
    spk = int(row["speaker"]) - 2001
    sent = SENTENCES.index(row["sentence"])
    duration = float(np.clip(rng.lognormal(np.log(2.5), 0.2), 1.6, 4.0))
    audio_cues, video_cues = _cues(rng, world, row["label"], duration)
    za = _stream(rng, world.speaker_a[spk], world.sentence[sent], audio_cues, duration, sc.audio_hz, sc.noise)
    zv = _stream(rng, world.speaker_v[spk], world.sentence[sent] * video_content, video_cues, duration,
                 sc.video_hz, sc.noise)
    return (row["utt_id"], np.tanh(za @ world.proj_a).astype(np.float32),
            np.tanh(zv @ world.proj_v).astype(np.float32))


def _cues(rng: np.random.Generator, world: _World, label: str, duration: float):
    """Per stream, a list of (onset s, length s, (L,) vector) shown as a flat-topped segment."""
    sign = float(rng.choice([-1.0, 1.0]))
    onset, length = rng.uniform(0.1, duration - 1.1), rng.uniform(0.6, 1.0)
    c = world.cue
    if label in INTERACTION_CLASSES:
        v_sign = sign if label == "xor_same" else -sign
        return [(onset, length, sign * c["A"])], [(onset, length, v_sign * c["F"])]
    if label in ("rise", "fall"):
        first, second = ("P", "Q") if label == "rise" else ("Q", "P")
        half = length / 2
        return [(onset, half, c[first]), (onset + half, half, c[second])], []
    if label in REDUNDANT:
        (sa, da), (sv, dv) = REDUNDANT[label]
        k = REDUNDANT_CUE / CUE
        return [(onset, length, k * sa * c[da])], [(onset, length, k * sv * c[dv])]
    if label == "face":
        return [], [(onset, length, c["G"])]
    return [], []


def _stream(rng, speaker, sentence, cues, duration, rate, noise) -> np.ndarray:
    """(T, L): speaker + content + noise (latent_stream with no evidence) + the cue segments."""
    z = latent_stream(rng, speaker, sentence, np.zeros(LATENT), np.zeros((0, 3)), duration, rate, noise)
    x = np.arange(len(z)) / rate                                              # (T,) seconds
    for onset, length, vec in cues:
        inside = (x >= onset) & (x < onset + length)
        z[inside] += CUE * vec
    return z


def _meta(classes: tuple[str, ...], preset: str):
    def make(sc: SynthScale, scale: str, seed: int) -> dict:
        return {"name": f"synth-{preset}-{scale}", "classes": list(classes), "dimensions": [],
                **stream_meta(sc, "synthetic-known-answer", "synthetic-known-answer"),
                "provenance": {"source": "avstudy synth", "preset": preset, "scale": scale,
                               "seed": seed, "generator_version": GENERATOR_VERSION}}
    return make


def _preset(name: str, classes: tuple[str, ...], video_content: float = 0.5) -> Preset:
    return Preset(world=_world, manifest=_manifest(classes), utterance=_utterance_of(video_content),
                  meta=_meta(classes, name))


PRESETS = {
    "known-answer": _preset("known-answer", CLASSES),
    "known-interaction": _preset("known-interaction", INTERACTION_CLASSES),
    "known-redundant": _preset("known-redundant", tuple(REDUNDANT), video_content=1.0),
}
