"""Realistic fake study results following docs/CONTRACTS.md ("Results files of a study").

Used by the report tests and benchmarks/report_scale.py. The numbers come from a small generative
model (fusion strategy, learning rate, dropout, train/test missing rates) so that every plot of the
report has structure to show: fusion strategies differ, audio-only beats video-only, training with
missing modalities trades a little full-modality score for robustness, early-stopped trials are
worse, a few trials fail.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from model.registry import FUSIONS as REGISTRY

CLASSES = ("anger", "disgust", "fear", "happy", "neutral", "sad")
DIMENSIONS = ("arousal", "valence", "dominance")
TEST_RATES = tuple(round(0.1 * i, 1) for i in range(10))
FUSIONS = tuple(REGISTRY)
FUSION_BASE = {"vavl": 0.62, "late": 0.55, "gated": 0.58, "xattn": 0.60, "foalnet": 0.61}
# per-class evidence: positive = clearer in audio, negative = clearer in video
CLASS_AUDIO_BIAS = (0.08, -0.06, 0.05, -0.10, 0.02, 0.04)
T0 = 1.7e9  # start of the fake study (unix seconds)


@dataclass(frozen=True)
class FakeStudy:
    name: str = "fake-study"
    task: str = "categorical"  # or "dimensional"
    n_trials: int = 40  # search trials (failed ones included)
    n_failed: int = 2
    early_stop_frac: float = 0.25
    max_epochs: int = 12
    fusions: tuple[str, ...] = FUSIONS
    train_rates: tuple[float, ...] = (0.0, 0.5)
    test_rates: tuple[float, ...] = TEST_RATES
    rerun_top: int = 2  # best search trials per fusion re-run over seeds
    seeds: tuple[int, ...] = (0, 1, 2)
    final: bool = True
    running: bool = False  # a running study: search stage only, status "running"
    write_curves: bool = True
    seed: int = 0
    labels: dict = field(default_factory=dict)  # optional overrides: {"fusion": {old: new}, "error": str}


# ---------------------------------------------------------------- scores model

def _conditions(cfg: FakeStudy) -> list[tuple[str, float | None]]:
    fixed = [("av", None), ("audio_only", None), ("video_only", None)]
    return fixed + [(f"miss_{p:.1f}", p) for p in cfg.test_rates]


def _quality(fusion: str, params: dict, base: dict, rng) -> float:
    # 0.4-0.7 macro-F1-like score of the full (av) condition
    lr_pen = 0.04 * (math.log10(params["lr"]) + 3.3) ** 2
    drop_pen = 0.3 * (params["dropout"] - 0.2) ** 2
    size_gain = 0.01 * math.log2(params["d_model"] / 128)
    return base.get(fusion, 0.58) - lr_pen - drop_pen + size_gain + rng.normal(0, 0.015)


def _condition_scores(q: float, r: float, rates, rng) -> dict[str, float]:
    av = q - 0.03 * r
    audio = q - 0.10 + 0.08 * r + rng.normal(0, 0.01)
    video = q - 0.20 + 0.10 * r + rng.normal(0, 0.01)
    out = {"av": av, "audio_only": audio, "video_only": video}
    single = 0.5 * (audio + video)
    for p in rates:  # a share p of test samples loses one modality
        out[f"miss_{p:.1f}"] = (1 - p) * av + p * single + rng.normal(0, 0.004)
    ys = [out[f"miss_{p:.1f}"] for p in rates]
    out["robustness"] = float(np.trapezoid(ys, rates) / (rates[-1] - rates[0])) if len(rates) > 1 else ys[0]
    return out


def _confusion(score: float, audio_share: float, rng, n_per_class: int = 40) -> list[list[int]]:
    k = len(CLASSES)
    m = np.zeros((k, k), dtype=int)
    for i in range(k):
        recall = float(np.clip(score + audio_share * CLASS_AUDIO_BIAS[i] + rng.normal(0, 0.03), 0.05, 0.98))
        hits = int(round(recall * n_per_class))
        other = rng.multinomial(n_per_class - hits, np.full(k - 1, 1.0 / (k - 1)))
        m[i] = np.insert(other, i, hits)
    return m.tolist()


def _metric_row(cfg: FakeStudy, cond: str, s: float, rng) -> dict:
    if cfg.task == "dimensional":
        ccc = {d: float(np.clip(s + off + rng.normal(0, 0.01), -1, 1))
               for d, off in zip(DIMENSIONS, (0.12, -0.05, 0.02))}
        row = {f"ccc_{d}": v for d, v in ccc.items()}
        row["ccc_mean"] = float(np.mean(list(ccc.values())))
        row["loss"] = 1.0 - row["ccc_mean"]
        return row
    audio_share = {"audio_only": 1.0, "video_only": -1.0}.get(cond, 0.0)
    row = {"loss": 1.8 - 1.5 * s, "accuracy": s + 0.05, "uar": s + 0.02, "macro_f1": s}
    for c, bias in zip(CLASSES, CLASS_AUDIO_BIAS):
        row[f"f1__{c}"] = float(np.clip(s + audio_share * bias + rng.normal(0, 0.02), 0, 1))
    if cond != "robustness":
        row["confusion"] = json.dumps(_confusion(s, audio_share, rng))
    return row


# ---------------------------------------------------------------- trials

def _sample_params(fusion: str, rng) -> dict:
    p = {"lr": float(10 ** rng.uniform(-5, -2)), "dropout": float(rng.uniform(0.0, 0.5)),
         "d_model": float(rng.choice([128, 256, 512])), "enc_layers": float(rng.integers(1, 5)),
         "pooling": str(rng.choice(["mean", "attn"]))}
    if fusion == "xattn":
        p["xattn_layers"] = float(rng.integers(1, 4))  # conditional parameter
    return p


def _label(cfg: FakeStudy, kind: str, value: str) -> str:
    return cfg.labels.get(kind, {}).get(value, value)


def _trial_rows(cfg: FakeStudy, tid: str, stage: str, parent, fusion: str, r: float, seed: int,
                params: dict, q: float, status: str, epochs: int, t0: float, rng) -> list[dict]:
    fus = _label(cfg, "fusion", fusion)
    epoch_time = 6.0 * params["d_model"] / 256 * (1 + 0.3 * params["enc_layers"]) * rng.uniform(0.9, 1.1)
    base = {"study": cfg.name, "trial_id": tid, "stage": stage, "parent_trial_id": parent,
            "cell": f"fusion={fus}|r={r}", "fusion": fus, "train_missing_rate": r, "seed": seed,
            "status": status, "error": None, "epochs": epochs,
            "best_epoch": max(1, epochs - int(rng.integers(0, 3))), "wall_time_s": epochs * epoch_time,
            "cpus": 2.0, "gpus": 0.25, "workers": 1,
            "config": json.dumps({"fusion": fus, "train_missing_rate": r, **params}),
            "protocol": json.dumps({"train_missing_rate": r, "audio_only_share": 0.5, "seed": seed}),
            "started_at": pd.Timestamp(t0, unit="s").isoformat(),
            "finished_at": pd.Timestamp(t0 + epochs * epoch_time, unit="s").isoformat(),
            **{f"param__{k}": v for k, v in params.items()}}
    if status == "failed":
        err = cfg.labels.get("error", "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB")
        return [{**base, "error": err, "split": None, "condition": None, "test_missing_rate": None,
                 "epochs": 0, "best_epoch": None, "wall_time_s": 3.0}]
    split = "test" if stage == "final" else "dev"
    scores = _condition_scores(q, r, cfg.test_rates, rng)
    rates = dict(_conditions(cfg))
    return [{**base, "split": split, "condition": c, "test_missing_rate": rates.get(c),
             **_metric_row(cfg, c, s, rng)} for c, s in scores.items()]


def _curve_rows(cfg: FakeStudy, tid: str, stage: str, final_score: float, epochs: int, wall: float, rng):
    metric = "ccc_mean" if cfg.task == "dimensional" else "macro_f1"
    e = np.arange(1, epochs + 1)
    progress = 1 - np.exp(-e / 3.0)  # early epochs improve fast
    full = 1 - math.exp(-cfg.max_epochs / 3.0)  # a stopped trial is a truncated full-length curve
    dev = final_score * progress / full + rng.normal(0, 0.005, epochs)
    return pd.DataFrame({"study": cfg.name, "trial_id": tid, "stage": stage, "epoch": e,
                         "time_s": wall * e / epochs, "train_loss": 1.8 * np.exp(-e / 5.0) + 0.2,
                         "dev_loss": 1.8 - 1.5 * dev, f"dev_{metric}": dev, f"dev_av_{metric}": dev})


def _search(cfg: FakeStudy, rng):
    rows, curves, quality = [], [], {}
    failed = set(rng.choice(cfg.n_trials, size=min(cfg.n_failed, cfg.n_trials), replace=False).tolist())
    for i in range(cfg.n_trials):
        fusion = cfg.fusions[i % len(cfg.fusions)]
        r = cfg.train_rates[(i // len(cfg.fusions)) % len(cfg.train_rates)]
        params = _sample_params(fusion, rng)
        q = _quality(fusion, params, FUSION_BASE, rng)
        stopped = i not in failed and rng.random() < cfg.early_stop_frac
        status = "failed" if i in failed else ("early_stopped" if stopped else "completed")
        epochs = int(rng.integers(2, cfg.max_epochs)) if stopped else cfg.max_epochs
        if stopped:  # score reached when stopped, on the full-length curve
            q = q * (1 - math.exp(-epochs / 3.0)) / (1 - math.exp(-cfg.max_epochs / 3.0)) - 0.03
        tid = f"search-{i:05d}"
        rows += _trial_rows(cfg, tid, "search", None, fusion, r, 0, params, q, status, epochs, T0 + 60 * i, rng)
        if status != "failed":
            quality[tid] = (fusion, r, params, q)
            curves.append(_curve_rows(cfg, tid, "search", q - 0.03 * r, epochs, rows[-1]["wall_time_s"], rng))
    return rows, curves, quality


def _repeat(cfg: FakeStudy, stage: str, parents: dict, rng, t0: float):
    rows, curves = [], []
    for pid, (fusion, r, params, q) in parents.items():
        for seed in cfg.seeds:
            tid = f"{stage}-{pid}-s{seed}"
            qs = q + rng.normal(0, 0.01)
            rows += _trial_rows(cfg, tid, stage, pid, fusion, r, seed, params, qs, "completed", cfg.max_epochs, t0, rng)
            curves.append(_curve_rows(cfg, tid, stage, qs, cfg.max_epochs, rows[-1]["wall_time_s"], rng))
    return rows, curves


def _top_per_fusion(quality: dict, k: int) -> dict:
    best = {}
    for tid, v in sorted(quality.items(), key=lambda kv: -kv[1][3]):
        if sum(1 for b in best.values() if b[0] == v[0]) < k:
            best[tid] = v
    return best


def make_tables(cfg: FakeStudy) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Returns (results, curves) DataFrames following the contract."""
    rng = np.random.default_rng(cfg.seed)
    rows, curves, quality = _search(cfg, rng)
    if not cfg.running and cfg.seeds:
        rerun = _top_per_fusion(quality, cfg.rerun_top)
        t1 = T0 + 60 * cfg.n_trials + 600
        r_rows, r_curves = _repeat(cfg, "rerun", rerun, rng, t1)
        rows, curves = rows + r_rows, curves + r_curves
        if cfg.final:
            f_rows, f_curves = _repeat(cfg, "final", _top_per_fusion(rerun, 1), rng, t1 + 3600)
            rows, curves = rows + f_rows, curves + f_curves
    results = pd.DataFrame(rows)
    results["seed"] = results["seed"].astype("int64")
    results["epochs"] = results["epochs"].astype("int64")
    results["best_epoch"] = results["best_epoch"].astype("Int64")
    return results, pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()


def study_meta(cfg: FakeStudy) -> dict:
    metric = "ccc_mean" if cfg.task == "dimensional" else "macro_f1"
    spec = {"name": cfg.name, "dataset": {"kind": "synth", "preset": "crema-d", "seed": cfg.seed},
            "task": cfg.task, "space": "search_spaces.vavl:space",
            "searcher": {"kind": "optuna", "sampler": "tpe"}, "scheduler": {"kind": "asha", "max_t": cfg.max_epochs},
            "budget": {"trials_per_cell": cfg.n_trials}, "fusions": list(cfg.fusions),
            "train_missing_rates": list(cfg.train_rates), "seeds": list(cfg.seeds),
            "resources": {"cpus_per_trial": 2, "gpus_per_trial": 0.25}}
    return {"name": cfg.name, "status": "running" if cfg.running else "finished",
            "started_at": pd.Timestamp(T0, unit="s").isoformat(), "finished_at": None,
            "versions": {"python": "3.11.9", "torch": "2.13.0", "ray": "2.60.0", "optuna": "5.0.0"},
            "git_sha": "0123456789abcdef0123456789abcdef01234567", "spec": spec,
            "objectives": [{"metric": metric, "split": "dev", "condition": "av", "direction": "maximize"}],
            "primary_metric": metric, "task": cfg.task,
            "classes": list(CLASSES) if cfg.task == "categorical" else []}


def write_study(study_dir: str | Path, cfg: FakeStudy = FakeStudy()) -> Path:
    """Writes study.json, spec.yaml, results.parquet and (optionally) curves.parquet."""
    import yaml

    d = Path(study_dir)
    d.mkdir(parents=True, exist_ok=True)
    meta = study_meta(cfg)
    (d / "spec.yaml").write_text(yaml.safe_dump(meta["spec"], sort_keys=False))
    results, curves = make_tables(cfg)
    if not cfg.running:
        meta["finished_at"] = str(results["finished_at"].max())
    (d / "study.json").write_text(json.dumps(meta, indent=2))
    results.to_parquet(d / "results.parquet", index=False)
    if cfg.write_curves and len(curves):
        curves.to_parquet(d / "curves.parquet", index=False)
    return d
