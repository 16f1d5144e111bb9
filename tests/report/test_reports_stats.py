"""Issue 20: the report's statistics (intervals, paired tests, corrections) pinned on values computed
by hand, the tables for papers (folds, baselines, selected on test), their CSV / LaTeX export and
its no-overwrite rule, the summary first, --compare, and the SVG button of every figure."""
from __future__ import annotations

import argparse
import html as html_lib
import io
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fake_results import FakeStudy, write_study  # noqa: E402

from reports import cli, export, paper, stats  # noqa: E402
from reports.build import render_report, write_report  # noqa: E402
from reports.fsio import locate  # noqa: E402
from reports.load import Context, StudyError, load_study  # noqa: E402

CTX = Context(name="t", status="finished", task="categorical", metric="macro_f1", condition="av",
              maximize=True, classes=("a", "b"))
T975 = {1: 12.706204736174705, 2: 4.302652729911275, 3: 3.182446305284263}  # Student-t table, 0.975 quantile


def t_two_sided_p(t: float, df: int) -> float:
    """Closed forms of the Student-t tail for 1, 2 and 3 degrees of freedom."""
    t = abs(t)
    if df == 1:
        return 1 - 2 / math.pi * math.atan(t)
    if df == 2:
        return 1 - t / math.sqrt(2 + t * t)
    if df == 3:
        u = t / math.sqrt(3)
        return 1 - 2 / math.pi * (u / (1 + u * u) + math.atan(u))
    raise ValueError(df)


# ---------------------------------------------------------------- stats

def test_student_t_interval_by_hand():
    iv = stats.interval([1.0, 2.0, 3.0])
    # mean 2, sd 1, half width t(0.975, 2) * 1 / sqrt(3) = 4.302653 / 1.732051 = 2.484138
    assert (iv.mean, iv.sd, iv.n, iv.method) == (2.0, 1.0, 3, "Student-t")
    assert (iv.lo, iv.hi) == pytest.approx((2 - 2.484138, 2 + 2.484138), abs=1e-6)
    assert iv.text() == "2.0000 ± 1.0000, 95% Student-t [-0.4841, 4.4841], n=3"
    one = stats.interval([0.5, float("nan")])
    assert one.n == 1 and math.isnan(one.lo) and one.text() == "0.5000, n=1 (no interval)"
    same = stats.interval([0.3, 0.3, 0.3])
    assert (same.lo, same.hi, same.sd) == (0.3, 0.3, 0.0)


def test_bca_only_from_30_runs():
    assert stats.interval(np.arange(29.0)).method == "Student-t"
    x = np.arange(1.0, 31.0)  # 1..30: mean 15.5, sd 8.8034, Student-t half width 2.0452 * 8.8034 / sqrt(30) = 3.287
    iv = stats.interval(x)
    assert iv.method == "BCa bootstrap" and iv.n == 30 and "BCa bootstrap" in iv.text()
    assert iv.mean == 15.5 and 15.5 - 4 < iv.lo < 15.5 - 2.5 and 15.5 + 2.5 < iv.hi < 15.5 + 4
    assert stats.interval(x) == iv  # seeded


def test_paired_t_test_by_hand():
    r = stats.paired([0.6, 0.7, 0.8], [0.5, 0.5, 0.5])
    # d = (0.1, 0.2, 0.3): mean 0.2, sd 0.1, t = 0.2 / (0.1 / sqrt 3) = sqrt 12 with 2 df:
    # p = 1 - sqrt(12) / sqrt(14) = 1 - sqrt(6/7) = 0.0741799; d_z = 0.2 / 0.1 = 2
    assert r.p_value == pytest.approx(1 - math.sqrt(6 / 7)) and r.d_z == pytest.approx(2.0)
    assert r.test == "paired t-test" and r.n == 3 and r.diff.method == "Student-t"
    assert (r.diff.lo, r.diff.hi) == pytest.approx((0.2 - T975[2] * 0.1 / math.sqrt(3),
                                                    0.2 + T975[2] * 0.1 / math.sqrt(3)))
    assert stats.paired([1.0, float("nan")], [0.0, 1.0]).test == "none (fewer than 2 pairs)"
    const = stats.paired([1.0, 2.0], [0.5, 1.5])
    assert (const.p_value, const.d_z) == (0.0, math.inf)


def test_holm_and_benjamini_hochberg_by_hand():
    # Holm on (0.01, 0.04, 0.03): sorted 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> running max 0.06
    adj, rej = stats.adjust([0.01, 0.04, 0.03, float("nan")], "holm")
    assert adj[:3] == pytest.approx([0.03, 0.06, 0.06]) and math.isnan(adj[3])
    assert rej.tolist() == [True, False, False, False]
    # BH: sorted 0.01 x 3/1 = 0.03, 0.03 x 3/2 = 0.045, 0.04 x 3/3 = 0.04 -> running min from the top
    adj, rej = stats.adjust([0.01, 0.04, 0.03], "fdr_bh")
    assert adj == pytest.approx([0.03, 0.04, 0.04]) and rej.all()
    with pytest.raises(ValueError, match="unknown correction 'bonf'"):
        stats.adjust([0.1], "bonf")


# ---------------------------------------------------------------- a hand-made cross-validated study

# test av macro_f1 per (fold, seed); vavl - late = (0.04, 0.06, 0.06, 0.04)
TEST = {"vavl": {(0, 0): 0.60, (0, 1): 0.62, (1, 0): 0.70, (1, 1): 0.72},
        "late": {(0, 0): 0.56, (0, 1): 0.56, (1, 0): 0.64, (1, 1): 0.68}}
DEV = {"vavl": 0.70, "late": 0.65}
PROBE = {0: 0.40, 1: 0.52}  # the baseline's test score per fold (seed 0)


def _row(trial_id, value, **kw) -> dict:
    base = {"study": "t", "trial_id": trial_id, "stage": "search", "parent_trial_id": None, "fusion": "vavl",
            "train_missing_rate": 0.0, "seed": 0, "fold": 0, "status": "completed", "error": None, "split": "dev",
            "condition": "av", "test_missing_rate": None, "macro_f1": value, "epochs": 10, "wall_time_s": 10.0,
            "cpus": 1.0, "gpus": 0.0, "started_at": "2024-01-01T00:00:00"}
    return {**base, **kw}


def folds_frame(row_flag: bool = False) -> pd.DataFrame:
    rows = []
    for fusion, per_run in TEST.items():
        pid = f"S-{fusion}"
        rows.append(_row(pid, DEV[fusion], fusion=fusion, seed=9))
        for (fold, seed), v in per_run.items():
            kw = dict(fusion=fusion, parent_trial_id=pid, fold=fold, seed=seed)
            rows.append(_row(f"rerun-{fusion}-{fold}-{seed}", DEV[fusion], stage="rerun", **kw))
            rows.append(_row(f"final-{fusion}-{fold}-{seed}", v, stage="final", split="test",
                             **({"selected_on_test": True} if row_flag and fusion == "late" else {}), **kw))
    for fold, v in PROBE.items():
        for split in ("dev", "test"):
            rows.append(_row(f"probe-{fold}", v + (0.01 if split == "dev" else 0.0), stage="baseline", kind="baseline",
                             fusion="probe", fold=fold, split=split))
    return pd.DataFrame(rows)


def _paper(meta=None, correction="holm", frame=None) -> paper.Paper:
    return paper.build(folds_frame() if frame is None else frame, CTX, meta or {}, correction)


def test_runs_of_a_cross_validated_study_with_a_baseline():
    p = _paper()
    assert p.runs.strategies == ("vavl", "late", "probe [baseline]")  # dev order, then baselines
    assert p.runs.shown == ("final", "test") and p.runs.design("vavl") == "2 folds x 2 seeds"
    assert p.runs.design("probe [baseline]") == "2 folds x 1 seed"
    lb = p.leaderboard.stats.set_index("strategy")
    # vavl: mean 0.66, sd sqrt(0.0104 / 3) = 0.0588784, half width t(0.975, 3) * 0.0588784 / 2 = 0.0936876
    assert lb.loc["vavl", ["mean", "sd", "n"]].tolist() == pytest.approx([0.66, 0.0588784, 4], abs=1e-6)
    assert lb.loc["vavl", "ci_lo"] == pytest.approx(0.66 - T975[3] * 0.0588784 / 2, abs=1e-6)
    # the baseline: n = folds = 2, mean 0.46, sd 0.0848528, half width t(0.975, 1) * 0.0848528 / sqrt 2 = 0.762372
    assert lb.loc["probe [baseline]", ["mean", "n"]].tolist() == pytest.approx([0.46, 2])
    assert lb.loc["probe [baseline]", "ci_hi"] - 0.46 == pytest.approx(T975[1] * 0.06, abs=1e-6)
    assert set(lb["ci_method"]) == {"Student-t"}
    info = p.leaderboard.info
    assert info.loc["probe [baseline]", "selection"] == "none (baseline)"
    assert info.loc["vavl", "selection"] == "rerun/dev"
    assert info["dev objective (rerun)"].tolist()[:2] == pytest.approx([0.70, 0.65])


def test_paired_by_fold_and_seed_baseline_by_fold_and_holm_across_the_table():
    c = _paper().comparisons.table.set_index(["a", "b"])
    # late - vavl per (fold, seed) = -(0.04, 0.06, 0.06, 0.04): mean -0.05, sd 0.011547, t = -5 sqrt 3, 3 df
    lv = c.loc[("late", "vavl")]
    assert (lv["n"], lv["pairing"]) == (4, "fold, seed")
    assert lv["mean_diff"] == pytest.approx(-0.05) and lv["d_z"] == pytest.approx(-2.5 * math.sqrt(3))
    p_lv = t_two_sided_p(5 * math.sqrt(3), 3)  # 0.0032366
    assert lv["p_value"] == pytest.approx(p_lv)
    # the baseline against vavl's per-fold means (0.61, 0.71): probe - vavl = (-0.21, -0.19), t = -20, 1 df
    pv = c.loc[("probe [baseline]", "vavl")]
    assert (pv["n"], pv["pairing"]) == (2, "fold (mean over seeds)") and pv["mean_diff"] == pytest.approx(-0.2)
    p_pv = t_two_sided_p(20, 1)  # 0.0318166
    # late's fold means (0.56, 0.66) - probe = (0.16, 0.14): t = 0.15 / (0.0141421 / sqrt 2) = 15, 1 df
    p_lp = t_two_sided_p(15, 1)  # 0.0423853
    assert pv["p_value"] == pytest.approx(p_pv)
    assert c.loc[("late", "probe [baseline]"), "p_value"] == pytest.approx(p_lp)
    # Holm over the 3 tests: 3 p_lv = 0.00971, 2 p_pv = 0.0636, then max(0.0636, p_lp) = 0.0636
    assert lv["p_adjusted"] == pytest.approx(3 * p_lv) and pv["p_adjusted"] == pytest.approx(2 * p_pv)
    assert c.loc[("late", "probe [baseline]"), "p_adjusted"] == pytest.approx(2 * p_pv)
    assert c["significant"].to_dict() == {("late", "probe [baseline]"): False, ("late", "vavl"): True,
                                          ("probe [baseline]", "vavl"): False}  # raw p < 0.05 all three; Holm: one
    # Benjamini-Hochberg: 3 p_lv, min(3/2 p_pv, p_lp) = p_lp, p_lp: all three survive
    bh = _paper(correction="fdr_bh").comparisons
    assert bh.name == "Benjamini-Hochberg" and bh.table["significant"].all()
    assert bh.table.set_index(["a", "b"]).loc[("late", "vavl"), "p_adjusted"] == pytest.approx(3 * p_lv)


def test_marks_bold_best_and_significantly_worse():
    st = _paper().leaderboard.stats.set_index("strategy")
    assert st["best"].to_dict() == {"vavl": True, "late": False, "probe [baseline]": False}
    # late - vavl survives Holm; the baseline's p (0.0636 after Holm) does not
    assert st["worse_than_best"].to_dict() == {"vavl": False, "late": True, "probe [baseline]": False}
    (c,) = paper.conclusions(_paper())
    assert c.best == "vavl" and [(v.other, v.significant) for v in c.versus] == [("late", True),
                                                                                 ("probe [baseline]", False)]
    assert c.versus[0].diff == pytest.approx(0.05) and c.versus[0].lo > 0  # vavl - late, sign flipped


def test_folds_table_per_fold_over_seeds():
    f = _paper().folds
    assert f.columns == ("av macro_f1 · fold 0", "av macro_f1 · fold 1", "av macro_f1 · all folds")
    st = f.stats.set_index(["strategy", "column"])
    assert st.loc[("vavl", "av macro_f1 · fold 1"), ["mean", "n"]].tolist() == pytest.approx([0.71, 2])
    assert st.loc[("probe [baseline]", "av macro_f1 · fold 0"), "n"] == 1  # one run: no interval
    assert st.loc[("late", "av macro_f1 · all folds"), "mean"] == pytest.approx(0.61)


def test_old_layout_without_fold_and_kind_is_one_partition():
    frame = folds_frame()
    frame = frame[frame["stage"] != "baseline"].drop(columns=["fold", "kind"])
    frame = frame[~frame["trial_id"].str.endswith("-1-0") & ~frame["trial_id"].str.endswith("-1-1")]
    p = _paper(frame=frame)
    assert p.runs.strategies == ("vavl", "late") and p.runs.design("vavl") == "2 seeds"
    assert p.comparisons.table["pairing"].tolist() == ["fold, seed"]


def test_selected_on_test_is_labelled(tmp_path):
    p = _paper(meta={"selected_on_test": True})
    assert set(p.leaderboard.info["selection"]) == {"test (selected_on_test)"}
    assert "SELECTED ON TEST" in p.leaderboard.caption
    from reports import tabfmt
    assert r"vavl$^{\dagger}$" in tabfmt.score_latex(p.leaderboard)
    row = paper.build(folds_frame(row_flag=True), CTX, {}, "holm").leaderboard.info["selection"]
    assert row.to_dict() == {"vavl": "rerun/dev", "late": "test (selected_on_test)",
                             "probe [baseline]": "none (baseline)"}


# ---------------------------------------------------------------- export

def _write(d: Path, frame=None, meta=None) -> Path:
    d.mkdir(parents=True)
    (folds_frame() if frame is None else frame).to_parquet(d / "results.parquet")
    m = {"name": "cv", "status": "finished", "task": "categorical", "primary_metric": "macro_f1",
         "objectives": [{"metric": "macro_f1", "condition": "av", "mode": "max"}], "classes": ["a", "b"],
         **(meta or {})}
    (d / "study.json").write_text(json.dumps(m))
    return d


def _parser():
    parser = argparse.ArgumentParser(prog="avstudy")
    cli.add_subparser(parser.add_subparsers(dest="command"))
    return lambda *a: cli.run(parser.parse_args(["report", *map(str, a)]))


def test_tables_export_csv_latex_and_never_overwrites(tmp_path, capsys):
    study, out = _write(tmp_path / "s"), tmp_path / "tables"
    run = _parser()
    assert run(study, "--tables", out) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(export.FILES)
    assert capsys.readouterr().out.split() == [str(study / "report.html"), str(out)]
    lb = pd.read_csv(out / "leaderboard.csv").set_index("strategy")
    assert lb.loc["vavl", ["mean", "n", "ci_method", "correction"]].tolist() == [pytest.approx(0.66), 4, "Student-t",
                                                                                 "Holm"]
    assert lb.loc["late", "worse_than_best"] and lb.loc["probe [baseline]", "kind"] == "baseline"
    tex = (out / "leaderboard.tex").read_text()
    for part in (r"\toprule", r"\midrule", r"\bottomrule", r"$\mathbf{0.660 \pm 0.059}$", r"$0.610 \pm 0.060^{*}$",
                 "Holm-corrected across the 3 comparisons", r"probe [baseline] & -- & $0.460 \pm 0.085$",
                 r"av macro\_f1"):
        assert part in tex, part
    paired = pd.read_csv(out / "paired.csv")
    assert paired["significant"].tolist() == [False, True, False] and set(paired["correction"]) == {"Holm"}
    assert r"\textbf{0.010}" in (out / "paired.tex").read_text()  # late - vavl, Holm p = 0.00971
    folds = (out / "folds.tex").read_text()
    assert r"\multicolumn{3}{c}{av macro\_f1}" in folds and r"\cmidrule(lr){2-4}" in folds
    # a second export into the same directory is refused, and nothing is written (the report neither)
    (out / "notes.txt").write_text("mine")
    (study / "report.html").unlink()
    before = (out / "paired.csv").read_text()
    assert run(study, "--tables", out) == 1
    err = capsys.readouterr().err
    assert f"{out}: already holds leaderboard.csv, leaderboard.tex" in err and "--overwrite" in err
    assert not (study / "report.html").exists()
    assert run(study, "--tables", out, "--overwrite", "--correction", "fdr_bh") == 0
    assert (out / "paired.csv").read_text() != before and (out / "notes.txt").read_text() == "mine"
    assert set(pd.read_csv(out / "paired.csv")["correction"]) == {"Benjamini-Hochberg"}
    assert run("--index", tmp_path, "--tables", out) == 2 and "--tables goes with STUDY_DIR" in capsys.readouterr().err
    assert run(study, "--overwrite") == 2


def test_tables_of_a_study_without_scores_is_an_error(tmp_path, capsys):
    d = tmp_path / "empty"
    d.mkdir()
    (d / "study.json").write_text(json.dumps({"name": "empty", "status": "running"}))
    assert _parser()(d, "--tables", tmp_path / "t") == 1
    assert "nothing to tabulate yet" in capsys.readouterr().err and not (tmp_path / "t").exists()


def test_latex_escapes_labels():
    from reports import tabfmt

    assert tabfmt.latex_escape("a_b & 50% #1 {x} ~ ^") == r"a\_b \& 50\% \#1 \{x\} \textasciitilde{} \textasciicircum{}"


# ---------------------------------------------------------------- the page

def _sections(text: str) -> list[str]:
    return re.findall(r"<section id='([a-z-]+)'>", text)


def test_report_opens_with_the_summary(tmp_path):
    text = render_report(load_study(locate(_write(tmp_path / "s"))), with_plotlyjs=False)
    assert _sections(text)[:3] == ["summary", "sanity", "study"]
    summary = re.search(r"<section id='summary'>(.*?)</section>", text, re.S).group(1)
    summary = html_lib.unescape(re.sub(r"</?b>", "", summary))
    # vavl: 0.66 ± 0.0589, half width t(0.975, 3) * 0.0588784 / 2 = 0.0937
    assert "test av macro_f1: highest mean vavl, 0.6600 ± 0.0589, 95% Student-t [0.5663, 0.7537], n=4." in summary
    assert "Ahead of, surviving the correction: late by +0.0500" in summary
    assert "Not separated from: probe [baseline] by +0.2000" in summary and "p_Holm=0.0636" in summary
    assert "Holm-corrected across the 3 comparisons" in summary and "SELECTED ON TEST" not in summary
    flagged = render_report(load_study(locate(_write(tmp_path / "f", meta={"selected_on_test": True}))),
                            with_plotlyjs=False)
    assert "<p class='alarm'>SELECTED ON TEST: vavl, late, probe [baseline]" in flagged


def test_every_figure_saves_as_svg(tmp_path):
    text = write_report(write_study(tmp_path / "s", FakeStudy(n_trials=12))).read_text()
    configs = [json.loads(c) for c in re.findall(r"f\.layout,(\{.*?\})\);\}\)\(\);</script>", text)]
    assert len(configs) >= 8 and all(c["toImageButtonOptions"]["format"] == "svg" for c in configs)
    names = [c["toImageButtonOptions"]["filename"] for c in configs]
    assert len(set(names)) == len(names) and "optimisation-history-x-early-stopped" in names


def test_fake_study_with_folds_and_baselines_renders(tmp_path):
    cfg = FakeStudy(n_trials=15, folds=3, seeds=(0, 1), baselines=True, families=("drop_audio",))
    study = write_study(tmp_path / "s", cfg)
    res = pd.read_parquet(study / "results.parquet")
    assert set(res["fold"]) == {0, 1, 2} and set(res["kind"]) == {"model", "baseline"}
    base = res[res["kind"] == "baseline"]
    assert set(base["stage"]) == {"baseline"} and set(base["split"]) == {"dev", "test"} and set(base["seed"]) == {0}
    text = write_report(study).read_text()
    assert "could not be built" not in text
    assert "probe [baseline]" in re.search(r"<section id='paired'>(.*?)</section>", text, re.S).group(1)


# ---------------------------------------------------------------- --compare

def test_compare_two_studies(tmp_path, capsys):
    a = write_study(tmp_path / "a", FakeStudy(name="A", n_trials=15, seed=1, folds=2, baselines=True))
    b = write_study(tmp_path / "b", FakeStudy(name="B", n_trials=15, seed=2, fusions=("vavl", "late", "gated")))
    out = tmp_path / "cmp.html"
    assert _parser()("--compare", a, b, "--out", out) == 0
    text = html_lib.unescape(out.read_text())
    assert "avstudy comparison: A vs B" in text and "3 shared strategies" in text
    assert _sections(out.read_text()) == ["studies", "shared", "differences"]
    assert "Welch t-test" in text and "Holm" in text
    from reports import compare as cmp
    c = cmp.gather([load_study(locate(a)), load_study(locate(b))])
    assert set(c.strategies) == {"vavl", "late", "gated"}  # the baseline and the others are A's only
    assert [col.label for col in c.columns][:2] == ["av macro_f1", "audio_only macro_f1"]
    d = c.diffs.set_index(["strategy", "column"]).loc[("vavl", "av macro_f1")]
    sa = c.stats.set_index(["study", "strategy", "column"])
    assert d["diff"] == pytest.approx(sa.loc[("B", "vavl", "av macro_f1"), "mean"]
                                      - sa.loc[("A", "vavl", "av macro_f1"), "mean"])


def test_compare_refuses_different_tasks(tmp_path, capsys):
    a = write_study(tmp_path / "a", FakeStudy(name="A", n_trials=10))
    b = write_study(tmp_path / "b", FakeStudy(name="B", n_trials=10, task="dimensional"))
    run = _parser()
    assert run("--compare", a, b) == 1
    err = capsys.readouterr().err
    assert f"cannot compare studies of different tasks ({a}: task categorical; {b}: task dimensional)" in err
    assert run("--compare", a) == 1 and "at least two studies" in capsys.readouterr().err
    assert run("--compare", a, tmp_path / "nope") == 1 and "no such study directory" in capsys.readouterr().err
    assert run(a, "--compare", b) == 2
    with pytest.raises(StudyError, match="different tasks"):
        from reports import compare as cmp
        cmp.gather([load_study(locate(a)), load_study(locate(b))])


def test_root_readme_section_table_is_generated():
    from reports import readme

    text = readme.ROOT_README.read_text()
    assert readme.render_root(text) == text, "run: .venv/bin/python -m reports.readme"
    assert "avstudy report runs/cremad --tables paper/tables" in text


def test_csv_round_trips_every_cell():
    p = _paper()
    from reports import tabfmt
    df = pd.read_csv(io.StringIO(tabfmt.score_csv(p.conditions, "Holm")))
    assert len(df) == len(p.runs.strategies) * len(p.conditions.columns)
    assert {"strategy", "kind", "selection", "column", "mean", "sd", "n", "ci_lo", "ci_hi", "ci_method", "best",
            "worse_than_best", "level", "correction"} <= set(df.columns)
