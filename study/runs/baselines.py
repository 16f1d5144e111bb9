"""The baseline stage of a study: the pooled-statistics linear probes
(study/training/baselines.py) fitted once per training missing rate of the study's cells, on the
study's splits, and written as rows of results.parquet beside the trials' (`kind` "baseline",
`stage` "baseline", `fusion` "probe"; docs/CONTRACTS.md). Deterministic (seed 0), a few seconds
on small data; `baselines: false` in the spec turns it off.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from study.fsio import atomic_write_text
from study.runs import results as R
from study.runs.spec import StudySpec

STAGE = "baseline"
FUSION = "probe"


def marker(study_dir: Path) -> Path:
    return Path(study_dir) / "stages" / f"{STAGE}.done"


def trial_id(rate: float, share: float | None = None) -> str:
    return f"baseline-{R.cell_slug(FUSION, rate, share)}"


def data_cells(spec: StudySpec) -> list[tuple[float, float | None]]:
    """The study's distinct data conditions of its cells: (train_missing_rate, audio_only_share
    when the cells fix it, else None)."""
    return list(dict.fromkeys(R.cell_of(c)[1:] for c in spec.cells.items()))


def probe_setup(spec: StudySpec, rate: float, share: float | None = None):
    """The probe's task and protocol for one cell's data condition: the protocol keys the cells
    fix (`fixed:`, the rate, the per-modality share); model keys never matter to it (a config a
    trial rejects still gets its probe)."""
    from study.data.protocol import ProtocolConfig
    from study.training.baselines import ProbeSetup
    from study.training.config import PROTOCOL_KEYS

    keys = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.fixed.items() if k in PROTOCOL_KEYS}
    cell = {"train_missing_rate": float(rate), **({} if share is None else {"audio_only_share": share})}
    protocol = ProtocolConfig(**{**keys, **cell, "seed": 0})
    return ProbeSetup(task=spec.task.kind, label_kind=spec.task.label_kind, protocol=protocol)


def baseline_rows(spec: StudySpec, ds, rate: float, share: float | None = None) -> list[dict]:
    """results.parquet rows of the probe at one cell's data condition (dev and test splits)."""
    from study.training.baselines import config_json, run_probes

    setup = probe_setup(spec, rate, share)
    started = dt.datetime.now(dt.timezone.utc).isoformat()
    result = run_probes(ds, setup)
    base = {
        "study": spec.name, "trial_id": trial_id(rate, share), "stage": STAGE, "parent_trial_id": None,
        "cell": R.cell_name(FUSION, rate, share), "fusion": FUSION, "train_missing_rate": float(rate),
        "seed": 0, "status": "completed", "error": None, "kind": "baseline",
        "epochs": None, "best_epoch": None, "wall_time_s": result.seconds,
        "cpus": 1.0, "gpus": 0.0, "workers": 1,
        "config": config_json(result, setup.protocol),
        "protocol": json.dumps(setup.protocol.to_dict()),
        "started_at": started, "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "normalize": True, "unpaired_share": result.unpaired_share,
    }
    rows = []
    for split, metrics in result.rows.items():
        from study.training.sanity import degenerate

        flagged = degenerate(metrics)
        rows += [{**base, "degenerate": flagged, "split": split, **R.metric_row(m)} for m in metrics]
    return rows


def run_baselines(spec: StudySpec, study_dir: Path, data_dir: str | Path, log=print) -> bool:
    """Fit and record the probes once per study (skipped when done, or `baselines: false`).
    Returns whether it ran."""
    if not spec.baselines or marker(study_dir).exists():
        return False
    from study.data.dataset import open_dataset

    ds = open_dataset(data_dir, check_values=False)
    rows = []
    for rate, share in data_cells(spec):
        rows += baseline_rows(spec, ds, rate, share)
    R.write_part(Path(study_dir), STAGE, rows, [])
    atomic_write_text(marker(study_dir), json.dumps({"rows": len(rows)}))
    R.write_results(Path(study_dir))
    return True
