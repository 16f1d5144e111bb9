"""`avstudy report STUDY --tables DIR`: the report's tables as CSV and LaTeX files (docs/export.md).

DIR/leaderboard.{csv,tex}   each objective on the shown split, per strategy and baseline
DIR/conditions.{csv,tex}    the primary metric on av, audio_only, video_only and every family's area
DIR/folds.{csv,tex}         each objective per fold (over its seeds) and over every fold
DIR/paired.{csv,tex}        every pair x score: mean difference, interval, d_z, p, corrected p

Never overwrites: when any of these files exists in DIR, nothing is written and the error lists
them, unless `overwrite` (--overwrite) replaces them. Other files in DIR are never touched.
"""
from __future__ import annotations

from reports import tabfmt
from reports.fsio import Location, exists, locate, write_text
from reports.paper import Paper

TABLES = ("leaderboard", "conditions", "folds", "paired")
FILES = tuple(f"{t}.{ext}" for t in TABLES for ext in ("csv", "tex"))


class ExportError(Exception):
    """The tables cannot be written: DIR holds files of an earlier export (no --overwrite), or the
    study has nothing to tabulate; the message names DIR or the study."""


def texts(p: Paper) -> dict[str, str]:
    """File name -> content of every export file."""
    out = {}
    for t in p.tables:
        out[f"{t.name}.csv"] = tabfmt.score_csv(t, p.comparisons.name)
        out[f"{t.name}.tex"] = tabfmt.score_latex(t)
    out["paired.csv"] = tabfmt.comparisons_csv(p.comparisons)
    out["paired.tex"] = tabfmt.comparisons_latex(p.comparisons)
    return {name: out[name] for name in FILES}


def check_target(out_dir, overwrite: bool = False) -> Location:
    """The export directory; raises ExportError when it would overwrite files without `overwrite`."""
    dest = locate(out_dir)
    if not overwrite:
        there = [name for name in FILES if exists(dest.join(name))]
        if there:
            raise ExportError(f"{dest.uri}: already holds {', '.join(there)}; give --overwrite to replace them "
                              "(or another --tables DIR)")
    return dest


def write_tables(p: Paper | None, dest: Location, study: str) -> list[str]:
    """Writes every export file under dest; returns their paths (URIs)."""
    if p is None:
        raise ExportError(f"{study}: nothing to tabulate yet (no configuration has dev scores)")
    for name, text in texts(p).items():
        write_text(dest.join(name), text)
    return [dest.join(name).uri for name in FILES]
