"""study/runs/results.py on hand-made trial records: the tidy rows of results.parquet and
curves.parquet, the parts they are merged from, and study.json; every expectation written out
by hand (no Ray, no training)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pandas as pd
import pytest

from study.runs import results as R
from study.runs.spec import spec_from_dict

BASE = {"name": "res", "dataset": {"synth": {"scale": "tiny"}}, "model_preset": "tiny",
        "spaces": ["optimisation_tiny"], "resources": {"workers": 2, "cpus_per_worker": 1.5,
                                                       "gpus_per_worker": 0.25}}
ROWS = [{"condition": "av", "macro_f1": 0.6, "confusion": [[1, 0], [0, 1]], "flag": None},
        {"condition": "miss_0.5", "macro_f1": 0.4, "test_missing_rate": 0.5, "confusion": None,
         "flag": None}]


@pytest.fixture
def spec(tmp_path, monkeypatch):
    monkeypatch.setenv("AVSTUDY_CACHE", str(tmp_path / "cache"))  # no dataset.json there
    return spec_from_dict(BASE)


def _record(last: dict | None = None, error: str | None = None, curves=None, **config) -> R.TrialRecord:
    flat = {"fusion": "vavl", "train_missing_rate": 0.25, "seed": 3, "lr": 0.002, **config}
    last = {"epoch": 4, "best_epoch": 3, "time_total_s": 12.5, "timestamp": 1_000_000.0,
            "finished": True, "best_rows": json.dumps(ROWS), **(last or {})}
    return R.TrialRecord(tune_id="t1", config=flat, last=last, error=error, curves=curves)


def _rows(rec, spec, **kw):
    args = {"stage": "search", "trial_id": "cellA_00001", "parent_trial_id": None, "searched": ["lr"]}
    return R.trial_rows(rec, spec=spec, **{**args, **kw})


# ----------------------------------------------------------------------------- names, status


def test_cell_names():
    assert R.cell_name("vavl", 0.5) == "fusion=vavl|r=0.5"
    assert R.cell_name("late", 0.0) == "fusion=late|r=0"
    assert R.cell_slug("foalnet", 0.25) == "foalnet-r0.25"


def test_trial_status_failed_completed_early_stopped():
    assert R.trial_status(_record(error="boom")) == "failed"
    assert R.trial_status(_record()) == "completed"
    assert R.trial_status(_record({"finished": False})) == "early_stopped"
    assert R.trial_status(R.TrialRecord("t", {}, {}, None, None)) == "early_stopped"


def test_record_from_tune_keeps_the_last_lines_of_an_error():
    trial = SimpleNamespace(trial_id="abc", config={"fusion": "late"}, status="ERROR")
    err = "\n".join(f"line {i}" for i in range(10)) + "\n\n"
    result = SimpleNamespace(error=err, metrics={"epoch": 2}, metrics_dataframe=pd.DataFrame())
    rec = R.record_from_tune(trial, result)
    assert rec.tune_id == "abc" and rec.config == {"fusion": "late"} and rec.last == {"epoch": 2}
    assert rec.error == "\n".join(f"line {i}" for i in range(4, 10))  # the last 6 non-empty lines
    assert rec.curves is None  # an empty frame is no curve
    ok = R.record_from_tune(SimpleNamespace(trial_id="x", config={}, status="TERMINATED"),
                            SimpleNamespace(error=None, metrics=None, metrics_dataframe=None))
    assert ok.error is None and ok.last == {}
    failed_quietly = R.record_from_tune(SimpleNamespace(trial_id="y", config={}, status="ERROR"),
                                        SimpleNamespace(error=None, metrics={}, metrics_dataframe=None))
    assert failed_quietly.error == "trial failed"
    long = R._short_error("x" * 5000)
    assert len(long) == 2000


# ----------------------------------------------------------------------------- trial rows


def test_trial_rows_one_per_condition_with_the_trial_fields(spec):
    curves = pd.DataFrame({"epoch": [1, 2, 2], "unpaired_share": [0.2, 0.9, 0.4]})
    rows = _rows(_record(curves=curves), spec, parent_trial_id="p0", split="test", rows_key="best_rows")
    assert len(rows) == 2
    av, miss = rows
    assert {k: av[k] for k in ("study", "trial_id", "stage", "parent_trial_id", "cell", "fusion",
                               "train_missing_rate", "seed", "status", "error", "fold", "split",
                               "condition", "epochs", "best_epoch", "wall_time_s", "workers")} == {
        "study": "res", "trial_id": "cellA_00001", "stage": "search", "parent_trial_id": "p0",
        "cell": "fusion=vavl|r=0.25", "fusion": "vavl", "train_missing_rate": 0.25, "seed": 3,
        "status": "completed", "error": None, "fold": 0, "split": "test", "condition": "av",
        "epochs": 4, "best_epoch": 3, "wall_time_s": 12.5, "workers": 2}
    assert (av["cpus"], av["gpus"]) == (3.0, 0.5)  # 2 workers x 1.5 CPUs, x 0.25 GPU
    assert av["param__lr"] == 0.002 and "param__seed" not in av  # only the searched keys
    assert av["started_at"] == "1970-01-12T13:46:27.500000+00:00"  # 1e6 - 12.5 s, UTC
    assert av["finished_at"] == "1970-01-12T13:46:40+00:00"
    assert av["confusion"] == "[[1, 0], [0, 1]]" and miss["confusion"] is None
    assert av["test_missing_rate"] is None and miss["test_missing_rate"] == 0.5
    assert av["unpaired_share"] == pytest.approx((0.2 + 0.4) / 2)  # epoch 2 counted once, its last report
    assert av["selected_on_test"] is False and av["normalize"] is True
    assert json.loads(av["config"]) == {"fusion": "vavl", "train_missing_rate": 0.25, "seed": 3, "lr": 0.002}
    assert json.loads(av["protocol"]) == {"train_missing_rate": 0.25, "audio_only_share": None,
                                          "modality_dropout": None, "seed": 3}
    assert av["degenerate"] is False


def test_trial_rows_take_the_recorded_config_recipe_and_protocol(spec):
    last = {"config_json": '{"a": 1}', "recipe_json": '{"r": 2}', "protocol_json": '{"p": 3}',
            "normalize": False, "unpaired_share": 0.3}
    row = _rows(_record(last), spec)[0]
    assert (row["config"], row["recipe"], row["protocol"]) == ('{"a": 1}', '{"r": 2}', '{"p": 3}')
    assert row["normalize"] is False and row["unpaired_share"] == 0.3  # no curves: the last report


def test_a_failed_or_silent_trial_is_one_row_without_a_condition(spec):
    # "[]": a trial whose selection score was never finite has no best epoch's rows; it was
    # dropped from results.parquet without a trace before
    for rec in (_record(error="CUDA out of memory"), _record({"best_rows": None}), _record({"best_rows": "[]"})):
        rows = _rows(rec, spec)
        assert len(rows) == 1
        assert (rows[0]["split"], rows[0]["condition"], rows[0]["degenerate"]) == (None, None, None)
    assert _rows(_record(error="CUDA out of memory"), spec)[0]["status"] == "failed"


def test_trial_rows_of_a_job_envelope_carry_its_fold(spec):
    rec = R.TrialRecord("t", {"job": {"flat": {"fusion": "late", "train_missing_rate": 0.5},
                                      "meta": {"fold": 2}}}, {"best_rows": json.dumps(ROWS[:1])}, None, None)
    row = _rows(rec, spec, searched=[])[0]
    assert row["fold"] == 2 and row["seed"] == 0 and row["cell"] == "fusion=late|r=0.5"
    assert row["epochs"] is None and row["started_at"] is None and row["wall_time_s"] is None


def test_degenerate_rows_are_marked(spec):
    rows = [{"condition": "av", "macro_f1": 0.1, "flag": "one_class", "confusion": None}]
    assert _rows(_record({"best_rows": json.dumps(rows)}), spec)[0]["degenerate"] is True


def test_param_values_as_stored():
    assert R._param_value(True) == "True" and R._param_value("vavl") == "vavl"
    assert R._param_value(3) == 3.0 and isinstance(R._param_value(3), float)


# ----------------------------------------------------------------------------- curves


def test_curve_rows_keep_the_last_report_of_each_epoch():
    c = pd.DataFrame({"epoch": [1, 2, 2, 3], "time_total_s": [1.0, 2.0, 2.5, 3.0],
                      "train_loss": [0.9, 0.8, 0.7, 0.6], "dev_av_macro_f1": [0.1, 0.2, 0.3, 0.4],
                      "other": [0, 0, 0, 0]})
    out = R.curve_rows(_record(curves=c), study="s", stage="rerun", trial_id="T")
    assert list(out.columns) == ["study", "trial_id", "stage", "time_s", "epoch", "train_loss",
                                 "dev_av_macro_f1"]
    assert out["epoch"].tolist() == [1, 2, 3] and out["train_loss"].tolist() == [0.9, 0.7, 0.6]
    assert out["time_s"].tolist() == [1.0, 2.5, 3.0] and set(out["stage"]) == {"rerun"}
    assert R.curve_rows(_record(), study="s", stage="search", trial_id="T").empty
    no_time = R.curve_rows(_record(curves=c.drop(columns="time_total_s")), study="s", stage="x", trial_id="T")
    assert no_time["time_s"].isna().all()


# ----------------------------------------------------------------------------- parts -> results


def _part_rows(trial: str, value: float, **kw) -> list[dict]:
    return [{"trial_id": trial, "stage": "search", "split": "dev", "condition": "av",
             "macro_f1": value, "extra": 1, **kw}]


def test_parts_merge_into_results_with_the_key_columns_first(tmp_path):
    R.write_part(tmp_path, "a", _part_rows("T1", 0.5, fold=None) + _part_rows("T2", 0.6, fold=1),
                 [pd.DataFrame({"trial_id": ["T1"], "epoch": [1]}), pd.DataFrame()])
    R.write_part(tmp_path, "b", _part_rows("T1", 0.7, fold=0.0, kind="baseline"), [])
    res, cur = R.write_results(tmp_path)
    assert list(res.columns[:5]) == ["trial_id", "stage", "fold", "split", "condition"]
    # T1 fold 0 appears in both parts: the later part ("b") wins; a missing fold is fold 0
    assert sorted(zip(res["trial_id"], res["fold"], res["macro_f1"])) == [("T1", 0, 0.7), ("T2", 1, 0.6)]
    assert res["fold"].dtype.kind == "i"
    assert dict(zip(res["trial_id"], res["kind"])) == {"T1": "baseline", "T2": "model"}
    assert cur.to_dict("records") == [{"trial_id": "T1", "epoch": 1}]
    on_disk = pd.read_parquet(tmp_path / "results.parquet")
    pd.testing.assert_frame_equal(on_disk, res.reset_index(drop=True), check_dtype=False)
    assert sorted(p.name for p in (tmp_path / "parts").iterdir()) == [
        "a.curves.parquet", "a.results.parquet", "b.curves.parquet", "b.results.parquet"]


def test_results_without_kind_are_models_and_without_fold_keep_none(tmp_path):
    R.write_part(tmp_path, "a", _part_rows("T1", 0.5) + _part_rows("T1", 0.5, condition="audio_only"), [])
    res, cur = R.write_results(tmp_path)
    assert "fold" not in res.columns and res["kind"].tolist() == ["model", "model"]
    assert cur.empty


def test_no_parts_write_empty_files(tmp_path):
    res, cur = R.write_results(tmp_path)
    assert res.empty and cur.empty
    assert pd.read_parquet(tmp_path / "results.parquet").empty


def test_results_are_never_replaced_by_fewer_rows(tmp_path):
    R.write_part(tmp_path, "a", _part_rows("T1", 0.5) + _part_rows("T2", 0.6), [])
    R.write_results(tmp_path)
    before = (tmp_path / "results.parquet").read_bytes()
    (tmp_path / "parts" / "a.results.parquet").unlink()
    R.write_part(tmp_path, "b", _part_rows("T3", 0.1), [])
    with pytest.raises(R.PartsMissing, match="results.parquet has 2 rows"):
        R.write_results(tmp_path)
    assert (tmp_path / "results.parquet").read_bytes() == before  # kept unchanged
    (tmp_path / "curves.parquet").write_bytes(b"not parquet")  # unreadable old file: rebuilt
    R.write_part(tmp_path, "c", _part_rows("T4", 0.1) + _part_rows("T5", 0.1), [])
    res, _ = R.write_results(tmp_path)
    assert sorted(res["trial_id"]) == ["T3", "T4", "T5"]


# ----------------------------------------------------------------------------- study.json


def test_study_json_fields(spec, tmp_path):
    study = tmp_path / "study"
    study.mkdir()
    (study / "overrides.json").write_text('{"lr": 0.001}')
    doc = R.write_study_json(study, spec, "running", started_at="2026-01-01T00:00:00+00:00")
    assert doc == json.loads((study / "study.json").read_text())
    assert (doc["name"], doc["status"], doc["finished_at"], doc["task"]) == ("res", "running", None, "categorical")
    assert doc["started_at"] == "2026-01-01T00:00:00+00:00"
    assert doc["work_dir"] == str(study.resolve()) and doc["overrides"] == {"lr": 0.001}
    assert doc["objectives"] == [{"metric": "macro_f1", "condition": "av", "mode": "max",
                                  "key": "av_macro_f1"}]
    assert doc["primary_metric"] == "macro_f1" and doc["folds"] is None
    assert doc["selection"]["selected_on_test"] is False and doc["selection"]["split"] == "dev"
    assert "classes" not in doc  # no dataset.json at the corpus's place yet
    assert doc["spec"]["name"] == "res" and set(doc["searched"]) == {"lr", "weight_decay", "batch_size"}
    later = R.write_study_json(study, spec, "finished")
    assert later["started_at"] == "2026-01-01T00:00:00+00:00"  # kept from the first write
    assert later["status"] == "finished" and later["finished_at"] is not None
    (study / "overrides.json").unlink()
    assert R.write_study_json(study, spec, "interrupted")["overrides"] == {}


def test_study_json_names_the_dataset_labels(spec, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset.json").write_text('{"classes": ["ang", "hap"], "dimensions": ["arousal"]}')
    own = spec_from_dict({**BASE, "dataset": {"path": str(data)}})
    doc = R.write_study_json(tmp_path, own, "running")
    assert (doc["classes"], doc["dimensions"]) == (["ang", "hap"], ["arousal"])
    (data / "dataset.json").write_text('{"classes": ["neu"]}')
    assert R._dataset_labels(own) == {"classes": ["neu"], "dimensions": []}


def test_folds_note_made_and_listed(tmp_path, monkeypatch):
    monkeypatch.setenv("AVSTUDY_CACHE", str(tmp_path))
    made = spec_from_dict({**BASE, "dataset": {"synth": {"scale": "tiny"},
                                               "folds": {"by": "speaker", "k": 3, "seed": 7}},
                           "search_folds": "mean"})
    note = R.folds_note(made)
    assert {k: note[k] for k in ("k", "by", "seed", "dev", "entries", "search", "selected_on_test")} == {
        "k": 3, "by": "speaker", "seed": 7, "dev": "next", "entries": [], "search": "mean",
        "selected_on_test": False}
    assert "the mean dev score over the 3 folds" in note["text"]
    assert R.folds_note(spec_from_dict(BASE)) is None
    first = spec_from_dict({**BASE, "dataset": {"synth": {"scale": "tiny"}, "folds": {"by": "speaker", "k": 2}}})
    assert R.folds_note(first)["search"] == "first" and "the first fold's dev" in R.folds_note(first)["text"]


# ----------------------------------------------------------------------------- mutation survivors


def test_record_from_tune_keeps_reported_curves():
    curves = pd.DataFrame({"epoch": [1, 2], "train_loss": [0.9, 0.8]})
    rec = R.record_from_tune(SimpleNamespace(trial_id="a", config={}, status="TERMINATED"),
                             SimpleNamespace(error=None, metrics={}, metrics_dataframe=curves))
    assert rec.curves is curves


def test_timestamps_without_a_duration_start_at_the_end():
    assert R._timestamps({"timestamp": 60.0}) == ("1970-01-01T00:01:00+00:00",) * 2
    assert R._timestamps({}) == (None, None)


def test_trial_rows_defaults_and_exact_fields(spec):
    rec = _record(normalize=False)  # not reported: the trial config's own switch
    rec.last.pop("normalize", None)
    row = R.trial_rows(rec, spec=spec, stage="search", trial_id="T", parent_trial_id=None, searched=[])[0]
    assert row["split"] == "dev" and row["normalize"] is False
    # the configuration as a canonical string (sorted keys): equal configurations compare equal
    assert row["config"] == ('{"fusion": "vavl", "lr": 0.002, "normalize": false, "seed": 3, '
                             '"train_missing_rate": 0.25}')
    failed = _rows(_record(error="x"), spec)[0]
    assert "test_missing_rate" in failed and failed["test_missing_rate"] is None
    curves = pd.DataFrame({"unpaired_share": [0.2, 0.4]})  # no epoch column: every report counts
    assert _rows(_record(curves=curves), spec)[0]["unpaired_share"] == pytest.approx(0.3)


def test_rows_of_a_study_that_selects_on_test(tmp_path, monkeypatch):
    monkeypatch.setenv("AVSTUDY_CACHE", str(tmp_path))
    on_test = spec_from_dict({**BASE, "dataset": {"synth": {"scale": "tiny"},
                                                  "folds": {"by": "speaker", "k": 3, "dev": "test"}}})
    assert _rows(_record(), on_test)[0]["selected_on_test"] is True


def test_curve_rows_name_their_trial_and_keep_the_realised_share():
    c = pd.DataFrame({"epoch": [1], "unpaired_share": [0.25], "time_total_s": [1.0]})
    out = R.curve_rows(_record(curves=c), study="S", stage="search", trial_id="T9")
    assert out.to_dict("records") == [{"study": "S", "trial_id": "T9", "stage": "search", "time_s": 1.0,
                                       "epoch": 1, "unpaired_share": 0.25}]


def test_parts_under_a_study_dir_that_does_not_exist_yet(tmp_path):
    study = tmp_path / "new" / "study"
    R.write_part(study, "a", _part_rows("T1", 0.5), [pd.DataFrame({"epoch": [1]}), pd.DataFrame({"epoch": [2]})])
    merged = R.read_parts(study, "curves")
    assert merged["epoch"].tolist() == [1, 2] and merged.index.tolist() == [0, 1]
    R.write_part(study, "b", _part_rows("T2", 0.5), [])
    assert R.read_parts(study, "results").index.tolist() == [0, 1]  # one index over the parts


def test_curves_are_guarded_and_written_too(tmp_path):
    R.write_part(tmp_path, "a", _part_rows("T1", 0.5), [pd.DataFrame({"epoch": [1, 2, 3]})])
    R.write_results(tmp_path)
    assert pd.read_parquet(tmp_path / "curves.parquet")["epoch"].tolist() == [1, 2, 3]
    R.write_results(tmp_path)  # as many rows as before: rewritten, not refused
    R.write_part(tmp_path, "a", _part_rows("T1", 0.5), [pd.DataFrame({"epoch": [1]})])
    with pytest.raises(R.PartsMissing, match="curves.parquet has 3 rows"):
        R.write_results(tmp_path)
    (tmp_path / "results.parquet").unlink()  # no results file: curves are still checked
    with pytest.raises(R.PartsMissing, match="curves.parquet"):
        R.write_results(tmp_path)
    (tmp_path / "results.parquet").write_bytes(b"garbage")  # unreadable results: curves still checked
    with pytest.raises(R.PartsMissing, match="curves.parquet"):
        R.write_results(tmp_path)


def test_dataset_labels_default_to_empty_lists(tmp_path):
    (tmp_path / "dataset.json").write_text('{"dimensions": ["valence"]}')
    own = spec_from_dict({**BASE, "dataset": {"path": str(tmp_path)}})
    assert R._dataset_labels(own) == {"classes": [], "dimensions": ["valence"]}


def test_folds_note_texts_and_listed_folds(tmp_path, monkeypatch):
    from study.data.folds import FoldsSpec

    monkeypatch.setenv("AVSTUDY_CACHE", str(tmp_path))
    first = spec_from_dict({**BASE, "dataset": {"synth": {"scale": "tiny"}, "folds": {"by": "speaker", "k": 2}}})
    assert R.folds_note(first)["text"] == (f"{first.dataset.folds.describe()}; search on the first fold's dev; "
                                           "rerun and final: each selected configuration x seed x fold")
    listed = SimpleNamespace(dataset=SimpleNamespace(folds=FoldsSpec(entries=("a.csv", "b.csv"))),
                             search_folds="mean")
    note = R.folds_note(listed)
    assert (note["k"], note["by"], note["seed"], note["dev"], note["entries"]) == (2, None, None, "listed",
                                                                                   ["a.csv", "b.csv"])


def test_study_json_times_are_utc_and_it_names_the_versions(spec, tmp_path):
    doc = R.write_study_json(tmp_path, spec, "finished")
    assert doc["started_at"].endswith("+00:00") and doc["finished_at"].endswith("+00:00")
    assert doc["versions"]["python"] and "pandas" in doc["versions"]
    assert "git_sha" in doc
