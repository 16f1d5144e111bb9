"""One rule per key (study/keys.py): the spec, ModelConfig, TrainConfig and strategies' own keys
use the same declared rules; a spec's problems are reported at once with did-you-mean; the
spec's `search:` ranges override the spaces'; a new strategy brings its own keys."""

from __future__ import annotations

import optuna
import pytest

from model.config import model_config
from model.registry import FUSIONS, Strategy, opt
from search_spaces import combine
from study.keys import AT_LEAST_1
from study.runs.spec import SpecError, spec_from_dict
from study.training.config import config_from_flat, flat_keys

BASE = {"name": "k", "dataset": {"synth": {}}, "model_preset": "tiny", "spaces": ["optimisation_tiny"]}


@pytest.mark.parametrize("fixed,key", [({"foal_heads": 0}, "fixed.foal_heads"),
                                       ({"head_dropout": 5.0}, "fixed.head_dropout"),
                                       ({"kernel_size": 4}, "fixed.kernel_size"),
                                       ({"foal_xattn": "bogus"}, "fixed.foal_xattn")])
def test_spec_refuses_what_the_model_would_refuse(fixed, key):
    with pytest.raises(SpecError) as err:
        spec_from_dict({**BASE, "fixed": fixed})
    assert str(err.value).startswith(key)
    with pytest.raises(ValueError):  # the same rule, at the model
        model_config("tiny", **fixed)


def test_cross_key_rule_caught_at_the_spec_not_at_sampling():
    with pytest.raises(SpecError, match=r"foal_heads=3.*fusion foalnet"):
        spec_from_dict({**BASE, "cells": {"fusion": ["foalnet"]}, "fixed": {"foal_heads": 3}})
    spec_from_dict({**BASE, "cells": {"fusion": ["vavl"]}, "fixed": {"foal_heads": 3}})  # not used by vavl


def test_every_problem_at_once_with_did_you_mean():
    raw = {**BASE, "fixed": {"lr": -1, "d_modle": 8}, "budget": {"max_epochs": 0},
           "resources": {"workers": 0}}
    with pytest.raises(SpecError) as err:
        spec_from_dict(raw)
    text = str(err.value)
    assert text.startswith("4 problems:")
    for part in ("fixed.lr: must be > 0", "did you mean `d_model`?", "budget.max_epochs", "resources.workers"):
        assert part in text, text
    with pytest.raises(SpecError, match=r"did you mean `budget`"):
        spec_from_dict({**BASE, "budgte": {}})


def test_search_block_overrides_a_space_and_adds_keys():
    spec = spec_from_dict({**BASE, "search": {"lr": {"float": [1e-5, 2e-5], "log": True},
                                              "dropout": {"choices": [0.0, 0.2]}}})
    assert spec_from_dict(spec.to_dict()) == spec  # recorded in spec.yaml / study.json
    space = combine(spec.spaces, {}, search=spec.search)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        params = space(trial)
        study.tell(trial, 0.0)
        assert 1e-5 <= params["lr"] <= 2e-5 and params["dropout"] in (0.0, 0.2)


@pytest.mark.parametrize("search,where", [({"lr": {"float": [-1, 1]}}, "search.lr.float[0]"),
                                          ({"d_model": {"float": [8, 16]}}, "search.d_model"),
                                          ({"lrr": {"float": [0.1, 0.2]}}, "search.lrr"),
                                          ({"lr": {"float": [0.2, 0.1]}}, "search.lr.float")])
def test_search_ranges_checked_by_the_keys_rules(search, where):
    with pytest.raises(SpecError) as err:
        spec_from_dict({**BASE, "search": search})
    assert str(err.value).startswith(where)


def test_a_new_strategy_brings_its_own_keys(monkeypatch):
    """One registry entry: its key becomes a flat key, read as cfg.<key>, checked by its rule."""
    monkeypatch.setitem(FUSIONS, "sum", Strategy("model.fusion:LateFusion",
                                                 keys={"sum_width": opt(8, bound=AT_LEAST_1)}))
    assert "sum_width" in flat_keys()
    cfg = config_from_flat({"fusion": "sum", "sum_width": 4}, preset="tiny")
    assert cfg.model.sum_width == 4 and cfg.to_flat()["sum_width"] == 4
    assert config_from_flat(cfg.to_flat(), preset="tiny") == cfg
    with pytest.raises(SpecError, match=r"fixed.sum_width: must be >= 1"):
        spec_from_dict({**BASE, "fixed": {"sum_width": 0}})


def test_what_a_study_searched_is_recorded_and_shown(tmp_path):
    """study.json `searched`: the spaces' ranges with the spec's `search:` in their place, the
    spec's own keys, never a fixed key; the report's overview lists them."""
    from reports.sections import _searched_block
    from study.runs.results import write_study_json

    spec = spec_from_dict({**BASE, "fixed": {"batch_size": 16},
                           "search": {"lr": {"float": [1e-5, 2e-5], "log": True},
                                      "dropout": {"choices": [0.0, 0.2]}}})
    doc = write_study_json(tmp_path, spec, "running")
    got = doc["searched"]
    assert set(got) == {"lr", "weight_decay", "dropout"}  # batch_size is fixed: never searched
    assert got["lr"] == {"kind": "float", "low": 1e-5, "high": 2e-5, "log": True, "step": None,
                              "note": "range from the spec's search:", "space": "optimisation_tiny",
                              "text": "float [1e-05, 2e-05] (log)"}
    assert (got["weight_decay"]["low"], got["weight_decay"]["high"]) == (1e-6, 1e-2)  # the space's own
    assert got["dropout"]["choices"] == [0.0, 0.2] and got["dropout"]["space"] == "search:"
    import json
    assert json.loads((tmp_path / "study.json").read_text())["searched"] == got
    html = _searched_block({"searched": got})
    assert html.count("<tr>") == 4 and "float [1e-05, 2e-05] (log)" in html and "search:" in html
    assert _searched_block({}) == ""  # a study written before the field: nothing shown
