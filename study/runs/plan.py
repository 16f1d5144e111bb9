"""`avstudy plan`: look before spending.

`plan`: what a sweep would run (cells x trials per stage), how many trials run at once on the
  resources it sees (given, or read from this machine without starting Ray), and the CPU/GPU-hours
  it would take, from one timed training epoch (or a stated rough figure with `--no-probe`). It
  validates what the sweep validates: the spec, the dataset, and each cell's spaces sampled once.
`avstudy spaces` is `study.runs.spaces_info`, `avstudy export-best` is `study.runs.export`.
`plan --no-probe` never imports torch.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from study.runs.spec import SpecError, StudySpec, check_resources, data_location, max_concurrent, resolve_gpus

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
    folds = spec.dataset.folds.n if spec.dataset.folds is not None else 1
    rerun = cells * spec.top_k * len(spec.seeds) * folds  # x every fold
    epochs = spec.budget.rerun_max_epochs or spec.budget.max_epochs
    per_search = folds if spec.search_folds == "mean" else 1  # a trial trains each fold
    return [StagePlan("search", cells, cells * spec.budget.trials_per_cell,
                      spec.budget.max_epochs * per_search),
            StagePlan("rerun", 1, rerun, epochs),
            StagePlan("final", 1, rerun, 0)]


# ----------------------------------------------------------------------------- validation


def sample_cells(spec: StudySpec, data_dir: str | None, seed: int = 0) -> list[dict]:
    """One flat config per cell, its spaces sampled once (random), each built into a
    TrainConfig: what a trial of the sweep would do first."""
    import optuna

    from search_spaces import combine
    from study.runs.selection import base_flat, search_seed
    from study.training.config import config_from_flat

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = []
    for i, cell in enumerate(spec.cells.items()):
        fixed = base_flat(spec, cell, spec.budget.max_epochs, search_seed(spec))
        flat = dict(fixed)
        if spec.spaces:
            study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed + i))
            space = combine(spec.spaces, fixed, spec.search_data_conditions, search=spec.search)
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
    folds = spec.dataset.folds
    if folds is not None:  # made (manifests only) and checked as the sweep does
        from study.data.folds import check_study_folds, ensure_folds

        check_study_folds(folds, ensure_folds(folds, data_dir))
    note = f"; {folds.describe()}: valid" if folds is not None else ""
    return data_dir, f"{data_dir}: valid; {describe(ds)}{note}"


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


def probe_memory_doc(flat: dict, spec: StudySpec, data_dir: str, device: str | None = None) -> dict:
    """Memory of one trial and of one pack (resources.pack) at the spec's sizes, and how many fit
    on this machine's first GPU (study/training/memory.py)."""
    from study.training.config import config_from_flat
    from study.training.memory import device_memory_mib, probe_memory

    cfg = config_from_flat({**flat, "max_epochs": 1}, preset=spec.model_preset, data_dir=data_dir)
    est = probe_memory(cfg, data_dir, spec.resources.pack_size, device)
    gpu = device_memory_mib()
    trials, packs = est.fit(gpu)
    return {"trial_mib": est.trial_mib, "pack_mib": est.pack_mib, "pack": est.pack,
            "source": est.source, "gpu_mib": gpu, "trials_per_gpu": trials, "packs_per_gpu": packs}


def probe_memory_on_gpu(spec: StudySpec, ctx, timeout_s: float = 900.0) -> dict:
    """probe_memory_doc run as a Ray task holding one whole GPU (the sweep's `gpus_per_worker:
    auto`): on a cluster the driver may have none; an autoscaler starts a GPU node for it."""
    import ray

    task = ray.remote(num_gpus=1, num_cpus=1)(_probe_task)
    ref = task.remote(spec, ctx)
    try:
        return ray.get(ref, timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        ray.cancel(ref, force=True)
        raise SpecError(f"resources.gpus_per_worker: auto — no GPU took the memory probe within "
                        f"{timeout_s:.0f} s; give a number instead") from None


def _probe_task(spec: StudySpec, ctx) -> dict:
    from study.runs.worker import ensure_data

    data_dir = ensure_data(ctx)
    return probe_memory_doc(sample_cells(spec, data_dir)[0], spec, data_dir, "cuda")


def make_data(spec: StudySpec) -> str:
    """Generate the synthetic corpus where the sweep would (so the probe has data)."""
    from study.data.generate import ensure_corpus

    data_dir, synth = data_location(spec)
    if synth is not None:
        preset, scale, seed = synth
        ensure_corpus(data_dir, preset=preset, scale=scale, seed=seed)
    return data_dir


# ----------------------------------------------------------------------------- plan


def plan_doc(spec: StudySpec, cluster: Mapping[str, float], source: str, probe: bool,
             device: str | None = None) -> dict:
    """What `avstudy plan` found, as the fields of `--format json` (docs/CONTRACTS.md)."""
    if not spec.resources.max_concurrent_trials:
        check_resources(spec, cluster)
    r = spec.resources
    data_dir, data_line = check_data(spec)
    stages = stage_plan(spec)
    if probe and data_dir is None:
        data_dir = make_data(spec)
    flats = sample_cells(spec, data_dir)
    memory = None
    if probe:
        epoch_s, how = probe_epoch_s(flats[0], spec, data_dir, device), "measured"
        memory = probe_memory_doc(flats[0], spec, data_dir, device)
    else:
        epoch_s, how = ROUGH_EPOCH_S.get(spec.model_preset, 60.0), "rough"
    # auto: this machine's GPU measured by the probe (the sweep measures on a GPU worker)
    spec, gpu_auto = resolve_gpus(spec, cluster, lambda: memory if memory and memory["gpu_mib"] else None)
    r = spec.resources
    epochs = sum(st.trials * st.max_epochs_per_trial for st in stages)
    return {"study": spec.name, "cells": len(spec.cells.items()), "fusion": list(spec.cells.fusion),
            "train_missing_rate": list(spec.cells.train_missing_rate), "searcher": spec.searcher.kind,
            "scheduler": spec.scheduler.kind, "model_preset": spec.model_preset,
            "cluster": {"CPU": float(cluster.get("CPU", 0)), "GPU": float(cluster.get("GPU", 0)),
                        "source": source},
            "trial_resources": {"CPU": r.workers * r.cpus_per_worker, "GPU": r.workers * r.gpus_per_worker,
                                "mode": "inline" if r.inline else "ray-train"},
            "max_concurrent": max_concurrent(spec, cluster), "dataset": data_line,
            "stages": [{"name": st.name, "experiments": st.experiments, "trials": st.trials,
                        "max_epochs_per_trial": st.max_epochs_per_trial} for st in stages],
            "spaces": list(spec.spaces), "epoch_s": epoch_s, "epoch_s_source": how,
            "trial_epochs": epochs, "trial_hours": epochs * epoch_s / 3600, "memory": memory,
            "gpus_per_worker_auto": gpu_auto}


def plan_text(spec: StudySpec, cluster: Mapping[str, float], source: str, probe: bool,
              device: str | None = None) -> str:
    """The whole `avstudy plan` report (raises SpecError/DatasetError on what the sweep would)."""
    return render_plan(plan_doc(spec, cluster, source, probe, device))


def render_plan(doc: dict) -> str:
    """plan_doc's fields as the lines `avstudy plan` prints."""
    res, conc, cl = doc["trial_resources"], doc["max_concurrent"], doc["cluster"]
    lines = [f"study {doc['study']}: {doc['cells']} cell(s) ({len(doc['fusion'])} fusion x "
             f"{len(doc['train_missing_rate'])} train_missing_rate), searcher {doc['searcher']}, "
             f"scheduler {doc['scheduler']}",
             f"resources: {cl['CPU']:g} CPU, {cl['GPU']:g} GPU from {cl['source']}; a trial takes "
             f"{res['CPU']:g} CPU + {res['GPU']:g} GPU ({'inline' if res['mode'] == 'inline' else 'Ray Train'}); "
             f"at most {conc} trial(s) at once",
             f"dataset: {doc['dataset']}"]
    for st in doc["stages"]:
        what = (f"{st['experiments']} experiment(s), {st['trials']} trial(s), <= {st['max_epochs_per_trial']} "
                "epochs each" if st["max_epochs_per_trial"]
                else f"test evaluation of the {st['trials']} rerun trial(s)")
        lines.append(f"  {st['name']:<7} {what}")
    lines.append(f"spaces {doc['spaces'] or '(none: grid of fixed values)'}: sampled once per cell, "
                 "every configuration valid")
    epoch_s, trial_h = doc["epoch_s"], doc["trial_hours"]
    how = (f"measured: one epoch of cell 1's sampled configuration took {epoch_s:.1f} s"
           if doc["epoch_s_source"] == "measured" else
           f"rough figure: {epoch_s:g} s per epoch assumed for the {doc['model_preset']} preset "
           "(--no-probe; run without it to time one epoch)")
    lines.append(f"estimate ({how}): <= {doc['trial_epochs']} trial-epochs = {trial_h:.2f} trial-hours, "
                 f"{trial_h * res['CPU']:.2f} CPU-hours, {trial_h * res['GPU']:.2f} GPU-hours, "
                 f"~{trial_h / conc * 60:.0f} min wall at {conc} at once "
                 f"(an upper bound: {doc['scheduler']} stops weak trials early)")
    if doc.get("gpus_per_worker_auto"):
        auto = doc["gpus_per_worker_auto"]
        lines.append(f"gpus_per_worker: auto -> {auto['gpus_per_worker']:g} ({auto['why']}"
                     + ("; the sweep measures it again on a GPU worker)" if auto["gpus_per_worker"] else ")"))
    mem = doc.get("memory")
    if mem:
        fits = (f"; on this machine's GPU ({mem['gpu_mib']:.0f} MiB, 90 % of it): {mem['trials_per_gpu']} "
                f"trial(s) or {mem['packs_per_gpu']} pack(s) at once" if mem["gpu_mib"] else
                "; no GPU here: on one of M MiB, floor(0.9 M / that) at once")
        lines.append(f"memory at the longest training batch ({mem['source']}): a trial "
                     f"{mem['trial_mib']:.0f} MiB, a pack of {mem['pack']} {mem['pack_mib']:.0f} MiB{fits}")
    return "\n".join(lines)
