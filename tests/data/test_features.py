"""Feature extraction from generated raw media: decoding, extractors, faces, the full pipeline
(report of bad media, resume, Ray tasks) and one training epoch on the extracted dataset."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rawgen
import torch

from study.data.dataset import open_dataset
from study.data.features.audio import (
    LogMelConfig,
    LogMelExtractor,
    MediaError,
    Wav2Vec2Extractor,
    load_audio,
    mel_filterbank,
)
from study.data.features.extract import ExtractConfig, extract
from study.data.features.video import FaceConfig, FaceCropper, PixelExtractor, read_frames

pytest.importorskip("cv2")
pytest.importorskip("av")
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def w2v(tmp_path_factory) -> Path:
    """A randomly initialised tiny wav2vec2 (stable layer norm, like wav2vec2-large-robust)."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model
    cfg = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
                         num_conv_pos_embedding_groups=2, feat_extract_norm="layer",
                         do_stable_layer_norm=True)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w2v")
    Wav2Vec2Model(cfg).save_pretrained(path)
    return path


# ----------------------------------------------------------------------------- audio


@pytest.mark.parametrize("sr, channels", [(44100, 2), (8000, 1), (22050, 1), (16000, 2)])
def test_load_audio_resamples_to_16k_mono(tmp_path, sr, channels):
    path = rawgen.write_wav(tmp_path / "a.wav", 0.5, sr, channels, freq=440)
    wave = load_audio(path)
    assert wave.dtype == np.float32 and wave.shape == (8000,)
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * 16000 / len(wave) - 440) < 4      # the tone survives


def test_load_audio_from_video_container(tmp_path):
    wave = load_audio(rawgen.write_video(tmp_path / "v.flv", 1.0, fps=5, audio_sr=22050))
    assert abs(len(wave) - 16000) < 2100 and np.abs(wave).max() > 0.1   # AAC priming/padding


def test_bad_audio_is_media_error(tmp_path):
    with pytest.raises(MediaError, match="empty"):
        load_audio(rawgen.write_empty_wav(tmp_path / "e.wav"))
    with pytest.raises(MediaError, match="unreadable"):
        load_audio(rawgen.write_garbage(tmp_path / "g.wav"))
    with pytest.raises(MediaError, match="too short"):
        load_audio(rawgen.write_wav(tmp_path / "s.wav", 0.01, 16000))
    with pytest.raises(MediaError, match="no audio stream"):
        load_audio(rawgen.write_video(tmp_path / "v.avi", 0.3, fps=5, audio_sr=None))


def test_logmel_shape_and_peak():
    cfg = LogMelConfig()
    fb = mel_filterbank(cfg)
    assert fb.shape == (80, 257) and (fb.sum(axis=1) > 0).all()
    wave = rawgen.tone(1.0, 16000, freq=1000)[:, 0]
    feats = LogMelExtractor(cfg)([wave])[0]
    assert feats.shape == (16000 // 320 + 1, 80) and np.isfinite(feats).all()
    centres = (fb * np.linspace(0, 8000, 257)).sum(1) / fb.sum(1)
    assert abs(centres[feats.mean(0).argmax()] - 1000) < 80


@pytest.mark.parametrize("feature_set, dim", [("egemaps", 25), ("compare", 65)])
def test_opensmile_llds_on_tones(feature_set, dim):
    from study.data.features.audio import OpenSmileExtractor
    x = OpenSmileExtractor(feature_set)
    waves = [rawgen.tone(1.0, 16000, freq=f)[:, 0] for f in (220, 440)]
    a, b = x(waves)
    assert x.dim == dim and x.rate_hz == 100 and a.shape[1] == dim and a.dtype == np.float32
    assert abs(len(a) - 100) <= 6 and np.isfinite(a).all()              # 10 ms hop over 1 s
    if feature_set == "egemaps":                                         # F0 in semitones from 27.5 Hz
        f0 = x.columns.index("F0semitoneFrom27.5Hz_sma3nz")
        for feats, freq in ((a, 220), (b, 440)):
            voiced = feats[feats[:, f0] > 0, f0]
            assert len(voiced) > 50 and abs(np.median(voiced) - 12 * np.log2(freq / 27.5)) < 0.5


def test_wav2vec2_layers_frames_and_padding(w2v):
    waves = [rawgen.tone(0.7, 16000, 300)[:, 0], rawgen.tone(0.4, 16000, 500, seed=1)[:, 0]]
    x1 = Wav2Vec2Extractor(str(w2v), layer=1)
    x2 = Wav2Vec2Extractor(str(w2v), layer=None)
    a, b = x1(waves), x2(waves)
    assert [f.shape for f in a] == [(34, 32), (19, 32)] and x1.dim == 32
    assert not np.allclose(a[0], b[0])                                  # the layer matters
    padded = x1._forward(waves)                                         # one padded batch
    np.testing.assert_allclose(padded[1], a[1], atol=2e-4)
    with pytest.raises(ValueError, match="2 transformer layers"):
        Wav2Vec2Extractor(str(w2v), layer=3)


# ----------------------------------------------------------------------------- video


@pytest.mark.parametrize("detector", ["dlib", "haar"])
def test_face_detector_sees_the_drawn_face_only(detector):
    import cv2
    if detector == "haar" and not hasattr(cv2, "CascadeClassifier"):
        pytest.skip(f"OpenCV {cv2.__version__} has no Haar cascades")
    cropper = FaceCropper(FaceConfig(detector=detector))
    for cx in (60, 80, 100):
        box = cropper._detect(rawgen.face_frame(cx=cx))
        assert box is not None and abs(box[0] + box[2] / 2 - cx) < 10
    assert cropper._detect(rawgen.face_frame(face=False)) is None


def test_haar_without_opencv4_is_a_clear_error(monkeypatch):
    import cv2
    monkeypatch.delattr(cv2, "CascadeClassifier", raising=False)       # as in OpenCV 5
    with pytest.raises(ImportError, match=r"needs OpenCV 4.*--face-detector dlib"):
        FaceCropper(FaceConfig(detector="haar"))
    FaceCropper(FaceConfig(detector="dlib"))                            # the default still works


def test_yunet_reads_a_user_supplied_model(tmp_path):
    with pytest.raises(ValueError, match="--face-model FILE"):
        FaceCropper(FaceConfig(detector="yunet"))
    with pytest.raises(FileNotFoundError, match="no such file"):
        FaceCropper(FaceConfig(detector="yunet", model=str(tmp_path / "yunet.onnx")))
    with pytest.raises(ValueError, match="choose one of"):
        FaceCropper(FaceConfig(detector="mtcnn"))


def test_landmarks_follow_the_drawn_mouth():
    from study.data.features.video import LandmarkExtractor
    cropper, lm = FaceCropper(), LandmarkExtractor()
    frames = np.stack([rawgen.face_frame(240, 320, scale=1.6, mouth=m) for m in (0.7, 1.0, 1.6)])
    crops = cropper.crops(frames, lm.crop_size)
    pts = lm(crops).reshape(3, 68, 2)                                    # (T, 68, x/y) in crop units
    assert lm.dim == 136 and np.isfinite(pts).all() and ((pts > -0.1) & (pts < 1.1)).all()
    width = pts[:, 48:68, 0].max(1) - pts[:, 48:68, 0].min(1)           # mouth points 49-68
    assert width[0] < width[1] < width[2]
    box = cropper.boxes(frames[1:2])[0]
    drawn = 2 * 14 * 1.6 / (max(box[2:]) * 1.3)                        # mouth width / crop side
    assert abs(width[1] - drawn) < 0.05
    eyes = pts[:, 36:48].mean(1)                                         # the eyes do not move
    np.testing.assert_allclose(eyes, eyes[[1, 1, 1]], atol=0.02)


def test_read_frames_segments_and_fps(tmp_path):
    path = rawgen.write_video(tmp_path / "d.avi", 3.0, fps=10, audio_sr=None)
    frames, fps = read_frames(path)
    assert frames.shape == (30, 120, 160, 3) and fps == 10
    seg, _ = read_frames(path, 1.0, 2.0)
    assert 10 <= len(seg) <= 11
    sub, rate = read_frames(path, max_fps=5)
    assert len(sub) == 15 and rate == 5
    with pytest.raises(MediaError, match="no video frames"):
        read_frames(path, 5.0, 6.0)


def test_crops_fill_frames_without_detection():
    frames = np.stack([rawgen.face_frame(cx=70), rawgen.face_frame(face=False),
                       rawgen.face_frame(cx=90)])
    cropper = FaceCropper()
    boxes = cropper.boxes(frames)
    assert (boxes[1] == boxes[0]).all()                                 # nearest earlier box
    crops = cropper.crops(frames, 48)
    assert crops.shape == (3, 48, 48, 3) and crops.dtype == np.uint8
    feats = PixelExtractor()(crops)
    assert feats.shape == (3, 280) and np.isfinite(feats).all()
    np.testing.assert_allclose(feats[:, 256:].reshape(3, 3, 8).sum(-1), 1.0, atol=1e-6)
    with pytest.raises(MediaError, match="no face"):
        cropper.boxes(frames[1:2])


def test_efficientnet_random_init():
    pytest.importorskip("timm")                          # timm needs a torchvision for this torch
    from study.data.features.video import EfficientNetExtractor
    x = EfficientNetExtractor("none", arch="efficientnet_b0", batch_size=2)
    feats = x(np.zeros((3, x.crop_size, x.crop_size, 3), np.uint8))
    assert feats.shape == (3, x.dim) == (3, 1280)


# ----------------------------------------------------------------------------- pipeline


def _train_one_epoch(data_dir: Path, task: str | None = None) -> dict:
    from study.training.config import config_from_flat
    from study.training.session import Session
    cfg = config_from_flat({"batch_size": 4, "max_epochs": 1}, preset="tiny", data_dir=data_dir,
                           task=task)
    session = Session(cfg, data_dir, device="cpu")
    stats = session.train_epoch()
    assert np.isfinite(stats["train_loss"]) and stats["samples"] > 0
    return stats


def test_cremad_extraction_report_resume_and_training(tmp_path, w2v):
    info = rawgen.make_cremad(tmp_path / "raw", speakers=6, per_speaker=3)
    splits = {str(1001 + s): "Train" for s in range(4)} | {"1005": "Development", "1006": "Test"}
    part = rawgen.write_cremad_partition(tmp_path / "label_consensus_1.csv", info["utts"], splits)
    cfg = ExtractConfig(corpus="crema-d", root=str(tmp_path / "raw"), out=str(tmp_path / "ds"),
                        audio="wav2vec2", audio_model=str(w2v), audio_layer=1, video="pixels",
                        partition=str(part), shard_size=5, threads=1, workers=1, progress=False)
    out = extract(cfg)
    ds = open_dataset(out)
    m = ds.manifest.set_index("utt_id")
    broken = {v: k for k, v in info["broken"].items()}
    assert broken["both bad"] not in m.index                          # dropped, and reported
    assert not m.loc[broken["empty audio"], "has_audio"] and m.loc[broken["empty audio"], "has_video"]
    for case in ("unreadable video", "no face", "no video file"):
        assert m.loc[broken[case], "has_audio"] and not m.loc[broken[case], "has_video"]
    assert m["has_audio"].sum() == 16 and m["has_video"].sum() == 14
    report = pd.read_csv(out / "extraction_report.csv")
    problems = dict(zip(zip(report["utt_id"], report["modality"]), report["problem"]))
    assert problems[(broken["empty audio"], "audio")].startswith("empty audio")
    assert problems[(broken["no face"], "video")].startswith("no face detected")
    assert problems[(broken["no video file"], "video")] == "no video file found"
    assert problems[(broken["both bad"], "both")].startswith("dropped")
    u = m.index[0]
    assert ds.audio(u).shape == (39, 32) and ds.video(u).shape == (8, 280)
    assert ds.meta["audio"]["rate_hz"] == 50 and ds.meta["video"]["rate_hz"] == 10
    assert ds.classes == list(rawgen.CREMA_CLASSES) and len(ds.soft_columns()) == 6
    before = ds.audio(u).copy()

    shards = sorted((out / "shards").glob("shard-*.json"))
    assert len(shards) == 4                                           # 18 utterances / 5
    shards[1].unlink()                                                # as if interrupted there
    extract(cfg)
    again = sorted(p.name for p in (out / "shards").glob("shard-*.json"))
    assert again == ["shard-00000.json", "shard-00002.json", "shard-00003.json", "shard-00004.json"]
    redone = json.loads((out / "shards" / "shard-00004.json").read_text())["utterances"]
    assert len(redone) == 5                                           # only shard 1's utterances
    np.testing.assert_array_equal(open_dataset(out).audio(u), before)
    with pytest.raises(ValueError, match="another --out"):
        extract(ExtractConfig(**{**cfg.__dict__, "audio": "logmel"}))
    _train_one_epoch(out)


def test_iemocap_segments_dimensional_training(tmp_path):
    import argparse

    from study.data.features import cli
    rawgen.make_iemocap(tmp_path / "raw", sessions=3, turns=2)
    parser = argparse.ArgumentParser()
    cli.add_subparser(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["features", "extract", "--corpus", "iemocap", "--root",
                              str(tmp_path / "raw"), "--out", str(tmp_path / "ds"), "--audio",
                              "logmel", "--video", "pixels", "--test-session", "3", "--threads",
                              "1", "--workers", "1", "--no-progress"])
    assert cli.run(args) == 0
    ds = open_dataset(tmp_path / "ds")
    assert ds.meta["provenance"]["config"]["corpus_options"] == {
        "test_session": 3, "merge_excited": True, "task": "categorical"}
    m = ds.manifest
    assert set(m["label"]) == {"neutral", "happy", "sad", "angry"} and len(m) == 10   # fru dropped
    assert m["has_audio"].all() and m["has_video"].all()
    assert {len(ds.video(u)) for u in m["utt_id"]} <= {8, 9}          # 0.8 s segments at 10 fps
    assert ds.audio(m["utt_id"][0]).shape == (41, 80)
    assert ds.dimensions == ["arousal", "valence", "dominance"] and "fold" in m.columns
    _train_one_epoch(tmp_path / "ds", task="dimensional")


def test_mspimprov_through_ray_tasks(tmp_path, ray_session):
    info = rawgen.make_mspimprov(tmp_path / "raw", sessions=3)
    cfg = ExtractConfig(corpus="msp-improv", root=str(tmp_path / "raw"), out=str(tmp_path / "ds"),
                        audio="logmel", video="pixels", partition=str(info["partition"]),
                        shard_size=4, ray=True, progress=False)
    ds = open_dataset(extract(cfg))
    assert len(list((tmp_path / "ds" / "shards").glob("*.json"))) == 3
    assert sorted(ds.manifest["utt_id"]) == sorted(info["utts"])
    assert ds.manifest[["has_audio", "has_video"]].all().all()
    assert ds.classes == [] and ds.manifest["arousal"].between(1, 5).all()


def test_wrong_root_is_one_clear_error(tmp_path):
    part = rawgen.write_cremad_partition(tmp_path / "p.csv", ["1001_DFA_ANG_XX"], {"1001": "Train"})
    (tmp_path / "empty").mkdir()
    cfg = ExtractConfig(corpus="crema-d", root=str(tmp_path / "empty"), out=str(tmp_path / "ds"),
                        audio="logmel", video="pixels", partition=str(part), progress=False)
    with pytest.raises(ValueError, match="none of the 1 utterances"):
        extract(cfg)


def test_parallel_shards_match_one_process_and_record_the_choice(tmp_path):
    """egemaps + landmarks over 2 spawned processes == in-process; dataset.json says what ran."""
    info = rawgen.make_cremad(tmp_path / "raw", speakers=3, per_speaker=2, seconds=0.6, fps=5,
                              broken=False)
    outs = {}
    for workers in (1, 2):
        cfg = ExtractConfig(corpus="crema-d", root=str(tmp_path / "raw"), out=str(tmp_path / f"w{workers}"),
                            audio="egemaps", video="landmarks", shard_size=2, workers=workers,
                            threads=1, progress=False, corpus_options={"seed": 1})
        outs[workers] = open_dataset(extract(cfg))
    one, two = outs[1], outs[2]
    assert len(list((tmp_path / "w2" / "shards").glob("*.json"))) == 3
    assert sorted(two.manifest["utt_id"]) == sorted(info["utts"])
    for u in info["utts"]:
        np.testing.assert_array_equal(one.audio(u), two.audio(u))
        np.testing.assert_array_equal(one.video(u), two.video(u))
    u = info["utts"][0]
    assert two.audio(u).shape[1] == 25 and two.video(u).shape == (3, 136)
    meta = two.meta
    assert meta["audio"]["rate_hz"] == 100 and meta["audio"]["extractor"].endswith("eGeMAPSv02:lld")
    assert meta["video"]["extractor"].startswith("dlib-landmarks68")
    assert meta["provenance"]["extractors"] == {"audio": "egemaps", "video": "landmarks",
                                                "face_detector": "dlib"}
    assert meta["provenance"]["config"]["workers"] == 2


def test_cli_options_come_from_the_corpora_table(monkeypatch, tmp_path):
    """A corpus module added to CORPORA brings its flags; the chosen corpus's land in corpus_options."""
    import argparse
    import types

    from study.data import corpora
    from study.data.corpora import CorpusOption
    from study.data.features import cli
    toy = types.SimpleNamespace(NAME="toy", PARTITION="toy: none", OPTIONS=(
        CorpusOption("window", "--toy-window", "toy: window length", default=3, type=int),))
    monkeypatch.setitem(corpora.CORPORA, "toy", toy)
    parser = argparse.ArgumentParser()
    cli.add_subparser(parser.add_subparsers(dest="cmd"))
    base = ["features", "extract", "--root", "r", "--out", "o"]
    args = parser.parse_args(base + ["--corpus", "toy", "--toy-window", "7"])
    assert cli.config_from_args(args).corpus_options == {"window": 7}
    args = parser.parse_args(base + ["--corpus", "iemocap", "--keep-excited", "--test-session", "2"])
    assert cli.config_from_args(args).corpus_options == {"test_session": 2, "merge_excited": False,
                                                         "task": "categorical"}
    args = parser.parse_args(base + ["--corpus", "crema-d"])
    assert cli.config_from_args(args).corpus_options == {"seed": 0}


def test_help_describes_every_choice(capsys):
    from study.cli import main
    from study.data.features import choices
    with pytest.raises(SystemExit):
        main(["features", "extract", "--help"])
    text = "".join(capsys.readouterr().out.split())                   # argparse wraps lines
    for table in (choices.AUDIO, choices.VIDEO, choices.FACE_DETECTORS):
        for name, what in table.items():
            assert "".join(f"{name}: {what}".split()) in text
    assert "(default:wav2vec2)" in text and "(default:dlib)" in text and "--test-session" in text
    from study.data.features.extractors import AUDIO_BUILDERS, VIDEO_BUILDERS
    assert set(AUDIO_BUILDERS) == set(choices.AUDIO) and set(VIDEO_BUILDERS) == set(choices.VIDEO)


def test_offline_wav2vec2_prints_the_projects_message(tmp_path):
    """HF_HUB_OFFLINE=1 and a model that is not cached: our message, no transformers traceback."""
    import os
    import subprocess
    import sys
    info = rawgen.make_cremad(tmp_path / "raw", speakers=1, per_speaker=1, seconds=0.3, broken=False)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "study.cli", "features", "extract", "--corpus", "crema-d", "--root",
           str(tmp_path / "raw"), "--out", str(tmp_path / "ds"), "--video", "none", "--audio-model",
           "avstudy-tests/not-a-cached-model", "--workers", "1", "--no-progress"]
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root, timeout=300)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text  # runtime: the request is valid, the model is not here
    assert "Traceback" not in text and len(info["utts"]) == 1
    assert "cannot load --audio-model 'avstudy-tests/not-a-cached-model'" in text
    assert "--audio-model DIR" in text and "--audio logmel" in text and "--audio egemaps" in text


def test_workers_default_to_the_cpus_and_one_on_a_gpu(monkeypatch):
    from study.data.features import extract as ex
    monkeypatch.setattr(ex, "_cpu_count", lambda: 8)
    cfg = ExtractConfig(corpus="crema-d", root="r", out="o", device="cpu")
    assert ex.resolve_workers(cfg, n_shards=20) == 8 and ex.resolve_workers(cfg, n_shards=3) == 3
    assert ex.resolve_workers(ExtractConfig(**{**cfg.__dict__, "device": "cuda"}), 20) == 1
    assert ex.resolve_workers(ExtractConfig(**{**cfg.__dict__, "device": "cuda", "workers": 4}), 20) == 4
    with pytest.raises(ValueError, match="--workers 0"):
        ex.resolve_workers(ExtractConfig(**{**cfg.__dict__, "workers": 0}), 20)
