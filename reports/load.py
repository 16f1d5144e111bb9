"""Loading a study's results files (any of which may be missing while a study runs)."""
from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from reports.fsio import Location, exists, read_json, read_parquet, read_text
from study.vocab import NAMED_CONDITIONS

FIXED_CONDITIONS = NAMED_CONDITIONS  # study/vocab.py
LOWER_IS_BETTER = {"loss", "dev_loss"}
# columns every results.parquet row has (docs/CONTRACTS.md); without one no section can be built
RESULT_COLUMNS = ("trial_id", "stage", "status", "split", "condition")


@dataclass(frozen=True)
class StudyFiles:
    location: Location
    meta: dict  # study.json, {} when missing
    spec_text: str | None  # spec.yaml as written
    results: pd.DataFrame | None
    curves: pd.DataFrame | None
    problems: tuple[str, ...]  # human-readable notes about missing/unreadable files
    unreadable: tuple[str, ...] = ()  # names of files that exist but could not be read


class StudyError(Exception):
    """A path that is not a readable study directory; the message names the path or file."""


def _try(loc: Location, reader, problems: list[str], unreadable: list[str]):
    name = loc.path.rsplit("/", 1)[-1]
    if not exists(loc):
        problems.append(f"{name} is missing")
        return None
    try:
        return reader(loc)
    except Exception as e:  # a file being written by a running study, or corrupt
        problems.append(f"{name} could not be read ({type(e).__name__}: {e})")
        unreadable.append(name)
        return None


def _read_meta(loc: Location) -> dict:
    meta = read_json(loc)
    if not isinstance(meta, dict):
        raise ValueError(f"expected a JSON object, got {type(meta).__name__}")
    return meta


def _read_results(loc: Location) -> pd.DataFrame:
    df = read_parquet(loc)
    missing = [c for c in RESULT_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"lacks column(s) {', '.join(map(repr, missing))}; every results.parquet has "
                         f"{', '.join(RESULT_COLUMNS)} (docs/CONTRACTS.md)")
    return df


def load_study(loc: Location) -> StudyFiles:
    problems: list[str] = []
    bad: list[str] = []
    meta = _try(loc.join("study.json"), _read_meta, problems, bad) or {}
    spec_text = _try(loc.join("spec.yaml"), read_text, problems, bad)
    results = _try(loc.join("results.parquet"), _read_results, problems, bad)
    curves = _try(loc.join("curves.parquet"), read_parquet, problems, bad)
    return StudyFiles(loc, meta, spec_text, results, curves, tuple(problems), tuple(bad))


def check_study(loc: Location) -> StudyFiles:
    """load_study for `avstudy report`: raises StudyError when the path does not exist, is not a
    directory, holds neither study.json nor results.parquet, or its study.json / results.parquet
    cannot be read (a study that has only just started, with study.json alone, is fine)."""
    from pyarrow.fs import FileType

    info = loc.fs.get_file_info(loc.path)
    if info.type == FileType.NotFound and not exists(loc.join("study.json")):  # (object stores: no dirs)
        raise StudyError(f"{loc.uri}: no such study directory")
    if info.type == FileType.File:
        raise StudyError(f"{loc.uri}: not a directory (give the study directory that holds study.json)")
    files = load_study(loc)
    if not (exists(loc.join("study.json")) or exists(loc.join("results.parquet"))):
        raise StudyError(f"{loc.uri}: not a study directory (no study.json and no results.parquet)")
    broken = broken_files(files)
    if broken:
        raise StudyError(f"{loc.uri}: broken study directory: " + "; ".join(broken))
    return files


def broken_files(files: StudyFiles) -> list[str]:
    """The problems of study.json / results.parquet files that exist but cannot be read."""
    return [p for p in files.problems if p.split(" ")[0] in ("study.json", "results.parquet")
            and p.split(" ")[0] in files.unreadable]


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
    objectives: tuple[tuple[str, str, bool], ...] = ()  # every declared (condition, metric, maximize)


def _parse_objective(o) -> dict:
    if isinstance(o, str):  # e.g. "dev/av/macro_f1" or "macro_f1"
        parts = re.split(r"[/:.]", o)
        named = (*FIXED_CONDITIONS, "robustness", "worst_single")
        cond = next((p for p in parts if p in named or p.startswith(("miss_", "robustness_"))), None)
        return {"condition": cond, "metric": parts[-1]}
    return o if isinstance(o, dict) else {}


def _objective(meta: dict) -> dict:
    objs = meta.get("objectives") or []
    return _parse_objective(objs[0]) if isinstance(objs, list) and objs else {}


def _maximize(obj: dict, metric: str) -> bool:
    # study/ writes {"mode": "max"|"min"}; "direction": "maximize"|"minimize" is accepted too
    direction = str(obj.get("direction") or obj.get("mode") or ("min" if metric in LOWER_IS_BETTER else "max"))
    return not direction.startswith("min")


def _all_objectives(meta: dict, metric: str) -> tuple[tuple[str, str, bool], ...]:
    objs = meta.get("objectives") if isinstance(meta.get("objectives"), list) else []
    out = []
    for o in map(_parse_objective, objs):
        m = str(o.get("metric") or metric)
        out.append((str(o.get("condition") or "av"), m, _maximize(o, m)))
    return tuple(out)


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
    # rank by the first objective as the study did (its metric and mode): the primary metric with
    # the objective's mode would rank macro-F1 ascending for a `loss, mode: min` study
    metric = str(obj.get("metric") or meta.get("primary_metric") or _default_metric(task, res))
    if not task:
        task = "dimensional" if metric.startswith("ccc") else "categorical"
    name = str(meta.get("name") or files.location.uri.rstrip("/").rsplit("/", 1)[-1])
    return Context(name=name, status=str(meta.get("status") or "unknown"), task=task, metric=metric,
                   condition=str(obj.get("condition") or "av"), maximize=_maximize(obj, metric),
                   classes=_classes(meta, res), objectives=_all_objectives(meta, metric))
