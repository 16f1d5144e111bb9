"""Every shipped search space: sampled by Optuna, built into a tiny model, one forward pass."""

from __future__ import annotations

import optuna
import pytest
import torch
from random_batches import random_batch

from model.build import build_model
from model.config import model_config
from model.registry import FUSIONS
from search_spaces import SPACES, FixingTrial, combine
from study.training.config import flat_keys

MODEL_KEYS = set(model_config('tiny').to_dict())
optuna.logging.set_verbosity(optuna.logging.WARNING)


def _sample(space, n: int, seed: int = 0) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        params = space(trial)
        study.tell(trial, 0.0)
        out.append(params)
    return out


def _forward(params: dict) -> None:
    model_params = {k: v for k, v in params.items() if k in MODEL_KEYS}
    cfg = model_config("tiny", **model_params)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    batch = random_batch(cfg, 4, has_audio=torch.tensor([True, True, False, True]),
                         has_video=torch.tensor([True, False, True, True]))
    with torch.no_grad():
        out = model(batch)
    assert out.pred.shape == (4, cfg.n_outputs)
    assert torch.isfinite(out.pred).all()


@pytest.mark.parametrize("name", sorted(SPACES))
def test_every_space_samples_valid_flat_keys_and_builds(name):
    torch.set_num_threads(1)
    for params in _sample(SPACES[name], 6):
        assert set(params) <= flat_keys(), set(params) - flat_keys()
        _forward(params)


def test_fusion_space_covers_every_strategy_with_its_own_params():
    seen = {}
    for params in _sample(SPACES["fusion"], 60, seed=1):
        seen.setdefault(params["fusion"], set()).update(params)
    assert set(seen) == set(FUSIONS)
    assert "gated_hidden" in seen["gated"] and "gated_hidden" not in seen["vavl"]
    assert "xattn_layers" in seen["xattn"]
    assert {"foal_use_align", "foal_use_match", "foal_match_weight",
            "foal_temperature"} <= seen["foalnet"]


def test_cell_fixed_keys_are_not_suggested_but_branches_are():
    fixed = {"fusion": "foalnet", "train_missing_rate": 0.5, "max_epochs": 2}
    space = combine(["architecture_tiny", "optimisation", "fusion", "missing"], fixed)
    study = optuna.create_study()
    trial = study.ask()
    params = space(trial)
    assert params["fusion"] == "foalnet" and params["train_missing_rate"] == 0.5
    assert "fusion" not in trial.params and "train_missing_rate" not in trial.params
    assert "foal_temperature" in trial.params  # the fixed strategy's own params are searched
    _forward(params)


def test_fixing_trial_passes_everything_else_through():
    study = optuna.create_study()
    trial = study.ask()
    proxy = FixingTrial(trial, {"lr": 0.1})
    assert proxy.suggest_float("lr", 1e-5, 1e-3) == 0.1
    assert 0 <= proxy.suggest_int("k", 0, 3) <= 3
    assert proxy.number == trial.number and set(trial.params) == {"k"}


def test_combined_space_is_picklable_for_tune_checkpoints():
    import pickle

    space = combine(["fusion", "missing"], {"fusion": "gated"})
    again = pickle.loads(pickle.dumps(space))
    assert _sample(again, 1)[0]["fusion"] == "gated"


def test_unknown_space_name_fails_early():
    with pytest.raises(KeyError, match="unknown search space 'nope'"):
        combine(["fusion", "nope"])
