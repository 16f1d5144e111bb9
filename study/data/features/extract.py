"""Raw corpus -> dataset directory: scan, extract per shard (local processes or Ray tasks), merge.

    OUT/shards/shard-00003.npz    float16 features of one shard's utterances ("a:<utt>", "v:<utt>")
    OUT/shards/shard-00003.json   its done list: per utterance, which modalities worked + problems
    OUT/audio.arrow, video.arrow, manifest.parquet, dataset.json   (study.data.dataset format)
    OUT/extraction_report.csv     utt_id, modality, problem, path: every utterance/modality lost

A shard's json is written last (atomic rename), so an interrupted run resumes by skipping every
utterance listed in a json and re-sharding the rest. Bad media never stops a run: the utterance's
modality becomes missing and the reason lands in the report.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from study.data.corpora import corpus_targets, scan_corpus
from study.data.features.audio import MediaError, load_audio
from study.data.features.extractors import (
    ExtractConfig,
    build_extractors,
    default_device,
    face_config,
    fingerprint,
    preflight,
)
from study.data.features.video import FaceCropper, read_frames
from study.fsio import atomic_write, atomic_write_text
from study.provenance import versions

REPORT_COLUMNS = ["utt_id", "modality", "problem", "path"]
_MEDIA_PACKAGES = ("torch", "transformers", "timm", "opencv-python-headless", "av", "soundfile",
                   "opensmile", "dlib-bin", "face_recognition_models")


# ----------------------------------------------------------------------------- one shard


def extract_shard(cfg: ExtractConfig, rows: list[dict], shard: Path) -> dict:
    """Extract one shard's utterances; write shard.npz then shard.json. Returns the json record."""
    if cfg.threads:
        import torch
        torch.set_num_threads(cfg.threads)
    audio_x, video_x = build_extractors(cfg)
    cropper = FaceCropper(face_config(cfg)) if video_x else None
    arrays, done, problems = {}, {}, []
    waves = _decode_audio(rows, audio_x, problems)                       # utt -> (N,)
    if audio_x is not None and waves:
        for utt, feats in zip(waves, audio_x(list(waves.values()))):
            if len(feats) == 0 or not np.isfinite(feats).all():
                problems.append([utt, "audio", f"the extractor gave {len(feats)} frames or non-finite "
                                 "values", next(r["audio_path"] for r in rows if r["utt_id"] == utt)])
                continue
            arrays[f"a:{utt}"] = feats.astype(cfg.dtype)
    for row in rows:
        fps = _video_one(cfg, row, cropper, video_x, arrays, problems) if video_x else None
        done[row["utt_id"]] = {"audio": f"a:{row['utt_id']}" in arrays,
                               "video": f"v:{row['utt_id']}" in arrays, "fps": fps}
    record = {"fingerprint": fingerprint(cfg), "utterances": done, "problems": problems,
              "dims": {"audio": getattr(audio_x, "dim", None), "video": getattr(video_x, "dim", None)},
              "extractors": {"audio": getattr(audio_x, "name", None),
                             "video": getattr(video_x, "name", None)},
              "sha256": {"audio": getattr(audio_x, "sha256", None),
                         "video": getattr(video_x, "sha256", None)},
              "rates": {"audio": getattr(audio_x, "rate_hz", None)}}
    _atomic_npz(shard.with_suffix(".npz"), arrays)
    atomic_write_text(shard.with_suffix(".json"), json.dumps(record))
    return record


def _decode_audio(rows: list[dict], audio_x, problems: list) -> dict[str, np.ndarray]:
    waves = {}
    if audio_x is None:
        return waves
    for row in rows:
        if not row.get("audio_path"):
            problems.append([row["utt_id"], "audio", "no audio file found", None])
            continue
        try:
            waves[row["utt_id"]] = load_audio(row["audio_path"])
        except MediaError as err:
            problems.append([row["utt_id"], "audio", str(err), row["audio_path"]])
    return waves


def _video_one(cfg, row: dict, cropper, video_x, arrays: dict, problems: list) -> float | None:
    if not row.get("video_path"):
        problems.append([row["utt_id"], "video", "no video file found", None])
        return None
    start, end = row.get("video_start"), row.get("video_end")
    try:
        frames, fps = read_frames(row["video_path"], _num(start), _num(end), cfg.video_fps)
        if getattr(video_x, "align", False):                             # dlib 5-point face chips
            crops = cropper.aligned(frames, video_x.crop_size)            # (T, S, S, 3)
        else:
            crops = cropper.crops(frames, video_x.crop_size)              # (T, S, S, 3)
    except MediaError as err:
        problems.append([row["utt_id"], "video", str(err), row["video_path"]])
        return None
    arrays[f"v:{row['utt_id']}"] = video_x(crops).astype(cfg.dtype)      # (T, D)
    return fps


def _num(value) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _atomic_npz(path: Path, arrays: dict) -> None:
    atomic_write(path, lambda tmp: np.savez(tmp, **arrays), suffix=".npz")


# ----------------------------------------------------------------------------- planning


def load_done(shard_dir: Path, cfg: ExtractConfig) -> dict[str, dict]:
    """Shard json records of earlier runs, by shard stem; refuses shards of another extractor."""
    records = {}
    for path in sorted(shard_dir.glob("shard-*.json")):
        rec = json.loads(path.read_text())
        if rec["fingerprint"] != fingerprint(cfg):
            raise ValueError(f"{path}: extracted with {rec['fingerprint']}, this run uses "
                             f"{fingerprint(cfg)}; use another --out or delete {shard_dir}")
        records[path.stem] = rec
    return records


def plan_shards(manifest: pd.DataFrame, done: dict[str, dict], size: int) -> list[tuple[str, list[dict]]]:
    """Utterances not in any done list, cut into new shards numbered after the existing ones."""
    seen = {u for rec in done.values() for u in rec["utterances"]}
    todo = manifest[~manifest["utt_id"].isin(seen)]
    first = 1 + max((int(s.split("-")[1]) for s in done), default=-1)
    rows = _records(todo)
    return [(f"shard-{first + k:05d}", rows[i:i + size])
            for k, i in enumerate(range(0, len(rows), size))]


def _records(df: pd.DataFrame) -> list[dict]:
    cols = [c for c in ("utt_id", "audio_path", "video_path", "video_start", "video_end") if c in df]
    return [{k: (None if _missing(v) else v) for k, v in r.items()}
            for r in df[cols].to_dict("records")]


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


# ----------------------------------------------------------------------------- running


def run_shards(cfg: ExtractConfig, plan: list[tuple[str, list[dict]]], shard_dir: Path) -> None:
    """Run every planned shard: Ray tasks (--ray), local processes (workers > 1) or in-process."""
    from tqdm import tqdm
    bar = tqdm(total=sum(len(r) for _, r in plan), unit="utt", desc=f"extract {cfg.corpus}",
               disable=not cfg.progress)
    workers = resolve_workers(cfg, len(plan))
    if cfg.ray:
        _run_ray(cfg, plan, shard_dir, bar)
    elif workers > 1:
        _run_processes(cfg, plan, shard_dir, bar, workers)
    else:
        for name, rows in plan:
            extract_shard(cfg, rows, shard_dir / name)
            bar.update(len(rows))
    bar.close()


def resolve_workers(cfg: ExtractConfig, n_shards: int) -> int:
    """Local shard processes: cfg.workers, else one per usable CPU (one on a GPU, which batches);
    never more than shards."""
    if cfg.workers is not None and cfg.workers < 1:
        raise ValueError(f"--workers {cfg.workers}: give 1 (in-process) or more")
    if cfg.workers is None and (cfg.device or default_device()).startswith("cuda"):
        return 1
    n = cfg.workers or _cpu_count()
    return max(1, min(n, n_shards))


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                                 # not on Linux
        return os.cpu_count() or 1


def _run_processes(cfg: ExtractConfig, plan, shard_dir: Path, bar, workers: int) -> None:
    """Shards over `workers` fresh processes, each with cpus/workers torch threads.

    Workers fork from a fresh forkserver that imported this module once (torch included), so the
    import is paid once, not per worker, and no worker inherits this process's threads; "spawn"
    where there is no forkserver.
    """
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
    threads = cfg.threads or max(1, _cpu_count() // workers)
    task_cfg = ExtractConfig(**{**asdict(cfg), "threads": threads, "progress": False})
    with ProcessPoolExecutor(workers, mp_context=_mp_context()) as pool:
        pending = {pool.submit(extract_shard, task_cfg, rows, shard_dir / name): len(rows)
                   for name, rows in plan}
        while pending:
            done, _ = wait(list(pending), return_when=FIRST_EXCEPTION)
            for fut in done:
                n = pending.pop(fut)
                if fut.exception() is not None:
                    for other in pending:
                        other.cancel()
                    raise fut.exception()                  # a shard's unexpected error, as raised
                bar.update(n)


def _mp_context():
    import multiprocessing as mp
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


def _run_ray(cfg: ExtractConfig, plan, shard_dir: Path, bar) -> None:
    """One Ray task per shard (1 CPU, `gpus_per_task` GPU); models cached per worker process."""
    import ray
    if not ray.is_initialized():
        # a local instance's workers import study/ from this checkout even when not installed
        repo = str(Path(__file__).resolve().parents[3])
        path = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)
        env = None if cfg.ray_address else {"env_vars": {"PYTHONPATH": path}}
        ray.init(address=cfg.ray_address, log_to_driver=False, runtime_env=env)
    task_cfg = ExtractConfig(**{**asdict(cfg), "threads": cfg.threads or 1, "progress": False})
    remote = ray.remote(num_cpus=1, num_gpus=cfg.gpus_per_task)(extract_shard)
    pending = {remote.remote(task_cfg, rows, shard_dir / name): len(rows) for name, rows in plan}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            ray.get(ref)                                   # re-raises a task's unexpected error
            bar.update(pending.pop(ref))


# ----------------------------------------------------------------------------- merging


def merge(cfg: ExtractConfig, manifest: pd.DataFrame, shard_dir: Path) -> Path:
    """Shards -> audio.arrow/video.arrow + manifest + dataset.json + extraction_report.csv."""
    from study.data.dataset import FeatureWriter, finish_dataset
    out = Path(cfg.out)
    records = load_done(shard_dir, cfg)
    dims = _dims(records)
    status = {u: s for rec in records.values() for u, s in rec["utterances"].items()}
    problems = [p for rec in records.values() for p in rec["problems"]]
    manifest = manifest[manifest["utt_id"].isin(status)].copy()
    manifest["has_audio"] = [status[u]["audio"] for u in manifest["utt_id"]]
    manifest["has_video"] = [status[u]["video"] for u in manifest["utt_id"]]
    dropped = manifest[~manifest["has_audio"] & ~manifest["has_video"]]
    problems += [[u, "both", "dropped: neither audio nor video usable", None] for u in dropped["utt_id"]]
    manifest = manifest.drop(dropped.index)
    keep = set(manifest["utt_id"])
    with FeatureWriter(out / "audio.arrow", dims["audio"], cfg.dtype) as aw, \
            FeatureWriter(out / "video.arrow", dims["video"], cfg.dtype) as vw:
        for name in sorted(records):
            with np.load(shard_dir / f"{name}.npz") as arrays:
                for key in arrays.files:
                    utt = key[2:]
                    if utt in keep:
                        (aw if key[0] == "a" else vw).write(utt, arrays[key])
    pd.DataFrame(problems, columns=REPORT_COLUMNS).to_csv(out / "extraction_report.csv", index=False)
    return finish_dataset(out, manifest.reset_index(drop=True),
                          _meta(cfg, manifest, records, dims, len(problems)))


def _dims(records: dict) -> dict[str, int]:
    dims = {}
    for m in ("audio", "video"):
        found = {rec["dims"][m] for rec in records.values() if rec["dims"][m] is not None}
        if len(found) > 1:
            raise ValueError(f"shards disagree on the {m} feature dimension: {sorted(found)}")
        dims[m] = found.pop() if found else 1          # modality "none": an empty 1-d file
    return dims


def _meta(cfg: ExtractConfig, manifest: pd.DataFrame, records: dict, dims: dict,
          n_problems: int) -> dict:
    classes, dimensions = corpus_targets(cfg.corpus, manifest)
    fps = [s["fps"] for rec in records.values() for s in rec["utterances"].values() if s["fps"]]
    names = next(iter(records.values()))["extractors"] if records else {}
    hashes = next(iter(records.values())).get("sha256", {}) if records else {}
    rates = {rec.get("rates", {}).get("audio") for rec in records.values()} - {None}
    audio_rate = (rates.pop() if len(rates) == 1 else 50.0) if cfg.audio != "none" else None
    return {
        "name": cfg.corpus, "classes": classes, "dimensions": dimensions,
        "audio": {"dim": dims["audio"], "rate_hz": audio_rate, "extractor": names.get("audio") or "none",
                  "dtype": cfg.dtype},
        "video": {"dim": dims["video"], "rate_hz": float(np.median(fps)) if fps else None,
                  "extractor": names.get("video") or "none", "dtype": cfg.dtype},
        "provenance": {"source": "features extract", "config": asdict(cfg),
                       "extractors": {"audio": cfg.audio, "video": cfg.video,
                                      "face_detector": cfg.face_detector if cfg.video != "none" else None},
                       "weights_sha256": {m: h for m, h in hashes.items() if h},
                       "waveform": {"norm": cfg.audio_norm, "norm_stats": cfg.audio_norm_stats,
                                    "max_seconds": cfg.audio_max_seconds} if cfg.audio == "wav2vec2" else None,
                       "versions": versions(_MEDIA_PACKAGES), "problems": n_problems,
                       "report": "extraction_report.csv"},
    }


# ----------------------------------------------------------------------------- entry point


def training_rows(manifest: pd.DataFrame) -> pd.DataFrame:
    """The utterances whose audio gives the waveform statistics: split == "train" where the
    corpus has a fixed split; the whole corpus for fold-based corpora (no fixed training set:
    two scalars of every fold, documented in docs/corpora.md)."""
    if "split" in manifest and (manifest["split"] == "train").any():
        return manifest[manifest["split"] == "train"]
    return manifest


def with_waveform_stats(cfg: ExtractConfig, manifest: pd.DataFrame) -> ExtractConfig:
    """cfg with audio_norm_stats for --audio-norm training: one pass decoding the training audio
    (reused from an earlier run's shards when their fingerprint recorded them)."""
    from dataclasses import replace
    if cfg.audio != "wav2vec2" or cfg.audio_norm != "training" or cfg.audio_norm_stats is not None:
        return cfg
    for path in sorted((Path(cfg.out) / "shards").glob("shard-*.json")):
        stats = json.loads(path.read_text())["fingerprint"].get("audio_norm_stats")
        if stats:
            return replace(cfg, audio_norm_stats=tuple(stats))
    from study.data.features.audio import waveform_stats
    paths = [p for p in training_rows(manifest).get("audio_path", pd.Series(dtype=object)) if isinstance(p, str)]

    def waves():
        for p in paths:
            try:
                yield load_audio(p)
            except MediaError:                       # reported by its shard; not in the statistics
                continue
    return replace(cfg, audio_norm_stats=waveform_stats(waves()))


def extract(cfg: ExtractConfig) -> Path:
    """Scan the raw corpus, extract what is not done yet, merge into a dataset at cfg.out."""
    manifest = scan_corpus(cfg.corpus, cfg.root, cfg.partition, **cfg.scan_options())
    if not (manifest["has_audio"] | manifest["has_video"]).any():
        raise ValueError(f"{cfg.root}: none of the {len(manifest)} utterances has an audio or "
                         "video file there; is --root the corpus folder?")
    shard_dir = Path(cfg.out) / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    cfg = with_waveform_stats(cfg, manifest)
    plan = plan_shards(manifest, load_done(shard_dir, cfg), cfg.shard_size)
    if plan:
        preflight(cfg)
    run_shards(cfg, plan, shard_dir)
    return merge(cfg, manifest, shard_dir)
