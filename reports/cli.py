"""`avstudy report STUDY_DIR [--out FILE]` and `avstudy report --index ROOT [--out FILE]`."""
from __future__ import annotations

import argparse
import sys


def add_subparser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("report", help="write a study's self-contained HTML report (or an index of studies)",
                              description="Write STUDY_DIR/report.html, or with --index ROOT an index.html of "
                                          "every study under ROOT (local directory or s3:// URI).")
    p.add_argument("study_dir", nargs="?", help="study directory (holds study.json, results.parquet)")
    p.add_argument("--index", metavar="ROOT", help="write ROOT/index.html for every study under ROOT")
    p.add_argument("--out", metavar="FILE", help="output file (default STUDY_DIR/report.html or ROOT/index.html)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from reports.build import write_index, write_report
    from reports.load import StudyError

    if bool(args.index) == bool(args.study_dir):
        print("avstudy report: give either STUDY_DIR or --index ROOT", file=sys.stderr)
        return 2
    try:
        path = write_index(args.index, args.out) if args.index else write_report(args.study_dir, args.out)
    except StudyError as e:  # no such directory, not a study, or a broken one
        print(f"avstudy report: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # e.g. the output cannot be written
        print(f"avstudy report: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="avstudy")
    add_subparser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
