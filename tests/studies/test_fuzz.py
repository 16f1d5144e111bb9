"""Property-based tests (hypothesis): the spec loader and the dataset reader either accept their
input or raise the project's own error (SpecError / DatasetError) naming the culprit; never an
unhandled exception. About 1,100 generated cases, well under a minute.
"""
from __future__ import annotations

import copy
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from study.data.dataset import Dataset, DatasetError, open_dataset, write_dataset
from study.runs.spec import SpecError, StudySpec, load_spec, spec_from_dict

FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def fuzz(n: int) -> settings:
    """n generated cases per test; in all 400 + 200 + 100 + 150 + 150 + 150 = 1,150."""
    return settings(FUZZ, max_examples=n)

BASE = {
    "name": "t", "dataset": {"synth": {"scale": "tiny"}}, "model_preset": "tiny",
    "spaces": ["architecture_tiny", "optimisation"], "fixed": {"lr": 0.001, "batch_size": 16},
    "cells": {"fusion": ["vavl", "late"], "train_missing_rate": [0.0, 0.5]},
    "searcher": {"kind": "optuna-tpe", "seed": 0, "n_startup_trials": 2},
    "scheduler": {"kind": "asha", "grace_period": 1, "reduction_factor": 2},
    "budget": {"trials_per_cell": 3, "max_epochs": 2},
    "resources": {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 0},
    "objectives": [{"metric": "macro_f1", "condition": "av", "mode": "max"}],
    "seeds": [0, 1], "top_k": 1,
}
PATHS = ["name", "dataset", "dataset.path", "dataset.synth", "dataset.synth.scale", "dataset.synth.seed",
         "task", "task.kind", "task.label_kind", "model_preset", "spaces", "fixed", "fixed.lr",
         "fixed.batch_size", "fixed.dropout", "fixed.n_heads", "fixed.schedule", "fixed.use_shared",
         "fixed.grad_clip", "fixed.test_rates", "cells", "cells.fusion", "cells.train_missing_rate",
         "searcher", "searcher.kind", "searcher.seed", "scheduler.kind", "scheduler.grace_period",
         "scheduler.reduction_factor", "budget.trials_per_cell", "budget.max_epochs",
         "budget.rerun_max_epochs", "resources", "resources.workers", "resources.cpus_per_worker",
         "resources.gpus_per_worker", "resources.mode", "resources.max_concurrent_trials", "objectives",
         "seeds", "top_k", "storage", "tracking", "tracking.mlflow", "tracking.mlflow.tracking_uri",
         "failure", "search_data_conditions", "unknown_key"]

scalars = (st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True)
           | st.text(max_size=12) | st.sampled_from(["vavl", "tiny", "grid", "asha", "av", "", "..", "-1"]))
values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(
    st.text(max_size=8) | st.sampled_from(["kind", "path", "synth", "lr", "metric"]), c, max_size=4),
    max_leaves=10)


def _set(raw: dict, path: str, value) -> None:
    *parents, last = path.split(".")
    node = raw
    for p in parents:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[last] = value


@fuzz(400)
@given(st.lists(st.tuples(st.sampled_from(PATHS), values), min_size=1, max_size=3))
def test_spec_from_dict_accepts_or_names_the_key(edits):
    raw = copy.deepcopy(BASE)
    for path, value in edits:
        _set(raw, path, value)
    try:
        spec = spec_from_dict(raw)
    except SpecError as exc:
        assert len(str(exc)) < 2000
        return
    assert isinstance(spec, StudySpec)
    assert math.isfinite(spec.resources.cpus_per_worker) and spec.name not in (".", "..")
    assert spec_from_dict(spec.to_dict()) == spec  # what loads, round-trips


@fuzz(200)
@given(st.text(max_size=300) | st.builds(lambda d: yaml.safe_dump(d), values))
def test_load_spec_text_accepts_or_raises_spec_error(text):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "s.yaml"
        path.write_text(text)
        try:
            load_spec(path)
        except SpecError as exc:
            assert len(str(exc)) < 2000


@fuzz(100)
@given(st.dictionaries(st.sampled_from(sorted(BASE)), values, max_size=3))
def test_load_spec_of_mutated_yaml_with_duplicates(extra):
    text = yaml.safe_dump(BASE, sort_keys=False) + (yaml.safe_dump(extra) if extra else "")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "s.yaml"
        path.write_text(text)
        try:
            load_spec(path)
        except SpecError as exc:
            assert not extra or "duplicate key" in str(exc)  # every extra key repeats one of BASE
        else:
            assert not extra


# ----------------------------------------------------------------------------- dataset reader


def _manifest(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame({
        "utt_id": [f"u{i}" for i in range(n)], "speaker": [f"s{i // 2}" for i in range(n)],
        "split": ["train", "train", "dev", "dev", "test", "test"][:n], "label": ["a", "b"] * (n // 2),
        "has_audio": True, "has_video": True,
    })


def _write(root: Path, manifest: pd.DataFrame, meta: dict, lengths=(3, 4, 5, 6, 7, 8)) -> Path:
    rng = np.random.default_rng(0)
    audio = [(f"u{i}", rng.normal(size=(t, 4))) for i, t in enumerate(lengths)]
    video = [(f"u{i}", rng.normal(size=(t, 3))) for i, t in enumerate(lengths)]
    return write_dataset(root, manifest, meta, audio, video)


def _open_or_dataset_error(root: Path) -> None:
    try:
        ds = open_dataset(root)
    except DatasetError as exc:
        assert str(root) in str(exc) and len(str(exc)) < 2000
        return
    assert isinstance(ds, Dataset)
    for utt in ds.manifest.loc[ds.manifest["has_audio"], "utt_id"]:
        assert np.isfinite(ds.audio(utt)).all() and len(ds.audio(utt))


flag = st.sampled_from([True, False, 0, 1, "False", "True", "no", None, 2, 1.5])
label = st.sampled_from(["a", "b", "c", None, "", 3])
split = st.sampled_from(["train", "dev", "test", "validation", None])
soft = st.floats(-1, 2) | st.sampled_from([0.0, 0.5, 1.0, float("nan"), float("inf")])


@fuzz(150)
@given(st.lists(st.tuples(st.integers(0, 5), st.sampled_from(["has_audio", "has_video", "label", "split",
                                                              "soft_a", "soft_b", "speaker"]),
                          flag | label | split | soft), max_size=4),
       st.booleans())
def test_manifest_mutations_are_accepted_or_named(edits, with_soft):
    m = _manifest()
    if with_soft:
        m["soft_a"], m["soft_b"] = 0.5, 0.5
    m = m.astype(object)
    for row, col, value in edits:
        if col.startswith("soft_") and col not in m.columns:
            continue
        m.at[row, col] = value
    meta = {"classes": ["a", "b"], "audio": {"dim": 4}, "video": {"dim": 3}}
    with tempfile.TemporaryDirectory() as d:
        try:
            root = _write(Path(d) / "ds", m, meta)
        except (ValueError, TypeError, OverflowError):  # pyarrow cannot store a mixed column
            return
        _open_or_dataset_error(root)


meta_values = values | st.builds(dict, classes=values) | st.builds(
    lambda dim: {"audio": {"dim": dim}}, values)


@fuzz(150)
@given(st.one_of(values, st.dictionaries(st.sampled_from(
    ["classes", "dimensions", "audio", "video", "schema_version", "extra"]), meta_values, max_size=3)))
def test_dataset_json_mutations_are_named(patch):
    meta = {"classes": ["a", "b"], "audio": {"dim": 4}, "video": {"dim": 3}}
    with tempfile.TemporaryDirectory() as d:
        root = _write(Path(d) / "ds", _manifest(), meta)
        doc = json.loads((root / "dataset.json").read_text())
        doc = {**doc, **patch} if isinstance(patch, dict) else patch
        (root / "dataset.json").write_text(json.dumps(doc))
        _open_or_dataset_error(root)


@fuzz(150)
@given(st.sampled_from(["audio.arrow", "video.arrow"]),
       st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6),
       st.booleans())
def test_damaged_feature_files_are_named(name, flips, truncate):
    meta = {"classes": ["a", "b"], "audio": {"dim": 4}, "video": {"dim": 3}}
    with tempfile.TemporaryDirectory() as d:
        root = _write(Path(d) / "ds", _manifest(), meta)
        data = bytearray((root / name).read_bytes())
        for at, byte in flips:
            data[at % len(data)] = byte
        if truncate:
            data = data[: flips[0][0] % len(data)]
        (root / name).write_bytes(bytes(data))
        _open_or_dataset_error(root)
