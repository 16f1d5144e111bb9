"""Synthetic corpora: the table of presets and `make_corpus` (streamed to disk, deterministic).

The presets themselves live in `study/data/synth.py` (`crema-d`) and `study/data/known_answer.py`;
adding one is a `Preset` there plus one line in `PRESETS` here. Design: docs/synthetic.md.
"""
from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from study.data import known_answer
from study.data.dataset import FeatureWriter, finish_dataset
from study.data.synth import CREMA_D, SCALES, Preset

PRESETS: dict[str, Preset] = {"crema-d": CREMA_D, **known_answer.PRESETS}


def make_corpus(out_dir: str | Path, preset: str = "crema-d", scale: str = "small",
                seed: int = 0, progress: bool = True) -> Path:
    """Generate a synthetic dataset directory (streamed to disk) and return its path."""
    recipe = preset_recipe(preset)
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; available: {sorted(SCALES)}")
    sc = SCALES[scale]
    world = recipe.world(sc, seed)
    manifest = recipe.manifest(sc, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = tqdm(manifest.iterrows(), total=len(manifest), desc=f"synth {preset} {scale}", unit="utt",
                delay=2.0, disable=not progress)
    with FeatureWriter(out / "audio.arrow", sc.audio_dim) as fa, \
            FeatureWriter(out / "video.arrow", sc.video_dim) as fv:
        for i, row in rows:                       # streamed: the full scale is several GB
            utt, audio, video = recipe.utterance(world, sc, seed, i, row)
            fa.write(utt, audio)
            fv.write(utt, video)
    public = manifest[[c for c in manifest.columns if not c.startswith("_")]]
    return finish_dataset(out, public, recipe.meta(sc, scale, seed))


def preset_recipe(preset: str) -> Preset:
    if preset not in PRESETS:
        raise ValueError(f"unknown synth preset {preset!r}; available: {sorted(PRESETS)}")
    return PRESETS[preset]


def preset_names() -> list[str]:
    return list(PRESETS)
