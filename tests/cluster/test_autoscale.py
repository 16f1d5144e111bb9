"""The `ray up` path on this machine: Ray's fake multi-node provider (RAY_FAKE_CLUSTER=1) with a
config derived from cluster.yaml (same node types; fake GPUs on the worker type). A study's
trials make the autoscaler add worker nodes, and the study completes on them.

Ray's own AutoscalingCluster helper runs `ray stop --force`, which would stop every Ray on the
machine; this test starts its head with its own --temp-dir and stops only the processes whose
command line names that directory."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
WORKER_TYPE = {"CPU": 1, "GPU": 1}  # one fake GPU per worker node (a g5 instance detects its own)


def fake_config(cluster_yaml: Path, max_workers: int, gcs_address: str = "") -> dict:
    """cluster.yaml's node types on the fake_multinode provider."""
    real = yaml.safe_load(cluster_yaml.read_text())
    types = real["available_node_types"]
    head, worker = types[real["head_node_type"]], types["gpu_worker"]
    empty = ("initialization_commands", "setup_commands", "head_setup_commands",
             "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands",
             "cluster_synced_files")
    return {
        "cluster_name": f"{real['cluster_name']}-fake", "max_workers": max_workers,
        "upscaling_speed": real["upscaling_speed"], "idle_timeout_minutes": 5,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True,
                     "disable_node_updaters": True, "disable_launch_config_check": True,
                     # where fake nodes join (the provider assumes port 6379 otherwise)
                     **({"gcs_address": gcs_address} if gcs_address else {})},
        "auth": {"ssh_user": real["auth"]["ssh_user"]},
        "available_node_types": {
            "ray.head.default": {"resources": dict(head["resources"]), "node_config": {},
                                 "max_workers": 0},
            "gpu_worker": {"resources": WORKER_TYPE, "node_config": {},
                           "min_workers": worker["min_workers"],
                           "max_workers": min(worker["max_workers"], max_workers)},
        },
        "head_node_type": "ray.head.default", "file_mounts": {},
        "file_mounts_sync_continuously": False, **{k: [] for k in empty},
    }


def test_fake_config_keeps_cluster_yaml_node_types():
    cfg = fake_config(ROOT / "cluster.yaml", 2)
    types = cfg["available_node_types"]
    assert types["ray.head.default"]["resources"] == {"CPU": 0}  # the head runs no trial
    assert types["gpu_worker"]["min_workers"] == 0 and types["gpu_worker"]["max_workers"] == 2


DRIVER = r'''
import json, sys, threading, time
import ray
from study.runs.ray_exec import worker_env
from study.runs.spec import spec_from_dict
from study.runs.stages import sweep

address, raw, out, answer = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
ray.init(address=address, runtime_env=worker_env() or None, log_to_driver=False)
seen, done = set(), threading.Event()

def watch():  # every worker node that joins while the study runs
    while not done.is_set():
        seen.update(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU"))
        time.sleep(0.5)

threading.Thread(target=watch, daemon=True).start()
start = {n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU")}
sweep(spec_from_dict(raw), out=out, verbose=0)
done.set()
with open(answer, "w") as f:  # through a file: Ray's processes may print after the driver
    json.dump({"gpu_nodes_at_start": len(start), "gpu_nodes_seen": len(seen)}, f)
'''



def _stop_ours(tag: str) -> None:
    """SIGKILL the processes of this test's Ray (their command lines name its temp dir)."""
    for _ in range(3):
        pids = []
        for d in Path("/proc").iterdir():
            try:
                if d.name.isdigit() and tag in (d / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(d.name))
            except OSError:
                continue
        for pid in pids:
            if pid != os.getpid():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        time.sleep(0.5)


@pytest.mark.slow
def test_trials_make_the_autoscaler_add_worker_nodes(tmp_path):
    from tests.studies.test_study_resume import SPEC

    temp = tempfile.mkdtemp(prefix="avfk", dir="/tmp")  # short: Ray's socket paths live here
    config = Path(temp) / "fake.yaml"
    from ray._private.services import get_node_ip_address

    port = free_port()
    config.write_text(json.dumps(fake_config(ROOT / "cluster.yaml", max_workers=2,
                                             gcs_address=f"{get_node_ip_address()}:{port}")))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AVSTUDY_CACHE": str(tmp_path / "cache"),
           "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
           "RAY_AUTH_MODE": "disabled"}  # a local test cluster: no token (one in ~/.ray would enable it)
    env.pop("RAY_ADDRESS", None)
    raw = {**SPEC, "name": "autoscale", "searcher": {"kind": "grid"}, "spaces": [],
           "budget": {"trials_per_cell": 2, "max_epochs": 2},
           # trials ask for a GPU: only the autoscaled worker type has one; the cluster is
           # empty at start, so the trial count is given (spec resources.max_concurrent_trials)
           "resources": {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 1,
                         "mode": "inline", "max_concurrent_trials": 2}}
    out = tmp_path / "study"
    ray_bin = str(Path(sys.executable).parent / "ray")
    try:
        subprocess.run([ray_bin, "start", "--head", f"--port={port}", "--num-cpus=0",
                        f"--temp-dir={temp}", f"--autoscaling-config={config}",
                        "--include-dashboard=false", "--disable-usage-stats"],
                       env=env, check=True, capture_output=True, timeout=120)
        proc = subprocess.run([sys.executable, "-c", DRIVER, f"127.0.0.1:{port}", json.dumps(raw),
                               str(out), str(tmp_path / "answer.json")], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=400)
    finally:
        _stop_ours(temp)
        shutil.rmtree(temp, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    nodes = json.loads((tmp_path / "answer.json").read_text())
    assert nodes["gpu_nodes_at_start"] == 0 and nodes["gpu_nodes_seen"] >= 1  # added on demand
    res = pd.read_parquet(out / "results.parquet")
    res = res[res.kind == "model"]  # the baseline stage's rows aside
    assert set(res.stage) == {"search", "rerun", "final"} and (res.status == "completed").all()
    assert res[res.stage == "search"].trial_id.nunique() == 2
