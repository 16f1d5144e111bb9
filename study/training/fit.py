"""`avstudy train`: one configuration trained with early stopping on dev, its best epoch
evaluated on dev and test, the records written (record.json, results.parquet, curves.parquet,
the checkpoint) and the console summary; `curve_metrics`, the per-epoch curve columns, serves
the Ray trials too. The epoch itself is `Session.run_epoch`, the same for both."""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from study.training.config import TrainConfig
from study.training.sanity import degenerate
from study.training.session import Session


def fit(cfg: TrainConfig, data_dir: str | Path, out_dir: str | Path | None = None,
        log: Callable[[str], None] = print, device=None) -> dict:
    """Train with early stopping on dev, evaluate the best epoch on dev and test; write records."""
    start = time.perf_counter()
    session = Session(cfg, data_dir, device=device)
    curves = []
    while not session.should_stop:
        info, rows, score = session.run_epoch()
        curves.append({**info, **curve_metrics(rows, cfg)})
        log(_epoch_line(info, rows, score, cfg))
    session.restore_best()  # the best dev epoch; test is evaluated once, from it
    record = {"config": cfg.to_flat(), "recipe": cfg.recipe(), "protocol": cfg.protocol.to_dict(),
              "best_epoch": session.best_epoch, "epochs": session.epoch,
              "wall_time_s": time.perf_counter() - start,
              "dev": session.evaluate("dev", extended=True),
              "test": session.evaluate("test", extended=True),
              "normalize": cfg.normalize,
              "unpaired_share": float(np.mean([c["unpaired_share"] for c in curves]))}
    record["degenerate"] = degenerate(record["dev"]) or degenerate(record["test"])
    if out_dir is not None:
        write_record(record, curves, session, Path(out_dir))
    return record


CURVE_CONDITIONS = ("av", "audio_only", "video_only", "robustness")
CURVE_METRICS = {"categorical": ("loss", "accuracy", "uar", "macro_f1"),
                 "dimensional": ("loss", "ccc_arousal", "ccc_valence", "ccc_dominance", "ccc_mean")}


def curve_metrics(rows: list[dict], cfg: TrainConfig) -> dict[str, float]:
    """Per-epoch dev metrics for curves: dev_loss, dev_<primary>, dev_<condition>_<metric>."""
    by = {r["condition"]: r for r in rows}
    primary = cfg.primary_metric
    out = {"dev_loss": by["av"]["loss"], f"dev_{primary}": by["av"][primary]}
    for c in CURVE_CONDITIONS:
        for m in CURVE_METRICS[cfg.task]:
            if c in by and m in by[c]:
                out[f"dev_{c}_{m}"] = by[c][m]
    return {k: (float(v) if v is not None else float("nan")) for k, v in out.items()}


def _epoch_line(info: dict, rows: list[dict], score: float, cfg: TrainConfig) -> str:
    key = cfg.primary_metric
    by = {r["condition"]: r for r in rows}
    parts = " ".join(f"{c}={by[c][key]:.3f}" for c in ("av", "audio_only", "video_only", "robustness"))
    return (f"epoch {info['epoch']:3d}  train_loss {info['train_loss']:.4f}  dev {key}: {parts}  "
            f"({info['seconds']:.1f}s)")


def records_frame(record: dict, classes: list[str]) -> pd.DataFrame:
    """Tidy rows (split x condition) in the results.parquet column layout."""
    rows = []
    for split in ("dev", "test"):
        for r in record[split]:
            row = {k: v for k, v in r.items() if k != "confusion"}
            row["confusion"] = json.dumps(r["confusion"]) if "confusion" in r else None
            rows.append({"split": split, **row})
    df = pd.DataFrame(rows)
    df["config"] = json.dumps(record["config"])
    df["protocol"] = json.dumps(record["protocol"])
    for key in ("epochs", "best_epoch", "wall_time_s", "normalize", "unpaired_share", "degenerate"):
        df[key] = record[key]
    df["recipe"] = json.dumps(record.get("recipe")) if record.get("recipe") else None
    return df


def write_record(record: dict, curves: list[dict], session: Session, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "record.json").write_text(json.dumps(record, indent=1))
    records_frame(record, session.ds.classes).to_parquet(out / "record.parquet", index=False)
    pd.DataFrame(curves).to_parquet(out / "curves.parquet", index=False)
    session.save(out)


def summary_table(record: dict, cfg: TrainConfig) -> str:
    """Test metrics per condition, one line each."""
    key = cfg.primary_metric
    extra = ("accuracy", "uar") if cfg.task == "categorical" else ("ccc_arousal", "ccc_valence", "ccc_dominance")
    lines = [f"{'condition':<14} {key:>9} " + " ".join(f"{k:>13}" for k in extra)]
    nan = float("nan")
    for r in record["test"]:
        if r["condition"] == "mli":  # the Modality Learning Index: its own columns
            lines.append(f"{'mli':<12} {r['mli']:>9.3f}  (signed {r['mli_signed']:+.3f}; docs/imbalance.md)")
            continue
        lines.append(f"{r['condition']:<14.14} {r.get(key, nan):>9.3f} "
                     + " ".join(f"{r.get(k, nan):>13.3f}" for k in extra))
    return "\n".join(lines)
