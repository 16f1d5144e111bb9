"""`avstudy report STUDY_DIR [--out FILE] [--tables DIR [--overwrite]] [--correction holm|fdr_bh]`,
`avstudy report --compare STUDY_A STUDY_B ... [--out FILE]` and `avstudy report --index ROOT [--out FILE]`."""
from __future__ import annotations

import argparse
import sys

CORRECTION_CHOICES = ("holm", "fdr_bh")  # reports.stats.CORRECTIONS (not imported: --help stays light)


def add_subparser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("report", help="write a study's self-contained HTML report (or an index of studies)",
                              description="Write STUDY_DIR/report.html, or with --index ROOT an index.html of "
                                          "every study under ROOT (local directory or s3:// URI), or with "
                                          "--compare one page comparing studies. --tables DIR also writes the "
                                          "report's tables as CSV and LaTeX (docs/export.md).")
    p.add_argument("study_dir", nargs="?", help="study directory (holds study.json, results.parquet)")
    p.add_argument("--index", metavar="ROOT", help="write ROOT/index.html for every study under ROOT")
    p.add_argument("--compare", metavar="STUDY", nargs="+",
                   help="write one page comparing these studies (same task) on the strategies and scores they "
                        "share (default --out ./compare.html)")
    p.add_argument("--out", metavar="FILE", help="output file (default STUDY_DIR/report.html, ROOT/index.html "
                                                 "or ./compare.html)")
    p.add_argument("--tables", metavar="DIR", help="also write leaderboard, conditions, folds and paired tables "
                                                   "(.csv and .tex) into DIR; refuses to replace earlier ones")
    p.add_argument("--overwrite", action="store_true", help="with --tables: replace the table files DIR holds")
    p.add_argument("--correction", choices=CORRECTION_CHOICES, default="holm",
                   help="multiple-comparison correction of the paired table: holm (family-wise error, default) "
                        "or fdr_bh (Benjamini-Hochberg false discovery rate)")
    p.set_defaults(func=run)
    return p


def _usage_error(args: argparse.Namespace) -> str | None:
    modes = [bool(args.study_dir), bool(args.index), bool(args.compare)]
    if sum(modes) != 1:
        return "give exactly one of STUDY_DIR, --index ROOT or --compare STUDY ..."
    if args.tables and not args.study_dir:
        return "--tables goes with STUDY_DIR"
    if args.overwrite and not args.tables:
        return "--overwrite goes with --tables DIR"
    return None


def _write(args: argparse.Namespace) -> list:
    from reports.build import write_index, write_report
    from reports.compare import write_compare

    if args.index:
        return [write_index(args.index, args.out)]
    if args.compare:
        return [write_compare(args.compare, args.out, correction=getattr(args, "correction", "holm"))]
    path = write_report(args.study_dir, args.out, correction=getattr(args, "correction", "holm"),
                        tables=args.tables, overwrite=bool(args.overwrite))
    return [path] + ([args.tables] if args.tables else [])


def run(args: argparse.Namespace) -> int:
    from reports.export import ExportError
    from reports.load import StudyError

    for name in ("compare", "tables", "overwrite"):  # a parser built before these flags existed
        if not hasattr(args, name):
            setattr(args, name, None)
    problem = _usage_error(args)
    if problem:
        print(f"avstudy report: {problem}", file=sys.stderr)
        return 2
    try:
        paths = _write(args)
    except (StudyError, ExportError) as e:  # no such directory, not a study, a broken one; tables in the way
        print(f"avstudy report: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # e.g. the output cannot be written
        print(f"avstudy report: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    for p in paths:
        print(p)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="avstudy")
    add_subparser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
