"""Loading a study's results files (any of which may be missing while a study runs)."""
from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from reports.fsio import Location, exists, read_json, read_parquet, read_text

FIXED_CONDITIONS = ("av", "audio_only", "video_only")
LOWER_IS_BETTER = {"loss", "dev_loss"}


@dataclass(frozen=True)
class StudyFiles:
    location: Location
    meta: dict  # study.json, {} when missing
    spec_text: str | None  # spec.yaml as written
    results: pd.DataFrame | None
    curves: pd.DataFrame | None
    problems: tuple[str, ...]  # human-readable notes about missing/unreadable files


def _try(loc: Location, reader, problems: list[str]):
    name = loc.path.rsplit("/", 1)[-1]
    if not exists(loc):
        problems.append(f"{name} is missing")
        return None
    try:
        return reader(loc)
    except Exception as e:  # a file being written by a running study, or corrupt
        problems.append(f"{name} could not be read ({type(e).__name__}: {e})")
        return None


def load_study(loc: Location) -> StudyFiles:
    problems: list[str] = []
    meta = _try(loc.join("study.json"), read_json, problems) or {}
    spec_text = _try(loc.join("spec.yaml"), read_text, problems)
    results = _try(loc.join("results.parquet"), read_parquet, problems)
    curves = _try(loc.join("curves.parquet"), read_parquet, problems)
    return StudyFiles(loc, meta, spec_text, results, curves, tuple(problems))


# ---------------------------------------------------------------- what to rank by

@dataclass(frozen=True)
class Context:
    name: str
    status: str
    task: str  # "categorical" | "dimensional"
    metric: str  # primary metric column, e.g. "macro_f1"
    condition: str  # selection condition of the objective, e.g. "av"
    maximize: bool
    classes: tuple[str, ...]  # class order of confusion matrices


def _objective(meta: dict) -> dict:
    objs = meta.get("objectives") or []
    first = objs[0] if objs else {}
    if isinstance(first, str):  # e.g. "dev/av/macro_f1" or "macro_f1"
        parts = re.split(r"[/:.]", first)
        cond = next((p for p in parts if p in FIXED_CONDITIONS or p.startswith("miss_") or p == "robustness"), None)
        return {"condition": cond, "metric": parts[-1]}
    return first if isinstance(first, dict) else {}


def _classes(meta: dict, results: pd.DataFrame | None) -> tuple[str, ...]:
    for src in (meta, meta.get("spec") or {}):
        if isinstance(src.get("classes"), list) and src["classes"]:
            return tuple(str(c) for c in src["classes"])
    if results is None:
        return ()
    return tuple(c[len("f1__"):] for c in results.columns if c.startswith("f1__"))


def _default_metric(task: str, results: pd.DataFrame | None) -> str:
    if results is not None:
        for m in ("macro_f1", "ccc_mean", "uar", "accuracy"):
            if m in results.columns and results[m].notna().any():
                return m
    return "ccc_mean" if task == "dimensional" else "macro_f1"


def make_context(files: StudyFiles) -> Context:
    meta, res = files.meta, files.results
    task = str(meta.get("task") or (meta.get("spec") or {}).get("task") or "")
    obj = _objective(meta)
    metric = str(meta.get("primary_metric") or obj.get("metric") or _default_metric(task, res))
    if not task:
        task = "dimensional" if metric.startswith("ccc") else "categorical"
    # study/ writes {"mode": "max"|"min"}; "direction": "maximize"|"minimize" is accepted too
    direction = str(obj.get("direction") or obj.get("mode") or ("min" if metric in LOWER_IS_BETTER else "max"))
    name = str(meta.get("name") or files.location.uri.rstrip("/").rsplit("/", 1)[-1])
    return Context(name=name, status=str(meta.get("status") or "unknown"), task=task, metric=metric,
                   condition=str(obj.get("condition") or "av"), maximize=not direction.startswith("min"),
                   classes=_classes(meta, res))
