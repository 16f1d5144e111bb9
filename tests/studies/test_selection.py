"""No conclusion is selected on test: the best epoch, the top-k, the rerun seeds and the
data conditions of a study (study/training/session.py, study/runs/{selection,stages}.py)."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pandas as pd
import pytest
import torch

from search_spaces import SPACES, DataConditionError, combine
from study.data.protocol import epoch_dropout
from study.pareto import ranks as pareto_ranks
from study.runs.selection import base_flat, search_seed, search_seeds, selection_note
from study.runs.spec import SpecError, spec_from_dict
from study.runs.stages import rerun_jobs, select_top_k
from study.training.config import config_from_flat
from study.training.fit import fit
from study.training.session import Session
from tests.data.test_normalize import _scaled_corpus

optuna.logging.set_verbosity(optuna.logging.WARNING)
DEV_SCORES = [0.30, 0.60, 0.40, 0.50]  # scripted dev av macro-F1 per epoch: argmax is epoch 2


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    torch.set_num_threads(1)
    return _scaled_corpus(tmp_path_factory.mktemp("sel") / "ds", n_per_split=(60, 24, 24))


def _flat(**kw) -> dict:
    return {"lr": 3e-3, "batch_size": 16, "max_epochs": 4, "patience": 4, **kw}


def _spy(monkeypatch) -> list[tuple]:
    """Record every Session.evaluate (split, epoch, weights) and restore_best call; the dev
    scores of epochs before the restore are replaced by DEV_SCORES."""
    log: list[tuple] = []
    real_eval, real_restore = Session.evaluate, Session.restore_best

    def evaluate(self, split="dev", *args, **kwargs):
        rows = real_eval(self, split, *args, **kwargs)
        weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        restored = any(e[0] == "restore" for e in log)
        log.append(("evaluate", split, self.epoch, weights))
        if split == "dev" and not restored:
            for r in rows:
                if r["condition"] == "av":
                    r["macro_f1"] = DEV_SCORES[self.epoch - 1]
        return rows

    def restore_best(self):
        log.append(("restore", None, self.epoch, None))
        return real_restore(self)

    monkeypatch.setattr(Session, "evaluate", evaluate)
    monkeypatch.setattr(Session, "restore_best", restore_best)
    return log


def _check_test_once_from_best_epoch(log: list[tuple], best_epoch: int) -> None:
    tests = [i for i, e in enumerate(log) if e[:2] == ("evaluate", "test")]
    restores = [i for i, e in enumerate(log) if e[0] == "restore"]
    assert len(tests) == 1 and restores and restores[0] < tests[0]
    dev = {e[2]: e[3] for e in log[:restores[0]] if e[:2] == ("evaluate", "dev")}
    assert sorted(dev) == [1, 2, 3, 4]                         # one dev evaluation per epoch
    assert best_epoch == int(np.argmax(DEV_SCORES)) + 1 == 2
    at_test = log[tests[0]][3]
    assert all(torch.equal(at_test[k], dev[2][k]) for k in at_test)   # the best dev epoch's weights
    assert not all(torch.equal(at_test[k], dev[4][k]) for k in at_test)  # not the last epoch's


def test_fit_evaluates_test_once_after_restoring_the_best_dev_epoch(data, monkeypatch):
    log = _spy(monkeypatch)
    cfg = config_from_flat({"preset": "tiny", **_flat()}, data_dir=data)
    record = fit(cfg, data, log=lambda s: None)
    _check_test_once_from_best_epoch(log, record["best_epoch"])
    assert record["epochs"] == 4 and {r["condition"] for r in record["test"]} >= {"av", "video_only"}


def test_ray_worker_loop_evaluates_test_once_after_restoring_the_best_dev_epoch(data, monkeypatch):
    from study.runs.worker import TrialContext, worker_loop

    log = _spy(monkeypatch)
    reports = []
    ctx = TrialContext(data_dir=str(data), model_preset="tiny",
                       objectives=(("av", "macro_f1", "max"),), evaluate_test=True)
    worker_loop(_flat(), ctx, report=lambda m, checkpoint=None: reports.append(m),
                get_checkpoint=lambda: None, make_checkpoint=lambda d: None)
    assert [m["epoch"] for m in reports] == [1, 2, 3, 4]
    assert [m["score"] for m in reports] == DEV_SCORES
    last = reports[-1]
    _check_test_once_from_best_epoch(log, last["best_epoch"])
    assert last["finished"] and json.loads(last["test_rows"])[0]["condition"] == "av"
    assert "test_rows" not in reports[-2]
    assert json.loads(last["best_rows"])[0]["macro_f1"] == 0.60      # dev rows of the best epoch


def _rows(audio_loss: float, video_loss: float, av_f1: float) -> list[dict]:
    return [{"condition": "av", "macro_f1": av_f1, "loss": 1.0},
            {"condition": "audio_only", "macro_f1": 0.5, "loss": audio_loss},
            {"condition": "video_only", "macro_f1": 0.5, "loss": video_loss}]


def test_checkpoint_follows_the_first_objective_not_the_primary_metric(data):
    spec = spec_from_dict({"name": "s", "dataset": {"path": str(data)}, "model_preset": "tiny",
                           "spaces": ["optimisation"],
                           "objectives": [{"metric": "loss", "condition": "worst_single",
                                           "mode": "min"}, {"metric": "macro_f1"}]})
    flat = base_flat(spec, {"fusion": "late", "train_missing_rate": 0.0}, 3, 7)
    assert (flat["select_condition"], flat["select_metric"], flat["select_mode"]) == (
        "worst_single", "loss", "min")
    s = Session(config_from_flat({"preset": "tiny", **flat}, data_dir=data), data)
    # worst single-modality loss per epoch: 0.9, NaN, 0.7, 0.8 -> epoch 3; av macro-F1 says 4
    for epoch, rows in enumerate([_rows(0.9, 0.5, 0.9), _rows(float("nan"), 0.1, 0.99),
                                  _rows(0.6, 0.7, 0.1), _rows(0.8, 0.2, 0.95)], 1):
        s.epoch = epoch
        s.observe(rows)
    assert s.best_epoch == 3 and s.best_score == pytest.approx(0.7)


def test_train_epoch_reports_the_realised_unpaired_share(data):
    cfg = config_from_flat({"preset": "tiny", **_flat(train_missing_rate=0.4, modality_dropout=0.25)},
                           data_dir=data)
    s = Session(cfg, data)
    split = s.splits["train"]
    shares = [s.train_epoch()["unpaired_share"] for _ in range(2)]
    for epoch, share in enumerate(shares):
        has_a, has_v = epoch_dropout(len(split), split.has_audio, split.has_video, cfg.protocol, epoch)
        assert share == pytest.approx(float(np.mean(has_a != has_v)))
    assert 0.4 < np.mean(shares) < 0.7            # r = 0.4 plus dropout 0.25 of the rest: 0.55


# ----------------------------------------------------------------------------- study stages


def _spec(**kw) -> object:
    raw = {"name": "s", "dataset": {"synth": {"scale": "tiny"}}, "model_preset": "tiny",
           "spaces": ["optimisation_tiny"], "budget": {"trials_per_cell": 4},
           "seeds": [0, 1, 2], "top_k": 3,
           "objectives": [{"metric": "macro_f1", "condition": "av"},
                          {"metric": "macro_f1", "condition": "worst_single"}]}
    raw.update(kw)
    return spec_from_dict(raw)


def _search_table(scores: dict[str, tuple[float, float]], seed: int = 3,
                  lrs: dict[str, float] | None = None) -> pd.DataFrame:
    """search/dev rows of one cell: trial -> (av macro-F1, worst single macro-F1)."""
    rows = []
    for tid, (av, worst) in scores.items():
        lr = (lrs or {}).get(tid, 0.01)
        for cond, value in (("av", av), ("audio_only", worst), ("video_only", worst + 0.05)):
            rows.append({"trial_id": tid, "cell": "fusion=late|r=0", "status": "completed",
                         "split": "dev", "condition": cond, "macro_f1": value, "seed": seed,
                         "config": json.dumps({"fusion": "late", "train_missing_rate": 0.0,
                                               "seed": seed, "lr": lr}, sort_keys=True),
                         "param__lr": lr})
    rows.append({**rows[-1], "split": "test", "condition": "av", "macro_f1": 0.99,
                 "trial_id": "C"})  # a test row must never count
    return pd.DataFrame(rows)


def test_top_k_is_pareto_rank_then_the_first_objective():
    # A, B, D are not dominated; C (0.70, 0.40) is dominated by B (0.75, 0.50)
    table = _search_table({"A": (0.80, 0.10), "B": (0.75, 0.50), "C": (0.70, 0.40),
                           "D": (0.60, 0.60)})
    assert [tid for tid, _ in select_top_k(_spec(), table)] == ["A", "B", "D"]
    single = _spec(objectives=[{"metric": "macro_f1", "condition": "av"}])
    assert [tid for tid, _ in select_top_k(single, table)] == ["A", "B", "C"]
    note = selection_note(_spec())
    assert note["split"] == "dev" and note["top_k"]["rule"] == "pareto_then_first"
    assert "Pareto rank over av_macro_f1 (max), worst_single_macro_f1 (max)" in note["top_k"]["text"]
    assert pareto_ranks(np.array([[1.0, 0.0], [0.5, 0.5], [0.4, 0.4], [np.nan, 1.0]])).tolist() == [
        0, 0, 1, 0]


def test_a_tie_is_broken_by_the_configuration_not_the_random_trial_id():
    """A resumed study gives its trials new random Tune ids: a tie (common at chance level)
    must still go to the same configuration as in an uninterrupted run (CI caught this)."""
    single = _spec(objectives=[{"metric": "macro_f1", "condition": "av"}], top_k=1)
    lrs = {"x": 3.2e-05, "y": 2.9e-05}
    for first, second in (("a1", "z9"), ("z9", "a1")):  # the ids swap order between runs
        table = _search_table({first: (0.5, 0.1), second: (0.5, 0.1)},
                              lrs={first: lrs["x"], second: lrs["y"]})
        (tid, row), = select_top_k(single, table)
        assert json.loads(row["config"])["lr"] == lrs["y"], tid  # "2.9e-05" sorts before "3.2e-05"


def test_rerun_seeds_are_fresh():
    spec = _spec()
    assert search_seed(spec) == 3 and not set(search_seeds(spec)) & set(spec.seeds)
    grid = _spec(spaces=[], searcher={"kind": "grid"}, seeds=[5, 0], budget={"trials_per_cell": 3})
    assert search_seeds(grid) == [6, 7, 8]
    jobs = rerun_jobs(spec, _search_table({"A": (0.8, 0.5)}, seed=search_seed(spec)))
    assert [j["flat"]["seed"] for j in jobs] == [0, 1, 2]
    assert all(j["meta"]["parent_trial_id"] == "A" and j["flat"]["seed"] != 3 for j in jobs)
    with pytest.raises(ValueError, match="rerun would not be fresh"):
        rerun_jobs(spec, _search_table({"A": (0.8, 0.5)}, seed=0))  # a search that used seed 0
    assert selection_note(spec)["seeds"] == {"search": [3], "rerun": [0, 1, 2],
                                             "text": selection_note(spec)["seeds"]["text"]}


def test_missing_space_searches_augmentation_only():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        params = SPACES["missing"](study.ask())
        assert "audio_only_share" not in params and "train_missing_rate" not in params
        assert 0.0 <= params["modality_dropout"] <= 0.3


def test_searching_a_data_condition_needs_the_spec_opt_in():
    trial = optuna.create_study().ask()
    with pytest.raises(DataConditionError, match="audio_only_share"):
        combine(["data_conditions"], {"train_missing_rate": 0.5})(trial)
    assert combine(["data_conditions"], {"audio_only_share": 0.3})(trial)["audio_only_share"] == 0.3
    opted = combine(["data_conditions"], {}, data_conditions=True)(trial)
    assert 0.2 <= opted["audio_only_share"] <= 0.8
    with pytest.raises(SpecError, match=r"spaces\[1\]: 'data_conditions' .*search_data_conditions"):
        _spec(spaces=["optimisation_tiny", "data_conditions"])
    spec = _spec(spaces=["optimisation_tiny", "data_conditions"], search_data_conditions=True)
    assert selection_note(spec)["data_conditions"] == {"searched": ["audio_only_share"], "opt_in": True}
    assert spec_from_dict(spec.to_dict()) == spec and spec.to_dict()["search_data_conditions"] is True
    assert selection_note(_spec())["data_conditions"] == {"searched": [], "opt_in": False}
