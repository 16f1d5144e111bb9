"""Every benchmark, one table: measure, alternatives, ratio, target, met or not.

Each benchmark script in this folder measures its alternatives side by side in one run and
exposes `parse_args(argv)`, `run(args) -> result` and `summary(result) -> rows`; this script
runs them one after the other (never two at once: they time the same 2 cores) and prints the
rows of all of them.

    python benchmarks/run_all.py            # the full run (under 30 minutes on 2 cores)
    python benchmarks/run_all.py --quick    # a smoke run of every script (under 3 minutes; CI runs it)
    python benchmarks/run_all.py --only search_efficiency data_sharing
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name: (argv of the quick run, argv of the full run). One line per benchmark script.
BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    "train_step": (["--quick"], []),
    "search_efficiency": (["--quick"], ["--png", str(HERE.parent / "docs" / "search_efficiency.png")]),
    "data_sharing": (["--quick"], []),
    "checkpoint_bytes": (["--quick"], []),
    "extract_throughput": (["--quick"], []),
    "report_scale": (["--trials", "100"], []),
    "report_folds": (["--trials", "20", "--folds", "2", "--seeds", "2"], []),
    "baselines": (["--quick"], []),
    "resplit_bytes": (["--quick"], []),
    "schedule_ab": (["--quick", "--seeds", "2", "--epochs", "2"], []),
    "grad_norm_cost": (["--quick"], []),
    "packing": (["--quick"], []),
    "gpu_check": (["--device", "cpu", "--quick"], ["--device", "cpu", "--quick"]),  # the GPU run: gpu_check.sh
}


def load(name: str):
    """The benchmark module under its own name (spawned child processes re-import it by name)."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    return importlib.import_module(name)


def run_one(name: str, quick: bool) -> tuple[list[dict], float]:
    module = load(name)
    argv = BENCHMARKS[name][0 if quick else 1]
    t0 = time.perf_counter()
    result = module.run(module.parse_args(argv))
    rows = module.summary(result)
    if quick:  # a smoke run measures too little to judge a target
        rows = [{**r, "met": None} for r in rows]
    return [{"benchmark": name, **r} for r in rows], time.perf_counter() - t0


def fmt(rows: list[dict]) -> str:
    cols = ("benchmark", "measure", "alternatives", "ratio", "target", "met")
    cell = lambda r, c: (f"{r[c]:.3g}" if isinstance(r.get(c), float) else
                         {True: "met", False: "MISSED", None: "-"}.get(r.get(c), str(r.get(c))) if c == "met"
                         else str(r.get(c, "")))
    table = [[cell(r, c) for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    line = lambda vals: " | ".join(v.ljust(w) for v, w in zip(vals, widths))
    return "\n".join([line(cols), "-+-".join("-" * w for w in widths)] + [line(t) for t in table])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run of every benchmark (CI)")
    p.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run these benchmarks only")
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args(argv)
    rows, failed = [], []
    for name in args.only or BENCHMARKS:
        print(f"== {name}", flush=True)
        try:
            got, seconds = run_one(name, args.quick)
        except Exception:  # one broken benchmark must not hide the others' numbers
            traceback.print_exc()
            failed.append(name)
            continue
        print(f"== {name}: {seconds:.0f} s", flush=True)
        rows += got
    print("\n" + fmt(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
