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
    with pytest.raises(Exception):
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


def test_setup_installs_this_project_from_a_git_url_variable():
    cmds = " ".join(CONFIG["setup_commands"])
    assert "pip install" in cmds and "git+${AVSTUDY_GIT_URL" in cmds


def test_no_credentials_or_local_paths():
    lowered = TEXT.lower()
    for bad in ("aws_access_key", "aws_secret", "password", "token:", "/home/", "/users/",
                "/work/", "ssh_private_key"):
        assert bad not in lowered, bad


def test_every_key_has_a_comment():
    key_line = re.compile(r"^\s*(- )?[A-Za-z_][\w]*:")
    missing = [ln for ln in TEXT.splitlines() if key_line.match(ln) and "#" not in ln]
    assert not missing, missing
