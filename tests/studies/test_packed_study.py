"""The rerun stage packs a configuration's seeds into one trial (resources.pack), and its
members come out of it as trials of their own: the same rows, columns and curves as unpacked."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from study.runs.spec import spec_from_dict
from study.runs.stages import sweep
from tests.studies.test_study_ray import _spec

pytestmark = pytest.mark.slow


@pytest.fixture
def synth_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AVSTUDY_CACHE", str(tmp_path / "avcache"))


def _study(tmp_path, pack: int):
    torch.set_num_threads(1)
    raw = _spec(seeds=[3, 5, 7], budget={"trials_per_cell": 2, "max_epochs": 3},
                scheduler={"kind": "none"}, resources={"workers": 1, "cpus_per_worker": 1, "pack": pack,
                                                             "max_concurrent_trials": 1})  # one slot: no CPU cap
    out = sweep(spec_from_dict(raw), out=tmp_path / f"pack{pack}", verbose=0)
    return pd.read_parquet(out / "results.parquet"), pd.read_parquet(out / "curves.parquet")


def test_rerun_seeds_train_as_one_pack_and_come_out_as_trials(ray_session, synth_cache, tmp_path):
    res, curves = _study(tmp_path, pack=4)
    alone, alone_curves = _study(tmp_path, pack=1)
    for stage in ("rerun", "final"):
        rows, ref = res[res.stage == stage], alone[alone.stage == stage]
        assert rows.trial_id.nunique() == 3 and sorted(rows.groupby("trial_id").seed.first()) == [3, 5, 7]
        assert rows.pack_id.notna().all() and rows.pack_id.nunique() == 1  # one pack of three
        assert ref.pack_id.isna().all()
        assert (rows.status == "completed").all() and (rows.epochs == 3).all()
        assert rows.groupby("trial_id").size().tolist() == ref.groupby("trial_id").size().tolist()
        assert set(rows.condition) == set(ref.condition)
        assert rows.groupby("trial_id").parent_trial_id.first().nunique() == 1
    assert list(res.columns) == list(alone.columns)
    rerun_ids = set(res[res.stage == "rerun"].trial_id)
    mine = curves[curves.trial_id.isin(rerun_ids)]
    assert mine.groupby("trial_id").epoch.agg(list).tolist() == [[1, 2, 3]] * 3
    assert set(curves.columns) == set(alone_curves.columns)
    # a member's recorded configuration is the unpacked trial's of its seed (its own batch order:
    # the seeds stay independent replicates)
    configs = lambda r: r[r.stage == "rerun"].groupby("seed").config.first().to_dict()  # noqa: E731
    assert configs(res) == configs(alone)
    times = res[res.stage == "rerun"].groupby("trial_id").wall_time_s.first()
    assert times.nunique() == 1  # wall time: the pack's
