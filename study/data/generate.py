"""Synthetic corpora: the table of presets, `make_corpus` (streamed to disk, deterministic) and
`ensure_corpus`, the one way the CLI, `avstudy plan` and the sweep put a corpus at a path.

The presets themselves live in `study/data/synth.py` (`crema-d`) and `study/data/known_answer.py`;
adding one is a `Preset` there plus one line in `PRESETS` here. Design: docs/synthetic.md.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
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


IF_EXISTS = ("reuse", "error", "replace")


def ensure_corpus(out: str | Path, preset: str = "crema-d", scale: str = "small", seed: int = 0,
                  if_exists: str = "reuse", progress: bool = False) -> Path:
    """The corpus at `out`, made atomically: generated in a temporary sibling and renamed into
    place, so `out` is never half-written and a dataset another process memory-maps is never
    truncated; concurrent callers (trials of one node) wait on one lock beside `out`.

    if_exists: "reuse" a complete corpus (dataset.json) and refuse any other non-empty `out`;
    "error" on any non-empty `out` (`data synth` without --overwrite); "replace" it."""
    if if_exists not in IF_EXISTS:
        raise ValueError(f"if_exists {if_exists!r}: one of {IF_EXISTS}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lock_path = out.parent / f".{out.name}.lock"
    try:
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            taken = out.exists() and (not out.is_dir() or any(out.iterdir()))
            if taken and if_exists == "reuse" and (out / "dataset.json").is_file():
                return out
            if taken and if_exists != "replace":
                hint = "pass --overwrite to replace it, or choose another --out" if if_exists == "error" \
                    else "it holds no dataset.json; remove it or point the spec elsewhere"
                raise FileExistsError(f"{out}: exists and is not empty; {hint}")
            _generate_into(out, preset, scale, seed, progress)
        return out
    finally:
        if if_exists != "reuse":  # a user's own --out (one writer): leave nothing beside it; a
            lock_path.unlink(missing_ok=True)  # shared cache keeps its lock file for later callers


def _generate_into(out: Path, preset: str, scale: str, seed: int, progress: bool) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        make_corpus(tmp, preset=preset, scale=scale, seed=seed, progress=progress)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "previous")
            os.replace(tmp, out)
            shutil.rmtree(old)  # open memory maps keep their (unlinked) files
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def preset_recipe(preset: str) -> Preset:
    if preset not in PRESETS:
        raise ValueError(f"unknown synth preset {preset!r}; available: {sorted(PRESETS)}")
    return PRESETS[preset]


def preset_names() -> list[str]:
    return list(PRESETS)
