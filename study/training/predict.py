"""`avstudy predict`: a trained model's per-clip predictions on new media, through the extractor
its dataset was made with and that dataset's training-split normalisation.

A clip is the files of one stem: `x.wav` and `x.flv` are one clip (audio from the wav, video from
the flv); a lone video file gives both streams (its audio track). `modalities` keeps audio, video
or both, and the model predicts through its missing-modality path for what is absent. A file that
cannot be read is a row with an `error`; the other clips are still predicted.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from model.batch import Batch
from study.data.corpora.common import AUDIO_EXTS, VIDEO_EXTS
from study.data.features.extract import ExtractConfig, extract_shard
from study.data.normalize import load_stats
from study.training.config import TrainConfig, config_from_flat
from study.training.session import Session

MODALITIES = {"av": ("audio", "video"), "audio": ("audio",), "video": ("video",)}


def clips_of(paths: list[str | Path]) -> list[dict]:
    """[{clip, audio_path, video_path}] of the media files named or found in directories."""
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO_EXTS + VIDEO_EXTS)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
    if not files:
        raise ValueError(f"{', '.join(map(str, paths))}: no media files ({', '.join(AUDIO_EXTS + VIDEO_EXTS)})")
    clips: dict[str, dict] = {}
    for f in files:
        row = clips.setdefault(f.stem, {"clip": f.stem, "audio_path": None, "video_path": None})
        kind = "audio_path" if f.suffix.lower() in AUDIO_EXTS else "video_path"
        if row[kind] is not None:
            raise ValueError(f"{f}: a second {kind[:5]} file for clip {f.stem!r} ({row[kind]})")
        row[kind] = str(f)
    for row in clips.values():
        row["audio_path"] = row["audio_path"] or row["video_path"]   # a video's own audio track
    return list(clips.values())


def extract_config(session: Session) -> ExtractConfig:
    """The ExtractConfig the dataset was made with (its dataset.json provenance), one process."""
    prov = session.ds.meta.get("provenance", {})
    saved = prov.get("config")
    if prov.get("source") != "features extract" or not isinstance(saved, dict):
        raise ValueError(f"{session.ds.root}/dataset.json: the dataset was not made by `avstudy "
                         f"features extract` (source {prov.get('source')!r}), so there is no "
                         "extractor to apply to new clips")
    known = {f.name for f in fields(ExtractConfig)}
    cfg = {k: v for k, v in saved.items() if k in known}
    return ExtractConfig(**{**cfg, "workers": 1, "ray": False, "progress": False, "threads": None})


def load_model(model_dir: str | Path, data_dir: str | Path, config: dict | None = None,
               device: str | None = None) -> Session:
    """A Session over the training dataset with the trained weights of `model_dir`."""
    model_dir = Path(model_dir)
    if not (model_dir / "session.pt").is_file():
        raise FileNotFoundError(f"{model_dir}/session.pt: missing (a directory written by "
                                "`avstudy train --out`, or a trial checkpoint)")
    session = Session(_train_config(model_dir, data_dir, config), data_dir, device=device)
    session.restore(model_dir)
    return session


def _train_config(model_dir: Path, data_dir, config: dict | None) -> TrainConfig:
    if config is None:
        record = model_dir / "record.json"
        if not record.is_file():
            raise FileNotFoundError(f"{record}: missing; pass --config (e.g. the trial's config "
                                    "from `avstudy export-best`)")
        config = json.loads(record.read_text())["config"]
    return config_from_flat(dict(config), data_dir=data_dir)


def predict_clips(session: Session, clips: list[dict], modalities: str = "av") -> pd.DataFrame:
    """One row per clip: the streams used, per-class probabilities (or dimensional values) and
    the predicted class, or an `error` naming the file that could not be read."""
    keep = MODALITIES[modalities]
    rows = [{"utt_id": c["clip"], **{f"{m}_path": c[f"{m}_path"] if m in keep else None
                                     for m in ("audio", "video")}} for c in clips]
    arrays, problems = _extract(extract_config(session), rows)
    out = [_empty_row(r, problems) for r in rows]
    ready = [i for i, r in enumerate(rows) if any(f"{m[0]}:{r['utt_id']}" in arrays for m in keep)]
    if ready:
        pred = _forward(session, [rows[i]["utt_id"] for i in ready], arrays)   # (n, K)
        for i, p in zip(ready, pred):
            out[i].update(_named(session, p))
            out[i]["streams"] = "+".join(m for m in ("audio", "video")
                                         if f"{m[0]}:{rows[i]['utt_id']}" in arrays)
    return pd.DataFrame(out)


def _extract(cfg: ExtractConfig, rows: list[dict]) -> tuple[dict, dict]:
    """(arrays `a:<clip>`/`v:<clip>` of (T, D), {clip: [problem, ...]}) via the dataset's extractor."""
    with tempfile.TemporaryDirectory(prefix="avstudy-predict-") as tmp:
        shard = Path(tmp) / "clips"
        has_video = [r for r in rows if r["video_path"]]
        cfg_v = cfg if has_video else ExtractConfig(**{**cfg.__dict__, "video": "none"})
        record = extract_shard(cfg_v, rows, shard)
        with np.load(shard.with_suffix(".npz")) as z:
            arrays = {k: z[k].astype(np.float32) for k in z.files}
    problems: dict[str, list[str]] = {}
    for utt, modality, text, path in record["problems"]:
        if not _wanted(rows, utt, modality):
            continue  # a stream the user left out is not a problem
        problems.setdefault(utt, []).append(f"{modality}: {text}" + (f" ({path})" if path else ""))
    return arrays, problems


def _wanted(rows: list[dict], utt: str, modality: str) -> bool:
    return any(r["utt_id"] == utt and r[f"{modality}_path"] for r in rows)


def _empty_row(row: dict, problems: dict) -> dict:
    return {"clip": row["utt_id"], "audio_path": row["audio_path"], "video_path": row["video_path"],
            "streams": "", "error": "; ".join(problems.get(row["utt_id"], [])) or None}


def _forward(session: Session, utts: list[str], arrays: dict) -> np.ndarray:
    """(n, K) model outputs on the clips' normalised streams (eval mode, no gradient)."""
    norm = load_stats(session.ds, "train") if session.cfg.normalize else None
    streams = {m: [_normalised(arrays.get(f"{m[0]}:{u}"), norm, m) for u in utts]
               for m in ("audio", "video")}
    n = len(utts)
    batch = Batch.from_arrays(streams["audio"], streams["video"], None, None,
                              torch.zeros(n, session.cfg.model.n_outputs),
                              audio_dim=session.ds.meta["audio"]["dim"],
                              video_dim=session.ds.meta["video"]["dim"])
    session.model.eval()
    with torch.no_grad():
        return session.model(batch.to(session.device)).pred.float().cpu().numpy()


def _normalised(x: np.ndarray | None, norm, modality: str) -> torch.Tensor | None:
    if x is None:
        return None
    return torch.from_numpy(norm[modality].apply(x) if norm is not None else x)   # (T, D)


def _named(session: Session, pred: np.ndarray) -> dict:
    """Per-class probabilities and the predicted class, or the dimensions in the labels' units."""
    if session.cfg.task == "dimensional":
        train = session.ds.split("train")
        return {d: float(p * (train[d].std() or 1.0) + train[d].mean())
                for d, p in zip(session.ds.dimensions, pred)}
    prob = torch.softmax(torch.from_numpy(pred), dim=0).numpy()
    classes = session.ds.classes
    return {**{f"p_{c}": float(v) for c, v in zip(classes, prob)},
            "predicted": classes[int(np.argmax(prob))]}
