"""cluster.yaml: valid against Ray's own cluster-launcher schema, commented, no secrets/paths."""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
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
    for bad in ("aws_access_key", "aws_secret", "password", "/home/", "/users/",
                "/work/", "ssh_private_key"):
        assert bad not in lowered, bad
    # no token as a YAML key or a literal header value (the EC2 metadata token is fetched on the node)
    assert not re.search(r"^\s*(- )?\w*token\w*\s*:", TEXT, re.I | re.M)
    assert not re.findall(r"metadata-token:(?!\$)", TEXT)


def test_every_key_has_a_comment():
    key_line = re.compile(r"^\s*(- )?[A-Za-z_][\w]*:")
    missing = [ln for ln in TEXT.splitlines() if key_line.match(ln) and "#" not in ln]
    assert not missing, missing


# ----------------------------------------------------------------------------- a first real run


def _node_configs() -> dict[str, dict]:
    return {name: t["node_config"] for name, t in CONFIG["available_node_types"].items()}


def test_every_node_has_one_explicit_ami_with_its_lookup_documented():
    # Ray's default AMI (Ubuntu 18.04 DLAMI) carries a driver too old for the cu128 image
    amis = {name: nc.get("ImageId") for name, nc in _node_configs().items()}
    assert all(amis.values()) and len(set(amis.values())) == 1, amis
    assert "latest_dlami" not in str(amis)
    assert "base-oss-nvidia-driver-gpu-ubuntu-22.04" in TEXT and "aws ssm get-parameter" in TEXT
    assert f"--region {CONFIG['provider']['region']}" in TEXT  # the lookup names the same region


def test_gpu_workers_get_an_instance_profile_for_s3():
    worker = CONFIG["available_node_types"]["gpu_worker"]["node_config"]
    profile = worker.get("IamInstanceProfile") or {}
    assert profile.get("Name") or profile.get("Arn"), "workers write s3:// checkpoints: they need credentials"
    doc = (ROOT / "docs" / "cluster.md").read_text()
    assert "iam:PassRole" in doc and (profile.get("Name") or profile["Arn"].split("/")[-1]) in doc


def test_region_is_said_once_zones_and_efs_follow_it():
    region = CONFIG["provider"]["region"]
    zones = CONFIG["provider"]["availability_zone"].split(",")
    assert zones and all(z.strip().startswith(region) for z in zones), zones
    init = " ".join(CONFIG["initialization_commands"])
    assert not re.search(r"efs\.[a-z]{2}-[a-z]+-\d\.amazonaws", init)  # no region written into the host
    assert "placement/region" in init and "efs.$REGION.amazonaws.com" in init


def test_nodes_security_group_is_named_and_the_nfs_rule_documented():
    group = CONFIG["provider"]["security_group"]["GroupName"]
    doc = (ROOT / "docs" / "cluster.md").read_text()
    assert group in doc and "--port 2049" in doc and f"--group-name {group}" in doc
    assert group in " ".join(CONFIG["initialization_commands"])  # a failed mount names it


def test_mount_installs_the_client_retries_and_fails_loudly():
    init = CONFIG["initialization_commands"]
    joined = " ".join(init)
    assert "nfs-common" in joined and "DPkg::Lock::Timeout" in joined
    mount = next(c for c in init if "mount -t nfs4" in c)
    assert "for i in" in mount and "exit 1" in mount and "noresvport" in mount
    script = "\n".join(init)
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def _ray_exec_commands(text: str) -> list[str]:
    return re.findall(r'ray exec \S+ (?:--tmux )?(?:\\\s*)?"([^"]+)"', text)


def test_ray_exec_examples_never_run_a_relative_spec_from_home():
    # `ray exec` runs in the node's home; the checkout is ~/avstudy (file_mounts)
    texts = {p: (ROOT / p).read_text() for p in ("README.md", "cluster.yaml", "docs/cluster.md",
                                                 "search_spaces/crema_d_full.yaml")}
    seen = 0
    for path, text in texts.items():
        for cmd in _ray_exec_commands(text):
            if "avstudy sweep" in cmd:
                seen += 1
                assert cmd.startswith("cd ~/avstudy && "), (path, cmd)
                assert "--out /" in cmd, (path, cmd)  # the study on the shared mount, not the head's disk
    assert seen >= 3


def test_slurm_recipe_script_is_valid_and_refuses_bad_use(tmp_path):
    script = ROOT / "scripts" / "slurm.sbatch"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    assert "ray start --head" in text.replace('"$VENV/ray"', "ray") and "--block" in text
    assert "RAY_ADDRESS" in text and "scripts/slurm.sbatch" in (ROOT / "docs" / "cluster.md").read_text()
    usage = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage" in usage.stderr
    no_venv = subprocess.run(["bash", str(script), "spec.yaml", "out"], capture_output=True, text=True,
                             env={"PATH": "/usr/bin:/bin", "SLURM_SUBMIT_DIR": str(tmp_path)})
    assert no_venv.returncode == 1 and str(tmp_path) in no_venv.stderr
