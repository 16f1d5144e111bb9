"""Evaluation of a Session on a split: one row per condition with every metric, the families'
areas, MEI and MLI (docs/imbalance.md). A mixin of `Session` (study/training/session.py), which
provides `cfg`, `ds`, `splits`, `predict`, `grad_history` and the `_empty` cache.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from study.data.protocol import (
    GRID,
    NAMED_CONDITIONS,
    Condition,
    area_families,
    condition_availability,
    condition_perturbation,
    eval_conditions,
    robustness,
    robustness_name,
)
from study.training.metrics import categorical_metrics, dimensional_metrics, mei, mli
from study.training.sanity import UNTRAINED, nan_metrics, row_flag


class Evaluation:
    """Rows of evaluation conditions from the session's predictions."""

    def evaluate(self, split: str = "dev", conditions: list[str] | None = None,
                 extended: bool = False) -> list[dict]:
        """One row per evaluation condition, plus each family's area row, with every metric.

        The named three and `miss_*` always (three forward passes); with `extended`, also every
        level of the families in cfg.protocol.families (a forward pass per level).
        """
        preds = self._whole_stream_preds(split)
        rows = self._rows(split, eval_conditions(self.cfg.protocol), preds, conditions)
        if conditions is None or "mli" in conditions:
            rows += self.mli_row()
        if extended:
            rows += self.evaluate_families(split, conditions, preds=preds)
        return rows

    def evaluate_families(self, split: str = "dev", conditions: list[str] | None = None,
                          preds: dict[str, np.ndarray] | None = None) -> list[dict]:
        """Rows of the conditions evaluated once per trial: the per-modality grid (composed from
        the three whole-stream passes) and the frame-level families (cfg.protocol.families), with
        their areas. A level that changes nothing (drop 0.0, async 0 ms) reuses `av`."""
        extra = [c for c in eval_conditions(self.cfg.protocol, extended=True)
                 if not c.cheap or c.family == GRID]
        if not extra:
            return []
        if preds is None:
            names = NAMED_CONDITIONS if any(c.family == GRID for c in extra) else ("av",)
            preds = self._whole_stream_preds(split, names)
        return self._rows(split, extra, preds, conditions)

    def _whole_stream_preds(self, split: str, names=NAMED_CONDITIONS) -> dict[str, np.ndarray]:
        """Predictions with both streams, audio only (video truly absent), video only."""
        data = self.splits[split]
        native_a, native_v = data.frame["has_audio"].to_numpy(bool), data.frame["has_video"].to_numpy(bool)
        return {c: self.predict(split, *condition_availability(c, data.frame["utt_id"], native_a,
                                                               native_v, self.cfg.protocol)[1:])
                for c in names}

    def _rows(self, split: str, plan: list[Condition], preds: dict[str, np.ndarray],
              conditions: list[str] | None) -> list[dict]:
        data = self.splits[split]
        native_a, native_v = data.frame["has_audio"].to_numpy(bool), data.frame["has_video"].to_numpy(bool)
        rows = []
        for cond in plan:
            if conditions is not None and cond.name not in conditions:
                continue
            keep, a, v = condition_availability(cond, data.frame["utt_id"], native_a, native_v,
                                                self.cfg.protocol)
            pred = self._condition_pred(split, cond, preds, a, v)
            row = self._metrics(pred[keep], data.target[keep], data.label[keep])
            if row["flag"] != "nan" and self._untrained_heads and (a ^ v)[keep].any():
                row["flag"] = UNTRAINED  # some samples are predicted by a head the recipe never trains
            rows.append({"condition": cond.name, "family": cond.family, "level": cond.level,
                         "test_missing_rate": cond.test_missing_rate, "n": int(keep.sum()), **row})
        for family in area_families(plan):
            if conditions is None or robustness_name(family) in conditions:
                rows.append(_robustness_row(rows, family))
        if conditions is None or "mei" in conditions:
            rows += self._mei_rows(split, rows)
        return rows

    def _mei_rows(self, split: str, rows: list[dict]) -> list[dict]:
        """The Modality Equity Index of every metric (study/training/metrics.py mei) from the av,
        audio_only and video_only rows, with a constant prediction as the empty configuration
        (the training split's majority class; its mean target for a dimensional task)."""
        by = {r["condition"]: r for r in rows}
        if not all(c in by for c in NAMED_CONDITIONS):
            return []
        empty = self._empty_scores(split)
        keys = [k for k, v in by["av"].items() if isinstance(v, float) and k not in ("level", "test_missing_rate")]
        out = {"condition": "mei", "family": None, "level": None, "test_missing_rate": None,
               "n": by["av"]["n"], "flag": None}
        out.update({k: mei(by["av"][k], by["audio_only"][k], by["video_only"][k], empty.get(k))
                    for k in keys if k != "loss"})
        return [out]

    def _empty_scores(self, split: str) -> dict:
        """The metrics of the no-information prediction on `split` (the same every epoch: once)."""
        if split not in self._empty:
            data = self.splits[split]
            self._empty[split] = self._metrics(self._constant_prediction(len(data)), data.target, data.label)
        return self._empty[split]

    def _constant_prediction(self, n: int) -> np.ndarray:
        """(n, K): the no-information prediction (majority training class as a one-hot score;
        the mean training target for a dimensional task)."""
        train = self.splits["train"]
        if self.cfg.task == "categorical":
            counts = np.bincount(train.label[train.label >= 0], minlength=self.cfg.model.n_outputs)
            return np.tile(np.eye(self.cfg.model.n_outputs, dtype=np.float32)[counts.argmax()], (n, 1))
        return np.tile(train.target.mean(0).astype(np.float32), (n, 1))

    def mli_row(self) -> list[dict]:
        """The Modality Learning Index of the training so far (metrics.mli over the per-epoch mean
        gradient norms): condition `mli`, metrics `mli` (in [0, 1], 0 = balanced) and
        `mli_signed` (> 0: the audio modules get the larger gradients)."""
        if not self.grad_history:
            return []
        value, signed = mli(self.grad_history)
        return [{"condition": "mli", "family": None, "level": None, "test_missing_rate": None,
                 "n": len(self.grad_history), "flag": None, "mli": value, "mli_signed": signed}]

    @property
    def _untrained_heads(self) -> bool:
        """The single-modality heads get no training signal (unimodal_weight 0)."""
        return self.cfg.model.unimodal_weight == 0

    def _condition_pred(self, split: str, cond: Condition, preds: dict[str, np.ndarray],
                        a: np.ndarray, v: np.ndarray) -> np.ndarray:
        """(N, K): whole-stream conditions pick, per sample, the av / audio-only / video-only
        prediction (a sample's prediction depends only on its own streams); a frame-level
        condition is its own forward pass."""
        perturb = condition_perturbation(cond, self.cfg.protocol)
        if perturb is None:
            return np.where((a & v)[:, None], preds["av"],
                            np.where(a[:, None], preds["audio_only"], preds["video_only"]))
        if perturb.identity:
            return preds["av"]
        return self.predict(split, a, v, perturb)

    def _metrics(self, pred: np.ndarray, target: np.ndarray, label: np.ndarray) -> dict:
        """Every metric of one condition's predictions, plus its sanity `flag` (training/sanity.py)."""
        pred_t, target_t = torch.from_numpy(pred), torch.from_numpy(target)
        if self.cfg.task == "categorical":
            loss = float(-(target_t * F.log_softmax(pred_t, -1)).sum(-1).mean())
            metrics = {"loss": loss, **categorical_metrics(label, pred.argmax(1), self.ds.classes)}
        else:
            metrics = dimensional_metrics(pred, target, self.ds.dimensions)
            metrics = {"loss": 1.0 - metrics["ccc_mean"], **metrics}
        flag = row_flag(pred, self.cfg.task, metrics, label, len(self.ds.classes))
        return {**(nan_metrics(metrics) if flag == "nan" else metrics), "flag": flag}


def _robustness_row(rows: list[dict], family: str = "miss") -> dict:
    """Normalised area under every scalar metric vs the family's level (the level values, not
    their index): condition `robustness` for miss, `robustness_<family>` otherwise."""
    curve = [r for r in rows if r.get("family") == family and r.get("level") is not None]
    skip = {"level", "test_missing_rate", "n"}
    keys = [k for k, v in curve[0].items() if isinstance(v, float) and k not in skip] if curve else []
    levels = [r["level"] for r in curve]
    untrained = any(r.get("flag") == UNTRAINED for r in curve)  # the area rests on untrained heads
    out = {"condition": robustness_name(family), "family": family, "level": None,
           "test_missing_rate": None, "n": curve[0]["n"] if curve else 0,
           "flag": UNTRAINED if untrained else None}
    out.update({k: robustness(levels, [r[k] for r in curve]) for k in keys})
    return out
