"""The main job: synthetic corpus -> demo study on a local Ray instance -> HTML report."""
from __future__ import annotations

import sys
import time
from importlib import resources
from pathlib import Path
from typing import TextIO


def demo_spec_path() -> Path:
    return Path(str(resources.files("search_spaces") / "demo.yaml"))


def is_started(out: Path) -> bool:
    """A demo directory that a previous run got far enough to write into (spec.yaml first)."""
    return (Path(out) / "spec.yaml").exists() or (Path(out) / "study.json").exists()


def run_demo(out: Path, spec_path: Path | None = None, resume: bool | None = None,
             verbose: bool = False, refresh: float | None = None, live: bool = True,
             stream: TextIO | None = None) -> int:
    """Run (or, if `out` holds an unfinished demo, resume) the demo study and write its report."""
    from reports.build import write_report
    from study.runs.console import closing_lines, watched_sweep
    from study.runs.spec import SpecError, load_spec

    stream = stream or sys.stdout
    start = time.perf_counter()
    spec = load_spec(spec_path or demo_spec_path())
    out = Path(out).resolve()
    if resume is None:
        resume = is_started(out)
    if resume:
        stream.write(f"resuming the demo in {out} (start afresh with `avstudy demo --out NEW_DIR`)\n")
    out.mkdir(parents=True, exist_ok=True)
    try:
        log = watched_sweep(spec, out, resume, verbose, refresh, live, stream)
    except SpecError as exc:
        raise SpecError(f"{exc}\n(demo: `avstudy demo --out {out}` resumes the demo started there "
                        f"with the same spec; `avstudy demo --out NEW_DIR` starts a new one)") from None
    report = write_report(out)
    stream.write(f"demo finished in {(time.perf_counter() - start) / 60:.1f} min\n")
    closing_lines(out, log, stream, report=Path(report))
    return 0
