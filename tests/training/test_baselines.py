"""The pooled-statistics linear probes (study/training/baselines.py), their rows in a study
(study/runs/baselines.py), the report's comparison with them (reports/baselines.py), and
statistics pooling in the model (model/pooling.py)."""

from __future__ import annotations

import html as html_lib
import json
import re

import numpy as np
import pandas as pd
import pytest

from study.data.dataset import open_dataset, write_dataset
from study.data.protocol import EXTRA_FAMILIES, ProtocolConfig, eval_conditions
from study.training.baselines import ProbeSetup, pool, run_probes, summary

CLASSES = ["calm", "tense"]


def std_only_dataset(root, n_per_split=(80, 40, 40), seed=0):
    """Two classes that differ only in the spread of the audio frames (same mean, std 0.5 vs 2):
    a mean-pooled model cannot separate them, a std-pooled one can. Video is pure noise."""
    rng = np.random.default_rng(seed)
    splits = sum(([s] * n for s, n in zip(("train", "dev", "test"), n_per_split)), [])
    ids = [f"u{i:03d}" for i in range(len(splits))]
    labels = [CLASSES[i % 2] for i in range(len(ids))]
    manifest = pd.DataFrame({"utt_id": ids, "speaker": [f"{s}{i % 5}" for i, s in enumerate(splits)],
                             "split": splits, "label": labels})
    spread = {"calm": 0.5, "tense": 2.0}
    audio = [(u, rng.normal(0, spread[c], size=(int(rng.integers(20, 40)), 4))) for u, c in zip(ids, labels)]
    video = [(u, rng.normal(size=(int(rng.integers(10, 20)), 3))) for u in ids]
    meta = {"name": "std-only", "classes": CLASSES, "audio": {"dim": 4, "rate_hz": 20},
            "video": {"dim": 3, "rate_hz": 10}}
    return write_dataset(root, manifest, meta, audio, video)


@pytest.fixture(scope="module")
def std_ds(tmp_path_factory):
    return open_dataset(std_only_dataset(tmp_path_factory.mktemp("stdonly") / "ds"))


def test_pool_is_mean_and_std_over_kept_frames():
    x = np.array([[1.0, 10.0], [3.0, 10.0], [100.0, -5.0]])
    assert pool(x).shape == (4,)
    np.testing.assert_allclose(pool(x, np.array([True, True, False])), [2.0, 10.0, 1.0, 0.0])


def test_probe_reads_the_spread_and_follows_the_conditions(std_ds):
    res = run_probes(std_ds, ProbeSetup())
    test = summary(res, "test")
    assert test["audio_only"] >= 0.95 and test["av"] >= 0.9  # the std separates the classes
    assert test["video_only"] <= 0.75                        # noise: near chance (0.5)
    rows = {r["condition"]: r for r in res.rows["test"]}
    # the same conditions as a trial's final rows: named three, miss_*, every family and its area
    want = {c.name for c in eval_conditions(ProtocolConfig(), extended=True)}
    want |= {"robustness"} | {f"robustness_{f}" for f in EXTRA_FAMILIES}
    assert set(rows) == want
    assert rows["miss_0.0"]["macro_f1"] == rows["av"]["macro_f1"]
    assert rows["miss_0.0"]["n"] == rows["miss_0.9"]["n"] == 40
    # losing a stream: the single-stream probe of what is left, so audio-led rows stay high
    assert rows["drop_video_0.9"]["macro_f1"] >= 0.9
    assert rows["noise_audio_0db"]["macro_f1"] < rows["av"]["macro_f1"]  # noise hides the spread
    assert rows["av"]["flag"] is None and rows["video_only"]["flag"] in (None, "chance", "one_class")
    assert set(res.config()["reg"]) == {"audio", "video", "av"} and res.config()["pooling"] == "mean+std"


def test_probe_trains_on_what_the_protocol_leaves(std_ds):
    """train_missing_rate 0.5: half the training utterances keep one stream, so the AV probe
    fits the paired half; the share is recorded."""
    from study.data.protocol import train_availability

    protocol = ProtocolConfig(train_missing_rate=0.5)
    res = run_probes(std_ds, ProbeSetup(protocol=protocol), splits=("dev",))
    train = std_ds.split("train")
    a, v = train_availability(train.utt_id, train.has_audio, train.has_video, protocol)
    assert res.unpaired_share == pytest.approx(np.mean(a != v)) and 0.2 <= res.unpaired_share <= 0.8
    assert set(res.rows) == {"dev"}
    assert run_probes(std_ds, ProbeSetup(), splits=("dev",)).unpaired_share == 0.0


def test_baseline_rows_follow_the_contract(std_ds):
    from study.runs.baselines import baseline_rows
    from study.runs.spec import spec_from_dict

    spec = spec_from_dict({"name": "s", "dataset": {"path": str(std_ds.root)}, "spaces": ["missing"],
                           "cells": {"fusion": ["late"], "train_missing_rate": [0.0, 0.5]}})
    rows = pd.DataFrame(baseline_rows(spec, std_ds, 0.5))
    assert set(rows.kind) == {"baseline"} and set(rows.stage) == {"baseline"} and set(rows.fusion) == {"probe"}
    assert set(rows.trial_id) == {"baseline-probe-r0.5"} and set(rows.cell) == {"fusion=probe|r=0.5"}
    assert set(rows.split) == {"dev", "test"} and set(rows.seed) == {0} and set(rows.status) == {"completed"}
    assert rows.train_missing_rate.eq(0.5).all() and rows.normalize.all()
    cfg = json.loads(rows.config.iloc[0])
    assert cfg["pooling"] == "mean+std" and cfg["reg_name"] == "C" and cfg["train_missing_rate"] == 0.5
    miss = rows[rows.condition == "miss_0.3"]
    assert miss.test_missing_rate.eq(0.3).all() and miss.family.eq("miss").all()
    assert json.loads(rows.loc[rows.condition == "av", "confusion"].iloc[0])  # as the trials' rows


def test_spec_key_baselines():
    from study.runs.spec import SpecError, spec_from_dict

    raw = {"name": "s", "dataset": {"path": "/d"}, "spaces": ["missing"]}
    assert spec_from_dict(raw).baselines is True
    assert "baselines" not in spec_from_dict(raw).to_dict()  # older studies' spec.yaml unchanged
    off = spec_from_dict({**raw, "baselines": False})
    assert off.baselines is False and spec_from_dict(off.to_dict()).baselines is False
    with pytest.raises(SpecError, match="baselines"):
        spec_from_dict({**raw, "baselines": "yes"})


# ---------------------------------------------------------------- the report


def _with_probe(res: pd.DataFrame, av: float) -> pd.DataFrame:
    """results plus baseline rows whose dev/test av score is `av` (other conditions 0.1)."""
    conds = res.loc[res.condition.notna(), "condition"].unique()
    rows = []
    for rate in sorted(res.train_missing_rate.dropna().unique()):
        for split in ("dev", "test"):
            for c in conds:
                rows.append({"study": res.study.iloc[0], "trial_id": f"baseline-probe-r{rate:g}", "stage": "baseline",
                             "cell": f"fusion=probe|r={rate:g}", "fusion": "probe", "train_missing_rate": rate,
                             "seed": 0, "status": "completed", "split": split, "condition": c, "kind": "baseline",
                             "macro_f1": av if c == "av" else 0.1, "config": json.dumps({"pooling": "mean+std"})})
    return pd.concat([res.assign(kind="model"), pd.DataFrame(rows)], ignore_index=True)


@pytest.mark.parametrize("probe_av", [0.99, 0.05])
def test_report_says_when_no_strategy_beats_the_probe(tmp_path, probe_av):
    from fake_results import FakeStudy, write_study

    from reports.build import write_report

    out = write_study(tmp_path / "s", FakeStudy(n_trials=12))
    res = pd.read_parquet(out / "results.parquet")
    _with_probe(res, probe_av).to_parquet(out / "results.parquet", index=False)
    text = html_lib.unescape(write_report(out).read_text())
    best = res[(res.stage == "rerun") & (res.condition == "av")].groupby("parent_trial_id").macro_f1.mean().max()
    line = "NO SEARCHED STRATEGY BEATS THE BASELINE on dev av macro_f1"
    if probe_av > best:
        banner = re.search(r"<div class='banner[^']*' role='alert'>.*?</div>", text, re.S).group(0)
        assert line in banner and f"scores {best:.3f}" in banner
        assert f"({best - probe_av:+.3f})" in banner
    else:
        assert line not in text
    assert "id='baselines'" in text and "baseline-probe-r0.5" in text
    leaderboard = text[text.index("id='leaderboard'"):text.index("id='baselines'")]
    assert "baselines: macro_f1 per condition" in leaderboard
    # the probe is a row of the condition table but never its winner
    cond = text[text.index("id='conditions'"):text.index("id='pareto'")]
    assert "probe dev" in cond


def test_old_results_without_kind_are_all_models():
    from reports.baselines import baselines, models

    old = pd.DataFrame({"trial_id": ["a", "b"], "stage": ["search", "final"]})
    assert len(models(old)) == 2 and baselines(old).empty


# ---------------------------------------------------------------- statistics pooling


def test_stats_pool_sees_the_spread_a_mean_cannot():
    torch = pytest.importorskip("torch")
    from model.pooling import MeanPool, StatsPool, masked_std

    x = torch.tensor([[[1.0], [3.0], [50.0]], [[2.0], [2.0], [0.0]]])  # (2, 3, 1)
    mask = torch.tensor([[True, True, False], [True, True, False]])
    assert torch.allclose(MeanPool()(x, mask), torch.tensor([[2.0], [2.0]]))  # equal means
    assert torch.allclose(masked_std(x, mask), torch.tensor([[1.0], [0.0]]), atol=1e-2)
    pooled = StatsPool(1)(x, mask)
    assert pooled.shape == (2, 1) and not torch.allclose(pooled[0], pooled[1])


@pytest.mark.parametrize("fusion", ["vavl", "late", "gated", "xattn", "foalnet"])
def test_every_strategy_builds_and_runs_with_stats_pooling(fusion):
    pytest.importorskip("torch")
    from random_batches import random_batch

    from model.build import build_model
    from model.config import model_config

    cfg = model_config("tiny", fusion=fusion, pooling="mean_std", audio_dim=32, video_dim=24)
    model = build_model(cfg)
    batch = random_batch(cfg, 6)
    out = model(batch)
    assert out.pred.shape == (batch.size, cfg.n_outputs)
    model.loss(out, batch)["total"].backward()
    assert model.pool["audio"].proj.weight.grad is not None


# ---------------------------------------------------------------- known answer


@pytest.mark.slow
def test_a_small_study_reaches_the_probe_on_a_known_answer(ray_session, tmp_path, monkeypatch):
    """The classes differ only in how much the audio frames move (std_only_dataset): the linear
    probe on mean + std reads it off (test av >= 0.95). A small study (one vavl configuration with
    statistics pooling, 2 seeds) must select on dev a model within 0.1 of the probe on test av:
    a pipeline whose models cannot even match a linear model of their inputs fails here."""
    torch = pytest.importorskip("torch")
    from study.runs.spec import spec_from_dict
    from study.runs.stages import sweep

    torch.set_num_threads(1)
    monkeypatch.setenv("AVSTUDY_CACHE", str(tmp_path / "cache"))
    data = std_only_dataset(tmp_path / "ds", n_per_split=(160, 40, 40))
    raw = {"name": "known-probe", "dataset": {"path": str(data)}, "model_preset": "tiny",
           "fixed": {"d_model": 16, "n_heads": 2, "enc_layers": 1, "use_shared": False, "shared_layers": 0,
                     "batch_size": 16, "patience": 8, "lr": 0.003, "pooling": "mean_std",
                     "families": ["drop_audio"]},
           "cells": {"fusion": ["vavl"], "train_missing_rate": [0.0]}, "searcher": {"kind": "grid"},
           "scheduler": {"kind": "none"}, "budget": {"trials_per_cell": 1, "max_epochs": 8},
           "resources": {"workers": 1, "cpus_per_worker": 1}, "seeds": [0, 1], "top_k": 1}
    out = sweep(spec_from_dict(raw), out=tmp_path / "study", verbose=0)
    res = pd.read_parquet(out / "results.parquet")
    av = res[(res.split == "test") & (res.condition == "av")]
    probe = float(av.loc[av.kind == "baseline", "macro_f1"].iloc[0])
    model = float(av.loc[av.stage == "final", "macro_f1"].mean())
    assert probe >= 0.95
    assert model >= probe - 0.1, f"dev-selected model {model:.3f} vs probe {probe:.3f}"
