"""Adding a fusion strategy is one class plus one table entry (model/registry.py): the new
strategy then builds, trains a step, is searched by the `fusion` space, passes spec validation
and is timed by the fusion benchmark, with no other file touched."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import optuna
import pytest
import torch
from random_batches import random_batch

from model import build_model, model_config
from model.fusion import FusionInput, FusionOutput, FusionStrategy
from model.registry import FUSIONS, Strategy
from search_spaces import combine
from study.runs.spec import SpecError, spec_from_dict

ROOT = Path(__file__).resolve().parents[2]


class SumFusion(FusionStrategy):
    """The sixth strategy of the test: sum of the unimodal predictions, one learned scale."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, inp: FusionInput) -> FusionOutput:
        return FusionOutput(pred=self.scale * (inp.audio_pred + inp.video_pred))  # (P, K)


def _sum_params(trial) -> dict:
    return {"gated_hidden": trial.suggest_categorical("sum_unused_width", [8, 16])}


@pytest.fixture
def sixth_strategy(monkeypatch):
    """The one line a contributor adds to model/registry.py's FUSIONS."""
    monkeypatch.setitem(FUSIONS, "sum", Strategy(f"{__name__}:SumFusion", _sum_params))
    return "sum"


def test_new_strategy_builds_and_trains(sixth_strategy):
    cfg = model_config("tiny", fusion=sixth_strategy)
    model = build_model(cfg)
    assert isinstance(model.fusion, SumFusion)
    batch = random_batch(cfg, 6, seed=1)
    model.loss(model(batch), batch)["total"].backward()
    assert model.fusion.scale.grad is not None and torch.isfinite(model.fusion.scale.grad)


def test_new_strategy_is_searched_with_its_own_parameters(sixth_strategy):
    space = combine(["fusion"])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        params = space(trial)
        study.tell(trial, 0.0)
        seen.add(params["fusion"])
        if params["fusion"] == sixth_strategy:
            assert "sum_unused_width" in trial.params
    assert sixth_strategy in seen and seen == set(FUSIONS)


def test_new_strategy_passes_spec_validation(sixth_strategy):
    raw = {"name": "s", "dataset": {"synth": {"scale": "tiny"}}, "model_preset": "tiny",
           "spaces": ["optimisation_tiny"], "cells": {"fusion": [sixth_strategy, "vavl"]}}
    assert spec_from_dict(raw).cells.fusion == (sixth_strategy, "vavl")


def test_unregistered_strategy_is_rejected_by_the_spec():
    raw = {"name": "s", "dataset": {"synth": {"scale": "tiny"}}, "spaces": ["optimisation_tiny"],
           "cells": {"fusion": ["sum"]}}
    with pytest.raises(SpecError, match=r"cells\.fusion\[0\]"):
        spec_from_dict(raw)


def test_new_strategy_is_in_the_benchmark(sixth_strategy):
    spec = importlib.util.spec_from_file_location("fusion_zoo", ROOT / "benchmarks" / "fusion_zoo.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules["fusion_zoo"] = bench
    spec.loader.exec_module(bench)
    assert sixth_strategy in bench.strategies()
    rows = bench.run(bench.parse_args(["--preset", "tiny", "--steps", "1", "--warmup", "0", "--seconds", "0.4",
                                       "--batch-size", "2", "--threads", "1"]))
    assert sixth_strategy in {r["fusion"] for r in rows}
