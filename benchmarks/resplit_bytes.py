"""Bytes written to cut the demo dataset into 5 speaker-disjoint folds, against its feature bytes.

A fold is a resplit dataset (study/data/folds.py): its own manifest.parquet and dataset.json over
the parent's audio.arrow / video.arrow, never a copy. This measures every byte the 5 folds of
`dataset: {folds: {by: speaker, k: 5}}` write (the cache directory of the folds, lock and marker
included), and one `avstudy data resplit --partition CSV`, against the parent's Arrow files.
Target: under 1 % of the feature bytes for the 5 folds.

    .venv/bin/python benchmarks/resplit_bytes.py            # the demo dataset (known-answer, small)
    .venv/bin/python benchmarks/resplit_bytes.py --quick    # the tiny scale (a smoke run)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=5, help="folds")
    ap.add_argument("--quick", action="store_true", help="the tiny scale (a smoke run)")
    return ap.parse_args(argv)


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def run(args: argparse.Namespace) -> dict:
    from study.data.folds import ensure_folds, folds_from_dict, resplit
    from study.data.generate import make_corpus

    scale = "tiny" if args.quick else "small"  # the demo's dataset: search_spaces/demo.yaml
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["AVSTUDY_CACHE"] = str(tmp / "cache")
        data = make_corpus(tmp / "demo", preset="known-answer", scale=scale, seed=0, progress=False)
        features = sum((data / f"{m}.arrow").stat().st_size for m in ("audio", "video"))
        t0 = time.perf_counter()
        dirs = ensure_folds(folds_from_dict({"by": "speaker", "k": args.k}), data)
        seconds = time.perf_counter() - t0
        folds = tree_bytes(Path(dirs[0]).parent)
        m = pd.read_parquet(data / "manifest.parquet")
        part = tmp / "label_consensus_1.csv"
        m[["utt_id", "split"]].to_csv(part, index=False)
        one = tree_bytes(resplit(data, part, tmp / "resplit"))
    res = {"scale": scale, "k": args.k, "feature_bytes": features, "folds_bytes": folds,
           "resplit_bytes": one, "seconds": seconds}
    print(f"{scale} demo dataset: features {features / 1e6:.2f} MB; {args.k} folds wrote "
          f"{folds / 1e3:.1f} kB ({100 * folds / features:.2f} %) in {seconds:.2f} s; one "
          f"`data resplit` {one / 1e3:.1f} kB ({100 * one / features:.2f} %)")
    return res


def summary(res: dict) -> list[dict]:
    """For benchmarks/run_all.py: bytes the folds write / the parent's feature bytes."""
    ratio = res["folds_bytes"] / res["feature_bytes"]
    return [{"measure": f"bytes written for {res['k']} folds ({res['scale']} demo dataset)",
             "alternatives": "fold manifests / feature files", "ratio": ratio, "target": "< 0.01",
             "met": ratio < 0.01},
            {"measure": "bytes written by one `data resplit`",
             "alternatives": "resplit / feature files",
             "ratio": res["resplit_bytes"] / res["feature_bytes"], "target": "< 0.01 (report)",
             "met": None}]


if __name__ == "__main__":
    run(parse_args())
