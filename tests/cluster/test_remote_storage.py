"""A study on a real S3 API (moto's standalone server on a loopback port): its own files go to the
bucket beside Ray's, atomically; `--resume` and `avstudy report` / `report --index` work from the
bucket alone after the head's disk is gone."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml

from study.runs.spec import SpecError, spec_from_dict, study_paths, study_remote
from study.runs.storage import MIRRORED, StudyMirror, join_uri

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fake_results import FakeStudy, write_study

from tests.ports import free_port

pafs = pytest.importorskip("pyarrow.fs")
pytest.importorskip("moto")

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "avstudy-test"
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
         "AWS_EC2_METADATA_DISABLED": "true", "AWS_DEFAULT_REGION": "us-east-1"}



@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on 127.0.0.1 with one bucket; yields the bucket's base URI."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    old = {k: os.environ.get(k) for k in CREDS}
    os.environ.update(CREDS)
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                assert time.time() < deadline and server.poll() is None, "moto server did not start"
                time.sleep(0.1)
        pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http",
                          allow_bucket_creation=True).create_dir(BUCKET)
        yield f"s3://{BUCKET}/studies?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    finally:
        server.kill()
        server.wait()
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def _ls(uri: str) -> list[str]:
    fs, root = pafs.FileSystem.from_uri(uri)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return sorted(os.path.relpath(i.path, root) for i in infos if i.type == pafs.FileType.File)


def _read(uri: str, rel: str) -> bytes:
    fs, root = pafs.FileSystem.from_uri(uri)
    with fs.open_input_stream(f"{root}/{rel}") as f:
        return f.read()


def test_join_uri_keeps_the_query_last():
    assert join_uri("s3://b/p?endpoint_override=h:1&scheme=http", "name", "ray") == \
        "s3://b/p/name/ray?endpoint_override=h:1&scheme=http"
    assert join_uri("s3://b/p/", "/x/") == "s3://b/p/x"
    spec = spec_from_dict({"name": "n", "dataset": {"synth": {"scale": "tiny"}}, "model_preset": "tiny",
                           "spaces": ["optimisation"], "storage": "s3://b/p?scheme=http"})
    assert study_remote(spec) == "s3://b/p/n?scheme=http"
    assert study_paths(spec, "/tmp/w")[1] == "s3://b/p/n/ray?scheme=http"  # Ray's files beside the study's


def _working_copy(d: Path) -> None:
    """A study working copy with every mirrored kind of file, plus files that must stay local."""
    write_study(d, FakeStudy(n_trials=4, seed=3))
    for rel in ("parts/search-late-r0.results.parquet", "stages/search-late-r0.done", "progress/rerun.json"):
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text("{}")
    (d / "spec.yaml").write_text("name: fake\n")
    con = sqlite3.connect(d / "optuna.db")
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("create table t (x int)")
    con.execute("insert into t values (42)")
    con.commit()  # left open: the WAL holds the row, the main file may not yet
    (d / "ray").mkdir()
    (d / "ray" / "experiment_state.json").write_text("{}")
    (d / ".lock").write_text("")
    return con


def test_mirror_pushes_what_changed_and_pulls_onto_a_new_head(s3, tmp_path):
    remote = join_uri(s3, "mirror")
    con = _working_copy(tmp_path / "head1")
    mirror = StudyMirror(tmp_path / "head1", remote)
    n = mirror.push()
    got = _ls(remote)
    assert n == len(got) and "results.parquet" in got and "optuna.db" in got
    assert not any(r.startswith("ray/") or r == ".lock" for r in got)  # Ray's and local files stay
    assert mirror.push() == 0  # nothing changed, nothing uploaded
    time.sleep(0.01)
    (tmp_path / "head1" / "stages" / "final.done").write_text("{}")
    assert mirror.push() == 1
    con.execute("insert into t values (43)")  # a commit in WAL mode: only optuna.db-wal changes
    con.commit()
    assert mirror.push() == 1
    con.close()

    new = StudyMirror(tmp_path / "head2", remote)  # the first head is gone
    assert new.holds_study() and new.pull() == len(_ls(remote))
    for rel in mirror.local_files():
        if rel != "optuna.db":
            assert (tmp_path / "head2" / rel).read_bytes() == (tmp_path / "head1" / rel).read_bytes(), rel
    # the sqlite snapshot is consistent: the committed row is there (backup API, not a raw copy)
    assert sqlite3.connect(tmp_path / "head2" / "optuna.db").execute("select x from t").fetchall() == [(42,), (43,)]
    assert {p.split("/")[0] for p in MIRRORED} >= {"parts", "stages", "progress", "optuna.db"}


def test_a_remote_study_is_never_overwritten_and_resumes_only_where_it_ran(s3, tmp_path):
    from study.runs.stages import prepare_study_dir

    spec = spec_from_dict({"name": "held", "dataset": {"synth": {"scale": "tiny"}}, "model_preset": "tiny",
                           "spaces": ["optimisation"], "storage": s3})
    ran_in = tmp_path / "head1"
    ran_in.mkdir()
    (ran_in / "spec.yaml").write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    (ran_in / "study.json").write_text(json.dumps({"name": "held", "work_dir": str(ran_in)}))
    StudyMirror(ran_in, study_remote(spec)).push()
    shutil.rmtree(ran_in)  # the head is lost

    with pytest.raises(SpecError, match="already holds a study; pass --resume"):
        prepare_study_dir(spec, ran_in, resume=False, mirror=StudyMirror(ran_in, study_remote(spec)))
    elsewhere = tmp_path / "other"
    with pytest.raises(SpecError, match=f"--out {ran_in}"):
        prepare_study_dir(spec, elsewhere, resume=True, mirror=StudyMirror(elsewhere, study_remote(spec)))
    assert not elsewhere.exists() or not any(elsewhere.iterdir())  # refused before pulling anything
    prepare_study_dir(spec, ran_in, resume=True, mirror=StudyMirror(ran_in, study_remote(spec)))
    assert (ran_in / "study.json").exists()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "study.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_report_and_index_from_the_bucket_alone(s3, tmp_path):
    local = tmp_path / "study"
    write_study(local, FakeStudy(n_trials=6, seed=1))
    remote = join_uri(s3, "fake-study")
    StudyMirror(local, remote).push()
    shutil.rmtree(local)

    done = _cli("report", remote)
    assert done.returncode == 0, done.stderr[-2000:]
    html = _read(remote, "report.html").decode()
    assert "plotly" in html.lower() and len(html) > 10_000
    done = _cli("report", "--index", s3)
    assert done.returncode == 0, done.stderr[-2000:]
    index = _read(s3, "index.html").decode()
    assert "fake-study" in index


SPEC = {
    "name": "on-s3", "dataset": {"synth": {"scale": "tiny", "seed": 0}}, "model_preset": "tiny",
    "spaces": ["optimisation"],
    "fixed": {"d_model": 16, "n_heads": 2, "enc_layers": 1, "use_shared": False, "shared_layers": 0},
    "cells": {"fusion": ["late"], "train_missing_rate": [0.0]},
    "searcher": {"kind": "random", "seed": 1}, "scheduler": {"kind": "none"},
    "budget": {"trials_per_cell": 3, "max_epochs": 2},
    "resources": {"workers": 1, "cpus_per_worker": 1, "max_concurrent_trials": 1},
    "seeds": [0], "top_k": 1,
}


def _sweep(spec: Path, work: Path, resume: bool, cache: Path) -> subprocess.Popen:
    """A driver on a fresh head: its own Ray instance (no RAY_ADDRESS), as after `ray up`."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(PYTHONPATH=str(ROOT), AVSTUDY_CACHE=str(cache))
    args = ["sweep", str(spec), "--out", str(work), "--quiet"] + (["--resume"] if resume else [])
    log = open(work.parent / f"driver-{'resume' if resume else 'first'}.log", "w+b")
    # output to a file, never a pipe nobody reads: a full pipe would block the driver
    proc = subprocess.Popen([sys.executable, "-m", "study.cli", *args], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    proc.log = log
    return proc


def _output(proc: subprocess.Popen) -> str:
    proc.log.seek(0)
    return proc.log.read().decode(errors="replace")


def _done(work: Path) -> list[str]:
    try:
        trials = json.loads((work / "progress" / "search-late-r0.json").read_text())["trials"]
    except (OSError, ValueError, KeyError):
        return []
    return [tid for tid, t in trials.items() if t["status"] == "done"]


@pytest.mark.slow
def test_study_on_s3_survives_the_loss_of_its_head(s3, tmp_path):
    """Run a study with `storage: s3://...`, kill the driver and its Ray mid-search, delete the
    head's working copy, resume on a "new head" from the bucket alone, then report from it."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "storage": s3}))
    remote, work = join_uri(s3, "on-s3"), tmp_path / "head"
    first = _sweep(spec, work, False, tmp_path / "cache")
    deadline = time.time() + 300
    while not _done(work) and first.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    assert first.poll() is None, _output(first)[-3000:]
    done_before = _done(work)
    os.killpg(first.pid, signal.SIGKILL)  # the head dies: driver, Ray and all
    first.wait()
    assert json.loads(_read(remote, "study.json"))["status"] == "running"
    assert any(r.startswith("ray/search-late-r0/") for r in _ls(remote))  # Ray's state is there too
    shutil.rmtree(work)  # and its disk with it

    again = _sweep(spec, work, True, tmp_path / "cache2")
    again.wait(timeout=500)
    out = _output(again)
    assert again.returncode == 0, out[-3000:]
    assert remote in out  # the closing lines name the bucket copy
    shutil.rmtree(work)  # report from the bucket alone

    meta = json.loads(_read(remote, "study.json"))
    assert meta["status"] == "finished"
    fs, root = pafs.FileSystem.from_uri(remote)
    res = pd.read_parquet(f"{root}/results.parquet", filesystem=fs)
    search = res[res.stage == "search"]
    assert search.trial_id.nunique() == 3 and not search.duplicated(["trial_id", "split", "condition"]).any()
    assert {f"search-late-r0-{t}" for t in done_before} <= set(search.trial_id)  # kept, not re-run
    assert res[res.stage == "final"].trial_id.nunique() == 1
    (tmp_path / "optuna.db").write_bytes(_read(remote, "optuna.db"))
    study = optuna.load_study(study_name="on-s3/search/late-r0", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    states = [t.state.name for t in study.trials if not t.system_attrs.get("avstudy_orphan")]
    assert states == ["COMPLETE"] * 3  # the searcher went on from the bucket's copy: none lost or extra
    assert {"stages/search-late-r0.done", "stages/rerun.done", "stages/final.done", "curves.parquet",
            "optuna.db"} <= set(_ls(remote))
    done = _cli("report", remote)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "on-s3" in _read(remote, "report.html").decode()
    done = _cli("report", "--index", s3)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "on-s3" in _read(s3, "index.html").decode()
