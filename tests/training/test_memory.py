"""The memory probe behind `avstudy plan` (study/training/memory.py), on CPU."""
from __future__ import annotations

import pytest

from study.training.config import config_from_flat
from study.training.memory import MIB, MemoryEstimate, probe_memory


def test_memory_grows_with_the_batch_and_the_pack(tiny_corpus):
    small = probe_memory(config_from_flat({"preset": "tiny", "batch_size": 4}, data_dir=tiny_corpus),
                         tiny_corpus, pack=1)
    cfg = config_from_flat({"preset": "tiny", "batch_size": 32}, data_dir=tiny_corpus)
    big = probe_memory(cfg, tiny_corpus, pack=4)
    from model.build import build_model

    params = sum(p.numel() * 4 for p in build_model(cfg.model).parameters()) / MIB
    assert big.trial_mib > small.trial_mib > 4 * params  # activations on top of weights + Adam
    assert big.pack_mib == pytest.approx(4 * big.trial_mib) and big.pack == 4
    assert "CPU" in big.source


def test_fit_counts_what_fits_in_the_headroom():
    est = MemoryEstimate(trial_mib=1000.0, pack_mib=3500.0, pack=4, source="x")
    assert est.fit(None) == (None, None)
    assert est.fit(10_000.0) == (9, 2)  # 9000 MiB usable
