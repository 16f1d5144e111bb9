"""The table of fusion strategies: the one place a strategy is registered (torch-free).

Spec validation, the search spaces, the benchmarks and the tests all read `FUSIONS`. The
classes live in `model/fusion.py` and are imported only when a model is built, so code that
only validates a spec or lists a search space never loads torch.

Adding a strategy: write its class (a `model.fusion.FusionStrategy`), then add one entry here
with its define-by-run parameters and the training schedule it runs under `schedule: auto`.
Its own ModelConfig fields are prefixed by its name.

Schedules (study/training/session.py):
- "detached": one forward/backward per batch; the unimodal losses train the encoders and heads,
  the fusion module sees detached encoder outputs so its loss trains only itself. This is the
  VAVL paper's training (encoders not updated by the audio-visual step) at one-pass cost, and
  the default of every strategy that is a head on top of VAVL's branches.
- "fused": joint multitask training, one forward/backward where every loss (fusion included)
  trains everything it touches. Foal-Net's paper trains this way ("fusion after alignment":
  the alignment and matching losses shape the encoders).
- "three_pass": the official VAVL code's schedule (visual step, audio step, fusion-only step with
  frozen encoders); under it Foal-Net's alignment trains only its projections.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def no_params(trial: Any) -> dict:
    return {}


@dataclass(frozen=True)
class Strategy:
    """A fusion strategy: its class, its own search parameters, and what it does over time."""

    cls: str  # "module:Class", imported lazily by `fusion_class`
    params: Callable[[Any], dict] = no_params  # define-by-run: suggest the strategy's own keys
    temporal: bool = False  # attends across the two streams' frames (asynchrony matters)
    doc: str = ""
    schedule: str = "detached"  # training schedule under `schedule: auto` (see the module doc)


def _gated(trial) -> dict:
    return {"gated_hidden": trial.suggest_categorical("gated_hidden", [16, 64, 128])}


def _xattn(trial) -> dict:
    return {"xattn_layers": trial.suggest_int("xattn_layers", 1, 2)}


def _foalnet(trial) -> dict:
    return {
        "foal_use_align": trial.suggest_categorical("foal_use_align", [True, False]),
        "foal_use_match": trial.suggest_categorical("foal_use_match", [True, False]),
        "foal_match_weight": trial.suggest_float("foal_match_weight", 0.01, 1.0, log=True),
        "foal_temperature": trial.suggest_float("foal_temperature", 0.03, 0.3, log=True),
    }


FUSIONS: dict[str, Strategy] = {
    "vavl": Strategy("model.fusion:ConcatFusion", doc="VAVL: concat of pooled vectors -> MLP"),
    "late": Strategy("model.fusion:LateFusion", doc="average of the unimodal predictions"),
    "gated": Strategy("model.fusion:GatedFusion", _gated, doc="per-sample softmax gate"),
    "xattn": Strategy("model.fusion:CrossAttentionFusion", _xattn, temporal=True,
                      doc="MulT-style cross-attention both ways"),
    "foalnet": Strategy("model.fusion:FoalNetFusion", _foalnet, temporal=True, schedule="fused",
                        doc="Foal-Net: contrastive alignment + label matching, then fusion"),
}


def strategy(name: str) -> Strategy:
    if name not in FUSIONS:
        raise ValueError(f"unknown fusion {name!r}; choose from {sorted(FUSIONS)}")
    return FUSIONS[name]


def fusion_class(name: str) -> type:
    """The FusionStrategy class registered under `name` (imports its module)."""
    module, _, attr = strategy(name).cls.partition(":")
    return getattr(importlib.import_module(module), attr)
