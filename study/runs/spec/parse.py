"""Parsing a study spec: YAML (duplicate keys refused) to a validated, frozen `StudySpec`.

Each section has its parser; `spec_from_dict` runs every one of them and reports every problem
at once, each naming its key path (`resources.gpus_per_worker`, `fixed.foal_heads`), with a
did-you-mean for an unknown key. Config keys (`fixed:`, `search:`) are checked by the rules
declared with the keys themselves (study/keys.py, through `study.training.config.key_table`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

from model.config import PRESETS
from model.registry import FUSIONS
from study.data.folds import FoldError, FoldsSpec, folds_from_dict
from study.data.protocol import from_missing_rates
from study.keys import closest, short
from study.runs.spec.checks import consistency
from study.runs.spec.schema import (
    CONDITIONS,
    GPU_AUTO,
    METRICS,
    MODES,
    NAME_RE,
    SCHEDULERS,
    SEARCHERS,
    Budget,
    Cells,
    DatasetSpec,
    FailureSpec,
    Objective,
    Resources,
    SchedulerSpec,
    SearcherSpec,
    SpecError,
    StudySpec,
    TaskSpec,
)
from study.runs.spec.search import parse_search
from study.training.config import flat_config_problems
from study.vocab import PACK_VARIES

# ---------------------------------------------------------------- parsing helpers


def _check_keys(d: Any, allowed: tuple[str, ...], where: str) -> dict:
    if d is None:
        return {}
    if not isinstance(d, Mapping):
        raise SpecError(f"{where}: expected a mapping, got {type(d).__name__}")
    unknown = sorted(set(d) - set(allowed), key=str)
    if unknown:
        hint = closest(unknown[0], allowed) if len(unknown) == 1 else ""
        raise SpecError(f"{where}: unknown key(s) {short(unknown, 200)}{hint}; allowed: {sorted(allowed)}")
    return dict(d)


def _typed(value: Any, kind: type | tuple, where: str) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise SpecError(f"{where}: expected {_names(kinds)}, got bool {value!r}")
    if int in kinds or float in kinds:
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
    if not isinstance(value, kinds):
        raise SpecError(f"{where}: expected {_names(kinds)}, got {type(value).__name__} {short(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(f"{where}: expected a finite number, got {value!r}")
    return value


def _names(kinds: tuple) -> str:
    return " or ".join("null" if k is type(None) else k.__name__ for k in kinds)


def _choice(value: Any, choices: tuple, where: str) -> Any:
    if value not in choices:
        raise SpecError(f"{where}: {short(value)} not one of {list(choices)}")
    return value


def _positive(value: float, where: str, strict: bool = True) -> None:
    if value < 0 or (strict and value == 0):
        raise SpecError(f"{where}: must be {'> 0' if strict else '>= 0'}, got {value}")


def _list(value: Any, kind: type, where: str) -> tuple:
    if not isinstance(value, (list, tuple)) or not value:
        raise SpecError(f"{where}: expected a non-empty list, got {short(value)}")
    return tuple(_typed(v, kind, f"{where}[{i}]") for i, v in enumerate(value))


def _section(raw: Mapping, key: str, cls: type, types: Mapping[str, Any]) -> Any:
    """Fields of dataclass `cls` from raw[key], each type-checked; defaults fill the rest."""
    d = _check_keys(raw.get(key), tuple(types), key)
    return cls(**{k: _typed(v, types[k], f"{key}.{k}") for k, v in d.items()})


# ---------------------------------------------------------------- sections

TOP_KEYS = ("name", "dataset", "task", "model_preset", "spaces", "search", "fixed", "cells", "searcher",
            "scheduler", "budget", "resources", "objectives", "seeds", "top_k", "storage",
            "search_data_conditions", "failure", "optuna_storage", "tracking", "baselines", "search_folds")


def _dataset(raw: Mapping) -> DatasetSpec:
    d = _check_keys(raw.get("dataset"), ("path", "synth", "folds"), "dataset")
    folds = _folds(d)
    if folds is not None and folds.entries and not {"path", "synth"} & set(d):
        d["path"] = folds.entries[0]  # listed fold datasets: the first names classes and dims
    if ("path" in d) == ("synth" in d):
        raise SpecError("dataset: give exactly one of `path` or `synth`")
    if "path" in d:
        return DatasetSpec(path=_typed(d["path"], str, "dataset.path"), folds=folds)
    from study.data.generate import PRESETS as SYNTH_PRESETS

    s = _check_keys(d["synth"], ("preset", "scale", "seed"), "dataset.synth")
    return DatasetSpec(folds=folds,
        synth_preset=_choice(_typed(s.get("preset", "crema-d"), str, "dataset.synth.preset"),
                             tuple(SYNTH_PRESETS), "dataset.synth.preset"),
        synth_scale=_choice(_typed(s.get("scale", "tiny"), str, "dataset.synth.scale"),
                            ("tiny", "small", "full"), "dataset.synth.scale"),
        synth_seed=_typed(s.get("seed", 0), int, "dataset.synth.seed"))


def _folds(d: Mapping) -> FoldsSpec | None:
    """dataset.folds: {by, k, seed, dev, dev_share} or a list of datasets / partition CSVs."""
    if "folds" not in d:
        return None
    try:
        folds = folds_from_dict(d["folds"])
    except FoldError as exc:
        raise SpecError(str(exc)) from None
    csvs = [e for e in folds.entries if e.lower().endswith(".csv")]
    if csvs and "path" not in d and "synth" not in d:
        raise SpecError(f"dataset.folds: partition file {csvs[0]!r} needs the dataset it "
                        "partitions: give dataset.path (or dataset.synth)")
    return folds


def _search_folds(raw: Mapping) -> str:
    if "search_folds" not in raw:
        return "first"
    folds = raw.get("dataset", {}).get("folds") if isinstance(raw.get("dataset"), Mapping) else None
    if folds is None:
        raise SpecError("search_folds: only with dataset.folds (a one-partition study has one fold)")
    return _choice(_typed(raw["search_folds"], str, "search_folds"), ("first", "mean"),
                   "search_folds")


def _task(raw: Mapping) -> TaskSpec:
    t = _section(raw, "task", TaskSpec, {"kind": str, "label_kind": str})
    _choice(t.kind, ("categorical", "dimensional"), "task.kind")
    _choice(t.label_kind, ("hard", "soft"), "task.label_kind")
    return t


def _spaces(raw: Mapping) -> tuple[str, ...]:
    from search_spaces import SPACES

    names = raw.get("spaces") or []
    if not isinstance(names, list):
        raise SpecError(f"spaces: expected a list of space names, got {short(names)}")
    for i, n in enumerate(names):
        _choice(_typed(n, str, f"spaces[{i}]"), tuple(SPACES), f"spaces[{i}]")
    return tuple(names)


def _fixed(raw: Mapping) -> dict:
    d = raw.get("fixed") or {}
    if not isinstance(d, Mapping):
        raise SpecError(f"fixed: expected a mapping of config keys, got {short(d)}")
    problems = flat_config_problems(d, prefix="fixed.")  # the keys' own declared rules
    if problems:
        raise SpecError("; ".join(problems))
    return dict(d)


def _cells(raw: Mapping) -> Cells:
    d = _check_keys(raw.get("cells"), ("fusion", "train_missing_rate", "train_missing"), "cells")
    fusion = _list(d.get("fusion", ["vavl"]), str, "cells.fusion")
    for i, f in enumerate(fusion):
        _choice(f, FUSIONS, f"cells.fusion[{i}]")
    if "train_missing" in d:
        if "train_missing_rate" in d:
            raise SpecError("cells.train_missing: per-modality rates replace cells.train_missing_rate; "
                            "give one of the two")
        return Cells(fusion=fusion, train_missing=_per_modality_cells(d["train_missing"]))
    rates = _list(d.get("train_missing_rate", [0.0]), (int, float), "cells.train_missing_rate")
    rates = tuple(float(r) for r in rates)
    for i, r in enumerate(rates):
        if not 0.0 <= r < 1.0:
            raise SpecError(f"cells.train_missing_rate[{i}]: {r} not in [0, 1)")
    return Cells(fusion=fusion, train_missing_rate=rates)


def _per_modality_cells(items: Any) -> tuple[tuple[float, float], ...]:
    """cells.train_missing: [{audio: p_a, video: p_v}, ...] -> ((p_a, p_v), ...)."""
    items = _list(items, Mapping, "cells.train_missing")
    out = []
    for i, item in enumerate(items):
        where = f"cells.train_missing[{i}]"
        d = _check_keys(item, ("audio", "video"), where)
        pair = (d.get("audio", 0.0), d.get("video", 0.0))
        try:
            from_missing_rates(*pair)
        except ValueError as e:
            raise SpecError(f"{where}.{e}") from None
        out.append((float(pair[0]), float(pair[1])))
    if len(set(out)) != len(out):
        raise SpecError("cells.train_missing: the same (audio, video) pair is listed twice")
    return tuple(out)


def _objectives(raw: Mapping) -> tuple[Objective, ...]:
    task = raw.get("task") if isinstance(raw.get("task"), Mapping) else {}
    kind = task.get("kind", "categorical")
    default = "ccc_mean" if kind == "dimensional" else "macro_f1"  # the task's primary metric
    items = raw.get("objectives", [{"metric": default}])
    if not isinstance(items, list) or not items:
        raise SpecError("objectives: expected a non-empty list")
    out = []
    for i, o in enumerate(items):
        where = f"objectives[{i}]"
        d = dict(_check_keys(o, ("metric", "condition", "mode"), where))
        if d.get("condition") == "mli":  # one metric, lower is better (docs/imbalance.md)
            d = {"metric": "mli", "mode": "min", **d}
        obj = Objective(**{k: _typed(v, str, f"{where}.{k}") for k, v in d.items()})
        _choice(obj.metric, METRICS, f"{where}.metric")
        _choice(obj.condition, CONDITIONS, f"{where}.condition")
        _choice(obj.mode, ("max", "min"), f"{where}.mode")
        out.append(obj)
    if len({o.key for o in out}) != len(out):
        raise SpecError("objectives: the same condition/metric is listed twice")
    return tuple(out)


def _resources(raw: Mapping) -> Resources:
    types = {"workers": int, "cpus_per_worker": (int, float), "gpus_per_worker": (int, float, str),
             "mode": str, "max_concurrent_trials": (int, type(None)), "pack": (int, type(None)),
             "pack_vary": (list, type(None))}
    r = _section(raw, "resources", Resources, types)
    _positive(r.workers, "resources.workers")
    _positive(r.cpus_per_worker, "resources.cpus_per_worker")
    g = r.gpus_per_worker
    if isinstance(g, str):
        if g != GPU_AUTO:
            raise SpecError(f"resources.gpus_per_worker: {g!r} — a number of GPUs, or {GPU_AUTO!r} "
                            "(a share measured by a memory probe at the sweep's start)")
    else:
        _whole_or_fraction(g)
    _choice(r.mode, MODES, "resources.mode")
    if r.mode == "inline" and r.workers != 1:
        raise SpecError(f"resources.mode: inline runs one worker in the trial itself, "
                        f"but resources.workers={r.workers}")
    if r.max_concurrent_trials is not None:
        _positive(r.max_concurrent_trials, "resources.max_concurrent_trials")
    if r.pack is not None:
        _positive(r.pack, "resources.pack")
    if r.pack_vary is not None:
        r = dataclasses.replace(r, pack_vary=tuple(
            _choice(_typed(k, str, f"resources.pack_vary[{i}]"), PACK_VARIES, f"resources.pack_vary[{i}]")
            for i, k in enumerate(r.pack_vary)))
    return r


def _whole_or_fraction(g: float) -> None:
    _positive(g, "resources.gpus_per_worker", strict=False)
    if g > 1 and g != int(g):
        raise SpecError(f"resources.gpus_per_worker: {g} — a fraction must be <= 1 "
                        "(several trials share one GPU), more than one GPU must be whole")


TRACKERS = {  # tracker -> {key: type}; see study/runs/tracking.py
    "mlflow": {"tracking_uri": str, "experiment_name": str, "tags": dict, "save_artifact": bool},
    "wandb": {"project": str, "group": str, "entity": str, "mode": str, "tags": list},
}


def _tracking(raw: Mapping) -> dict:
    """`tracking: {mlflow: {tracking_uri: ...}, wandb: {project: ...}}` (both optional)."""
    d = _check_keys(raw.get("tracking"), tuple(TRACKERS), "tracking")
    out = {}
    for tracker, opts in d.items():
        o = _check_keys(opts, tuple(TRACKERS[tracker]), f"tracking.{tracker}")
        for k, v in o.items():
            _typed(v, TRACKERS[tracker][k], f"tracking.{tracker}.{k}")
        if tracker == "wandb" and "mode" in o:
            _choice(o["mode"], ("online", "offline", "disabled"), "tracking.wandb.mode")
        tags = o.get("tags") or {}
        for k, v in (tags.items() if isinstance(tags, dict) else enumerate(tags)):
            _typed(v, str, f"tracking.{tracker}.tags.{_typed(k, (str, int), f'tracking.{tracker}.tags')}")
        out[tracker] = o
    return out


def _name(raw: Mapping) -> str:
    if "name" not in raw:
        raise SpecError("spec: missing required key `name`")
    name = _typed(raw["name"], str, "name")
    if not NAME_RE.fullmatch(name):
        raise SpecError(f"name: {short(name)} must be 1-100 letters, digits, '_', '-' or '.', "
                        "starting with a letter, digit or '_' (it names a directory)")
    return name


def _budget(raw: Mapping) -> Budget:
    int_types = {"trials_per_cell": int, "max_epochs": int, "rerun_max_epochs": (int, type(None))}
    budget = _section(raw, "budget", Budget, int_types)
    _positive(budget.trials_per_cell, "budget.trials_per_cell")
    _positive(budget.max_epochs, "budget.max_epochs")
    return budget


def _searcher(raw: Mapping) -> SearcherSpec:
    searcher = _section(raw, "searcher", SearcherSpec,
                        {"kind": str, "seed": int, "n_startup_trials": int, "constant_liar": bool})
    _choice(searcher.kind, SEARCHERS, "searcher.kind")
    return searcher


def _scheduler(raw: Mapping) -> SchedulerSpec:
    scheduler = _section(raw, "scheduler", SchedulerSpec,
                         {"kind": str, "grace_period": int, "reduction_factor": int})
    _choice(scheduler.kind, SCHEDULERS, "scheduler.kind")
    _positive(scheduler.grace_period, "scheduler.grace_period")
    if scheduler.reduction_factor < 2:
        raise SpecError(f"scheduler.reduction_factor: must be >= 2, got {scheduler.reduction_factor}")
    return scheduler


def _preset(raw: Mapping) -> str:
    return _choice(_typed(raw.get("model_preset", "paper"), str, "model_preset"), tuple(PRESETS),
                   "model_preset")


def _top_k(raw: Mapping) -> int:
    top_k = _typed(raw.get("top_k", 1), int, "top_k")
    _positive(top_k, "top_k")
    return top_k


def _storage(raw: Mapping) -> str | None:
    storage = raw.get("storage")
    return None if storage is None else _typed(storage, str, "storage")


SECTIONS: dict[str, Callable[[Mapping], Any]] = {
    # StudySpec field -> its parser; every parser runs, so every section's problem is reported
    "name": _name, "dataset": lambda raw: _dataset(raw), "task": lambda raw: _task(raw),
    "model_preset": _preset, "spaces": lambda raw: _spaces(raw), "search": lambda raw: parse_search(raw),
    "fixed": lambda raw: _fixed(raw), "cells": lambda raw: _cells(raw), "searcher": _searcher,
    "scheduler": _scheduler, "budget": _budget, "resources": lambda raw: _resources(raw),
    "objectives": lambda raw: _objectives(raw), "seeds": lambda raw: _list(raw.get("seeds", [0]), int, "seeds"),
    "top_k": _top_k, "storage": _storage,
    "search_data_conditions": lambda raw: _typed(raw.get("search_data_conditions", False), bool,
                                                 "search_data_conditions"),
    "failure": lambda raw: _failure(raw), "optuna_storage": lambda raw: _optuna_storage(raw),
    "tracking": lambda raw: _tracking(raw),
    # `baselines: true|false` (default true): fit the pooled linear probes once per study
    "baselines": lambda raw: _typed(raw.get("baselines", True), bool, "baselines"),
    "search_folds": lambda raw: _search_folds(raw),
}


def spec_from_dict(raw: Any) -> StudySpec:
    """Validate a parsed YAML document into a StudySpec; a SpecError lists every problem, each
    naming its key."""
    raw = _check_keys(raw, TOP_KEYS, "spec")
    if "dataset" not in raw:
        raise SpecError("spec: missing required key `dataset`")
    values, problems = {}, []
    for field_name, parse in SECTIONS.items():
        try:
            values[field_name] = parse(raw)
        except SpecError as exc:
            problems.append(str(exc))
    if problems:
        raise SpecError(_joined(problems))
    spec = StudySpec(**values)
    problems = consistency(spec)
    if problems:
        raise SpecError(_joined(problems))
    return spec


def _joined(problems: list[str]) -> str:
    parts = [p for problem in problems for p in problem.split("; ")] if len(problems) > 1 else problems
    if len(parts) == 1:
        return parts[0]
    return f"{len(parts)} problems:\n" + "\n".join(f"  - {p}" for p in parts)


def _failure(raw: Mapping) -> FailureSpec:
    f = _section(raw, "failure", FailureSpec,
                 {"trial_retries": int, "worker_retries": int, "checkpoint_every": int})
    for key in ("trial_retries", "worker_retries"):
        if getattr(f, key) < -1:
            raise SpecError(f"failure.{key}: must be >= -1 (-1 retries forever), got {getattr(f, key)}")
    _positive(f.checkpoint_every, "failure.checkpoint_every")
    return f


OPTUNA_STORAGES = ("sqlite:///", "postgresql://", "postgresql+psycopg2://", "mysql://",
                   "mysql+pymysql://", "journal:")


def _optuna_storage(raw: Mapping) -> str | None:
    url = raw.get("optuna_storage")
    if url is None:
        return None
    _typed(url, str, "optuna_storage")
    if not url.startswith(OPTUNA_STORAGES):
        raise SpecError(f"optuna_storage: {url!r} is not one of {list(OPTUNA_STORAGES)} "
                        "(an RDB URL, or journal:PATH for Optuna's journal file)")
    return url
