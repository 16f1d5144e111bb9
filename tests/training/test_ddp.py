"""Multi-worker training: every rank takes the same steps, and DDP over 2 gloo processes gives
the same first-step gradients as one process over the same global batch."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from study.training.config import config_from_flat
from study.training.loader import bucketed_batches, shard_batches
from study.training.session import Session
from tests.ports import free_port

# every sample paired, no dropout: each loss term is a mean over equal-size shards, so the
# mean of the two ranks' gradients is exactly the gradient of the global batch's mean loss
FLAT = {"preset": "tiny", "d_model": 16, "n_heads": 2, "enc_layers": 1, "fusion": "late",
        "lr": 1e-3, "batch_size": 16, "dropout": 0.0, "head_dropout": 0.0, "train_missing_rate": 0.0,
        "max_epochs": 1, "seed": 5}


class _FirstStep(Exception):
    pass


def _first_step_grads(s: Session) -> dict[str, torch.Tensor]:
    """Gradients (after DDP's all-reduce and clipping) that the first optimizer step sees."""
    grads = {}

    def step(*_, **__):
        for name, p in s.model.named_parameters():
            if p.grad is not None:
                grads[name] = p.grad.detach().clone()
        raise _FirstStep

    s.opt.step = step
    with pytest.raises(_FirstStep):
        s.train_epoch()
    return grads


def _rank_main(rank: int, world: int, port: int, data_dir: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        cfg = config_from_flat(FLAT, data_dir=data_dir)
        ddp = lambda m: torch.nn.parallel.DistributedDataParallel(m, find_unused_parameters=True)
        s = Session(cfg, data_dir, wrap_model=ddp)
        assert (s.rank, s.world_size) == (rank, world)
        grads = _first_step_grads(s)
        if rank == 0:
            torch.save(grads, out)
    finally:
        torch.distributed.destroy_process_group()



def test_shards_give_every_rank_the_same_steps():
    lengths = np.random.default_rng(0).random(101)
    batches = bucketed_batches(lengths, 16, np.random.default_rng(1))  # 6 x 16 + 1 x 5
    shards = [shard_batches(batches, r, 3) for r in range(3)]
    assert [len(s) for s in shards] == [7, 7, 7]  # the 5-sample batch still splits 2/2/1
    assert sorted(np.concatenate([np.concatenate(s) for s in shards]).tolist()) == list(range(101))
    tiny = [np.arange(4), np.arange(4, 5)]  # a 1-sample batch cannot feed 2 ranks
    assert [len(shard_batches(tiny, r, 2)) for r in range(2)] == [1, 1]
    assert shard_batches(batches, 0, 1) is batches


def test_two_rank_gloo_gradients_equal_one_rank(tiny_corpus, tmp_path):
    cfg = config_from_flat(FLAT, data_dir=tiny_corpus)
    single = Session(cfg, tiny_corpus)
    assert single.splits["train"].has_audio.all() and single.splits["train"].has_video.all()
    want = _first_step_grads(single)
    out = str(tmp_path / "rank0.pt")
    mp.start_processes(_rank_main, args=(2, free_port(), tiny_corpus, out), nprocs=2, join=True,
                       start_method="spawn")
    got = torch.load(out, weights_only=True)
    assert set(got) == set(want) and len(want) > 5
    for name, g in want.items():
        torch.testing.assert_close(got[name], g, rtol=1e-4, atol=1e-6, msg=name)
    # a rank's half batch alone gives a different gradient: the comparison has teeth
    half = Session(config_from_flat({**FLAT, "batch_size": 8}, data_dir=tiny_corpus), tiny_corpus)
    other = _first_step_grads(half)
    assert any(not torch.allclose(other[n], want[n], rtol=1e-3, atol=1e-5) for n in want)
