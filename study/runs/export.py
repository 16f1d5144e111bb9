"""`avstudy export-best`: the dev-selected configuration of a finished study (never test) as a
config file `avstudy train --config` accepts. Torch-free."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import yaml

from study.fsio import atomic_write_text
from study.training.config import objective_value


def best_config(study_dir: str | Path, stage: str = "rerun") -> tuple[dict, str]:
    """(flat config with its preset, a note naming the trial) of the dev-selected configuration.

    search: the trial with the best first objective on dev over all cells. rerun: the
    configuration with the best mean first objective on dev over its seeds, exported with its
    first seed (so `avstudy train --config` reproduces that run). Test rows are never read.
    """
    import pandas as pd

    study_dir = Path(study_dir)
    meta_path, results_path = study_dir / "study.json", study_dir / "results.parquet"
    for p in (meta_path, results_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: missing (is {study_dir} a study directory?)")
    obj, meta = _first_objective(meta_path)
    df = _dev_rows(results_path, stage)
    if not len(df):
        raise ValueError(f"{results_path}: no finished {stage} trials with dev rows")
    scores = []
    for tid, rows in df.groupby("trial_id", sort=True):
        v = objective_value(rows.to_dict("records"), obj["condition"], obj["metric"], obj["mode"])
        first = rows.iloc[0]
        group = first["parent_trial_id"] if stage == "rerun" and pd.notna(first["parent_trial_id"]) else tid
        scores.append({"trial_id": tid, "group": group, "value": v, "seed": int(first["seed"]),
                       "config": first["config"]})
    table = pd.DataFrame(scores).dropna(subset=["value"])
    if not len(table):
        raise ValueError(f"{results_path}: no {stage} trial has a finite dev {obj['key']}")
    sign = 1 if obj["mode"] == "max" else -1
    means = table.groupby("group")["value"].mean() * sign
    best_group = means.sort_values(ascending=False, kind="stable").index[0]
    pick = table[table["group"] == best_group].sort_values(["seed", "trial_id"]).iloc[0]
    n = int((table["group"] == best_group).sum())
    note = (f"{stage} trial {pick['trial_id']} (dev {obj['key']} "
            f"{'mean over ' + str(n) + ' seeds ' if n > 1 else ''}{means[best_group] * sign:.4f}; "
            f"study {meta.get('name')})")
    try:
        flat = json.loads(pick["config"])
    except (TypeError, ValueError):
        flat = None
    if not isinstance(flat, dict):
        raise ValueError(f"{results_path}: trial {pick['trial_id']}: `config` is not a JSON object "
                         "of flat config keys")
    return flat, note


def _first_objective(meta_path: Path) -> tuple[dict, dict]:
    """(the study's first objective, study.json), or a ValueError naming study.json."""
    try:
        meta = json.loads(meta_path.read_text())
        obj = meta["objectives"][0]
        obj = {"metric": obj["metric"], "condition": obj["condition"], "mode": obj.get("mode", "max"),
               "key": obj.get("key") or f"{obj['condition']}_{obj['metric']}"}
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{meta_path}: not valid JSON ({exc})") from None
    except (KeyError, IndexError, TypeError, AttributeError):
        raise ValueError(f"{meta_path}: no objectives (a list of {{metric, condition, mode}} is "
                         "expected under `objectives`)") from None
    if obj["mode"] not in ("max", "min"):
        raise ValueError(f"{meta_path}: objectives[0].mode is {obj['mode']!r}, not max or min")
    return obj, meta


ROW_COLUMNS = ("trial_id", "stage", "split", "status", "seed", "parent_trial_id", "config", "condition")


def _dev_rows(results_path: Path, stage: str):
    """The finished dev rows of `stage`, or a ValueError naming results.parquet."""
    import pandas as pd
    import pyarrow as pa

    try:
        df = pd.read_parquet(results_path)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise ValueError(f"{results_path}: not a readable parquet file ({type(exc).__name__})") from None
    missing = [c for c in ROW_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{results_path}: lacks column(s) {missing}")
    df = df[(df["split"] == "dev") & (df["stage"] == stage)]
    return df[df["status"] != "failed"]


def export_best(study_dir: str | Path, out: str | Path, stage: str = "rerun") -> str:
    flat, note = best_config(study_dir, stage)
    config = shlex.quote(Path(out).name)
    text = f"# avstudy export-best: {note}\n# reproduce: avstudy train --data DATA --config {config}\n"
    text += yaml.safe_dump(_plain(flat), sort_keys=True)
    atomic_write_text(out, text)
    return note


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x
