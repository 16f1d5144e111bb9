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

from model.config import ModelConfig, canonical_preset, model_config, model_keys
from model.registry import strategy
from study.data.protocol import ProtocolConfig
from study.keys import (
    AT_LEAST_1,
    NON_NEGATIVE,
    POSITIVE,
    UNIT,
    UNIT_OPEN,
    KeySpec,
    flat_problems,
    key,
    problems_of,
    table_of,
)
from study.vocab import SELECT_CONDITIONS

SCHEDULES = ("auto", "fused", "detached", "three_pass")  # auto: the fusion strategy's own (model/registry.py)
OPTIMIZERS = ("adamw", "adam", "adamw_all")  # adamw: decay on matrices; adam: L2 on all; adamw_all: decoupled on all
LABEL_KINDS = ("hard", "soft")
BATCH_ORDERS = ("shuffle", "shared")  # study/training/loader.py shared_order
# dev conditions of every epoch a checkpoint (or an objective) is chosen on: study/vocab.py
SELECT_METRICS = ("", "loss", "macro_f1", "accuracy", "uar", "ccc_mean", "ccc_arousal", "ccc_valence",
                  "ccc_dominance", "mli")  # "" = the task's primary metric; mli: only of condition mli
EPOCH_INFO = ("unpaired_share", "missing_audio_share", "missing_video_share", "grad_norm_audio",
              "grad_norm_video", "ogm_coeff_audio", "ogm_coeff_video")
"""Per-epoch training records (realised from the batches the model saw) that reach curves.parquet."""
SELECT_MODES = ("max", "min")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """The training keys, each declared with its rule (study/keys.py)."""

    model: ModelConfig
    protocol: ProtocolConfig = ProtocolConfig()
    preset: str = "vavl_sizes"  # a model/config.py PRESETS name (old aliases map to their new name)
    lr: float = key(1e-4, bound=POSITIVE)
    weight_decay: float = key(1e-4, bound=NON_NEGATIVE)
    batch_size: int = key(32, bound=AT_LEAST_1)
    max_epochs: int = key(30, bound=AT_LEAST_1)
    patience: int = key(5, bound=AT_LEAST_1)
    schedule: str = key("auto", choices=SCHEDULES,
                        doc="fused | detached | three_pass, auto = the strategy's (see train_schedule)")
    optimizer: str = key("adamw", choices=OPTIMIZERS,
                         doc="adamw: decoupled decay on matrices; adam: L2 on every parameter; "
                             "adamw_all: decoupled decay on every parameter (torch's AdamW default)")
    beta1: float = key(0.9, bound=UNIT_OPEN)
    beta2: float = key(0.999, bound=UNIT_OPEN)
    label_kind: str = key("hard", choices=LABEL_KINDS, doc="categorical targets: one-hot or consensus")
    select_condition: str = key("av", choices=SELECT_CONDITIONS, doc="dev condition of model selection")
    select_metric: str = key("", choices=SELECT_METRICS, doc='its metric ("" = the task\'s primary metric)')
    select_mode: str = key("max", choices=SELECT_MODES, doc='"min" for a loss')
    normalize: bool = key(True, doc="z-score features with training-split statistics")
    frame_dropout: float = key(0.0, bound=UNIT_OPEN, doc="augmentation: share of frames masked per epoch")
    noise_aug: float = key(0.0, bound=UNIT, doc="augmentation: share of utterance streams given noise")
    noise_aug_snr_db: float = key(10.0, doc="... at this SNR (dB against the training feature variance)")
    class_balanced: bool = key(False, doc="draw each epoch's samples with replacement, classes equally likely")
    batch_order: str = key("shuffle", choices=BATCH_ORDERS,
                           doc="shuffle: the trial's own seed orders its batches; shared: a random order of "
                               "the batches' length ranks drawn from the epoch alone, the same for every "
                               "trial of a pack (less padding; each trial's order is as random, but the "
                               "seeds share it: they no longer replicate the data order)")
    grad_clip: float = key(1.0, bound=NON_NEGATIVE, doc="0: no clipping")
    precision: str = key("auto", choices=PRECISIONS, doc="auto: bf16 autocast on CUDA, fp32 on CPU")
    ogm_ge: bool = key(False, doc="balance: OGM-GE gradient modulation of the dominant modality's "
                                  "encoder (Peng et al., CVPR 2022; docs/imbalance.md)")
    ogm_alpha: float = key(0.5, bound=NON_NEGATIVE, doc="OGM-GE: modulation strength alpha")
    log_grad_norms: bool = key(True, doc="log per-modality gradient norms each step (the MLI)")
    seed: int = 0

    def __post_init__(self):
        errors = problems_of(self)
        if self.class_balanced and self.model.task != "categorical":
            errors.append("class_balanced: class-balanced sampling needs a categorical task")
        if self.ogm_ge and self.train_schedule == "three_pass":
            errors.append("ogm_ge: gradient modulation needs a joint pass (schedule fused or "
                          "detached), not three_pass")
        if errors:
            raise ValueError("invalid TrainConfig: " + "; ".join(errors))

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
                "batch_order": self.batch_order,
                "selection": f"{condition} {metric} ({mode})", "precision": self.precision,
                "ogm_ge": self.ogm_ge, "ogm_alpha": self.ogm_alpha if self.ogm_ge else None,
                "modality_dropout_curriculum": self.protocol.modality_dropout_curriculum,
                "unimodal_weight": m.unimodal_weight, "unimodal_loss": m.unimodal_loss,
                "recon_weight": m.recon_weight,
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


def key_table() -> dict[str, KeySpec]:
    """{flat key: KeySpec} of every key a flat trial config may set (the spec's `fixed:` and
    `search:`, the search spaces, `train --set`): the model's (strategies' included), the
    protocol's and the training loop's, each with its declared rule. Read at call time: a
    strategy registered at run time brings its keys."""
    table = {**model_keys(), **table_of(ProtocolConfig), **table_of(TrainConfig)}
    table.pop("preset", None)
    return table


def flat_keys() -> frozenset[str]:
    return frozenset(key_table())


def config_from_flat(flat: dict, preset: str | None = None, data_dir: str | Path | None = None,
                     task: str | None = None) -> TrainConfig:
    """Build a TrainConfig from one flat dict of ModelConfig/ProtocolConfig/TrainConfig fields.

    Feature dims, class count and task defaults come from the dataset when `data_dir` is given.
    Unknown keys are an error that names them.
    """
    flat = dict(flat)
    preset = canonical_preset(flat.pop("preset", None) or preset or "vavl_sizes")
    flat = {**TRAINING_PRESETS.get(preset, {}), **flat}  # explicit keys win over the recipe
    check_flat(flat)
    model_kw = {k: v for k, v in flat.items() if k not in TRAIN_KEYS | PROTOCOL_KEYS | {"seed"}}
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


def flat_config_problems(flat: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Every bad key of a flat config: unknown keys (with did-you-mean) and values that break
    their declared rule (type, range, choices), one message each, naming the key."""
    return flat_problems(flat, key_table(), prefix,
                         unknown="config key (not a model, strategy, protocol or training key)")


def model_config_problems(flat: Mapping[str, Any], preset: str, task: str) -> list[str]:
    """Problems of the rules that tie keys together (ModelConfig's and its strategy's), for a
    flat config whose keys are each valid."""
    try:
        config_from_flat(dict(flat), preset=preset, task=task)
    except ValueError as exc:
        text = str(exc)
        for prefix in ("invalid ModelConfig: ", "invalid TrainConfig: ", "invalid protocol: "):
            text = text.replace(prefix, "")
        return text.split("; ")
    return []


def check_flat(flat: Mapping[str, Any], prefix: str = "") -> None:
    """ValueError listing every bad key of `flat` (see flat_config_problems)."""
    problems = flat_config_problems(flat, prefix)
    if problems:
        raise ValueError("; ".join(problems))
