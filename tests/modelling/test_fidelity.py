"""VAVL and Foal-Net as published (issue 14 sections 4-5, docs/fidelity.md): official loss weights,
sample weights independent of pairing, the schedules' gradient paths, DDP-safe empty passes, the
official training recipe and the Foal-Net switches."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from random_batches import random_batch

from model import build_model, model_config
from model.fusion import alignment_loss, hard_negatives, matching_pairs
from model.vavl import Encoded, ModelOutput
from study.training.config import config_from_flat
from study.training.session import Session

torch.set_num_threads(1)
LN2 = math.log(2.0)


def tiny(**kw):
    return model_config("tiny", **kw)


def _session(data, **kw) -> Session:
    return Session(config_from_flat({"preset": "tiny", "lr": 1e-2, "batch_size": 16, **kw}, data_dir=data), data)


# ---- loss weights (official train.py) -----------------------------------------------------


def _encoded(idx: list[int], pred: torch.Tensor, recon_err: float, dim: int) -> Encoded:
    """Encoded outputs with the given head predictions and a reconstruction off by recon_err."""
    n = len(idx)
    return Encoded(torch.tensor(idx), torch.zeros(n, 1, 4), torch.ones(n, 1, dtype=torch.bool),
                   torch.zeros(n, 4), pred, recon=torch.full((n, dim), recon_err),
                   recon_target=torch.zeros(n, dim))


def _output(cfg, pair, audio, video, fusion_pred, a_pred, v_pred) -> ModelOutput:
    b = len(set(pair) | set(audio) | set(video))
    return ModelOutput(pred=torch.zeros(b, cfg.n_outputs),
                       audio=_encoded(audio, a_pred, 1.0, cfg.audio_dim) if audio else None,
                       video=_encoded(video, v_pred, 1.0, cfg.video_dim) if video else None,
                       pair_idx=torch.tensor(pair, dtype=torch.long), fusion_pred=fusion_pred)


def test_unimodal_pass_is_ce_plus_two_mse_categorical():
    """A video-only pass (three_pass visual step): CE + 2 * MSE_rec, pinned by hand."""
    cfg = tiny(n_outputs=2)
    model = build_model(cfg)
    b = random_batch(cfg, 2).drop(audio=torch.ones(2, dtype=torch.bool))
    out = _output(cfg, [], [], [0, 1], None, None, torch.zeros(2, 2))  # logits 0: CE = ln 2
    losses = model.loss(out, b)
    assert float(losses["video"]) == pytest.approx(LN2)
    assert float(losses["recon"]) == pytest.approx(1.0)
    assert float(losses["total"]) == pytest.approx(LN2 + 2.0)  # today's bug was 2 CE + 1 MSE


def test_unimodal_pass_is_sum_one_minus_ccc_plus_mse_dimensional():
    cfg = tiny(task="dimensional")
    model = build_model(cfg)
    b = random_batch(cfg, 2).drop(audio=torch.ones(2, dtype=torch.bool))
    b.target[:] = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]])
    out = _output(cfg, [], [], [0, 1], None, None, -b.target)  # CCC = -1 on each dimension
    losses = model.loss(out, b)
    assert float(losses["total"]) == pytest.approx(3 * 2.0 + 1.0)  # sum(1 - CCC) + 1 * MSE_rec


def test_fused_counts_each_term_of_a_sample_once():
    """B=4: paired 0, 1; audio-only 2; video-only 3; every logit 0 (CE = ln 2), recon error 1.
    Each sample weighs 1/B in each term it takes part in: fusion 2, audio 3, video 3 CE terms,
    6 reconstructions x 2 -> (8 ln2 + 12) / 4. (The old loss counted an unpaired sample's CE twice.)"""
    cfg = tiny(n_outputs=2)
    model = build_model(cfg)
    b = random_batch(cfg, 4, has_audio=torch.tensor([1, 1, 1, 0]).bool(),
                     has_video=torch.tensor([1, 1, 0, 1]).bool())
    out = _output(cfg, [0, 1], [0, 1, 2], [0, 1, 3], torch.zeros(2, 2), torch.zeros(3, 2), torch.zeros(3, 2))
    losses = model.loss(out, b)
    assert float(losses["task"]) == pytest.approx(2 * LN2 / 4)
    assert float(losses["audio"]) == pytest.approx(3 * LN2 / 4)
    assert float(losses["recon"]) == pytest.approx(6 / 4)
    assert float(losses["total"]) == pytest.approx((8 * LN2 + 12) / 4)


@pytest.mark.parametrize("detach", [False, True])
def test_fused_total_is_the_mean_of_per_sample_losses(detach):
    """The total loss of a batch equals the mean of its samples' own losses (each computed alone),
    so a sample's weight does not depend on how many others are paired (on r)."""
    torch.manual_seed(0)
    cfg = tiny()
    model = build_model(cfg).eval()  # eval: a sample's outputs do not depend on the batch
    b = random_batch(cfg, 6, has_audio=torch.tensor([1, 1, 0, 1, 1, 0]).bool(),
                     has_video=torch.tensor([1, 0, 1, 1, 0, 1]).bool(), seed=3)
    with torch.no_grad():
        total = model.loss(model(b, detach_fusion=detach), b)["total"]
        alone = [model.loss(model(b.select([i]), detach_fusion=detach), b.select([i]))["total"] for i in range(6)]
    torch.testing.assert_close(total, torch.stack(alone).mean(), atol=1e-5, rtol=1e-5)


# ---- schedules ----------------------------------------------------------------------------


def test_schedule_per_strategy_and_explicit_choice():
    cfg = config_from_flat({"preset": "tiny"})
    assert cfg.schedule == "auto" and cfg.train_schedule == "detached"  # vavl: VAVL semantics
    assert config_from_flat({"preset": "tiny", "fusion": "foalnet"}).train_schedule == "fused"
    assert config_from_flat({"preset": "tiny", "fusion": "late"}).train_schedule == "detached"
    assert config_from_flat({"preset": "tiny", "schedule": "three_pass"}).train_schedule == "three_pass"
    with pytest.raises(ValueError, match="'joint' not one of"):
        config_from_flat({"preset": "tiny", "schedule": "joint"})


def test_detached_fusion_loss_never_reaches_the_encoders():
    torch.manual_seed(0)
    cfg = tiny(fusion="xattn")
    model = build_model(cfg)
    b = random_batch(cfg, 5, has_audio=torch.tensor([1, 1, 1, 0, 1]).bool())
    model.loss(model(b, detach_fusion=True), b)["task"].backward()  # the fusion loss alone
    for name, p in model.named_parameters():
        if name.startswith("fusion."):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None or not p.grad.any(), name
    # the same loss in the joint (fused) mode does reach them: the test can tell the two apart
    model.zero_grad(set_to_none=True)
    model.loss(model(b), b)["task"].backward()
    assert model.encoders["audio"].proj.weight.grad.abs().sum() > 0
    # and under detached, the encoders' gradient is exactly that of the unimodal losses
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    model.loss(model(b, detach_fusion=True), b)["total"].backward()
    detached = model.encoders["video"].proj.weight.grad.clone()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    losses = model.loss(model(b, detach_fusion=True), b)
    (losses["total"] - losses["task"]).backward()
    torch.testing.assert_close(model.encoders["video"].proj.weight.grad, detached)


@pytest.mark.parametrize("optimizer", ["adamw", "adam"])
def test_fusion_only_update_leaves_every_other_parameter_bit_identical(tiny_corpus, optimizer):
    """After a fused step (the optimizer has momentum for every parameter, and weight decay is on),
    a fusion-only update changes the fusion module and nothing else, bit for bit."""
    session = _session(tiny_corpus, optimizer=optimizer, weight_decay=0.1)
    split = session.splits["train"]
    batch = split.batch(torch.arange(12).numpy(), split.has_audio, split.has_video)
    session.model.train()
    session._update(batch, "fused")
    before = {n: p.detach().clone() for n, p in session.model.named_parameters()}
    session._update(batch.select(batch.paired), "fusion_only")
    changed = {n for n, p in session.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith("fusion.") for n in changed), sorted(changed)[:5]


def test_three_pass_empty_subset_still_runs_its_pass(tiny_corpus, monkeypatch):
    """DDP: every rank must run every pass. A batch without video, while another rank has video
    samples (simulated all-reduce), runs the visual pass on a placeholder with exactly zero
    gradient; a pass empty on every rank is skipped everywhere."""
    session = _session(tiny_corpus, schedule="three_pass")
    split = session.splits["train"]
    batch = split.batch(torch.arange(6).numpy(), split.has_audio, split.has_video)
    batch = batch.drop(video=torch.ones(6, dtype=torch.bool))  # this rank: no video at all
    calls, grads = [], []
    forward = session.net.forward

    def counted(b, **kw):
        calls.append((int(b.has_audio.sum()), int(b.has_video.sum()), kw.get("fusion_only", False)))
        return forward(b, **kw)

    def record_step(*a, **kw):
        grads.append({n: None if p.grad is None else p.grad.clone()
                      for n, p in session.model.named_parameters()})
        return step(*a, **kw)

    step = session.opt.step
    monkeypatch.setattr(session.net, "forward", counted)
    monkeypatch.setattr(session.opt, "step", record_step)
    monkeypatch.setattr(session, "_pass_sizes", lambda local: [4, local[1], 3])  # other ranks
    session.model.train()
    session._three_pass(batch)
    assert calls == [(0, 1, False), (6, 0, False), (1, 1, True)]  # visual, audio, fusion-only
    visual = grads[0]
    touched = [n for n, g in visual.items() if g is not None]
    assert any(n.startswith("encoders.video.") for n in touched)
    assert all(not visual[n].any() for n in touched)  # zero contribution, same graph
    assert all(g is None for n, g in grads[2].items() if not n.startswith("fusion."))
    calls.clear()
    monkeypatch.setattr(session, "_pass_sizes", lambda local: local)  # one process: skip
    session._three_pass(batch)
    assert calls == [(6, 0, False)]


def test_detached_schedule_learns():
    """The one-pass detached schedule trains both the encoders (unimodal losses) and the fusion
    head (its own loss) well enough to learn a tiny problem."""
    torch.manual_seed(0)
    cfg = tiny(dropout=0.0, head_dropout=0.0)
    model = build_model(cfg)
    opt = torch.optim.AdamW(model.param_groups(0.01), lr=3e-3)
    for step in range(30):
        b = random_batch(cfg, 24, evidence=1.0, seed=step,
                         has_audio=torch.arange(24) % 4 != 3, has_video=torch.arange(24) % 4 != 2)
        loss = model.loss(model(b, detach_fusion=True), b)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    b = random_batch(cfg, 120, evidence=1.0, seed=999)
    with torch.no_grad():
        out = model(b)
    assert (out.fusion_pred.argmax(-1) == b.label).float().mean() > 0.5  # chance 1/6
    assert (out.audio.pred.argmax(-1) == b.label).float().mean() > 0.5


# ---- the official training recipe -----------------------------------------------------------


def test_official_preset_is_the_official_recipe(tiny_corpus):
    cfg = config_from_flat({"preset": "official"})
    assert (cfg.optimizer, cfg.lr, cfg.beta1, cfg.beta2, cfg.weight_decay) == ("adam", 5e-5, 0.95, 0.999, 5e-7)
    assert (cfg.max_epochs, cfg.batch_size, cfg.grad_clip, cfg.train_schedule) == (20, 32, 0.0, "three_pass")
    assert (cfg.select_condition, cfg.select_metric, cfg.select_mode) == ("av", "loss", "min")
    assert (cfg.model.dropout, cfg.model.head_dropout, cfg.model.d_model) == (0.1, 0.2, 512)
    assert config_from_flat({"preset": "official", "lr": 1e-4}).lr == 1e-4  # explicit keys win
    session = Session(config_from_flat({"preset": "tiny", "optimizer": "adam", "beta1": 0.95,
                                        "weight_decay": 5e-7}, data_dir=tiny_corpus), tiny_corpus)
    assert type(session.opt) is torch.optim.Adam
    group = session.opt.param_groups
    assert len(group) == 1 and group[0]["betas"] == (0.95, 0.999) and group[0]["weight_decay"] == 5e-7
    default = Session(config_from_flat({"preset": "tiny"}, data_dir=tiny_corpus), tiny_corpus)
    assert type(default.opt) is torch.optim.AdamW and len(default.opt.param_groups) == 2


def test_official_head_has_no_bottleneck_activation():
    head = build_model(tiny()).heads["audio"].net
    assert [type(m).__name__ for m in head] == ["Linear", "ReLU", "Dropout", "Linear", "Linear"]
    assert head[2].p == 0.1  # tiny: head_dropout 0.1 (paper preset: 0.2)
    assert build_model(model_config("paper")).heads["video"].net[2].p == 0.2
    relu = build_model(tiny(head_bottleneck_relu=True)).heads["audio"].net
    assert [type(m).__name__ for m in relu] == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Linear"]


# ---- Foal-Net switches ------------------------------------------------------------------------


def test_foal_temperature_forms():
    sim = torch.tensor([[0.5, -0.2], [0.1, 0.9]])
    paper = build_model(tiny(fusion="foalnet")).fusion
    official = build_model(tiny(fusion="foalnet", foal_temperature_form="official")).fusion
    torch.testing.assert_close(paper.logits(sim), sim / 0.07)
    torch.testing.assert_close(official.logits(sim), sim / math.log(1 / 0.07))  # ~ sim / 2.66


def test_foal_positives_mean_vs_sum():
    groups = torch.tensor([0, 0, 1])
    sim = torch.zeros(3, 3)  # every log-softmax entry is -ln 3
    assert float(alignment_loss(sim, groups, "mean")) == pytest.approx(math.log(3))
    # summed: anchors of group 0 have two positives -> (2 + 2 + 1) / 3 ln 3
    assert float(alignment_loss(sim, groups, "sum")) == pytest.approx(5 / 3 * math.log(3))


def test_foal_negatives_argmax_vs_sampled():
    groups = torch.tensor([0, 1, 2])
    sim = torch.tensor([[0.0, 0.0, math.log(3.0)],
                        [0.0, 0.0, 0.0],
                        [0.0, 0.0, 0.0]])
    rows, row_neg, _, _ = hard_negatives(sim, groups, "argmax")
    assert rows.tolist() == [0, 1, 2] and int(row_neg[0]) == 2
    torch.manual_seed(0)
    draws = torch.stack([hard_negatives(sim, groups, "sample")[1][0] for _ in range(3000)])
    assert set(draws.tolist()) == {1, 2}  # never the same-group video 0
    assert float((draws == 2).float().mean()) == pytest.approx(0.75, abs=0.03)  # softmax: 3 / (1 + 3)
    assert matching_pairs(sim, groups)[2][3:].tolist() == [0.0] * 6  # default: argmax negatives


@pytest.mark.parametrize("heads, expected", [
    ("directional", 0.5 * (F.softplus(torch.tensor(-1.0)) + F.softplus(torch.tensor(1.0)))),  # 1:1
    ("joint", (F.softplus(torch.tensor(-1.0)) + 2 * F.softplus(torch.tensor(1.0))) / 3),  # 1:2
])
def test_foal_match_heads_balance(heads, expected):
    """Heads that output a constant "match" logit of 1: the loss then only counts positives and
    negatives. Directional (official): P positives + P negatives per head; joint: P + 2P."""
    torch.manual_seed(0)
    cfg = tiny(fusion="foalnet", foal_match_heads=heads)
    model = build_model(cfg)
    with torch.no_grad():
        for head in ([model.fusion.match_a2v, model.fusion.match_v2a] if heads == "directional"
                     else [model.fusion.match_head]):
            head.weight.zero_()
            head.bias.copy_(torch.tensor([0.0, 1.0]) if heads == "directional" else torch.tensor([1.0]))
    b = random_batch(cfg, 6)
    b.label[:] = torch.tensor([0, 1, 2, 0, 1, 2])
    b.target[:] = F.one_hot(b.label, cfg.n_outputs).float()
    assert float(model(b).aux["match"].detach()) == pytest.approx(float(expected), rel=1e-5)


def test_foal_cross_attention_and_projection_forms():
    official = build_model(model_config("paper", fusion="foalnet")).fusion
    block = official.fuse.a2v[0]
    assert type(block).__name__ == "PostLNCrossAttentionBlock" and block.attn.n_heads == 4
    assert not any(".ff." in n for n, _ in official.named_parameters())  # no feed-forward
    assert official.proj_audio.drop.p == 0.5
    pre = build_model(model_config("paper", fusion="foalnet", foal_xattn="pre_ln", foal_heads=8)).fusion
    assert type(pre.fuse.a2v[0]).__name__ == "CrossAttentionBlock" and pre.fuse.a2v[0].attn.n_heads == 8
    # post-LN: every real output frame is layer-normalised (mean 0, unit variance at init)
    torch.manual_seed(0)
    x, y = torch.randn(2, 5, 32) * 3 + 1, torch.randn(2, 4, 32)
    small = build_model(tiny(fusion="foalnet")).fusion.fuse.a2v[0].eval()
    out = small(x, torch.ones(2, 5, dtype=torch.bool), y, torch.ones(2, 4, dtype=torch.bool))
    torch.testing.assert_close(out.mean(-1), torch.zeros(2, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(-1, unbiased=False), torch.ones(2, 5), atol=1e-3, rtol=0)


def test_class_balanced_sampling_makes_every_class_equally_likely():
    """Foal-Net's official sampler: with replacement, p proportional to 1 / class count."""
    import numpy as np

    from study.training.loader import bucketed_batches, class_balanced_order

    label = np.array([0] * 90 + [1] * 9 + [2] * 1)  # (100,) 90/9/1
    order = np.concatenate([class_balanced_order(label, np.random.default_rng(s)) for s in range(30)])
    share = np.bincount(label[order], minlength=3) / len(order)
    assert share == pytest.approx([1 / 3] * 3, abs=0.03)
    plain = np.random.default_rng(0).permutation(100)
    assert np.bincount(label[plain]).tolist() == [90, 9, 1]  # the default order keeps the corpus balance
    given = class_balanced_order(label, np.random.default_rng(1))
    batches = bucketed_batches(np.ones(100), 10, np.random.default_rng(2), given)
    assert sorted(np.concatenate(batches).tolist()) == sorted(given.tolist())


def test_class_balanced_needs_a_categorical_task():
    with pytest.raises(ValueError, match="class_balanced: class-balanced sampling needs a categorical task"):
        config_from_flat({"preset": "tiny", "task": "dimensional", "class_balanced": True})
