"""Report at scale: a fake study of N search trials (default 2,000) with every evaluation condition of
the contract (every condition family by default), rendered to one HTML file. Prints generation time,
render time per section and in total, and the HTML size (targets: render < 30 s, HTML < 15 MB).

    .venv/bin/python benchmarks/report_scale.py [--trials 2000] [--dir /tmp/avstudy_scale] [--layout first]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fake_results import ALL_FAMILIES, FakeStudy, write_study  # noqa: E402

from reports.build import write_report  # noqa: E402
from reports.fsio import locate  # noqa: E402
from reports.html import FigureCounter  # noqa: E402
from reports.load import load_study, make_context  # noqa: E402
from reports.sections import SECTIONS, Report, build_section  # noqa: E402


def section_times(study_dir: Path) -> list[tuple[str, float, int]]:
    files = load_study(locate(study_dir))
    rep = Report(files, make_context(files), FigureCounter())
    out = []
    for sd in SECTIONS:
        t = time.perf_counter()
        sec = build_section(sd, rep)
        out.append((sd.anchor, time.perf_counter() - t, len(sec.body) if sec else 0))
    return out


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--dir", default="/tmp/avstudy_scale")
    ap.add_argument("--layout", choices=("families", "first"), default="families",
                    help="families: every condition family of docs/CONTRACTS.md (wave 2); first: miss_* only")
    return ap.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    fams = ALL_FAMILIES if args.layout == "families" else ()
    cfg = FakeStudy(name="scale", n_trials=args.trials, n_failed=max(2, args.trials // 100), max_epochs=30,
                    train_rates=(0.0, 0.25, 0.5, 0.75), families=fams, augment=bool(fams))
    t = time.perf_counter()
    study = write_study(Path(args.dir) / "scale", cfg)
    gen = time.perf_counter() - t
    import pandas as pd

    res = pd.read_parquet(study / "results.parquet")
    n_cond = res["condition"].nunique()
    print(f"generated {res['trial_id'].nunique()} trials ({args.trials} search), {n_cond} conditions per trial, "
          f"{len(res)} result rows in {gen:.1f} s")
    t = time.perf_counter()
    path = write_report(study)
    total = time.perf_counter() - t
    size = path.stat().st_size
    print(f"render: {total:.1f} s  html: {size / 1e6:.2f} MB  ({path})")
    ok = lambda good: "OK" if good else "MISSED"
    print(f"targets: render < 30 s: {ok(total < 30)}; html < 15 MB: {ok(size < 15e6)}")
    print("per section (s, KB of HTML):")
    for name, sec, n in section_times(study):
        print(f"  {name:12s} {sec:6.2f} {n / 1e3:8.1f}")
    return {"render_s": total, "bytes": size, "trials": args.trials}


def summary(res: dict) -> list[dict]:
    """For benchmarks/run_all.py: render time and size against their budgets."""
    return [{"measure": f"report of {res['trials']} search trials: render s", "alternatives": "render / 30 s budget",
             "ratio": res["render_s"] / 30, "target": "<= 1", "met": res["render_s"] <= 30},
            {"measure": "report HTML size", "alternatives": "size / 15 MB budget",
             "ratio": res["bytes"] / 15e6, "target": "<= 1", "met": res["bytes"] <= 15e6}]


if __name__ == "__main__":
    run(parse_args())
