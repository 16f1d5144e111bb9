"""Results files of a study (layout pinned in docs/CONTRACTS.md).

`STUDY_DIR/results.parquet` (one row per trial x stage x split x condition),
`STUDY_DIR/curves.parquet` (one row per trial x epoch) and `STUDY_DIR/study.json`.
Each finished experiment (a search cell, the rerun) is first written as its own part under
`STUDY_DIR/parts/`, so a study interrupted half-way still has tidy results for what finished.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from study import vocab
from study.fsio import atomic_write_json, atomic_write_parquet
from study.provenance import git_sha, versions
from study.runs.selection import selection_note
from study.runs.spec import StudySpec, data_location
from study.training.config import EPOCH_INFO, unwrap_job
from study.training.sanity import degenerate

STAGES = vocab.STAGES  # and "baseline": the probes' rows (kind "baseline")
ROW_KEYS = ("study", "trial_id", "stage", "parent_trial_id", "cell", "fusion",
            "train_missing_rate", "seed", "fold", "status", "error", "split", "condition",
            "test_missing_rate")


@dataclass(frozen=True)
class TrialRecord:
    """What results need of one finished Tune trial (see `record_from_tune`)."""

    tune_id: str
    config: dict  # the trainable's config (flat, or {"job": {...}})
    last: dict  # last reported metrics ({} when it failed before reporting)
    error: str | None
    curves: pd.DataFrame | None


def cell_name(fusion: str, rate: float, share: float | None = None) -> str:
    """fusion=vavl|r=0.3, or with per-modality cells (cells.train_missing, `share` given)
    fusion=vavl|a=0.1|v=0.6: the audio and video missing rates."""
    if share is None:
        return f"fusion={fusion}|r={rate:g}"
    pa, pv = _rates(rate, share)
    return f"fusion={fusion}|a={pa:g}|v={pv:g}"


def cell_slug(fusion: str, rate: float, share: float | None = None) -> str:
    """File-system friendly cell name (Tune experiment names)."""
    if share is None:
        return f"{fusion}-r{rate:g}"
    pa, pv = _rates(rate, share)
    return f"{fusion}-a{pa:g}-v{pv:g}"


def _rates(rate: float, share: float) -> tuple[float, float]:
    """(p_audio, p_video) rounded to 6 places (r·(1−s), r·s: float noise stays out of names)."""
    return round(rate * (1.0 - share), 6), round(rate * share, 6)


def cell_of(cell: Mapping) -> tuple[str, float, float | None]:
    """(fusion, train_missing_rate, audio_only_share or None) of a cell dict (Cells.items)."""
    share = cell.get("audio_only_share")
    return cell["fusion"], float(cell["train_missing_rate"]), None if share is None else float(share)


def record_from_tune(trial: Any, result: Any) -> TrialRecord:
    """A TrialRecord from a Tune Trial and its Result (study.runs.ray_exec.trials_of)."""
    error = None
    if result.error is not None or trial.status == "ERROR":
        error = _short_error(result.error)
    curves = result.metrics_dataframe
    return TrialRecord(tune_id=trial.trial_id, config=dict(trial.config),
                       last=dict(result.metrics or {}), error=error,
                       curves=curves if curves is not None and len(curves) else None)


def _short_error(exc: Any) -> str:
    text = str(exc) if exc is not None else "trial failed"
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return "\n".join(lines[-6:])[-2000:]


def trial_status(rec: TrialRecord) -> str:
    if rec.error is not None:
        return "failed"
    return "completed" if rec.last.get("finished") else "early_stopped"


def _param_value(v: Any) -> Any:
    if isinstance(v, bool) or isinstance(v, str):
        return str(v)
    return float(v)


def _timestamps(last: dict) -> tuple[str | None, str | None]:
    if "timestamp" not in last:
        return None, None
    end = float(last["timestamp"])
    start = end - float(last.get("time_total_s", 0.0))
    iso = lambda t: dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat()
    return iso(start), iso(end)


def trial_rows(rec: TrialRecord, *, spec: StudySpec, stage: str, trial_id: str,
               parent_trial_id: str | None, searched: Iterable[str],
               rows_key: str = "best_rows", split: str = "dev") -> list[dict]:
    """Tidy rows of one trial: one per evaluation condition, or one `failed` row."""
    flat, meta = unwrap_job(rec.config)
    r = spec.resources
    started, finished = _timestamps(rec.last)
    base = {
        "study": spec.name, "trial_id": trial_id, "stage": stage,
        "parent_trial_id": parent_trial_id,
        "cell": cell_name(flat["fusion"], float(flat["train_missing_rate"]),
                          float(flat["audio_only_share"]) if spec.cells.train_missing else None),
        "fusion": flat["fusion"], "train_missing_rate": float(flat["train_missing_rate"]),
        "seed": int(flat.get("seed", 0)), "status": trial_status(rec), "error": rec.error,
        # the fold (0: a one-partition study); each row of a trial that trained several folds
        # (search_folds: mean) carries its own; dev selected on test (dataset.folds.dev: test)
        "fold": int(meta.get("fold", 0)), "selected_on_test": _selected_on_test(spec),
        "epochs": _int(rec.last.get("epoch")), "best_epoch": _int(rec.last.get("best_epoch")),
        "wall_time_s": _float(rec.last.get("time_total_s")),
        "cpus": r.workers * r.cpus_per_worker, "gpus": r.workers * r.gpus_per_worker,
        "workers": r.workers,
        "config": rec.last.get("config_json") or json.dumps(flat, sort_keys=True),
        "recipe": rec.last.get("recipe_json"),  # the training as it ran (TrainConfig.recipe)
        "protocol": rec.last.get("protocol_json") or json.dumps(
            {k: flat.get(k) for k in ("train_missing_rate", "audio_only_share",
                                      "modality_dropout", "seed")}),
        "started_at": started, "finished_at": finished,
        "pack_id": rec.last.get("pack_id"),  # the Tune trial it trained in, packed (None: alone)
    }
    base.update({f"param__{k}": _param_value(flat[k]) for k in searched if k in flat})
    base.update(normalize=bool(rec.last.get("normalize", flat.get("normalize", True))),
                unpaired_share=_unpaired_share(rec))
    payload = rec.last.get(rows_key)
    metrics = json.loads(payload) if rec.error is None and payload else []
    if not metrics:  # failed, or no evaluated epoch to report: the trial still has its row
        return [{**base, "degenerate": None, "split": None, "condition": None,
                 "test_missing_rate": None}]
    base["degenerate"] = degenerate(metrics)
    return [{**base, "split": split, **_metric_row(m)} for m in metrics]


def _selected_on_test(spec: StudySpec) -> bool:
    folds = spec.dataset.folds
    return bool(folds is not None and folds.selected_on_test)


def _unpaired_share(rec: TrialRecord) -> float | None:
    """Realised share of training samples seen with one stream, mean over the trial's epochs."""
    c = rec.curves
    if c is not None and "unpaired_share" in c.columns:
        c = c.drop_duplicates("epoch", keep="last") if "epoch" in c.columns else c
        return float(c["unpaired_share"].mean())
    return _float(rec.last.get("unpaired_share"))


def _metric_row(m: dict) -> dict:
    row = {k: v for k, v in m.items() if k != "confusion"}
    row["confusion"] = json.dumps(m["confusion"]) if m.get("confusion") is not None else None
    rate = row.get("test_missing_rate")
    row["test_missing_rate"] = float(rate) if rate is not None else None
    return row


metric_row = _metric_row  # the baseline stage's rows take the same layout (study/runs/baselines.py)


def _int(v: Any) -> int | None:
    return None if v is None else int(v)


def _float(v: Any) -> float | None:
    return None if v is None else float(v)


def curve_rows(rec: TrialRecord, *, study: str, stage: str, trial_id: str) -> pd.DataFrame:
    """One row per reported epoch: epoch, time_s, train_loss, dev_* metrics."""
    if rec.curves is None:
        return pd.DataFrame()
    c = rec.curves
    keep = ["epoch", "train_loss", *EPOCH_INFO] + [k for k in c.columns if k.startswith("dev_")]
    out = c[[k for k in keep if k in c.columns]].copy()
    out.insert(0, "time_s", c["time_total_s"] if "time_total_s" in c else float("nan"))
    out = out.drop_duplicates("epoch", keep="last")  # a resumed trial may report an epoch twice
    out.insert(0, "stage", stage)
    out.insert(0, "trial_id", trial_id)
    out.insert(0, "study", study)
    return out.reset_index(drop=True)


# ----------------------------------------------------------------------------- files


def parts_dir(study_dir: Path) -> Path:
    return Path(study_dir) / "parts"


def write_part(study_dir: Path, name: str, rows: list[dict], curves: list[pd.DataFrame]) -> None:
    """Write one experiment's rows/curves atomically to parts/<name>.{results,curves}.parquet."""
    d = parts_dir(study_dir)
    d.mkdir(parents=True, exist_ok=True)
    _atomic_parquet(pd.DataFrame(rows), d / f"{name}.results.parquet")
    frames = [c for c in curves if len(c)]
    _atomic_parquet(pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(),
                    d / f"{name}.curves.parquet")


def _atomic_parquet(df: pd.DataFrame, path: Path) -> None:
    atomic_write_parquet(path, df)


def read_parts(study_dir: Path, kind: str) -> pd.DataFrame:
    files = sorted(parts_dir(study_dir).glob(f"*.{kind}.parquet"))
    frames = [f for f in (pd.read_parquet(p) for p in files) if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def write_results(study_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Merge all parts into results.parquet and curves.parquet (ordered columns first)."""
    results = read_parts(study_dir, "results")
    if len(results):
        key = ["trial_id", "stage", "split", "condition"]
        if "fold" in results.columns:  # parts written before folds have none: fold 0
            results["fold"] = results["fold"].fillna(0).astype(int)
            key.append("fold")
        results = results.drop_duplicates(key, keep="last")
        results["kind"] = results["kind"].fillna("model") if "kind" in results else "model"
        first = [c for c in ROW_KEYS if c in results.columns]
        results = results[first + [c for c in results.columns if c not in first]]
    curves = read_parts(study_dir, "curves")
    _never_fewer_rows(Path(study_dir), {"results": results, "curves": curves})
    _atomic_parquet(results, Path(study_dir) / "results.parquet")
    _atomic_parquet(curves, Path(study_dir) / "curves.parquet")
    return results, curves


class PartsMissing(FileNotFoundError):
    """parts/ holds fewer rows than the results file it would replace (parts lost or moved)."""


def _never_fewer_rows(study_dir: Path, merged: dict[str, pd.DataFrame]) -> None:
    """Refuse to replace results/curves.parquet with fewer rows: the parts it is merged from
    are missing, and rewriting would lose finished trials."""
    import pyarrow.parquet as pq

    for kind, frame in merged.items():
        path = study_dir / f"{kind}.parquet"
        if not path.exists():
            continue
        try:
            old = pq.ParquetFile(path).metadata.num_rows
        except Exception:
            continue
        if len(frame) < old:
            raise PartsMissing(
                f"{path} has {old} rows but {parts_dir(study_dir)} holds only {len(frame)}: parts are "
                f"missing, so {path.name} is kept unchanged (restore parts/ from a copy, or move "
                f"{path.name} away to rebuild it from the parts)")


def _dataset_labels(spec: StudySpec) -> dict:
    """Classes (in the order of the confusion matrices) and dimensions of the study's dataset."""
    meta_path = Path(data_location(spec)[0]) / "dataset.json"
    if not meta_path.exists():
        return {}
    meta = json.loads(meta_path.read_text())
    return {"classes": meta.get("classes", []), "dimensions": meta.get("dimensions", [])}


def folds_note(spec: StudySpec) -> dict | None:
    """study.json `folds`: how many, how they were made, how the search met them; None for a
    one-partition study (its rows have fold 0)."""
    folds = spec.dataset.folds
    if folds is None:
        return None
    search = ("the first fold's dev" if spec.search_folds == "first" else
              f"the mean dev score over the {folds.n} folds")
    return {"k": folds.n, "by": folds.by, "seed": folds.seed if folds.by else None,
            "dev": folds.dev if folds.by else "listed", "entries": list(folds.entries),
            "search": spec.search_folds, "selected_on_test": folds.selected_on_test,
            "text": f"{folds.describe()}; search on {search}; rerun and final: each selected "
                    f"configuration x seed x fold"}


def _overrides(study_dir: Path) -> dict:
    path = Path(study_dir) / "overrides.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _searched(spec: StudySpec) -> dict:
    from study.runs.spaces_info import searched

    return json.loads(json.dumps(searched(spec), default=str))  # choices as JSON can hold them


def write_study_json(study_dir: Path, spec: StudySpec, status: str,
                     started_at: str | None = None, gpu_auto: dict | None = None) -> dict:
    path = Path(study_dir) / "study.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    doc = {
        "name": spec.name, "status": status,
        "work_dir": str(Path(study_dir).resolve()),  # the driver's copy (a remote study's resume)
        "started_at": started_at or old.get("started_at") or now,
        "finished_at": now if status == "finished" else None,
        "versions": versions(), "git_sha": git_sha(), "spec": spec.to_dict(),
        "objectives": [{"metric": o.metric, "condition": o.condition, "mode": o.mode,
                        "key": o.key} for o in spec.objectives],
        "primary_metric": spec.primary_metric, "task": spec.task.kind,
        "selection": {**selection_note(spec),  # dev only: top-k rule, checkpoint, seeds, data conditions
                      "selected_on_test": _selected_on_test(spec)},
        "folds": folds_note(spec),
        "overrides": _overrides(study_dir),  # `sweep --set KEY=VALUE`, already applied to `spec`
        "searched": _searched(spec),  # every searched parameter with its range (`avstudy spaces SPEC`)
        # gpus_per_worker: auto -> the share given and why (the memory probe); None: a number was given
        "gpus_per_worker_auto": (gpu_auto if gpu_auto is not None
                                 else old.get("gpus_per_worker_auto")) or None,
        **_dataset_labels(spec),
    }
    atomic_write_json(path, doc, indent=1)
    return doc
