"""Search-stage packs (study/runs/search_packs.py): the searcher draws a pack of configurations
per Tune trial, sharing what a pack may not vary; the scheduler judges each member on its own."""
from __future__ import annotations

import dataclasses
import pickle
from types import SimpleNamespace

import optuna
import pytest
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import Searcher

from search_spaces import combine
from study.runs.search_packs import PackedSearch, PackScheduler, SearchPacks, search_pack_plan
from study.runs.spec import spec_from_dict
from study.runs.worker import TrialContext

FIXED = {"batch_size": 16, "fusion": "vavl"}


def _searcher(packs: SearchPacks, spaces=("architecture_tiny", "optimisation_tiny", "missing")):
    return PackedSearch(space=combine(list(spaces), FIXED), metric="av_macro_f1", mode="max",
                        sampler=optuna.samplers.RandomSampler(seed=0), study_name="s",
                        packs=packs, preset="tiny")


def _draw_all(search) -> list[dict]:
    out = []
    for i in range(20):
        config = search.suggest(f"t{i}")
        if config == Searcher.FINISHED:
            return out
        out.append(config)
    raise AssertionError("the searcher never said FINISHED")


def test_a_pack_shares_what_it_may_not_vary_and_draws_the_rest():
    vary = frozenset({"lr", "weight_decay", "modality_dropout"})
    search = _searcher(SearchPacks(size=3, vary=vary, members=7))
    configs = _draw_all(search)
    packs = [c["job"]["pack"] for c in configs]
    assert sorted(len(p) for p in packs) == [2, 2, 3]  # 7 at 3: near-equal packs, 7 members in all
    for members in packs:
        flats = [m["flat"] for m in members]
        shape = {k: v for k, v in flats[0].items() if k not in vary}
        assert all({k: v for k, v in f.items() if k not in vary} == shape for f in flats)
        assert len({f["lr"] for f in flats}) == len(flats)  # each drew its own lr
    study = search._ot_study
    assert len(study.trials) == 7
    ids = sorted(t.user_attrs["ray_trial_id"] for t in study.trials)
    assert ids == sorted(f"t{i}-m{k}" for i, p in enumerate(packs) for k in range(len(p)))


def test_each_member_is_told_its_own_end():
    search = _searcher(SearchPacks(size=3, vary=frozenset({"lr", "weight_decay", "modality_dropout"}),
                                   members=3))
    config = search.suggest("t0")
    assert len(config["job"]["pack"]) == 3 and config["job"]["trial"] == "t0"
    result = {"training_iteration": 2, "epoch": 2,
              "m0/av_macro_f1": 0.6, "m0/finished": True, "m0/epoch": 2,
              "m1/av_macro_f1": 0.3, "m1/finished": False, "m1/epoch": 1,  # stopped by the scheduler
              "m2/av_macro_f1": 0.5, "m2/error": "TrialDiverged: nan", "m2/epoch": 1}
    search.on_trial_result("t0", result)
    search.on_trial_complete("t0", result)
    by_id = {t.user_attrs["ray_trial_id"]: t for t in search._ot_study.trials}
    S = optuna.trial.TrialState
    assert by_id["t0-m0"].state == S.COMPLETE and by_id["t0-m0"].value == pytest.approx(0.6)
    assert by_id["t0-m1"].state == S.PRUNED and by_id["t0-m1"].user_attrs["last_values"] == [0.3]
    assert by_id["t0-m2"].state == S.FAIL


def test_a_first_member_that_cannot_pack_trains_alone_under_the_trials_own_id():
    search = _searcher(SearchPacks(size=2, vary=frozenset({"lr", "weight_decay"}), members=2),
                       spaces=("optimisation_tiny",))
    search._space.fixed["fusion"] = "foalnet"  # mixes the samples of a batch: not packable
    first = search.suggest("t0")
    assert "job" not in first and first["fusion"] == "foalnet"
    second = search.suggest("t1")  # the budget counts configurations: one more is drawn
    assert "job" not in second and search.suggest("t2") == Searcher.FINISHED
    assert sorted(t.user_attrs["ray_trial_id"] for t in search._ot_study.trials) == ["t0", "t1"]


class _Stops:
    def __init__(self):
        self.calls = []
        self.stop = SimpleNamespace(remote=lambda trial, members: self.calls.append((trial, list(members))))


def _trial(tid, n):
    return SimpleNamespace(trial_id=tid, config={"job": {"flat": {}, "pack": [{}] * n, "trial": tid}})


def test_the_scheduler_stops_a_member_and_the_pack_goes_on():
    inner = ASHAScheduler(time_attr="epoch", metric="av", mode="max", max_t=8, grace_period=1,
                          reduction_factor=2)
    stops = _Stops()
    sched = PackScheduler(inner, "unused")
    sched._actor = stops
    first, pack = SimpleNamespace(trial_id="a", config={"lr": 1}), _trial("p", 3)
    sched.on_trial_add(None, first)
    sched.on_trial_add(None, pack)
    assert sched.on_trial_result(None, first, {"epoch": 1, "av": 0.5}) == TrialScheduler.CONTINUE
    # at the first rung: members 0 and 2 above the unpacked trial, member 1 below it
    result = {"epoch": 1, "m0/epoch": 1, "m0/av": 0.9, "m1/epoch": 1, "m1/av": 0.1,
              "m2/epoch": 1, "m2/av": 0.8}
    assert sched.on_trial_result(None, pack, result) == TrialScheduler.CONTINUE
    assert stops.calls == [("p", [1])]
    assert set(sched.open["p"]) == {0, 2}
    # member 0 finished on its own, member 2 diverged: nobody races any more -> the pack stops
    later = {**result, "epoch": 2, "m0/epoch": 2, "m0/finished": True, "m2/error": "TrialDiverged"}
    assert sched.on_trial_result(None, pack, later) == TrialScheduler.STOP
    assert stops.calls == [("p", [1])] * 2  # told again with every report (a restored driver)
    sched.on_trial_complete(None, pack, later)
    assert "p" not in sched.open
    assert pickle.loads(pickle.dumps(sched))._actor is None  # Tune pickles it: no actor handle


def test_the_schedulers_stops_reach_the_pack_trial_through_the_actor(ray_session):
    from study.runs.packs import scheduler_stops
    from study.runs.search_packs import start_stops

    name, actor = start_stops("study-a/search-x")
    assert start_stops("study-a/search-x")[0] == name != start_stops("study-b/search-x")[0]
    ctx = _ctx(pack_stops=name)
    stopped = scheduler_stops({"job": {"trial": "p"}}, ctx)
    assert stopped() == []
    sched = PackScheduler(None, name)
    sched.stopped["p"] = [2]
    sched._tell("p")
    actor.stop.remote("other", [0])
    assert stopped() == [2]
    assert scheduler_stops({"job": {"trial": "p"}}, _ctx())() == []  # no scheduler: nothing stops
    assert scheduler_stops({"job": {"trial": "p"}}, _ctx(pack_stops="gone"))() == []


def test_a_member_the_scheduler_stopped_leaves_and_its_mate_trains_on(ray_session, tmp_path, monkeypatch):
    import ray

    from study.runs.packs import pack_loop
    from study.runs.search_packs import start_stops
    from study.runs.selection import base_flat
    from study.runs.stages import trial_context

    monkeypatch.setenv("AVSTUDY_CACHE", str(tmp_path / "avcache"))
    spec = spec_from_dict({"name": "sp", "dataset": {"synth": {"preset": "crema-d", "scale": "tiny"}},
                           "model_preset": "tiny", "spaces": [], "searcher": {"kind": "grid"},
                           "fixed": {"batch_size": 32, "patience": 5},
                           "cells": {"fusion": ["vavl"], "train_missing_rate": [0.0]}})
    name, actor = start_stops(str(tmp_path))
    ctx = dataclasses.replace(trial_context(spec, str(tmp_path / "ray"), "search", evaluate_test=False),
                              pack_stops=name)
    flat = base_flat(spec, {"fusion": "vavl", "train_missing_rate": 0.0}, 3, 0)
    jobs = [{"flat": {**flat, "lr": lr}, "meta": {}} for lr in (3e-3, 1e-3)]
    reports = []

    def report(metrics, checkpoint=None):
        reports.append(metrics)
        if len(reports) == 1:  # what PackScheduler does on a STOP for member 1 at its first rung
            ray.get(actor.stop.remote("p", [1]))

    pack_loop({"job": {**jobs[0], "pack": jobs, "trial": "p"}}, ctx, report, lambda: None,
              lambda d: None)
    last = reports[-1]
    assert len(reports) == 3 and last["m0/epoch"] == 3 and last["m0/finished"] is True
    assert last["m1/epoch"] == 1 and last["m1/finished"] is False  # left after its first epoch


def _ctx(**kw):
    return TrialContext(data_dir="d", model_preset="tiny", objectives=(("av", "macro_f1", "max"),), **kw)


def _spec(resources, spaces):
    return spec_from_dict({"name": "p", "dataset": {"synth": {"preset": "crema-d", "scale": "tiny"}},
                           "model_preset": "tiny", "spaces": spaces, "fixed": {"batch_size": 16},
                           "budget": {"trials_per_cell": 8, "max_epochs": 3},
                           "resources": {"gpus_per_worker": 0.25, **resources}})


def test_the_plan_packs_where_no_draw_changes_and_says_why_not_elsewhere():
    ctx = _ctx(gpus_per_worker=0.25)
    free = ["optimisation_tiny", "missing"]
    spec = _spec({}, free)
    packs, why = search_pack_plan(spec, ctx, combine(free, FIXED), slots=4)
    assert why is None and packs.size == 4 and packs.members == 8  # the GPU default: 4
    shaping = ["architecture_tiny", *free]
    packs, why = search_pack_plan(_spec({}, shaping), ctx, combine(shaping, FIXED), slots=4)
    assert packs is None and "d_model" in why and "resources.pack_vary" in why
    listed = _spec({"pack_vary": ["lr", "weight_decay"]}, shaping)
    packs, why = search_pack_plan(listed, ctx, combine(shaping, FIXED), slots=4)
    assert why is None and packs.vary == {"lr", "weight_decay"}
    off = _spec({"pack_vary": []}, free)
    assert search_pack_plan(off, ctx, combine(free, FIXED), slots=4)[0] is None
    cpu = _spec({"gpus_per_worker": 0}, free)  # the CPU default: no packs
    assert search_pack_plan(cpu, _ctx(), combine(free, FIXED), slots=2) == (None, None)


# ----------------------------------------------------------------------------- a real study


@pytest.mark.slow
def test_a_packed_search_gives_every_member_its_own_trial(ray_session, tmp_path, monkeypatch):
    import pandas as pd
    import torch

    from study.runs.stages import sweep
    from tests.studies.test_study_ray import _spec as ray_spec

    monkeypatch.setenv("AVSTUDY_CACHE", str(tmp_path / "avcache"))
    torch.set_num_threads(1)
    raw = ray_spec(spaces=["optimisation_tiny", "missing"],  # lr, weight_decay, modality_dropout
                   resources={"workers": 1, "cpus_per_worker": 1, "pack": 2, "max_concurrent_trials": 1})
    out = sweep(spec_from_dict(raw), out=tmp_path / "study", verbose=0)
    res = pd.read_parquet(out / "results.parquet")
    curves = pd.read_parquet(out / "curves.parquet")
    search = res[res.stage == "search"].groupby("trial_id").first()
    assert len(search) == 6 and search.pack_id.nunique() == 3  # 6 configurations in 3 packs of 2
    assert (search.groupby("pack_id").size() == 2).all()
    assert search.config.nunique() == 6
    study = optuna.load_study(study_name="tiny/search/late-r0.5", storage=f"sqlite:///{out / 'optuna.db'}")
    state = {t.user_attrs["ray_trial_id"]: t.state.name for t in study.trials}
    assert len(state) == 6
    for trial_id, row in search.iterrows():
        tune_id = trial_id.removeprefix("search-late-r0.5-")
        assert tune_id.startswith(row.pack_id) and tune_id.endswith(("-m0", "-m1"))
        assert state[tune_id] == {"completed": "COMPLETE", "early_stopped": "PRUNED"}[row.status]
        epochs = curves[curves.trial_id == trial_id].epoch.tolist()
        assert epochs == list(range(1, int(row.epochs) + 1))  # its own epochs, however long its mate ran
    print(search[["pack_id", "status", "epochs"]])
