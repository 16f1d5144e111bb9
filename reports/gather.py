"""Pure data functions behind each plot: DataFrames in, small DataFrames/arrays out (no plotly)."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd

from reports.load import Context
from reports.stats import bootstrap_ci, paired_test, t_interval
from reports.tables import condition_order, objective, param_columns, trials

SINGLE = ("audio_only", "video_only")


def _stage_rows(results: pd.DataFrame, stage: str, split: str) -> pd.DataFrame:
    return results[(results["stage"] == stage) & (results["split"] == split) & results["condition"].notna()]


def config_ids(tr: pd.DataFrame) -> pd.Series:
    """A configuration = a search trial; re-runs and finals belong to their parent's configuration."""
    parent = tr["parent_trial_id"] if "parent_trial_id" in tr else pd.Series(None, index=tr.index)
    return parent.where(parent.notna() & (tr["stage"] != "search"), tr["trial_id"]).astype(str)


def config_scores(results: pd.DataFrame, ctx: Context, stage: str, split: str) -> pd.DataFrame:
    """Per trial: config_id, fusion, train_missing_rate, seed, objective (trials without one dropped)."""
    tr = trials(results[results["stage"] == stage])
    tr = tr.assign(config_id=config_ids(tr)).set_index("trial_id")
    obj = objective(results, ctx, stage, split).rename("objective")
    out = tr.join(obj, how="inner")
    out.index.name = "trial_id"
    return out.reset_index()


def best_configs(results: pd.DataFrame, ctx: Context, stage: str, split: str,
                 by: tuple[str, ...] = ("fusion", "train_missing_rate")) -> pd.DataFrame:
    """The configuration with the best mean objective in each group of `by`, with its trial ids."""
    t = config_scores(results, ctx, stage, split)
    if t.empty:
        return pd.DataFrame(columns=[*by, "config_id", "objective", "n", "trial_ids"])
    cfg = t.groupby("config_id").agg(**{b: (b, "first") for b in by}, objective=("objective", "mean"),
                                     n=("objective", "size"), trial_ids=("trial_id", list))
    cfg = cfg.reset_index().sort_values("objective", ascending=not ctx.maximize, kind="stable")
    return cfg.drop_duplicates(list(by)).sort_values(list(by)).reset_index(drop=True)


def rows_of(results: pd.DataFrame, trial_ids, stage: str, split: str) -> pd.DataFrame:
    rows = _stage_rows(results, stage, split)
    return rows[rows["trial_id"].isin(set(trial_ids))]


def representative_rows(results: pd.DataFrame, ctx: Context, stage: str, split: str) -> pd.DataFrame:
    """All rows (every condition, every seed) of the best configuration of each (fusion, r) cell."""
    best = best_configs(results, ctx, stage, split)
    return rows_of(results, itertools.chain.from_iterable(best["trial_ids"]), stage, split)


def curve_rows(results: pd.DataFrame, ctx: Context, stage: str, split: str, k: int = 5) -> pd.DataFrame:
    """Rows of each fusion strategy's best cell: its best configuration's seeds, or in the search
    stage (one seed per configuration) the k best trials of that cell."""
    best = best_configs(results, ctx, stage, split, by=("fusion",))
    if stage != "search":
        return rows_of(results, itertools.chain.from_iterable(best["trial_ids"]), stage, split)
    t = config_scores(results, ctx, stage, split).set_index("trial_id")
    ids = []
    for tid in itertools.chain.from_iterable(best["trial_ids"]):
        cell = t[(t["fusion"] == t.at[tid, "fusion"]) & (t["train_missing_rate"] == t.at[tid, "train_missing_rate"])]
        ids += list(cell["objective"].sort_values(ascending=not ctx.maximize).index[:k])
    return rows_of(results, ids, stage, split)


# ---------------------------------------------------------------- robustness

def heatmap_data(rows: pd.DataFrame, metric: str) -> dict[str, pd.DataFrame]:
    """fusion -> (train_missing_rate x condition) mean of `metric`."""
    out = {}
    for fusion, g in rows.groupby("fusion", sort=True):
        m = g.pivot_table(index="train_missing_rate", columns="condition", values=metric, aggfunc="mean")
        out[str(fusion)] = m[condition_order(m.columns)].sort_index()
    return out


def robustness_curves(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (fusion, test_missing_rate): mean and 95% t-interval of `metric` over the rows' trials."""
    r = rows[rows["test_missing_rate"].notna()]
    out = []
    for (fusion, p), g in r.groupby(["fusion", "test_missing_rate"], sort=True):
        m, lo, hi = t_interval(g[metric].to_numpy())
        out.append({"fusion": fusion, "test_missing_rate": float(p), "mean": m, "lo": lo, "hi": hi, "n": len(g)})
    return pd.DataFrame(out, columns=["fusion", "test_missing_rate", "mean", "lo", "hi", "n"])


# ---------------------------------------------------------------- pareto and history

def pareto_front(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mask of points not dominated (both maximised): no other point >= on both and > on one."""
    order = np.lexsort((-y, -x))  # by x desc, then y desc
    front = np.zeros(len(x), dtype=bool)
    best_y = -np.inf
    for i in order:
        if y[i] > best_y:
            front[i] = True
            best_y = y[i]
    return front


def pareto_data(results: pd.DataFrame, ctx: Context, stage: str = "search", split: str = "dev") -> pd.DataFrame:
    rows = _stage_rows(results, stage, split)
    wide = rows.pivot_table(index="trial_id", columns="condition", values=ctx.metric, aggfunc="mean")
    if not {"av", *SINGLE} <= set(wide.columns):
        return pd.DataFrame(columns=["trial_id", "fusion", "av", "worst_single", "wall_time_s", "on_front"])
    sign = 1.0 if ctx.maximize else -1.0
    df = pd.DataFrame({"av": wide["av"], "worst_single": sign * (sign * wide[list(SINGLE)]).min(axis=1)}).dropna()
    tr = trials(rows).set_index("trial_id")[["fusion", "wall_time_s"]]
    df = df.join(tr).reset_index()
    df["on_front"] = pareto_front(sign * df["av"].to_numpy(), sign * df["worst_single"].to_numpy())
    return df


def history_data(results: pd.DataFrame, ctx: Context) -> pd.DataFrame:
    """Search trials in start order with their objective and the best-so-far objective."""
    t = config_scores(results, ctx, "search", "dev")
    key = ["started_at", "trial_id"] if "started_at" in t else ["trial_id"]
    t = t.sort_values(key).reset_index(drop=True)
    best = t["objective"].cummax() if ctx.maximize else t["objective"].cummin()
    return pd.DataFrame({"order": np.arange(1, len(t) + 1), "trial_id": t["trial_id"], "fusion": t["fusion"],
                         "status": t["status"], "value": t["objective"], "best_so_far": best})


def learning_curve_data(curves: pd.DataFrame, results: pd.DataFrame, ctx: Context,
                        top: int = 8, n_stopped: int = 8) -> tuple[pd.DataFrame, str]:
    """Curves of the `top` best search trials plus a spread of early-stopped ones (evenly over
    their ranks). Returns (rows: trial_id, status, epoch, value, label) and the plotted column."""
    col = next((c for c in (f"dev_{ctx.metric}", f"dev_{ctx.condition}_{ctx.metric}", "dev_loss")
                if c in curves.columns), None)
    if col is None:
        return pd.DataFrame(columns=["trial_id", "status", "epoch", "value", "label"]), ""
    t = config_scores(results, ctx, "search", "dev").sort_values("objective", ascending=not ctx.maximize)
    done = t[t["status"] == "completed"].head(top)
    es = t[t["status"] == "early_stopped"]
    es = es.iloc[np.unique(np.linspace(0, len(es) - 1, min(n_stopped, len(es))).astype(int))] if len(es) else es
    chosen = pd.concat([done, es])
    c = curves[curves["trial_id"].isin(set(chosen["trial_id"]))]
    c = c.merge(chosen[["trial_id", "status", "fusion"]], on="trial_id")
    c = c.assign(value=c[col], label=c["trial_id"].astype(str) + " (" + c["fusion"].astype(str) + ")")
    return c[["trial_id", "status", "epoch", "value", "label"]].sort_values(["trial_id", "epoch"]), col


# ---------------------------------------------------------------- per class and confusion

def confusion_data(rows: pd.DataFrame, n_classes: int, condition: str = "av") -> dict[str, np.ndarray]:
    """fusion -> (K, K) row-normalised confusion (rows = true class), averaged over the rows."""
    out = {}
    r = rows[(rows["condition"] == condition) & rows.get("confusion", pd.Series(dtype=object)).notna()]
    for fusion, g in r.groupby("fusion", sort=True):
        mats = [np.asarray(json.loads(s), dtype=float) for s in g["confusion"]]
        mats = [m / np.maximum(m.sum(axis=1, keepdims=True), 1e-12) for m in mats if m.shape == (n_classes, n_classes)]
        if mats:
            out[str(fusion)] = np.mean(mats, axis=0)
    return out


def per_class_data(rows: pd.DataFrame, ctx: Context) -> pd.DataFrame:
    """Long table (fusion, condition, label, value): mean per-class F1 or per-dimension CCC."""
    if ctx.task == "dimensional":
        cols = {c: c[len("ccc_"):] for c in rows.columns if c.startswith("ccc_") and c != "ccc_mean"}
    else:
        cols = {f"f1__{k}": k for k in ctx.classes if f"f1__{k}" in rows.columns}
    r = rows[rows["condition"].isin(["av", *SINGLE])]
    if r.empty or not cols:
        return pd.DataFrame(columns=["fusion", "condition", "label", "value"])
    m = r.groupby(["fusion", "condition"])[list(cols)].mean().reset_index()
    long = m.melt(id_vars=["fusion", "condition"], var_name="label", value_name="value")
    return long.assign(label=long["label"].map(cols)).dropna(subset=["value"])


# ---------------------------------------------------------------- seeds

def seed_variance(results: pd.DataFrame, ctx: Context, stage: str, split: str, conditions) -> pd.DataFrame:
    """Per configuration and condition: seeds, mean and 95% bootstrap CI of the primary metric."""
    t = config_scores(results, ctx, stage, split)[["trial_id", "config_id", "fusion", "train_missing_rate"]]
    rows = _stage_rows(results, stage, split).merge(t, on="trial_id", suffixes=("", "_t"))
    out = []
    for (cid, cond), g in rows[rows["condition"].isin(conditions)].groupby(["config_id", "condition"]):
        m, lo, hi = bootstrap_ci(g[ctx.metric].to_numpy())
        out.append({"config_id": cid, "fusion": g["fusion"].iloc[0], "train_missing_rate": g["train_missing_rate"].iloc[0],
                    "condition": cond, "n": int(g[ctx.metric].notna().sum()), "mean": m, "lo": lo, "hi": hi,
                    "values": g[ctx.metric].tolist()})
    return pd.DataFrame(out, columns=["config_id", "fusion", "train_missing_rate", "condition", "n", "mean", "lo", "hi", "values"])


def paired_comparison(results: pd.DataFrame, ctx: Context, stage: str, split: str, conditions) -> pd.DataFrame:
    """For each pair of fusion strategies (best configuration of each), paired over seeds:
    mean difference a - b, bootstrap CI, p-value."""
    best = best_configs(results, ctx, stage, split, by=("fusion",))
    rows = rows_of(results, itertools.chain.from_iterable(best["trial_ids"]), stage, split)
    out = []
    for cond in conditions:
        wide = rows[rows["condition"] == cond].pivot_table(index="seed", columns="fusion", values=ctx.metric)
        for a, b in itertools.combinations(sorted(wide.columns, key=str), 2):
            pair = wide[[a, b]].dropna()
            res = paired_test(pair[a].to_numpy(), pair[b].to_numpy())
            out.append({"a": a, "b": b, "condition": cond, **res})
    return pd.DataFrame(out, columns=["a", "b", "condition", "n", "mean_diff", "ci_lo", "ci_hi", "p_value", "test"])


# ---------------------------------------------------------------- parallel coordinates

def parallel_data(results: pd.DataFrame, ctx: Context, top: int = 300) -> pd.DataFrame:
    """The `top` search trials by objective: their params (fusion and train_missing_rate included
    when they vary) and objective; one row per trial."""
    t = config_scores(results, ctx, "search", "dev").sort_values("objective", ascending=not ctx.maximize).head(top)
    cols = [c for c in ("fusion", "train_missing_rate") if t[c].nunique() > 1] if len(t) else []
    cols += [c for c in param_columns(t) if t[c].notna().any() and t[c].nunique() > 1]
    out = t[cols + ["objective"]].rename(columns=lambda c: c.removeprefix("param__"))
    return out.reset_index(drop=True)
