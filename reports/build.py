"""Entry points: write_report (one study -> one self-contained HTML file) and write_index."""
from __future__ import annotations

import posixpath
from pathlib import Path

import pandas as pd

from reports import figures, gather, tables
from reports.fsio import Location, exists, find_studies, locate, write_text
from reports.html import FigureCounter, Section, esc, figure, page, plotly_js
from reports.load import StudyFiles, load_study, make_context
from reports.sections import SECTIONS, Report, build_section

INDEX_CONDITIONS = ("av", "audio_only", "video_only", "robustness")


def _out_location(default: Location, out) -> Location:
    return default if out is None else locate(out)


def _relative(target: Location, start_dir: Location) -> str:
    return posixpath.relpath(target.path, start_dir.path)


def _header(rep: Report, index_href: str | None) -> str:
    c = rep.ctx
    back = f"<a href='{esc(index_href)}'>&larr; all studies</a> &middot; " if index_href else ""
    when = pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d %H:%M UTC")
    return (f"<h1>{esc(c.name)} <span class='badge {esc(c.status)}'>{esc(c.status)}</span></h1>"
            f"<div>{back}{esc(c.task)} &middot; objective: {esc(c.condition)} {esc(c.metric)} &middot; generated {esc(when)}</div>")


def render_report(files: StudyFiles, index_href: str | None = None, with_plotlyjs: bool = True) -> str:
    """The HTML text of a study's report (no I/O)."""
    rep = Report(files, make_context(files), FigureCounter())
    sections = [s for s in (build_section(fn, rep) for fn in SECTIONS) if s is not None]
    return page(f"avstudy report: {rep.ctx.name}", _header(rep, index_href), sections,
                plotly_js() if with_plotlyjs else None)


def write_report(study_dir, out=None, index_href: str | None = None) -> Path | str:
    """Writes STUDY_DIR/report.html (or `out`) and returns its path. Links back to ../index.html
    when an index.html exists in the study's parent directory (or to `index_href` if given)."""
    loc = locate(study_dir)
    dest = _out_location(loc.join("report.html"), out)
    if index_href is None:
        parent = Location(loc.fs, posixpath.dirname(loc.path), posixpath.dirname(loc.uri))
        if exists(parent.join("index.html")):
            index_href = _relative(parent.join("index.html"), Location(dest.fs, posixpath.dirname(dest.path), ""))
    write_text(dest, render_report(load_study(loc), index_href))
    return Path(dest.path) if dest.uri == dest.path else dest.uri


# ---------------------------------------------------------------- index

def study_summary(files: StudyFiles) -> dict:
    """One index row: spec summary, status, trial counts and the best configuration's scores."""
    ctx = make_context(files)
    spec = files.meta.get("spec") or {}
    row = {"study": ctx.name, "status": ctx.status, "task": ctx.task, "metric": ctx.metric,
           "spec": _spec_summary(spec), "trials": 0, "failed": 0, "evidence": ""}
    res = files.results
    if res is None or res.empty:
        return row
    tr = tables.trials(res)
    row.update(trials=int(len(tr)), failed=int((tr["status"] == "failed").sum()))
    ev = tables.evidence(res)
    if ev is None:
        return row
    row.update(evidence=f"{ev[0]}/{ev[1]}", **_best_overall(res, ctx, *ev))
    return row


def _best_overall(res: pd.DataFrame, ctx, stage: str, split: str) -> dict:
    t = gather.config_scores(res, ctx, stage, split)
    if t.empty:
        return {}
    means = t.groupby("config_id")["objective"].mean().sort_values(ascending=not ctx.maximize)
    cid = means.index[0]
    ids = t.loc[t["config_id"] == cid, "trial_id"]
    rows = gather.rows_of(res, ids, stage, split)
    per_cond = rows.groupby("condition")[ctx.metric].mean()
    first = t[t["config_id"] == cid].iloc[0]
    out = {"best": f"{first['fusion']} r={first['train_missing_rate']:g} ({cid})"}
    out.update({c: float(per_cond[c]) for c in INDEX_CONDITIONS if c in per_cond})
    return out


def _spec_summary(spec: dict, limit: int = 240) -> str:
    parts = []
    for k, v in spec.items():
        if isinstance(v, dict):
            v = ",".join(f"{a}={b}" for a, b in v.items() if not isinstance(b, (dict, list)))
        elif isinstance(v, list):
            v = ",".join(str(x) for x in v)
        parts.append(f"{k}: {v}")
    text = "; ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _index_table(rows: list[dict], links: list[str]) -> str:
    df = pd.DataFrame(rows)
    head = "".join(f"<th title='click to sort'>{esc(c)}</th>" for c in ["report", *df.columns])
    body = []
    for link, r in zip(links, df.itertuples(index=False)):
        cells = [f"<td><a href='{esc(link)}'>report</a></td>"]
        for x in r:
            num = isinstance(x, float) and x == x
            cells.append(f"<td data-v='{x!r}' class='num'>{x:.4f}</td>" if num else f"<td>{esc('' if x != x else x)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<div class='tablewrap'><table class='sortable'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


def render_index(rows: list[dict], links: list[str], root_uri: str) -> str:
    figs = FigureCounter()
    sections = [Section("studies", "Studies", "One row per study under this root, with the scores of its best "
                        "configuration (final/test when available, else re-run or search dev); click a header to sort.",
                        _index_table(rows, links) if rows else "<p class='empty'>No study found.</p>")]
    df = pd.DataFrame(rows)
    conds = [c for c in INDEX_CONDITIONS if c in df.columns]
    if conds and len(df):
        metrics = sorted(set(df["metric"]))
        for m in metrics:
            sub = df[df["metric"] == m][["study", *conds]]
            fig = figures.study_bars(sub, m)
            sections.append(Section(f"compare-{esc(m)}", f"Comparison ({m})", "Best configuration of each study per "
                                    "condition: taller is better; compare av with the single-modality bars to see "
                                    "what each study loses when a modality is missing.", figure(fig, figs.next_id())))
    header = f"<h1>avstudy studies</h1><div>{esc(root_uri)}</div>"
    return page("avstudy studies", header, sections, plotly_js() if len(sections) > 1 else None)


def write_index(root, out=None, build_reports: bool = True) -> Path | str:
    """Writes ROOT/index.html (or `out`) listing every study under root (directories holding a
    study.json). With build_reports, (re)writes each study's report.html linking back to the index."""
    root_loc = locate(root)
    dest = _out_location(root_loc.join("index.html"), out)
    dest_dir = Location(dest.fs, posixpath.dirname(dest.path), posixpath.dirname(dest.uri))
    rows, links = [], []
    for loc in find_studies(root_loc):
        files = load_study(loc)
        rows.append(study_summary(files))
        report = loc.join("report.html")
        if build_reports:
            back = _relative(dest, Location(report.fs, posixpath.dirname(report.path), ""))
            write_text(report, render_report(files, back))
        links.append(_relative(report, dest_dir))
    write_text(dest, render_index(rows, links, root_loc.uri))
    return Path(dest.path) if dest.uri == dest.path else dest.uri
