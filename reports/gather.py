"""Pure data functions behind each plot: DataFrames in, small DataFrames/arrays out (no plotly).

Every "best configuration" is chosen on dev (the rerun stage's mean over seeds, or the search stage
when there was no rerun) and never on test; `pick` returns the chosen configurations together with
the rows shown for them: their final-stage test rows when the final stage covers all of them."""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from reports.load import Context
from reports.stats import interval, t_interval
from reports.tables import (
    condition_value,
    config_ids,
    data_dimensions,
    objective,
    param_columns,
    param_label,
    scores,
    selection_split,
    summary_conditions,
    trial_setting,
    trials,
    with_data_dimensions,
    with_families,
)
from study import pareto, vocab

SINGLE = ("audio_only", "video_only")


def _stage_rows(results: pd.DataFrame, stage: str, split: str) -> pd.DataFrame:
    return results[(results["stage"] == stage) & (results["split"] == split) & results["condition"].notna()]


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
    """The configuration with the best mean objective in each group of `by` (one overall when
    `by` is empty), with its trial ids in that stage."""
    t = config_scores(results, ctx, stage, split)
    if t.empty:
        return pd.DataFrame(columns=[*by, "config_id", "objective", "n", "trial_ids"])
    cfg = t.groupby("config_id").agg(**{b: (b, "first") for b in by}, objective=("objective", "mean"),
                                     n=("objective", "size"), trial_ids=("trial_id", list))
    cfg = cfg.reset_index().sort_values(["objective", "config_id"], ascending=[not ctx.maximize, True],
                                        kind="stable")
    if not by:
        return cfg.head(1).reset_index(drop=True)
    return cfg.drop_duplicates(list(by)).sort_values(list(by)).reset_index(drop=True)


def rows_of(results: pd.DataFrame, trial_ids, stage: str, split: str) -> pd.DataFrame:
    rows = _stage_rows(results, stage, split)
    return rows[rows["trial_id"].isin(set(trial_ids))]


@dataclass(frozen=True)
class Pick:
    """Configurations chosen on dev, and the rows shown for them."""

    select: tuple[str, str]  # (stage, split) the choice was made on: ("rerun"|"search", "dev")
    show: tuple[str, str]  # (stage, split) of `rows`: ("final", "test") when it covers every choice
    best: pd.DataFrame  # one row per group: by..., config_id, objective (dev mean), n, trial_ids
    rows: pd.DataFrame  # every condition's rows of the chosen configurations, on `show`
    why: str = ""  # why `show` is not final/test, when it is not

    def note(self, ctx: Context, what: str = "each strategy's best configuration") -> str:
        how = "mean over its re-runs" if self.select[0] == "rerun" else "one trial per configuration"
        obj = f"{ctx.condition} {ctx.metric}"
        text = (f"Selected on: {self.select[0]} stage, {self.select[1]} split ({what}, by {obj}, {how}). "
                f"Shown: {self.show[0]} stage, {self.show[1]} split")
        return text + (f" ({self.why})." if self.why else ".")


def pick(results: pd.DataFrame, ctx: Context, by: tuple[str, ...] = ("fusion",), test: bool = True,
         k: int = 1) -> Pick | None:
    """Chooses the best configuration of each `by` group on dev; shows its final/test rows when
    `test` and the final stage covers every chosen configuration, else its rows on the selection
    split (in the search stage, the k best trials of the chosen trial's cell, for a band)."""
    results = with_data_dimensions(results, [b for b in by if b == "audio_only_share"])
    sel = selection_split(results, need=by)
    if sel is None:
        return None
    best = best_configs(results, ctx, *sel, by=by)
    if best.empty:
        return None
    final = _stage_rows(results, "final", "test")
    why = "" if test else "this section compares dev scores"
    if test and len(final):
        fin = final.assign(config_id=config_ids(final).to_numpy())
        fin = fin[fin["config_id"].isin(set(best["config_id"]))]
        if set(best["config_id"]) <= set(fin["config_id"]):
            return Pick(sel, ("final", "test"), best, fin.drop(columns="config_id"))
        why = "the final stage does not cover every chosen configuration"
    elif test:
        why = "no final stage (yet)"
    ids = list(itertools.chain.from_iterable(best["trial_ids"]))
    if sel[0] == "search" and k > 1:
        ids = _top_k_of_cells(results, ctx, ids, k)
    return Pick(sel, sel, best, rows_of(results, ids, *sel), why)


def no_pick_reason(results: pd.DataFrame, ctx: Context) -> str:
    """Why `pick` found nothing to select: no dev rows yet, or dev rows whose scores are all NaN."""
    dev = results[results["condition"].notna() & (results["split"] == "dev")]
    if dev.empty:
        return "No trial has reported dev scores yet."
    col = dev[ctx.metric] if ctx.metric in dev.columns else pd.Series(dtype=float)
    n_trials = dev["trial_id"].nunique()
    return (f"No configuration can be selected: every dev {ctx.metric} score is NaN or missing "
            f"({len(dev)} dev rows of {n_trials} trials, {int(col.notna().sum())} with a score); "
            "the sanity flags and the failed trials say why.")


def _top_k_of_cells(results: pd.DataFrame, ctx: Context, trial_ids, k: int) -> list[str]:
    t = config_scores(results, ctx, "search", "dev").set_index("trial_id")
    ids = []
    for tid in trial_ids:
        cell = t[(t["fusion"] == t.at[tid, "fusion"]) & (t["train_missing_rate"] == t.at[tid, "train_missing_rate"])]
        ids += list(cell["objective"].sort_values(ascending=not ctx.maximize).index[:k])
    return ids


def representative_rows(results: pd.DataFrame, ctx: Context, stage: str, split: str) -> pd.DataFrame:
    """All rows (every condition, every seed) of the best configuration of each (fusion, r) cell,
    chosen and shown on one stage and split (dev)."""
    best = best_configs(results, ctx, stage, split)
    return rows_of(results, itertools.chain.from_iterable(best["trial_ids"]), stage, split)


def curve_rows(results: pd.DataFrame, ctx: Context, stage: str, split: str, k: int = 5) -> pd.DataFrame:
    """Rows of each fusion strategy's best cell on one stage and split: its best configuration's
    seeds, or in the search stage (one seed per configuration) the k best trials of that cell."""
    best = best_configs(results, ctx, stage, split, by=("fusion",))
    ids = list(itertools.chain.from_iterable(best["trial_ids"]))
    return rows_of(results, _top_k_of_cells(results, ctx, ids, k) if stage == "search" else ids, stage, split)


# ---------------------------------------------------------------- robustness

def heatmap_data(rows: pd.DataFrame, metric: str, dims: tuple[str, ...] = ("train_missing_rate",)
                 ) -> dict[str, pd.DataFrame]:
    """fusion -> (data condition x summary condition) mean of `metric`."""
    out = {}
    rows = with_data_dimensions(rows, dims)
    for fusion, g in rows.groupby("fusion", sort=True):
        m = g.pivot_table(index=list(dims), columns="condition", values=metric, aggfunc="mean")
        out[str(fusion)] = m[summary_conditions(m.columns)].sort_index()
    return out


def realised_share(rows: pd.DataFrame, dims: tuple[str, ...] = ("train_missing_rate",)) -> dict[str, pd.Series]:
    """fusion -> mean realised unpaired training share per data condition (empty when not recorded)."""
    if "unpaired_share" not in rows or rows["unpaired_share"].isna().all():
        return {}
    first = with_data_dimensions(rows, dims).drop_duplicates("trial_id")
    return {str(f): g.groupby(list(dims))["unpaired_share"].mean() for f, g in first.groupby("fusion", sort=True)}


def robustness_curves(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (fusion, family, level): mean and 95% t-interval of `metric` over the rows' trials."""
    r = with_families(rows)
    r = r[r["level"].notna() & r["family"].notna() & (r["family"] != vocab.GRID)]  # the grid: a heatmap
    out = []
    for (fusion, fam, lv), g in r.groupby(["fusion", "family", "level"], sort=True):
        m, lo, hi = t_interval(g[metric].to_numpy())
        out.append({"fusion": fusion, "family": fam, "level": float(lv), "mean": m, "lo": lo, "hi": hi,
                    "n": len(g)})
    return pd.DataFrame(out, columns=["fusion", "family", "level", "mean", "lo", "hi", "n"])


# ---------------------------------------------------------------- modality imbalance

def grid_data(rows: pd.DataFrame, metric: str) -> dict[str, pd.DataFrame]:
    """fusion -> (audio missing rate x video missing rate) mean of `metric` over the rows' trials
    on the per-modality test grid (miss_a<p_a>_v<p_v>); empty when the grid was not evaluated."""
    out = {}
    parsed = rows["condition"].map(_grid_levels)
    g = rows.assign(p_audio=parsed.map(lambda x: x[0]), p_video=parsed.map(lambda x: x[1]))
    g = g[g["p_audio"].notna()]
    for fusion, d in g.groupby("fusion", sort=True):
        out[str(fusion)] = d.pivot_table(index="p_audio", columns="p_video", values=metric,
                                         aggfunc="mean").sort_index().sort_index(axis=1)
    return out


def _grid_levels(name) -> tuple[float | None, float | None]:
    try:
        c = vocab.parse_condition(name) if isinstance(name, str) else None
    except ValueError:
        return None, None
    return (c.level, c.level_video) if c is not None and c.family == vocab.GRID else (None, None)


def imbalance_table(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per fusion strategy: MEI of `metric` and MLI (mean and 95% t-interval over the rows'
    trials), and MuteBench's protection check: the mean drop from av on the miss family at test
    levels up to the realised training unpaired share (`within`) and above it (`beyond`)."""
    cols = ["fusion", "n", "mei", "mei_lo", "mei_hi", "mli", "mli_lo", "mli_hi", "mli_signed",
            "trained_unpaired", "drop_within", "drop_beyond"]
    out = []
    for fusion, g in rows.groupby("fusion", sort=True):
        by = {c: d for c, d in g.groupby("condition")}
        mei_v = by["mei"][metric].to_numpy(float) if "mei" in by and metric in by["mei"] else np.array([])
        mli_v = by["mli"]["mli"].to_numpy(float) if "mli" in by and "mli" in by["mli"] else np.array([])
        signed = by["mli"]["mli_signed"].to_numpy(float) if "mli" in by and "mli_signed" in by["mli"] else []
        trained = float(g.drop_duplicates("trial_id")["unpaired_share"].mean()) \
            if "unpaired_share" in g else float("nan")
        within, beyond = _protection(g, metric, trained)
        m, lo, hi = t_interval(mei_v) if len(mei_v) else (np.nan,) * 3
        lm, llo, lhi = t_interval(mli_v) if len(mli_v) else (np.nan,) * 3
        out.append({"fusion": fusion, "n": int(g["trial_id"].nunique()), "mei": m, "mei_lo": lo,
                    "mei_hi": hi, "mli": lm, "mli_lo": llo, "mli_hi": lhi,
                    "mli_signed": float(np.nanmean(signed)) if len(signed) else np.nan,
                    "trained_unpaired": trained, "drop_within": within, "drop_beyond": beyond})
    return pd.DataFrame(out, columns=cols)


def _protection(g: pd.DataFrame, metric: str, trained: float) -> tuple[float, float]:
    """Mean (av - miss_L) of `metric` over levels L <= trained and L > trained (NaN when none)."""
    r = with_families(g)
    av = r.loc[r["condition"] == "av", metric].mean()
    miss = r[(r["family"] == "miss") & r["level"].notna()].groupby("level")[metric].mean()
    if not np.isfinite(trained) or miss.empty:
        return float("nan"), float("nan")
    drop = av - miss
    within, beyond = drop[drop.index <= trained + 1e-9], drop[drop.index > trained + 1e-9]
    return (float(within.mean()) if len(within) else float("nan"),
            float(beyond.mean()) if len(beyond) else float("nan"))


# ---------------------------------------------------------------- pareto and history

def pareto_data(results: pd.DataFrame, ctx: Context, stage: str = "search", split: str = "dev") -> pd.DataFrame:
    rows = _stage_rows(results, stage, split)
    wide = rows.pivot_table(index="trial_id", columns="condition", values=ctx.metric, aggfunc="mean")
    if not {"av", *SINGLE} <= set(wide.columns):
        return pd.DataFrame(columns=["trial_id", "fusion", "av", "worst_single", "wall_time_s", "on_front"])
    sign = 1.0 if ctx.maximize else -1.0
    df = pd.DataFrame({"av": wide["av"], "worst_single": sign * (sign * wide[list(SINGLE)]).min(axis=1)}).dropna()
    tr = trials(rows).set_index("trial_id")[["fusion", "wall_time_s"]]
    df = df.join(tr).reset_index()
    df["on_front"] = pareto.on_front(np.column_stack([sign * df["av"], sign * df["worst_single"]]))
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
    if chosen.empty:  # no search trial has a dev score (all NaN): nothing to draw
        return pd.DataFrame(columns=["trial_id", "status", "epoch", "value", "label"]), col
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
    """Per configuration and condition: runs, mean, sd and 95% interval of the primary metric over
    its runs (stats.interval: Student-t below 30 runs, BCa from 30; `method` names it)."""
    t = config_scores(results, ctx, stage, split)[["trial_id", "config_id", "fusion", "train_missing_rate"]]
    rows = _stage_rows(results, stage, split).merge(t, on="trial_id", suffixes=("", "_t"))
    out = []
    for (cid, cond), g in rows[rows["condition"].isin(conditions)].groupby(["config_id", "condition"]):
        iv = interval(g[ctx.metric].to_numpy())
        out.append({"config_id": cid, "fusion": g["fusion"].iloc[0],
                    "train_missing_rate": g["train_missing_rate"].iloc[0],
                    "condition": cond, "n": iv.n, "mean": iv.mean, "sd": iv.sd, "lo": iv.lo, "hi": iv.hi,
                    "method": iv.method, "values": g[ctx.metric].tolist()})
    return pd.DataFrame(out, columns=["config_id", "fusion", "train_missing_rate", "condition", "n", "mean", "sd",
                                      "lo", "hi", "method", "values"])


# ---------------------------------------------------------------- data condition -> strategy

def augmentation_text(results: pd.DataFrame, trial_ids) -> pd.Series:
    """trial_id -> "modality_dropout=0.12, ..." of the augmentation settings a trial recorded."""
    from reports.tables import AUGMENTATIONS, is_augmentation

    names = list(dict.fromkeys([*AUGMENTATIONS, *(c[len("param__"):] for c in param_columns(results)
                                                   if is_augmentation(c[len("param__"):]))]))
    sub = results[results["trial_id"].isin(set(trial_ids))]
    parts = []
    for n in names:
        v = trial_setting(sub, n)
        if v.notna().any():
            parts.append(v.map(lambda x, n=n: "" if pd.isna(x) else f"{n}={x:.3g}" if isinstance(x, float)
                               else f"{n}={x}"))
    if not parts:
        return pd.Series("", index=pd.Index(sorted(set(sub["trial_id"]))), dtype=object)
    df = pd.concat(parts, axis=1)
    return df.apply(lambda r: ", ".join(x for x in r if x), axis=1)


def condition_winners(results: pd.DataFrame, ctx: Context, conditions) -> tuple[pd.DataFrame, Pick | None]:
    """For each data condition (r, and audio_only_share when it is a cell dimension), each test
    condition and each strategy: the configuration with the best dev score on that condition
    (rerun mean over seeds, else search), its augmentation, its dev score and the score shown for
    it (final/test when the final stage covers it, else dev). `winner` marks the best strategy
    per (data condition, test condition), chosen on dev. Returns (long table, the av pick)."""
    dims = tuple(data_dimensions(results))
    res = with_data_dimensions(results, dims)
    sel = selection_split(res, need=("fusion", *dims))
    cols = [*dims, "condition", "fusion", "config_id", "augmentation", "dev", "shown", "shown_split", "winner"]
    if sel is None:
        return pd.DataFrame(columns=cols), None
    dev = _config_means(res, ctx.metric, *sel)
    test = _config_means(res, ctx.metric, "final", "test")
    tr = trials(res[res["stage"] == sel[0]]).assign(config_id=lambda t: config_ids(t))
    info = tr.drop_duplicates("config_id").set_index("config_id")
    aug = augmentation_text(res, info.index)
    out = []
    for cond in conditions:
        value = condition_value(dev, cond, ctx.maximize)
        for key, ids in info.groupby(["fusion", *dims]).groups.items():
            v = value.reindex(ids).dropna()
            if v.empty:
                continue
            cid = (v.sort_values(ascending=not ctx.maximize, kind="stable")).index[0]
            shown = condition_value(test, cond, ctx.maximize).get(cid, np.nan) if len(test) else np.nan
            split = "test" if pd.notna(shown) else "dev"
            key = key if isinstance(key, tuple) else (key,)
            out.append({**dict(zip(dims, key[1:])), "condition": cond, "fusion": key[0], "config_id": cid,
                        "augmentation": aug.get(cid, ""), "dev": float(v[cid]),
                        "shown": float(shown) if split == "test" else float(v[cid]), "shown_split": split})
    df = pd.DataFrame(out, columns=cols[:-1])
    if df.empty:
        return pd.DataFrame(columns=cols), None
    order = {c: i for i, c in enumerate(conditions)}
    df = df.sort_values([*dims, "condition", "dev", "fusion"], kind="stable",
                        key=lambda s: s.map(order) if s.name == "condition" else s,
                        ascending=[True] * (len(dims) + 1) + [not ctx.maximize, True]).reset_index(drop=True)
    df["winner"] = ~df.duplicated([*dims, "condition"])  # the first of each group: best on dev (ties: by name)
    return df, pick(results, ctx, by=("fusion", *dims))


def _config_means(results: pd.DataFrame, metric: str, stage: str, split: str) -> pd.DataFrame:
    """(configurations, conditions): mean of `metric` over each configuration's trials."""
    wide = scores(results, metric, stage, split)
    if wide.empty:
        return wide
    tr = trials(results[results["stage"] == stage])
    cid = pd.Series(config_ids(tr).to_numpy(), index=tr["trial_id"]).reindex(wide.index)
    return wide.groupby(cid.to_numpy()).mean()


# ---------------------------------------------------------------- parallel coordinates

def parallel_data(results: pd.DataFrame, ctx: Context, top: int = 300) -> pd.DataFrame:
    """The `top` search trials by objective: their params (fusion and train_missing_rate included
    when they vary) and objective; one row per trial."""
    t = config_scores(results, ctx, "search", "dev").sort_values("objective", ascending=not ctx.maximize).head(top)
    cols = [c for c in ("fusion", "train_missing_rate") if t[c].nunique() > 1] if len(t) else []
    cols += [c for c in param_columns(t) if t[c].notna().any() and t[c].nunique() > 1]
    out = t[cols + ["objective"]].rename(columns=lambda c: param_label(c.removeprefix("param__"))
                                         if c != "objective" else c)
    return out.reset_index(drop=True)
