"""`avstudy predict` command line (torch-free until it runs): arguments, output CSV, messages."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_subparser(sub) -> None:
    p = sub.add_parser("predict", help="a trained model's per-clip predictions on new media files")
    p.add_argument("clips", nargs="+", type=Path,
                   help="media files or directories (x.wav + x.flv: one clip; a lone video: both streams)")
    p.add_argument("--model", required=True, type=Path,
                   help="directory with session.pt: `avstudy train --out` (its record.json gives the "
                        "config) or a trial checkpoint (pass --config)")
    p.add_argument("--data", required=True, type=Path,
                   help="the dataset the model was trained on: its extractor, classes and training "
                        "statistics are applied to the clips")
    p.add_argument("--config", type=Path,
                   help="flat config file (e.g. from `avstudy export-best`) when --model has no record.json")
    p.add_argument("--modalities", default="av", choices=["av", "audio", "video"],
                   help="streams to use; the model predicts through its missing-modality path")
    p.add_argument("--out", type=Path, help="CSV of the predictions (default: print a table)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")


def run(args: argparse.Namespace) -> int:
    if args.out is not None and args.out.exists() and not args.overwrite:
        raise FileExistsError(f"--out {args.out}: exists; pass --overwrite to replace it")
    from study.training.predict import clips_of, load_model, predict_clips

    config = _flat_config(args.config) if args.config else None
    clips = clips_of(args.clips)
    session = load_model(args.model, args.data, config, device=args.device)
    table = predict_clips(session, clips, args.modalities)
    bad = table["error"].notna() & (table["streams"] == "")
    for _, row in table[table["error"].notna()].iterrows():
        print(f"avstudy predict: {row['clip']}: {row['error']}", file=sys.stderr)
    if args.out is not None:
        from study.fsio import atomic_write_text
        atomic_write_text(args.out, table.to_csv(index=False))
        print(f"{len(table) - int(bad.sum())} of {len(table)} clips predicted: {args.out}")
    else:
        print(table.drop(columns=["audio_path", "video_path"]).to_string(index=False))
    return 1 if bad.all() else 0


def _flat_config(path: Path) -> dict:
    """The flat config keys of a YAML/JSON file (export-best's output)."""
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {str(exc)[:300]}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping of config keys, got {type(loaded).__name__}")
    return loaded
