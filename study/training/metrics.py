"""Evaluation metrics: WA (accuracy), UA (mean per-class recall), macro-F1, per-class F1,
confusion matrix, and the concordance correlation coefficient per dimension."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score


def categorical_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict:
    """y_true, y_pred: (N,) class indices. Returns flat metric columns + confusion (list of lists)."""
    labels = list(range(len(classes)))
    if len(y_true) == 0:  # no utterance takes part (sklearn refuses empty input): NaN, not an error
        nan = float("nan")
        return {"accuracy": nan, "uar": nan, "macro_f1": nan,
                "confusion": [[0] * len(classes) for _ in classes], **{f"f1__{c}": nan for c in classes}}
    per_class = f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    out = {
        "accuracy": float(np.mean(y_true == y_pred)),
        "uar": float(balanced_accuracy_score(y_true, y_pred)),
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


def mei(s_av: float, s_audio: float, s_video: float, s_empty: float | None) -> float:
    """Modality Equity Index in [0, 1] (1: both modalities contribute equally; docs/imbalance.md).

    Each modality's contribution is its Shapley value over the missing-modality configurations
    {none, audio, video, both}, with the score of a no-information prediction as `none`:
    phi_a = ((S_a - S_0) + (S_av - S_v)) / 2, phi_v likewise; MEI = 1 - |phi_a - phi_v| /
    (|phi_a| + |phi_v|). NaN when a score is missing or neither modality contributes.
    """
    values = [s_av, s_audio, s_video, s_empty]
    if any(v is None or not np.isfinite(v) for v in values):
        return float("nan")
    phi_a = ((s_audio - s_empty) + (s_av - s_video)) / 2
    phi_v = ((s_video - s_empty) + (s_av - s_audio)) / 2
    total = abs(phi_a) + abs(phi_v)
    return float(1.0 - abs(phi_a - phi_v) / total) if total > 0 else float("nan")


def mli(grad_norms) -> tuple[float, float]:
    """Modality Learning Index from per-epoch mean gradient norms [(G_audio, G_video), ...] of
    the modality-specific modules: (mean_e |d_e|, mean_e d_e) with d_e = (G_a - G_v) / (G_a + G_v)
    (0: balanced optimisation; 1: one modality gets no gradient; signed > 0: audio dominates).
    Epochs where neither modality had a gradient are left out; (NaN, NaN) when none is left."""
    d = [(a - v) / (a + v) for a, v in grad_norms if np.isfinite(a) and np.isfinite(v) and a + v > 0]
    if not d:
        return float("nan"), float("nan")
    return float(np.mean(np.abs(d))), float(np.mean(d))
