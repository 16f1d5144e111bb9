"""The sections of a study report: each gathers data (gather/tables), draws it (figures) and says
how to read it. A section whose inputs are missing says so instead of failing."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from reports import figures, gather, tables
from reports.html import FigureCounter, Section, esc, figure, fmt, kv_table, table
from reports.importance import importance_data
from reports.load import Context, StudyFiles

LEADERBOARD_TOP = 200
PARALLEL_TOP = 300
SEED_CONDITIONS = ("av", "audio_only", "video_only", "robustness")


@dataclass
class Report:
    files: StudyFiles
    ctx: Context
    figs: FigureCounter

    @property
    def results(self) -> pd.DataFrame | None:
        r = self.files.results
        return r if r is not None and len(r) else None

    def fig(self, f) -> str:
        return figure(f, self.figs.next_id())


class Unavailable(Exception):
    """Raised by a section whose inputs do not exist (yet); the message is shown to the reader."""


def _need_results(rep: Report) -> pd.DataFrame:
    if rep.results is None:
        raise Unavailable("No results yet: results.parquet is missing or empty (a study that just started "
                          "has none; re-run the report later).")
    return rep.results


def _evidence(rep: Report) -> tuple[str, str]:
    ev = tables.evidence(_need_results(rep))
    if ev is None:
        raise Unavailable("No trial has reported scores yet.")
    return ev


def _note(text: str) -> str:
    return f"<p class='note'>{esc(text)}</p>"


# ---------------------------------------------------------------- study, software, compute

def overview(rep: Report) -> Section:
    m, c = rep.files.meta, rep.ctx
    items = {"name": c.name, "status": c.status, "task": c.task, "primary metric": c.metric,
             "objective": f"{'maximise' if c.maximize else 'minimise'} dev {c.metric} on condition {c.condition}",
             "objectives (as recorded)": json.dumps(m.get("objectives")) if m.get("objectives") else "",
             "started at": m.get("started_at") or "", "finished at": m.get("finished_at") or "",
             "location": rep.files.location.uri}
    problems = "".join(f"<li class='problem'>{esc(p)}</li>" for p in rep.files.problems)
    spec = rep.files.spec_text
    if spec is None and m.get("spec"):
        spec = json.dumps(m["spec"], indent=2, default=str)
    body = kv_table(items) + (f"<ul>{problems}</ul>" if problems else "")
    body += f"<details open><summary>spec as run</summary><pre>{esc(spec)}</pre></details>" if spec else _note("No spec recorded.")
    return Section("study", "Study", "What was run and how trials are ranked; files the report could not read "
                   "are listed in red (normal while a study is running).", body)


def software(rep: Report) -> Section:
    m = rep.files.meta
    body = kv_table({"git commit": m.get("git_sha") or "unknown"})
    versions = m.get("versions") or {}
    body += table(pd.DataFrame({"package": list(versions), "version": [str(v) for v in versions.values()]}), sortable=False) \
        if versions else _note("No versions recorded.")
    return Section("software", "Software", "Versions and commit the study ran with: rerun with the same ones to "
                   "reproduce its numbers.", body)


def compute(rep: Report) -> Section:
    s = tables.compute_summary(_need_results(rep), rep.files.meta, now=pd.Timestamp.now(tz="UTC"))
    elapsed = "study elapsed so far (h)" if rep.ctx.status == "running" else "study elapsed (h)"
    items = {"trials": s["n_trials"], elapsed: fmt(s["elapsed_hours"], 2),
             "sum of trial wall time (h)": fmt(s["trial_hours"], 2), "CPU-hours": fmt(s["cpu_hours"], 2),
             "GPU-hours": fmt(s["gpu_hours"], 2),
             "saved by early stopping (h, estimate)": fmt(s["early_stop_saved_hours"], 2)}
    counts = s["counts"].reset_index().rename(columns={"stage": "stage \\ status"})
    body = kv_table(items) + "<h3>Trials by stage and status</h3>" + table(counts, sortable=False)
    return Section("compute", "Compute used", "CPU/GPU-hours are wall time x reserved CPUs/GPUs per trial; the "
                   "early-stopping saving assumes each stopped trial would have run as many epochs as the longest "
                   "completed trial of its stage, at its own mean epoch time.", body)


# ---------------------------------------------------------------- leaderboard

def leaderboard(rep: Report) -> Section:
    res = _need_results(rep)
    parts = []
    for stage, split in (("search", "dev"), ("rerun", "dev"), ("final", "test")):
        if not (res["stage"] == stage).any():
            continue
        tab, total = tables.leaderboard(res, rep.ctx, stage, split, LEADERBOARD_TOP)
        note = f"showing the best {len(tab)} of {total} trials" if total > len(tab) else f"{total} trials"
        parts.append(f"<h3>{esc(stage)} stage ({esc(split)} {esc(rep.ctx.metric)} per condition; {esc(note)})</h3>" + table(tab))
    if not parts:
        raise Unavailable("No scored trials yet.")
    return Section("leaderboard", "Leaderboard", f"Trials ranked by the objective ({rep.ctx.metric} on "
                   f"{rep.ctx.condition}); click a column header to sort. Search and re-run stages show dev "
                   "scores, the final stage test scores.", "".join(parts))


# ---------------------------------------------------------------- robustness

def _evidence_note(stage: str, split: str) -> str:
    return (f"Data: {stage} stage, {split} split; per cell the configuration with the best objective "
            + ("(one trial per configuration)." if stage == "search" else "averaged over its seeds."))


def heatmap(rep: Report) -> Section:
    _evidence(rep)
    stage, split = tables.cell_evidence(rep.results)
    data = gather.heatmap_data(gather.representative_rows(rep.results, rep.ctx, stage, split), rep.ctx.metric)
    if not data:
        raise Unavailable("No scored rows for this stage.")
    return Section("heatmap", "Robustness heatmap", "Each panel is one fusion strategy; a row is the share of "
                   "unpaired training data (r), a column the test condition. Brighter = better; compare how fast "
                   "each row fades towards heavily missing test conditions.",
                   _note(_evidence_note(stage, split)) + rep.fig(figures.heatmaps(data, rep.ctx.metric)))


def curves(rep: Report) -> Section:
    stage, split = _evidence(rep)
    df = gather.robustness_curves(gather.curve_rows(rep.results, rep.ctx, stage, split), rep.ctx.metric)
    if df.empty:
        raise Unavailable("No missing-rate conditions (miss_*) scored yet.")
    band = "its 5 best trials of that cell" if stage == "search" else "seeds of that configuration"
    return Section("curves", "Robustness curves", "Score as a growing share of test samples loses one modality; "
                   "a flatter curve is a more robust strategy. Bands are 95% t-intervals (drawn when a strategy has at least 3 runs).",
                   _note(f"{stage} stage, {split} split; each strategy's best cell, band across {band}.")
                   + rep.fig(figures.robustness_curves(df, rep.ctx.metric)))


def pareto(rep: Report) -> Section:
    df = gather.pareto_data(_need_results(rep), rep.ctx)
    if df.empty:
        raise Unavailable("Needs av, audio_only and video_only scores of search trials.")
    return Section("pareto", "Pareto front: full vs missing modality", "Upper right is best: good with both "
                   "modalities and when either is missing. Points on the dotted front are not beaten on both "
                   "axes by any other trial; larger, lighter markers took longer.", rep.fig(figures.pareto(df, rep.ctx.metric)))


# ---------------------------------------------------------------- search diagnostics

def importance(rep: Report) -> Section:
    tab, n = importance_data(_need_results(rep), rep.ctx)
    if tab.empty:
        raise Unavailable("Needs at least 8 scored search trials with varying parameters.")
    return Section("importance", "Hyperparameter importance", "Share of the variance of the score explained by "
                   "each parameter (fANOVA on Optuna trials rebuilt from the results); parameters absent from "
                   "some trials (conditional ones) are left out.",
                   _note(f"Search stage, dev split, {n} trials (seeded sample when more).")
                   + rep.fig(figures.importance(tab, tab.columns[0])))


def parallel(rep: Report) -> Section:
    df = gather.parallel_data(_need_results(rep), rep.ctx, PARALLEL_TOP)
    if len(df) < 2 or df.shape[1] < 2:
        raise Unavailable("Needs at least 2 scored search trials with varying parameters.")
    return Section("parallel", "Parallel coordinates", "Each line is a trial, coloured by its objective; drag on "
                   "an axis to keep only a range and see which settings the best trials share.",
                   rep.fig(figures.parallel(df, f"{rep.ctx.condition} {rep.ctx.metric}")))


def history(rep: Report) -> Section:
    df = gather.history_data(_need_results(rep), rep.ctx)
    if df.empty:
        raise Unavailable("No scored search trials yet.")
    return Section("history", "Optimisation history", "Objective of each search trial in start order, and the best "
                   "so far: a line that stopped rising means the search has converged.",
                   rep.fig(figures.history(df, f"dev {rep.ctx.condition} {rep.ctx.metric}", rep.ctx.maximize)))


def learning(rep: Report) -> Section:
    res = _need_results(rep)
    if rep.files.curves is None or rep.files.curves.empty:
        raise Unavailable("curves.parquet is missing or empty.")
    df, col = gather.learning_curve_data(rep.files.curves, res, rep.ctx)
    if df.empty:
        raise Unavailable("No learning curves for scored search trials.")
    return Section("learning", "Learning curves", "Dev score per epoch of the best completed trials and a spread "
                   "of early-stopped ones; a stopped curve that was still rising marks a scheduler that may be "
                   "too aggressive.", rep.fig(figures.learning_curves(df, col)))


# ---------------------------------------------------------------- per class

def confusion(rep: Report) -> Section | None:
    if rep.ctx.task == "dimensional":
        return None  # no classes: the per-dimension CCC section covers dimensional tasks
    stage, split = _evidence(rep)
    if not rep.ctx.classes:
        raise Unavailable("The class names are unknown (no classes in study.json and no f1__* columns).")
    data = gather.confusion_data(gather.curve_rows(rep.results, rep.ctx, stage, split, k=1), len(rep.ctx.classes))
    if not data:
        raise Unavailable("No confusion matrices recorded.")
    return Section("confusion", "Confusion matrices", "Rows are true classes, normalised to 1: the diagonal is each "
                   "class's recall, off-diagonal cells show which emotions are mistaken for which.",
                   _note(f"{stage} stage, {split} split; best configuration of each strategy.")
                   + rep.fig(figures.confusions(data, rep.ctx.classes)))


def per_class(rep: Report) -> Section:
    stage, split = _evidence(rep)
    df = gather.per_class_data(gather.curve_rows(rep.results, rep.ctx, stage, split, k=1), rep.ctx)
    if df.empty:
        raise Unavailable("No per-class F1 or per-dimension CCC recorded.")
    label = "CCC" if rep.ctx.task == "dimensional" else "F1"
    title = "Per-dimension CCC" if rep.ctx.task == "dimensional" else "Per-class F1"
    return Section("perclass", title, "Which classes (or dimensions) each strategy gets right with both modalities "
                   "and with only audio or only video: some emotions are carried by the voice, others by the face.",
                   _note(f"{stage} stage, {split} split; best configuration of each strategy.")
                   + rep.fig(figures.per_class(df, label)))


# ---------------------------------------------------------------- seeds and significance

def _seed_stage(res: pd.DataFrame) -> tuple[str, str]:
    for stage, split in (("rerun", "dev"), ("final", "test")):
        if ((res["stage"] == stage) & (res["split"] == split)).any():
            return stage, split
    raise Unavailable("No re-run or final stage yet (seed variance needs repeated runs).")


def seeds(rep: Report) -> Section:
    stage, split = _seed_stage(_need_results(rep))
    df = gather.seed_variance(rep.results, rep.ctx, stage, split, SEED_CONDITIONS)
    if df.empty:
        raise Unavailable("No repeated runs with scores.")
    tab = df.drop(columns=["values"]).rename(columns={"lo": "ci95_lo", "hi": "ci95_hi"})
    return Section("seeds", "Seed variance", "How much a configuration's score moves between seeds: overlapping "
                   "intervals mean the ranking between those configurations is not settled.",
                   _note(f"{stage} stage, {split} split.") + rep.fig(figures.seed_variance(df, rep.ctx.metric, rep.ctx.condition))
                   + f"<details><summary>table</summary>{table(tab)}</details>")


def paired(rep: Report) -> Section:
    res = _need_results(rep)
    stage, split = ("final", "test") if ((res["stage"] == "final") & (res["split"] == "test")).any() else _seed_stage(res)
    conds = list(dict.fromkeys([rep.ctx.condition, "robustness"]))
    df = gather.paired_comparison(res, rep.ctx, stage, split, conds)
    if df.empty:
        raise Unavailable("Needs at least two strategies with runs on the same seeds.")
    return Section("paired", "Paired comparison of strategies", "Best configuration of strategy a minus that of b, "
                   "paired by seed: a CI excluding 0 and a small p-value mean the difference is unlikely to be seed "
                   "noise (with few seeds, p cannot be small).",
                   _note(f"{stage} stage, {split} split, {rep.ctx.metric}.") + table(df))


def failures(rep: Report) -> Section:
    df = tables.failed_trials(_need_results(rep))
    if df.empty:
        body = _note("No failed trials.")
    else:
        df = df.assign(error=df["error"].fillna("").astype(str).str.slice(0, 2000))
        body = table(df, cls="wrap")
    return Section("failed", "Failed trials", "Trials that raised an error, with the error they reported; "
                   "they are excluded from every other section.", body)


SECTIONS = (overview, software, compute, leaderboard, heatmap, curves, pareto, importance, parallel, history,
            learning, confusion, per_class, seeds, paired, failures)
TITLES = {"heatmap": "Robustness heatmap", "curves": "Robustness curves", "pareto": "Pareto front",
          "importance": "Hyperparameter importance", "parallel": "Parallel coordinates",
          "history": "Optimisation history", "learning": "Learning curves", "confusion": "Confusion matrices",
          "per_class": "Per-class scores", "seeds": "Seed variance", "paired": "Paired comparison",
          "leaderboard": "Leaderboard", "compute": "Compute used", "failures": "Failed trials",
          "software": "Software", "overview": "Study"}


def build_section(fn, rep: Report) -> Section | None:
    """Runs one section (None: not relevant to this study); missing inputs or an unexpected error
    become a note in that section."""
    try:
        return fn(rep)
    except Unavailable as e:
        return Section(fn.__name__, TITLES[fn.__name__], "", _note(str(e)))
    except Exception as e:  # keep the rest of the report usable; the error is shown, not hidden
        return Section(fn.__name__, TITLES[fn.__name__], "",
                       f"<p class='problem'>This section could not be built: {esc(type(e).__name__)}: {esc(e)}</p>")
