"""`avstudy report --compare STUDY_A STUDY_B ...`: one page comparing studies (two corpora, two
versions of a study) on the strategies and scores they share.

Each study is summarised as its own report does (paper.build: dev-selected configurations, the
shown split, intervals over folds x seeds). Studies are never paired with each other (different
data, or different trained models): each later study is compared with the first by Welch's
t-test on the runs, with its interval, corrected together as one family. Studies of different
tasks (or primary metrics) cannot be compared: StudyError names them."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from reports import figures, paper
from reports.fsio import locate, write_text
from reports.html import FigureCounter, Section, esc, figure, page, plotly_js, table
from reports.load import StudyError, StudyFiles, check_study, make_context
from reports.stats import ALPHA, CORRECTIONS, LEVEL, adjust, interval


@dataclass(frozen=True)
class Study:
    name: str
    uri: str
    task: str
    metric: str
    paper: paper.Paper


@dataclass(frozen=True)
class Comparison:
    studies: tuple[Study, ...]
    strategies: tuple[str, ...]  # shared by every study, in the first study's row order
    columns: tuple[paper.Column, ...]  # shared scores (objectives, then conditions)
    stats: pd.DataFrame  # study, strategy, column, mean, sd, n, ci_lo, ci_hi, ci_method
    diffs: pd.DataFrame  # study, vs, strategy, column, diff, ci_lo, ci_hi, test, p_value, p_adjusted, significant
    correction: str


def _study(files: StudyFiles, correction: str) -> Study:
    ctx = make_context(files)
    res = files.results
    p = paper.build(res, ctx, files.meta, correction) if res is not None and len(res) else None
    if p is None:
        raise StudyError(f"{files.location.uri}: nothing to compare yet (no configuration has dev scores)")
    return Study(ctx.name, files.location.uri, ctx.task, ctx.metric, p)


def _same(studies: list[Study], key: str, what: str) -> None:
    values = {getattr(s, key) for s in studies}
    if len(values) > 1:
        listed = "; ".join(f"{s.uri}: {what} {getattr(s, key)}" for s in studies)
        raise StudyError(f"cannot compare studies of different {what}s ({listed})")


def _shared_columns(studies: list[Study]) -> tuple[paper.Column, ...]:
    cols = [c for t in (studies[0].paper.leaderboard, studies[0].paper.conditions) for c in t.columns]
    shared = [c for c in dict.fromkeys(cols)
              if all(c in (*s.paper.leaderboard.columns, *s.paper.conditions.columns) for s in studies)]
    by_label = {c.label: c for c in studies[0].paper.runs.columns}
    return tuple(by_label[c] for c in shared)


def _welch(x: np.ndarray, y: np.ndarray) -> dict:
    """y - x by Welch's t-test (scipy), with its interval; NaN with fewer than 2 runs on a side."""
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if len(x) < 2 or len(y) < 2:
        return {"diff": float(np.mean(y) - np.mean(x)) if len(x) and len(y) else np.nan, "ci_lo": np.nan,
                "ci_hi": np.nan, "test": "none (fewer than 2 runs)", "p_value": np.nan}
    r = sps.ttest_ind(y, x, equal_var=False)
    ci = r.confidence_interval(LEVEL)
    return {"diff": float(np.mean(y) - np.mean(x)), "ci_lo": float(ci.low), "ci_hi": float(ci.high),
            "test": "Welch t-test", "p_value": float(r.pvalue)}


def gather(files: list[StudyFiles], correction: str = "holm") -> Comparison:
    if len(files) < 2:
        raise StudyError("--compare needs at least two studies")
    studies = [_study(f, correction) for f in files]
    _same(studies, "task", "task")
    _same(studies, "metric", "primary metric")
    shared = [s for s in studies[0].paper.runs.strategies if all(s in t.paper.runs.strategies for t in studies)]
    cols = _shared_columns(studies)
    if not shared or not cols:
        raise StudyError("the studies share no " + ("strategy" if not shared else "score") + ": "
                         + "; ".join(f"{s.uri}: {', '.join(s.paper.runs.strategies)}" for s in studies))
    rows, diffs = [], []
    for st in studies:
        for s in shared:
            for c in cols:
                iv = interval(st.paper.runs.of(s)[c.label].to_numpy())
                rows.append({"study": st.name, "strategy": s, "column": c.label, "mean": iv.mean, "sd": iv.sd,
                             "n": iv.n, "ci_lo": iv.lo, "ci_hi": iv.hi, "ci_method": iv.method})
    first = studies[0]
    for st in studies[1:]:
        for s in shared:
            for c in cols:
                x, y = (t.paper.runs.of(s)[c.label].to_numpy(float) for t in (first, st))
                w = _welch(x, y)
                diffs.append({"study": st.name, "vs": first.name, "strategy": s, "column": c.label, **w})
    d = pd.DataFrame(diffs)
    adj, rej = adjust(d["p_value"].to_numpy(), correction)
    return Comparison(tuple(studies), tuple(shared), cols, pd.DataFrame(rows),
                      d.assign(p_adjusted=adj, significant=rej), correction)


# ---------------------------------------------------------------- page

def _studies_html(c: Comparison) -> str:
    rows = []
    for s in c.studies:
        r = s.paper.runs
        flagged = [x for x in r.strategies if r.selected_on_test(x)]
        rows.append({"study": s.name, "location": s.uri, "task": s.task, "metric": s.metric,
                     "selected on": f"{r.pick.select[0]}/dev", "shown": f"{r.shown[0]}/{r.shown[1]}",
                     "strategies": ", ".join(r.strategies),
                     "runs": "; ".join(sorted({r.design(x) for x in r.strategies})),
                     "selected on test": ", ".join(flagged) or "no"})
    return table(pd.DataFrame(rows), sortable=False)


def _cells_html(c: Comparison) -> str:
    """Rows = strategies; per score one column per study: mean ± sd and its interval."""
    st = c.stats.set_index(["study", "strategy", "column"])
    head = "<th>strategy</th>" + "".join(f"<th>{esc(col.label)}<br>{esc(s.name)}</th>"
                                         for col in c.columns for s in c.studies)
    body = []
    for strat in c.strategies:
        cells = [f"<td>{esc(strat)}</td>"]
        for col in c.columns:
            for s in c.studies:
                r = st.loc[(s.name, strat, col.label)]
                ci = (f"95% {esc(r['ci_method'])} [{r['ci_lo']:.4f}, {r['ci_hi']:.4f}], n={int(r['n'])}"
                      if r["n"] >= 2 else f"n={int(r['n'])}")
                sd = "" if pd.isna(r["sd"]) else f" ± {r['sd']:.4f}"
                cells.append(f"<td class='num' data-v='{r['mean']!r}'>{r['mean']:.4f}{sd}<br><small>{ci}</small></td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<div class='tablewrap'><table class='sortable scores'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


def render(c: Comparison) -> str:
    figs = FigureCounter()
    names = " vs ".join(s.name for s in c.studies)
    m = int(c.diffs["p_value"].notna().sum())
    name = CORRECTIONS[c.correction]
    sections = [
        Section("studies", "Studies", "What each study is and where its numbers come from: configurations are "
                "selected on dev in each study, scores shown on its final/test split.", _studies_html(c)),
        Section("shared", "Shared strategies and scores", "Every strategy and score the studies share: mean ± sd "
                "and the 95% interval over each study's runs (folds x seeds), method and n in each cell.",
                _cells_html(c) + figure(figures.study_comparison(c.stats, [s.name for s in c.studies],
                                                                 [col.label for col in c.columns]),
                                        figs.next_id())),
        Section("differences", f"Differences to {c.studies[0].name}", "Each later study minus the first, per "
                f"strategy and score: Welch's t-test on the runs (the studies are not paired), its 95% interval, "
                f"p and p {name}-corrected across the {m} tests of this table (alpha {ALPHA:g}).",
                table(c.diffs.rename(columns={"p_adjusted": f"p ({name})", "significant": f"significant ({name})"}))),
    ]
    header = (f"<h1>avstudy comparison: {esc(names)}</h1><div>{esc(c.studies[0].task)} &middot; metric "
              f"{esc(c.studies[0].metric)} &middot; {len(c.strategies)} shared strategies &middot; "
              f"{len(c.columns)} shared scores</div>")
    return page(f"avstudy comparison: {names}", header, sections, plotly_js())


def write_compare(study_dirs, out=None, correction: str = "holm"):
    """Writes the comparison page of the studies to `out` (default ./compare.html); returns its path."""
    files = [check_study(locate(d)) for d in study_dirs]
    c = gather(files, correction)
    dest = locate(out or "compare.html")
    write_text(dest, render(c))
    return dest.uri
