"""`resources.gpus_per_worker: auto` (issue 21 item 3): a trial's GPU share from the memory probe,
1/n for the n trials (packs) that fit in 90 % of one GPU, at most 8, rounded down so n fit; 0 on
a cluster without GPUs. The probe itself runs on a GPU worker (not here: this suite has none)."""

from __future__ import annotations

import json

import pytest

from study.cli import main
from study.runs.spec import SpecError, resolve_gpus, spec_from_dict
from study.runs.spec.placement import MAX_TRIALS_PER_GPU, gpu_share
from tests.studies.test_cli import _spec_file, data  # noqa: F401 (the fixture)

SPEC = {"name": "g", "dataset": {"synth": {"scale": "tiny"}}, "spaces": [], "searcher": {"kind": "grid"},
        "resources": {"gpus_per_worker": "auto"}}


def _spec(**resources):
    return spec_from_dict({**SPEC, "resources": {"gpus_per_worker": "auto", "pack": 1, **resources}})


def test_auto_is_the_one_word_gpus_per_worker_takes():
    assert _spec().resources.gpus_per_worker == "auto"
    with pytest.raises(SpecError, match=r"resources.gpus_per_worker: 'half' — a number of GPUs, or 'auto'"):
        spec_from_dict({**SPEC, "resources": {"gpus_per_worker": "half"}})


@pytest.mark.parametrize("fit, pack, share", [
    ({"trials_per_gpu": 2, "packs_per_gpu": 0}, 1, 0.5),
    ({"trials_per_gpu": 7}, 1, 0.1428),             # 7 x 0.1428 = 0.9996 <= 1: all seven fit
    ({"trials_per_gpu": 3}, 1, 0.3333),
    ({"trials_per_gpu": 40}, 1, 1 / MAX_TRIALS_PER_GPU),
    ({"trials_per_gpu": 0}, 1, 1.0),                 # not even one fits: a whole GPU (and OOM says why)
    (None, 1, 1.0),                                  # unmeasured
    ({"trials_per_gpu": 8, "packs_per_gpu": 2}, 4, 0.5),  # a pack trial holds 4 members
])
def test_the_share_is_one_over_what_fits(fit, pack, share):
    assert gpu_share(fit, pack) == share
    if fit and fit.get("trials_per_gpu"):
        n = min(fit["packs_per_gpu" if pack > 1 else "trials_per_gpu"], MAX_TRIALS_PER_GPU)
        assert n * gpu_share(fit, pack) <= 1.0


def test_resolve_measures_only_where_a_gpu_may_run_the_trials():
    def never():
        raise AssertionError("no GPU in the cluster: nothing to measure")

    spec, note = resolve_gpus(_spec(), {"CPU": 4}, never)
    assert spec.resources.gpus_per_worker == 0.0 and spec.resources.inline
    assert note == {"gpus_per_worker": 0.0, "why": "no GPU in the cluster: trials run on CPU", "memory": None}
    memory = {"trials_per_gpu": 5, "packs_per_gpu": 1, "gpu_mib": 81559.0}
    spec, note = resolve_gpus(_spec(), {"CPU": 16, "GPU": 1}, lambda: memory)
    assert spec.resources.gpus_per_worker == 0.2 and not spec.resources.inline
    assert note["why"] == "the memory probe: 5 trial(s) fit in 90 % of one GPU (81559 MiB), at most 8"
    # autoscaling (max_concurrent_trials given): no GPU yet, one will come; the probe asks for it
    spec, _ = resolve_gpus(_spec(max_concurrent_trials=4), {"CPU": 2}, lambda: memory)
    assert spec.resources.gpus_per_worker == 0.2
    # packed trials (the default pack 4) hold 4 members: the share is one pack's
    spec, note = resolve_gpus(_spec(pack=4), {"GPU": 1}, lambda: memory)
    assert spec.resources.gpus_per_worker == 1.0 and note["why"].startswith("the memory probe: 1 pack(s) fit")
    fixed = spec_from_dict({**SPEC, "resources": {"gpus_per_worker": 0.25}})
    assert resolve_gpus(fixed, {"GPU": 1}, never) == (fixed, None)


def test_plan_says_what_auto_gives(data, tmp_path, capsys):  # noqa: F811
    spec = _spec_file(tmp_path, dataset={"path": str(data)},
                      resources={"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": "auto"})
    argv = ["plan", str(spec), "--no-probe", "--cluster-cpus", "3", "--cluster-gpus"]
    assert main([*argv, "0"]) == 0
    out = capsys.readouterr().out
    assert "gpus_per_worker: auto -> 0 (no GPU in the cluster: trials run on CPU)" in out
    assert "a trial takes 1 CPU + 0 GPU (inline)" in out
    assert main([*argv, "2", "--format", "json"]) == 0  # unmeasured here: a whole GPU each
    doc = json.loads(capsys.readouterr().out)
    assert doc["gpus_per_worker_auto"]["gpus_per_worker"] == 1.0 and doc["max_concurrent"] == 2
    assert doc["trial_resources"] == {"CPU": 1, "GPU": 1.0, "mode": "ray-train"}
