"""`avstudy status STUDY_DIR`: progress of a running or finished study, per stage and cell.

Reads the live progress files that each Tune experiment's ProgressCallback writes
(`STUDY_DIR/progress/<experiment>.json`) and the stage done-markers; never touches Ray.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from pathlib import Path

COLUMNS = ("stage", "cell", "done", "early_stopped", "running", "pending", "failed", "best",
           "finished")


def progress_rows(study_dir: str | Path) -> list[dict]:
    """One dict per experiment: counts by trial status and the best objective value so far."""
    study_dir = Path(study_dir)
    rows = []
    for path in sorted((study_dir / "progress").glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):  # being replaced, or damaged: skip it this time
            continue
        if not isinstance(doc, dict):
            continue
        trials = [t for t in (doc.get("trials") or {}).values() if isinstance(t, dict)]
        counts: Counter = Counter()
        for t in trials:  # a pack trial counts as its members
            counts[t.get("status")] += int(t.get("members", 1))
        count = counts.__getitem__
        scores = [t["score"] for t in trials
                  if isinstance(t.get("score"), (int, float)) and math.isfinite(t["score"])]
        best = (max(scores) if doc.get("mode", "max") == "max" else min(scores)) if scores else None
        rows.append({
            "key": path.stem, "stage": doc.get("stage", path.stem), "cell": doc.get("cell", "-"),
            "done": count("done"), "early_stopped": count("early_stopped"),
            "running": count("running") + count("retrying"), "retrying": count("retrying"),
            "pending": count("pending"),
            "failed": count("failed"), "best": best, "score_key": doc.get("score_key"),
            "finished": (study_dir / "stages" / f"{path.stem}.done").exists(),
            "folds": len({f for t in trials for f in t.get("folds", [t["fold"]] if "fold" in t else [])})
            or None,
        })
    return rows


def progress_table(study_dir: str | Path) -> str:
    study_dir = Path(study_dir)
    head = _head(study_dir / "study.json")
    rows = progress_rows(study_dir)
    if not rows:
        return head + "no trials yet"
    columns = COLUMNS + (("folds",) if any(r["folds"] for r in rows) else ())
    cells = [[_fmt(r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths))
    keys = sorted({r["score_key"] for r in rows if r["score_key"]})
    foot = f"\nbest = best-epoch {', '.join(keys)} on dev" if keys else ""
    return head + "\n".join([line(columns)] + [line(c) for c in cells]) + foot


def _head(meta: Path) -> str:
    """The study's name, status and start from study.json; a line naming it when damaged."""
    if not meta.exists():
        return ""
    try:
        doc = json.loads(meta.read_text())
        head = f"study {doc['name']}: {doc['status']} (started {doc['started_at']})\n"
        folds = doc.get("folds")
        return head + (f"folds: {folds['text']}\n" if folds else "")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        why = f"{type(exc).__name__}: {exc}" if not isinstance(exc, KeyError) else f"no key {exc}"
        return f"{meta}: unreadable study.json ({why}); progress files below\n"


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4f}"
    return "-" if v is None else str(v)


def add_subparser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("status", help="progress table of a study (per stage and cell)")
    p.add_argument("study_dir", help="STUDY_DIR of a running or finished study")
    p.add_argument("--format", default="text", choices=["text", "json"],
                   help="json: one object with the fields of docs/CONTRACTS.md (for scripts and CI)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if not Path(args.study_dir).is_dir():
        print(f"avstudy status: error: no such study directory: {args.study_dir}", file=sys.stderr)
        return 1
    if getattr(args, "format", "text") == "json":
        print(json.dumps(progress_doc(args.study_dir), indent=1))
    else:
        print(progress_table(args.study_dir))
    return 0


def progress_doc(study_dir: str | Path) -> dict:
    """`avstudy status --format json`: the study's name/status and one row per experiment."""
    meta = Path(study_dir) / "study.json"
    doc = json.loads(meta.read_text()) if meta.exists() else {}
    return {"study": doc.get("name"), "status": doc.get("status"), "started_at": doc.get("started_at"),
            "overrides": doc.get("overrides", {}), "experiments": progress_rows(study_dir)}
