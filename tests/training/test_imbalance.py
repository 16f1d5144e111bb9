"""Imbalanced missingness (issue 24): per-modality training rates, the per-modality test grid,
MEI and MLI (hand-computed), OGM-GE and curriculum dropout in the session, the spec's keys and
their errors, and the report's data functions."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from model.balance import grad_norm, modulate_, ogm_coefficients
from reports import figures, gather
from study.runs.results import cell_name, cell_slug
from study.runs.spec import SpecError, spec_from_dict
from study.training.config import config_from_flat
from study.training.metrics import mei, mli
from study.training.session import Session

# ----------------------------------------------------------------------------- the indices by hand


def test_mei_by_hand():
    # S_av .8, S_a .7, S_v .3, S_0 .2: phi_a = (.5 + .5)/2 = .5, phi_v = (.1 + .1)/2 = .1
    assert mei(0.8, 0.7, 0.3, 0.2) == pytest.approx(1 - 0.4 / 0.6)
    assert mei(0.8, 0.5, 0.5, 0.2) == pytest.approx(1.0)              # symmetric modalities
    # video useless alone and adds nothing: phi_v = (0 + 0)/2 = 0 -> MEI 0
    assert mei(0.7, 0.7, 0.2, 0.2) == pytest.approx(0.0)
    # a modality that hurts (S_av < S_a): phi_v < 0, still in [0, 1]
    v = mei(0.6, 0.7, 0.2, 0.2)                                       # phi_a = .5+.4 /2=.45, phi_v = -.05
    assert v == pytest.approx(1 - 0.5 / 0.5) and 0.0 <= v <= 1.0
    assert math.isnan(mei(0.5, 0.5, 0.5, 0.5))                        # nobody contributes
    assert math.isnan(mei(0.5, float("nan"), 0.5, 0.1)) and math.isnan(mei(0.5, 0.4, 0.5, None))


def test_mli_by_hand():
    value, signed = mli([(3.0, 1.0), (1.0, 1.0), (1.0, 3.0), (0.0, 0.0)])  # d = .5, 0, -.5; last left out
    assert value == pytest.approx(1 / 3) and signed == pytest.approx(0.0)
    assert mli([(2.0, 0.0)]) == (1.0, 1.0)                            # video gets no gradient
    assert all(math.isnan(x) for x in mli([]))
    assert all(math.isnan(x) for x in mli([(float("nan"), 1.0)]))


def test_ogm_coefficients_and_modulation_by_hand():
    k = ogm_coefficients({"audio": 30.0, "video": 10.0}, alpha=0.5)  # rho_a = 3
    assert k == {"audio": pytest.approx(1 - math.tanh(1.5)), "video": 1.0}
    assert ogm_coefficients({"audio": 10.0, "video": 10.0}, 0.5) == {"audio": 1.0, "video": 1.0}
    assert ogm_coefficients({}, 0.5) == {"audio": 1.0, "video": 1.0}
    w = torch.nn.Parameter(torch.ones(3, 4))
    b = torch.nn.Parameter(torch.ones(4))
    w.grad, b.grad = torch.full((3, 4), 2.0), torch.full((4,), 2.0)
    assert grad_norm([w, b]) == pytest.approx(math.sqrt(16 * 4.0))
    modulate_([w, b], 0.25, enhance=False)
    assert torch.equal(w.grad, torch.full((3, 4), 0.5)) and torch.equal(b.grad, torch.full((4,), 0.5))
    w.grad = torch.arange(12.0).reshape(3, 4)
    modulate_([w], 0.0, torch.Generator().manual_seed(0))              # GE: noise of the grad's own std
    assert w.grad.std() == pytest.approx(float(torch.arange(12.0).std()), rel=0.6)
    assert grad_norm([torch.nn.Parameter(torch.ones(2))]) == 0.0     # no gradient yet


# ----------------------------------------------------------------------------- the session


def _cfg(tiny_corpus, **kw):
    return config_from_flat({"preset": "tiny", "lr": 2e-3, "batch_size": 32, **kw}, data_dir=tiny_corpus)


def test_session_logs_realised_rates_grad_norms_and_the_indices(tiny_corpus):
    s = Session(_cfg(tiny_corpus, max_epochs=2, train_missing_rate=0.5, audio_only_share=0.8), tiny_corpus)
    info, rows, _ = s.run_epoch()
    # p_a = .5 x .2 = .1 without audio, p_v = .5 x .8 = .4 without video, from the batches seen
    assert info["missing_audio_share"] == pytest.approx(0.1, abs=0.06)
    assert info["missing_video_share"] == pytest.approx(0.4, abs=0.08)
    assert info["grad_norm_audio"] > 0 and info["grad_norm_video"] > 0
    by = {r["condition"]: r for r in rows}
    assert 0.0 <= by["mei"]["macro_f1"] <= 1.0 and "loss" not in by["mei"]
    value, signed = mli([(info["grad_norm_audio"], info["grad_norm_video"])])
    assert by["mli"]["mli"] == pytest.approx(value) and by["mli"]["mli_signed"] == pytest.approx(signed)
    state = s.state_dict()                                              # the MLI survives a restore
    again = Session(s.cfg, tiny_corpus)
    again.load_state_dict(state)
    assert again.grad_history == s.grad_history
    test = {r["condition"] for r in s.evaluate("test", extended=True)}
    assert {"miss_a0_v0.3", "miss_a0.3_v0.6", "mei", "mli"} <= test and "miss_a0.6_v0.6" not in test
    assert "robustness_miss_grid" not in test                          # the grid has no area


def test_ogm_ge_modulates_the_dominant_encoder(tiny_corpus):
    s = Session(_cfg(tiny_corpus, max_epochs=1, ogm_ge=True, ogm_alpha=1.0, schedule="fused"), tiny_corpus)
    info = s.train_epoch()
    ks = [info["ogm_coeff_audio"], info["ogm_coeff_video"]]
    assert all(0.0 < k <= 1.0 for k in ks) and min(ks) < 1.0            # one modality was slowed
    off = Session(_cfg(tiny_corpus, max_epochs=1, schedule="fused"), tiny_corpus).train_epoch()
    assert math.isnan(off["ogm_coeff_audio"])                           # not on: not recorded
    with pytest.raises(ValueError, match="ogm_ge: .*three_pass"):
        _cfg(tiny_corpus, ogm_ge=True, schedule="three_pass")


def test_no_grad_norm_logging_means_no_mli_row(tiny_corpus):
    s = Session(_cfg(tiny_corpus, max_epochs=1, log_grad_norms=False), tiny_corpus)
    info, rows, _ = s.run_epoch()
    assert math.isnan(info["grad_norm_audio"]) and "mli" not in {r["condition"] for r in rows}


# ----------------------------------------------------------------------------- the spec

BASE = {"name": "imb", "dataset": {"synth": {"preset": "crema-d", "scale": "tiny", "seed": 0}},
        "model_preset": "tiny", "spaces": [], "searcher": {"kind": "grid"},
        "scheduler": {"kind": "none"}, "budget": {"trials_per_cell": 1, "max_epochs": 1}, "seeds": [0],
        "top_k": 1}


def test_per_modality_cells():
    spec = spec_from_dict({**BASE, "cells": {"fusion": ["vavl"], "train_missing": [
        {"audio": 0.1, "video": 0.6}, {"audio": 0.6, "video": 0.1}]}})
    items = spec.cells.items()
    assert [(c["train_missing_rate"], c["audio_only_share"]) for c in items] == [
        (pytest.approx(0.7), pytest.approx(0.6 / 0.7)), (pytest.approx(0.7), pytest.approx(0.1 / 0.7))]
    names = [cell_name(c["fusion"], c["train_missing_rate"], c["audio_only_share"]) for c in items]
    assert names == ["fusion=vavl|a=0.1|v=0.6", "fusion=vavl|a=0.6|v=0.1"]
    assert cell_slug("vavl", 0.7, 0.6 / 0.7) == "vavl-a0.1-v0.6" and cell_slug("vavl", 0.3) == "vavl-r0.3"
    assert spec_from_dict(spec.to_dict()) == spec                        # spec.yaml round trip


@pytest.mark.parametrize("cells, fixed, why", [
    ({"train_missing": [{"audio": 0.6, "video": 0.5}]}, {}, r"cells.train_missing\[0\].audio \+ video = 1.1 > 1"),
    ({"train_missing": [{"audio": 1.0}]}, {}, r"cells.train_missing\[0\].audio: 1.0 not in \[0, 1\)"),
    ({"train_missing": [{"video": -0.2}]}, {}, r"cells.train_missing\[0\].video: -0.2"),
    ({"train_missing": [{"audio": 0.1, "vidoe": 0.2}]}, {}, r"cells.train_missing\[0\]: unknown key"),
    ({"train_missing": [{"audio": 0.1}], "train_missing_rate": [0.2]}, {}, "give one of the two"),
    ({"train_missing": [{"audio": 0.1}, {"audio": 0.1}]}, {}, "listed twice"),
    ({"train_missing": [{"audio": 0.1}]}, {"audio_only_share": 0.3}, "fixed.audio_only_share: fixed by cells"),
])
def test_per_modality_cells_refused(cells, fixed, why):
    with pytest.raises(SpecError, match=why):
        spec_from_dict({**BASE, "cells": cells, "fixed": fixed})


def test_imbalance_objectives():
    ok = spec_from_dict({**BASE, "objectives": [{"condition": "mei"}, {"condition": "mli"}]})
    assert [(o.condition, o.metric, o.mode) for o in ok.objectives] == [("mei", "macro_f1", "max"),
                                                                       ("mli", "mli", "min")]
    for objectives, fixed, why in [
        ([{"condition": "mli"}], {"log_grad_norms": False}, "mli needs the gradient norms"),
        ([{"condition": "av", "metric": "mli"}], {}, "metric mli is the one metric of condition mli"),
        ([{"condition": "mli", "metric": "macro_f1"}], {}, "metric mli is the one metric"),
        ([{"condition": "mei", "metric": "loss"}], {}, "the MEI of a loss is not defined"),
    ]:
        with pytest.raises(SpecError, match=why):
            spec_from_dict({**BASE, "objectives": objectives, "fixed": fixed})


# ----------------------------------------------------------------------------- the report


def _rows():
    out = []
    for fusion, (mei_v, mli_v) in {"late": (0.2, 0.6), "vavl": (0.8, 0.1)}.items():
        for seed in (0, 1):
            tid = f"{fusion}{seed}"
            base = {"trial_id": tid, "fusion": fusion, "unpaired_share": 0.3}
            out += [{**base, "condition": "av", "macro_f1": 0.8},
                    {**base, "condition": "miss_0.2", "macro_f1": 0.7},
                    {**base, "condition": "miss_0.6", "macro_f1": 0.4},
                    {**base, "condition": "mei", "macro_f1": mei_v + 0.02 * seed},
                    {**base, "condition": "mli", "mli": mli_v, "mli_signed": -mli_v},
                    {**base, "condition": "miss_a0_v0.3", "macro_f1": 0.6 + seed * 0.1},
                    {**base, "condition": "miss_a0.3_v0", "macro_f1": 0.5}]
    return pd.DataFrame(out)


def test_imbalance_table_and_grid_data():
    tab = gather.imbalance_table(_rows(), "macro_f1").set_index("fusion")
    assert tab.loc["vavl", "mei"] == pytest.approx(0.81) and tab.loc["late", "mli"] == pytest.approx(0.6)
    assert tab.loc["late", "mli_signed"] == pytest.approx(-0.6) and tab.loc["vavl", "n"] == 2
    assert tab.loc["vavl", "drop_within"] == pytest.approx(0.1)       # miss_0.2 <= trained 0.3
    assert tab.loc["vavl", "drop_beyond"] == pytest.approx(0.4)       # miss_0.6 > 0.3
    grid = gather.grid_data(_rows(), "macro_f1")
    assert list(grid) == ["late", "vavl"]
    g = grid["vavl"]
    assert list(g.index) == [0.0, 0.3] and list(g.columns) == [0.0, 0.3]
    assert g.loc[0.0, 0.3] == pytest.approx(0.65) and g.loc[0.3, 0.0] == pytest.approx(0.5)
    assert np.isnan(g.loc[0.3, 0.3])
    fig = figures.grid_heatmaps(grid, "macro_f1")
    assert len(fig.data) == 2
    curves = gather.robustness_curves(_rows(), "macro_f1")
    assert set(curves["family"]) == {"miss"}                           # the grid is no curve
