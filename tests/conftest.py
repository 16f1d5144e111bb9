"""Shared pytest fixtures: one Ray instance (2 CPUs) per test session, the synthetic `tiny` corpus,
the `slow` marker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test (deselect with -m 'not slow')")


@pytest.fixture(scope="session")
def ray_session():
    """ray.init(num_cpus=2) once for the whole session, shared by every test that asks."""
    ray = pytest.importorskip("ray")
    from study.runs.ray_exec import worker_env

    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env=worker_env() or None)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """The synthetic `tiny` corpus (seed 0), made once per session and shared read-only: a test
    that changes a dataset makes its own. Training tests run with one torch thread."""
    import torch

    from study.data.generate import make_corpus

    torch.set_num_threads(1)
    return make_corpus(tmp_path_factory.mktemp("tiny") / "d", scale="tiny", seed=0, progress=False)
