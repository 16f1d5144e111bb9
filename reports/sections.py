"""The sections of a study report, as ONE list (`SECTIONS`): each entry holds the anchor, the
title, the how-to-read text and the function that builds the section's body. The report page, its
navigation and reports/README_SECTIONS.md (reports/readme.py) are all generated from that list.

A body function gathers data (gather/tables), draws it (figures) and states the split it selected
on and the split it shows; one whose inputs are missing raises Unavailable, and the reader sees
why. Returning None means the section does not apply to this study (it is left out)."""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import pandas as pd

from reports import baselines, figures, gather, paper, sanity, tabfmt, tables
from reports.html import FigureCounter, Section, esc, figure, fmt, kv_table, table
from reports.importance import importance_data
from reports.load import Context, StudyFiles
from study.vocab import NAMED_CONDITIONS

LEADERBOARD_TOP = 200
PARALLEL_TOP = 300
NAMED = NAMED_CONDITIONS


@dataclass
class Report:
    files: StudyFiles
    ctx: Context
    figs: FigureCounter
    correction: str = "holm"  # of the paired table (stats.CORRECTIONS)

    @cached_property
    def paper(self) -> paper.Paper | None:
        """The tables for papers (summary, per condition, per fold, paired); None before dev scores."""
        # every row: the paper's tables hold the baselines as rows beside the strategies
        return None if self.results is None else paper.build(self.files.results, self.ctx, self.files.meta,
                                                              self.correction)

    @property
    def results(self) -> pd.DataFrame | None:
        """The searched strategies' rows (baseline rows: `baselines`)."""
        r = baselines.models(self.files.results)
        return r if r is not None and len(r) else None

    @property
    def baselines(self) -> pd.DataFrame:
        return baselines.baselines(self.files.results)

    @cached_property
    def sanity(self) -> sanity.Sanity:
        return sanity.check(self.files.results, self.files.meta)

    def fig(self, f) -> str:
        return figure(f, self.figs.next_id())


class Unavailable(Exception):
    """Raised by a section whose inputs do not exist (yet); the message is shown to the reader."""


def _need_results(rep: Report) -> pd.DataFrame:
    if "results.parquet" in rep.files.unreadable:
        raise Unavailable("No results: " + "; ".join(p for p in rep.files.problems
                                                     if p.startswith("results.parquet")) + ".")
    if rep.results is None:
        raise Unavailable("No results yet: results.parquet is missing or empty (a study that just started "
                          "has none; re-run the report later).")
    return rep.results


def _note(text: str) -> str:
    return f"<p class='note'>{esc(text)}</p>"


def _split(text: str) -> str:
    """The statement of the split a section selected on and the split it shows."""
    return f"<p class='split'>{esc(text)}</p>"


def _no_selection(stage: str, split: str, what: str) -> str:
    return _split(f"Selected on: nothing ({what}). Shown: {stage} stage, {split} split.")


def _pick(rep: Report, by=("fusion",), k: int = 1) -> gather.Pick:
    p = gather.pick(_need_results(rep), rep.ctx, by=by, k=k)
    if p is None:
        raise Unavailable(gather.no_pick_reason(rep.results, rep.ctx))
    return p


def _summary_conditions(res: pd.DataFrame) -> list[str]:
    conds = tables.summary_conditions(res["condition"].dropna().unique())
    return [c for c in conds if c in NAMED or tables.is_area(c)]


# ---------------------------------------------------------------- the conclusion first

def _paper(rep: Report) -> paper.Paper:
    _need_results(rep)
    if rep.paper is None:  # pick found nothing to select: say why (no dev rows, or all NaN)
        raise Unavailable(gather.no_pick_reason(rep.results, rep.ctx))
    return rep.paper


def _versus_text(v: paper.Versus, correction: str) -> str:
    if v.n < 2:
        return f"{v.other} (n={v.n}: no test)"
    return (f"{v.other} by {v.diff:+.4f} (95% Student-t [{v.lo:+.4f}, {v.hi:+.4f}], d_z={v.d_z:.2f}, "
            f"p_{correction}={v.p_adjusted:.3g}, n={v.n})")


def conclusion_html(c: paper.Conclusion, split: str, correction: str) -> str:
    ahead = [_versus_text(v, correction) for v in c.versus if v.significant]
    tied = [_versus_text(v, correction) for v in c.versus if not v.significant]
    text = f"<b>{esc(split)} {esc(c.column.label)}</b>: highest mean <b>{esc(c.best)}</b>, {esc(c.interval.text())}."
    if ahead:
        text += f" Ahead of, surviving the correction: {esc('; '.join(ahead))}."
    if tied:
        text += f" Not separated from: {esc('; '.join(tied))}."
    return f"<li>{text}</li>"


def summary_body(rep: Report) -> str:
    p = _paper(rep)
    runs, comps = p.runs, p.comparisons
    flagged = [s for s in runs.strategies if runs.selected_on_test(s)]
    alarm = (f"<p class='alarm'>SELECTED ON TEST: {esc(', '.join(flagged))} (study.json or the rows flag "
             "selected_on_test, e.g. the Foal-Net IEMOCAP protocol): their test scores are optimistic, not a "
             "held-out result.</p>") if flagged else ""
    items = "".join(conclusion_html(c, runs.shown[1], comps.name) for c in paper.conclusions(p))
    lb = p.leaderboard
    return (_split(runs.note) + alarm + f"<ul class='conclusion'>{items}</ul>"
            + _note(f"Differences: {comps.text()}; effect size Cohen's d_z; pairs by (fold, seed), a baseline "
                    "by fold; the interval of a difference is its own 95% Student-t interval, not adjusted for "
                    "multiplicity (the corrected p decides). " + paper.interval_caption(runs))
            + f"<h3>{esc(lb.title)}</h3>" + tabfmt.score_table_html(lb)
            + _note("Bold: best mean of the column; *: significantly worse than it. Every table here is exported "
                    "as CSV and LaTeX by `avstudy report STUDY --tables DIR`.")
            + f"<details><summary>{esc(p.conditions.title)} (A, V, AV and every family's area)</summary>"
              f"{tabfmt.score_table_html(p.conditions)}</details>"
            + f"<details><summary>{esc(p.folds.title)}</summary>{tabfmt.score_table_html(p.folds)}</details>")


# ---------------------------------------------------------------- sanity, study, software, compute

def sanity_body(rep: Report) -> str:
    res = _need_results(rep)
    s = rep.sanity
    lines = sanity.warnings(s)
    body = "".join(f"<p class='{lvl}'>{esc(text)}</p>" for lvl, text in lines)
    if not s.has_flags:
        body += _note("These results carry no sanity flags (a study written before the `flag` column existed): "
                      "degenerate predictions cannot be detected here.")
    elif s.flagged.empty:
        body += "<p class='ok'>No degenerate predictions flagged.</p>"
    else:
        counts = s.flagged.groupby(["stage", "condition", "flag"]).size().rename("rows").reset_index()
        order = {c: i for i, c in enumerate(tables.condition_order(counts["condition"]))}
        counts = counts.sort_values(["stage", "condition"], key=lambda col: col.map(
            order if col.name == "condition" else {st: i for i, st in enumerate(tables.STAGES[::-1])}))
        body += _flag_meanings(s)
        body += "<h3>Flagged rows by stage, condition and flag</h3>" + table(counts)
        body += f"<details><summary>every flagged row ({len(s.flagged)})</summary>{table(s.flagged)}</details>"
    n = res["trial_id"].nunique()
    return _split(f"Selected on: nothing (every trial, {n}). Shown: every stage and split.") + body


def _flag_meanings(s: sanity.Sanity) -> str:
    """What each flag present means, and what it means for this study's results."""
    items = []
    for flag in sorted(set(s.flagged["flag"].astype(str))):
        stages = sorted(set(s.flagged.loc[s.flagged["flag"] == flag, "stage"].astype(str)))
        here = ("search stage only: trials the search discarded or stopped; not in the reported results"
                if stages == ["search"] else f"in the {', '.join(stages)} stage(s): scores of those rows are "
                "not results")
        items.append(f"<li><b>{esc(flag)}</b>: {esc(sanity.FLAG_MEANING.get(flag, flag))} ({esc(here)})</li>")
    return "<h3>What each flag means here</h3><ul>" + "".join(items) + "</ul>"


def overview_body(rep: Report) -> str:
    m, c = rep.files.meta, rep.ctx
    items = {"name": c.name, "status": c.status, "task": c.task, "primary metric": c.metric,
             "objective": f"{'maximise' if c.maximize else 'minimise'} dev {c.metric} on condition {c.condition}",
             "objectives (as recorded)": "; ".join(f"{'maximise' if mx else 'minimise'} {cond} {met}"
                                                   for cond, met, mx in c.objectives),
             **_selection_items(rep), **_data_items(rep),
             "started at": m.get("started_at") or "", "finished at": m.get("finished_at") or "",
             "location": rep.files.location.uri}
    problems = "".join(f"<li class='problem'>{esc(p)}</li>" for p in rep.files.problems)
    spec = rep.files.spec_text
    if spec is None and m.get("spec"):
        spec = json.dumps(m["spec"], indent=2, default=str)
    body = kv_table(items) + (f"<ul>{problems}</ul>" if problems else "") + _searched_block(m)
    if spec:
        return body + f"<details open><summary>spec as run</summary><pre>{esc(spec)}</pre></details>"
    return body + _note("No spec recorded.")


def _searched_block(meta: dict) -> str:
    """study.json `searched`: each parameter the study searched, its range and where it came from."""
    params = meta.get("searched")
    if not isinstance(params, dict) or not params:
        return ""
    rows = [{"parameter": p, "range or choices": d.get("text", ""), "from": d.get("space", "")}
            for p, d in params.items() if isinstance(d, dict)]
    return ("<details open><summary>searched parameters (study.json)</summary>"
            + table(pd.DataFrame(rows), sortable=False) + "</details>")


def _selection_items(rep: Report) -> dict:
    c, m = rep.ctx, rep.files.meta
    res = rep.results
    sel = tables.selection_split(res) if res is not None else None
    where = f"{sel[0]} stage, {sel[1]} split" if sel else "rerun/dev, else search/dev (nothing scored yet)"
    out = {"best configuration chosen on": f"{where}, by {c.condition} {c.metric}; test is only shown for "
                                           "what dev chose, never used to choose"}
    note = m.get("selection")
    if isinstance(note, dict):  # study/runs/selection.py: {"top_k": {"text"}, "checkpoint": {"text"}, ...}
        for key, label in (("top_k", "top-k re-run (study.json)"), ("checkpoint", "checkpoint (study.json)"),
                           ("seeds", "seeds (study.json)")):
            part = note.get(key)
            if part:
                out[label] = part.get("text") or json.dumps(part) if isinstance(part, dict) else str(part)
    elif note:
        out["top-k re-run (study.json)"] = str(note)
    elif len(c.objectives) > 1:
        out["top-k re-run (study.json)"] = (f"{len(c.objectives)} objectives, but study.json records no "
                                               "selection rule; this report ranks by the first objective")
    return out


def _data_items(rep: Report) -> dict:
    res = rep.results
    if res is None:
        return {}
    out = {}
    dims = tables.data_dimensions(res)
    for name in tables.DATA_CONDITIONS:
        v = tables.trial_setting(res, name).dropna()
        if v.empty:
            continue
        vals = ", ".join(fmt(x) for x in sorted(set(v)))
        how = ("searched inside cells (flagged)" if name in rep.sanity.searched_data
               else "cell dimension" if name in dims else "fixed")
        out[f"data condition: {name}"] = f"{how}: {vals}" if how != "searched inside cells (flagged)" \
            else f"{how}: {v.min():.3g} to {v.max():.3g}"
    augs = [tables.param_label(p[len("param__"):]) for p in tables.param_columns(res)
            if tables.is_augmentation(p[len("param__"):])]
    if augs:
        out["augmentation (searched parameters)"] = ", ".join(augs)
    if "unpaired_share" in res and res["unpaired_share"].notna().any():
        u = res.drop_duplicates("trial_id")["unpaired_share"].dropna()
        out["realised unpaired training share"] = f"{u.min():.3f} to {u.max():.3f} (mean over epochs per trial)"
    if "normalize" in res and res["normalize"].notna().any():
        n = res.drop_duplicates("trial_id")["normalize"].dropna().astype(bool)
        out["features z-scored (training statistics)"] = f"{int(n.sum())} of {len(n)} trials"
    return out


def software_body(rep: Report) -> str:
    m = rep.files.meta
    body = kv_table({"git commit": m.get("git_sha") or "unknown"})
    versions = m.get("versions") or {}
    if not versions:
        return body + _note("No versions recorded.")
    return body + table(pd.DataFrame({"package": list(versions), "version": [str(v) for v in versions.values()]}),
                        sortable=False)


def compute_body(rep: Report) -> str:
    s = tables.compute_summary(_need_results(rep), rep.files.meta, now=pd.Timestamp.now(tz="UTC"))
    elapsed = "study elapsed so far (h)" if rep.ctx.status == "running" else "study elapsed (h)"
    items = {"trials": s["n_trials"], elapsed: fmt(s["elapsed_hours"], 2),
             "sum of trial wall time (h)": fmt(s["trial_hours"], 2), "CPU-hours": fmt(s["cpu_hours"], 2),
             "GPU-hours": fmt(s["gpu_hours"], 2),
             "saved by early stopping (h, estimate)": fmt(s["early_stop_saved_hours"], 2)}
    counts = s["counts"].reset_index().rename(columns={"stage": "stage \\ status"})
    return kv_table(items) + "<h3>Trials by stage and status</h3>" + table(counts, sortable=False)


# ---------------------------------------------------------------- leaderboard

def leaderboard_body(rep: Report) -> str:
    res = _need_results(rep)
    parts = []
    for stage, split in (("search", "dev"), ("rerun", "dev"), ("final", "test")):
        if not (res["stage"] == stage).any():
            continue
        tab, total = tables.leaderboard(res, rep.ctx, stage, split, LEADERBOARD_TOP)
        note = f"showing the best {len(tab)} of {total} trials" if total > len(tab) else f"{total} trials"
        ranked = ("ranked by its configuration's dev objective (selection split)" if stage == "final"
                  else f"ranked by {split} {rep.ctx.condition} {rep.ctx.metric}")
        parts.append(f"<h3>{esc(stage)} stage: {esc(split)} {esc(rep.ctx.metric)} per condition, {esc(ranked)} "
                     f"({esc(note)})</h3>" + _split(f"Selected on: nothing (every {stage} trial). "
                                                    f"Shown: {stage} stage, {split} split.") + table(tab))
    base = baselines.baseline_table(rep.files.results, rep.ctx.metric) if rep.files.results is not None else None
    if base is not None and len(base):
        parts.append(f"<h3>baselines: {esc(rep.ctx.metric)} per condition, dev and test (linear probes on pooled "
                     "features; see Baselines)</h3>" + _split("Selected on: the probe's regularisation on dev. "
                                                              "Shown: baseline stage, dev and test splits.")
                     + table(base))
    if not parts:
        raise Unavailable("No scored trials yet.")
    return "".join(parts)


# ---------------------------------------------------------------- robustness

def heatmap_body(rep: Report) -> str:
    res = _need_results(rep)
    dims = tuple(tables.data_dimensions(res))
    p = _pick(rep, by=("fusion", *dims))
    data = gather.heatmap_data(p.rows, rep.ctx.metric, dims)
    if not data:
        raise Unavailable("No scored rows for this stage.")
    realised = gather.realised_share(p.rows, dims)
    note = " Row labels give the realised unpaired training share (data condition + augmentation)." \
        if realised else ""
    return (_split(p.note(rep.ctx, "the best configuration of each (strategy, data condition) cell")) + _note(note)
            + rep.fig(figures.heatmaps(data, rep.ctx.metric, realised, dims)))


def imbalance_body(rep: Report) -> str:
    p = _pick(rep, by=("fusion",))
    tab = gather.imbalance_table(p.rows, rep.ctx.metric)
    grid = gather.grid_data(p.rows, rep.ctx.metric)
    if tab[["mei", "mli"]].isna().all().all() and not grid:
        return _split(p.note(rep.ctx)) + _note("No MEI, MLI or per-modality grid rows yet (studies run "
                                               "before they existed have none).")
    shown = tab.rename(columns={"mei_lo": "mei ci95_lo", "mei_hi": "mei ci95_hi", "mli_lo": "mli ci95_lo",
                                "mli_hi": "mli ci95_hi", "trained_unpaired": "trained unpaired share",
                                "drop_within": "drop from av, test miss <= trained",
                                "drop_beyond": "drop from av, test miss > trained"})
    body = _split(p.note(rep.ctx)) + table(shown)
    if grid:
        body += rep.fig(figures.grid_heatmaps(grid, rep.ctx.metric))
    return body


def curves_body(rep: Report) -> str:
    p = _pick(rep, by=("fusion",), k=5)
    df = gather.robustness_curves(p.rows, rep.ctx.metric)
    if df.empty:
        raise Unavailable("No robustness conditions (miss_* or another family) scored yet.")
    band = "its 5 best trials of that cell" if p.show[0] == "search" else "seeds of that configuration"
    fams = [f for f in tables.FAMILIES if f in set(df["family"])] + sorted(set(df["family"]) - set(tables.FAMILIES))
    return (_split(p.note(rep.ctx)) + _note(f"Families: {', '.join(fams)}; band across {band}.")
            + rep.fig(figures.robustness_curves(df, rep.ctx.metric, fams)))


def conditions_body(rep: Report) -> str:
    res = _need_results(rep)
    conds = ["av", "audio_only", "video_only", *[c for c in _summary_conditions(res) if c not in NAMED]]
    df, _ = gather.condition_winners(res, rep.ctx, conds)
    if df.empty:
        raise Unavailable("No dev scores per (strategy, data condition) yet.")
    dims = [d for d in tables.DATA_CONDITIONS if d in df.columns]
    sel = tables.selection_split(res, need=("fusion", *dims))
    shown = sorted(set(df["shown_split"]))
    text = (f"Selected on: {sel[0]} stage, dev split (per test condition, each strategy's configuration with "
            f"the best dev score on that condition; the winner is the best strategy on dev). "
            f"Shown: {'final stage, test split' if shown == ['test'] else ', '.join(shown) + ' split'}"
            + ("" if shown == ["test"] else " (dev where the final stage does not cover the configuration)") + ".")
    df = _with_probe(rep, df, dims, shown)
    win = df[df["winner"]].copy()
    runner = df[~df["winner"] & (df["fusion"] != baselines.PROBE)]
    runner = runner.groupby([*dims, "condition"], sort=False).head(1).set_index([*dims, "condition"])
    keys = list(zip(*[win[c] for c in [*dims, "condition"]]))
    win["runner-up"] = [runner["fusion"].get(k, "") for k in keys]
    win["runner-up shown"] = [runner["shown"].get(k, float("nan")) for k in keys]
    probe = df[df["fusion"] == baselines.PROBE].set_index([*dims, "condition"])
    win["probe dev"] = [probe["dev"].get(k, float("nan")) for k in keys]
    win["probe shown"] = [probe["shown"].get(k, float("nan")) for k in keys]
    cols = [*dims, "condition", "fusion", "augmentation", "dev", "shown", "shown_split", "runner-up",
            "runner-up shown", "probe dev", "probe shown", "config_id"]
    tab = win[cols].rename(columns={"fusion": "best strategy (dev)", "dev": f"dev {rep.ctx.metric}",
                                    "shown": f"shown {rep.ctx.metric}"})
    every = df.rename(columns={"dev": f"dev {rep.ctx.metric}", "shown": f"shown {rep.ctx.metric}"})
    return (_split(text) + rep.fig(figures.condition_bars(df, rep.ctx.metric, dims))
            + "<h3>Best strategy per data condition and test condition</h3>" + table(tab)
            + f"<details><summary>every strategy, with the augmentation of its dev-selected configuration "
              f"({len(df)} rows)</summary>{table(every)}</details>")


def _with_probe(rep: Report, df: pd.DataFrame, dims: list[str], shown: list[str]) -> pd.DataFrame:
    """The condition table with the probe's row per (data condition, test condition): its dev score
    and its score on the shown split (never a winner: it is not a searched strategy)."""
    base = rep.baselines
    if base.empty:
        return df
    split = "test" if shown == ["test"] else "dev"
    rows = []
    for key in df[[*dims, "condition"]].drop_duplicates().itertuples(index=False):
        at = dict(zip([*dims, "condition"], key))
        rate = at.get("train_missing_rate")
        dev, tid = baselines.baseline_score(base, at["condition"], rep.ctx.metric, "dev", rep.ctx.maximize, rate)
        if not tid:
            continue
        other, _ = baselines.baseline_score(base, at["condition"], rep.ctx.metric, split, rep.ctx.maximize, rate)
        rows.append({**at, "fusion": baselines.PROBE, "augmentation": "", "dev": dev, "shown": other,
                     "shown_split": split, "winner": False, "config_id": tid})
    return pd.concat([df, pd.DataFrame(rows)], ignore_index=True) if rows else df


def baselines_body(rep: Report) -> str:
    base = rep.baselines
    if base.empty:
        return _split("Selected on: nothing (no baseline rows). Shown: nothing.") + _note(
            "This study has no baseline rows (a study from before baselines existed, or a spec with "
            "`baselines: false`).")
    res = rep.files.results
    tab = baselines.baseline_table(res, rep.ctx.metric)
    gap = baselines.gap_table(res, rep.files.meta)
    chosen = base.drop_duplicates("trial_id")[["trial_id", "train_missing_rate", "config"]]
    body = (_split("Selected on: dev (the probes' regularisation; the best model configuration on the selection "
                   "split). Shown: dev and test splits.")
            + "<h3>Linear probes per training missing rate</h3>" + table(tab))
    if len(gap):
        body += "<h3>Best searched configuration vs best baseline, on dev</h3>" + table(gap)
    return body + f"<details><summary>probe settings (config)</summary>{table(chosen, cls='wrap')}</details>"


def pareto_body(rep: Report) -> str:
    df = gather.pareto_data(_need_results(rep), rep.ctx)
    if df.empty:
        raise Unavailable("Needs av, audio_only and video_only scores of search trials.")
    return _no_selection("search", "dev", "every scored search trial") + rep.fig(figures.pareto(df, rep.ctx.metric))


# ---------------------------------------------------------------- search diagnostics

def importance_body(rep: Report) -> str:
    tab, n = importance_data(_need_results(rep), rep.ctx)
    if tab.empty:
        raise Unavailable("Needs at least 8 scored search trials with varying parameters.")
    return (_no_selection("search", "dev", f"{n} search trials, a seeded sample when more")
            + rep.fig(figures.importance(tab, tab.columns[0])))


def parallel_body(rep: Report) -> str:
    df = gather.parallel_data(_need_results(rep), rep.ctx, PARALLEL_TOP)
    if len(df) < 2 or df.shape[1] < 2:
        raise Unavailable("Needs at least 2 scored search trials with varying parameters.")
    return (_no_selection("search", "dev", f"the {len(df)} best search trials by the dev objective")
            + rep.fig(figures.parallel(df, f"{rep.ctx.condition} {rep.ctx.metric}")))


def history_body(rep: Report) -> str:
    df = gather.history_data(_need_results(rep), rep.ctx)
    if df.empty:
        raise Unavailable("No scored search trials yet.")
    return (_no_selection("search", "dev", "every scored search trial")
            + rep.fig(figures.history(df, f"dev {rep.ctx.condition} {rep.ctx.metric}", rep.ctx.maximize)))


def learning_body(rep: Report) -> str:
    res = _need_results(rep)
    if rep.files.curves is None or rep.files.curves.empty:
        raise Unavailable("curves.parquet is missing or empty.")
    df, col = gather.learning_curve_data(rep.files.curves, res, rep.ctx)
    if df.empty:
        raise Unavailable("No learning curves for scored search trials.")
    return (_split("Selected on: search stage, dev split (the best completed trials by the dev objective, and a "
                   "spread of early-stopped ones). Shown: search stage, dev split, per epoch.")
            + rep.fig(figures.learning_curves(df, col)))


# ---------------------------------------------------------------- per class

def confusion_body(rep: Report) -> str | None:
    if rep.ctx.task == "dimensional":
        return None  # no classes: the per-dimension CCC section covers dimensional tasks
    p = _pick(rep)
    if not rep.ctx.classes:
        raise Unavailable("The class names are unknown (no classes in study.json and no f1__* columns).")
    data = gather.confusion_data(p.rows, len(rep.ctx.classes))
    if not data:
        raise Unavailable("No confusion matrices recorded.")
    return _split(p.note(rep.ctx)) + rep.fig(figures.confusions(data, rep.ctx.classes))


def per_class_body(rep: Report) -> str:
    p = _pick(rep)
    df = gather.per_class_data(p.rows, rep.ctx)
    if df.empty:
        raise Unavailable("No per-class F1 or per-dimension CCC recorded.")
    label = "CCC" if rep.ctx.task == "dimensional" else "F1"
    return _split(p.note(rep.ctx)) + rep.fig(figures.per_class(df, label))


# ---------------------------------------------------------------- seeds and significance

def seeds_body(rep: Report) -> str:
    res = _need_results(rep)
    if not ((res["stage"] == "rerun") & (res["split"] == "dev")).any():
        raise Unavailable("No re-run stage yet (seed variance needs repeated runs).")
    conds = [c for c in _summary_conditions(res) if c in NAMED or tables.is_area(c)]
    df = gather.seed_variance(res, rep.ctx, "rerun", "dev", conds)
    if df.empty:
        raise Unavailable("No repeated runs with scores.")
    tab = df.drop(columns=["values"]).rename(columns={"lo": "ci95_lo", "hi": "ci95_hi", "method": "ci95 method"})
    return (_no_selection("rerun", "dev", "every re-run configuration")
            + rep.fig(figures.seed_variance(df, rep.ctx.metric, rep.ctx.condition))
            + f"<details><summary>table</summary>{table(tab)}</details>")


def paired_body(rep: Report) -> str:
    p = _paper(rep)
    comps = p.comparisons
    if comps.table.empty:
        raise Unavailable("Needs at least two strategies (or a strategy and a baseline) with scored runs.")
    n_sig = int(comps.table["significant"].sum())
    return (_split(p.runs.note)
            + _note(f"{len(comps.table)} comparisons (every pair x every score of the summary and the per-condition "
                    f"table), {comps.m} with a test; {n_sig} survive {comps.name} at alpha {comps.alpha:g}. "
                    f"{comps.text()}.")
            + tabfmt.comparisons_html(comps))


def failures_body(rep: Report) -> str:
    df = tables.failed_trials(_need_results(rep))
    if df.empty:
        return _note("No failed trials.")
    return table(df.assign(error=df["error"].fillna("").astype(str).str.slice(0, 2000)), cls="wrap")


# ---------------------------------------------------------------- the list

@dataclass(frozen=True)
class SectionDef:
    anchor: str  # HTML id, and the link target in the page's navigation
    title: str
    how_to_read: str  # shown under the title and in reports/README_SECTIONS.md
    body: Callable[[Report], str | None]


SECTIONS: tuple[SectionDef, ...] = (
    SectionDef("summary", "Summary: which strategy holds up", "Per strategy (its dev-selected configuration) "
               "and per baseline, each objective on the shown split (final/test): mean ± sd and its 95% interval "
               "over folds x seeds, with the method and n in every cell; then, per objective, the strategy with "
               "the highest mean and which of its differences survive the correction (paired t-test, Holm "
               "unless --correction says otherwise) with the effect size d_z. The per-condition and per-fold "
               "tables are folded below it; a study flagged selected_on_test says so in red.", summary_body),
    SectionDef("sanity", "Sanity checks", "Trials and conditions whose predictions are degenerate (flag nan: "
               "non-finite predictions; one_class: every prediction is the same class; chance: score within "
               "chance level). A modality flagged in every trial of a stage raises a red banner at the top: such a "
               "study is not a result.", sanity_body),
    SectionDef("study", "Study", "What was run (spec as run), how trials are ranked and where the best "
               "configurations are chosen (dev, never test); the data conditions (r, audio_only_share) and the "
               "searched augmentations; files the report could not read are listed in red (normal while a study "
               "is running).", overview_body),
    SectionDef("software", "Software", "Package versions and git commit the study ran with: rerun with the same "
               "ones to reproduce its numbers.", software_body),
    SectionDef("compute", "Compute used", "Trials by stage and status, elapsed time, CPU/GPU-hours (wall time x "
               "reserved CPUs/GPUs) and the time early stopping saved (each stopped trial's missing epochs, up to "
               "the longest completed trial of its stage, at its own mean epoch time).", compute_body),
    SectionDef("leaderboard", "Leaderboard", "Trials of each stage with their scores per condition (search and "
               "re-run: dev; final: test), data conditions, realised unpaired share, degenerate flag and "
               "parameters ([data] and [augmentation] marked); the final stage is ordered by its configuration's "
               "dev objective, not by test. Click a header to sort; large studies show the best 200.",
               leaderboard_body),
    SectionDef("baselines", "Baselines", "Linear probes on pooled features (per utterance mean and std of every "
               "feature dimension, z-scored with training statistics; logistic or ridge regression, "
               "regularisation chosen on dev) for audio, video and their concatenation, fitted per training "
               "missing rate and evaluated under the same test conditions (a sample that lost a stream: the "
               "single-stream probe). A searched strategy that does not beat them on dev has learnt less than a "
               "linear model of its inputs; the banner says so.", baselines_body),
    SectionDef("heatmap", "Robustness heatmap", "One panel per fusion strategy: a row is a data condition (share "
               "of unpaired training data r, and audio_only_share when the study varies it), a column a test "
               "condition or a family's robustness area; brighter is better, so look at how fast a row fades "
               "towards heavily missing test conditions.", heatmap_body),
    SectionDef("imbalance", "Modality imbalance", "Per strategy (its dev-selected configuration): the "
               "Modality Equity Index of the report's metric (MEI, 1 = both modalities contribute equally, from the "
               "Shapley values of audio and video over av / audio-only / video-only with a no-information "
               "prediction as neither) and the Modality Learning Index (MLI, 0 = balanced gradient norms of the "
               "audio and video modules in training, 1 = one modality gets none; signed > 0: audio's are larger), "
               "mean and 95% t-interval over runs; MuteBench's check: the mean drop from av on the miss family up "
               "to the training's realised unpaired share and beyond it (protection holds only up to the highest "
               "rate trained on); then the score over the per-modality test grid (rows: share of test "
               "utterances without audio, columns: without video). docs/imbalance.md gives the definitions.",
               imbalance_body),
    SectionDef("curves", "Robustness curves", "One panel per condition family (whole stream missing, frames "
               "dropped, gaps, noise, asynchrony): score vs the family's level, one line per strategy (its "
               "dev-selected configuration) with a 95% t-interval band across seeds (or the cell's 5 best search "
               "trials; drawn from 3 runs up); flatter means more robust.", curves_body),
    SectionDef("conditions", "Data condition: which strategy holds up", "For each data condition (r) and each "
               "test condition: every strategy's configuration chosen on dev for that condition, its "
               "augmentation setting and its test score; the table names the strategy dev chose and the "
               "runner-up.", conditions_body),
    SectionDef("pareto", "Pareto front", "Each search trial's full-modality (av) score vs its worst "
               "single-modality score; upper right is best, the dotted line joins trials no other trial beats on "
               "both axes, marker size/colour is wall time.", pareto_body),
    SectionDef("importance", "Hyperparameter importance", "fANOVA share of score variance explained by each "
               "parameter (Optuna evaluator on trials rebuilt from the results), for the objective and per "
               "condition (av, audio-only, video-only, robustness); data conditions and augmentations are marked; "
               "conditional parameters are left out.", importance_body),
    SectionDef("parallel", "Parallel coordinates", "The 300 best search trials, one line each, coloured by "
               "objective; drag along an axis to filter and see which settings the best trials share.",
               parallel_body),
    SectionDef("history", "Optimisation history", "Objective of each search trial in start order (x = "
               "early-stopped) and the best so far; a flat best-so-far line means the search has converged.",
               history_body),
    SectionDef("learning", "Learning curves", "Dev score per epoch of the best completed trials and a spread of "
               "early-stopped ones (dashed grey, x at the last epoch); stopped curves that were still rising hint "
               "at an over-aggressive scheduler.", learning_body),
    SectionDef("confusion", "Confusion matrices", "Row-normalised (rows = true class) for each strategy's "
               "dev-selected configuration on the av condition: the diagonal is per-class recall, off-diagonal "
               "cells show which emotions are confused.", confusion_body),
    SectionDef("perclass", "Per-class F1 / per-dimension CCC", "Per class (categorical) or per dimension "
               "(arousal/valence/dominance) score with both modalities, audio only and video only: which "
               "emotions the voice carries and which the face.", per_class_body),
    SectionDef("seeds", "Seed variance", "Each re-run configuration's mean over its runs (seeds, folds x seeds) "
               "with a 95% interval (Student-t below 30 runs, BCa bootstrap from 30; method and n in the table) "
               "and the single runs, per condition; overlapping intervals mean the ranking is not settled.",
               seeds_body),
    SectionDef("paired", "Paired comparison of strategies", "Dev-selected configuration of strategy a (or a "
               "baseline) minus that of b, paired by (fold, seed) (a baseline, one run per fold: by fold), for "
               "every score of the summary and the per-condition table: mean difference with its Student-t "
               "interval, Cohen's d_z, paired t-test p and the p corrected across the whole table (Holm by "
               "default, or Benjamini-Hochberg); 'significant' is the corrected decision at alpha 0.05.",
               paired_body),
    SectionDef("failed", "Failed trials", "Trials that raised an error, with the error; they are excluded from "
               "every other section.", failures_body),
)


def build_section(sd: SectionDef, rep: Report) -> Section | None:
    """Runs one section (None: not relevant to this study); missing inputs or an unexpected error
    become a note in that section."""
    try:
        body = sd.body(rep)
    except Unavailable as e:
        body = _note(str(e))
    except Exception as e:  # keep the rest of the report usable; the error is shown, not hidden
        body = f"<p class='problem'>This section could not be built: {esc(type(e).__name__)}: {esc(e)}</p>"
    return None if body is None else Section(sd.anchor, sd.title, sd.how_to_read, body)
