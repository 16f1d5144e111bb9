"""Study spec validation: shipped specs load; bad specs fail with the offending key named."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import yaml

from study.runs.spec import SpecError, StudySpec, load_spec, max_concurrent, spec_from_dict

ROOT = Path(__file__).resolve().parents[2]
BASE = {
    "name": "t", "dataset": {"synth": {"scale": "tiny"}}, "model_preset": "tiny",
    "spaces": ["architecture_tiny", "optimisation"],
    "cells": {"fusion": ["vavl", "late"], "train_missing_rate": [0.0, 0.5]},
    "budget": {"trials_per_cell": 3, "max_epochs": 2},
    "resources": {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 0},
}


def _with(path: str, value):
    raw = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = raw
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return raw


def test_shipped_specs_load_and_round_trip():
    demo = load_spec(ROOT / "search_spaces" / "demo.yaml", cluster={"CPU": 2})
    full = load_spec(ROOT / "search_spaces" / "crema_d_full.yaml", cluster={"CPU": 64, "GPU": 8})
    for spec in (demo, full):
        assert isinstance(spec, StudySpec)
        assert spec_from_dict(yaml.safe_load(yaml.safe_dump(spec.to_dict()))) == spec
    assert demo.resources.inline and demo.dataset.is_synth
    assert not full.resources.inline and full.resources.gpus_per_worker == 0.25
    assert len(full.cells.items()) == 25 and len(full.objectives) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        demo.name = "x"


@pytest.mark.parametrize("path,value,match", [
    ("budget.trails_per_cell", 3, r"budget: unknown key\(s\) \['trails_per_cell'\]"),
    ("budget.max_epochs", "ten", r"budget.max_epochs: expected int"),
    ("resources.gpus_per_worker", 1.5, r"resources.gpus_per_worker: 1.5"),
    ("resources.workers", 0, r"resources.workers: must be > 0"),
    ("resources.mode", "fast", r"resources.mode: 'fast' not one of"),
    ("cells.fusion", ["vavl", "concat"], r"cells.fusion\[1\]: 'concat' not one of"),
    ("cells.train_missing_rate", [0.2, 1.0], r"cells.train_missing_rate\[1\]: 1.0 not in"),
    ("spaces", ["architecture", "nope"], r"spaces\[1\]: 'nope' not one of"),
    ("fixed.learning_rate", 0.1, r"fixed.learning_rate: unknown config key"),
    ("fixed.fusion", "late", r"fixed.fusion: set by cells"),
    ("searcher.kind", "bayes", r"searcher.kind: 'bayes' not one of"),
    ("scheduler.grace_period", 5, r"scheduler.grace_period: 5 > budget.max_epochs=2"),
    ("scheduler.reduction_factor", 1, r"scheduler.reduction_factor: must be >= 2"),
    ("objectives", [{"metric": "f1", "condition": "av"}], r"objectives\[0\].metric: 'f1'"),
    ("objectives", [{"metric": "macro_f1", "condition": "av", "goal": "max"}],
     r"objectives\[0\]: unknown key"),
    ("task.kind", "regression", r"task.kind: 'regression' not one of"),
    ("dataset", {"path": "/x", "synth": {}}, r"dataset: give exactly one of"),
    ("seeds", [], r"seeds: expected a non-empty list"),
    ("top_k", 9, r"top_k: 9 > trials_per_cell=3"),
    ("colour", "red", r"spec: unknown key\(s\) \['colour'\]"),
])
def test_bad_specs_name_the_key(path, value, match):
    with pytest.raises(SpecError, match=match):
        spec_from_dict(_with(path, value))


def test_grid_searcher_takes_no_spaces():
    with pytest.raises(SpecError, match="spaces: searcher.kind=grid"):
        spec_from_dict(_with("searcher", {"kind": "grid"}))
    raw = _with("searcher", {"kind": "grid"})
    raw["spaces"] = []
    assert spec_from_dict(raw).searcher.kind == "grid"


def test_impossible_resources_are_rejected_against_the_cluster(tmp_path):
    raw = _with("resources", {"workers": 2, "cpus_per_worker": 1, "gpus_per_worker": 1})
    spec = spec_from_dict(raw)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match=r"s.yaml: resources.gpus_per_worker: a trial needs 2 "
                                        r"GPU\(s\) .* the cluster has 1"):
        load_spec(path, cluster={"CPU": 16, "GPU": 1})
    with pytest.raises(SpecError, match=r"resources.cpus_per_worker: .* has 1"):
        max_concurrent(spec, {"CPU": 1, "GPU": 4})
    assert max_concurrent(spec, {"CPU": 16, "GPU": 4}) == 2


def test_concurrency_counts_workers_only_and_fractional_gpus():
    two_cpu = spec_from_dict(BASE)
    assert max_concurrent(two_cpu, {"CPU": 2}) == 2  # inline trials, 1 CPU each
    frac = spec_from_dict(_with("resources", {"workers": 1, "cpus_per_worker": 2,
                                              "gpus_per_worker": 0.25}))
    assert max_concurrent(frac, {"CPU": 32, "GPU": 2}) == 8  # 4 trials per GPU
    assert max_concurrent(frac, {"CPU": 6, "GPU": 2}) == 3  # CPU-bound
    explicit = spec_from_dict(_with("resources", {"max_concurrent_trials": 6}))
    assert max_concurrent(explicit, {"CPU": 0}) == 6  # autoscaling: nodes not there yet


def test_not_yaml_and_not_a_mapping(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(SpecError, match="spec: expected a mapping"):
        load_spec(bad)


@pytest.mark.parametrize("key,value,match", [
    ("lr", -1, r"fixed.lr: must be > 0, got -1"),
    ("batch_size", "32", r"fixed.batch_size: expected an integer, got str '32'"),
    ("dropout", 5, r"fixed.dropout: must be in \[0, 1\), got 5"),
    ("n_heads", 0, r"fixed.n_heads: must be >= 1, got 0"),
    ("schedule", "four_pass", r"fixed.schedule: 'four_pass' not one of \[.*'fused'.*'three_pass'"),
    ("lr", float("nan"), r"fixed.lr: expected a finite number, got nan"),
    ("lr", float("inf"), r"fixed.lr: expected a finite number, got inf"),
    ("use_shared", "no", r"fixed.use_shared: expected true or false, got 'no'"),
    ("grad_clip", -1, r"fixed.grad_clip: must be >= 0, got -1"),
    ("batch_size", 32.5, r"fixed.batch_size: expected an integer, got float 32.5"),
    ("test_rates", [0.1, 1.0], r"fixed.test_rates\[1\]: must be in \[0, 1\), got 1.0"),
    ("patience", True, r"fixed.patience: expected an integer, got bool True"),
])
def test_fixed_values_follow_the_config_rules(key, value, match):
    with pytest.raises(SpecError, match=match):
        spec_from_dict(_with(f"fixed.{key}", value))


def test_fixed_int_is_accepted_for_a_float_key():
    assert spec_from_dict(_with("fixed", {"d_model": 32, "n_heads": 4, "lr": 1})).fixed["lr"] == 1


def test_fixed_yaml_text_is_checked_too(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(BASE, sort_keys=False) + "fixed: {lr: .nan}\n")
    with pytest.raises(SpecError, match=r"s.yaml: fixed.lr: expected a finite number"):
        load_spec(path)


@pytest.mark.parametrize("path,value,match", [
    ("resources.cpus_per_worker", float("nan"), r"resources.cpus_per_worker: expected a finite number"),
    ("resources.gpus_per_worker", float("inf"), r"resources.gpus_per_worker: expected a finite number"),
    ("name", "..", r"name: '\.\.' must be"),
    ("name", ".", r"name: '\.' must be"),
    ("name", "a/b", r"name: 'a/b' must be"),
    ("name", "", r"name: '' must be"),
])
def test_non_finite_resources_and_unsafe_names(path, value, match):
    with pytest.raises(SpecError, match=match):
        spec_from_dict(_with(path, value))


def test_duplicate_keys_are_an_error(tmp_path):
    path = tmp_path / "dup.yaml"
    text = yaml.safe_dump(BASE, sort_keys=False)
    path.write_text(text + "budget: {trials_per_cell: 1, max_epochs: 1}\n")
    with pytest.raises(SpecError, match=r"dup.yaml: not valid YAML: duplicate key 'budget'"):
        load_spec(path)
    path.write_text(text.replace("trials_per_cell: 3", "trials_per_cell: 3\n  trials_per_cell: 2"))
    with pytest.raises(SpecError, match=r"duplicate key 'trials_per_cell'"):
        load_spec(path)
    path.write_text(text)
    assert load_spec(path).budget.trials_per_cell == 3


def test_yaml_alias_bomb_gives_a_short_message(tmp_path):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, cur in zip("abcdefg", "bcdefgh"):
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    bomb = "\n".join(lines)  # 9**8 strings when expanded
    in_fixed = "name: t\ndataset: {synth: {}}\nspaces: [optimisation]\nfixed:\n  lr:\n" + "\n".join(
        "    - " + ln.split(": ", 1)[1] for ln in lines)
    for text, key in [(bomb + "\nname: *h", "spec"), (in_fixed, "fixed.lr")]:
        path = tmp_path / "bomb.yaml"
        path.write_text(text + "\n")
        with pytest.raises(SpecError) as err:
            load_spec(path)
        assert len(str(err.value)) < 600, len(str(err.value))
        assert key in str(err.value)


def test_tracking_section_is_validated_and_round_trips():
    raw = _with("tracking", {"mlflow": {"tracking_uri": "file:///tmp/mlruns", "tags": {"team": "av"}},
                             "wandb": {"project": "p", "mode": "offline"}})
    spec = spec_from_dict(raw)
    assert spec.tracking["mlflow"]["tracking_uri"] == "file:///tmp/mlruns"
    assert spec_from_dict(spec.to_dict()) == spec
    assert "tracking" not in spec_from_dict(BASE).to_dict()  # older studies' spec.yaml unchanged
    for value, match in [({"neptune": {}}, r"tracking: unknown key\(s\) \['neptune'\]"),
                         ({"mlflow": {"uri": "x"}}, r"tracking.mlflow: unknown key\(s\) \['uri'\]"),
                         ({"mlflow": {"tracking_uri": 5}}, r"tracking.mlflow.tracking_uri: expected str"),
                         ({"wandb": {"mode": "cloud"}}, r"tracking.wandb.mode: 'cloud' not one of")]:
        with pytest.raises(SpecError, match=match):
            spec_from_dict(_with("tracking", value))


def test_an_unknown_synthetic_preset_is_refused_naming_the_choices():
    raw = {"name": "x", "dataset": {"synth": {"preset": "tiny"}}, "spaces": [], "searcher": {"kind": "grid"}}
    with pytest.raises(SpecError, match=r"dataset.synth.preset: 'tiny' not one of \['crema-d', 'known-answer'"):
        spec_from_dict(raw)
