"""Entry points: write_report (one study -> one self-contained HTML file) and write_index."""
from __future__ import annotations

import posixpath
from pathlib import Path

import pandas as pd

from reports import export, figures, gather, recipe, sanity, tables
from reports.fsio import Location, exists, find_studies, locate, write_text
from reports.html import FigureCounter, Section, esc, figure, page, plotly_js
from reports.load import StudyError, StudyFiles, broken_files, check_study, load_study, make_context
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
    lines = recipe.recipe_lines(rep.results)
    training = "".join(f"<div class='recipe'>training, {esc(line)}</div>" for line in lines) or \
        "<div class='recipe'>training: no trial has recorded its recipe yet</div>"
    return (f"<h1>{esc(c.name)} <span class='badge {esc(c.status)}'>{esc(c.status)}</span></h1>"
            f"<div>{back}{esc(c.task)} &middot; objective: {esc(c.condition)} {esc(c.metric)} &middot; "
            f"generated {esc(when)}</div>{training}")


def _render(rep: Report, index_href: str | None, with_plotlyjs: bool) -> str:
    sections = [s for s in (build_section(sd, rep) for sd in SECTIONS) if s is not None]
    return page(f"avstudy report: {rep.ctx.name}", _header(rep, index_href), sections,
                plotly_js() if with_plotlyjs else None, banner=sanity.banner_html(rep.sanity))


def render_report(files: StudyFiles, index_href: str | None = None, with_plotlyjs: bool = True,
                  correction: str = "holm") -> str:
    """The HTML text of a study's report (no I/O)."""
    return _render(Report(files, make_context(files), FigureCounter(), correction), index_href, with_plotlyjs)


def write_report(study_dir, out=None, index_href: str | None = None, correction: str = "holm",
                 tables=None, overwrite: bool = False) -> Path | str:
    """Writes STUDY_DIR/report.html (or `out`) and returns its path. Links back to ../index.html
    when an index.html exists in the study's parent directory (or to `index_href` if given).
    With `tables`, also writes the tables for papers there (reports/export.py): nothing is written
    when that would overwrite earlier tables without `overwrite`, or when there is nothing to
    tabulate (ExportError). Raises StudyError when study_dir does not exist or is a broken study."""
    loc = locate(study_dir)
    files = check_study(loc)
    dest = _out_location(loc.join("report.html"), out)
    target = export.check_target(tables, overwrite) if tables is not None else None
    if index_href is None:
        parent = Location(loc.fs, posixpath.dirname(loc.path), posixpath.dirname(loc.uri))
        if exists(parent.join("index.html")):
            index_href = _relative(parent.join("index.html"), Location(dest.fs, posixpath.dirname(dest.path), ""))
    rep = Report(files, make_context(files), FigureCounter(), correction)
    text = _render(rep, index_href, True)
    if target is not None and rep.paper is None:
        raise export.ExportError(f"{loc.uri}: nothing to tabulate yet (no configuration has dev scores)")
    write_text(dest, text)
    if target is not None:
        export.write_tables(rep.paper, target, loc.uri)
    return Path(dest.path) if dest.uri == dest.path else dest.uri


# ---------------------------------------------------------------- index

def study_summary(files: StudyFiles) -> dict:
    """One index row: spec summary, status, warnings, trial counts and the scores of the best
    configuration (chosen on dev; its final/test scores when the final stage covers it)."""
    ctx = make_context(files)
    spec = files.meta.get("spec") or {}
    row = {"study": ctx.name, "status": ctx.status, "task": ctx.task, "metric": ctx.metric,
           "warnings": "", "spec": _spec_summary(spec), "trials": 0, "failed": 0, "selected on": "", "shown": ""}
    broken = broken_files(files)
    if broken:  # listed, with why, never as a study with 0 trials
        return {**row, "status": "broken", "warnings": "broken: " + "; ".join(broken)}
    res = files.results
    if res is None or res.empty:
        return row
    row["warnings"] = sanity.index_text(sanity.check(res, files.meta))
    tr = tables.trials(res)
    row.update(trials=int(len(tr)), failed=int((tr["status"] == "failed").sum()))
    p = gather.pick(res, ctx, by=())
    if p is None:
        return row
    return {**row, **_best_overall(p, ctx)}


def _best_overall(p: gather.Pick, ctx) -> dict:
    first = p.best.iloc[0]
    fusion = p.rows["fusion"].iloc[0] if len(p.rows) else ""
    r = p.rows["train_missing_rate"].iloc[0] if len(p.rows) else float("nan")
    per_cond = p.rows.groupby("condition")[ctx.metric].mean()
    out = {"selected on": f"{p.select[0]}/{p.select[1]}", "shown": f"{p.show[0]}/{p.show[1]}",
           "best": f"{fusion} r={r:g} ({first['config_id']})"}
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


INDEX_FIRST = ("study", "status", "warnings", "best", "selected on", "shown", *INDEX_CONDITIONS)


def _index_table(rows: list[dict], links: list[str]) -> str:
    df = pd.DataFrame(rows)
    df = df[[c for c in INDEX_FIRST if c in df.columns] + [c for c in df.columns if c not in INDEX_FIRST]]
    head = "".join(f"<th title='click to sort'>{esc(c)}</th>" for c in ["report", *df.columns])
    body = []
    for link, r in zip(links, df.itertuples(index=False)):
        cells = [f"<td><a href='{esc(link)}'>report</a></td>"]
        for x in r:
            num = isinstance(x, float) and x == x
            cells.append(f"<td data-v='{x!r}' class='num'>{x:.4f}</td>" if num
                         else f"<td>{esc('' if x != x else x)}</td>")
        alarm = "DEGENERATE" in str(getattr(r, "warnings", ""))
        body.append(("<tr class='alarm'>" if alarm else "<tr>") + "".join(cells) + "</tr>")
    return (f"<div class='tablewrap'><table class='sortable'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


def render_index(rows: list[dict], links: list[str], root_uri: str) -> str:
    figs = FigureCounter()
    sections = [Section("studies", "Studies", "One row per study under this root, with the scores of its best "
                        "configuration, chosen on dev (re-run, else search) and shown on the final stage's test "
                        "split when it covers that configuration (columns 'selected on' and 'shown'); "
                        "'warnings' names degenerate modalities and trials. Click a header to sort.",
                        _index_table(rows, links) if rows else "<p class='empty'>No study found.</p>")]
    df = pd.DataFrame(rows)
    conds = [c for c in INDEX_CONDITIONS if c in df.columns]
    if conds and len(df):
        metrics = sorted(set(df["metric"]))
        for m in metrics:
            sub = df[df["metric"] == m][["study", *conds]]
            fig = figures.study_bars(sub, m)
            sections.append(Section(f"compare-{esc(m)}", f"Comparison ({m})", "Best configuration of each study "
                                    "(chosen on dev) per condition: taller is better; compare av with the "
                                    "single-modality bars to see what each study loses when a modality is missing.",
                                    figure(fig, figs.next_id())))
    header = f"<h1>avstudy studies</h1><div>{esc(root_uri)}</div>"
    alarms = [f"{r['study']}: {r['warnings']}" for r in rows if "DEGENERATE" in str(r.get("warnings", ""))]
    banner = ("<div class='banner alarm' role='alert'><ul>" + "".join(f"<li>{esc(a)}</li>" for a in alarms)
              + "</ul></div>") if alarms else ""
    return page("avstudy studies", header, sections, plotly_js() if len(sections) > 1 else None, banner=banner)


def write_index(root, out=None, build_reports: bool = True) -> Path | str:
    """Writes ROOT/index.html (or `out`) listing every study under root (directories holding a
    study.json). With build_reports, (re)writes each study's report.html linking back to the index."""
    root_loc = locate(root)
    dest = _out_location(root_loc.join("index.html"), out)
    dest_dir = Location(dest.fs, posixpath.dirname(dest.path), posixpath.dirname(dest.uri))
    rows, links = [], []
    studies = find_studies(root_loc)
    if not studies:
        raise StudyError(f"{root_loc.uri}: no such directory" if not exists(root_loc)
                         else f"{root_loc.uri}: no study found (no directory under it holds a study.json)")
    for loc in studies:
        files = load_study(loc)
        rows.append(study_summary(files))
        report = loc.join("report.html")
        if build_reports:
            back = _relative(dest, Location(report.fs, posixpath.dirname(report.path), ""))
            write_text(report, render_report(files, back))
        links.append(_relative(report, dest_dir))
    write_text(dest, render_index(rows, links, root_loc.uri))
    return Path(dest.path) if dest.uri == dest.path else dest.uri
