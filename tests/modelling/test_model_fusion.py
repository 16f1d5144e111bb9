"""Fusion strategy zoo: shapes, gradients, missing-modality paths, ablations, learning, Foal-Net."""

from __future__ import annotations

import pytest
import torch
from random_batches import random_batch

from model import build_model, model_config
from model.fusion import FusionInput, alignment_loss, emotion_groups, matching_pairs, mix_predictions
from model.registry import FUSIONS

torch.set_num_threads(1)

STRATEGIES = list(FUSIONS)
TASKS = ["categorical", "dimensional"]
AUX_KEYS = {"vavl": set(), "late": set(), "gated": set(), "xattn": set(), "foalnet": {"align", "match"}}
# tiny preset, categorical (K=6): parameters of the fusion module alone
# foalnet (official form): 2 x post-LN cross-attention 4,288 + head 2,710 + 2 projections 800
# + logit_scale 1 + a2v/v2a 2-way match heads 2 x 66
FUSION_PARAMS = {"vavl": 2_710, "late": 1, "gated": 1_074, "xattn": 19_926, "foalnet": 13_019}


def tiny(fusion, task="categorical", **kw):
    return model_config("tiny", fusion=fusion, task=task, **kw)


def mixed_batch(cfg, n=8, seed=0):
    """Paired samples at 0, 3, 4, 6, 7 (labels vary); audio-only 1, 5; video-only 2."""
    has_audio = torch.tensor([1, 1, 0, 1, 1, 1, 1, 1], dtype=torch.bool)[:n]
    has_video = torch.tensor([1, 0, 1, 1, 1, 0, 1, 1], dtype=torch.bool)[:n]
    return random_batch(cfg, n, has_audio=has_audio, has_video=has_video, seed=seed,
                        audio_len=(10, 25), video_len=(4, 9))


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("fusion", STRATEGIES)
def test_shapes_gradients_and_aux(fusion, task):
    torch.manual_seed(0)
    cfg = tiny(fusion, task)
    model = build_model(cfg)
    b = mixed_batch(cfg)
    out = model(b)
    k = 6 if task == "categorical" else 3
    assert out.pred.shape == (8, k) and out.fusion_pred.shape == (5, k)
    assert set(out.aux) == AUX_KEYS[fusion]
    losses = model.loss(out, b)
    assert set(losses) == {"task", "audio", "video", "recon", "total"} | AUX_KEYS[fusion]
    losses["total"].backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


@pytest.mark.parametrize("fusion", STRATEGIES)
def test_fusion_only_trains_only_the_fusion(fusion):
    torch.manual_seed(0)
    cfg = tiny(fusion)
    model = build_model(cfg)
    b = mixed_batch(cfg)
    losses = model.loss(model(b, fusion_only=True), b)
    assert set(losses) == {"task", "total"} | AUX_KEYS[fusion]
    losses["total"].backward()
    for name, p in model.named_parameters():
        if name.startswith("fusion."):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    assert sum(p.numel() for p in model.fusion_parameters()) == FUSION_PARAMS[fusion]


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("fusion", STRATEGIES)
def test_single_modality_conditions(fusion, task):
    """av / audio_only / video_only: unimodal conditions use the unimodal branch; no NaN, even
    when a modality is missing from the whole batch and Ta != Tv."""
    torch.manual_seed(0)
    cfg = tiny(fusion, task)
    model = build_model(cfg).eval()
    b = random_batch(cfg, 4, audio_len=(30, 40), video_len=(2, 5), seed=1)
    everyone = torch.ones(4, dtype=torch.bool)
    with torch.no_grad():
        av = model(b)
        audio_only = model(b.drop(video=everyone))
        video_only = model(b.drop(audio=everyone))
    torch.testing.assert_close(av.pred, av.fusion_pred)
    torch.testing.assert_close(audio_only.pred, av.audio.pred)
    torch.testing.assert_close(video_only.pred, av.video.pred)
    model.train()
    for batch in (b.drop(video=everyone), b.drop(audio=everyone)):
        losses = model.loss(model(batch), batch)
        assert all(torch.isfinite(v) for v in losses.values())
        losses["total"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_one_paired_sample_is_finite():
    torch.manual_seed(0)
    cfg = tiny("foalnet")
    model = build_model(cfg)
    b = mixed_batch(cfg, n=3)  # one paired sample: no alignment batch, no negatives
    losses = model.loss(model(b), b)
    assert float(losses["align"].detach()) == 0.0 and torch.isfinite(losses["match"])
    losses["total"].backward()


def test_late_fusion_is_the_average_at_init():
    torch.manual_seed(0)
    cfg = tiny("late")
    model = build_model(cfg).eval()
    b = random_batch(cfg, 3)
    with torch.no_grad():
        out = model(b)
    probs = 0.5 * out.audio.pred.softmax(-1) + 0.5 * out.video.pred.softmax(-1)
    torch.testing.assert_close(out.pred.softmax(-1), probs)
    a, v = torch.randn(4, 3), torch.randn(4, 3)
    torch.testing.assert_close(mix_predictions(a, v, torch.tensor(0.5), "dimensional"), (a + v) / 2)
    torch.testing.assert_close(mix_predictions(a, v, torch.ones(4, 1), "categorical").exp(), a.softmax(-1))


def test_gated_weights_are_per_sample_distributions():
    torch.manual_seed(0)
    cfg = tiny("gated")
    model = build_model(cfg).eval()
    b = random_batch(cfg, 5)
    with torch.no_grad():
        out = model(b)
        inp = FusionInput(audio=out.audio.frames, audio_mask=out.audio.mask, video=out.video.frames,
                          video_mask=out.video.mask, audio_pooled=out.audio.pooled,
                          video_pooled=out.video.pooled, audio_pred=out.audio.pred,
                          video_pred=out.video.pred, target=b.target, label=b.label)
        w = model.fusion.weights(inp)
    assert w.shape == (5, 2)
    torch.testing.assert_close(w.sum(-1), torch.ones(5))
    assert w[:, 0].std() > 0  # differs between samples


def test_ablation_switches_change_parameter_sets():
    def names(**kw):
        return {n for n, _ in build_model(tiny("foalnet", **kw)).fusion.named_parameters()}

    full = names()
    no_align = names(foal_use_align=False)
    no_match = names(foal_use_match=False)
    assert {"logit_scale", "proj_audio.linear1.weight"} <= full - no_align
    assert {"match_a2v.weight", "match_a2v.bias", "match_v2a.weight", "match_v2a.bias"} == full - no_match
    joint = names(foal_match_heads="joint")
    assert {"match_head.weight", "match_head.bias"} == joint - no_match
    cfg = tiny("foalnet", foal_use_align=False)
    model = build_model(cfg)
    b = mixed_batch(cfg)
    assert set(model(b).aux) == {"match"}
    one = build_model(tiny("xattn", xattn_layers=1)).fusion
    two = build_model(tiny("xattn", xattn_layers=2)).fusion
    assert len(two.fuse.a2v) == 2 and len(one.fuse.a2v) == 1
    assert sum(p.numel() for p in two.parameters()) > sum(p.numel() for p in one.parameters())


# ---- Foal-Net pieces -----------------------------------------------------------------------


def test_alignment_loss_prefers_label_consistent_embeddings():
    g = torch.Generator().manual_seed(0)
    groups = torch.arange(4).repeat_interleave(4)  # 16 samples, 4 groups
    centers = torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=-1)
    za = torch.nn.functional.normalize(centers[groups] + 0.1 * torch.randn(16, 8, generator=g), dim=-1)
    zv = torch.nn.functional.normalize(centers[groups] + 0.1 * torch.randn(16, 8, generator=g), dim=-1)
    aligned = alignment_loss(za @ zv.t() / 0.07, groups)
    perm = torch.randperm(16, generator=g)
    shuffled = alignment_loss(za @ zv[perm].t() / 0.07, groups)
    assert aligned < shuffled - 1.0
    # lower bound: log(#positives) when all mass is spread over the positives
    assert aligned >= torch.log(torch.tensor(4.0)) - 1e-4


def test_matching_pairs_targets_and_hard_negatives():
    groups = torch.tensor([0, 0, 1, 2])
    sim = torch.tensor([[0.9, 0.8, 0.1, 0.5],
                        [0.7, 0.9, 0.6, 0.2],
                        [0.3, 0.95, 0.9, 0.1],
                        [0.4, 0.2, 0.85, 0.9]])
    a_idx, v_idx, target = matching_pairs(sim, groups)
    pairs = list(zip(a_idx.tolist(), v_idx.tolist(), target.tolist()))
    assert pairs[:4] == [(0, 0, 1.0), (1, 1, 1.0), (2, 2, 1.0), (3, 3, 1.0)]
    # audio -> hardest video of another group; video -> hardest audio of another group
    assert pairs[4:8] == [(0, 3, 0.0), (1, 2, 0.0), (2, 1, 0.0), (3, 2, 0.0)]
    assert pairs[8:] == [(3, 0, 0.0), (2, 1, 0.0), (3, 2, 0.0), (0, 3, 0.0)]
    assert (target == (groups[a_idx] == groups[v_idx]).float()).all()
    for a, v, _t in pairs[4:]:
        assert groups[a] != groups[v]
        other = groups != groups[a]
        assert sim[a, v] == sim[a][other].max() or sim[a, v] == sim[:, v][groups != groups[v]].max()
    # a batch with a single group has only positives
    a_idx, v_idx, target = matching_pairs(sim, torch.zeros(4, dtype=torch.long))
    assert target.tolist() == [1.0] * 4


def test_emotion_groups():
    label = torch.tensor([2, -1])
    target = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    assert emotion_groups(target, label, "categorical").tolist() == [2, 1]
    dims = torch.tensor([[0.5, 0.5, 0.0], [-0.5, 0.5, 0.0], [0.5, -0.5, 0.0], [-1.0, -1.0, 3.0]])
    assert emotion_groups(dims, torch.full((4,), -1), "dimensional").tolist() == [3, 1, 2, 0]


# ---- learning ------------------------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("fusion", STRATEGIES)
def test_strategy_learns_tiny_problem(fusion, task):
    torch.manual_seed(0)
    cfg = tiny(fusion, task, dropout=0.0)
    model = build_model(cfg)
    opt = torch.optim.AdamW(model.param_groups(0.01), lr=3e-3)
    first, last = [], []
    for step in range(25):
        b = random_batch(cfg, 24, evidence=1.0, seed=step, audio_len=(6, 12), video_len=(4, 8))
        losses = model.loss(model(b), b)
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
        (first if step < 5 else last if step >= 20 else []).append(float(losses["task"].detach()))
    assert sum(last) < 0.8 * sum(first)
    model.eval()
    b = random_batch(cfg, 96, evidence=1.0, seed=999, audio_len=(6, 12), video_len=(4, 8))
    with torch.no_grad():
        pred = model(b).pred
    if task == "categorical":
        assert (pred.argmax(-1) == b.label).float().mean() > 0.4  # chance 1/6
    else:
        from model.losses import ccc
        assert ccc(pred, b.target).mean() > 0.3  # chance 0
