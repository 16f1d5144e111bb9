"""The study spec's schema: frozen dataclasses, one per section of the YAML file, and the
names each section accepts. Parsing is `study.runs.spec.parse`; where a study lives and what it
may ask of a cluster is `study.runs.spec.placement`."""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from study.data.folds import FoldsSpec
from study.data.protocol import from_missing_rates
from study.training.config import objective_key, primary_metric
from study.vocab import SELECT_CONDITIONS

NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
SEARCHERS = ("optuna-tpe", "random", "grid")
SCHEDULERS = ("asha", "moasha", "none")  # moasha: multi-objective ASHA (study/runs/schedulers.py)
MODES = ("auto", "inline", "train")
PACK_ON_GPU = 4  # resources.pack's default where trials have a GPU share
GPU_AUTO = "auto"  # resources.gpus_per_worker: a trial's share of a GPU from a memory probe
CONDITIONS = SELECT_CONDITIONS  # an objective's condition: one evaluated on dev every epoch
METRICS = ("macro_f1", "accuracy", "uar", "loss", "ccc_mean", "ccc_arousal", "ccc_valence",
           "ccc_dominance", "mli")  # mli: only with condition mli


class SpecError(ValueError):
    """A study spec that cannot run; the message names the key."""


@dataclass(frozen=True)
class DatasetSpec:
    path: str | None = None  # directory in the dataset format (docs/CONTRACTS.md)
    synth_preset: str = "crema-d"  # used when path is None: built-in synthetic corpus
    synth_scale: str = "tiny"
    synth_seed: int = 0
    folds: FoldsSpec | None = None  # several partitions of the dataset (study/data/folds.py)

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
    train_missing: tuple[tuple[float, float], ...] = ()  # per-modality (p_audio, p_video) cells

    def items(self) -> list[dict]:
        """[{fusion, train_missing_rate}] in spec order (fusion-major); per-modality cells also
        fix audio_only_share (study/data/protocol.py from_missing_rates)."""
        if self.train_missing:
            return [{"fusion": f, **from_missing_rates(pa, pv)}
                    for f, (pa, pv) in itertools.product(self.fusion, self.train_missing)]
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
    # fractional (e.g. 0.25) lets several trials share one GPU; "auto": the share a memory probe
    # measures at the sweep's start (study/runs/spec/placement.py resolve_gpus)
    gpus_per_worker: float | str = 0.0
    mode: str = "auto"  # auto: inline when 1 worker and no GPU, else Ray Train worker group
    max_concurrent_trials: int | None = None  # None: computed from the cluster (see max_concurrent)
    # rerun stage: up to this many seeds x folds of one configuration train as one packed trial
    # (one stacked model, study/runs/packs.py) where their shapes allow; 1 = every job alone
    # None (the default): 4 where trials have a GPU share, 1 (off) on CPU, where a pack measured
    # 0.87x the unpacked trials per hour (docs/packing.md)
    pack: int | None = None
    # search stage: the searched keys the members of one pack may differ in (each a PACK_VARIES
    # key, study/vocab.py); the pack's other searched keys are drawn once, for its first member.
    # None (the default): the search packs only where every searched key may vary (packing then
    # changes no draw); [] : the search never packs
    pack_vary: tuple[str, ...] | None = None

    @property
    def pack_size(self) -> int:
        """resources.pack as given, else 4 with a GPU share ("auto" counts: it is for GPUs), else 1."""
        if self.pack is not None:
            return self.pack
        return PACK_ON_GPU if self.gpus_per_worker == GPU_AUTO or self.gpus_per_worker > 0 else 1

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
    # {key: {"float"|"int": [low, high], "log": bool, "step": n} | {"choices": [...]}}: ranges
    # that override the spaces' own, or add keys of their own (study/runs/spec/search.py)
    search: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
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
    baselines: bool = True
    # with dataset.folds: search on the first fold's dev, or on the mean dev score over folds
    search_folds: str = "first"  # the pooled linear probes as rows of the study (study/runs/baselines.py)

    @property
    def primary_metric(self) -> str:
        return primary_metric(self.task.kind)

    def to_dict(self) -> dict:
        """The spec as a plain dict in the YAML layout (round-trips through spec_from_dict)."""
        d = dataclasses.asdict(self)
        d["fixed"] = dict(self.fixed)
        d["search"] = {k: dict(v) for k, v in self.search.items()}
        ds = self.dataset
        d["dataset"] = ({"path": ds.path} if ds.path is not None else {"synth": {
            "preset": ds.synth_preset, "scale": ds.synth_scale, "seed": ds.synth_seed}})
        if ds.folds is not None:
            d["dataset"]["folds"] = ds.folds.to_dict()
        else:
            d.pop("search_folds")  # spec.yaml of one-partition studies unchanged
        if not self.search_data_conditions:  # the default: spec.yaml of older studies unchanged
            d.pop("search_data_conditions")
        if self.cells.train_missing:  # per-modality cells: the shared rate is not given
            d["cells"] = {"fusion": list(self.cells.fusion),
                          "train_missing": [{"audio": a, "video": v} for a, v in self.cells.train_missing]}
        else:
            d["cells"].pop("train_missing")
        d["tracking"] = {k: dict(v) for k, v in self.tracking.items()}
        if self.resources.pack_vary is None:  # spec.yaml of older studies unchanged
            d["resources"].pop("pack_vary")
        for key, default in (("failure", FailureSpec()), ("optuna_storage", None), ("tracking", {}),
                             ("search", {}), ("baselines", True)):
            if getattr(self, key) == default:  # spec.yaml of older studies unchanged
                d.pop(key)
        return _plain(d)


def _plain(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


