"""Search efficiency: how many trial-epochs a search needs to find a good configuration.

Two parts, one run:
1. A tabular benchmark is measured for real: every configuration of a small discrete space
   (tiny VAVL on a synthetic corpus) is trained for E epochs with `Session`, and its dev scores
   (av macro-F1, worst single-modality macro-F1) are recorded per epoch.
2. Searches are replayed on that table with the real Optuna samplers and the real early-
   stopping rules (Ray Tune's ASHA, avstudy's MOASHA), under an asynchronous simulator with
   `concurrency` trial slots; time is counted in trial-epochs (the unit a study pays for).
   Replays are cheap, so every strategy gets 3 search seeds on exactly the same table.

Printed, side by side:
- anytime curves (best dev av score vs trial-epochs, mean of seeds) for random search without
  early stopping, TPE without, TPE + ASHA; target: TPE + ASHA reaches 99% of random search's
  best score with at most 35% of random search's trial-epochs;
- TPE at concurrency 8 with and without Optuna's constant liar (trial-epochs to the same target);
- hypervolume (av x worst-single, reference (0, 0)) per trial-epoch, MOASHA vs ASHA on the
  first objective, both with multi-objective TPE.

    python benchmarks/search_efficiency.py [--quick] [--png docs/search_efficiency.png]
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPACE_FULL = {"lr": [3e-4, 1e-3, 3e-3, 8e-3], "d_model": [16, 32], "enc_layers": [1, 2], "dropout": [0.0, 0.3]}
SPACE_QUICK = {"lr": [3e-4, 3e-3], "d_model": [16, 32], "dropout": [0.0, 0.3]}


# ----------------------------------------------------------------------------- the table


def configs(space: dict) -> list[dict]:
    keys = list(space)
    return [dict(zip(keys, values)) for values in itertools.product(*(space[k] for k in keys))]


def measure_table(data_dir: str, space: dict, epochs: int, threads: int) -> pd.DataFrame:
    """One row per (configuration, epoch): dev av and worst-single macro-F1 (real training)."""
    import torch

    from study.training.config import config_from_flat, objective_value
    from study.training.session import Session

    torch.set_num_threads(threads)
    rows = []
    for cid, params in enumerate(configs(space)):
        flat = {"preset": "tiny", "fusion": "vavl", "max_epochs": epochs, "patience": epochs, "seed": 0,
                "n_heads": 2, **params}
        s = Session(config_from_flat(flat, data_dir=data_dir), data_dir)
        for _ in range(epochs):
            info = s.train_epoch()
            dev = s.evaluate("dev", conditions=["av", "audio_only", "video_only"])
            rows.append({"cid": cid, **params, "epoch": info["epoch"], "seconds": info["seconds"],
                         "av": objective_value(dev, "av", "macro_f1"),
                         "worst": objective_value(dev, "worst_single", "macro_f1")})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- replay


@dataclass(frozen=True)
class Strategy:
    name: str
    sampler: str  # "random" | "tpe"
    scheduler: str  # "none" | "asha" | "moasha"
    multi: bool = False  # Optuna told both objectives
    constant_liar: bool = False


def _sampler(s: Strategy, seed: int, n_startup: int):
    import optuna

    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup, constant_liar=s.constant_liar)


def _scheduler(s: Strategy, epochs: int):
    from ray.tune.schedulers import ASHAScheduler

    from study.runs.schedulers import MOASHA

    if s.scheduler == "asha":
        return ASHAScheduler(time_attr="epoch", metric="av", mode="max", max_t=epochs, grace_period=1,
                             reduction_factor=3)
    if s.scheduler == "moasha":
        return MOASHA(["av", "worst"], ["max", "max"], max_t=epochs, grace_period=1, reduction_factor=3)
    return None


def replay(table: pd.DataFrame, space: dict, s: Strategy, seed: int, budget: int, concurrency: int,
           n_startup: int) -> pd.DataFrame:
    """Asynchronous search on the table until `budget` trial-epochs are spent.

    Returns one row per trial-epoch spent: spent, trial, epoch, av, worst."""
    import optuna
    from ray.tune.schedulers import TrialScheduler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    epochs = int(table["epoch"].max())
    lookup = {(tuple(r[k] for k in space), int(r["epoch"])): (r["av"], r["worst"]) for _, r in table.iterrows()}
    study = optuna.create_study(directions=["maximize"] * (2 if s.multi else 1), sampler=_sampler(s, seed, n_startup))
    sched = _scheduler(s, epochs)
    heap, log, spent, started = [], [], 0, itertools.count()

    def start(now: float) -> None:
        ot = study.ask()
        key = tuple(ot.suggest_categorical(k, v) for k, v in space.items())
        trial = SimpleNamespace(trial_id=f"t{next(started)}", ot=ot, key=key, epoch=0)
        if sched is not None:
            sched.on_trial_add(None, trial)
        heapq.heappush(heap, (now + 1, trial.trial_id, trial))

    for _ in range(concurrency):
        start(0.0)
    while heap and spent < budget:
        now, _, trial = heapq.heappop(heap)
        trial.epoch += 1
        spent += 1
        av, worst = lookup[(trial.key, trial.epoch)]
        log.append({"spent": spent, "trial": trial.trial_id, "epoch": trial.epoch, "av": av, "worst": worst})
        if not s.multi:
            trial.ot.report(av, trial.epoch)
        result = {"epoch": trial.epoch, "av": av, "worst": worst}
        action = sched.on_trial_result(None, trial, result) if sched is not None else TrialScheduler.CONTINUE
        if trial.epoch >= epochs:
            study.tell(trial.ot, [av, worst] if s.multi else av)
        elif action == TrialScheduler.STOP:
            study.tell(trial.ot, state=optuna.trial.TrialState.PRUNED)
        else:
            heapq.heappush(heap, (now + 1, trial.trial_id, trial))
            continue
        start(now)
    return pd.DataFrame(log)


# ----------------------------------------------------------------------------- measures


def best_so_far(log: pd.DataFrame, budget: int) -> np.ndarray:
    """(budget,) best av score seen after each trial-epoch (the last value carried forward)."""
    curve = np.maximum.accumulate(log["av"].to_numpy())
    return np.concatenate([curve, np.full(max(0, budget - len(curve)), curve[-1])])[:budget]


def hypervolume_2d(points: np.ndarray) -> float:
    """Area dominated by points (N, 2) (larger is better) above the reference point (0, 0)."""
    pts = points[(points > 0).all(1)]
    if not len(pts):
        return 0.0
    pts = pts[np.argsort(-pts[:, 0])]
    area, best_y = 0.0, 0.0
    for x, y in pts:
        if y > best_y:
            area += x * (y - best_y)
            best_y = y
    return area


def hypervolume_curve(log: pd.DataFrame, budget: int, every: int) -> np.ndarray:
    pts = log[["av", "worst"]].to_numpy()
    marks = range(every, budget + 1, every)
    return np.array([hypervolume_2d(pts[:m]) for m in marks])


def epochs_to(curve: np.ndarray, target: float) -> int | None:
    hit = np.flatnonzero(curve >= target)
    return int(hit[0]) + 1 if len(hit) else None


# ----------------------------------------------------------------------------- report


def measure(args: argparse.Namespace) -> dict:
    from study.data.generate import make_corpus

    space = SPACE_QUICK if args.quick else SPACE_FULL
    epochs = 3 if args.quick else args.epochs
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data = str(make_corpus(Path(tmp) / "data", preset=args.preset, scale="tiny", seed=0, progress=False))
        table = measure_table(data, space, epochs, args.threads)
    table_s = time.perf_counter() - t0
    n_trials = len(configs(space))  # random search without early stopping: one table's worth of trials
    budget = n_trials * epochs
    seeds = range(args.seeds)
    single = [Strategy("random", "random", "none"), Strategy("tpe", "tpe", "none"),
              Strategy("tpe+asha", "tpe", "asha")]
    curves = {s.name: np.mean([best_so_far(replay(table, space, s, k, budget, args.concurrency, args.startup), budget)
                               for k in seeds], axis=0) for s in single}
    target = 0.99 * curves["random"][-1]
    needed = {name: epochs_to(c, target) for name, c in curves.items()}
    liar = {}
    for flag in (False, True):
        s = Strategy(f"tpe+asha liar={flag}", "tpe", "asha", constant_liar=flag)
        c = np.mean([best_so_far(replay(table, space, s, k, budget, 8, args.startup), budget) for k in seeds], axis=0)
        liar[flag] = epochs_to(c, target)
    every = max(1, budget // 10)
    hv = {}
    for sched in ("asha", "moasha"):
        s = Strategy(f"mo-tpe+{sched}", "tpe", sched, multi=True)
        hv[sched] = np.mean([hypervolume_curve(replay(table, space, s, k, budget, args.concurrency, args.startup),
                                               budget, every) for k in seeds], axis=0)
    return {"table": table, "table_s": table_s, "budget": budget, "target": target, "curves": curves,
            "needed": needed, "liar": liar, "hv": hv, "every": every, "epochs": epochs, "configs": len(configs(space))}


def print_report(res: dict, args: argparse.Namespace) -> None:
    b = res["budget"]
    print(f"table: {res['configs']} configurations x {res['epochs']} epochs measured in {res['table_s']:.0f} s; "
          f"budget {b} trial-epochs; {args.seeds} search seeds; concurrency {args.concurrency}")
    print("best dev av after the budget: " + ", ".join(f"{k} {c[-1]:.4f}" for k, c in res["curves"].items()))
    print(f"target = 99% of random search's best = {res['target']:.4f}")
    for name, n in res["needed"].items():
        print(f"  {name:<10} trial-epochs to target: {n if n else 'not reached'}"
              + (f"  ({n / b:.0%} of random's budget)" if n else ""))
    ratio = res["needed"]["tpe+asha"] / b if res["needed"]["tpe+asha"] else float("inf")
    print(f"TPE+ASHA / random trial-epochs = {ratio:.2f} (target <= 0.35: {'met' if ratio <= 0.35 else 'MISSED'})")
    print("concurrency 8, TPE+ASHA: trial-epochs to target without / with constant liar: "
          f"{res['liar'][False]} / {res['liar'][True]}")
    hv_a, hv_m = res["hv"]["asha"], res["hv"]["moasha"]
    marks = [res["every"] * (i + 1) for i in range(len(hv_a))]
    print("hypervolume (av x worst-single) per trial-epochs: " +
          " ".join(f"{m}:{a:.3f}/{mo:.3f}" for m, a, mo in zip(marks, hv_a, hv_m)) + "  (ASHA/MOASHA)")
    print(f"mean hypervolume over the budget, MOASHA / ASHA = {hv_m.mean() / max(hv_a.mean(), 1e-12):.3f}")


def summary(res: dict) -> list[dict]:
    """Rows for benchmarks/run_all.py: measure, alternatives, ratio, target, met."""
    b = res["budget"]
    n = res["needed"]["tpe+asha"]
    ratio = n / b if n else float("inf")
    liar = res["liar"]
    hv = res["hv"]["moasha"].mean() / max(res["hv"]["asha"].mean(), 1e-12)
    return [
        {"measure": "trial-epochs to 99% of random's best", "alternatives": "TPE+ASHA / random",
         "ratio": ratio, "target": "<= 0.35", "met": ratio <= 0.35},
        {"measure": "trial-epochs to target at concurrency 8", "alternatives": "liar / no liar",
         "ratio": (liar[True] or float("inf")) / (liar[False] or float("inf")) if liar[False] else float("nan"),
         "target": "< 1 (report)", "met": None},
        {"measure": "mean hypervolume over the budget", "alternatives": "MOASHA / ASHA(av)",
         "ratio": hv, "target": ">= 1 (report)", "met": None},
    ]


def plot(res: dict, path: Path) -> None:
    """The PNG (matplotlib); without matplotlib the curves go to PATH.json instead, never lost."""
    try:
        import matplotlib
    except ImportError:
        out = path.with_suffix(".json")
        out.write_text(json.dumps({k: np.asarray(v).tolist() for k, v in res["curves"].items()}))
        print(f"matplotlib is not installed (pip install matplotlib): curves written to {out} instead")
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for name, c in res["curves"].items():
        a.plot(np.arange(1, len(c) + 1), c, label=name)
    a.axhline(res["target"], ls=":", c="grey", label="99% of random's best")
    a.set(xlabel="trial-epochs spent", ylabel="best dev macro-F1 (av)", title="Anytime (mean of search seeds)")
    a.legend()
    marks = [res["every"] * (i + 1) for i in range(len(res["hv"]["asha"]))]
    b.plot(marks, res["hv"]["asha"], marker="o", label="MO-TPE + ASHA (av)")
    b.plot(marks, res["hv"]["moasha"], marker="s", label="MO-TPE + MOASHA")
    b.set(xlabel="trial-epochs spent", ylabel="hypervolume (av x worst single)", title="Two objectives")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="8 configurations x 3 epochs (about a minute)")
    p.add_argument("--epochs", type=int, default=6, help="epochs per configuration in the table (full run)")
    p.add_argument("--preset", default="known-answer",
                   help="synthetic corpus preset (tiny scale); known-answer is learnt within a few epochs")
    p.add_argument("--seeds", type=int, default=3, help="search seeds per strategy")
    p.add_argument("--concurrency", type=int, default=4, help="trial slots of the simulated cluster")
    p.add_argument("--startup", type=int, default=5, help="TPE's random start-up trials")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--png", type=Path, help="write the anytime and hypervolume curves here (needs matplotlib)")
    p.add_argument("--json", type=Path, help="write the curves as JSON here")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    """Measure the table, replay every strategy, print the report (and the PNG/JSON if asked)."""
    res = measure(args)
    print_report(res, args)
    if args.png:
        plot(res, args.png)
    if args.json:
        args.json.write_text(json.dumps({k: v.tolist() for k, v in res["curves"].items()}))
    return res


if __name__ == "__main__":
    run(parse_args())
