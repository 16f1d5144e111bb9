"""The `avstudy` console entry point (main(argv))."""
from __future__ import annotations

import json

import pandas as pd

from study.cli import main


def test_synth_train_describe(tmp_path, capsys):
    data = tmp_path / "d"
    assert main(["data", "synth", "--scale", "tiny", "--seed", "1", "--out", str(data)]) == 0
    assert "360 utterances" in capsys.readouterr().out
    cfg = tmp_path / "c.yaml"
    cfg.write_text("preset: tiny\nlr: 0.002\nmax_epochs: 2\ntrain_missing_rate: 0.5\n")
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--config", str(cfg), "--set", "fusion=gated",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "epoch   2" in printed and "audio_only" in printed and "video_only" in printed
    record = json.loads((out / "record.json").read_text())
    assert record["config"]["fusion"] == "gated" and record["protocol"]["train_missing_rate"] == 0.5
    rows = pd.read_parquet(out / "record.parquet")
    assert set(rows["split"]) == {"dev", "test"} and "miss_0.9" in set(rows["condition"])
    assert (out / "session.pt").exists()


def test_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert main(["data", "describe", str(tmp_path)]) == 2
    assert "dataset.json: missing" in capsys.readouterr().err
    data = tmp_path / "d"
    main(["data", "synth", "--scale", "tiny", "--out", str(data)])
    assert main(["train", "--data", str(data), "--set", "lr=-1"]) == 2
    assert "lr > 0" in capsys.readouterr().err
    assert main(["train", "--data", str(data), "--set", "nope=1"]) == 2
    assert "unknown config keys ['nope']" in capsys.readouterr().err
