"""Study spec: a YAML file validated on load into frozen dataclasses.

Every error names the offending key path (e.g. `resources.gpus_per_worker`), so a typo or an
impossible request fails before any trial starts, not an hour into a sweep.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from model.config import PRESETS
from model.registry import FUSIONS
from study.runs.storage import join_uri
from study.training.config import FLAT_KEYS, check_flat, objective_key, primary_metric
from study.training.rules import clip, short

NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
SEARCHERS = ("optuna-tpe", "random", "grid")
SCHEDULERS = ("asha", "moasha", "none")  # moasha: multi-objective ASHA (study/runs/schedulers.py)
MODES = ("auto", "inline", "train")
CONDITIONS = ("av", "audio_only", "video_only", "worst_single", "robustness") + tuple(
    f"miss_{r / 10:.1f}" for r in range(10))
METRICS = ("macro_f1", "accuracy", "uar", "loss", "ccc_mean", "ccc_arousal", "ccc_valence",
           "ccc_dominance")


class SpecError(ValueError):
    """A study spec that cannot run; the message names the key."""


@dataclass(frozen=True)
class DatasetSpec:
    path: str | None = None  # directory in the dataset format (docs/CONTRACTS.md)
    synth_preset: str = "crema-d"  # used when path is None: built-in synthetic corpus
    synth_scale: str = "tiny"
    synth_seed: int = 0

    @property
    def is_synth(self) -> bool:
        return self.path is None


@dataclass(frozen=True)
class TaskSpec:
    kind: str = "categorical"  # or "dimensional"
    label_kind: str = "hard"  # categorical: "hard" | "soft"; dimensional: ignored


@dataclass(frozen=True)
class Cells:
    fusion: tuple[str, ...] = ("vavl",)
    train_missing_rate: tuple[float, ...] = (0.0,)

    def items(self) -> list[dict]:
        """[{fusion, train_missing_rate}] in spec order (fusion-major)."""
        return [{"fusion": f, "train_missing_rate": r}
                for f, r in itertools.product(self.fusion, self.train_missing_rate)]


@dataclass(frozen=True)
class SearcherSpec:
    kind: str = "optuna-tpe"
    seed: int = 0
    n_startup_trials: int = 4  # TPE: random trials before the model kicks in
    constant_liar: bool = True  # TPE: running trials count as poor results, so parallel asks differ


@dataclass(frozen=True)
class SchedulerSpec:
    kind: str = "asha"
    grace_period: int = 1  # epochs every trial gets before it may be stopped
    reduction_factor: int = 2


@dataclass(frozen=True)
class Budget:
    trials_per_cell: int = 8
    max_epochs: int = 10
    rerun_max_epochs: int | None = None  # defaults to max_epochs


@dataclass(frozen=True)
class Resources:
    workers: int = 1  # Ray Train workers per trial
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0  # fractional (e.g. 0.25) lets several trials share one GPU
    mode: str = "auto"  # auto: inline when 1 worker and no GPU, else Ray Train worker group
    max_concurrent_trials: int | None = None  # None: computed from the cluster (see max_concurrent)

    @property
    def inline(self) -> bool:
        if self.mode == "auto":
            return self.workers == 1 and self.gpus_per_worker == 0
        return self.mode == "inline"


@dataclass(frozen=True)
class Objective:
    metric: str = "macro_f1"
    condition: str = "av"  # or worst_single = min(audio_only, video_only)
    mode: str = "max"

    @property
    def key(self) -> str:
        """The name this objective is reported under to Tune / Optuna."""
        return objective_key(self.condition, self.metric)


@dataclass(frozen=True)
class FailureSpec:
    """Fault tolerance, suited to spot nodes: a failed trial (node lost, worker killed, error)
    restarts from its last checkpoint up to `trial_retries` times (Tune), and a Ray Train worker
    group restarts up to `worker_retries` times (Train) before the trial itself fails. -1 retries
    forever. A deterministic error (bad config, diverged loss) is retried too, then recorded."""
    trial_retries: int = 3
    worker_retries: int = 3
    checkpoint_every: int = 1  # epochs between checkpoints (the last epoch always saves one)


@dataclass(frozen=True)
class StudySpec:
    name: str
    dataset: DatasetSpec
    task: TaskSpec = TaskSpec()
    model_preset: str = "paper"
    spaces: tuple[str, ...] = ()
    fixed: Mapping[str, Any] = field(default_factory=dict)
    cells: Cells = Cells()
    searcher: SearcherSpec = SearcherSpec()
    scheduler: SchedulerSpec = SchedulerSpec()
    budget: Budget = Budget()
    resources: Resources = Resources()
    objectives: tuple[Objective, ...] = (Objective(),)
    seeds: tuple[int, ...] = (0,)
    top_k: int = 1  # configurations per cell re-run over the seeds
    storage: str | None = None  # local dir or s3://bucket/prefix for Ray's experiment files
    search_data_conditions: bool = False  # opt-in: a space may search audio_only_share in a cell
    failure: FailureSpec = FailureSpec()
    # None: sqlite STUDY_DIR/optuna.db (WAL); or an RDB URL (postgresql://...) or journal:PATH
    optuna_storage: str | None = None
    # opt-in experiment tracking through Ray's logger callbacks (study/runs/tracking.py)
    tracking: Mapping[str, Any] = field(default_factory=dict)

    @property
    def primary_metric(self) -> str:
        return primary_metric(self.task.kind)

    def to_dict(self) -> dict:
        """The spec as a plain dict in the YAML layout (round-trips through spec_from_dict)."""
        d = dataclasses.asdict(self)
        d["fixed"] = dict(self.fixed)
        ds = self.dataset
        d["dataset"] = ({"path": ds.path} if ds.path is not None else {"synth": {
            "preset": ds.synth_preset, "scale": ds.synth_scale, "seed": ds.synth_seed}})
        if not self.search_data_conditions:  # the default: spec.yaml of older studies unchanged
            d.pop("search_data_conditions")
        d["tracking"] = {k: dict(v) for k, v in self.tracking.items()}
        for key, default in (("failure", FailureSpec()), ("optuna_storage", None), ("tracking", {})):
            if getattr(self, key) == default:  # spec.yaml of older studies unchanged
                d.pop(key)
        return _plain(d)


def _plain(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


# ---------------------------------------------------------------- parsing helpers


def _check_keys(d: Any, allowed: tuple[str, ...], where: str) -> dict:
    if d is None:
        return {}
    if not isinstance(d, Mapping):
        raise SpecError(f"{where}: expected a mapping, got {type(d).__name__}")
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {short(unknown, 200)}; allowed: {sorted(allowed)}")
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

TOP_KEYS = ("name", "dataset", "task", "model_preset", "spaces", "fixed", "cells", "searcher",
            "scheduler", "budget", "resources", "objectives", "seeds", "top_k", "storage",
            "search_data_conditions", "failure", "optuna_storage", "tracking")


def _dataset(raw: Mapping) -> DatasetSpec:
    d = _check_keys(raw.get("dataset"), ("path", "synth"), "dataset")
    if ("path" in d) == ("synth" in d):
        raise SpecError("dataset: give exactly one of `path` or `synth`")
    if "path" in d:
        return DatasetSpec(path=_typed(d["path"], str, "dataset.path"))
    s = _check_keys(d["synth"], ("preset", "scale", "seed"), "dataset.synth")
    return DatasetSpec(
        synth_preset=_typed(s.get("preset", "crema-d"), str, "dataset.synth.preset"),
        synth_scale=_choice(_typed(s.get("scale", "tiny"), str, "dataset.synth.scale"),
                            ("tiny", "small", "full"), "dataset.synth.scale"),
        synth_seed=_typed(s.get("seed", 0), int, "dataset.synth.seed"))


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
    for k in d:
        if k not in FLAT_KEYS:
            raise SpecError(f"fixed.{clip(str(k), 60)}: unknown config key (not a ModelConfig, protocol "
                            "or training field)")
    try:  # the same per-key rules as every trial config (study/training/rules.py)
        check_flat(d, prefix="fixed.")
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    return dict(d)


def _cells(raw: Mapping) -> Cells:
    d = _check_keys(raw.get("cells"), ("fusion", "train_missing_rate"), "cells")
    fusion = _list(d.get("fusion", ["vavl"]), str, "cells.fusion")
    for i, f in enumerate(fusion):
        _choice(f, FUSIONS, f"cells.fusion[{i}]")
    rates = _list(d.get("train_missing_rate", [0.0]), (int, float), "cells.train_missing_rate")
    rates = tuple(float(r) for r in rates)
    for i, r in enumerate(rates):
        if not 0.0 <= r < 1.0:
            raise SpecError(f"cells.train_missing_rate[{i}]: {r} not in [0, 1)")
    return Cells(fusion=fusion, train_missing_rate=rates)


def _objectives(raw: Mapping, task: str = "categorical") -> tuple[Objective, ...]:
    items = raw.get("objectives", [{"metric": primary_metric(task)}])  # default: the task's metric
    if not isinstance(items, list) or not items:
        raise SpecError("objectives: expected a non-empty list")
    out = []
    for i, o in enumerate(items):
        where = f"objectives[{i}]"
        d = _check_keys(o, ("metric", "condition", "mode"), where)
        obj = Objective(**{k: _typed(v, str, f"{where}.{k}") for k, v in d.items()})
        _choice(obj.metric, METRICS, f"{where}.metric")
        _choice(obj.condition, CONDITIONS, f"{where}.condition")
        _choice(obj.mode, ("max", "min"), f"{where}.mode")
        out.append(obj)
    if len({o.key for o in out}) != len(out):
        raise SpecError("objectives: the same condition/metric is listed twice")
    return tuple(out)


def _resources(raw: Mapping) -> Resources:
    types = {"workers": int, "cpus_per_worker": (int, float), "gpus_per_worker": (int, float),
             "mode": str, "max_concurrent_trials": (int, type(None))}
    r = _section(raw, "resources", Resources, types)
    _positive(r.workers, "resources.workers")
    _positive(r.cpus_per_worker, "resources.cpus_per_worker")
    _positive(r.gpus_per_worker, "resources.gpus_per_worker", strict=False)
    g = r.gpus_per_worker
    if g > 1 and g != int(g):
        raise SpecError(f"resources.gpus_per_worker: {g} — a fraction must be <= 1 "
                        "(several trials share one GPU), more than one GPU must be whole")
    _choice(r.mode, MODES, "resources.mode")
    if r.mode == "inline" and r.workers != 1:
        raise SpecError(f"resources.mode: inline runs one worker in the trial itself, "
                        f"but resources.workers={r.workers}")
    if r.max_concurrent_trials is not None:
        _positive(r.max_concurrent_trials, "resources.max_concurrent_trials")
    return r


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


def _consistency(spec: StudySpec) -> None:
    if spec.searcher.kind == "grid" and spec.spaces:
        raise SpecError("spaces: searcher.kind=grid runs each cell with the `fixed` params "
                        "only; leave `spaces` empty or use optuna-tpe/random")
    if spec.searcher.kind != "grid" and not spec.spaces:
        raise SpecError(f"spaces: searcher.kind={spec.searcher.kind} needs at least one space")
    clash = sorted(set(spec.fixed) & {"fusion", "train_missing_rate", "max_epochs", "seed",
                                       "task", "label_kind", "select_condition", "select_metric",
                                       "select_mode"})
    if clash:
        raise SpecError(f"fixed.{clash[0]}: set by cells/budget/seeds/task/objectives, not by "
                        "`fixed`")
    _data_conditions(spec)
    _objective_task(spec)
    if spec.scheduler.kind == "asha" and spec.scheduler.grace_period > spec.budget.max_epochs:
        raise SpecError(f"scheduler.grace_period: {spec.scheduler.grace_period} > "
                        f"budget.max_epochs={spec.budget.max_epochs}")
    if spec.top_k > spec.budget.trials_per_cell:  # top_k is chosen per cell
        raise SpecError(f"top_k: {spec.top_k} > trials_per_cell={spec.budget.trials_per_cell}")


def _objective_task(spec: StudySpec) -> None:
    """An objective's metric must be one the task reports (ccc_* only for dimensional)."""
    for i, o in enumerate(spec.objectives):
        dimensional = o.metric.startswith("ccc_")
        if o.metric != "loss" and dimensional != (spec.task.kind == "dimensional"):
            fits = [m for m in METRICS if m == "loss" or m.startswith("ccc_") == (spec.task.kind == "dimensional")]
            raise SpecError(f"objectives[{i}].metric: {o.metric!r} is not reported for task.kind="
                            f"{spec.task.kind}; choose from {', '.join(fits)}")


def _data_conditions(spec: StudySpec) -> None:
    """A data condition (train_missing_rate, audio_only_share) is a cell dimension or fixed;
    searching one inside a cell needs `search_data_conditions: true`."""
    from search_spaces import DATA_CONDITIONS, space_keys

    if spec.search_data_conditions:
        return
    for i, name in enumerate(spec.spaces):
        searched = sorted((space_keys(name) & set(DATA_CONDITIONS)) - set(spec.fixed) - {
            "train_missing_rate"})  # a cell dimension, always fixed by the cell
        if searched:
            raise SpecError(f"spaces[{i}]: {name!r} searches the data condition(s) {searched} "
                            "inside each cell; fix them under `fixed`, or set "
                            "`search_data_conditions: true` (the report flags it)")


def spec_from_dict(raw: Any) -> StudySpec:
    """Validate a parsed YAML document into a StudySpec (raises SpecError naming the key)."""
    raw = _check_keys(raw, TOP_KEYS, "spec")
    if "name" not in raw or "dataset" not in raw:
        raise SpecError(f"spec: missing required key `{'name' if 'name' not in raw else 'dataset'}`")
    name = _typed(raw["name"], str, "name")
    if not NAME_RE.fullmatch(name):
        raise SpecError(f"name: {short(name)} must be 1-100 letters, digits, '_', '-' or '.', "
                        "starting with a letter, digit or '_' (it names a directory)")
    int_types = {"trials_per_cell": int, "max_epochs": int, "rerun_max_epochs": (int, type(None))}
    budget = _section(raw, "budget", Budget, int_types)
    _positive(budget.trials_per_cell, "budget.trials_per_cell")
    _positive(budget.max_epochs, "budget.max_epochs")
    searcher = _section(raw, "searcher", SearcherSpec,
                        {"kind": str, "seed": int, "n_startup_trials": int, "constant_liar": bool})
    _choice(searcher.kind, SEARCHERS, "searcher.kind")
    scheduler = _section(raw, "scheduler", SchedulerSpec,
                         {"kind": str, "grace_period": int, "reduction_factor": int})
    _choice(scheduler.kind, SCHEDULERS, "scheduler.kind")
    _positive(scheduler.grace_period, "scheduler.grace_period")
    if scheduler.reduction_factor < 2:
        raise SpecError(f"scheduler.reduction_factor: must be >= 2, got {scheduler.reduction_factor}")
    preset = _choice(_typed(raw.get("model_preset", "paper"), str, "model_preset"),
                     tuple(PRESETS), "model_preset")
    seeds = _list(raw.get("seeds", [0]), int, "seeds")
    top_k = _typed(raw.get("top_k", 1), int, "top_k")
    _positive(top_k, "top_k")
    storage = raw.get("storage")
    if storage is not None:
        _typed(storage, str, "storage")
    search_dc = _typed(raw.get("search_data_conditions", False), bool, "search_data_conditions")
    task = _task(raw)
    spec = StudySpec(name=name, dataset=_dataset(raw), task=task, model_preset=preset,
                     spaces=_spaces(raw), fixed=_fixed(raw), cells=_cells(raw),
                     searcher=searcher, scheduler=scheduler, budget=budget,
                     resources=_resources(raw), objectives=_objectives(raw, task.kind), seeds=seeds,
                     top_k=top_k, storage=storage, search_data_conditions=search_dc)
    spec = dataclasses.replace(spec, failure=_failure(raw), optuna_storage=_optuna_storage(raw))
    spec = dataclasses.replace(spec, tracking=_tracking(raw))
    _consistency(spec)
    return spec


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


def load_spec(path: str | Path, cluster: Mapping[str, float] | None = None) -> StudySpec:
    """Read and validate a YAML spec; with `cluster` ({"CPU", "GPU"}) also check it fits."""
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(), Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except (yaml.YAMLError, RecursionError) as exc:
        raise SpecError(f"{path}: not valid YAML: {clip(str(exc), 500)}") from None
    except (UnicodeDecodeError, IsADirectoryError) as exc:
        raise SpecError(f"{path}: not a readable YAML text file ({type(exc).__name__})") from None
    try:
        spec = spec_from_dict(raw)
        if cluster is not None:
            check_resources(spec, cluster)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None
    except RecursionError:
        raise SpecError(f"{path}: nested too deeply") from None
    return spec


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that rejects a key given twice in one mapping (YAML silently keeps the
    last one, so a spec with two `budget:` blocks would run the wrong budget)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the base class reports it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {short(key)}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def check_resources(spec: StudySpec, cluster: Mapping[str, float]) -> None:
    """Raise SpecError when one trial asks for more than the whole cluster has."""
    r = spec.resources
    cpus, gpus = float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0))
    need_gpu = r.workers * r.gpus_per_worker
    if need_gpu > gpus + 1e-9:
        raise SpecError(f"resources.gpus_per_worker: a trial needs {need_gpu:g} GPU(s) "
                        f"({r.workers} worker(s) x {r.gpus_per_worker:g}) but the cluster has "
                        f"{gpus:g}")
    need_cpu = r.workers * r.cpus_per_worker
    if need_cpu > cpus + 1e-9:
        raise SpecError(f"resources.cpus_per_worker: a trial needs {need_cpu:g} CPU(s) "
                        f"({r.workers} worker(s) x {r.cpus_per_worker:g}) but the cluster has "
                        f"{cpus:g}")


def max_concurrent(spec: StudySpec, cluster: Mapping[str, float]) -> int:
    """Trials that run at once.

    Computed from the cluster's resources: drivers hold no CPU/GPU, so only workers count and
    a driver never holds what its own workers wait for. An explicit
    `resources.max_concurrent_trials` is taken as given instead: on an autoscaling cluster
    (cluster.yaml, min_workers: 0) it is the capacity the cluster will grow to, which
    `ray.cluster_resources()` cannot see yet.
    """
    r = spec.resources
    if r.max_concurrent_trials:
        return r.max_concurrent_trials
    check_resources(spec, cluster)
    fits = [math.floor(float(cluster.get("CPU", 0)) / (r.workers * r.cpus_per_worker) + 1e-9)]
    if r.gpus_per_worker > 0:
        fits.append(math.floor(float(cluster.get("GPU", 0)) / (r.workers * r.gpus_per_worker)
                               + 1e-9))
    return max(1, min(fits))


# ---------------------------------------------------------------- locations


def study_remote(spec: StudySpec) -> str | None:
    """Where a study lives besides its working copy: `storage` (a URI) + NAME, or None."""
    if spec.storage is None or "://" not in spec.storage:
        return None
    return join_uri(spec.storage, spec.name)


def study_paths(spec: StudySpec, out: str | Path | None) -> tuple[Path, str]:
    """(STUDY_DIR, Ray storage path). With a URI `storage`, STUDY_DIR is the driver's working
    copy, mirrored to `<storage>/NAME/` (study/runs/storage.py), and Ray writes to
    `<storage>/NAME/ray/`, the same layout as a local study."""
    remote = study_remote(spec)
    if out is not None:
        study_dir = Path(out)
    elif spec.storage and not remote:
        study_dir = Path(spec.storage)
    else:
        study_dir = Path("runs") / spec.name
    study_dir = study_dir.resolve()
    if remote:
        return study_dir, join_uri(remote, "ray")
    return study_dir, str(study_dir / "ray")


def data_location(spec: StudySpec) -> tuple[str, tuple | None]:
    """(dataset dir, synth recipe or None). Synthetic corpora live in a per-node cache."""
    ds = spec.dataset
    if not ds.is_synth:
        return str(Path(ds.path).expanduser().resolve()), None
    from study.data.synth import GENERATOR_VERSION  # numpy/pandas only: no torch here
    cache = Path(os.environ.get("AVSTUDY_CACHE", Path.home() / ".cache" / "avstudy"))
    # the generator version is in the name, so a corpus from an older generator is never reused
    name = f"{ds.synth_preset}-{ds.synth_scale}-seed{ds.synth_seed}-v{GENERATOR_VERSION}"
    return str((cache / "synth" / name).resolve()), (ds.synth_preset, ds.synth_scale,
                                                      ds.synth_seed)
