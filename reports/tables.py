"""Pure table functions over results.parquet rows: trials, scores, compute, leaderboard, failures."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from reports.load import FIXED_CONDITIONS, Context

STAGES = ("search", "rerun", "final")
TRIAL_COLS = ("trial_id", "stage", "parent_trial_id", "cell", "fusion", "train_missing_rate", "seed",
              "status", "error", "epochs", "best_epoch", "wall_time_s", "cpus", "gpus", "workers",
              "started_at", "finished_at")


def condition_order(conditions) -> list[str]:
    """av, audio_only, video_only, miss_* by rate, robustness, then anything else."""
    def key(c: str):
        if c in FIXED_CONDITIONS:
            return (0, FIXED_CONDITIONS.index(c), c)
        if c.startswith("miss_"):
            try:
                return (1, float(c[5:]), c)
            except ValueError:
                return (1, math.inf, c)
        return (2, 0 if c == "robustness" else 1, c)
    return sorted({str(c) for c in conditions if isinstance(c, str)}, key=key)


def log_scale(values) -> bool:
    """Whether positive values spanning >= 2 decades look log-uniformly sampled: their median sits
    nearer the middle of the range in log space than in linear space."""
    v = np.asarray(pd.Series(values).dropna(), dtype=float)
    if len(v) < 2 or v.min() <= 0 or v.max() / v.min() < 100:
        return False
    lo, hi, med = v.min(), v.max(), np.median(v)
    p_lin = (med - lo) / (hi - lo)
    p_log = (np.log(med) - np.log(lo)) / (np.log(hi) - np.log(lo))
    return abs(p_log - 0.5) < abs(p_lin - 0.5)


def param_columns(results: pd.DataFrame) -> list[str]:
    return [c for c in results.columns if c.startswith("param__")]


def trials(results: pd.DataFrame) -> pd.DataFrame:
    """One row per trial_id (its first row): the per-trial columns and param__*."""
    cols = [c for c in TRIAL_COLS if c in results.columns] + param_columns(results)
    return results.drop_duplicates("trial_id")[cols].reset_index(drop=True)


def scores(results: pd.DataFrame, metric: str, stage: str, split: str) -> pd.DataFrame:
    """(trials, conditions) table of `metric` for one stage and split; index trial_id."""
    rows = results[(results["stage"] == stage) & (results["split"] == split) & results["condition"].notna()]
    if metric not in rows.columns or rows.empty:
        return pd.DataFrame()
    wide = rows.pivot_table(index="trial_id", columns="condition", values=metric, aggfunc="mean")
    return wide[condition_order(wide.columns)]


def evidence(results: pd.DataFrame) -> tuple[str, str] | None:
    """Best available (stage, split) for comparing strategies: final/test > rerun/dev > search/dev."""
    for stage, split in (("final", "test"), ("rerun", "dev"), ("search", "dev")):
        sel = (results["stage"] == stage) & (results["split"] == split)
        if sel.any():
            return stage, split
    return None


def cell_evidence(results: pd.DataFrame) -> tuple[str, str] | None:
    """Like evidence(), but only a stage that covers every (fusion, train_missing_rate) cell that
    the search stage scored (a re-run of the top configurations may skip cells)."""
    scored = results[results["condition"].notna()]
    cells = lambda stage: set(map(tuple, scored.loc[scored["stage"] == stage, ["fusion", "train_missing_rate"]]
                                  .drop_duplicates().to_numpy().tolist()))
    need = cells("search")
    for stage, split in (("final", "test"), ("rerun", "dev"), ("search", "dev")):
        if ((scored["stage"] == stage) & (scored["split"] == split)).any() and need <= cells(stage):
            return stage, split
    return evidence(results)


def objective(results: pd.DataFrame, ctx: Context, stage: str, split: str) -> pd.Series:
    """Objective per trial_id (selection condition, primary metric); NaN where not reported."""
    wide = scores(results, ctx.metric, stage, split)
    if ctx.condition not in wide.columns:
        return pd.Series(dtype=float)
    return wide[ctx.condition].dropna()


def rank(values: pd.Series, ctx: Context) -> pd.Series:
    return values.sort_values(ascending=not ctx.maximize)


# ---------------------------------------------------------------- compute

def early_stopping_saving_s(tr: pd.DataFrame) -> float:
    """Sum over early-stopped trials of (max epochs of completed trials of its stage - its epochs)
    x its mean epoch time (wall_time_s / epochs)."""
    total = 0.0
    for _stage, g in tr.groupby("stage"):
        done = g.loc[g["status"] == "completed", "epochs"]
        full = done.max() if len(done) else tr.loc[tr["status"] == "completed", "epochs"].max()
        es = g[(g["status"] == "early_stopped") & (g["epochs"] > 0)]
        if pd.isna(full) or es.empty:
            continue
        per_epoch = es["wall_time_s"] / es["epochs"]
        total += float(((full - es["epochs"]).clip(lower=0) * per_epoch).sum())
    return total


def _elapsed_h(meta: dict, now: pd.Timestamp | None) -> float:
    start = pd.to_datetime(meta.get("started_at"), errors="coerce", utc=True)
    end = pd.to_datetime(meta.get("finished_at"), errors="coerce", utc=True)
    if pd.isna(end) and now is not None:
        end = now
    return float((end - start).total_seconds() / 3600) if not (pd.isna(start) or pd.isna(end)) else math.nan


def compute_summary(results: pd.DataFrame, meta: dict, now: pd.Timestamp | None = None) -> dict:
    tr = trials(results)
    wall = tr["wall_time_s"].fillna(0.0)
    counts = tr.pivot_table(index="stage", columns="status", values="trial_id", aggfunc="count", fill_value=0)
    counts = counts.reindex([s for s in STAGES if s in counts.index] + [s for s in counts.index if s not in STAGES])
    return {"counts": counts, "n_trials": int(len(tr)), "trial_hours": float(wall.sum() / 3600),
            "cpu_hours": float((wall * tr.get("cpus", 0).fillna(0)).sum() / 3600) if "cpus" in tr else 0.0,
            "gpu_hours": float((wall * tr.get("gpus", 0).fillna(0)).sum() / 3600) if "gpus" in tr else 0.0,
            "early_stop_saved_hours": early_stopping_saving_s(tr) / 3600, "elapsed_hours": _elapsed_h(meta, now)}


# ---------------------------------------------------------------- leaderboard and failures

def leaderboard(results: pd.DataFrame, ctx: Context, stage: str, split: str, top: int = 200) -> tuple[pd.DataFrame, int]:
    """Rows: trials of a stage ranked by objective (unscored trials last); columns: trial info,
    the metric per condition, params. Returns (table of the first `top` rows, total trials)."""
    tr = trials(results[results["stage"] == stage]).set_index("trial_id")
    tr = tr[tr["status"] != "failed"]
    wide = scores(results, ctx.metric, stage, split).add_prefix(f"{split}:")
    info = ["fusion", "train_missing_rate", "seed", "status", "epochs", "wall_time_s"]
    table = tr[[c for c in info if c in tr.columns]].join(wide, how="left")
    table = table.join(tr[param_columns(tr.reset_index())].rename(columns=lambda c: c[len("param__"):]))
    key = f"{split}:{ctx.condition}"
    if key in table.columns:
        table = table.sort_values(key, ascending=not ctx.maximize, na_position="last")
    table = table.reset_index()
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table.head(top), int(len(table))


def failed_trials(results: pd.DataFrame) -> pd.DataFrame:
    tr = trials(results)
    cols = [c for c in ("trial_id", "stage", "cell", "seed", "started_at", "error") if c in tr.columns]
    return tr.loc[tr["status"] == "failed", cols].reset_index(drop=True)
