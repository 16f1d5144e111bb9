"""The effective training recipe of a study's trials, for the report header (torch-free).

Read from results.parquet: the `recipe` column (JSON of study.training.config TrainConfig.recipe:
the schedule as it ran, optimiser, lr, weight decay and what it decays, clip, batch, epochs and
patience, selection, loss weights), one per trial. Studies written before that column existed
fall back to the trial's `config` JSON, where a schedule "auto" is shown as such (the strategy's
own, which the report cannot resolve without the model's table).
"""
from __future__ import annotations

import json

import pandas as pd

# (recipe key, label) in the order the header prints them
FIELDS = (("preset", "preset"), ("schedule", "schedule"), ("optimizer", "optimiser"), ("lr", "lr"),
          ("weight_decay", "weight decay"), ("decay_on", "decay on"), ("grad_clip", "clip"),
          ("batch_size", "batch"), ("max_epochs", "epochs"), ("patience", "patience"),
          ("selection", "selection"), ("class_balanced", "class-balanced"),
          ("unimodal_weight", "unimodal loss weight"), ("recon_weight", "recon weight"),
          ("aux_weights", "aux weights"))


def _from_config(config: dict) -> dict:
    """A partial recipe from a flat config (studies without the `recipe` column)."""
    out = {k: config.get(k) for k in ("preset", "optimizer", "lr", "weight_decay", "grad_clip",
                                      "batch_size", "max_epochs", "patience", "class_balanced",
                                      "unimodal_weight", "recon_weight")}
    schedule = config.get("schedule")
    out["schedule"] = "auto (the strategy's own)" if schedule == "auto" else schedule
    metric = config.get("select_metric") or "primary metric"
    out["selection"] = f"{config.get('select_condition', 'av')} {metric} ({config.get('select_mode', 'max')})"
    return {k: v for k, v in out.items() if v is not None}


def _load(text) -> dict:
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def trial_recipes(results: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: fusion plus each recipe key (NaN where nothing records it)."""
    if results is None or not len(results) or "trial_id" not in results:
        return pd.DataFrame()
    tr = results.drop_duplicates("trial_id")
    rows = []
    for _, r in tr.iterrows():
        recipe = _load(r.get("recipe")) or _from_config(_load(r.get("config")))
        rows.append({"fusion": r.get("fusion"), **recipe})
    return pd.DataFrame(rows)


def _text(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v:g}" for k, v in value.items()) or "none"
    return str(value)


def _values(col: pd.Series, key: str) -> str:
    vals = [v for v in col if not (isinstance(v, float) and pd.isna(v))]
    if not vals:
        return ""
    if key == "grad_clip" and all(isinstance(v, (int, float)) for v in vals) and set(vals) == {0}:
        return "none"
    distinct = list(dict.fromkeys(json.dumps(v, sort_keys=True, default=str) for v in vals))
    if len(distinct) == 1:
        return _text(vals[0])
    nums = [v for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(nums) == len(vals):
        return f"{min(nums):g} to {max(nums):g} (varies)"
    return " | ".join(_text(json.loads(d)) for d in distinct) + " (varies)"


def recipe_lines(results: pd.DataFrame) -> list[str]:
    """'fusion: schedule ... · optimiser ... · ...' per fusion strategy ([] without results)."""
    tr = trial_recipes(results)
    if tr.empty:
        return []
    lines = []
    for fusion, g in tr.groupby("fusion", sort=True, dropna=False):
        parts = []
        for key, label in FIELDS:
            if key in g:
                text = _values(g[key], key)
                if text:
                    parts.append(f"{label} {text}")
        if "early_stopping" in g and not g["early_stopping"].dropna().astype(bool).any():
            parts.append("no early stopping (patience >= epochs)")
        lines.append(f"{fusion}: " + " · ".join(parts))
    return lines
