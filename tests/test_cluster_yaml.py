"""cluster.yaml: valid against Ray's own cluster-launcher schema, commented, no secrets/paths."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
TEXT = (ROOT / "cluster.yaml").read_text()
CONFIG = yaml.safe_load(TEXT)
validate_config = pytest.importorskip("ray.autoscaler._private.util").validate_config
pytest.importorskip("jsonschema")


def test_valid_against_ray_schema():
    validate_config(copy.deepcopy(CONFIG))


def test_schema_check_is_real():
    bad = copy.deepcopy(CONFIG)
    bad["available_node_types"]["gpu_worker"]["max_workers"] = "many"
    with pytest.raises(pytest.importorskip("jsonschema").ValidationError):
        validate_config(bad)
    bad = copy.deepcopy(CONFIG)
    bad["head_node_type"] = "missing"
    with pytest.raises(ValueError):
        validate_config(bad)


def test_cpu_head_and_gpu_worker_with_bounds():
    types = CONFIG["available_node_types"]
    head = types[CONFIG["head_node_type"]]
    assert head["resources"].get("CPU") == 0  # the head runs no trials
    gpu = types["gpu_worker"]
    assert 0 <= gpu["min_workers"] <= gpu["max_workers"] <= CONFIG["max_workers"]
    assert re.match(r"(g|p)\d", gpu["node_config"]["InstanceType"])
    assert CONFIG["provider"]["type"] == "aws"


def _commands(*keys: str) -> list[str]:
    return [c for k in keys for c in CONFIG.get(k) or []]


def test_installs_the_local_checkout_with_the_tested_ray():
    ray = pytest.importorskip("ray")
    # file_mounts copy the directory `ray up` runs in; the nodes install that, not a URL
    assert CONFIG["file_mounts"] == {"~/avstudy": "."}
    for key in ("head_setup_commands", "worker_setup_commands"):
        assert any("pip install ~/avstudy" in c for c in CONFIG[key]), key
    setup = " ".join(_commands("setup_commands"))
    assert f'"ray[default,tune,train]=={ray.__version__}"' in setup  # pinned to the tested release
    images = CONFIG["docker"]
    assert all(f"rayproject/ray:{ray.__version__}-py31" in images[k] for k in ("head_image", "worker_image"))


def test_nothing_is_evaluated_on_the_node_and_git_refs_are_commits():
    # Ray runs setup commands on the node without the laptop's environment: `${VAR:-default}`
    # would always take the default there
    every = _commands("initialization_commands", "setup_commands", "head_setup_commands",
                      "worker_setup_commands")
    assert not [c for c in every if "${" in c]
    for ref in re.findall(r"git\+\S+?\.git@(\S+?)[\"\s]", TEXT):
        assert re.fullmatch(r"[0-9a-f]{40}|COMMIT_SHA", ref), ref  # never a moving branch


def test_cpu_torch_on_head_and_cuda_torch_matching_the_worker_image():
    head = " ".join(CONFIG["head_setup_commands"])
    worker = " ".join(CONFIG["worker_setup_commands"])
    assert "download.pytorch.org/whl/cpu" in head and CONFIG["docker"]["head_image"].endswith("-cpu")
    cuda = re.search(r"-(cu\d+)$", CONFIG["docker"]["worker_image"]).group(1)
    assert f"download.pytorch.org/whl/{cuda}" in worker


def test_shared_data_mount_and_private_dashboard():
    init = " ".join(CONFIG["initialization_commands"])
    assert "mount -t nfs4" in init and "/mnt/data" in init and "exit 1" in init  # unset id fails
    assert "-v /mnt/data:/mnt/data" in CONFIG["docker"]["run_options"]
    start = " ".join(CONFIG["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start and "0.0.0.0" not in TEXT


def test_no_credentials_or_local_paths():
    lowered = TEXT.lower()
    for bad in ("aws_access_key", "aws_secret", "password", "token:", "/home/", "/users/",
                "/work/", "ssh_private_key"):
        assert bad not in lowered, bad


def test_every_key_has_a_comment():
    key_line = re.compile(r"^\s*(- )?[A-Za-z_][\w]*:")
    missing = [ln for ln in TEXT.splitlines() if key_line.match(ln) and "#" not in ln]
    assert not missing, missing
