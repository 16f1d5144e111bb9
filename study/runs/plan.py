"""`avstudy plan`, `avstudy spaces` and `avstudy export-best`: look before spending, and take the
winner home.

- `plan`: what a sweep would run (cells x trials per stage), how many trials run at once on the
  resources it sees (given, or read from this machine without starting Ray), and the CPU/GPU-hours
  it would take, from one timed training epoch (or a stated rough figure with `--no-probe`). It
  validates what the sweep validates: the spec, the dataset, and each cell's spaces sampled once.
- `spaces`: every search space's parameters with their ranges, found by running each
  define-by-run space with a recording trial over all its categorical branches.
- `export-best`: the dev-selected configuration of a finished study (never test) as a config
  file `avstudy train --config` accepts.

`plan --no-probe` and `spaces` never import torch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from study.runs.spec import SpecError, StudySpec, check_resources, data_location, max_concurrent
from study.training.config import objective_value

ROUGH_EPOCH_S = {"tiny": 5.0, "paper": 120.0}  # --no-probe: a stated rough seconds-per-epoch figure


# ----------------------------------------------------------------------------- resources


def local_resources() -> tuple[dict[str, float], str]:
    """({"CPU", "GPU"}, where it came from) of this machine, without starting Ray or torch."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpus = 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        gpus = len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
        source = "this machine (CPU count, CUDA_VISIBLE_DEVICES)"
    elif shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
            gpus = sum(line.startswith("GPU ") for line in out.stdout.splitlines())
        except (OSError, subprocess.SubprocessError):
            gpus = 0
        source = "this machine (CPU count, nvidia-smi)"
    else:
        source = "this machine (CPU count; no nvidia-smi, so no GPU)"
    return {"CPU": float(cpus or 1), "GPU": float(gpus)}, source


# ----------------------------------------------------------------------------- counting


@dataclass(frozen=True)
class StagePlan:
    name: str
    experiments: int
    trials: int
    max_epochs_per_trial: int


def stage_plan(spec: StudySpec) -> list[StagePlan]:
    cells = len(spec.cells.items())
    rerun = cells * spec.top_k * len(spec.seeds)
    epochs = spec.budget.rerun_max_epochs or spec.budget.max_epochs
    return [StagePlan("search", cells, cells * spec.budget.trials_per_cell, spec.budget.max_epochs),
            StagePlan("rerun", 1, rerun, epochs),
            StagePlan("final", 1, rerun, 0)]


# ----------------------------------------------------------------------------- validation


def sample_cells(spec: StudySpec, data_dir: str | None, seed: int = 0) -> list[dict]:
    """One flat config per cell, its spaces sampled once (random), each built into a
    TrainConfig: what a trial of the sweep would do first."""
    import optuna

    from search_spaces import combine
    from study.runs.selection import search_seed
    from study.runs.stages import base_flat
    from study.training.config import config_from_flat

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = []
    for i, cell in enumerate(spec.cells.items()):
        fixed = base_flat(spec, cell, spec.budget.max_epochs, search_seed(spec))
        flat = dict(fixed)
        if spec.spaces:
            study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed + i))
            space = combine(spec.spaces, fixed, getattr(spec, "search_data_conditions", False))
            flat = space(study.ask())
        where = f"cell fusion={cell['fusion']}, r={cell['train_missing_rate']:g}"
        try:
            config_from_flat(flat, preset=spec.model_preset, data_dir=data_dir)
        except (ValueError, KeyError) as exc:
            raise SpecError(f"{where}: a sampled configuration is invalid: {exc}") from None
        out.append(flat)
    return out


def check_data(spec: StudySpec) -> tuple[str | None, str]:
    """(dataset dir or None when it is still to be generated, a line saying what was checked)."""
    from study.data.dataset import check_splits, describe, open_dataset

    data_dir, synth = data_location(spec)
    if not (Path(data_dir) / "dataset.json").exists():
        if synth is None:
            raise SpecError(f"dataset.path: {data_dir} holds no dataset.json")
        return None, f"synthetic corpus {'/'.join(map(str, synth))}: generated at the first run ({data_dir})"
    ds = open_dataset(data_dir)  # full validation, as the sweep does once per study
    check_splits(ds)
    return data_dir, f"{data_dir}: valid; {describe(ds)}"


# ----------------------------------------------------------------------------- probe


def probe_epoch_s(flat: dict, spec: StudySpec, data_dir: str, device: str | None = None) -> float:
    """Seconds of one training epoch plus one dev evaluation of `flat` (imports torch)."""
    from study.training.config import config_from_flat
    from study.training.session import Session

    cfg = config_from_flat({**flat, "max_epochs": 1}, preset=spec.model_preset, data_dir=data_dir)
    s = Session(cfg, data_dir, device=device)
    t0 = time.perf_counter()
    s.train_epoch()
    s.evaluate("dev")
    return time.perf_counter() - t0


def make_data(spec: StudySpec) -> str:
    """Generate the synthetic corpus where the sweep would (so the probe has data)."""
    from study.data.generate import make_corpus

    data_dir, synth = data_location(spec)
    if not (Path(data_dir) / "dataset.json").exists() and synth is not None:
        preset, scale, seed = synth
        make_corpus(data_dir, preset=preset, scale=scale, seed=seed, progress=False)
    return data_dir


# ----------------------------------------------------------------------------- plan


def plan_text(spec: StudySpec, cluster: Mapping[str, float], source: str, probe: bool,
              device: str | None = None) -> str:
    """The whole `avstudy plan` report (raises SpecError/DatasetError on what the sweep would)."""
    lines = [f"study {spec.name}: {len(spec.cells.items())} cell(s) "
             f"({len(spec.cells.fusion)} fusion x {len(spec.cells.train_missing_rate)} train_missing_rate), "
             f"searcher {spec.searcher.kind}, scheduler {spec.scheduler.kind}"]
    if not spec.resources.max_concurrent_trials:
        check_resources(spec, cluster)
    conc = max_concurrent(spec, cluster)
    r = spec.resources
    per_trial_cpu, per_trial_gpu = r.workers * r.cpus_per_worker, r.workers * r.gpus_per_worker
    lines.append(f"resources: {cluster.get('CPU', 0):g} CPU, {cluster.get('GPU', 0):g} GPU from {source}; "
                 f"a trial takes {per_trial_cpu:g} CPU + {per_trial_gpu:g} GPU "
                 f"({'inline' if r.inline else 'Ray Train'}); at most {conc} trial(s) at once")
    data_dir, data_line = check_data(spec)
    lines.append(f"dataset: {data_line}")
    stages = stage_plan(spec)
    for st in stages:
        what = (f"{st.experiments} experiment(s), {st.trials} trial(s), <= {st.max_epochs_per_trial} epochs each"
                if st.max_epochs_per_trial else f"test evaluation of the {st.trials} rerun trial(s)")
        lines.append(f"  {st.name:<7} {what}")
    if probe and data_dir is None:
        data_dir = make_data(spec)
    flats = sample_cells(spec, data_dir)
    lines.append(f"spaces {list(spec.spaces) or '(none: grid of fixed values)'}: sampled once per cell, "
                 "every configuration valid")
    if probe:
        epoch_s = probe_epoch_s(flats[0], spec, data_dir, device)
        how = f"measured: one epoch of cell 1's sampled configuration took {epoch_s:.1f} s"
    else:
        epoch_s = ROUGH_EPOCH_S.get(spec.model_preset, 60.0)
        how = (f"rough figure: {epoch_s:g} s per epoch assumed for the {spec.model_preset} preset "
               "(--no-probe; run without it to time one epoch)")
    epochs = sum(st.trials * st.max_epochs_per_trial for st in stages)
    trial_h = epochs * epoch_s / 3600
    lines.append(f"estimate ({how}): <= {epochs} trial-epochs = {trial_h:.2f} trial-hours, "
                 f"{trial_h * per_trial_cpu:.2f} CPU-hours, {trial_h * per_trial_gpu:.2f} GPU-hours, "
                 f"~{trial_h / conc * 60:.0f} min wall at {conc} at once "
                 f"(an upper bound: {spec.scheduler.kind} stops weak trials early)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- spaces


class RecordingTrial:
    """A stand-in Optuna trial: records each suggestion and answers from `forced` choices."""

    def __init__(self, forced: Mapping[str, int]):
        self.forced = dict(forced)
        self.seen: dict[str, dict] = {}

    def suggest_categorical(self, name: str, choices):
        self.seen[name] = {"kind": "categorical", "choices": list(choices)}
        return list(choices)[self.forced.get(name, 0)]

    def suggest_float(self, name: str, low, high, *, step=None, log=False):
        self.seen[name] = {"kind": "float", "low": low, "high": high, "log": log, "step": step}
        return low

    def suggest_int(self, name: str, low, high, *, step=1, log=False):
        self.seen[name] = {"kind": "int", "low": low, "high": high, "log": log, "step": step}
        return low


def introspect(space_fn, max_runs: int = 256) -> dict[str, dict]:
    """{parameter: description + 'when'} over every categorical branch of a define-by-run space.

    A parameter suggested only on some branches gets `when`: the choices that lead to it.
    """
    runs: list[tuple[dict, dict]] = []
    todo: list[dict[str, int]] = [{}]
    done: set[tuple] = set()
    while todo and len(runs) < max_runs:
        forced = todo.pop()
        key = tuple(sorted(forced.items()))
        if key in done:
            continue
        done.add(key)
        trial = RecordingTrial(forced)
        space_fn(trial)
        runs.append((forced, trial.seen))
        for name, d in trial.seen.items():
            if d["kind"] == "categorical" and name not in forced:
                todo += [{**forced, name: i} for i in range(1, len(d["choices"]))] + [{**forced, name: 0}]
    params: dict[str, dict] = {}
    for _forced, seen in runs:
        for name, d in seen.items():
            params.setdefault(name, {**d, "in_runs": 0})["in_runs"] += 1
    for name, d in params.items():
        if d.pop("in_runs") < len(runs):
            conds = _branch_conditions(name, runs)
            d["when"] = conds
    return params


def _branch_conditions(name: str, runs) -> str:
    """The categorical choices shared by every branch where `name` is suggested (a short note)."""
    with_it = [(forced, seen) for forced, seen in runs if name in seen]
    common = None
    for forced, seen in with_it:
        picks = {n: repr(seen[n]["choices"][forced.get(n, 0)]) for n in seen
                 if seen[n]["kind"] == "categorical" and n != name}
        common = picks if common is None else {k: v for k, v in common.items() if picks.get(k) == v}
    parts = [f"{k}={v}" for k, v in sorted((common or {}).items())]
    return ", ".join(parts) if parts else "on some branches"


def describe_param(d: dict) -> str:
    if d["kind"] == "categorical":
        text = "one of " + ", ".join(map(str, d["choices"]))
    else:
        scale = " (log)" if d.get("log") else ""
        step = f" step {d['step']}" if d.get("step") not in (None, 1) else ""
        text = f"{d['kind']} [{d['low']:g}, {d['high']:g}]{scale}{step}"
    return text + (f"   when {d['when']}" if d.get("when") else "")


def spaces_text(names: list[str] | None = None) -> str:
    from search_spaces import SPACES

    names = names or list(SPACES)
    unknown = [n for n in names if n not in SPACES]
    if unknown:
        raise ValueError(f"unknown search space(s) {unknown}; choose from {sorted(SPACES)}")
    out = []
    for name in names:
        doc = " ".join((SPACES[name].__doc__ or "").strip().split("\n\n")[0].split())
        out.append(f"{name}: {doc}")
        params = introspect(SPACES[name])
        width = max((len(p) for p in params), default=0)
        out += [f"  {p.ljust(width)}  {describe_param(d)}" for p, d in params.items()]
    return "\n".join(out)


# ----------------------------------------------------------------------------- export-best


def best_config(study_dir: str | Path, stage: str = "rerun") -> tuple[dict, str]:
    """(flat config with its preset, a note naming the trial) of the dev-selected configuration.

    search: the trial with the best first objective on dev over all cells. rerun: the
    configuration with the best mean first objective on dev over its seeds, exported with its
    first seed (so `avstudy train --config` reproduces that run). Test rows are never read.
    """
    import pandas as pd

    study_dir = Path(study_dir)
    meta_path, results_path = study_dir / "study.json", study_dir / "results.parquet"
    for p in (meta_path, results_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: missing (is {study_dir} a study directory?)")
    meta = json.loads(meta_path.read_text())
    obj = meta["objectives"][0]
    df = pd.read_parquet(results_path, filters=[("split", "==", "dev"), ("stage", "==", stage)])
    df = df[df["status"] != "failed"]
    if not len(df):
        raise ValueError(f"{results_path}: no finished {stage} trials with dev rows")
    scores = []
    for tid, rows in df.groupby("trial_id", sort=True):
        v = objective_value(rows.to_dict("records"), obj["condition"], obj["metric"], obj["mode"])
        first = rows.iloc[0]
        group = first["parent_trial_id"] if stage == "rerun" and pd.notna(first["parent_trial_id"]) else tid
        scores.append({"trial_id": tid, "group": group, "value": v, "seed": int(first["seed"]),
                       "config": first["config"]})
    table = pd.DataFrame(scores).dropna(subset=["value"])
    if not len(table):
        raise ValueError(f"{results_path}: no {stage} trial has a finite dev {obj['key']}")
    sign = 1 if obj["mode"] == "max" else -1
    means = table.groupby("group")["value"].mean() * sign
    best_group = means.sort_values(ascending=False, kind="stable").index[0]
    pick = table[table["group"] == best_group].sort_values(["seed", "trial_id"]).iloc[0]
    n = int((table["group"] == best_group).sum())
    note = (f"{stage} trial {pick['trial_id']} (dev {obj['key']} "
            f"{'mean over ' + str(n) + ' seeds ' if n > 1 else ''}{means[best_group] * sign:.4f}; "
            f"study {meta.get('name')})")
    return json.loads(pick["config"]), note


def export_best(study_dir: str | Path, out: str | Path, stage: str = "rerun") -> str:
    flat, note = best_config(study_dir, stage)
    text = f"# avstudy export-best: {note}\n# reproduce: avstudy train --data DATA --config {Path(out).name}\n"
    text += yaml.safe_dump(_plain(flat), sort_keys=True)
    Path(out).write_text(text)
    return note


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x
