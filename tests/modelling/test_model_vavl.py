"""VAVL model: Batch, config, conformer masking, encoders/shared block/heads, routing, losses."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from random_batches import random_batch

from model import Batch, build_model, model_config
from model.conformer import ConformerStack
from model.losses import ccc, ccc_loss, soft_cross_entropy

torch.set_num_threads(1)


def tiny(**overrides):
    return model_config("tiny", **overrides)


# ---- Batch -------------------------------------------------------------------------------


def _arrays_batch():
    audio = [torch.ones(3, 4), None, 2 * torch.ones(5, 4)]
    video = [torch.ones(2, 6), torch.ones(4, 6), None]
    target = torch.eye(3)
    return Batch.from_arrays(audio, video, None, None, target, [0, 1, 2])


def test_from_arrays_pads_and_masks():
    b = _arrays_batch()
    assert b.audio.shape == (3, 5, 4) and b.video.shape == (3, 4, 6)
    assert b.audio_mask.sum(1).tolist() == [3, 0, 5]
    assert b.video_mask.sum(1).tolist() == [2, 4, 0]
    assert b.has_audio.tolist() == [True, False, True]
    assert b.has_video.tolist() == [True, True, False]
    assert float(b.audio[0, 3:].abs().sum()) == 0.0  # zero padding
    assert b.label.dtype == torch.long and b.target.shape == (3, 3)


def test_from_arrays_all_missing_needs_dim():
    with pytest.raises(ValueError, match="audio_dim"):
        Batch.from_arrays([None, None], [torch.ones(2, 3)] * 2, None, None, torch.eye(2), [0, 1])
    b = Batch.from_arrays([None, None], [torch.ones(2, 3)] * 2, None, None, torch.eye(2), [0, 1],
                          audio_dim=7)
    assert b.audio.shape == (2, 1, 7) and not b.audio_mask.any()


def test_batch_validation():
    with pytest.raises(ValueError, match="at least one modality"):
        Batch.from_arrays([None], [None], None, None, torch.eye(1), [0], audio_dim=2, video_dim=2)
    b = _arrays_batch()
    with pytest.raises(ValueError, match="real frame"):
        dataclasses.replace(b, has_audio=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="mixed|one D"):
        Batch.from_arrays([torch.ones(2, 3), torch.ones(2, 4)], [None, None], None, None,
                          torch.eye(2), [0, 1])


def test_drop_and_select():
    b = _arrays_batch()
    d = b.drop(audio=torch.tensor([True, False, False]))
    assert d.has_audio.tolist() == [False, False, True]
    assert not d.audio_mask[0].any() and float(d.audio[0].abs().sum()) == 0.0
    assert b.has_audio[0]  # original untouched
    with pytest.raises(ValueError, match="at least one modality"):
        b.drop(video=torch.tensor([False, False, True]), audio=torch.tensor([False, False, True]))
    s = b.select(torch.tensor([2, 0]))
    assert s.size == 2 and s.label.tolist() == [2, 0] and s.audio_mask.sum(1).tolist() == [5, 3]
    assert b.select(torch.tensor([True, False, True])).label.tolist() == [0, 2]


# ---- config ------------------------------------------------------------------------------


def test_config_presets_and_validation():
    paper = model_config("paper")
    assert (paper.proj_dim, paper.d_model, paper.enc_layers, paper.shared_layers, paper.n_heads,
            paper.kernel_size, paper.ff_mult, paper.dropout, paper.head_dropout) == (50, 512, 3, 2, 8, 31, 4, 0.1, 0.2)
    assert model_config("vavl_sizes") == paper  # "paper" is the old name of the sizes-only preset
    official = model_config("official")  # the CREMA-D recipe: paper sizes + official architecture
    assert official == model_config("vavl_official_crema_d") == model_config(
        "paper", shared_input_proj=True, conformer_init="xavier", depthwise_bias=False)
    assert model_config("tiny", task="dimensional").n_outputs == 3
    with pytest.raises(ValueError, match="unknown ModelConfig fields"):
        model_config("tiny", not_a_field=1)
    with pytest.raises(ValueError, match=r"fusion: 'nope' not one of"):
        model_config("tiny", fusion="nope")
    with pytest.raises(ValueError, match=r"foal_negatives: 'max' not one of"):
        model_config("tiny", foal_negatives="max")
    with pytest.raises(ValueError, match=r"head_dropout: must be in \[0, 1\), got 1.0"):
        model_config("tiny", head_dropout=1.0)
    with pytest.raises(ValueError, match="n_outputs=3"):
        model_config("tiny", task="dimensional", n_outputs=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        paper.d_model = 3  # type: ignore[misc]


# ---- conformer masking --------------------------------------------------------------------


def test_conformer_padding_does_not_leak():
    torch.manual_seed(0)
    stack = ConformerStack(2, d_model=16, n_heads=2, kernel_size=5, ff_mult=2, dropout=0.0).eval()
    x = torch.randn(1, 6, 16)
    mask = torch.ones(1, 6, dtype=torch.bool)
    alone = stack(x, mask).detach()
    padded_x = torch.cat([x, 100 * torch.randn(1, 4, 16)], dim=1)  # garbage in the padding
    padded_mask = torch.cat([mask, torch.zeros(1, 4, dtype=torch.bool)], dim=1)
    padded = stack(padded_x, padded_mask).detach()
    torch.testing.assert_close(padded[:, :6], alone, atol=1e-5, rtol=1e-5)
    assert float(padded[:, 6:].abs().sum()) == 0.0


# ---- model -------------------------------------------------------------------------------


def _mixed_batch(cfg, n=6, seed=0, **kw):
    has_audio = torch.tensor([True, True, False, True, True, False])[:n]
    has_video = torch.tensor([True, False, True, True, False, True])[:n]
    return random_batch(cfg, n, has_audio=has_audio, has_video=has_video, seed=seed, **kw)


def test_forward_shapes_and_routing():
    torch.manual_seed(0)
    cfg = tiny()
    model = build_model(cfg).eval()
    b = _mixed_batch(cfg)
    out = model(b)
    assert out.pred.shape == (6, 6)
    assert out.pair_idx.tolist() == [0, 3]
    assert out.audio.idx.tolist() == [0, 1, 3, 4] and out.video.idx.tolist() == [0, 2, 3, 5]
    assert out.audio.frames.shape[:1] == (4,) and out.audio.pooled.shape == (4, 32)
    assert out.audio.recon.shape == (4, 32) and out.video.recon.shape == (4, 24)
    assert out.fusion_pred.shape == (2, 6)
    torch.testing.assert_close(out.pred[[1, 4]], out.audio.pred[[1, 3]])  # audio-only rows
    torch.testing.assert_close(out.pred[[2, 5]], out.video.pred[[1, 3]])  # video-only rows
    torch.testing.assert_close(out.pred[[0, 3]], out.fusion_pred)  # paired rows


def test_encoding_is_per_sample():
    """A sample's unimodal output does not depend on what else is in the batch (eval mode)."""
    torch.manual_seed(0)
    cfg = tiny()
    model = build_model(cfg).eval()
    b = _mixed_batch(cfg)
    full = model(b)
    one = model(b.select(torch.tensor([4])))  # audio-only sample, shorter time axis
    torch.testing.assert_close(one.pred[0], full.pred[4], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("missing", ["audio", "video"])
def test_one_modality_missing_everywhere_no_nan(missing):
    torch.manual_seed(0)
    cfg = tiny()
    model = build_model(cfg)
    b = random_batch(cfg, 5, audio_len=(20, 30), video_len=(3, 6))  # Ta != Tv
    b = b.drop(**{missing: torch.ones(5, dtype=torch.bool)})
    out = model(b)
    losses = model.loss(out, b)
    losses["total"].backward()
    assert out.fusion_pred is None and out.pair_idx.numel() == 0
    assert out.encoded(missing) is None
    assert torch.isfinite(out.pred).all()
    assert all(torch.isfinite(v) for v in losses.values())
    assert float(losses[missing]) == 0.0
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), name


def test_ablation_switches_change_parameters():
    base = {n for n, _ in build_model(tiny()).named_parameters()}
    assert any(n.startswith("shared.") for n in base) and any(n.startswith("recon.") for n in base)
    no_shared = {n for n, _ in build_model(tiny(use_shared=False)).named_parameters()}
    assert no_shared == {n for n in base if not n.startswith("shared.")}
    no_recon = {n for n, _ in build_model(tiny(recon_weight=0.0)).named_parameters()}
    assert no_recon == {n for n in base if not n.startswith("recon.")}
    # residual switch keeps the parameters but changes the function
    torch.manual_seed(0)
    m_res = build_model(tiny()).eval()
    m_nores = build_model(tiny(shared_residual=False)).eval()
    m_nores.load_state_dict(m_res.state_dict())
    b = random_batch(tiny(), 3)
    assert not torch.allclose(m_res(b).pred, m_nores(b).pred)


def test_unimodal_loss_mean_weighs_a_rare_stream_fully():
    # video on 1 of 4 samples: `share` counts its head loss as 1/4 of that sample's CE, `mean` as all of it
    has_v = torch.tensor([True, False, False, False])
    losses = {}
    for how in ("share", "mean"):
        cfg = tiny(unimodal_loss=how)
        torch.manual_seed(0)
        model = build_model(cfg).eval()
        b = random_batch(cfg, 4, has_video=has_v, seed=3)
        out = model(b)
        losses[how] = model.loss(out, b)
        e = out.encoded("video")
        ce = soft_cross_entropy(e.pred.float(), b.target[e.idx])
        assert float(losses[how]["video"]) == pytest.approx(float(ce) * (0.25 if how == "share" else 1.0), rel=1e-5)
    assert float(losses["share"]["audio"]) == pytest.approx(float(losses["mean"]["audio"]), rel=1e-5)  # all have it
    with pytest.raises(ValueError, match="unimodal_loss"):
        tiny(unimodal_loss="sum")


def test_recon_weight_zero_has_no_recon_loss():
    cfg = tiny(recon_weight=0.0)
    model = build_model(cfg)
    b = _mixed_batch(cfg)
    losses = model.loss(model(b), b)
    assert "recon" not in losses and set(losses) == {"task", "audio", "video", "total"}


def test_gradients_reach_all_parameters_and_fusion_only_freezes_encoders():
    torch.manual_seed(0)
    cfg = tiny()
    model = build_model(cfg)
    b = _mixed_batch(cfg)
    model.loss(model(b), b)["total"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
    model.zero_grad(set_to_none=True)
    model.train()
    losses = model.loss(model(b, fusion_only=True), b)
    assert set(losses) == {"task", "total"}
    losses["total"].backward()
    assert model.training and model.encoders.training  # modes restored after the frozen pass
    for name, p in model.named_parameters():
        assert (p.grad is not None) == name.startswith("fusion."), name


def test_fusion_only_without_pairs_has_no_gradient():
    cfg = tiny()
    model = build_model(cfg)
    b = random_batch(cfg, 3).drop(video=torch.ones(3, dtype=torch.bool))
    total = model.loss(model(b, fusion_only=True), b)["total"]
    assert not total.requires_grad and float(total) == 0.0


def test_param_groups_cover_every_parameter_once():
    model = build_model(tiny(fusion="foalnet"))
    groups = model.param_groups(0.01)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    no_decay = {id(p) for p in groups[1]["params"]}
    assert id(model.shared.norm.weight) in no_decay and id(model.fusion.logit_scale) in no_decay
    assert id(model.encoders["audio"].proj.weight) not in no_decay
    torch.optim.AdamW(groups, lr=1e-3)  # accepted by one optimizer


def test_pinned_parameter_counts():
    assert sum(p.numel() for p in build_model(tiny()).parameters()) == TINY_PARAMS
    paper = build_model(model_config("paper"))
    assert sum(p.numel() for p in paper.parameters()) == PAPER_PARAMS
    enc = paper.encoders["audio"]
    assert enc.proj.weight.shape == (50, 1024, 1) and enc.inp.weight.shape == (512, 50)
    assert len(enc.blocks.blocks) == 3 and len(paper.shared.blocks.blocks) == 2
    block = enc.blocks.blocks[0]
    assert block.conv.depthwise.weight.shape == (512, 1, 31)
    assert block.ff1.net[1].weight.shape == (2048, 512)


TINY_PARAMS = 61_498
# 8 conformer blocks x 6,060,544 + projections 173,824 + shared LN 1,024 + unimodal heads 791,052
# + reconstruction heads 1,412,992 + VAVL concat head 657,670
PAPER_PARAMS = 51_520_914


# ---- losses ------------------------------------------------------------------------------


def test_losses():
    x = torch.randn(50, 3)
    x = x - x.mean(0)
    torch.testing.assert_close(ccc(x, x), torch.ones(3), atol=1e-5, rtol=0)
    # official train.py: sum over the three dimensions of (1 - CCC)
    assert float(ccc_loss(x, -x)) == pytest.approx(6.0, abs=1e-5)
    shifted = x + 10  # CCC = 2 cov / (var + var + 100) per dimension
    var = x.var(0, unbiased=False)
    assert float(ccc_loss(x, shifted)) == pytest.approx(float((1 - 2 * var / (2 * var + 100)).sum()), rel=1e-5)
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    hard = torch.tensor([[1.0, 0.0, 0.0]])
    expected = -torch.log_softmax(logits, -1)[0, 0]
    torch.testing.assert_close(soft_cross_entropy(logits, hard), expected)
    soft = torch.tensor([[0.5, 0.5, 0.0]])
    lp = torch.log_softmax(logits, -1)[0]
    torch.testing.assert_close(soft_cross_entropy(logits, soft), -(0.5 * lp[0] + 0.5 * lp[1]))


def test_vavl_learns_tiny_problem():
    torch.manual_seed(0)
    cfg = tiny(dropout=0.0)
    model = build_model(cfg)
    opt = torch.optim.AdamW(model.param_groups(0.01), lr=3e-3)
    losses = []
    for step in range(30):
        b = random_batch(cfg, 24, evidence=1.0, seed=step,
                         has_audio=torch.arange(24) % 4 != 3, has_video=torch.arange(24) % 4 != 2)
        loss = model.loss(model(b), b)
        opt.zero_grad()
        loss["total"].backward()
        opt.step()
        losses.append(float(loss["task"].detach()))
    model.eval()
    b = random_batch(cfg, 120, evidence=1.0, seed=999)
    with torch.no_grad():
        acc = (model(b).pred.argmax(-1) == b.label).float().mean()
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    assert acc > 0.5  # chance = 1/6
