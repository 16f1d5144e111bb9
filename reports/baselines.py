"""Baseline rows of a study (the pooled linear probes, `kind` "baseline" in results.parquet) and
how the searched strategies compare with them: pure table functions (no torch, no study imports).

A study written before baselines existed has no `kind` column: every row is a model row.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from reports.load import FIXED_CONDITIONS
from reports.tables import condition_value, config_ids, scores, selection_split, summary_conditions, trials

BASELINE_STAGE = "baseline"
PROBE = "probe"  # the baseline's `fusion` name


def is_baseline(results: pd.DataFrame) -> pd.Series:
    """(rows,) bool: the row is a baseline's (kind "baseline", or stage "baseline")."""
    out = pd.Series(False, index=results.index)
    if "kind" in results:
        out |= results["kind"].astype(str).eq("baseline")
    if "stage" in results:
        out |= results["stage"].astype(str).eq(BASELINE_STAGE)
    return out


def models(results: pd.DataFrame | None) -> pd.DataFrame | None:
    """The searched strategies' rows only."""
    return None if results is None else results[~is_baseline(results)]


def baselines(results: pd.DataFrame | None) -> pd.DataFrame:
    """The baseline rows only (empty when the study has none)."""
    if results is None or not len(results):
        return pd.DataFrame()
    return results[is_baseline(results)]


def objective_of(meta: dict, task: str | None = None) -> tuple[str, str, bool]:
    """(condition, metric, maximise) of the study's first objective (study.json)."""
    objs = meta.get("objectives") if isinstance(meta.get("objectives"), list) else []
    o = objs[0] if objs and isinstance(objs[0], dict) else {}
    primary = meta.get("primary_metric") or ("ccc_mean" if (task or meta.get("task")) == "dimensional"
                                             else "macro_f1")
    return (str(o.get("condition") or "av"), str(o.get("metric") or primary), o.get("mode", "max") != "min")


# ---------------------------------------------------------------- tables


def baseline_table(results: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per (baseline, training missing rate, split): metric per summary condition."""
    b = baselines(results)
    b = b[b["condition"].notna()] if len(b) else b
    if b.empty or metric not in b:
        return pd.DataFrame()
    wide = b.pivot_table(index=["fusion", "train_missing_rate", "split"], columns="condition", values=metric,
                         aggfunc="mean")
    wide = wide[summary_conditions(wide.columns)]
    return wide.reset_index().sort_values(["split", "train_missing_rate"], kind="stable").reset_index(drop=True)


def baseline_score(results: pd.DataFrame, condition: str, metric: str, split: str, maximize: bool = True,
                   rate=None) -> tuple[float, str]:
    """(best score, its trial_id) of the baselines on one condition and split (NaN, "" if none);
    `rate`: only the baseline fitted at that training missing rate."""
    b = baselines(results)
    if b.empty:
        return math.nan, ""
    b = b[b["split"] == split]
    if rate is not None:
        b = b[pd.to_numeric(b["train_missing_rate"]) == float(rate)]
    if b.empty or metric not in b:
        return math.nan, ""
    wide = b.pivot_table(index="trial_id", columns="condition", values=metric, aggfunc="mean")
    v = condition_value(wide, condition, maximize)
    if v.empty:
        return math.nan, ""
    tid = v.idxmax() if maximize else v.idxmin()
    return float(v[tid]), str(tid)


@dataclass(frozen=True)
class Gap:
    """The best searched configuration vs the best baseline on dev, on one condition."""
    condition: str
    metric: str
    model: float          # best configuration's dev score (selection split: rerun mean, else search)
    model_where: str      # its cell
    baseline: float       # best baseline's dev score
    baseline_where: str   # its trial_id
    maximize: bool = True

    @property
    def margin(self) -> float:
        """model - baseline (signed so that > 0 means the model is better)."""
        d = self.model - self.baseline
        return d if self.maximize else -d

    @property
    def beaten(self) -> bool:
        return not math.isnan(self.margin) and self.margin > 0


def dev_gap(results: pd.DataFrame, condition: str, metric: str, maximize: bool = True) -> Gap | None:
    """Best model configuration on dev (its mean over seeds on the selection split) vs the best
    baseline on dev, on `condition` (None when either side has no score)."""
    base, where = baseline_score(results, condition, metric, "dev", maximize)
    m = models(results)
    sel = selection_split(m) if m is not None and len(m) else None
    if math.isnan(base) or sel is None:
        return None
    wide = scores(m, metric, *sel)
    if wide.empty:
        return None
    obj = condition_value(wide, condition, maximize)
    tr = trials(m[m["stage"] == sel[0]]).set_index("trial_id")
    cid = pd.Series(config_ids(tr.reset_index()).to_numpy(), index=tr.index)
    per_config = obj.groupby(cid.reindex(obj.index)).mean().dropna()
    if per_config.empty:
        return None
    best = per_config.idxmax() if maximize else per_config.idxmin()
    cell = tr["cell"].get(best, best) if "cell" in tr else best
    return Gap(condition, metric, float(per_config[best]), str(cell), base, where, maximize)


def gaps(results: pd.DataFrame, meta: dict) -> list[Gap]:
    """The gap on the study's first objective condition, then on each named condition."""
    condition, metric, maximize = objective_of(meta)
    conds = list(dict.fromkeys([condition, *FIXED_CONDITIONS]))
    return [g for g in (dev_gap(results, c, metric, maximize) for c in conds) if g is not None]


def warning_lines(results: pd.DataFrame | None, meta: dict) -> list[str]:
    """Sanity lines: where no searched strategy beats the best baseline on dev, and by how much."""
    if results is None or baselines(results).empty:
        return []
    out = []
    for g in gaps(results, meta):
        if g.beaten:
            continue
        out.append(f"NO SEARCHED STRATEGY BEATS THE BASELINE on dev {g.condition} {g.metric}: the best "
                   f"configuration ({g.model_where}) scores {g.model:.3f}, the linear probe on pooled "
                   f"features ({g.baseline_where}) {g.baseline:.3f} ({g.margin:+.3f}).")
    return out


def gap_table(results: pd.DataFrame, meta: dict) -> pd.DataFrame:
    rows = [{"condition": g.condition, "metric": g.metric, "best model (dev)": g.model, "its cell": g.model_where,
             "best baseline (dev)": g.baseline, "baseline": g.baseline_where, "model - baseline": g.margin,
             "beaten": g.beaten} for g in gaps(results, meta)]
    return pd.DataFrame(rows)
