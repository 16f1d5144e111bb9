"""Packed trials (model/packed.py, study/training/packed.py): K same-shape members trained as one
stacked model give what K separate runs give, within floating point (CPU, dropout 0: with dropout
each member draws its own masks, not the unpacked run's stream)."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from model.build import build_model
from model.config import model_config
from model.packed import MemberOptim, PackedModel, StackedAdam, pack_refusal
from model.registry import FUSIONS
from study.training.config import config_from_flat
from study.training.packed import PackedSession, train_refusal
from study.training.session import Session, TrialDiverged
from tests.random_batches import random_batch

K = 3
PACKABLE = sorted(n for n, s in FUSIONS.items() if s.packable)


def _members(fusion: str):
    cfg = model_config("tiny", dropout=0.0, head_dropout=0.0, fusion=fusion)
    models = []
    for k in range(K):
        torch.manual_seed(k)
        models.append(build_model(cfg))
    return cfg, models


def _batches(cfg, step: int):
    """Per member a batch of its own: some audio-only, video-only, paired rows; member 2 has no
    audio at all on odd steps (its audio modules get no gradient there: torch skips them)."""
    out = []
    for k in range(K):
        g = torch.Generator().manual_seed(100 * step + k)
        has_a = torch.rand(8, generator=g) > 0.3
        has_v = ~has_a | (torch.rand(8, generator=g) > 0.5)
        if k == 2 and step % 2:
            has_a, has_v = torch.zeros(8, dtype=torch.bool), torch.ones(8, dtype=torch.bool)
        out.append(random_batch(cfg, 8, has_audio=has_a, has_video=has_v, evidence=1.0, seed=10 * step + k))
    return out


@pytest.mark.parametrize("fusion", PACKABLE)
def test_packed_steps_equal_separate_steps(fusion):
    """Six AdamW steps, members with their own lr / weight decay / batches, one member sitting a
    step out: each member's losses and predictions are its separate model's to 1e-5, and its
    parameters after the steps to 1e-3 (Adam divides by sqrt(v): a near-zero gradient's last-bit
    difference moves a weight by up to a step's size either way)."""
    cfg, models = _members(fusion)
    ref = [copy.deepcopy(m) for m in models]
    pack = PackedModel(models)
    opts = [MemberOptim(lr=1e-3 * (k + 1), weight_decay=0.01 * k, grad_clip=1.0) for k in range(K)]
    stacked = StackedAdam(pack.stack, opts)
    torch_opts = [torch.optim.AdamW(m.param_groups(o.weight_decay), lr=o.lr) for m, o in zip(ref, opts)]
    for step in range(6):
        batches = _batches(cfg, step)
        if step == 4:
            batches[1] = None
        outs = pack(batches)
        losses = [None if o is None else pack.members[k].loss(o, b)
                  for k, (o, b) in enumerate(zip(outs, batches))]
        stacked.zero_grad()
        sum(loss["total"] for loss in losses if loss is not None).backward()
        stacked.clip_()
        stacked.step(pack.touched(batches))
        for k, b in enumerate(batches):
            if b is None:
                assert outs[k] is None
                continue
            torch_opts[k].zero_grad(set_to_none=True)
            out = ref[k](b)
            loss = ref[k].loss(out, b)
            loss["total"].backward()
            torch.nn.utils.clip_grad_norm_(ref[k].parameters(), 1.0)
            torch_opts[k].step()
            want = float(loss["total"].detach())
            assert float(losses[k]["total"].detach()) == pytest.approx(want, rel=1e-5, abs=1e-6)
            assert torch.allclose(outs[k].pred, out.pred, atol=1e-5)
    pack.load_members()
    for k in range(K):
        for (name, a), b in zip(pack.members[k].named_parameters(), ref[k].parameters()):
            assert torch.allclose(a, b, atol=1e-3), (k, name, float((a - b).abs().max()))


def test_a_member_left_out_is_not_updated():
    cfg, models = _members("vavl")
    pack = PackedModel(models)
    opt = StackedAdam(pack.stack, [MemberOptim(lr=1e-2, weight_decay=0.1)] * K)
    before = {n: p.detach().clone() for n, p in pack.stack.items()}
    batches = _batches(cfg, 0)
    batches[1] = None
    outs = pack(batches)
    sum(pack.members[k].loss(o, batches[k])["total"] for k, o in enumerate(outs) if o is not None).backward()
    opt.step(pack.touched(batches))
    for n, p in pack.stack.items():
        assert torch.equal(p[1], before[n][1]), n
        assert not torch.equal(p[0], before[n][0]) or p.grad is None or not p.grad[0].any(), n


def test_pack_refusal_names_what_differs():
    a = model_config("tiny")
    assert pack_refusal([a, model_config("tiny", unimodal_weight=0.5, recon_weight=2.0)]) is None
    assert "d_model" in pack_refusal([a, model_config("tiny", d_model=64)])
    assert "recon_weight" in pack_refusal([a, model_config("tiny", recon_weight=0.0)])
    assert "not packable" in pack_refusal([model_config("tiny", fusion="foalnet")] * 2)
    with pytest.raises(ValueError, match="cannot pack"):
        PackedModel([build_model(a), build_model(model_config("tiny", d_model=64))])


# ----------------------------------------------------------------------------- sessions


def _cfgs(tiny_corpus, **common):
    """Three trials of one shape: own seed, lr, weight decay, missing rates, augmentation."""
    per = [dict(seed=1, lr=2e-3), dict(seed=2, lr=1e-3, weight_decay=0.0, train_missing_rate=0.5),
           dict(seed=3, lr=3e-3, frame_dropout=0.2, train_missing_rate=0.3, audio_only_share=0.8)]
    base = {"preset": "tiny", "batch_size": 16, "max_epochs": 3, "dropout": 0.0, "head_dropout": 0.0,
            **common}
    return [config_from_flat({**base, **p}, data_dir=tiny_corpus) for p in per]


@pytest.mark.parametrize("order", ["shuffle", "shared"])
def test_packed_sessions_equal_separate_sessions(tiny_corpus, order):
    """The exactness check of packing: per epoch, each member's train loss, realised missing
    shares, gradient norms and dev scores are its separate session's (losses to 1e-4 relative,
    dev macro-F1 and UA to 0.02: a prediction that sits on a class boundary may flip). With
    batch_order "shared" (what a packed rerun member records) too: its config alone reproduces it."""
    cfgs = _cfgs(tiny_corpus, batch_order=order)
    pack = PackedSession([Session(c, tiny_corpus) for c in cfgs])
    alone = [Session(c, tiny_corpus) for c in cfgs]
    for _ in range(3):
        packed = pack.run_epoch()
        for k, s in enumerate(alone):
            info, rows, score = s.run_epoch()
            got = packed[k]
            assert got.info["train_loss"] == pytest.approx(info["train_loss"], rel=1e-4)
            for key in ("samples", "missing_audio_share", "missing_video_share", "unpaired_share"):
                assert got.info[key] == info[key], key
            assert got.info["grad_norm_audio"] == pytest.approx(info["grad_norm_audio"], rel=1e-3)
            assert got.score == pytest.approx(score, abs=0.02)
            by = {r["condition"]: r for r in rows}
            for r in got.rows:
                for metric in ("macro_f1", "uar", "loss"):
                    if metric in r and not math.isnan(r[metric]):
                        want = by[r["condition"]][metric]
                        assert r[metric] == pytest.approx(want, abs=0.02), (r["condition"], metric)
    assert pack.done  # max_epochs 3: every member left the pack as "stopped"
    assert set(pack.left.values()) == {"stopped"}


def test_a_diverged_member_leaves_the_pack_and_the_others_go_on(tiny_corpus):
    cfgs = _cfgs(tiny_corpus, grad_clip=0.0)
    cfgs[1] = config_from_flat({**cfgs[1].to_flat(), "lr": 1e6}, data_dir=tiny_corpus)
    pack = PackedSession([Session(c, tiny_corpus) for c in cfgs])
    first = pack.run_epoch()
    second = pack.run_epoch()
    diverged = [k for k, r in enumerate(first + second) if isinstance(r, TrialDiverged)]
    assert [k % K for k in diverged] == [1], (first, second)
    assert pack.left[1] == "diverged"
    for k in (0, 2):
        assert math.isfinite(second[k].info["train_loss"]) and second[k].info["epoch"] == 2


def test_pack_checkpoint_resumes_where_it_stopped(tiny_corpus, tmp_path):
    cfgs = _cfgs(tiny_corpus)
    pack = PackedSession([Session(c, tiny_corpus) for c in cfgs])
    pack.run_epoch()
    pack.save(tmp_path)
    after = pack.run_epoch()
    again = PackedSession([Session(c, tiny_corpus) for c in cfgs])
    again.restore(tmp_path)
    resumed = again.run_epoch()
    for a, b in zip(after, resumed):
        assert b.info["epoch"] == a.info["epoch"] == 2
        assert b.info["train_loss"] == pytest.approx(a.info["train_loss"], rel=1e-5)


def test_train_refusal_names_the_key(tiny_corpus):
    cfgs = _cfgs(tiny_corpus)
    other = config_from_flat({**cfgs[0].to_flat(), "batch_size": 8}, data_dir=tiny_corpus)
    assert "batch_size" in train_refusal([cfgs[0], other])
    three = config_from_flat({**cfgs[0].to_flat(), "schedule": "three_pass"}, data_dir=tiny_corpus)
    assert "three_pass" in train_refusal([three, three])
    with pytest.raises(ValueError, match="batch_size"):
        PackedSession([Session(cfgs[0], tiny_corpus), Session(other, tiny_corpus)])


def test_shared_order_is_a_permutation_by_length_rank():
    import numpy as np

    from study.training.loader import shared_order

    length = np.arange(40, dtype=float)
    a = [np.array([i, i + 1]) for i in range(0, 40, 2)]
    b = [np.array([39 - i, 38 - i]) for i in range(0, 40, 2)]  # other batches, same length ranks
    oa, ob = shared_order(a, length, epoch=3), shared_order(b, length, epoch=3)
    assert sorted(map(tuple, oa)) == sorted(map(tuple, a))  # every batch once
    assert [length[x].max() for x in oa] == [length[x].max() for x in ob]  # step i: same rank
    assert [length[x].max() for x in shared_order(a, length, epoch=4)] != [length[x].max() for x in oa]
