"""Shared pytest fixtures: one Ray instance (2 CPUs) per test session, the `slow` marker."""

from __future__ import annotations

import os

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
