"""Evaluation metrics: WA (accuracy), UA (mean per-class recall), macro-F1, per-class F1,
confusion matrix, and the concordance correlation coefficient per dimension."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score


def categorical_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict:
    """y_true, y_pred: (N,) class indices. Returns flat metric columns + confusion (list of lists)."""
    labels = list(range(len(classes)))
    per_class = f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    out = {
        "accuracy": float(np.mean(y_true == y_pred)),
        "uar": float(balanced_accuracy_score(y_true, y_pred)) if len(y_true) else float("nan"),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }
    out.update({f"f1__{c}": float(f) for c, f in zip(classes, per_class)})
    return out


def ccc(x: np.ndarray, y: np.ndarray) -> float:
    """Lin's concordance correlation coefficient between predictions x and targets y."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    mx, my = x.mean(), y.mean()
    cov = ((x - mx) * (y - my)).mean()
    denom = x.var() + y.var() + (mx - my) ** 2
    return float(2 * cov / denom) if denom > 0 else float("nan")


def dimensional_metrics(pred: np.ndarray, target: np.ndarray, dims: list[str]) -> dict:
    """pred, target: (N, D). Returns ccc_<dim> per dimension and ccc_mean."""
    out = {f"ccc_{d}": ccc(pred[:, j], target[:, j]) for j, d in enumerate(dims)}
    out["ccc_mean"] = float(np.mean(list(out.values())))
    return out
