"""Pure table functions over results.parquet rows: conditions and their families, trials, scores,
the selection split, compute, leaderboard, failures."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from reports.load import FIXED_CONDITIONS, Context
from study import vocab
from study.vocab import DATA_CONDITIONS, STAGES, is_area  # noqa: F401 (the report's vocabulary)

TRIAL_COLS = ("trial_id", "stage", "parent_trial_id", "cell", "fusion", "train_missing_rate", "audio_only_share",
              "seed", "status", "error", "epochs", "best_epoch", "wall_time_s", "cpus", "gpus", "workers",
              "started_at", "finished_at", "degenerate", "unpaired_share", "normalize")
# condition families (study/vocab.py) in display order; data conditions describe the data a study
# is about (cell dimensions); augmentations are training choices (searched parameters); the
# report never folds one into the other
FAMILIES = tuple(vocab.FAMILIES)
AUGMENTATIONS = vocab.AUGMENTATIONS
AUGMENTATION_PREFIXES = ("modality_drop", "frame_drop", "noise_aug", "aug_")


# ---------------------------------------------------------------- conditions and families

def parse_condition(condition) -> tuple[str | None, float | None]:
    """(family, level) of a condition name: miss_0.3 -> (miss, 0.3), noise_audio_10db ->
    (noise_audio, 10.0), robustness_async -> (async, None), robustness -> (miss, None); the three
    named conditions and unknown names -> (None, None)."""
    if not isinstance(condition, str) or condition in FIXED_CONDITIONS:
        return None, None
    if is_area(condition):
        return ("miss" if condition == vocab.ROBUSTNESS else condition[len(vocab.ROBUSTNESS) + 1:]), None
    try:
        parsed = vocab.parse_condition(condition)
    except ValueError:
        return None, None
    return parsed.family, parsed.level


def family_axis(family: str) -> str:
    return vocab.FAMILIES[family].axis if family in vocab.FAMILIES else "level"


def _family_rank(family: str) -> int:
    return FAMILIES.index(family) if family in FAMILIES else len(FAMILIES)


def condition_order(conditions) -> list[str]:
    """av, audio_only, video_only, then per family (miss first) its levels from mild to hard and
    its area (robustness, robustness_<family>), then anything else."""
    def key(c: str):
        if c in FIXED_CONDITIONS:
            return (0, FIXED_CONDITIONS.index(c), 0, 0.0, c)
        fam, level = parse_condition(c)
        if fam is None:
            return (2, 0, 0, 0.0, c)
        if level is None:
            return (1, _family_rank(fam), 1, 0.0, fam)
        return (1, _family_rank(fam), 0, -level if fam.startswith("noise") else level, fam)
    return sorted({str(c) for c in conditions if isinstance(c, str)}, key=key)


def summary_conditions(conditions) -> list[str]:
    """The conditions of summary tables (leaderboard, heatmap): the named three, miss_* and every
    family's area; the levels of the other families are in their own curves."""
    return [c for c in condition_order(conditions) if c not in (vocab.MEI, vocab.MLI)
            and (c in FIXED_CONDITIONS or is_area(c) or parse_condition(c)[0] in ("miss", None))]


def with_families(results: pd.DataFrame) -> pd.DataFrame:
    """results with `family` and `level` filled from the condition names where the columns are
    absent or null (studies written before the families existed)."""
    parsed = results["condition"].map(parse_condition)
    fam = parsed.map(lambda x: x[0])
    lvl = parsed.map(lambda x: x[1]).astype(float)
    if "test_missing_rate" in results:
        tmr = pd.to_numeric(results["test_missing_rate"], errors="coerce")
        lvl = lvl.where(~((fam == "miss") & tmr.notna()), tmr)
    out = results.copy()
    out["family"] = out["family"].where(out["family"].notna(), fam) if "family" in out else fam
    if "level" in out:
        out["level"] = pd.to_numeric(out["level"], errors="coerce").where(out["level"].notna(), lvl)
    else:
        out["level"] = lvl
    return out


def is_augmentation(name: str) -> bool:
    return name in AUGMENTATIONS or name.startswith(AUGMENTATION_PREFIXES)


def param_label(name: str) -> str:
    """How a parameter is named in plots and tables: data conditions and augmentations are marked."""
    if name in DATA_CONDITIONS:
        return f"{name} [data]"
    return f"{name} [augmentation]" if is_augmentation(name) else name


# ---------------------------------------------------------------- trials and settings

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


def _from_json(text, key: str):
    try:
        return json.loads(text).get(key) if isinstance(text, str) else None
    except (ValueError, AttributeError):
        return None


def trial_setting(results: pd.DataFrame, name: str) -> pd.Series:
    """A per-trial setting (index trial_id): its own column, else param__<name>, else read from the
    trial's protocol / config JSON; NaN where nothing records it."""
    first = results.drop_duplicates("trial_id").set_index("trial_id")
    for col in (name, f"param__{name}"):
        if col in first and first[col].notna().any():
            return first[col]
    out = pd.Series(None, index=first.index, dtype=object)
    for col in ("protocol", "config"):
        if col in first:
            out = out.where(out.notna(), first[col].map(lambda t: _from_json(t, name)))
    num = pd.to_numeric(out, errors="coerce")
    return num if num.notna().sum() == out.notna().sum() else out


def data_dimensions(results: pd.DataFrame) -> list[str]:
    """The data conditions a study varies across cells: train_missing_rate always,
    audio_only_share when it is a cell dimension (several values, not searched inside cells)."""
    share = trial_setting(results, "audio_only_share").dropna()
    if share.nunique() > 1 and "audio_only_share" not in searched_data_conditions(results):
        return ["train_missing_rate", "audio_only_share"]
    return ["train_missing_rate"]


def searched_data_conditions(results: pd.DataFrame) -> list[str]:
    """Data conditions that vary between the search trials of one cell (searched inside cells)."""
    tr = results.drop_duplicates("trial_id")
    tr = tr[tr["stage"] == "search"] if "stage" in tr else tr
    out = []
    for name in DATA_CONDITIONS:
        col = f"param__{name}"
        if col in tr and "cell" in tr and len(tr) and tr.groupby("cell")[col].nunique().max() > 1:
            out.append(name)
    return out


def with_data_dimensions(results: pd.DataFrame, dims) -> pd.DataFrame:
    """results with a column per data dimension (audio_only_share read from the trial record)."""
    out = results
    for d in dims:
        if d not in out.columns:
            out = out.assign(**{d: out["trial_id"].map(trial_setting(results, d))})
    return out


# ---------------------------------------------------------------- scores and selection

def scores(results: pd.DataFrame, metric: str, stage: str, split: str) -> pd.DataFrame:
    """(trials, conditions) table of `metric` for one stage and split; index trial_id."""
    rows = results[(results["stage"] == stage) & (results["split"] == split) & results["condition"].notna()]
    if metric not in rows.columns or rows.empty:
        return pd.DataFrame()
    wide = rows.pivot_table(index="trial_id", columns="condition", values=metric, aggfunc="mean")
    return wide[condition_order(wide.columns)]


def selection_split(results: pd.DataFrame, need: tuple[str, ...] = ()) -> tuple[str, str] | None:
    """Where configurations are chosen: rerun/dev (mean over seeds), or search/dev when there is
    no rerun, or when the rerun does not cover every group of the `need` columns that the search
    scored. Never test."""
    scored = results[results["condition"].notna() & (results["split"] == "dev")]
    need = tuple(c for c in need if c in scored.columns)

    def groups(stage: str) -> set:
        g = scored[scored["stage"] == stage]
        return set(map(tuple, g[list(need)].drop_duplicates().to_numpy().tolist())) if need else {()}
    has = {s: bool((scored["stage"] == s).any()) for s in ("search", "rerun")}
    if has["rerun"] and (not has["search"] or groups("search") <= groups("rerun")):
        return "rerun", "dev"
    return ("search", "dev") if has["search"] else None


def condition_value(wide: pd.DataFrame, condition: str, maximize: bool) -> pd.Series:
    """One condition's column of a (trials, conditions) table; `worst_single` is the worse of
    audio_only and video_only, as study/training/config.objective_value computes it."""
    if condition == "worst_single":
        if not {"audio_only", "video_only"} <= set(wide.columns):
            return pd.Series(dtype=float)
        pair = wide[["audio_only", "video_only"]]
        v = pair.min(axis=1, skipna=False) if maximize else pair.max(axis=1, skipna=False)
        return v.dropna()
    if condition not in wide.columns:
        return pd.Series(dtype=float)
    return wide[condition].dropna()


def objective(results: pd.DataFrame, ctx: Context, stage: str, split: str) -> pd.Series:
    """Objective per trial_id (selection condition, primary metric); NaN where not reported."""
    return condition_value(scores(results, ctx.metric, stage, split), ctx.condition, ctx.maximize)


def config_ids(tr: pd.DataFrame) -> pd.Series:
    """A configuration = a search trial; re-runs and finals belong to their parent's configuration."""
    parent = tr["parent_trial_id"] if "parent_trial_id" in tr else pd.Series(None, index=tr.index)
    return parent.where(parent.notna() & (tr["stage"] != "search"), tr["trial_id"]).astype(str)


def config_objective(results: pd.DataFrame, ctx: Context) -> pd.Series:
    """Mean objective of each configuration on the selection split (rerun/dev, else search/dev)."""
    sel = selection_split(results)
    if sel is None:
        return pd.Series(dtype=float)
    obj = objective(results, ctx, *sel)
    tr = trials(results[results["stage"] == sel[0]])
    cid = pd.Series(config_ids(tr).to_numpy(), index=tr["trial_id"])
    return obj.groupby(cid.reindex(obj.index)).mean()


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

LEADERBOARD_INFO = ("fusion", "train_missing_rate", "audio_only_share", "seed", "status", "degenerate",
                    "unpaired_share", "epochs", "wall_time_s")


def leaderboard(results: pd.DataFrame, ctx: Context, stage: str, split: str,
                top: int = 200) -> tuple[pd.DataFrame, int]:
    """Rows: trials of a stage, columns: trial info, the metric per summary condition on `split`,
    params (data conditions and augmentations marked). Search and rerun trials are ranked by their
    own dev objective; final trials (test) by their configuration's dev objective on the selection
    split, so that no ranking reads test. Returns (table of the first `top` rows, total trials)."""
    tr = trials(results[results["stage"] == stage]).set_index("trial_id")
    tr = tr[tr["status"] != "failed"]
    wide = scores(results, ctx.metric, stage, split)
    wide = wide[summary_conditions(wide.columns)].add_prefix(f"{split}:") if len(wide) else wide
    shares = trial_setting(results, "audio_only_share")
    tr = tr.assign(audio_only_share=shares.reindex(tr.index)) if shares.dropna().nunique() > 1 else tr
    table = tr[[c for c in LEADERBOARD_INFO if c in tr.columns]].join(wide, how="left")
    params = tr[param_columns(tr.reset_index())].rename(columns=lambda c: param_label(c[len("param__"):]))
    table = table.join(params)
    if stage == "final":
        dev = config_objective(results, ctx).rename("dev objective (selection)")
        table.insert(0, dev.name, config_ids(tr.reset_index()).map(dev).to_numpy())
        key = dev.name
    else:
        key = f"{split}:{ctx.condition}"
        if ctx.condition == "worst_single" and len(wide):
            table[key] = condition_value(scores(results, ctx.metric, stage, split), ctx.condition, ctx.maximize)
    if key in table.columns:
        by = [key] + (["seed"] if "seed" in table else [])
        table = table.sort_values(by, ascending=[not ctx.maximize] + [True] * (len(by) - 1), na_position="last",
                                  kind="stable")
    table = table.reset_index()
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table.head(top), int(len(table))


def failed_trials(results: pd.DataFrame) -> pd.DataFrame:
    tr = trials(results)
    cols = [c for c in ("trial_id", "stage", "cell", "seed", "started_at", "error") if c in tr.columns]
    return tr.loc[tr["status"] == "failed", cols].reset_index(drop=True)
