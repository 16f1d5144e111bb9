"""Where a study runs and lives: what one trial may ask of a cluster, how many trials run at
once, STUDY_DIR and Ray's storage path, the remote copy, the dataset directory."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

from study.runs.spec.schema import GPU_AUTO, SpecError, StudySpec
from study.runs.storage import join_uri


def check_resources(spec: StudySpec, cluster: Mapping[str, float]) -> None:
    """Raise SpecError when one trial asks for more than the whole cluster has."""
    r = spec.resources
    cpus, gpus = float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0))
    need_gpu = 0.0 if r.gpus_per_worker == GPU_AUTO else r.workers * r.gpus_per_worker  # at most 1
    if need_gpu > gpus + 1e-9:
        raise SpecError(f"resources.gpus_per_worker: a trial needs {need_gpu:g} GPU(s) "
                        f"({r.workers} worker(s) x {r.gpus_per_worker:g}) but the cluster has "
                        f"{gpus:g}")
    need_cpu = r.workers * r.cpus_per_worker
    if need_cpu > cpus + 1e-9:
        raise SpecError(f"resources.cpus_per_worker: a trial needs {need_cpu:g} CPU(s) "
                        f"({r.workers} worker(s) x {r.cpus_per_worker:g}) but the cluster has "
                        f"{cpus:g}")


MAX_TRIALS_PER_GPU = 8  # auto never packs more trials than this onto one GPU (they share its compute)


def gpu_share(memory: Mapping | None, pack: int) -> float:
    """What `gpus_per_worker: auto` gives a trial: 1/n, n the trials (the packs, with
    resources.pack > 1) that fit in 90 % of one GPU by the memory probe (study/training/memory.py),
    at most MAX_TRIALS_PER_GPU; a whole GPU when unmeasured or when not even one fits. Rounded
    down to Ray's resource precision (1e-4) so n of them fit."""
    n = _fits(memory, pack)
    return math.floor(1e4 / min(n, MAX_TRIALS_PER_GPU)) / 1e4 if n else 1.0


def _fits(memory: Mapping | None, pack: int) -> int | None:
    """How many trials (packs, for pack > 1) the probe found fit on one GPU (None: unmeasured)."""
    return (memory or {}).get("packs_per_gpu" if pack > 1 else "trials_per_gpu")


def resolve_gpus(spec: StudySpec, cluster: Mapping[str, float],
                 measure: Callable[[], Mapping | None]) -> tuple[StudySpec, dict | None]:
    """The spec with a number for `gpus_per_worker: auto`, and what decided it (None: a number
    was given). No GPU in the cluster (and no autoscaling, resources.max_concurrent_trials): 0,
    the trials run on CPU; otherwise `measure()` (a memory probe on a GPU) sets the share."""
    r = spec.resources
    if r.gpus_per_worker != GPU_AUTO:
        return spec, None
    if not float(cluster.get("GPU", 0)) and not r.max_concurrent_trials:
        share, memory, why = 0.0, None, "no GPU in the cluster: trials run on CPU"
    else:
        memory = measure()
        pack = r.pack_size  # auto is for GPUs: the GPU default
        share = gpu_share(memory, pack)
        what = "pack(s)" if pack > 1 else "trial(s)"
        fit = _fits(memory, pack)
        why = (f"the memory probe: {fit} {what} fit in 90 % of one GPU "
               f"({(memory or {}).get('gpu_mib', 0):.0f} MiB), at most {MAX_TRIALS_PER_GPU}"
               if fit else "not measured (or not even one fits): a whole GPU per worker")
    note = {"gpus_per_worker": share, "why": why, "memory": dict(memory) if memory else None}
    return replace(spec, resources=replace(r, gpus_per_worker=share)), note


def max_concurrent(spec: StudySpec, cluster: Mapping[str, float]) -> int:
    """Trials that run at once.

    Computed from the cluster's resources: drivers hold no CPU/GPU, so only workers count and
    a driver never holds what its own workers wait for. An explicit
    `resources.max_concurrent_trials` is taken as given instead: on an autoscaling cluster
    (cluster.yaml, min_workers: 0) it is the capacity the cluster will grow to, which
    `ray.cluster_resources()` cannot see yet.
    """
    r = spec.resources
    if r.max_concurrent_trials:
        return r.max_concurrent_trials
    check_resources(spec, cluster)
    fits = [math.floor(float(cluster.get("CPU", 0)) / (r.workers * r.cpus_per_worker) + 1e-9)]
    if r.gpus_per_worker > 0:
        fits.append(math.floor(float(cluster.get("GPU", 0)) / (r.workers * r.gpus_per_worker)
                               + 1e-9))
    return max(1, min(fits))


def study_remote(spec: StudySpec) -> str | None:
    """Where a study lives besides its working copy: `storage` (a URI) + NAME, or None."""
    if spec.storage is None or "://" not in spec.storage:
        return None
    return join_uri(spec.storage, spec.name)


def study_paths(spec: StudySpec, out: str | Path | None) -> tuple[Path, str]:
    """(STUDY_DIR, Ray storage path). With a URI `storage`, STUDY_DIR is the driver's working
    copy, mirrored to `<storage>/NAME/` (study/runs/storage.py), and Ray writes to
    `<storage>/NAME/ray/`, the same layout as a local study."""
    remote = study_remote(spec)
    if out is not None:
        study_dir = Path(out)
    elif spec.storage and not remote:
        study_dir = Path(spec.storage)
    else:
        study_dir = Path("runs") / spec.name
    study_dir = study_dir.resolve()
    if remote:
        return study_dir, join_uri(remote, "ray")
    return study_dir, str(study_dir / "ray")


def data_location(spec: StudySpec) -> tuple[str, tuple | None]:
    """(dataset dir, synth recipe or None). Synthetic corpora live in a per-node cache."""
    ds = spec.dataset
    if not ds.is_synth:
        return str(Path(ds.path).expanduser().resolve()), None
    from study.data.synth import GENERATOR_VERSION  # numpy/pandas only: no torch here
    cache = Path(os.environ.get("AVSTUDY_CACHE", Path.home() / ".cache" / "avstudy"))
    # the generator version is in the name, so a corpus from an older generator is never reused
    name = f"{ds.synth_preset}-{ds.synth_scale}-seed{ds.synth_seed}-v{GENERATOR_VERSION}"
    return str((cache / "synth" / name).resolve()), (ds.synth_preset, ds.synth_scale,
                                                      ds.synth_seed)
