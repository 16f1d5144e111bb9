"""The table of fusion strategies: the one place a strategy is registered (torch-free).

Spec validation, the search spaces, the benchmarks and the tests all read `FUSIONS`. The
classes live in `model/fusion.py` and are imported only when a model is built, so code that
only validates a spec or lists a search space never loads torch.

Adding a strategy: write its class (a `model.fusion.FusionStrategy`, in its own module if you
like), then add one entry here with its own keys (each declared with its rule: they become flat
config keys, read as `cfg.<key>`), its define-by-run parameters and the training schedule it runs
under `schedule: auto` (and `packable=True` once its forward is per-sample and has no batch-level
auxiliary loss, as a contrastive loss has: tests/modelling/test_packed.py then checks it). Its
keys are prefixed by its name; nothing else needs to change.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from study.keys import AT_LEAST_1, NON_NEGATIVE, POSITIVE, UNIT_OPEN, Bound, KeySpec, Rule


def no_params(trial: Any) -> dict:
    return {}


def no_check(cfg: Any) -> list[str]:
    return []


def opt(default: Any, *, bound: Bound | None = None, choices: tuple | None = None, doc: str = "") -> KeySpec:
    """A strategy's own key: its type is its default's, with its rule."""
    return KeySpec(type(default), False, Rule(bound=bound, choices=choices, doc=doc), default)


@dataclass(frozen=True)
class Strategy:
    """A fusion strategy: its class, its own search parameters, and what it does over time."""

    cls: str  # "module:Class", imported lazily by `fusion_class`
    params: Callable[[Any], dict] = no_params  # define-by-run: suggest the strategy's own keys
    temporal: bool = False  # attends across the two streams' frames (asynchrony matters)
    doc: str = ""
    schedule: str = "detached"  # training schedule under `schedule: auto` (see the module doc)
    keys: Mapping[str, KeySpec] = field(default_factory=dict)  # its own config keys and rules
    check: Callable[[Any], list[str]] = no_check  # rules tying its keys to the model's
    # per-sample and without batch-level auxiliary losses, so K stacked copies can train as one
    # vmapped model (model/packed.py); tests/modelling/test_packed.py holds every True to it
    packable: bool = False


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


FOAL_KEYS = {
    "foal_use_align": opt(True, doc="contrastive audio-visual alignment loss"),
    "foal_use_match": opt(True, doc="label-matching (ITM-style) loss"),
    "foal_align_weight": opt(1.0, bound=NON_NEGATIVE),
    "foal_match_weight": opt(0.1, bound=NON_NEGATIVE),
    "foal_temperature": opt(0.07, bound=POSITIVE),
    "foal_proj_dim": opt(256, bound=AT_LEAST_1),
    "foal_layers": opt(2, bound=AT_LEAST_1, doc="cross-attention layers per direction"),
    "foal_heads": opt(4, bound=AT_LEAST_1, doc="attention heads of its cross-attention (official: 4)"),
    "foal_proj_dropout": opt(0.5, bound=UNIT_OPEN, doc="dropout in its projections (official: 0.5)"),
    "foal_temperature_form": opt("paper", choices=("paper", "official"),
                                 doc="logits = cos * exp(s) | cos / t (t init log(1/tau))"),
    "foal_positives": opt("sum", choices=("mean", "sum"),
                          doc="multi-positive targets averaged | summed (official)"),
    "foal_negatives": opt("sample", choices=("argmax", "sample"),
                          doc="hardest negative | sampled ~ softmax(sim) (official)"),
    "foal_match_heads": opt("directional", choices=("joint", "directional"),
                            doc="one BCE head | a2v + v2a 2-way heads (official)"),
    "foal_xattn": opt("post_ln", choices=("pre_ln", "post_ln"),
                      doc="pre-LN block with feed-forward | post-LN, no FF (official)"),
    "foal_align_input": opt("encoded", choices=("encoded", "features"),
                            doc="alignment pools the encoded frames | the input features (official)"),
    "foal_audio_width": opt(0, bound=NON_NEGATIVE,
                            doc="cross-attention width of the audio-query stream (0 = d_model; official 1024)"),
    "foal_video_width": opt(0, bound=NON_NEGATIVE,
                            doc="... of the video-query stream (0 = d_model; official 768)"),
    "foal_cls_head": opt("mlp", choices=("mlp", "linear"),
                         doc="classifier on the fused vector: VAVL's MLP | one Linear (official)"),
}


def _foal_check(cfg) -> list[str]:
    out = []
    for name in ("d_model", "foal_audio_width", "foal_video_width"):
        width = getattr(cfg, name) or cfg.d_model
        if width % cfg.foal_heads:
            out.append(f"foal_heads: {name}={width} is not divisible by foal_heads={cfg.foal_heads}")
    return out


FUSIONS: dict[str, Strategy] = {
    "vavl": Strategy("model.fusion:ConcatFusion", doc="VAVL: concat of pooled vectors -> MLP", packable=True),
    "late": Strategy("model.fusion:LateFusion", doc="average of the unimodal predictions", packable=True),
    "gated": Strategy("model.fusion:GatedFusion", _gated, doc="per-sample softmax gate", packable=True,
                      keys={"gated_hidden": opt(128, bound=AT_LEAST_1, doc="width of the gate's MLP")}),
    "xattn": Strategy("model.fusion:CrossAttentionFusion", _xattn, temporal=True, packable=True,
                      doc="MulT-style cross-attention both ways",
                      keys={"xattn_layers": opt(2, bound=AT_LEAST_1, doc="cross-attention layers")}),
    "foalnet": Strategy("model.fusion:FoalNetFusion", _foalnet, temporal=True, schedule="fused",
                        doc="Foal-Net: contrastive alignment + label matching, then fusion",
                        keys=FOAL_KEYS, check=_foal_check),
}


def strategy_keys() -> dict[str, KeySpec]:
    """{key: KeySpec} of every registered strategy's own keys (read at call time: the table may
    grow at run time)."""
    out: dict[str, KeySpec] = {}
    for name, s in FUSIONS.items():
        for k, spec in s.keys.items():
            if k in out:
                raise ValueError(f"fusion {name!r} declares key {k!r}, already declared by another strategy")
            out[k] = spec
    return out


def strategy(name: str) -> Strategy:
    if name not in FUSIONS:
        raise ValueError(f"unknown fusion {name!r}; choose from {sorted(FUSIONS)}")
    return FUSIONS[name]


def fusion_class(name: str) -> type:
    """The FusionStrategy class registered under `name` (imports its module)."""
    module, _, attr = strategy(name).cls.partition(":")
    return getattr(importlib.import_module(module), attr)
