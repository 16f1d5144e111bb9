"""Realistic fake study results following docs/CONTRACTS.md ("Results files of a study").

Used by the report tests and benchmarks/report_scale.py. The numbers come from a small generative
model (fusion strategy, learning rate, dropout, train/test missing rates) so that every plot of the
report has structure to show: fusion strategies differ, audio-only beats video-only, training with
missing modalities trades a little full-modality score for robustness, early-stopped trials are
worse, a few trials fail.

Two layouts: the first results.parquet layout (default), and with `families` set the wave-2
columns of docs/CONTRACTS.md ("Condition families, sanity flags and the training record"):
`family`, `level`, `flag`, `degenerate`, `unpaired_share`, `normalize` and the conditions of the
per-family robustness curves (`drop_audio_0.3`, `noise_video_10db`, `async_200ms`, ...) with their
areas `robustness_<family>`.

Issue-20 columns (optional, off by default): `folds` adds a `fold` column (the re-run and final
stages repeat each configuration over folds x seeds; the search runs on fold 0), `baselines`
adds linear-probe rows (`kind` = "baseline", stage "baseline", fusion "probe", seed 0, one trial
per fold with a dev and a test split; every other row `kind` = "model"), `selected_on_test`
marks the study as selected on test in study.json.
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
# wave-2 condition families: levels and how much each strategy loses at the hardest level
FAMILY_LEVELS = {"drop_audio": (0.1, 0.3, 0.5, 0.7, 0.9), "drop_video": (0.1, 0.3, 0.5, 0.7, 0.9),
                 "gap_audio": (0.1, 0.3, 0.5), "gap_video": (0.1, 0.3, 0.5),
                 "noise_audio": (20.0, 10.0, 0.0), "noise_video": (20.0, 10.0, 0.0),
                 "async": (0.0, 100.0, 200.0, 400.0)}
FAMILY_LOSS = {"drop": {"late": 0.12, "xattn": 0.05, "foalnet": 0.06}, "gap": {"late": 0.10, "xattn": 0.04},
               "noise": {"gated": 0.06, "late": 0.08}, "async": {"xattn": 0.10, "foalnet": 0.08, "vavl": 0.03}}
ALL_FAMILIES = tuple(FAMILY_LEVELS)


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
    rerun_top: int = 1  # best search trials per cell re-run over seeds
    seeds: tuple[int, ...] = (0, 1, 2)
    final: bool = True
    running: bool = False  # a running study: search stage only, status "running"
    write_curves: bool = True
    seed: int = 0
    labels: dict = field(default_factory=dict)  # optional overrides: {"fusion": {old: new}, "error": str}
    # wave-2 layout (empty: the first layout, without family/level/flag/... columns)
    families: tuple[str, ...] = ()
    degenerate_trials: int = 0  # search trials whose av predictions collapse to one class
    degenerate_modality: str | None = None  # e.g. "video_only": flagged one_class in every trial
    audio_shares: tuple[float, ...] = ()  # audio_only_share as a cell dimension (data condition)
    search_audio_share: bool = False  # audio_only_share searched inside cells (needs the spec's opt-in)
    augment: bool = False  # modality_dropout searched (augmentation: unpaired share > r)
    # issue 20: folds, baselines, a protocol that selects on test
    folds: int = 0  # 0: no fold column (one partition); k: re-runs and finals on folds 0..k-1
    baselines: bool = False  # linear-probe rows, kind = "baseline"
    selected_on_test: bool = False  # study.json selected_on_test

    @property
    def wave2(self) -> bool:
        return bool(self.families)


# ---------------------------------------------------------------- scores model

def _conditions(cfg: FakeStudy) -> list[tuple[str, float | None]]:
    fixed = [("av", None), ("audio_only", None), ("video_only", None)]
    return fixed + [(f"miss_{p:.1f}", p) for p in cfg.test_rates]


def family_condition(family: str, level: float) -> str:
    """Condition name of docs/CONTRACTS.md: drop_audio_0.3, noise_video_10db, async_200ms."""
    if family.startswith("noise"):
        return f"{family}_{level:g}db"
    if family == "async":
        return f"async_{level:g}ms"
    return f"{family}_{level:g}"


def _severity(family: str, levels, level: float) -> float:
    """0 (mildest level) .. 1 (hardest): noise gets harder as the SNR falls."""
    if family.startswith("noise"):
        return (levels[0] - level) / (levels[0] - levels[-1])
    return level / levels[-1]


def _family_scores(fusion: str, av: float, modality_dropout: float, families, rng) -> dict[str, tuple]:
    """condition -> (family, level, score) for the wave-2 families, plus their areas."""
    out = {}
    for fam in families:
        levels = FAMILY_LEVELS[fam]
        loss = 3 * FAMILY_LOSS[fam.split("_")[0]].get(fusion, 0.07) * (1 - modality_dropout)
        ys = [av - loss * _severity(fam, levels, lv) + rng.normal(0, 0.004) for lv in levels]
        out.update({family_condition(fam, lv): (fam, lv, y) for lv, y in zip(levels, ys)})
        order = np.argsort(levels)
        x, y = np.asarray(levels)[order], np.asarray(ys)[order]
        out[f"robustness_{fam}"] = (fam, None, float(np.trapezoid(y, x) / (x[-1] - x[0])))
    return out


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

def _sample_params(cfg: FakeStudy, fusion: str, rng) -> dict:
    p = {"lr": float(10 ** rng.uniform(-5, -2)), "dropout": float(rng.uniform(0.0, 0.5)),
         "d_model": float(rng.choice([128, 256, 512])), "enc_layers": float(rng.integers(1, 5)),
         "pooling": str(rng.choice(["mean", "attn"]))}
    if fusion == "xattn":
        p["xattn_layers"] = float(rng.integers(1, 4))  # conditional parameter
    if cfg.augment:
        p["modality_dropout"] = float(rng.uniform(0.0, 0.3))
    if cfg.search_audio_share:
        p["audio_only_share"] = float(rng.uniform(0.2, 0.8))
    return p


def _label(cfg: FakeStudy, kind: str, value: str) -> str:
    return cfg.labels.get(kind, {}).get(value, value)


def _trial_rows(cfg: FakeStudy, tid: str, stage: str, parent, fusion: str, r, seed: int,
                params: dict, q: float, status: str, epochs: int, t0: float, rng) -> list[dict]:
    r, share = r if isinstance(r, tuple) else (r, None)
    fus = _label(cfg, "fusion", fusion)
    epoch_time = 6.0 * params["d_model"] / 256 * (1 + 0.3 * params["enc_layers"]) * rng.uniform(0.9, 1.1)
    cell = f"fusion={fus}|r={r}" + (f"|audio_only_share={share}" if share is not None else "")
    aos = params.get("audio_only_share", share if share is not None else 0.5)
    mdrop = params.get("modality_dropout", 0.0)
    base = {"study": cfg.name, "trial_id": tid, "stage": stage, "parent_trial_id": parent,
            "cell": cell, "fusion": fus, "train_missing_rate": r, "seed": seed,
            "status": status, "error": None, "epochs": epochs,
            "best_epoch": max(1, epochs - int(rng.integers(0, 3))), "wall_time_s": epochs * epoch_time,
            "cpus": 2.0, "gpus": 0.25, "workers": 1,
            "config": json.dumps({"fusion": fus, "train_missing_rate": r, "audio_only_share": aos,
                                  "modality_dropout": mdrop, **params}),
            "protocol": json.dumps({"train_missing_rate": r, "audio_only_share": aos, "modality_dropout": mdrop,
                                    "seed": seed}),
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
    rows = [{**base, "split": split, "condition": c, "test_missing_rate": rates.get(c),
             **_metric_row(cfg, c, s, rng)} for c, s in scores.items()]
    if not cfg.wave2:
        return rows
    return _wave2_rows(cfg, base, rows, fusion, mdrop, tid, rng)


def _wave2_rows(cfg: FakeStudy, base: dict, rows: list[dict], fusion: str, mdrop: float, tid: str, rng):
    """Adds family/level/flag columns, the family conditions and the trial-level record."""
    av = next(r["macro_f1" if cfg.task == "categorical" else "ccc_mean"] for r in rows if r["condition"] == "av")
    for c, (fam, lv, s) in _family_scores(fusion, av, mdrop, cfg.families, rng).items():
        rows.append({**base, "split": rows[0]["split"], "condition": c, "test_missing_rate": None,
                     **_metric_row(cfg, c, s, rng), "family": fam, "level": lv})
    for r in rows:
        r.setdefault("family", "miss" if r["condition"].startswith("miss_") or r["condition"] == "robustness" else None)
        r.setdefault("level", r["test_missing_rate"])
        r["flag"] = None
    if cfg.degenerate_modality:
        for r in rows:
            if r["condition"] == cfg.degenerate_modality:
                r.update(_collapsed(cfg), flag="one_class")
    if tid.startswith("search-") and int(tid.split("-")[1]) < cfg.degenerate_trials:
        for r in rows:
            if r["condition"] in ("av", "audio_only"):
                r.update(_collapsed(cfg), flag="one_class" if r["condition"] == "av" else "chance")
    degenerate = any(r["flag"] is not None for r in rows if r["condition"] in ("av", "audio_only", "video_only"))
    unpaired = float(np.clip(base["train_missing_rate"] + (1 - base["train_missing_rate"]) * mdrop
                             + rng.normal(0, 0.01), 0, 1))
    for r in rows:
        r.update(degenerate=degenerate, unpaired_share=unpaired, normalize=True)
    return rows


def _collapsed(cfg: FakeStudy) -> dict:
    """Metrics of predictions that collapsed to one class (chance-level scores)."""
    if cfg.task == "dimensional":
        return {"ccc_mean": 0.0, **{f"ccc_{d}": 0.0 for d in DIMENSIONS}}
    k = len(CLASSES)
    conf = [[40 if j == 0 else 0 for j in range(k)] for _ in range(k)]
    return {"macro_f1": 1 / (k * k), "accuracy": 1 / k, "uar": 1 / k, "confusion": json.dumps(conf),
            **{f"f1__{c}": (2 / (k + 1) if i == 0 else 0.0) for i, c in enumerate(CLASSES)}}


def _curve_rows(cfg: FakeStudy, tid: str, stage: str, final_score: float, epochs: int, wall: float, rng):
    metric = "ccc_mean" if cfg.task == "dimensional" else "macro_f1"
    e = np.arange(1, epochs + 1)
    progress = 1 - np.exp(-e / 3.0)  # early epochs improve fast
    full = 1 - math.exp(-cfg.max_epochs / 3.0)  # a stopped trial is a truncated full-length curve
    dev = final_score * progress / full + rng.normal(0, 0.005, epochs)
    return pd.DataFrame({"study": cfg.name, "trial_id": tid, "stage": stage, "epoch": e,
                         "time_s": wall * e / epochs, "train_loss": 1.8 * np.exp(-e / 5.0) + 0.2,
                         "dev_loss": 1.8 - 1.5 * dev, f"dev_{metric}": dev, f"dev_av_{metric}": dev})


def _data_conditions(cfg: FakeStudy) -> list:
    """The data-condition part of the cells: r, or (r, audio_only_share) when shares are cells."""
    if not cfg.audio_shares:
        return list(cfg.train_rates)
    return [(r, a) for r in cfg.train_rates for a in cfg.audio_shares]


def _search(cfg: FakeStudy, rng):
    rows, curves, quality = [], [], {}
    failed = set(rng.choice(cfg.n_trials, size=min(cfg.n_failed, cfg.n_trials), replace=False).tolist())
    data = _data_conditions(cfg)
    for i in range(cfg.n_trials):
        fusion = cfg.fusions[i % len(cfg.fusions)]
        r = data[(i // len(cfg.fusions)) % len(data)]
        params = _sample_params(cfg, fusion, rng)
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
            rate = r[0] if isinstance(r, tuple) else r
            curves.append(_curve_rows(cfg, tid, "search", q - 0.03 * rate, epochs, rows[-1]["wall_time_s"], rng))
    return rows, curves, quality


def _fold_ids(cfg: FakeStudy) -> list:
    return list(range(cfg.folds)) if cfg.folds else [None]


def _with_fold(rows: list[dict], fold) -> list[dict]:
    return rows if fold is None else [{**r, "fold": fold} for r in rows]


def _repeat(cfg: FakeStudy, parents: dict, rng, t0: float):
    """Re-runs of each parent over the folds x seeds (dev rows) and, as in study/runs/stages.py, the
    final stage: the test rows of the same trained models (parent_trial_id = the search trial)."""
    rows, final, curves = [], [], []
    fold_shift = {k: (0.0 if k is None else float(rng.normal(0, 0.015))) for k in _fold_ids(cfg)}
    for pid, (fusion, r, params, q) in parents.items():
        for fold, seed in ((k, s) for k in _fold_ids(cfg) for s in cfg.seeds):
            qs = q + fold_shift[fold] + rng.normal(0, 0.01)
            args = (fusion, r, seed, params)
            tail = f"s{seed}" if fold is None else f"f{fold}-s{seed}"
            rows += _with_fold(_trial_rows(cfg, f"rerun-{pid}-{tail}", "rerun", pid, *args, qs, "completed",
                                           cfg.max_epochs, t0, rng), fold)
            curves.append(_curve_rows(cfg, f"rerun-{pid}-{tail}", "rerun", qs, cfg.max_epochs,
                                      rows[-1]["wall_time_s"], rng))
            if cfg.final:  # test generalises a little worse than dev, with its own noise
                final += _with_fold(_trial_rows(cfg, f"final-{pid}-{tail}", "final", pid, *args,
                                                qs - 0.02 + rng.normal(0, 0.01), "completed", cfg.max_epochs,
                                                t0, rng), fold)
    return rows + final, curves


BASELINE_PARAMS = {"lr": 1e-3, "dropout": 0.0, "d_model": 128.0, "enc_layers": 1.0, "pooling": "mean"}


def _baselines(cfg: FakeStudy, rng, t0: float) -> list[dict]:
    """Linear probes: one trial per fold (seed 0), evaluated on dev and test, not selected."""
    rows = []
    for fold in _fold_ids(cfg):
        q = 0.45 + rng.normal(0, 0.01)
        tid = "baseline-probe" + ("" if fold is None else f"-f{fold}")
        for split, qs in (("dev", q), ("test", q - 0.02)):
            got = _trial_rows(cfg, tid, "baseline", None, "probe", cfg.train_rates[0], 0, BASELINE_PARAMS, qs,
                              "completed", cfg.max_epochs, t0, rng)
            rows += _with_fold([{**r, "split": split, "kind": "baseline"} for r in got], fold)
    return rows


def _top_per_cell(quality: dict, k: int) -> dict:
    """The k best search trials of each (fusion, data condition) cell, as stages.select_top_k."""
    best, taken = {}, {}
    for tid, v in sorted(quality.items(), key=lambda kv: -kv[1][3]):
        cell = (v[0], v[1])
        if taken.get(cell, 0) < k:
            best[tid], taken[cell] = v, taken.get(cell, 0) + 1
    return best


def make_tables(cfg: FakeStudy) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Returns (results, curves) DataFrames following the contract."""
    rng = np.random.default_rng(cfg.seed)
    rows, curves, quality = _search(cfg, rng)
    if not cfg.running and cfg.seeds:
        rerun = _top_per_cell(quality, cfg.rerun_top)
        r_rows, r_curves = _repeat(cfg, rerun, rng, T0 + 60 * cfg.n_trials + 600)
        rows, curves = rows + r_rows, curves + r_curves
    if cfg.baselines:
        rows += _baselines(cfg, rng, T0 + 60 * cfg.n_trials + 900)
    results = pd.DataFrame(rows)
    if cfg.folds:
        results["fold"] = results["fold"].fillna(0).astype("int64") if "fold" in results else 0
    if cfg.baselines:
        results["kind"] = results["kind"].fillna("model")
    results["seed"] = results["seed"].astype("int64")
    results["epochs"] = results["epochs"].astype("int64")
    results["best_epoch"] = results["best_epoch"].astype("Int64")
    return results, pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()


def study_meta(cfg: FakeStudy) -> dict:
    metric = "ccc_mean" if cfg.task == "dimensional" else "macro_f1"
    spec = {"name": cfg.name, "dataset": {"kind": "synth", "preset": "crema-d", "seed": cfg.seed},
            "task": cfg.task, "space": "search_spaces.vavl:space",
            "searcher": {"kind": "optuna", "sampler": "tpe"}, "scheduler": {"kind": "asha", "max_t": cfg.max_epochs},
            "budget": {"trials_per_cell": cfg.n_trials},
            "cells": {"fusion": list(cfg.fusions), "train_missing_rate": list(cfg.train_rates)},
            "seeds": list(cfg.seeds), "resources": {"cpus_per_trial": 2, "gpus_per_trial": 0.25}}
    if cfg.audio_shares:
        spec["cells"]["audio_only_share"] = list(cfg.audio_shares)
    if cfg.search_audio_share:
        spec["search_data_conditions"] = True
    objectives = [{"metric": metric, "condition": "av", "mode": "max", "key": f"av_{metric}"}]
    meta = {"name": cfg.name, "status": "running" if cfg.running else "finished",
            "started_at": pd.Timestamp(T0, unit="s").isoformat(), "finished_at": None,
            "versions": {"python": "3.11.9", "torch": "2.13.0", "ray": "2.60.0", "optuna": "5.0.0"},
            "git_sha": "0123456789abcdef0123456789abcdef01234567", "spec": spec,
            "objectives": [{"metric": metric, "split": "dev", "condition": "av", "direction": "maximize"}],
            "primary_metric": metric, "task": cfg.task,
            "classes": list(CLASSES) if cfg.task == "categorical" else []}
    if cfg.selected_on_test:
        meta["selected_on_test"] = True
    if cfg.wave2:  # as study/runs/selection.py records it
        objectives.append({"metric": metric, "condition": "worst_single", "mode": "max",
                           "key": f"worst_single_{metric}"})
        keys = ", ".join(f"{o['key']} (max)" for o in objectives)
        meta.update(objectives=objectives, selection={
            "split": "dev",
            "top_k": {"k": cfg.rerun_top, "rule": "pareto_then_first", "objectives": [o["key"] for o in objectives],
                      "text": f"top {cfg.rerun_top} per cell on search/dev: Pareto rank over {keys}, "
                              f"then {objectives[0]['key']}"},
            "checkpoint": {"condition": "av", "metric": metric, "mode": "max",
                           "text": f"best dev epoch by av {metric} (max)"},
            "data_conditions": {"searched": ["audio_only_share"] if cfg.search_audio_share else [],
                                "opt_in": cfg.search_audio_share}})
    return meta


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
