"""`avstudy features extract ...`: raw corpus -> dataset directory. Wired into study/cli.py."""
from __future__ import annotations

import argparse

from study.data.corpora import CORPORA


def add_subparser(sub) -> None:
    p = sub.add_parser("features", help="feature extraction from raw corpora (CREMA-D, MSP-IMPROV, IEMOCAP)")
    fsub = p.add_subparsers(dest="features_cmd", required=True)
    e = fsub.add_parser("extract", help="scan a raw corpus, extract audio/video features, write a dataset",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("--corpus", required=True, choices=CORPORA)
    e.add_argument("--root", required=True, help="raw corpus folder")
    e.add_argument("--out", required=True, help="dataset directory to write (resumable)")
    e.add_argument("--partition", help="CREMA-D label_consensus_N.csv / MSP-IMPROV labels_consensus_N.csv")
    e.add_argument("--audio", default="wav2vec2", choices=["wav2vec2", "logmel", "none"])
    e.add_argument("--audio-model", default="facebook/wav2vec2-large-robust",
                   help="local directory or hub name of a wav2vec2-family model")
    e.add_argument("--audio-layer", type=int, default=12,
                   help="keep the first N transformer layers (VAVL: 12 of 24)")
    e.add_argument("--video", default="efficientnet", choices=["efficientnet", "pixels", "none"])
    e.add_argument("--video-weights", default="hub",
                   help="efficientnet weights: 'hub' (timm pretrained), a local file, or 'none'")
    e.add_argument("--video-fps", type=float, help="subsample video to at most this frame rate")
    e.add_argument("--detect-every", type=int, default=1, help="run the face detector every k frames")
    e.add_argument("--min-face", type=float, default=0.1,
                   help="smallest face side as a fraction of the frame's shorter side (larger: faster)")
    e.add_argument("--seed", type=int, default=0, help="split seed when there is no partition file")
    e.add_argument("--test-session", type=int, default=5, help="IEMOCAP: the held-out session")
    e.add_argument("--keep-excited", action="store_true",
                   help="IEMOCAP: do not merge excited into happy (excited is then dropped)")
    e.add_argument("--iemocap-task", default="categorical", choices=["categorical", "dimensional"],
                   help="IEMOCAP: dimensional keeps utterances outside the 4 classes")
    e.add_argument("--target-labels", action="store_true",
                   help="MSP-IMPROV: add the elicitation target emotion as a 4-class label")
    e.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    e.add_argument("--shard-size", type=int, default=32, help="utterances per shard (resume unit)")
    e.add_argument("--ray", action="store_true", help="run shards as Ray tasks (cluster or local)")
    e.add_argument("--ray-address", help="Ray address (default: start or join a local instance)")
    e.add_argument("--gpus-per-task", type=float, default=0.0,
                   help="with --ray: GPU share per shard task, e.g. 0.25")
    e.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    e.add_argument("--threads", type=int, help="torch threads per process")
    e.add_argument("--no-progress", action="store_true")


def config_from_args(args) -> "ExtractConfig":
    from study.data.features.extract import ExtractConfig
    return ExtractConfig(
        corpus=args.corpus, root=args.root, out=args.out, audio=args.audio, video=args.video,
        audio_model=args.audio_model, audio_layer=args.audio_layer, video_weights=args.video_weights,
        partition=args.partition, seed=args.seed, test_session=args.test_session,
        merge_excited=not args.keep_excited, task=args.iemocap_task,
        target_labels=args.target_labels, video_fps=args.video_fps, detect_every=args.detect_every,
        min_face=args.min_face,
        dtype=args.dtype, shard_size=args.shard_size, ray=args.ray, ray_address=args.ray_address,
        gpus_per_task=args.gpus_per_task, device=args.device, threads=args.threads,
        progress=not args.no_progress)


def run(args) -> int:
    import pandas as pd

    from study.data.dataset import describe, open_dataset
    from study.data.features.extract import extract
    try:
        out = extract(config_from_args(args))
    except ImportError as err:                     # a media extra that is not installed
        print(f"avstudy features: error: {err}")
        return 2
    report = pd.read_csv(out / "extraction_report.csv")
    print(f"wrote {out}: {describe(open_dataset(out))}")
    if len(report):
        print(f"{len(report)} problem(s) in {out / 'extraction_report.csv'}: "
              + ", ".join(f"{k}={v}" for k, v in report["modality"].value_counts().items()))
    return 0
