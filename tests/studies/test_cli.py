"""The `avstudy` console entry point (main(argv)): commands, help, safety guards, live view."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from study.cli import load_flat_config, main
from study.runs.console import LiveView
from study.runs.spec import SpecError, spec_from_dict

ROOT = Path(__file__).resolve().parents[2]
TINY = {
    "name": "tinycli", "dataset": {"synth": {"scale": "tiny", "seed": 0}}, "model_preset": "tiny",
    "spaces": ["optimisation_tiny"],
    "fixed": {"d_model": 16, "n_heads": 2, "enc_layers": 1, "use_shared": False, "shared_layers": 0,
              "batch_size": 64, "patience": 5},
    "cells": {"fusion": ["late", "gated"], "train_missing_rate": [0.0]},
    "searcher": {"kind": "random", "seed": 0}, "scheduler": {"kind": "none"},
    "budget": {"trials_per_cell": 2, "max_epochs": 1},
    "resources": {"workers": 1, "cpus_per_worker": 1}, "seeds": [0, 1], "top_k": 1,
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "d"
    assert main(["data", "synth", "--scale", "tiny", "--seed", "1", "--out", str(out)]) == 0
    return out


def _spec_file(tmp_path, **changes) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**TINY, **changes}, sort_keys=False))
    return path


def test_synth_train_describe(data, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("preset: tiny\nlr: 0.002\nmax_epochs: 2\ntrain_missing_rate: 0.5\n")
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--config", str(cfg), "--set", "fusion=gated",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "epoch   2" in printed and "audio_only" in printed and "video_only" in printed
    record = json.loads((out / "record.json").read_text())
    assert record["config"]["fusion"] == "gated" and record["protocol"]["train_missing_rate"] == 0.5
    rows = pd.read_parquet(out / "record.parquet")
    assert set(rows["split"]) == {"dev", "test"} and "miss_0.9" in set(rows["condition"])
    assert (out / "session.pt").exists()
    # an existing run is never overwritten
    before = (out / "record.json").read_text()
    assert main(["train", "--data", str(data), "--config", str(cfg), "--out", str(out)]) == 1  # runtime
    assert "holds a run already" in capsys.readouterr().err
    assert (out / "record.json").read_text() == before


def test_errors_are_one_message_exit_2_for_usage_1_for_runtime(data, tmp_path, capsys):
    assert main(["data", "describe", str(tmp_path)]) == 1  # a valid request the data cannot serve
    assert "dataset.json: missing" in capsys.readouterr().err
    assert main(["train", "--data", str(data), "--set", "lr=-1"]) == 2
    assert "lr: must be > 0, got -1" in capsys.readouterr().err
    assert main(["train", "--data", str(data), "--set", "grad_clip=-1"]) == 2
    assert "grad_clip: must be >= 0" in capsys.readouterr().err
    assert main(["train", "--data", str(data), "--set", "nope=1"]) == 2
    assert "nope: unknown config key" in capsys.readouterr().err
    assert main(["train", "--data", str(data), "--set", "d_modle=8"]) == 2
    assert "did you mean `d_model`?" in capsys.readouterr().err


def test_synth_refuses_a_non_empty_out_and_overwrite_keeps_open_maps(data, tmp_path, capsys):
    from study.data.dataset import open_dataset

    out = tmp_path / "d"
    assert main(["data", "synth", "--scale", "tiny", "--seed", "1", "--out", str(out)]) == 0
    old = open_dataset(out, check_values=False)
    utt = old.manifest["utt_id"].iloc[0]
    before = np.array(old.audio(utt))
    assert main(["data", "synth", "--scale", "tiny", "--seed", "2", "--out", str(out)]) == 1
    assert "not empty; pass --overwrite" in capsys.readouterr().err
    np.testing.assert_array_equal(open_dataset(out, check_values=False).audio(utt), before)
    assert main(["data", "synth", "--scale", "tiny", "--seed", "2", "--out", str(out), "--overwrite"]) == 0
    np.testing.assert_array_equal(old.audio(utt), before)  # the old memory map is intact
    new = open_dataset(out, check_values=False)
    assert json.loads((out / "dataset.json").read_text())["provenance"] != old.meta["provenance"] or \
        not np.array_equal(new.audio(new.manifest["utt_id"].iloc[0]), before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # no temporary directories left


def test_version_and_help_describe_defaults_and_choices(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("avstudy 0.")
    for argv, wanted in [(["data", "synth"], ["{tiny,small,full}", "(default: small)", "(default: 0)"]),
                         (["sweep"], ["--verbose", "STUDY_DIR/logs/ray.log", "--resume"]),
                         (["plan"], ["--cluster-cpus", "--no-probe", "this machine"]),
                         (["export-best"], ["{search,rerun}", "(default: rerun)", "never used"]),
                         (["demo"], ["(default: runs/demo)"])]:
        with pytest.raises(SystemExit):
            main([*argv, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for w in wanted:
            assert w in text, (argv, w)


LIGHT = r"""
import sys
from study.cli import main
for argv in {argvs!r}:
    try:
        main(argv)
    except SystemExit:
        pass
heavy = sorted(m for m in ("torch", "ray") if m in sys.modules)
print("HEAVY", heavy)
"""


def test_light_commands_never_import_torch(data, tmp_path):
    spec = _spec_file(tmp_path, dataset={"path": str(data)})
    argvs = [["--help"], ["report", "--help"], ["status", str(tmp_path)], ["report", str(tmp_path / "none")],
             ["spaces"], ["plan", str(spec), "--no-probe", "--cluster-cpus", "4"], ["sweep", "--help"]]
    for argv in argvs:  # one process per command: an import in one does not hide another's
        proc = subprocess.run([sys.executable, "-c", LIGHT.format(argvs=[argv])], capture_output=True,
                              text=True, cwd=ROOT, timeout=120)
        assert "HEAVY []" in proc.stdout, (argv, proc.stdout[-500:], proc.stderr[-2000:])


def test_plan_counts_concurrency_and_estimate(data, tmp_path, capsys):
    spec = _spec_file(tmp_path, dataset={"path": str(data)})
    assert main(["plan", str(spec), "--no-probe", "--cluster-cpus", "3", "--cluster-gpus", "0"]) == 0
    out = capsys.readouterr().out
    assert "2 cell(s) (2 fusion x 1 train_missing_rate)" in out
    assert "from --cluster-cpus/--cluster-gpus" in out and "at most 3 trial(s) at once" in out
    assert "search  2 experiment(s), 4 trial(s), <= 1 epochs each" in out
    assert "rerun   1 experiment(s), 4 trial(s)" in out  # 2 cells x top-1 x 2 seeds
    assert "rough figure: 5 s per epoch" in out and "<= 8 trial-epochs" in out
    assert "360 utterances" in out  # the dataset was opened and validated
    assert main(["plan", str(spec), "--cluster-cpus", "2"]) == 0  # probe: one timed epoch
    assert "measured: one epoch of cell 1's sampled configuration took" in capsys.readouterr().out


def test_plan_fails_where_the_sweep_would(data, tmp_path, capsys):
    spec = _spec_file(tmp_path, dataset={"path": str(data)},
                      fixed={**TINY["fixed"], "n_heads": 3})  # d_model=16 not divisible by 3
    assert main(["plan", str(spec), "--no-probe"]) == 2
    err = capsys.readouterr().err
    assert "fixed: d_model=16 not divisible by n_heads=3" in err and "fusion late, gated" in err
    spec = _spec_file(tmp_path, resources={"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 1})
    assert main(["plan", str(spec), "--no-probe", "--cluster-cpus", "8", "--cluster-gpus", "0"]) == 2
    assert "a trial needs 1 GPU(s)" in capsys.readouterr().err
    spec = _spec_file(tmp_path, dataset={"path": str(tmp_path / "nowhere")})
    assert main(["plan", str(spec), "--no-probe"]) == 2  # the spec names a path that holds no dataset
    assert "holds no dataset.json" in capsys.readouterr().err



def test_plan_refuses_a_categorical_objective_for_a_dimensional_task(data, tmp_path, capsys):
    dim = {"kind": "dimensional", "label_kind": "hard"}
    for metric, rc in (("macro_f1", 2), ("uar", 2), ("ccc_mean", None)):
        spec = _spec_file(tmp_path, dataset={"path": str(data)}, task=dim,
                          objectives=[{"metric": metric, "condition": "av", "mode": "max"}])
        got = main(["plan", str(spec), "--no-probe"])
        err = capsys.readouterr().err
        if rc is None:  # a dimensional objective passes the objective check (the labels may still not)
            assert "objectives[0].metric" not in err, err
        else:
            assert got == rc and f"objectives[0].metric: {metric} is not a metric of a dimensional task" in err


def test_plan_refuses_a_dataset_without_test_utterances(data, tmp_path, capsys):
    no_test = tmp_path / "no-test"
    shutil.copytree(data, no_test)
    m = pd.read_parquet(no_test / "manifest.parquet")
    m.assign(split=m["split"].replace({"test": "train"})).to_parquet(no_test / "manifest.parquet", index=False)
    before = (no_test / "manifest.parquet").read_bytes()
    spec = _spec_file(tmp_path, dataset={"path": str(no_test)})
    assert main(["plan", str(spec), "--no-probe"]) == 1  # a data error (a wrong spec exits 2)
    err = capsys.readouterr().err
    assert f"{no_test}/manifest.parquet: split 'test' has no utterances" in err
    assert (no_test / "manifest.parquet").read_bytes() == before

def test_spaces_lists_parameters_with_ranges(capsys):
    assert main(["spaces"]) == 0
    out = capsys.readouterr().out
    lines = {ln.split()[0]: " ".join(ln.split()[1:]) for ln in out.splitlines() if ln.startswith("  ")}
    assert lines["lr"] == "float [0.002, 0.006] (log)"  # optimisation_tiny is listed last of the two
    assert "optimisation: AdamW" in out and "float [1e-05, 0.003] (log)" in out
    assert lines["shared_layers"].endswith("when use_shared=True")
    assert lines["gated_hidden"] == "one of 16, 64, 128 when fusion='gated'"
    assert main(["spaces", "nope"]) == 2


def _fake_study(tmp_path, cfg_for) -> Path:
    """A study directory with search/rerun dev rows and final test rows (test favours trial B)."""
    study = tmp_path / "study"
    study.mkdir()
    (study / "study.json").write_text(json.dumps({
        "name": "s", "objectives": [{"metric": "macro_f1", "condition": "av", "mode": "max",
                                     "key": "av_macro_f1"}]}))
    rows = []
    for tid, stage, parent, seed, split, f1 in [
            ("search-a", "search", None, 0, "dev", 0.50), ("search-b", "search", None, 0, "dev", 0.60),
            ("rerun-1", "rerun", "search-a", 0, "dev", 0.70), ("rerun-2", "rerun", "search-a", 1, "dev", 0.50),
            ("rerun-3", "rerun", "search-b", 0, "dev", 0.65), ("rerun-4", "rerun", "search-b", 1, "dev", 0.62),
            ("final-3", "final", "search-b", 0, "test", 0.99)]:
        cfg = cfg_for(tid, seed)
        rows.append({"trial_id": tid, "stage": stage, "parent_trial_id": parent, "seed": seed,
                     "split": split, "condition": "av", "status": "completed", "macro_f1": f1,
                     "config": json.dumps(cfg.to_flat(), sort_keys=True, default=list)})
    pd.DataFrame(rows).to_parquet(study / "results.parquet", index=False)
    return study


def test_export_best_round_trips_into_the_same_config(data, tmp_path, capsys):
    from study.training.config import config_from_flat

    lrs = {"search-a": 1e-3, "search-b": 2e-3, "rerun-1": 1e-3, "rerun-2": 1e-3, "rerun-3": 2e-3,
           "rerun-4": 2e-3, "final-3": 2e-3}
    made = {}

    def cfg_for(tid, seed):
        made[tid] = config_from_flat({"lr": lrs[tid], "seed": seed, "max_epochs": 3}, preset="tiny",
                                     data_dir=data)
        return made[tid]

    study = _fake_study(tmp_path, cfg_for)
    out = tmp_path / "best.yaml"
    # rerun: mean dev over seeds: a = 0.60, b = 0.635 -> b, first seed (rerun-3); test never read
    assert main(["export-best", str(study), "--out", str(out)]) == 0
    assert "rerun trial rerun-3 (dev av_macro_f1 mean over 2 seeds 0.6350" in capsys.readouterr().out
    cfg = config_from_flat(load_flat_config(out, []), data_dir=data)
    assert cfg == made["rerun-3"]
    assert main(["export-best", str(study), "--stage", "search", "--out", str(out)]) == 0
    assert config_from_flat(load_flat_config(out, []), data_dir=data) == made["search-b"]
    assert main(["export-best", str(tmp_path / "nope"), "--out", str(out)]) == 1


def test_results_are_never_rewritten_with_fewer_rows(tmp_path):
    from study.runs import results as R

    R.write_part(tmp_path, "search-x", [{"trial_id": "t1", "stage": "search", "split": "dev",
                                         "condition": "av", "macro_f1": 0.5}], [])
    R.write_part(tmp_path, "rerun", [{"trial_id": "t2", "stage": "rerun", "split": "dev",
                                      "condition": "av", "macro_f1": 0.6}], [])
    assert len(R.write_results(tmp_path)[0]) == 2
    (tmp_path / "parts" / "rerun.results.parquet").unlink()
    with pytest.raises(R.PartsMissing, match=r"has 2 rows but .*parts holds only 1"):
        R.write_results(tmp_path)
    assert len(pd.read_parquet(tmp_path / "results.parquet")) == 2


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _progress(study, name, label, statuses, scores):
    d = study / "progress"
    d.mkdir(parents=True, exist_ok=True)
    trials = {f"t{i}": {"status": s, "score": sc} for i, (s, sc) in enumerate(zip(statuses, scores))}
    (d / f"{name}.json").write_text(json.dumps({**label, "score_key": "av_macro_f1", "mode": "max",
                                                "trials": trials}))


def test_live_view_plain_lines(tmp_path):
    import io

    spec = spec_from_dict(TINY)
    clock, stream = Clock(), io.StringIO()
    view = LiveView(spec, tmp_path, stream=stream, tty=False, clock=clock)
    view.draw()
    assert stream.getvalue().splitlines() == ["[    0s] 0/8 trials finished, 0 running, elapsed 0s"]
    view.draw()  # nothing changed: no new line
    assert len(stream.getvalue().splitlines()) == 1
    _progress(tmp_path, "search-late-r0", {"stage": "search", "cell": "fusion=late|r=0"},
              ["running", "running"], [None, None])
    clock.t = 10
    view.draw()
    _progress(tmp_path, "search-late-r0", {"stage": "search", "cell": "fusion=late|r=0"},
              ["done", "early_stopped"], [0.4, 0.3])
    clock.t = 40
    view.draw()
    lines = stream.getvalue().splitlines()
    assert lines[1] == "[   10s] 0/8 trials finished, 2 running, elapsed 10s; now: search fusion=late|r=0 0/2"
    assert lines[2] == ("[   40s] 2/8 trials finished, 0 running, elapsed 40s, ETA ~2m00s; "
                        "now: search fusion=late|r=0 2/2; best dev av_macro_f1 0.4000")
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "search-late-r0.done").write_text("{}")
    clock.t = 50
    view.draw(final=True)
    table = stream.getvalue().splitlines()[3:]
    assert table[0] == "study tinycli  (2/8 trials finished, 0 running, elapsed 50s, ETA ~2m30s)"
    assert table[1].split() == ["stage", "cell", "done", "running", "stopped", "failed", "best", "elapsed", "eta"]
    assert table[2].split() == ["search", "fusion=late|r=0", "1/2", "0", "1", "0", "0.4000", "40s", "done"]
    assert table[3].split() == ["search", "fusion=gated|r=0", "0/2", "0", "0", "0", "-", "-", "-"]
    assert table[4].split() == ["rerun", "top-k", "x", "seeds", "0/4", "0", "0", "0", "-", "-", "-"]


def test_live_view_redraws_in_place_on_a_terminal(tmp_path):
    import io

    stream = io.StringIO()
    view = LiveView(spec_from_dict(TINY), tmp_path, stream=stream, tty=True, clock=Clock())
    view.draw()
    view.draw()
    text = stream.getvalue()
    assert text.count("\x1b[6F") == 1  # the second table moves the cursor up over the first
    assert text.count("study tinycli") == 2


def test_demo_on_a_half_started_directory_names_the_right_command(tmp_path):
    from study.runs.demo import is_started, run_demo

    out = tmp_path / "demo"
    out.mkdir()
    assert not is_started(out)
    (out / "spec.yaml").write_text(yaml.safe_dump({**TINY, "name": "other"}))  # started, then killed
    assert is_started(out)
    with pytest.raises(SpecError, match=r"avstudy demo --out NEW_DIR"):
        run_demo(out, _spec_file(tmp_path), live=False)


@pytest.mark.slow
def test_sweep_console_logs_tracking_and_export(ray_session, tmp_path, capfd, monkeypatch):
    """A real sweep through `avstudy sweep`: the live view in plain-lines mode, Ray's own output
    in STUDY_DIR/logs/ray.log, one MLflow run per trial in a local file store, export-best."""
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("AVSTUDY_CACHE", str(tmp_path / "cache"))
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"  # a local store (MLflow 3 retired ./mlruns)
    spec = _spec_file(tmp_path, cells={"fusion": ["late"], "train_missing_rate": [0.0]}, seeds=[0],
                      tracking={"mlflow": {"tracking_uri": store, "experiment_name": "cli"}},
                      resources={"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": "auto"})
    study = tmp_path / "study"
    assert main(["sweep", str(spec), "--out", str(study), "--refresh", "1"]) == 0
    out = capfd.readouterr()
    # gpus_per_worker: auto on a cluster without GPUs: 0, the trials run inline on CPU, said why
    meta = json.loads((study / "study.json").read_text())
    assert meta["gpus_per_worker_auto"] == {"gpus_per_worker": 0.0, "memory": None,
                                            "why": "no GPU in the cluster: trials run on CPU"}
    assert meta["spec"]["resources"]["gpus_per_worker"] == 0.0
    assert (pd.read_parquet(study / "results.parquet").gpus == 0).all()
    lines = out.out.splitlines()
    assert "Configuration for experiment" not in out.out + out.err  # Tune's boxes are in the log
    assert "Started a local Ray instance" not in out.err
    assert lines[-5].startswith("results:") and lines[-1].startswith("ray log:")
    assert any(ln.startswith("[") and "trials finished" in ln for ln in lines)
    assert "search  fusion=late|r=0  2/2" in out.out.replace(" " * 3, "  ") or "2/2" in out.out
    assert len(lines) < 40, out.out  # fits on one screen
    assert (study / "logs" / "ray.log").stat().st_size > 0
    client = mlflow.tracking.MlflowClient(tracking_uri=store)
    exp = client.get_experiment_by_name("cli")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 3  # 2 search trials + 1 rerun trial
    assert all("av_macro_f1" in r.data.metrics for r in runs)
    assert {r.data.tags.get("avstudy_experiment") for r in runs} == {"search-late-r0", "rerun"}
    assert main(["export-best", str(study), "--out", str(tmp_path / "best.yaml")]) == 0
    best = load_flat_config(tmp_path / "best.yaml", [])
    res = pd.read_parquet(study / "results.parquet")
    assert best == json.loads(res[res.stage == "rerun"].config.iloc[0])


def test_plan_format_json_has_the_documented_fields(data, tmp_path, capsys):
    spec = _spec_file(tmp_path, dataset={"path": str(data)})
    argv = ["plan", str(spec), "--no-probe", "--cluster-cpus", "3", "--cluster-gpus", "0", "--format", "json"]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["study"] == "tinycli" and doc["cells"] == 2 and doc["fusion"] == ["late", "gated"]
    assert doc["cluster"] == {"CPU": 3.0, "GPU": 0.0, "source": "--cluster-cpus/--cluster-gpus"}
    assert doc["max_concurrent"] == 3 and doc["trial_resources"]["CPU"] == 1
    assert [(s["name"], s["trials"]) for s in doc["stages"]] == [("search", 4), ("rerun", 4), ("final", 4)]
    # 4 search trials x 1 epoch + 4 reruns x 1 epoch; 5 s per epoch for the tiny preset
    assert doc["trial_epochs"] == 8 and doc["epoch_s_source"] == "rough" and doc["epoch_s"] == 5
    assert doc["trial_hours"] == pytest.approx(8 * 5 / 3600)


def test_status_format_json(tmp_path, capsys):
    (tmp_path / "study.json").write_text(json.dumps({"name": "s", "status": "running", "started_at": "t0",
                                                     "overrides": {"lr": 0.001}}))
    _progress(tmp_path, "search-late-r0", {"stage": "search", "cell": "fusion=late|r=0"},
              ["done", "early_stopped", "running", "failed"], [0.4, 0.3, None, None])
    assert main(["status", str(tmp_path), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["study"], doc["status"], doc["overrides"]) == ("s", "running", {"lr": 0.001})
    (row,) = doc["experiments"]
    assert (row["stage"], row["cell"], row["done"], row["early_stopped"], row["running"], row["failed"]) == \
        ("search", "fusion=late|r=0", 1, 1, 1, 1)
    assert row["best"] == 0.4 and row["finished"] is False


@pytest.mark.parametrize("item, named", [("bogus_key=1", "bogus_key"), ("lr=fast", "lr"),
                                         ("budget.max_epochs=-3", "max_epochs"), ("budget.nope=1", "nope"),
                                         ("noequals", "noequals")])
def test_sweep_set_rejects_a_bad_key_or_value_naming_it(data, tmp_path, capsys, item, named):
    spec = _spec_file(tmp_path, dataset={"path": str(data)})
    assert main(["sweep", str(spec), "--out", str(tmp_path / "s"), "--set", item]) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err
    assert not (tmp_path / "s").exists()  # nothing started


def test_sweep_set_applies_to_the_spec_and_is_recorded(data, tmp_path):
    from study.runs.results import write_study_json
    from study.runs.spec import load_spec

    spec = load_spec(_spec_file(tmp_path, dataset={"path": str(data)}),
                     overrides={"budget.max_epochs": 2, "lr": 0.001, "top_k": 2})
    assert spec.budget.max_epochs == 2 and spec.fixed["lr"] == 0.001 and spec.top_k == 2
    (tmp_path / "overrides.json").write_text(json.dumps({"budget.max_epochs": 2, "lr": 0.001, "top_k": 2}))
    doc = write_study_json(tmp_path, spec, "running")
    assert doc["overrides"] == {"budget.max_epochs": 2, "lr": 0.001, "top_k": 2}
    assert json.loads((tmp_path / "study.json").read_text())["spec"]["budget"]["max_epochs"] == 2


def test_dashboard_command_opens_the_studys_optuna_storage(tmp_path, capsys):
    assert main(["dashboard", str(tmp_path), "--print"]) == 1  # no optuna.db yet
    assert "optuna.db: no Optuna storage here" in capsys.readouterr().err
    (tmp_path / "optuna.db").write_bytes(b"")
    assert main(["dashboard", str(tmp_path), "--print", "--port", "8123"]) == 0
    assert capsys.readouterr().out.strip() == \
        f"optuna-dashboard --port 8123 sqlite:///{(tmp_path / 'optuna.db').resolve()}"
    (tmp_path / "study.json").write_text(json.dumps({"spec": {"optuna_storage": "journal:/x/j.log"}}))
    assert main(["dashboard", str(tmp_path), "--print"]) == 0
    assert capsys.readouterr().out.strip() == "optuna-dashboard --port 8080 /x/j.log"


def test_status_counts_a_pack_trial_as_its_members_and_their_folds(tmp_path):
    """A packed rerun trial (resources.pack) trains several seeds x folds: status counts them."""
    from study.runs.status import progress_rows

    d = tmp_path / "progress"
    d.mkdir()
    trials = {"p0": {"status": "done", "score": 0.5, "members": 4, "folds": [0, 1]},
              "p1": {"status": "running", "score": None, "members": 2, "folds": [2]},
              "t2": {"status": "done", "score": 0.4, "fold": 2}}  # a trial alone, as before packs
    (d / "rerun.json").write_text(json.dumps({"stage": "rerun", "score_key": "av_macro_f1",
                                              "mode": "max", "trials": trials}))
    (row,) = progress_rows(tmp_path)
    assert (row["done"], row["running"], row["folds"], row["best"]) == (5, 2, 3, 0.5)
