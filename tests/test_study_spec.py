"""Study spec validation: shipped specs load; bad specs fail with the offending key named."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from study.runs.spec import SpecError, StudySpec, load_spec, max_concurrent, spec_from_dict

ROOT = Path(__file__).resolve().parent.parent
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
    with pytest.raises(Exception):  # frozen
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
