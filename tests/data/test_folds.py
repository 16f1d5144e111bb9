"""Folds (study/data/folds.py): made and listed partitions of one extracted dataset, resplit
datasets over the parent's feature files, per-fold normalisation, the spec's `dataset.folds`,
selection on the fold mean and the rerun over every fold."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from study.data.dataset import open_dataset
from study.data.folds import (
    FoldError,
    apply_partition,
    check_folds,
    ensure_folds,
    folds_from_dict,
    make_splits,
    read_partition,
    resplit,
)
from study.data.normalize import load_stats
from study.runs.spec import SpecError, spec_from_dict


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from study.data.generate import make_corpus

    return make_corpus(tmp_path_factory.mktemp("d") / "ka", preset="known-answer", scale="tiny",
                       seed=0, progress=False)   # 360 utterances, 24 speakers


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AVSTUDY_CACHE", str(tmp_path / "cache"))


def _csv(path, rows):
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


# ----------------------------------------------------------------------------- made folds


def test_speaker_folds_are_disjoint_and_cover_every_speaker(data):
    m = open_dataset(data).manifest
    folds = make_splits(m, folds_from_dict({"by": "speaker", "k": 3, "seed": 1}))
    tests = [set(f.loc[f.split == "test", "speaker"]) for f in folds]
    assert [len(t) for t in tests] == [8, 8, 8]                 # 24 speakers / 3
    assert set.union(*tests) == set(m.speaker) and sum(map(len, tests)) == 24
    for i, f in enumerate(folds):
        by = f.groupby("speaker").split.nunique()
        assert (by == 1).all()                                  # speaker-disjoint splits
        assert set(f.loc[f.split == "dev", "speaker"]) == tests[(i + 1) % 3]   # dev: the next group
        assert len(f) == len(m)
    again = make_splits(m, folds_from_dict({"by": "speaker", "k": 3, "seed": 1}))
    assert all(a.split.equals(b.split) for a, b in zip(folds, again))          # seeded


def test_leave_one_session_out_takes_sessions_in_order_and_the_dev_choices():
    m = pd.DataFrame({"utt_id": [f"u{i}" for i in range(40)],
                      "speaker": [f"Ses{1 + i // 8:02d}{'FM'[i % 2]}" for i in range(40)],
                      "fold": [1 + i // 8 for i in range(40)]})   # IEMOCAP: fold = session
    folds = make_splits(m, folds_from_dict({"by": "session", "k": 5}))
    assert [sorted(f.loc[f.split == "test", "fold"].unique()) for f in folds] == [[1], [2], [3], [4], [5]]
    train = make_splits(m, folds_from_dict({"by": "session", "k": 5, "dev": "train",
                                            "dev_share": 0.25}))[0]
    assert train.loc[train.split != "test", "speaker"].nunique() == 8      # all 8 train speakers
    assert (train.split == "dev").sum() == 8                                # 0.25 of the 32
    assert set(train.loc[train.split == "dev", "fold"]) <= {2, 3, 4, 5}
    on_test = make_splits(m, folds_from_dict({"by": "session", "k": 5, "dev": "test"}))[0]
    assert "dev" not in set(on_test.split)


def test_k_larger_than_the_number_of_speakers_is_an_error(data):
    m = open_dataset(data).manifest
    with pytest.raises(FoldError, match=r"dataset.folds.k: 25 folds but the dataset has only 24 speakers"):
        make_splits(m, folds_from_dict({"by": "speaker", "k": 25}))
    with pytest.raises(FoldError, match="needs a `session`"):
        make_splits(m, folds_from_dict({"by": "session", "k": 2}))


# ----------------------------------------------------------------------------- bad input


def test_partition_naming_unknown_utterances_gives_their_count_and_first_ids(data, tmp_path):
    m = open_dataset(data).manifest
    rows = [{"FileName": f"{u}.wav", "Split_Set": "Train"} for u in m.utt_id[:3]]
    rows += [{"FileName": f"ghost{i}.wav", "Split_Set": "Test"} for i in range(7)]
    part = read_partition(_csv(tmp_path / "p.csv", rows))
    with pytest.raises(FoldError, match=r"p.csv: 7 utterance\(s\) are not in the dataset, e.g. "
                                        r"\['ghost0', 'ghost1', 'ghost2', 'ghost3', 'ghost4'\]"):
        apply_partition(m, part, str(tmp_path / "p.csv"))
    with pytest.raises(FoldError, match="needs an utterance column"):
        read_partition(_csv(tmp_path / "q.csv", [{"name": "a", "split": "train"}]))


def test_folds_that_share_a_speaker_are_named():
    def fold(test, dev, train):
        spk = test + dev + train
        return pd.DataFrame({"speaker": spk, "split": ["test"] * len(test) + ["dev"] * len(dev)
                             + ["train"] * len(train)})
    with pytest.raises(FoldError, match=r"fold 0 and fold 1 both test speaker 'b'"):
        check_folds([fold(["a", "b"], ["c"], ["d"]), fold(["b", "c"], ["d"], ["a"])],
                    ["fold 0", "fold 1"])
    with pytest.raises(FoldError, match=r"fold 1: speaker\(s\) \['a'\] are in more than one of its splits"):
        check_folds([fold(["a"], ["b"], ["c"]), fold(["b"], ["c"], ["a", "a"]).assign(
            speaker=["b", "c", "a", "a"], split=["test", "dev", "train", "test"])], ["fold 0", "fold 1"])


# ----------------------------------------------------------------------------- resplit datasets


def test_resplit_reads_the_parents_features_and_copies_none(data, tmp_path):
    parent = open_dataset(data)
    m = parent.manifest
    keep = m[m.speaker.isin(sorted(m.speaker.unique())[:12])]
    split = np.where(keep.speaker.isin(sorted(keep.speaker.unique())[:2]), "Test", "Train")
    part = _csv(tmp_path / "label_consensus_1.csv",
                {"FileName": keep.utt_id + ".wav", "Split_Set": split})
    out = resplit(data, part, tmp_path / "r")
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "manifest.parquet"]
    child = open_dataset(out)
    assert len(child.manifest) == len(keep) and set(child.manifest.split) == {"train", "test"}
    u = keep.utt_id.iloc[0]
    assert np.array_equal(child.audio(u), parent.audio(u))
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["provenance"]["resplit"]["parent"] == str(data.resolve())
    assert (out / meta["features_dir"]).resolve() == data.resolve()
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        resplit(data, part, tmp_path / "r")
    assert resplit(data, part, tmp_path / "r", overwrite=True) == tmp_path / "r"
    grand = resplit(out, part, tmp_path / "r2")  # a resplit of a resplit points at the features
    assert (grand / json.loads((grand / "dataset.json").read_text())["features_dir"]).resolve() \
        == data.resolve()


def test_normalisation_statistics_are_each_folds_own_training_split(data):
    spec = folds_from_dict({"by": "speaker", "k": 3})
    dirs = ensure_folds(spec, data)
    means = []
    for d in dirs:
        ds = open_dataset(d)
        train = ds.split("train")
        frames = np.concatenate([ds.audio(u).astype(np.float64) for u in train.utt_id])
        full = load_stats(ds)
        stats = full["audio"]
        np.testing.assert_allclose(stats.mean, frames.mean(0), rtol=1e-9, atol=1e-9)
        assert stats.utterances == len(train) and full.path.is_relative_to(ds.root)
        means.append(stats.mean)
    assert not np.allclose(means[0], means[1])                # different training speakers
    assert ensure_folds(spec, data) == dirs                    # made once, then reused


def test_dev_is_the_test_split_when_selected_on_test(data):
    d = ensure_folds(folds_from_dict({"by": "speaker", "k": 3, "dev": "test"}), data)[0]
    ds = open_dataset(d)
    assert ds.split("dev").utt_id.tolist() == ds.split("test").utt_id.tolist()
    d = ensure_folds(folds_from_dict({"by": "speaker", "k": 3, "dev": "train"}), data)[1]
    ds = open_dataset(d)  # dev shares the training speakers: allowed by dataset.json dev_from
    assert set(ds.split("dev").speaker) <= set(ds.split("train").speaker)


# ----------------------------------------------------------------------------- the spec


def _raw(**dataset) -> dict:
    return {"name": "f", "dataset": {"synth": {"preset": "known-answer"}, **dataset},
            "model_preset": "tiny", "spaces": ["optimisation"]}


def test_spec_folds_round_trip_and_errors():
    spec = spec_from_dict({**_raw(folds={"by": "speaker", "k": 3}), "search_folds": "mean"})
    assert spec.dataset.folds.n == 3 and spec.search_folds == "mean"
    assert spec_from_dict(spec.to_dict()) == spec
    listed = spec_from_dict({"name": "f", "dataset": {"folds": ["a", "b"]}, "model_preset": "tiny",
                             "spaces": ["optimisation"]})
    assert listed.dataset.path == "a" and listed.dataset.folds.entries == ("a", "b")
    assert "search_folds" not in spec_from_dict(_raw()).to_dict()   # one-partition specs unchanged
    bad = [({"search_folds": "mean"}, "search_folds: only with dataset.folds"),
           ({"dataset": {"folds": ["a.csv", "b.csv"]}}, "partition file 'a.csv' needs the dataset"),
           ({"dataset": {"path": "x", "folds": {"by": "speaker", "k": 1}}}, "dataset.folds.k: needs at least 2"),
           ({"dataset": {"path": "x", "folds": {"by": "utt", "k": 3}}}, "dataset.folds.by"),
           ({"dataset": {"path": "x", "folds": {"by": "speaker", "k": 3, "dev_share": 0.1}}},
            "only used with dev: train"),
           ({"dataset": {"path": "x", "folds": {"by": "speaker", "k": 3, "K": 2}}}, "unknown key")]
    for extra, message in bad:
        with pytest.raises(SpecError, match=message):
            spec_from_dict({**_raw(), **extra})


# ----------------------------------------------------------------------------- selection


def _search_rows(scores: dict[str, list[float]]) -> pd.DataFrame:
    rows = []
    for tid, per_fold in scores.items():
        for fold, f1 in enumerate(per_fold):
            rows.append({"trial_id": tid, "cell": "fusion=late|r=0", "status": "completed",
                         "split": "dev", "condition": "av", "macro_f1": f1, "fold": fold,
                         "seed": 9, "config": json.dumps({"fusion": "late", "lr": float(len(tid))}),
                         "param__lr": float(len(tid))})
    return pd.DataFrame(rows)


def test_selection_on_the_fold_mean_and_a_rerun_per_fold():
    from study.runs.stages import rerun_jobs, select_top_k

    spec = spec_from_dict({**_raw(folds={"by": "speaker", "k": 3}), "search_folds": "mean",
                           "seeds": [0, 1]})
    # a wins fold 0 (0.9 vs 0.6) but its mean is 0.5; bb's mean is 0.6
    search = _search_rows({"a": [0.9, 0.3, 0.3], "bb": [0.6, 0.6, 0.6]})
    assert [tid for tid, _ in select_top_k(spec, search)] == ["bb"]
    jobs = rerun_jobs(spec, search)
    assert sorted((j["flat"]["seed"], j["meta"]["fold"]) for j in jobs) == [
        (s, f) for s in (0, 1) for f in (0, 1, 2)]
    assert {j["meta"]["parent_trial_id"] for j in jobs} == {"bb"}
    one = spec_from_dict({**_raw(), "seeds": [0, 1]})   # no folds: as before, no fold in meta
    assert all("fold" not in j["meta"] for j in rerun_jobs(one, _search_rows({"a": [0.5]})))


def test_plan_counts_every_fold_and_checks_the_folds(data):
    from study.runs.plan import check_data, stage_plan

    raw = {**_raw(folds={"by": "speaker", "k": 3}), "search_folds": "mean", "seeds": [0, 1],
           "budget": {"trials_per_cell": 4, "max_epochs": 5}, "cells": {"fusion": ["late", "vavl"]}}
    plan = {st.name: st for st in stage_plan(spec_from_dict(raw))}
    assert (plan["search"].trials, plan["search"].max_epochs_per_trial) == (8, 15)  # 3 folds each
    assert plan["rerun"].trials == plan["final"].trials == 2 * 1 * 2 * 3   # cells x top_k x seeds x folds
    raw["dataset"] = {"path": str(data), "folds": {"by": "speaker", "k": 30}}
    with pytest.raises(FoldError, match="30 folds but the dataset has only 24 speakers"):
        check_data(spec_from_dict(raw))
    raw["dataset"]["folds"]["k"] = 4
    assert "4 speaker-disjoint folds (seed 0; dev = the next speaker group): valid" in check_data(
        spec_from_dict(raw))[1]
