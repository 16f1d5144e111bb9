"""`avstudy features extract ...`: raw corpus -> dataset directory. Wired into study/cli.py.

Torch-free: the corpus flags come from the corpora table, the extractor choices from choices.py.
"""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from study.data.corpora import CORPORA, all_options
from study.data.features.choices import AUDIO, FACE_DETECTORS, VIDEO, describe

if TYPE_CHECKING:
    from study.data.features.extract import ExtractConfig


def add_subparser(sub) -> None:
    p = sub.add_parser("features", help="feature extraction from raw corpora "
                       f"({', '.join(CORPORA)})")
    fsub = p.add_subparsers(dest="features_cmd", required=True)
    e = fsub.add_parser("extract", help="scan a raw corpus, extract audio/video features, write a dataset",
                        formatter_class=_HelpFormatter,
                        description="Scan a raw corpus, extract frame-level audio/video features shard "
                        "by shard (resumable; bad media is reported, not fatal) and write a dataset "
                        "directory. See docs/corpora.md.")
    _add_corpus_args(e)
    _add_audio_args(e)
    _add_video_args(e)
    _add_run_args(e)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows '(default: X)' where there is a default to show (not for None, nor for plain flags)."""

    def _get_help_string(self, action):
        if action.default is None or action.nargs == 0:
            return action.help
        return super()._get_help_string(action)


def _add_corpus_args(e) -> None:
    g = e.add_argument_group("corpus")
    g.add_argument("--corpus", required=True, choices=list(CORPORA), help="which raw corpus layout")
    g.add_argument("--root", required=True, help="raw corpus folder")
    g.add_argument("--out", required=True, help="dataset directory to write (resumable)")
    g.add_argument("--partition", help="label/partition file: " + "; ".join(
        m.PARTITION for m in CORPORA.values()))
    for flag, (opt, _names) in all_options().items():
        kwargs = {"dest": _dest(opt.key), "default": opt.default, "help": opt.help}
        if opt.flag_value is not None:
            g.add_argument(flag, action="store_const", const=opt.flag_value, **kwargs)
        else:
            g.add_argument(flag, type=opt.type, choices=opt.choices, metavar=None if opt.choices
                           else opt.key.upper(), **kwargs)


def _add_audio_args(e) -> None:
    g = e.add_argument_group("audio")
    g.add_argument("--audio", default="wav2vec2", choices=list(AUDIO), help=describe(AUDIO))
    g.add_argument("--audio-model", default="facebook/wav2vec2-large-robust",
                   help="--audio wav2vec2: a local model directory, or a hub name (downloaded once "
                   "into the Hugging Face cache; offline, use a local directory)")
    g.add_argument("--audio-layer", type=int, default=12,
                   help="--audio wav2vec2: keep the first N transformer layers (VAVL: 12 of 24)")
    g.add_argument("--audio-checkpoint", help="--audio wav2vec2: a state dict loaded over --audio-model's "
                   "architecture truncated to --audio-layer, e.g. VAVL's fine-tuned final_wav2vec.pt "
                   "with --audio-model a local wav2vec2-large-robust config directory")
    g.add_argument("--audio-norm", default="utterance", choices=["utterance", "training", "none"],
                   help="--audio wav2vec2: waveform z-score per utterance (when the model's "
                   "preprocessor normalises), with one training-set mean/std (VAVL), or none")
    g.add_argument("--audio-max-seconds", type=float,
                   help="--audio wav2vec2: keep the first N seconds of each waveform (VAVL: 12; "
                   "default: all)")


def _add_video_args(e) -> None:
    g = e.add_argument_group("video")
    g.add_argument("--video", default="efficientnet-imagenet", choices=list(VIDEO), help=describe(VIDEO))
    g.add_argument("--video-weights", default="hub",
                   help="--video efficientnet-imagenet: 'hub' (timm's ImageNet weights, downloaded once), "
                   "a local checkpoint file, or 'none' (random init); --video hsemotion: HSEmotion's "
                   "enet_b2_8_best.pt (required; its SHA-256 goes to dataset.json); --video landmarks: "
                   "'hub' (the packaged dlib model) or a shape-predictor .dat file")
    g.add_argument("--face-detector", default="dlib", choices=list(FACE_DETECTORS),
                   help=describe(FACE_DETECTORS))
    g.add_argument("--face-model", help="--face-detector yunet: the YuNet ONNX file (required); "
                   "haar: a cascade xml (default: OpenCV's frontal-face cascade)")
    g.add_argument("--video-fps", type=float, help="subsample video to at most this frame rate "
                   "(default: every frame)")
    g.add_argument("--detect-every", type=int, default=1,
                   help="run the face detector every k frames, holding the box between")
    g.add_argument("--min-face", type=float, default=0.1,
                   help="smallest face side as a fraction of the frame's shorter side (larger: faster)")


def _add_run_args(e) -> None:
    g = e.add_argument_group("storage and execution")
    g.add_argument("--dtype", default="float16", choices=["float16", "float32"],
                   help="feature storage type: float16 halves the size, float32 keeps full precision")
    g.add_argument("--shard-size", type=int, default=32, help="utterances per shard (resume unit)")
    g.add_argument("--workers", type=int, help="local shard processes run in parallel; 1 runs shards "
                   "one after another in this process (default: one per CPU; 1 when the models run on a GPU)")
    g.add_argument("--ray", action="store_true", help="run shards as Ray tasks (cluster or local) "
                   "instead of local processes")
    g.add_argument("--ray-address", help="with --ray: Ray address (default: start or join a local instance)")
    g.add_argument("--gpus-per-task", type=float, default=0.0,
                   help="with --ray: GPU share per shard task, e.g. 0.25")
    g.add_argument("--device", help="where models run: cpu, cuda or cuda:N (default: cuda when available)")
    g.add_argument("--threads", type=int, help="torch threads per process (default: CPUs / workers)")
    g.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _dest(key: str) -> str:
    return f"corpus_opt_{key}"


def corpus_options_from_args(args) -> dict:
    """{scan keyword: value} for the chosen corpus, from the flags its OPTIONS declare."""
    return {opt.key: getattr(args, _dest(opt.key)) for opt in CORPORA[args.corpus].OPTIONS}


def config_from_args(args) -> ExtractConfig:
    from study.data.features.extract import ExtractConfig
    return ExtractConfig(
        corpus=args.corpus, root=args.root, out=args.out, audio=args.audio, video=args.video,
        audio_model=args.audio_model, audio_layer=args.audio_layer, video_weights=args.video_weights,
        audio_checkpoint=args.audio_checkpoint, audio_norm=args.audio_norm,
        audio_max_seconds=args.audio_max_seconds,
        partition=args.partition, corpus_options=corpus_options_from_args(args),
        face_detector=args.face_detector, face_model=args.face_model, video_fps=args.video_fps,
        detect_every=args.detect_every, min_face=args.min_face, dtype=args.dtype,
        shard_size=args.shard_size, workers=args.workers, ray=args.ray, ray_address=args.ray_address,
        gpus_per_task=args.gpus_per_task, device=args.device, threads=args.threads,
        progress=not args.no_progress)


def run(args) -> int:
    import pandas as pd

    from study.data.dataset import describe as describe_dataset
    from study.data.dataset import open_dataset
    from study.data.features.audio import ModelUnavailable
    from study.data.features.extract import extract
    try:
        out = extract(config_from_args(args))
    except (ImportError, ModelUnavailable, FileNotFoundError, ValueError) as err:  # extra, model, file
        print(f"avstudy features: error: {err}", file=sys.stderr)
        return 1  # runtime: the request is valid, this machine lacks what it needs
    report = pd.read_csv(out / "extraction_report.csv")
    print(f"wrote {out}: {describe_dataset(open_dataset(out))}")
    if len(report):
        print(f"{len(report)} problem(s) in {out / 'extraction_report.csv'}: "
              + ", ".join(f"{k}={v}" for k, v in report["modality"].value_counts().items()))
    return 0
