"""Unit tests of the report package: data functions on small hand-made tables with exact values,
escaping, missing files, the index and the CLI. (Browser rendering: test_reports_browser.py.)"""
from __future__ import annotations

import argparse
import html as html_lib
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fake_results import FakeStudy, make_tables, write_study

from reports import cli, gather, html, paper, stats, tables
from reports.build import render_report, write_index, write_report
from reports.fsio import find_studies, locate
from reports.importance import build_study, importance_data, infer_distribution
from reports.load import Context, load_study, make_context

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
    assert tables.selection_split(res) == ("rerun", "dev")
    final = frame([*res.to_dict("records"), row("F", stage="final", split="test", parent_trial_id="A")])
    assert tables.selection_split(final) == ("rerun", "dev")  # never test, even when a final stage exists
    assert tables.selection_split(frame([row("F", stage="final", split="test")])) is None


def test_selection_split_skips_rerun_missing_cells():
    res = frame([row("A", fusion="vavl"), row("B", fusion="late"),
                 row("R", stage="rerun", parent_trial_id="A", fusion="vavl")])
    assert tables.selection_split(res, need=("fusion",)) == ("search", "dev")
    res = frame([*res.to_dict("records"), row("R2", stage="rerun", parent_trial_id="B", fusion="late")])
    assert tables.selection_split(res, need=("fusion",)) == ("rerun", "dev")


# ---------------------------------------------------------------- gather



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
        tid = f"r{s}"
        rows += [row(tid, "av", a, stage="rerun", parent_trial_id="P", seed=s),
                 row(tid, "miss_0.5", b, stage="rerun", parent_trial_id="P", seed=s, test_missing_rate=0.5)]
    res = frame(rows)
    heat = gather.heatmap_data(gather.representative_rows(res, CTX, "rerun", "dev"), "macro_f1")
    assert list(heat) == ["vavl"]
    assert heat["vavl"].loc[0.0].to_dict() == pytest.approx({"av": 0.7, "miss_0.5": 0.6})
    cur = gather.robustness_curves(gather.curve_rows(res, CTX, "rerun", "dev"), "macro_f1")
    assert cur[["fusion", "family", "level", "n"]].values.tolist() == [["vavl", "miss", 0.5, 2]]
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
    assert got[["condition", "label", "value"]].values.tolist() == [["audio_only", "arousal", 0.5],
                                                                     ["audio_only", "valence", 0.1]]


def test_seed_variance_and_paired_comparison():
    rows = [row(f"{f}{s}", stage="rerun", parent_trial_id=f"P{f}", seed=s, fusion=f, value=v)
            for f, vals in (("vavl", (0.6, 0.7, 0.8)), ("late", (0.5, 0.55, 0.7))) for s, v in enumerate(vals)]
    res = frame(rows)
    sv = gather.seed_variance(res, CTX, "rerun", "dev", ["av"]).set_index("fusion")
    assert sv.loc["vavl", "n"] == 3 and sv.loc["vavl", "mean"] == pytest.approx(0.7)
    # Student-t: sd 0.1, half width t(0.975, 2) * 0.1 / sqrt(3) = 4.302652729911275 * 0.057735 = 0.248414
    assert (sv.loc["vavl", "lo"], sv.loc["vavl", "hi"]) == pytest.approx((0.451586, 0.948414), abs=1e-6)
    assert sv.loc["vavl", "method"] == "Student-t"
    pc, p = paper.paired_comparison(res, CTX, ["av"])
    assert (p.select, p.show) == (("rerun", "dev"), ("rerun", "dev"))  # no final stage: dev shown
    assert pc[["a", "b", "n", "pairing"]].values.tolist() == [["late", "vavl", 3, "fold, seed"]]
    # late - vavl = (-0.1, -0.15, -0.1): mean -0.116667, sd 0.0288675, t = -7 with 2 df:
    # p = 1 - 7 / sqrt(2 + 49) = 0.019804; d_z = -0.116667 / 0.0288675 = -4.04145; one test: Holm p = p
    r = pc.iloc[0]
    assert r["mean_diff"] == pytest.approx(-0.1166666667)
    assert r["p_value"] == pytest.approx(1 - 7 / math.sqrt(51)) and r["p_adjusted"] == pytest.approx(r["p_value"])
    assert r["d_z"] == pytest.approx(-4.04145, abs=1e-5) and bool(r["significant"])


def test_learning_curve_selection_marks_early_stopped():
    res = frame([row("a", value=0.9), row("b", value=0.8), row("s", value=0.3, status="early_stopped", epochs=2)])
    curves = pd.DataFrame({"trial_id": ["a", "a", "b", "s", "s", "z"], "epoch": [1, 2, 1, 1, 2, 1],
                           "dev_macro_f1": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]})
    df, col = gather.learning_curve_data(curves, res, CTX, top=1, n_stopped=5)
    assert col == "dev_macro_f1"
    assert df[["trial_id", "status", "epoch", "value"]].values.tolist() == [
        ["a", "completed", 1, 0.1], ["a", "completed", 2, 0.2], ["s", "early_stopped", 1, 0.4],
        ["s", "early_stopped", 2, 0.5]]


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
    assert stats.paired([1, 2], [1, 2]).p_value == 1.0  # every difference zero
    # (Student-t, paired t-test, BCa and the corrections: tests/report/test_reports_stats.py)


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
    flat = frame([*rows, *(row(f"t{i}", "video_only", 1 / 36, param__x=x[i], param__noise=noise[i])
                           for i in range(40))])
    tab, n = importance_data(flat, CTX)  # a degenerate modality (constant score) is left out, not an error
    assert tab.columns.tolist() == ["av", "audio_only"]


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
        assert "curves.parquet is missing" in text and "No re-run stage yet" in text


def test_report_of_study_without_results(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    (d / "study.json").write_text(json.dumps({"name": "new", "status": "running"}))
    text = write_report(d, out=tmp_path / "x.html").read_text()
    assert "results.parquet is missing" in text and "No results yet" in text and not _problems(text)


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
    assert {"study", "trial_id", "stage", "epoch", "time_s", "train_loss", "dev_loss",
            "dev_macro_f1"} <= set(curves.columns)


# ---------------------------------------------------------------- selection on dev, never test

def _section(text: str, anchor: str) -> str:
    m = re.search(rf"<section id='{anchor}'>(.*?)</section>", text, re.S)
    assert m, f"no section {anchor}"
    return m.group(1)


def _decode(v):
    """Plotly JSON arrays: plain lists, or {"dtype", "bdata"[, "shape"]} typed arrays."""
    import base64

    if isinstance(v, dict) and "bdata" in v:
        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        return a.reshape([int(x) for x in str(v["shape"]).split(",")]) if "shape" in v else a
    return np.asarray(v)


def _figure(section_html: str) -> dict:
    m = re.search(r"var f=(\{.*?\});Plotly\.newPlot", section_html, re.S)
    assert m, "no figure in section"
    return json.loads(m.group(1))


def _split_note(section_html: str) -> str:
    return " ".join(html_lib.unescape(x) for x in re.findall(r"<p class='split'>(.*?)</p>", section_html))


# config -> (fusion, dev mean (rerun), test mean (final), confusion marker k): dev picks A1 and B1, test would
# pick A2 and B2
DEV_VS_TEST = {"A1": ("vavl", 0.70, 0.50, 1), "A2": ("vavl", 0.60, 0.80, 2),
               "B1": ("late", 0.65, 0.55, 3), "B2": ("late", 0.55, 0.75, 4)}
OFFSETS = {"av": 0.0, "audio_only": -0.1, "video_only": -0.2, "miss_0.5": -0.05, "robustness": -0.07}


def _cond_rows(tid: str, fusion: str, v: float, k: int, **kw) -> list[dict]:
    return [row(tid, c, v + o, fusion=fusion, test_missing_rate=0.5 if c == "miss_0.5" else None,
                confusion=json.dumps([[k, 10 - k], [0, 10]]) if c == "av" else None,
                **{"f1__a": v + o + 0.02, "f1__b": v + o - 0.02}, **kw) for c, o in OFFSETS.items()]


def dev_vs_test_frame() -> pd.DataFrame:
    rows = []
    for cid, (fusion, dev, test, k) in DEV_VS_TEST.items():
        rows += _cond_rows(cid, fusion, dev, k + 5, seed=9)
        for seed, off in enumerate((-0.01, 0.0, 0.01)):
            rows += _cond_rows(f"rerun-{cid}-{seed}", fusion, dev + off, k + 5, stage="rerun", parent_trial_id=cid,
                               seed=seed)
            rows += _cond_rows(f"final-{cid}-{seed}", fusion, test + off, k, stage="final", split="test",
                               parent_trial_id=cid, seed=seed)
    return frame(rows)


def _write_dev_vs_test(d: Path) -> Path:
    d.mkdir(parents=True)
    dev_vs_test_frame().to_parquet(d / "results.parquet")
    meta = {"name": "devtest", "status": "finished", "task": "categorical", "primary_metric": "macro_f1",
            "objectives": [{"metric": "macro_f1", "condition": "av", "mode": "max"}], "classes": ["a", "b"]}
    (d / "study.json").write_text(json.dumps(meta))
    return d


def test_pick_selects_on_dev_and_shows_test():
    p = gather.pick(dev_vs_test_frame(), CTX, by=("fusion",))
    assert p.best[["fusion", "config_id"]].values.tolist() == [["late", "B1"], ["vavl", "A1"]]
    assert p.best["objective"].tolist() == pytest.approx([0.65, 0.70])  # rerun dev means
    assert (p.select, p.show) == (("rerun", "dev"), ("final", "test"))
    av = p.rows[p.rows["condition"] == "av"].groupby("fusion")["macro_f1"].mean()
    assert av.to_dict() == pytest.approx({"late": 0.55, "vavl": 0.50})  # the test scores of B1 and A1


def test_report_sections_pick_dev_best_and_show_its_test_values(tmp_path):
    text = render_report(load_study(locate(_write_dev_vs_test(tmp_path / "s"))), with_plotlyjs=False)
    assert not _problems(text)
    for anchor in ("heatmap", "curves", "confusion", "perclass", "paired"):
        note = _split_note(_section(text, anchor))
        assert "Selected on: rerun stage, dev split" in note and "Shown: final stage, test split" in note, anchor
    curves = {t["name"]: _decode(t["y"]).tolist() for t in _figure(_section(text, "curves"))["data"] if "name" in t}
    assert curves == {"late": pytest.approx([0.50]), "vavl": pytest.approx([0.45])}  # miss_0.5 = test av - 0.05
    conf = [_decode(t["z"]) for t in _figure(_section(text, "confusion"))["data"]]  # late (B1: k=3), vavl (A1: k=1)
    np.testing.assert_allclose(conf[0], [[0.3, 0.7], [0, 1]])
    np.testing.assert_allclose(conf[1], [[0.1, 0.9], [0, 1]])
    bars = {(t["name"], t["xaxis"]): _decode(t["y"]).tolist() for t in _figure(_section(text, "perclass"))["data"]}
    assert bars[("vavl", "x")] == pytest.approx([0.52, 0.48])  # av f1 of A1 on test
    heat = _figure(_section(text, "heatmap"))["data"]
    assert [t["x"][:2] for t in heat] == [["av", "audio_only"]] * 2
    assert [_decode(t["z"])[0][0] for t in heat] == pytest.approx([0.55, 0.50])
    winners = _section(text, "conditions")
    assert "Selected on: rerun stage, dev split" in _split_note(winners)
    final_board = _section(text, "leaderboard").split("<h3>")[-1]  # search, rerun, final
    assert final_board.startswith("final stage: test macro_f1") and "Shown: final stage, test split" in final_board
    first = re.search(r"<tbody><tr>(.*?)</tr>", final_board).group(1)  # A1 seed 0: test 0.49, dev 0.69
    assert ">test:av<" in final_board and ">final-A1-0<" in first and ">0.49<" in first and ">0.69<" not in first


def test_paired_comparison_uses_dev_choice_on_test():
    pc, p = paper.paired_comparison(dev_vs_test_frame(), CTX, ["av", "robustness"])
    assert p.show == ("final", "test")
    av = pc[pc["condition"] == "av"].iloc[0]
    assert (av["a"], av["b"], av["n"]) == ("late", "vavl", 3)
    assert av["mean_diff"] == pytest.approx(0.05)  # B1 - A1 on test; test-picked B2 - A2 would be -0.05


def test_index_best_is_dev_best(tmp_path):
    from reports.build import study_summary

    s = study_summary(load_study(locate(_write_dev_vs_test(tmp_path / "root" / "s"))))
    assert s["best"] == "vavl r=0 (A1)" and (s["selected on"], s["shown"]) == ("rerun/dev", "final/test")
    assert s["av"] == pytest.approx(0.50) and s["robustness"] == pytest.approx(0.43)
    text = write_index(tmp_path / "root").read_text()
    assert "vavl r=0 (A1)" in text and "(A2)" not in text


def test_final_leaderboard_reads_test_ranked_by_dev():
    res = dev_vs_test_frame()
    tab, total = tables.leaderboard(res, CTX, "final", "test")
    assert total == 12 and "test:av" in tab.columns and not any(c.startswith("dev:") for c in tab.columns)
    assert tab["trial_id"].tolist()[:3] == ["final-A1-0", "final-A1-1", "final-A1-2"]  # A1 is best on dev
    assert tab["dev objective (selection)"].tolist()[::3] == pytest.approx([0.70, 0.65, 0.60, 0.55])
    assert tab["test:av"].tolist()[:3] == pytest.approx([0.49, 0.50, 0.51])  # A1's test scores, not its dev
    rer, _ = tables.leaderboard(res, CTX, "rerun", "dev")
    assert rer["dev:av"].iloc[0] == pytest.approx(0.71) and "test:av" not in rer.columns


def test_worst_single_objective():
    ctx = Context(**{**CTX.__dict__, "condition": "worst_single"})
    res = frame([row("A", "audio_only", 0.6), row("A", "video_only", 0.4), row("B", "audio_only", 0.5),
                 row("B", "video_only", 0.45), row("C", "audio_only", 0.9)])
    assert tables.objective(res, ctx, "search", "dev").to_dict() == pytest.approx({"A": 0.4, "B": 0.45})
    assert gather.best_configs(res, ctx, "search", "dev", by=())["config_id"].tolist() == ["B"]


def test_condition_winners_chosen_on_dev_per_condition():
    res = dev_vs_test_frame()
    extra = [row(f"rerun-A2-{s}", "video_only", 0.9, fusion="vavl", stage="rerun", parent_trial_id="A2", seed=s)
             for s in range(3)]
    res = pd.concat([res[~((res["trial_id"].str.startswith("rerun-A2")) & (res["condition"] == "video_only"))],
                     frame(extra)], ignore_index=True)  # A2 is now vavl's best on dev video_only
    df, _ = gather.condition_winners(res, CTX, ["av", "video_only"])
    got = df.set_index(["condition", "fusion"])
    assert got.loc[("av", "vavl"), "config_id"] == "A1" and got.loc[("video_only", "vavl"), "config_id"] == "A2"
    assert got.loc[("av", "vavl"), ["dev", "shown"]].tolist() == pytest.approx([0.70, 0.50])
    assert got.loc[("video_only", "vavl"), ["dev", "shown"]].tolist() == pytest.approx([0.90, 0.60])
    assert df[df["winner"]].set_index("condition")["fusion"].to_dict() == {"av": "vavl", "video_only": "vavl"}
    assert set(df["shown_split"]) == {"test"}


# ---------------------------------------------------------------- condition families

def test_parse_and_order_family_conditions():
    assert tables.parse_condition("noise_audio_10db") == ("noise_audio", 10.0)
    assert tables.parse_condition("async_200ms") == ("async", 200.0)
    assert tables.parse_condition("drop_video_0.3") == ("drop_video", 0.3)
    assert tables.parse_condition("robustness_gap_audio") == ("gap_audio", None)
    assert tables.parse_condition("robustness") == ("miss", None)
    assert tables.parse_condition("av") == (None, None)
    got = tables.condition_order(["robustness_async", "async_100ms", "noise_video_0db", "noise_video_20db", "av",
                                  "miss_0.3", "robustness", "drop_audio_0.5", "drop_audio_0.1", "x"])
    assert got == ["av", "miss_0.3", "robustness", "drop_audio_0.1", "drop_audio_0.5", "noise_video_20db",
                   "noise_video_0db", "async_100ms", "robustness_async", "x"]
    assert tables.summary_conditions(got) == ["av", "miss_0.3", "robustness", "robustness_async", "x"]


def test_with_families_fills_old_layout():
    res = frame([row("A", "miss_0.3", test_missing_rate=0.3), row("A", "robustness"), row("A", "av"),
                 row("A", "noise_audio_10db")])
    got = tables.with_families(res)
    assert [f if isinstance(f, str) else None for f in got["family"]] == ["miss", "miss", None, "noise_audio"]
    assert got["level"].tolist()[:1] == [0.3] and math.isnan(got["level"].iloc[1]) and got["level"].iloc[3] == 10.0


def test_family_curves_per_strategy_with_ci():
    rows = []
    for s, (a, b) in enumerate([(0.6, 0.4), (0.7, 0.5), (0.8, 0.6)]):
        for f, shift in (("vavl", 0.0), ("late", -0.2)):
            kw = dict(stage="rerun", parent_trial_id=f"P{f}", seed=s, fusion=f)
            rows += [row(f"{f}{s}", "drop_audio_0.1", a + shift, family="drop_audio", level=0.1, **kw),
                     row(f"{f}{s}", "drop_audio_0.9", b + shift, family="drop_audio", level=0.9, **kw),
                     row(f"{f}{s}", "robustness_drop_audio", 0.5, family="drop_audio", **kw),
                     row(f"{f}{s}", "av", 0.9 + shift, **kw)]
    res = frame(rows)
    cur = gather.robustness_curves(gather.curve_rows(res, CTX, "rerun", "dev"), "macro_f1")
    assert cur[["fusion", "family", "level", "n"]].values.tolist() == [
        ["late", "drop_audio", 0.1, 3], ["late", "drop_audio", 0.9, 3],
        ["vavl", "drop_audio", 0.1, 3], ["vavl", "drop_audio", 0.9, 3]]
    assert cur["mean"].tolist() == pytest.approx([0.5, 0.3, 0.7, 0.5])
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert (cur["hi"] - cur["mean"]).tolist() == pytest.approx([half] * 4)
    heat = gather.heatmap_data(gather.representative_rows(res, CTX, "rerun", "dev"), "macro_f1")
    assert heat["vavl"].columns.tolist() == ["av", "robustness_drop_audio"]  # areas, not every level


def test_wave2_report_has_a_panel_and_an_area_per_family(tmp_path):
    fams = ("drop_audio", "noise_video", "async")
    text = write_report(write_study(tmp_path / "s", FakeStudy(n_trials=20, families=fams))).read_text()
    assert not _problems(text)
    fig = _figure(_section(text, "curves"))
    titles = [a["text"] for a in fig["layout"]["annotations"]]
    assert titles == ["miss", "drop_audio", "noise_video", "async"]
    assert fig["layout"]["xaxis3"]["title"]["text"] == "video SNR (dB; lower = noisier)"
    assert fig["layout"]["xaxis3"]["autorange"] == "reversed"  # noisier (lower SNR) to the right
    heat_x = _figure(_section(text, "heatmap"))["data"][0]["x"]
    assert [c for c in heat_x if c.startswith("robustness")] == [
        "robustness", "robustness_drop_audio", "robustness_noise_video", "robustness_async"]
    board = _section(text, "leaderboard")
    assert ">dev:robustness_async<" in board and ">dev:async_200ms<" not in board
    assert "realised unpaired" in _section(text, "heatmap")


# ---------------------------------------------------------------- sanity

def test_degenerate_modality_raises_a_banner_on_report_and_index(tmp_path):
    root = tmp_path / "root"
    write_study(root / "bad", FakeStudy(name="bad", n_trials=10, families=("drop_audio",),
                                        degenerate_modality="video_only"))
    write_study(root / "ok", FakeStudy(name="ok", n_trials=10, families=("drop_audio",), degenerate_trials=1))
    text = write_index(root).read_text()
    assert ("<div class='banner alarm' role='alert'><ul><li>bad: DEGENERATE video_only (final, rerun, search); "
            "48 degenerate trial(s)</li></ul></div>") in text  # 24 final + 24 rerun (8 search: expected)
    assert text.count("<tr class='alarm'>") == 1
    bad = (root / "bad" / "report.html").read_text()
    banner = re.search(r"<div class='banner alarm'.*?</div>", bad, re.S).group(0)
    assert ("DEGENERATE MODALITY: video_only predictions are degenerate in every trial of the final stage "
            "(24 of 24), rerun stage (24 of 24), search stage (8 of 8); flags: one_class") in html_lib.unescape(banner)
    assert bad.index("banner alarm") < bad.index("<nav>")  # above everything else
    ok = (root / "ok" / "report.html").read_text()
    # a degenerate search trial only: expected by a search's design, no banner, a note in Sanity checks
    assert "banner alarm" not in ok and "<div class='banner' role='alert'>" not in ok
    assert ("<p class='note'>Expected by the design: 1 search trial(s) have degenerate predictions on av, "
            "audio_only or video_only (search-00000)") in html_lib.unescape(ok)
    assert "What each flag means here" in ok and "search stage only" in ok


def test_sanity_check_counts_and_old_layout():
    from reports import sanity

    res = frame([row("A", "av", flag="one_class", degenerate=True), row("A", "video_only", flag="nan"),
                 row("B", "av", flag=None, degenerate=False), row("B", "video_only", flag="chance"),
                 row("C", "miss_0.5", flag="chance", degenerate=False)])
    s = sanity.check(res, {})
    assert s.search_trials == ("A", "B") and s.trials == () and s.has_flags  # search-stage rows only
    assert [lvl for lvl, _ in sanity.warnings(s)] == ["alarm", "note"]
    rerun = sanity.check(res.assign(stage="rerun"), {})
    assert rerun.trials == ("A", "B") and rerun.search_trials == ()
    assert [(m["condition"], m["stage"], m["n"]) for m in s.modalities] == [("video_only", "search", 2)]
    old = sanity.check(frame([row("A")]), {})
    assert not old.has_flags and old.trials == () and sanity.warnings(old) == []


def test_data_condition_searched_in_cells_is_flagged_and_augmentation_marked(tmp_path):
    cfg = FakeStudy(n_trials=20, families=("drop_audio",), search_audio_share=True, augment=True)
    text = write_report(write_study(tmp_path / "s", cfg)).read_text()
    banner = html_lib.unescape(re.search(r"<div class='banner'.*?</div>", text, re.S).group(0))
    assert "Data condition searched inside cells: audio_only_share" in banner and "the spec opts in" in banner
    study = html_lib.unescape(_section(text, "study"))
    assert "searched inside cells (flagged)" in study and "modality_dropout [augmentation]" in study
    assert "Pareto rank over av_macro_f1 (max), worst_single_macro_f1 (max)" in study  # study.json's selection note
    par = _figure(_section(text, "parallel"))["data"][0]["dimensions"]
    labels = [d["label"] for d in par]
    assert "modality_dropout [augmentation]" in labels and "audio_only_share [data]" in labels
    assert "train_missing_rate [data]" in labels  # the cell dimension, marked as data


def test_audio_only_share_cells_are_a_data_dimension(tmp_path):
    cfg = FakeStudy(n_trials=20, train_rates=(0.0,), audio_shares=(0.3, 0.7), seeds=(0, 1))
    res, _ = make_tables(cfg)
    assert tables.data_dimensions(res) == ["train_missing_rate", "audio_only_share"]
    assert tables.searched_data_conditions(res) == []
    text = write_report(write_study(tmp_path / "s", cfg)).read_text()
    heat = _figure(_section(text, "heatmap"))["data"][0]["y"]
    assert heat == ["r=0 · audio_only_share=0.3", "r=0 · audio_only_share=0.7"]
    assert "role='alert'" not in text


# ---------------------------------------------------------------- one list of sections

def test_sections_are_one_list_and_the_readme_is_generated_from_it(tmp_path):
    from reports import readme
    from reports.sections import SECTIONS

    anchors = [s.anchor for s in SECTIONS]
    assert len(set(anchors)) == len(anchors)
    assert readme.PATH.read_text() == readme.render(), "run: .venv/bin/python -m reports.readme"
    for s in SECTIONS:
        assert f"| {s.title} | `report.html#{s.anchor}` | {s.how_to_read} |" in readme.render()
    text = write_report(write_study(tmp_path / "s", FakeStudy(n_trials=12))).read_text()
    nav = re.search(r"<nav>(.*?)</nav>", text).group(1)
    assert re.findall(r"<a href='#([a-z-]+)'>", nav) == anchors
    assert [html_lib.unescape(t) for t in re.findall(r"<h2>(.*?)</h2>", text)] == [s.title for s in SECTIONS]


# ---------------------------------------------------------------- errors (issue 11)

def test_cli_errors_on_missing_or_broken_study(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="avstudy")
    cli.add_subparser(parser.add_subparsers(dest="command"))
    run = lambda *a: cli.run(parser.parse_args(["report", *map(str, a)]))
    assert run(tmp_path / "nothing") == 1
    assert f"{tmp_path / 'nothing'}: no such study directory" in capsys.readouterr().err
    assert not (tmp_path / "nothing").exists()
    (tmp_path / "empty").mkdir()
    assert run(tmp_path / "empty") == 1 and "not a study directory" in capsys.readouterr().err
    bad = write_study(tmp_path / "bad", FakeStudy(n_trials=6))
    (bad / "study.json").write_text("{not json")
    assert run(bad) == 1
    assert "broken study directory: study.json could not be read (JSONDecodeError" in capsys.readouterr().err
    bad2 = write_study(tmp_path / "bad2", FakeStudy(n_trials=6))
    (bad2 / "results.parquet").write_bytes(b"PAR1 truncated")
    assert run(bad2) == 1 and "results.parquet could not be read" in capsys.readouterr().err
    (bad2 / "study.json").write_text("[1, 2]")
    (bad2 / "results.parquet").unlink()
    assert run(bad2) == 1 and "expected a JSON object, got list" in capsys.readouterr().err
    assert run("--index", tmp_path / "nowhere") == 1 and "no such directory" in capsys.readouterr().err
    assert run("--index", tmp_path / "empty") == 1 and "no study found" in capsys.readouterr().err
    assert not (tmp_path / "bad" / "report.html").exists()


@pytest.mark.parametrize("families", [(), ("drop_audio",)], ids=["first-layout", "families"])
def test_every_data_section_states_its_splits(tmp_path, families):
    from reports.sections import SECTIONS

    text = write_report(write_study(tmp_path / "s", FakeStudy(n_trials=15, families=families))).read_text()
    for sd in SECTIONS:
        if sd.anchor in ("study", "software", "compute", "failed"):
            continue
        note = _split_note(_section(text, sd.anchor))
        assert "Selected on:" in note and "Shown:" in note and "test split" not in note.split("Shown:")[0], sd.anchor
    assert "Selected on: search stage, dev split" in _split_note(_section(text, "learning"))


def test_overview_says_how_top_k_were_chosen(tmp_path):
    d = _write_dev_vs_test(tmp_path / "s")
    meta = json.loads((d / "study.json").read_text())
    meta["objectives"].append({"metric": "macro_f1", "condition": "worst_single", "mode": "max"})
    (d / "study.json").write_text(json.dumps(meta))
    study = html_lib.unescape(_section(write_report(d).read_text(), "study"))
    assert "maximise av macro_f1; maximise worst_single macro_f1" in study
    assert "2 objectives, but study.json records no selection rule; this report ranks by the first objective" in study
    assert "rerun stage, dev split, by av macro_f1; test is only shown for what dev chose" in study
