"""`avstudy predict`: a model trained on an extracted dataset predicts new clips through the
dataset's extractor and training statistics; bad media is an error per file, the rest predicted."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import rawgen

from study.cli import main
from study.data.features.extract import ExtractConfig, extract


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(dataset dir, model dir) of a tiny model trained 1 epoch on clips extracted with logmel/pixels."""
    root = tmp_path_factory.mktemp("predict")
    info = rawgen.make_cremad(root / "raw", speakers=6, per_speaker=3, broken=False)
    splits = {str(1001 + s): "Train" for s in range(4)} | {"1005": "Development", "1006": "Test"}
    part = rawgen.write_cremad_partition(root / "part.csv", info["utts"], splits)
    cfg = ExtractConfig(corpus="crema-d", root=str(root / "raw"), out=str(root / "ds"), audio="logmel",
                        video="pixels", partition=str(part), threads=1, workers=1, progress=False)
    data = extract(cfg)
    model = root / "model"
    assert main(["train", "--data", str(data), "--set", "preset=tiny", "--set", "max_epochs=1",
                 "--set", "batch_size=4", "--out", str(model)]) == 0
    return data, model


def _clips(tmp_path):
    d = tmp_path / "clips"
    rawgen.write_wav(d / "a.wav", 0.8, 16000)
    rawgen.write_video(d / "a.flv", 0.8, 10)                 # a: wav + flv
    rawgen.write_video(d / "b.flv", 0.8, 10, audio_sr=16000)  # b: a lone video, its own audio
    rawgen.write_garbage(d / "c.wav")                         # c: unreadable
    return d


def test_predicts_every_readable_clip_and_names_the_bad_file(trained, tmp_path, capsys):
    data, model = trained
    out = tmp_path / "pred.csv"
    assert main(["predict", str(_clips(tmp_path)), "--model", str(model), "--data", str(data),
                 "--out", str(out)]) == 0
    table = pd.read_csv(out).set_index("clip")
    probs = table[[f"p_{c}" for c in rawgen.CREMA_CLASSES]]
    assert table.loc["a", "streams"] == "audio+video" and table.loc["b", "streams"] == "audio+video"
    assert np.allclose(probs.loc[["a", "b"]].sum(axis=1), 1.0, atol=1e-5)
    assert table.loc["a", "predicted"] in rawgen.CREMA_CLASSES
    assert pd.isna(table.loc["c", "streams"]) and "c.wav" in table.loc["c", "error"]
    assert probs.loc["c"].isna().all()
    assert "c.wav" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "clips"), "--model", str(model), "--data", str(data),
                 "--out", str(out)]) == 1                     # an existing --out is never replaced


def test_one_stream_goes_through_the_missing_modality_path(trained, tmp_path):
    from study.training.predict import clips_of, load_model, predict_clips
    data, model = trained
    session = load_model(model, data, device="cpu")
    clips = [c for c in clips_of([_clips(tmp_path)]) if c["clip"] == "a"]
    both, audio, video = (predict_clips(session, clips, m).iloc[0] for m in ("av", "audio", "video"))
    assert (audio["streams"], video["streams"]) == ("audio", "video")
    cols = [f"p_{c}" for c in rawgen.CREMA_CLASSES]
    assert not np.allclose(both[cols].astype(float), audio[cols].astype(float))
    assert not np.allclose(audio[cols].astype(float), video[cols].astype(float))


def test_a_synthetic_dataset_has_no_extractor(tmp_path, capsys):
    from study.data.generate import make_corpus
    data = make_corpus(tmp_path / "synth", scale="tiny")
    model = tmp_path / "model"
    assert main(["train", "--data", str(data), "--set", "preset=tiny", "--set", "max_epochs=1",
                 "--out", str(model)]) == 0
    rawgen.write_wav(tmp_path / "x.wav", 0.5, 16000)
    assert main(["predict", str(tmp_path / "x.wav"), "--model", str(model), "--data", str(data)]) == 1
    assert "dataset.json" in capsys.readouterr().err
