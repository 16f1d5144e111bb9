"""The trial configuration, torch-free: `TrainConfig`, the flat-dict form every layer passes
around, the key sets, and the one definition of an objective's value.

Imported by the spec (validation), the session (training), the Ray layer and the stages; it
loads neither torch nor Ray, so `avstudy report`, `status`, `plan` and `--help` stay light.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.config import ModelConfig, canonical_preset, model_config
from model.registry import FUSIONS, strategy
from study.data.protocol import ProtocolConfig
from study.training import rules

SCHEDULES = ("auto", "fused", "detached", "three_pass")  # auto: the fusion strategy's own (model/registry.py)
OPTIMIZERS = ("adamw", "adam", "adamw_all")  # adamw: decay on matrices; adam: L2 on all; adamw_all: decoupled on all
LABEL_KINDS = ("hard", "soft")
SELECT_CONDITIONS = ("av", "audio_only", "video_only", "robustness", "worst_single") + tuple(
    f"miss_{r / 10:.1f}" for r in range(10))  # dev conditions of every epoch a checkpoint is chosen on
SELECT_METRICS = ("", "loss", "macro_f1", "accuracy", "uar", "ccc_mean", "ccc_arousal", "ccc_valence",
                  "ccc_dominance")  # "" = the task's primary metric
SELECT_MODES = ("max", "min")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig
    protocol: ProtocolConfig = ProtocolConfig()
    preset: str = "vavl_sizes"       # a model/config.py PRESETS name (old aliases map to their new name)
    lr: float = 1e-4
    weight_decay: float = 1e-4
    batch_size: int = 32
    max_epochs: int = 30
    patience: int = 5
    schedule: str = "auto"           # fused | detached | three_pass, auto = the strategy's (see train_schedule)
    optimizer: str = "adamw"         # adamw: decoupled decay on matrices; adam: L2 on every parameter;
                                     # adamw_all: decoupled decay on every parameter (torch's AdamW default)
    beta1: float = 0.9
    beta2: float = 0.999
    label_kind: str = "hard"         # categorical targets: one-hot or consensus proportions
    select_condition: str = "av"     # dev condition used for model selection
    select_metric: str = ""          # its metric ("" = the task's primary metric), e.g. "loss"
    select_mode: str = "max"         # "min" for a loss
    normalize: bool = True           # z-score features with training-split statistics
    frame_dropout: float = 0.0       # augmentation: share of frames masked per epoch (both streams)
    noise_aug: float = 0.0           # augmentation: share of utterance streams given noise per epoch
    noise_aug_snr_db: float = 10.0   # ... at this SNR (dB against the training feature variance)
    class_balanced: bool = False     # draw each epoch's samples with replacement, every class equally likely
    grad_clip: float = 1.0
    precision: str = "auto"          # auto: bf16 autocast on CUDA, fp32 on CPU; bf16: on both
    seed: int = 0

    def __post_init__(self):
        checks = [("schedule", SCHEDULES), ("optimizer", OPTIMIZERS), ("label_kind", LABEL_KINDS),
                  ("select_condition", SELECT_CONDITIONS), ("select_metric", SELECT_METRICS),
                  ("select_mode", SELECT_MODES),
                  ("precision", PRECISIONS)]
        for name, allowed in checks:
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} not in {allowed}")
        if self.lr <= 0 or self.batch_size < 1 or self.max_epochs < 1 or self.patience < 1:
            raise ValueError("lr > 0, batch_size >= 1, max_epochs >= 1 and patience >= 1 needed")
        if not 0.0 <= self.frame_dropout < 1.0 or not 0.0 <= self.noise_aug <= 1.0:
            raise ValueError(f"frame_dropout must be within [0, 1) and noise_aug within [0, 1], got "
                             f"{self.frame_dropout} and {self.noise_aug}")

        if self.class_balanced and self.model.task != "categorical":
            raise ValueError("class_balanced sampling needs a categorical task")
        if not (0.0 <= self.beta1 < 1.0 and 0.0 <= self.beta2 < 1.0):
            raise ValueError(f"beta1={self.beta1} and beta2={self.beta2} must be within [0, 1)")

    @property
    def task(self) -> str:
        return self.model.task

    @property
    def train_schedule(self) -> str:
        """The schedule that runs: `schedule`, or for "auto" the fusion strategy's own
        (model/registry.py Strategy.schedule: detached for vavl, fused for foalnet, ...)."""
        return strategy(self.model.fusion).schedule if self.schedule == "auto" else self.schedule

    @property
    def primary_metric(self) -> str:
        return primary_metric(self.task)

    @property
    def selection(self) -> tuple[str, str, str]:
        """(condition, metric, mode) the best dev epoch is chosen on (checkpoint selection)."""
        return self.select_condition, self.select_metric or self.primary_metric, self.select_mode

    @property
    def early_stopping(self) -> bool:
        """Whether `patience` can end training before `max_epochs`."""
        return self.patience < self.max_epochs

    def recipe(self) -> dict:
        """The training as it runs (schedule resolved, loss weights, optimiser, stopping,
        selection): what a report header prints (results.parquet `recipe`, JSON)."""
        condition, metric, mode = self.selection
        m = self.model
        decay_on = {"adamw": "matrices", "adam": "all (L2)", "adamw_all": "all"}[self.optimizer]
        return {"preset": self.preset, "schedule": self.train_schedule, "optimizer": self.optimizer,
                "lr": self.lr, "betas": [self.beta1, self.beta2], "weight_decay": self.weight_decay,
                "decay_on": decay_on, "grad_clip": self.grad_clip, "batch_size": self.batch_size,
                "max_epochs": self.max_epochs, "patience": self.patience,
                "early_stopping": self.early_stopping, "class_balanced": self.class_balanced,
                "selection": f"{condition} {metric} ({mode})", "precision": self.precision,
                "unimodal_weight": m.unimodal_weight, "recon_weight": m.recon_weight,
                "aux_weights": _aux_weights(m)}

    def to_flat(self) -> dict:
        flat = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("model", "protocol")}
        flat.update(self.model.to_dict())
        flat.update(self.protocol.to_dict())
        flat.pop("seed", None)
        flat["seed"] = self.seed
        return flat


def _aux_weights(m: ModelConfig) -> dict[str, float]:
    if m.fusion != "foalnet":
        return {}
    return {**({"align": m.foal_align_weight} if m.foal_use_align else {}),
            **({"match": m.foal_match_weight} if m.foal_use_match else {})}


# The official VAVL recipe (ilucasgoncalves/VAVL run_cremad.sh, net/modelWrapper.py
# init_optimizer, train.py): Adam lr 5e-5, betas (0.95, 0.999), L2 5e-7 on every parameter,
# 20 epochs, batch 32, no clipping, three-pass schedule, checkpoint on the lowest dev loss.
_VAVL_OFFICIAL = dict(optimizer="adam", lr=5e-5, beta1=0.95, beta2=0.999, weight_decay=5e-7,
                      max_epochs=20, patience=20, batch_size=32, grad_clip=0.0, label_kind="hard",
                      schedule="three_pass", select_condition="av", select_metric="loss",
                      select_mode="min")

# Training recipes, applied under the flat keys by config_from_flat when the (model) preset has
# the same name (model/config.py PRESETS holds its sizes and architecture). Presets without an
# entry here ("vavl_sizes", "tiny") train with the TrainConfig defaults: the project's recipe.
TRAINING_PRESETS: dict[str, dict[str, Any]] = {
    "vavl_official_crema_d": dict(_VAVL_OFFICIAL),  # run_cremad.sh
    "vavl_official_msp_improv": dict(_VAVL_OFFICIAL, batch_size=9),  # run_mspimprov.sh: batch 9
    # Foal-Net's official train.py: AdamW(model.parameters(), lr 1e-4) = decoupled decay 0.01 on
    # every parameter, batch 16, 40 epochs (no early stopping, the LR scheduler is never passed),
    # no clipping, WeightedRandomSampler (class_balanced), best dev UA kept.
    "foalnet_official": dict(optimizer="adamw_all", lr=1e-4, beta1=0.9, beta2=0.999,
                             weight_decay=0.01, batch_size=16, max_epochs=40, patience=40,
                             grad_clip=0.0, label_kind="hard", class_balanced=True,
                             schedule="fused", select_condition="av", select_metric="uar",
                             select_mode="max"),
}
TRAINING_PRESETS["official"] = TRAINING_PRESETS["vavl_official_crema_d"]  # the old name


def primary_metric(task: str) -> str:
    return "macro_f1" if task == "categorical" else "ccc_mean"


TRAIN_KEYS = frozenset(f.name for f in dataclasses.fields(TrainConfig)) - {"model", "protocol"}
PROTOCOL_KEYS = frozenset(f.name for f in dataclasses.fields(ProtocolConfig)) - {"seed"}
MODEL_KEYS = frozenset(f.name for f in dataclasses.fields(ModelConfig))
FLAT_KEYS = (TRAIN_KEYS | PROTOCOL_KEYS | MODEL_KEYS | {"seed"}) - {"preset"}
"""Every key a flat trial config may set (the spec's `fixed:` and the search spaces)."""


def config_from_flat(flat: dict, preset: str | None = None, data_dir: str | Path | None = None,
                     task: str | None = None) -> TrainConfig:
    """Build a TrainConfig from one flat dict of ModelConfig/ProtocolConfig/TrainConfig fields.

    Feature dims, class count and task defaults come from the dataset when `data_dir` is given.
    Unknown keys are an error that names them.
    """
    flat = dict(flat)
    preset = canonical_preset(flat.pop("preset", None) or preset or "vavl_sizes")
    flat = {**TRAINING_PRESETS.get(preset, {}), **flat}  # explicit keys win over the recipe
    unknown = sorted(set(flat) - FLAT_KEYS)
    if unknown:
        raise ValueError(f"unknown config keys {unknown}")
    check_flat(flat)
    model_kw = {k: v for k, v in flat.items() if k in MODEL_KEYS}
    if task:
        model_kw["task"] = task
    if data_dir is not None:
        model_kw.update(_dataset_dims(Path(data_dir), model_kw.get("task", "categorical")))
    seed = int(flat.get("seed", 0))
    protocol = ProtocolConfig(seed=seed, **{k: _tuple(v) for k, v in flat.items()
                                           if k in PROTOCOL_KEYS})
    train_kw = {k: v for k, v in flat.items() if k in TRAIN_KEYS}
    return TrainConfig(model=model_config(preset, **model_kw), protocol=protocol, preset=preset,
                       **train_kw)


def copy_config(cfg: TrainConfig, **changes) -> TrainConfig:
    """A copy of cfg with flat field changes (model, protocol or training fields)."""
    return config_from_flat({**cfg.to_flat(), **changes}, preset=cfg.preset)


def _tuple(v):
    return tuple(v) if isinstance(v, list) else v


def _dataset_dims(root: Path, task: str) -> dict:
    meta = json.loads((root / "dataset.json").read_text())
    n_out = len(meta.get("classes") or []) if task == "categorical" else 3
    return {"audio_dim": meta["audio"]["dim"], "video_dim": meta["video"]["dim"],
            "n_outputs": n_out, "task": task}


# ----------------------------------------------------------------------------- job envelope


def unwrap_job(config: Mapping[str, Any]) -> tuple[dict, dict]:
    """(flat trial config, meta). Searchers pass the flat dict; grid stages pass
    {"job": {"flat": ..., "meta": ...}} (meta: parent trial, searched names; results only)."""
    if "job" in config:
        job = config["job"]
        return dict(job["flat"]), dict(job.get("meta", {}))
    return dict(config), {}


# ----------------------------------------------------------------------------- objectives


def objective_key(condition: str, metric: str) -> str:
    """The name an objective is reported under to Tune and Optuna."""
    return f"{condition}_{metric}"


def objective_value(rows: Iterable[Mapping[str, Any]], condition: str, metric: str,
                    mode: str = "max") -> float:
    """An objective's value from one evaluation's rows (one per condition); NaN when missing.

    `worst_single` is the worse of `audio_only` and `video_only` (min when maximising).
    """
    by = {r["condition"]: r for r in rows}
    if condition == "worst_single":
        pair = [_finite(by.get("audio_only"), metric), _finite(by.get("video_only"), metric)]
        if any(math.isnan(v) for v in pair):
            return float("nan")
        return min(pair) if mode == "max" else max(pair)
    return _finite(by.get(condition), metric)


def _finite(row: Mapping[str, Any] | None, metric: str) -> float:
    value = None if row is None else row.get(metric)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return value if math.isfinite(value) else float("nan")


# ----------------------------------------------------------------------------- value rules


def choices() -> dict[str, tuple]:
    """Allowed values of the keys that take one of a few (read when checked: the fusion table
    may grow at run time, e.g. in a test)."""
    from model.config import TASKS

    return {"task": TASKS, "fusion": tuple(FUSIONS), "schedule": SCHEDULES, "optimizer": OPTIMIZERS,
            "label_kind": LABEL_KINDS, "select_condition": SELECT_CONDITIONS, "select_metric": SELECT_METRICS,
            "select_mode": SELECT_MODES, "precision": PRECISIONS}


def check_flat(flat: Mapping[str, Any], prefix: str = "") -> None:
    """Type, range and choice of every config key in `flat` (ValueError naming the first bad key);
    the rules are study/training/rules.py's table."""
    rules.check_flat(flat, rules.field_types((ModelConfig, ProtocolConfig, TrainConfig)), choices(), prefix)
