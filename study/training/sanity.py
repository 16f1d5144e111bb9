"""Sanity flags of an evaluation row and of a trial (results.parquet `flag`, `degenerate`).

A row's `flag` is null when its predictions look sane, else the first that applies of:
- `nan`: a prediction is NaN or infinite (the row's metrics are then NaN, so it is never
  selected);
- `one_class` (categorical, n >= 2): every prediction is the same class;
- `chance`: the score is within chance level. Categorical: macro-F1 <= c + 2 * sqrt(c (1 - c) / n),
  where c = `chance_f1` is the best expected macro-F1 of a predictor that ignores its input
  (uniform random guessing, guessing with the class priors, or always the majority class; the
  prior guess always reaches 1/K, the others never exceed it), and the margin is two standard
  errors of a proportion c on n samples. Dimensional: mean CCC
  <= 2 / sqrt(n) (two standard errors of a correlation around 0; constant predictions give 0).

- `untrained` (set by the session, not by `row_flag`): some of the row's samples are predicted
  by a single-modality head that the recipe does not train (`unimodal_weight: 0`, e.g. the
  `foalnet_official` recipe, whose loss has no unimodal terms): its scores are those of an
  untrained head, not of the model. `nan` still wins over it.

A trial is `degenerate` when any of its `av`, `audio_only` or `video_only` rows has a flag other
than `untrained` (an untrained head is the recipe's choice, not a broken prediction).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

FLAGS = ("nan", "one_class", "chance", "untrained")
UNTRAINED = "untrained"
TRIAL_CONDITIONS = ("av", "audio_only", "video_only")


def chance_f1(label: np.ndarray, n_classes: int) -> float:
    """Best expected macro-F1 of an input-blind predictor on labels (N,) with K classes."""
    counts = np.bincount(np.asarray(label, np.int64), minlength=n_classes)[:n_classes]
    p = counts / max(counts.sum(), 1)                                 # (K,) class priors
    k = n_classes
    uniform = np.mean(np.where(p > 0, 2 * p / k / np.maximum(p + 1 / k, 1e-12), 0.0))
    priors = float(np.mean(p))                                        # F1_k = p_k
    top = float(p.max())
    majority = 2 * top / (1 + top) / k
    return float(max(uniform, priors, majority))


def chance_margin(level: float, n: int) -> float:
    return 2.0 * math.sqrt(max(level * (1 - level), 0.0) / max(n, 1))


def row_flag(pred: np.ndarray, task: str, metrics: Mapping[str, float],
             label: np.ndarray | None = None, n_classes: int = 0) -> str | None:
    """The flag of one evaluation row from its predictions (N, K) and metrics (see module doc)."""
    pred = np.asarray(pred)
    n = len(pred)
    if n == 0:
        return None
    if not np.isfinite(pred).all():
        return "nan"
    if task == "categorical":
        if n >= 2 and len(np.unique(pred.argmax(1))) == 1:
            return "one_class"
        level = chance_f1(label, n_classes)
        score = float(metrics["macro_f1"])
        return "chance" if score <= level + chance_margin(level, n) else None
    score = float(metrics["ccc_mean"])
    return "chance" if not math.isfinite(score) or score <= 2.0 / math.sqrt(n) else None


def degenerate(rows: Iterable[Mapping]) -> bool:
    """True when a flag other than `untrained` is set on any of the trial's av / audio_only /
    video_only rows."""
    return any(r.get("flag") and r.get("flag") != UNTRAINED for r in rows
               if r.get("condition") in TRIAL_CONDITIONS)


def nan_metrics(metrics: dict) -> dict:
    """Every float metric as NaN (rows whose predictions are not finite)."""
    return {k: (float("nan") if isinstance(v, float) else v) for k, v in metrics.items()}
