"""VAVL and Foal-Net as published (docs/fidelity.md V20-V26, F8, F14-F17): each switch pins its
behaviour, on tiny models built here (a tiny pickled face module, a tiny random wav2vec2)."""
from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
import torch
from random_batches import random_batch
from torch import nn

from model.build import build_model
from model.config import PRESETS, model_config
from study.training.config import config_from_flat

TINY = PRESETS["tiny"]


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---- model switches ----------------------------------------------------------------------


def test_shared_input_projection_adds_exactly_its_parameters_and_is_skipped_by_the_residual():
    d = TINY["d_model"]
    plain, proj = (build_model(model_config("tiny", shared_input_proj=on)) for on in (False, True))
    assert _n_params(proj) - _n_params(plain) == d * d + d
    shared = proj.shared.eval()
    x, mask = torch.randn(2, 5, d), torch.ones(2, 5, dtype=torch.bool)
    manual = shared.norm(shared.blocks(shared.inp(x), mask) + x)  # residual adds x, not W x
    assert torch.allclose(shared(x, mask), manual, atol=1e-6)


def test_official_paper_parameter_count():
    """docs/fidelity.md V20-V22: 51,520,914 + 262,656 (shared projection) - 8 x 512 (depthwise
    biases) = 51,779,474; with the 8 x 263,168 of relative-position attention left out on purpose
    that is the official 53,884,818 used parameters."""
    assert _n_params(build_model(model_config("vavl_sizes"))) == 51_520_914
    official = build_model(model_config("vavl_official_crema_d"))
    assert _n_params(official) == 51_520_914 + 512 * 512 + 512 - 8 * 512 == 51_779_474
    assert _n_params(official) + 8 * (512 * 512 + 2 * 8 * 64) == 53_884_818


def test_xavier_init_and_bias_free_depthwise_conv():
    m = build_model(model_config("tiny", conformer_init="xavier", depthwise_bias=False,
                                 shared_input_proj=True))
    block = m.encoders["audio"].blocks.blocks[0]
    linears = [block.ff1.net[1], block.ff2.net[4], block.attn.attn.q, block.attn.attn.kv,
               block.attn.attn.out, m.encoders["audio"].inp, m.shared.inp[0]]
    assert all(float(lin.bias.detach().abs().max()) == 0.0 for lin in linears)
    d = TINY["d_model"]
    bound = (6 / (d + d)) ** 0.5  # each of the key / value halves as its own d x d linear
    assert float(block.attn.attn.kv.weight.detach().abs().max()) <= bound
    assert block.conv.depthwise.bias is None
    default = build_model(model_config("tiny")).encoders["audio"].blocks.blocks[0]
    assert default.conv.depthwise.bias is not None and float(default.ff1.net[1].bias.detach().abs().max()) > 0


# ---- Foal-Net as published ---------------------------------------------------------------


def test_foalnet_official_total_is_task_plus_alignment_plus_a_tenth_of_matching():
    cfg = model_config("foalnet_official", **{k: v for k, v in TINY.items() if k != "foal_proj_dim"})
    assert (cfg.unimodal_weight, cfg.recon_weight, cfg.foal_temperature_form, cfg.foal_proj_dim,
            cfg.foal_cls_head) == (0.0, 0.0, "official", 512, "linear")
    model = build_model(cfg)
    assert model.recon is None
    batch = random_batch(cfg, 12, seed=1)
    losses = model.loss(model(batch), batch)
    expected = losses["task"] + losses["align"] + 0.1 * losses["match"]
    assert torch.allclose(losses["total"], expected)
    assert float(losses["audio"]) > 0  # computed (and logged), weighted 0


def test_foalnet_per_modality_widths_and_feature_alignment():
    cfg = model_config("tiny", fusion="foalnet", foal_audio_width=24, foal_video_width=16,
                       foal_align_input="features")
    fusion = build_model(cfg).fusion
    assert fusion.fuse.widths == (24, 16)
    assert fusion.match_a2v.in_features == 24 and fusion.match_v2a.in_features == 16
    assert fusion.proj_audio.linear1.in_features == cfg.audio_dim
    assert fusion.proj_video.linear1.in_features == cfg.video_dim
    model = build_model(cfg)
    batch = random_batch(cfg, 8, seed=2)
    losses = model.loss(model(batch), batch)
    assert torch.isfinite(losses["total"]) and set(losses) >= {"align", "match"}


def test_foalnet_official_training_recipe():
    cfg = config_from_flat({"preset": "foalnet_official", **TINY})
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.max_epochs, cfg.grad_clip,
            cfg.class_balanced, cfg.train_schedule) == ("adamw_all", 1e-4, 0.01, 16, 40, 0.0, True, "fused")
    assert not cfg.early_stopping and cfg.selection == ("av", "uar", "max")
    from study.training.session import make_optimizer
    opt = make_optimizer(build_model(cfg.model), cfg)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01]  # norms and biases decay too


def test_vavl_recipes_per_corpus_and_old_names():
    crema, improv = (config_from_flat({"preset": p}) for p in ("vavl_official_crema_d",
                                                                 "vavl_official_msp_improv"))
    assert (crema.batch_size, improv.batch_size) == (32, 9)
    assert crema.train_schedule == improv.train_schedule == "three_pass"
    old = config_from_flat({"preset": "official"})
    assert old.preset == "vavl_official_crema_d" and old.batch_size == 32
    sizes = config_from_flat({"preset": "paper"})
    assert sizes.preset == "vavl_sizes" and sizes.train_schedule == "detached" and sizes.grad_clip == 1.0


# ---- untrained heads flagged; recipe recorded and printed ---------------------------------


def test_recipe_single_modality_rows_carry_the_untrained_flag(tiny_corpus):
    from study.training.sanity import degenerate
    from study.training.session import Session
    cfg = config_from_flat({"preset": "foalnet_official", **TINY, "max_epochs": 1}, data_dir=tiny_corpus)
    s = Session(cfg, tiny_corpus)
    s.train_epoch()
    rows = {r["condition"]: r for r in s.evaluate("dev")}
    for cond in ("audio_only", "video_only", "miss_0.5", "robustness"):
        assert rows[cond]["flag"] == "untrained", cond
    assert rows["av"]["flag"] != "untrained" and rows["miss_0.0"]["flag"] != "untrained"
    assert not degenerate([{"condition": "audio_only", "flag": "untrained"}])
    trained = config_from_flat({"preset": "tiny", "max_epochs": 1}, data_dir=tiny_corpus)
    s2 = Session(trained, tiny_corpus)
    s2.train_epoch()
    assert all(r["flag"] != "untrained" for r in s2.evaluate("dev"))


def test_report_header_prints_the_effective_recipe():
    from reports.recipe import recipe_lines
    cfg = config_from_flat({"preset": "vavl_official_crema_d", **TINY})
    sizes = config_from_flat({"preset": "vavl_sizes", **TINY, "fusion": "gated"})
    res = pd.DataFrame([{"trial_id": "a", "fusion": "vavl", "recipe": json.dumps(cfg.recipe())},
                        {"trial_id": "b", "fusion": "gated", "recipe": json.dumps(sizes.recipe())},
                        {"trial_id": "c", "fusion": "xattn", "recipe": None,
                         "config": json.dumps(config_from_flat({"fusion": "xattn", **TINY}).to_flat())}])
    lines = dict(line.split(": ", 1) for line in recipe_lines(res))
    assert ("schedule three_pass" in lines["vavl"] and "optimiser adam" in lines["vavl"]
            and "lr 5e-05" in lines["vavl"] and "weight decay 5e-07" in lines["vavl"]
            and "clip none" in lines["vavl"] and "epochs 20" in lines["vavl"]
            and "patience 20" in lines["vavl"] and "selection av loss (min)" in lines["vavl"]
            and "no early stopping" in lines["vavl"])
    assert "schedule detached" in lines["gated"] and "clip 1" in lines["gated"]
    assert "schedule auto (the strategy's own)" in lines["xattn"]  # an old study's config


# ---- video: HSEmotion from a local file ----------------------------------------------------


def _tiny_face_module() -> nn.Module:
    """Stands in for HSEmotion's pickled enet_b2_8_best.pt: a module with a `classifier`."""
    net = nn.Sequential(nn.Conv2d(3, 6, 3, stride=4), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    net.add_module("classifier", nn.Linear(6, 8))
    return net


def test_hsemotion_pickled_module_records_its_hash_and_drops_the_classifier(tmp_path):
    import hashlib

    from study.data.features.video import HSEmotionExtractor
    path = tmp_path / "enet_b2_8_best.pt"
    torch.save(_tiny_face_module(), path)
    x = HSEmotionExtractor(str(path))
    assert x.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert x.dim == 6 and x.align and x.crop_size == 224  # features before the classifier
    feats = x(np.random.default_rng(0).integers(0, 255, (3, 224, 224, 3), dtype=np.uint8))
    assert feats.shape == (3, 6) and np.isfinite(feats).all()
    with pytest.raises(ValueError, match="--video-weights FILE"):
        HSEmotionExtractor("hub")


def test_aligned_faces_use_dlibs_five_point_model():
    pytest.importorskip("dlib")
    from study.data.features import video
    try:
        video.packaged_shape_model("shape_predictor_5_face_landmarks.dat")
    except ImportError:
        pytest.skip("face_recognition_models not installed")
    cropper = video.FaceCropper.__new__(video.FaceCropper)
    frames = np.random.default_rng(0).integers(0, 255, (2, 120, 160, 3), dtype=np.uint8)
    cropper.boxes = lambda f: np.array([[40, 20, 60, 60]] * len(f))
    chips = cropper.aligned(frames, 224)
    assert chips.shape == (2, 224, 224, 3) and chips.dtype == np.uint8


def test_old_video_name_says_what_it_is_now():
    from study.data.features.extract import ExtractConfig, preflight
    with pytest.raises(ValueError, match="efficientnet-imagenet.*hsemotion"):
        preflight(ExtractConfig(corpus="crema-d", root=".", out=".", audio="none", video="efficientnet"))


# ---- audio: VAVL's checkpoint, the training-set z-score, the cut, offline -----------------


def _tiny_wav2vec2(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.Wav2Vec2Config(hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                                      intermediate_size=32, conv_dim=(8, 8), conv_stride=(5, 4),
                                      conv_kernel=(10, 8), num_conv_pos_embeddings=8,
                                      num_conv_pos_embedding_groups=2, feat_extract_norm="layer")
    config_dir = tmp_path / "w2v"
    cfg.save_pretrained(config_dir)  # the config only, as VAVL's checkpoint needs
    net = transformers.Wav2Vec2Model(cfg)
    net.encoder.layers = net.encoder.layers[:2]
    ckpt = tmp_path / "final_wav2vec.pt"
    torch.save(net.state_dict(), ckpt)
    return config_dir, ckpt, net


def test_vavl_checkpoint_over_a_local_config(tmp_path):
    import hashlib

    from study.data.features.audio import Wav2Vec2Extractor
    config_dir, ckpt, net = _tiny_wav2vec2(tmp_path)
    x = Wav2Vec2Extractor(str(config_dir), layer=2, checkpoint=str(ckpt))
    assert x.sha256 == hashlib.sha256(ckpt.read_bytes()).hexdigest() and "sha256=" in x.name
    for name, p in net.state_dict().items():
        assert torch.equal(x.net.state_dict()[name], p), name
    out = x([np.random.default_rng(0).standard_normal(8000).astype(np.float32)])
    assert out[0].shape[1] == 16
    with pytest.raises(ValueError, match="does not fit"):
        Wav2Vec2Extractor(str(config_dir), layer=3, checkpoint=str(ckpt))  # 3 layers vs 2 saved


def test_training_set_zscore_and_the_12_second_cut():
    from study.data.features.audio import SAMPLE_RATE, WaveformOptions, waveform_stats
    rng = np.random.default_rng(0)
    waves = [rng.normal(0.1, 0.5, SAMPLE_RATE * 14).astype(np.float32), rng.normal(0.1, 0.5, 800)]
    mean, std = waveform_stats(waves)
    joined = np.concatenate(waves).astype(np.float64)
    assert np.isclose(mean, joined.mean()) and np.isclose(std, joined.std())
    out = WaveformOptions("training", (mean, std), 12.0).apply(waves[0], model_normalizes=True)
    assert len(out) == 12 * SAMPLE_RATE
    assert np.allclose(out, (waves[0][:12 * SAMPLE_RATE] - mean) / (std + 1e-6), atol=1e-5)
    per_utt = WaveformOptions().apply(waves[1], model_normalizes=True)
    assert abs(per_utt.mean()) < 1e-4 and len(per_utt) == 800


def test_offline_hub_name_fails_at_once(monkeypatch, tmp_path):
    from study.data.features.audio import ModelUnavailable, check_audio_model
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    start = time.perf_counter()
    with pytest.raises(ModelUnavailable, match="--audio-model"):
        check_audio_model("facebook/wav2vec2-large-robust")
    assert time.perf_counter() - start < 5.0
