"""Hyperparameter importance with Optuna's evaluators on an in-memory study rebuilt from results rows."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from reports.load import Context
from reports.tables import log_scale, param_columns, param_label, scores, trials

MAX_TRIALS = 250  # fANOVA runs on a seeded random sample of at most this many trials (cost)
CONDITIONS = ("av", "audio_only", "video_only", "robustness")  # besides the objective's condition


def infer_distribution(values: pd.Series):
    """Optuna distribution of one parameter column (non-null values): categorical for strings and
    booleans, int for integral numbers, float otherwise; log scale as tables.log_scale decides."""
    import optuna.distributions as d

    v = values.dropna()
    if v.dtype == object or pd.api.types.is_string_dtype(v) or pd.api.types.is_bool_dtype(v):
        return d.CategoricalDistribution(sorted({str(x) for x in v}))
    lo, hi = float(v.min()), float(v.max())
    log = log_scale(v)
    if np.allclose(v, np.round(v)):
        return d.IntDistribution(int(round(lo)), int(round(hi)), log=log)
    return d.FloatDistribution(lo, hi, log=log)


def _param_value(dist, x):
    import optuna.distributions as d

    if isinstance(dist, d.CategoricalDistribution):
        return str(x)
    return int(round(x)) if isinstance(dist, d.IntDistribution) else float(x)


def param_table(results: pd.DataFrame) -> pd.DataFrame:
    """Search trials (trial_id index) x parameters: param__* plus fusion / train_missing_rate when
    they vary across the study (data conditions and augmentations marked, tables.param_label);
    parameters with a single value are dropped."""
    tr = trials(results[results["stage"] == "search"]).set_index("trial_id")
    cols = [c for c in ("fusion", "train_missing_rate") if c in tr] + param_columns(tr.reset_index())
    t = tr[cols].rename(columns=lambda c: param_label(c.removeprefix("param__")))
    return t[[c for c in t.columns if t[c].dropna().nunique() > 1]]


def build_study(params: pd.DataFrame, values: pd.Series, maximize: bool):
    """In-memory optuna study with one COMPLETE trial per row that has a finite value."""
    import optuna

    dists = {c: infer_distribution(params[c]) for c in params.columns}
    study = optuna.create_study(direction="maximize" if maximize else "minimize")
    frozen = []
    for tid, value in values.items():
        if tid not in params.index or not math.isfinite(value):
            continue
        p = {c: _param_value(dists[c], x) for c, x in params.loc[tid].items() if pd.notna(x)}
        frozen.append(optuna.trial.create_trial(value=float(value), params=p, distributions={c: dists[c] for c in p}))
    study.add_trials(frozen)
    return study


def importance_data(results: pd.DataFrame, ctx: Context, min_trials: int = 8,
                    max_trials: int = MAX_TRIALS) -> tuple[pd.DataFrame, int]:
    """(parameters x conditions) normalised fANOVA importances of the primary metric in the search
    stage (dev), for the objective's condition (first column) and CONDITIONS. Trials are sampled
    (seeded) down to max_trials. Returns (table, number of trials used)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    params = param_table(results)
    wide = scores(results, ctx.metric, "search", "dev")
    if params.empty or wide.empty:
        return pd.DataFrame(), 0
    wide = wide.sample(n=min(max_trials, len(wide)), random_state=0)
    out, used = {}, 0
    for cond in dict.fromkeys([ctx.condition, *CONDITIONS]):
        values = wide[cond].dropna() if cond in wide else pd.Series(dtype=float)
        if values.nunique() < 2:  # constant (e.g. a degenerate modality at chance): nothing to explain
            continue
        study = build_study(params, values, ctx.maximize)
        if len(study.trials) < min_trials:
            continue
        used = max(used, len(study.trials))
        evaluator = optuna.importance.FanovaImportanceEvaluator(n_trees=16, seed=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out[cond] = optuna.importance.get_param_importances(study, evaluator=evaluator)
    table = pd.DataFrame(out)
    if table.empty:
        return table, used
    return table.loc[table.mean(axis=1).sort_values(ascending=False).index].fillna(0.0), used
