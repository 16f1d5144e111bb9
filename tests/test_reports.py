"""Unit tests of the report package: data functions on small hand-made tables with exact values,
escaping, missing files, the index and the CLI. (Browser rendering: test_reports_browser.py.)"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_results import FakeStudy, make_tables, write_study  # noqa: E402

from reports import cli, gather, html, stats, tables  # noqa: E402
from reports.build import render_report, write_index, write_report  # noqa: E402
from reports.fsio import find_studies, locate  # noqa: E402
from reports.importance import build_study, importance_data, infer_distribution  # noqa: E402
from reports.load import Context, load_study, make_context  # noqa: E402

CTX = Context(name="t", status="finished", task="categorical", metric="macro_f1", condition="av",
              maximize=True, classes=("a", "b"))


def row(trial_id, condition="av", value=0.5, **kw) -> dict:
    base = {"study": "t", "trial_id": trial_id, "stage": "search", "parent_trial_id": None,
            "fusion": "vavl", "train_missing_rate": 0.0, "seed": 0, "status": "completed", "error": None,
            "split": "dev", "condition": condition, "test_missing_rate": None, "macro_f1": value,
            "epochs": 10, "wall_time_s": 100.0, "cpus": 2.0, "gpus": 0.5, "started_at": "2024-01-01T00:00:00"}
    return {**base, **kw}


def frame(rows) -> pd.DataFrame:
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- tables

def test_compute_summary_exact():
    res = frame([row("A"), row("A", "audio_only"),
                 row("B", status="early_stopped", epochs=4, wall_time_s=20.0, gpus=0.0),
                 row("C", status="failed", epochs=0, wall_time_s=3.0, cpus=1.0, gpus=0.0, split=None,
                     condition=None, macro_f1=None, error="boom")])
    meta = {"started_at": "2024-01-01T00:00:00", "finished_at": "2024-01-01T02:30:00"}
    s = tables.compute_summary(res, meta)
    assert s["n_trials"] == 3
    assert s["cpu_hours"] == pytest.approx((200 + 40 + 3) / 3600)
    assert s["gpu_hours"] == pytest.approx(50 / 3600)
    assert s["trial_hours"] == pytest.approx(123 / 3600)
    assert s["early_stop_saved_hours"] == pytest.approx((10 - 4) * (20 / 4) / 3600)  # 30 s
    assert s["elapsed_hours"] == pytest.approx(2.5)
    assert s["counts"].loc["search"].to_dict() == {"completed": 1, "early_stopped": 1, "failed": 1}


def test_early_stopping_saving_per_stage():
    tr = pd.DataFrame({"stage": ["search", "search", "rerun", "rerun"], "status": ["completed", "early_stopped"] * 2,
                       "epochs": [12, 3, 20, 5], "wall_time_s": [120.0, 30.0, 200.0, 50.0]})
    assert tables.early_stopping_saving_s(tr) == pytest.approx(9 * 10 + 15 * 10)


def test_condition_order():
    got = tables.condition_order(["robustness", "miss_0.5", "video_only", "av", "miss_0.1", "audio_only", "x"])
    assert got == ["av", "audio_only", "video_only", "miss_0.1", "miss_0.5", "robustness", "x"]


def test_leaderboard_ranks_and_truncates():
    res = frame([row(f"T{i}", value=v, param__lr=10.0 ** -i) for i, v in enumerate([0.3, 0.9, 0.6])]
                + [row("T1", "audio_only", 0.1), row("F", status="failed", condition=None, split=None, macro_f1=None)])
    tab, total = tables.leaderboard(res, CTX, "search", "dev", top=2)
    assert total == 3
    assert tab["trial_id"].tolist() == ["T1", "T2"] and tab["rank"].tolist() == [1, 2]
    assert tab["dev:av"].tolist() == [0.9, 0.6]
    assert tab.loc[0, "dev:audio_only"] == 0.1 and math.isnan(tab.loc[1, "dev:audio_only"])
    assert tab["lr"].tolist() == [0.1, 0.01]


def test_failed_trials_and_evidence():
    res = frame([row("A"), row("B", status="failed", condition=None, split=None, error="OOM"),
                 row("R", stage="rerun", parent_trial_id="A")])
    assert tables.failed_trials(res)[["trial_id", "error"]].values.tolist() == [["B", "OOM"]]
    assert tables.evidence(res) == ("rerun", "dev")


def test_cell_evidence_skips_stage_missing_cells():
    res = frame([row("A", fusion="vavl"), row("B", fusion="late"),
                 row("R", stage="rerun", parent_trial_id="A", fusion="vavl")])
    assert tables.cell_evidence(res) == ("search", "dev")
    res = frame([*res.to_dict("records"), row("R2", stage="rerun", parent_trial_id="B", fusion="late")])
    assert tables.cell_evidence(res) == ("rerun", "dev")


# ---------------------------------------------------------------- gather

def test_pareto_front_mask():
    x = np.array([0.9, 0.8, 0.7, 0.6, 0.9, 0.5])
    y = np.array([0.1, 0.5, 0.5, 0.6, 0.1, 0.2])
    # (0.9,0.1) kept once (tie: first after sort), (0.8,0.5), (0.6,0.6); (0.7,0.5), (0.5,0.2) dominated
    assert gather.pareto_front(x, y).tolist() == [True, True, False, True, False, False]


def test_pareto_data_uses_worst_single_modality():
    res = frame([row("A", "av", 0.8), row("A", "audio_only", 0.6), row("A", "video_only", 0.4),
                 row("B", "av", 0.7), row("B", "audio_only", 0.5), row("B", "video_only", 0.5),
                 row("C", "av", 0.6), row("C", "audio_only", 0.3), row("C", "video_only", 0.45)])
    df = gather.pareto_data(res, CTX).set_index("trial_id")
    assert df["worst_single"].to_dict() == {"A": 0.4, "B": 0.5, "C": 0.3}
    assert df["on_front"].to_dict() == {"A": True, "B": True, "C": False}


def test_history_best_so_far():
    res = frame([row(t, value=v, started_at=f"2024-01-01T00:0{i}:00")
                 for i, (t, v) in enumerate([("c", 0.4), ("a", 0.6), ("b", 0.5), ("d", 0.7)])])
    h = gather.history_data(res, CTX)
    assert h["trial_id"].tolist() == ["c", "a", "b", "d"]
    assert h["best_so_far"].tolist() == [0.4, 0.6, 0.6, 0.7]
    h = gather.history_data(res, Context(**{**CTX.__dict__, "maximize": False}))
    assert h["best_so_far"].tolist() == [0.4, 0.4, 0.4, 0.4]


def test_best_configs_averages_seeds():
    rows = [row(f"r{p}{s}", stage="rerun", parent_trial_id=p, seed=s, value=v, fusion=f)
            for p, f, vals in (("P", "vavl", (0.5, 0.7)), ("Q", "vavl", (0.65, 0.65)), ("S", "late", (0.4, 0.5)))
            for s, v in enumerate(vals)]
    best = gather.best_configs(frame(rows), CTX, "rerun", "dev", by=("fusion",))
    assert best[["fusion", "config_id", "n"]].values.tolist() == [["late", "S", 2], ["vavl", "Q", 2]]
    assert best["objective"].tolist() == pytest.approx([0.45, 0.65])


def test_heatmap_and_robustness_curves():
    rows = []
    for s, (a, b) in enumerate([(0.6, 0.5), (0.8, 0.7)]):
        tid = f"f{s}"
        rows += [row(tid, "av", a, stage="final", split="test", parent_trial_id="P", seed=s),
                 row(tid, "miss_0.5", b, stage="final", split="test", parent_trial_id="P", seed=s, test_missing_rate=0.5)]
    res = frame(rows)
    heat = gather.heatmap_data(gather.representative_rows(res, CTX, "final", "test"), "macro_f1")
    assert list(heat) == ["vavl"]
    assert heat["vavl"].loc[0.0].to_dict() == pytest.approx({"av": 0.7, "miss_0.5": 0.6})
    cur = gather.robustness_curves(gather.curve_rows(res, CTX, "final", "test"), "macro_f1")
    assert cur[["fusion", "test_missing_rate", "n"]].values.tolist() == [["vavl", 0.5, 2]]
    half = 12.706204736174707 * 0.1414213562373095 / math.sqrt(2)  # t(0.975, 1) * sd / sqrt(n)
    assert cur.loc[0, "mean"] == pytest.approx(0.6)
    assert cur.loc[0, "hi"] - cur.loc[0, "mean"] == pytest.approx(half, rel=1e-6)


def test_curve_rows_search_takes_top_k_of_best_cell():
    res = frame([row("a", value=0.9), row("b", value=0.8), row("c", value=0.1),
                 row("d", value=0.85, train_missing_rate=0.5)])
    got = gather.curve_rows(res, CTX, "search", "dev", k=2)
    assert sorted(got["trial_id"]) == ["a", "b"]


def test_confusion_row_normalised_mean():
    m1, m2 = [[3, 1], [0, 4]], [[1, 1], [2, 2]]
    res = frame([row("x", confusion=json.dumps(m1)), row("y", confusion=json.dumps(m2))])
    got = gather.confusion_data(res, 2)["vavl"]
    np.testing.assert_allclose(got, [[(0.75 + 0.5) / 2, (0.25 + 0.5) / 2], [0.25, 0.75]])


def test_per_class_data_categorical_and_dimensional():
    res = frame([row("x", "av", **{"f1__a": 0.2, "f1__b": 0.4}), row("y", "av", **{"f1__a": 0.4, "f1__b": 0.6}),
                 row("x", "miss_0.5", **{"f1__a": 0.9, "f1__b": 0.9})])
    got = gather.per_class_data(res, CTX).set_index("label")["value"].to_dict()
    assert got == pytest.approx({"a": 0.3, "b": 0.5})
    dim = Context(**{**CTX.__dict__, "task": "dimensional", "metric": "ccc_mean"})
    res = frame([row("x", "audio_only", ccc_arousal=0.5, ccc_valence=0.1, ccc_mean=0.3)])
    got = gather.per_class_data(res, dim)
    assert got[["condition", "label", "value"]].values.tolist() == [["audio_only", "arousal", 0.5], ["audio_only", "valence", 0.1]]


def test_seed_variance_and_paired_comparison():
    rows = [row(f"{f}{s}", stage="rerun", parent_trial_id=f"P{f}", seed=s, fusion=f, value=v)
            for f, vals in (("vavl", (0.6, 0.7, 0.8)), ("late", (0.5, 0.55, 0.7))) for s, v in enumerate(vals)]
    res = frame(rows)
    sv = gather.seed_variance(res, CTX, "rerun", "dev", ["av"]).set_index("fusion")
    assert sv.loc["vavl", "n"] == 3 and sv.loc["vavl", "mean"] == pytest.approx(0.7)
    assert sv.loc["vavl", "lo"] >= 0.6 - 1e-9 and sv.loc["vavl", "hi"] <= 0.8 + 1e-9
    pc = gather.paired_comparison(res, CTX, "rerun", "dev", ["av"])
    assert pc[["a", "b", "n"]].values.tolist() == [["late", "vavl", 3]]
    assert pc.loc[0, "mean_diff"] == pytest.approx(-0.1166666667)
    assert pc.loc[0, "p_value"] == pytest.approx(0.25)  # exact Wilcoxon, 3 pairs all one sign


def test_learning_curve_selection_marks_early_stopped():
    res = frame([row("a", value=0.9), row("b", value=0.8), row("s", value=0.3, status="early_stopped", epochs=2)])
    curves = pd.DataFrame({"trial_id": ["a", "a", "b", "s", "s", "z"], "epoch": [1, 2, 1, 1, 2, 1],
                           "dev_macro_f1": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]})
    df, col = gather.learning_curve_data(curves, res, CTX, top=1, n_stopped=5)
    assert col == "dev_macro_f1"
    assert df[["trial_id", "status", "epoch", "value"]].values.tolist() == [
        ["a", "completed", 1, 0.1], ["a", "completed", 2, 0.2], ["s", "early_stopped", 1, 0.4], ["s", "early_stopped", 2, 0.5]]


def test_parallel_data_drops_constant_params():
    res = frame([row(t, value=v, param__lr=lr, param__k=1.0, param__act=a)
                 for t, v, lr, a in (("a", 0.5, 1e-3, "relu"), ("b", 0.7, 1e-4, "gelu"), ("c", 0.6, 1e-2, "relu"))])
    df = gather.parallel_data(res, CTX, top=2)
    assert df.columns.tolist() == ["lr", "act", "objective"]
    assert df["objective"].tolist() == [0.7, 0.6]


# ---------------------------------------------------------------- stats

def test_stats_intervals_and_tests():
    m, lo, hi = stats.t_interval([1.0, 2.0, 3.0])
    assert (m, hi - m) == pytest.approx((2.0, 4.302652729911275 / math.sqrt(3)))
    assert stats.t_interval([5.0]) == (5.0, 5.0, 5.0)
    m, lo, hi = stats.bootstrap_ci([1.0, 2.0, 3.0, 4.0])
    assert m == 2.5 and 1.0 <= lo < 2.5 < hi <= 4.0
    assert stats.bootstrap_ci([1.0, 2.0, 3.0, 4.0]) == (m, lo, hi)  # seeded
    assert stats.paired_test([1, 2], [1, 2])["p_value"] == 1.0
    # exact Wilcoxon signed-rank, 3 positive differences: p = 2 / 2**3
    assert stats.paired_test([2, 3, 5], [1, 1, 1])["p_value"] == pytest.approx(0.25)


# ---------------------------------------------------------------- importance

def test_infer_distribution():
    import optuna.distributions as d

    assert infer_distribution(pd.Series([1e-5, 1e-4, 1e-3, 1e-2])) == d.FloatDistribution(1e-5, 1e-2, log=True)
    # uniform on [0, 0.5] spans many decades near 0 but is not log-sampled
    assert infer_distribution(pd.Series([0.001, 0.1, 0.2, 0.3, 0.5])) == d.FloatDistribution(0.001, 0.5)
    assert infer_distribution(pd.Series([1.0, 4.0, 2.0])) == d.IntDistribution(1, 4)
    assert infer_distribution(pd.Series([0.1, 0.25])) == d.FloatDistribution(0.1, 0.25)
    assert infer_distribution(pd.Series(["b", "a", None], dtype=object)) == d.CategoricalDistribution(["a", "b"])


def test_importance_finds_the_parameter_that_matters():
    rng = np.random.default_rng(0)
    x, noise = rng.uniform(0, 1, 40), rng.uniform(0, 1, 40)
    rows = [row(f"t{i}", c, v, param__x=x[i], param__noise=noise[i], param__cond=(1.0 if i % 2 else None))
            for i in range(40) for c, v in (("av", x[i]), ("audio_only", 1 - x[i]))]
    res = frame(rows)
    study = build_study(pd.DataFrame({"x": x, "noise": noise}, index=[f"t{i}" for i in range(40)]),
                        pd.Series(x, index=[f"t{i}" for i in range(40)]), maximize=True)
    assert len(study.trials) == 40
    tab, n = importance_data(res, CTX)
    assert n == 40 and tab.columns.tolist() == ["av", "audio_only"]
    assert set(tab.index) == {"x", "noise"}  # conditional "cond" is absent from half the trials
    assert tab.loc["x", "av"] > 0.9 and tab.loc["x", "audio_only"] > 0.9


# ---------------------------------------------------------------- html and escaping

def test_table_and_script_json_escape():
    evil = "<script>alert(1)</script>"
    out = html.table(pd.DataFrame({evil: [evil, 1.5]}))
    assert "<script" not in out and "&lt;script&gt;" in out
    js = html.script_json({"name": evil + "<!--"})
    assert "<" not in js and json.loads(js)["name"] == evil + "<!--"


def test_report_escapes_hostile_strings(tmp_path):
    evil = "<script>alert(1)</script>"
    cfg = FakeStudy(name=evil, n_trials=12, labels={"fusion": {"vavl": evil}, "error": evil})
    text = render_report(load_study(locate(write_study(tmp_path / "s", cfg))), with_plotlyjs=False)
    assert "alert(1)</script>" not in text
    n_figs = len(re.findall(r"<div id='fig\d+' class='plot'", text))
    assert text.count("<script>") == n_figs + 1  # one per figure + table sorting, nothing injected
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text  # shown as text (title, tables)


# ---------------------------------------------------------------- whole reports

def _problems(text: str) -> list[str]:
    return re.findall(r"could not be built[^<]*", text)


@pytest.mark.parametrize("cfg", [FakeStudy(n_trials=25), FakeStudy(n_trials=20, task="dimensional"),
                                 FakeStudy(n_trials=10, running=True, write_curves=False)],
                         ids=["finished", "dimensional", "running"])
def test_write_report_variants(tmp_path, cfg):
    path = write_report(write_study(tmp_path / "s", cfg))
    text = path.read_text()
    assert path == tmp_path / "s" / "report.html"
    assert not _problems(text)
    assert text.count("Plotly.newPlot(") >= 8
    assert len(re.findall(r"\* plotly\.js v\d", text)) == 1  # plotly.js embedded once ...
    assert text.count("<script src") == 0 and "<link" not in text  # ... and nothing loaded from elsewhere
    if cfg.running:
        assert "curves.parquet is missing" in text and "No re-run or final stage yet" in text


def test_report_of_study_without_results(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    (d / "study.json").write_text(json.dumps({"name": "new", "status": "running"}))
    text = write_report(d, out=tmp_path / "x.html").read_text()
    assert "results.parquet is missing" in text and "No results yet" in text and not _problems(text)
    text = write_report(tmp_path / "nothing", out=tmp_path / "y.html").read_text()  # not even study.json
    assert "study.json is missing" in text


def test_report_with_only_failed_trials(tmp_path):
    d = tmp_path / "failed"
    d.mkdir()
    frame([row("A", status="failed", condition=None, split=None, macro_f1=None, error="ValueError: bad")]) \
        .to_parquet(d / "results.parquet")
    text = write_report(d).read_text()
    assert "ValueError: bad" in text and not _problems(text)


def test_context_reads_string_objectives():
    import dataclasses

    files = load_study(locate("/nonexistent"))
    assert len(files.problems) == 4
    ctx = make_context(dataclasses.replace(files, meta={"objectives": ["dev/audio_only/uar"]}))
    assert (ctx.condition, ctx.metric, ctx.maximize, ctx.task) == ("audio_only", "uar", True, "categorical")
    meta = {"objectives": [{"metric": "loss", "condition": "video_only", "mode": "min", "key": "k"}],
            "primary_metric": "loss", "task": "categorical"}
    ctx = make_context(dataclasses.replace(files, meta=meta))
    assert (ctx.condition, ctx.metric, ctx.maximize) == ("video_only", "loss", False)


# ---------------------------------------------------------------- index and CLI

def test_index_links_and_summary(tmp_path):
    root = tmp_path / "root"
    write_study(root / "a", FakeStudy(name="study-a", n_trials=10, seed=1))
    write_study(root / "group" / "b", FakeStudy(name="study-b", n_trials=10, seed=2, running=True))
    (root / "a" / "ray").mkdir()
    assert [loc.path for loc in find_studies(locate(root))] == [str(root / "a"), str(root / "group" / "b")]
    index = write_index(root)
    text = index.read_text()
    assert "href='a/report.html'" in text and "href='group/b/report.html'" in text
    assert "study-a" in text and "study-b" in text and "Plotly.newPlot(" in text
    assert "href='../../index.html'" in (root / "group" / "b" / "report.html").read_text()
    # a report written later finds the index next to it
    assert "href='../index.html'" in write_report(root / "a").read_text()


def test_index_through_pyarrow_uri(tmp_path):
    write_study(tmp_path / "r" / "s", FakeStudy(name="uri-study", n_trials=8))
    out = write_index(f"file://{tmp_path / 'r'}")
    assert out == f"file://{tmp_path / 'r'}/index.html"
    assert "uri-study" in (tmp_path / "r" / "index.html").read_text()


def test_cli(tmp_path, capsys):
    study = write_study(tmp_path / "s", FakeStudy(n_trials=8))
    parser = argparse.ArgumentParser(prog="avstudy")
    cli.add_subparser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", str(study), "--out", str(tmp_path / "o.html")])
    assert cli.run(args) == 0 and (tmp_path / "o.html").exists()
    assert capsys.readouterr().out.strip() == str(tmp_path / "o.html")
    assert cli.run(parser.parse_args(["report", "--index", str(tmp_path)])) == 0
    assert (tmp_path / "index.html").exists()
    assert cli.run(parser.parse_args(["report"])) == 2


def test_fake_tables_follow_contract():
    res, curves = make_tables(FakeStudy(n_trials=10))
    required = {"study", "trial_id", "stage", "parent_trial_id", "cell", "fusion", "train_missing_rate", "seed",
                "status", "error", "split", "condition", "test_missing_rate", "loss", "accuracy", "uar", "macro_f1",
                "confusion", "epochs", "best_epoch", "wall_time_s", "cpus", "gpus", "workers", "config", "protocol",
                "started_at", "finished_at"}
    assert required <= set(res.columns)
    assert set(res["stage"]) == {"search", "rerun", "final"} and set(res["split"].dropna()) == {"dev", "test"}
    assert {"study", "trial_id", "stage", "epoch", "time_s", "train_loss", "dev_loss", "dev_macro_f1"} <= set(curves.columns)
