"""The report of a cross-validated study with its tables for papers (issue 20): 5 fusion strategies
x 5 folds x 3 seeds in the re-run and final stages, a linear-probe baseline, every condition
family. Prints the time of `avstudy report STUDY --tables DIR` in a fresh process (imports
included: what a user waits for; target < 10 s on this machine's 2 cores), and in-process the
report alone and the report with its tables.

    .venv/bin/python benchmarks/report_folds.py [--trials 100] [--folds 5] [--dir /tmp/avstudy_folds]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fake_results import ALL_FAMILIES, FUSIONS, FakeStudy, write_study  # noqa: E402

from reports.build import write_report  # noqa: E402

TARGET_S = 10.0


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=100, help="search trials")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--dir", default="/tmp/avstudy_folds")
    return ap.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    cfg = FakeStudy(name="folds", n_trials=args.trials, fusions=FUSIONS[:5], train_rates=(0.0,),
                    seeds=tuple(range(args.seeds)), folds=args.folds, baselines=True, families=ALL_FAMILIES)
    out = Path(args.dir)
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    study = write_study(out / "study", cfg)
    gen = time.perf_counter() - t
    t = time.perf_counter()
    write_report(study)
    report = time.perf_counter() - t
    t = time.perf_counter()
    write_report(study, out / "with_tables.html", tables=out / "tables")
    both = time.perf_counter() - t
    files = sorted(p.name for p in (out / "tables").iterdir())
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "reports.cli", "report", str(study), "--tables", str(out / "cli_tables")],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    cli = time.perf_counter() - t
    print(f"generated {len(cfg.fusions)} strategies x {args.folds} folds x {args.seeds} seeds (+ baseline), "
          f"{args.trials} search trials in {gen:.1f} s")
    print(f"in process: report {report:.2f} s (first, imports included); report + tables ({len(files)} files) "
          f"{both:.2f} s")
    print(f"avstudy report STUDY --tables DIR, fresh process: {cli:.2f} s "
          f"(target < {TARGET_S:g} s: {'OK' if cli < TARGET_S else 'MISSED'})")
    return {"report_s": report, "report_tables_s": both, "cli_s": cli, "folds": args.folds, "seeds": args.seeds}


def summary(res: dict) -> list[dict]:
    """For benchmarks/run_all.py: `avstudy report --tables` (fresh process) against the 10 s budget."""
    return [{"measure": f"report + tables, 5 strategies x {res['folds']} folds x {res['seeds']} seeds: s",
             "alternatives": f"CLI wall time / {TARGET_S:g} s budget", "ratio": res["cli_s"] / TARGET_S,
             "target": "<= 1", "met": res["cli_s"] <= TARGET_S}]


if __name__ == "__main__":
    run(parse_args())
