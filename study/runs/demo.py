"""The main job: synthetic corpus -> demo study on a local Ray instance -> HTML report."""
from __future__ import annotations

import time
from importlib import resources
from pathlib import Path


def demo_spec_path() -> Path:
    return Path(str(resources.files("search_spaces") / "demo.yaml"))


def run_demo(out: Path, spec_path: Path | None = None, resume: bool | None = None) -> int:
    """Run (or, if `out` holds an unfinished demo, resume) the demo study and write its report."""
    from reports.build import write_report
    from study.runs.spec import load_spec
    from study.runs.stages import sweep
    from study.runs.status import progress_table

    start = time.perf_counter()
    spec = load_spec(spec_path or demo_spec_path())
    if resume is None:
        resume = (Path(out) / "study.json").exists()
    study_dir = sweep(spec, out=out, resume=resume)
    report = write_report(study_dir)
    print(progress_table(study_dir))
    minutes = (time.perf_counter() - start) / 60
    print(f"\ndemo finished in {minutes:.1f} min")
    print(f"results: {study_dir / 'results.parquet'} (one row per trial x stage x condition)")
    print(f"curves:  {study_dir / 'curves.parquet'}")
    print(f"optuna:  optuna-dashboard sqlite:///{(study_dir / 'optuna.db').resolve()}")
    print(f"report:  {Path(report).resolve()}")
    return 0
