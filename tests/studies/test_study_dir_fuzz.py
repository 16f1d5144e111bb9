"""Fuzzing study directories: each file under STUDY_DIR truncated, deleted or replaced with
foreign content, then `report`, `status`, `export-best` and `sweep --resume` (at the level of
reading the spec and study.json back) run through the CLI entry point. Every case is a clear error
(exit 1 or 2, a message on stderr naming the file) or a correct result, never a traceback, and no
file under STUDY_DIR is changed (hashes before/after)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from study.cli import main
from tests.fake_results import FakeStudy, write_study

FILES = ("study.json", "spec.yaml", "results.parquet", "curves.parquet")
FOREIGN = {"bytes": b"\x00\xff\x13garbage\x89PNG", "json_list": b"[1, 2, 3]",
           "json_obj": b'{"name": 3, "objectives": "x", "status": []}', "yaml": b"- a\n- b: [\n",
           "empty": b""}


@pytest.fixture(scope="session")
def finished(tmp_path_factory) -> Path:
    cfg = FakeStudy(fusions=("late", "vavl"), n_trials=6, n_failed=1, train_rates=(0.0,), seeds=(0, 1),
                    final=False)
    return write_study(tmp_path_factory.mktemp("fuzz") / "study", cfg)


def _hashes(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def _commands(d: Path, out: Path) -> dict[str, list[str]]:
    return {"report": ["report", str(d), "--out", str(out / "r.html")],
            "status": ["status", str(d)],
            "export-best": ["export-best", str(d), "--stage", "search", "--out", str(out / "b e.yaml")]}


def _check(argv: list[str], d: Path, capsys, damaged: str | None) -> int:
    before = _hashes(d)
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse
        rc = exc.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert rc in (0, 1, 2), (argv, rc, err)
    if rc != 0:
        assert err.strip(), argv
        if damaged is not None:
            assert damaged in err or str(d) in err, (argv, err)
    assert _hashes(d) == before, f"{argv}: a file under STUDY_DIR changed"
    return rc


def _damage(d: Path, name: str, how: str) -> None:
    p = d / name
    if how == "delete":
        p.unlink(missing_ok=True)
    elif how == "truncate":
        data = p.read_bytes() if p.exists() else b""
        p.write_bytes(data[: len(data) // 3])
    else:
        p.write_bytes(FOREIGN[how])


@pytest.mark.parametrize("how", ["delete", "truncate", *FOREIGN])
@pytest.mark.parametrize("name", FILES)
def test_damaged_file(finished, tmp_path, capsys, name, how):
    d = tmp_path / "study"
    shutil.copytree(finished, d)
    _damage(d, name, how)
    for cmd, argv in _commands(d, tmp_path).items():
        if cmd == "report" and name == "curves.parquet" and how == "delete":
            pass  # a study without curves is a valid study
        _check(argv, d, capsys, name)


def test_the_intact_study_works_and_quotes_its_reproduce_command(finished, tmp_path, capsys):
    d = tmp_path / "study"
    shutil.copytree(finished, d)
    for argv in _commands(d, tmp_path).values():
        assert _check(argv, d, capsys, None) == 0
    main(["export-best", str(d), "--stage", "search", "--out", str(tmp_path / "b e.yaml")])
    out = capsys.readouterr().out
    assert f"--config '{tmp_path / 'b e.yaml'}'" in out
    assert "--config 'b e.yaml'" in (tmp_path / "b e.yaml").read_text()   # the file's own header


def test_resume_reads_a_damaged_spec_as_a_clear_error(tmp_path):
    """`sweep --resume` first reads STUDY_DIR/spec.yaml back (prepare_study_dir): a damaged one
    is a SpecError naming it (exit 2), and it is left as it was."""
    from study.runs.spec import SpecError, spec_from_dict
    from study.runs.stages import prepare_study_dir

    spec = spec_from_dict({"name": "s", "dataset": {"synth": {"scale": "tiny"}}, "model_preset": "tiny",
                           "spaces": ["optimisation_tiny"]})
    for how in ("truncate", *FOREIGN):
        d = tmp_path / how
        prepare_study_dir(spec, d, resume=False)
        prepare_study_dir(spec, d, resume=True)           # the intact spec resumes
        _damage(d, "spec.yaml", how)
        before = _hashes(d)
        with pytest.raises(SpecError, match="spec.yaml"):
            prepare_study_dir(spec, d, resume=True)
        assert _hashes(d) == before


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["study.json", "results.parquet"]), cut=st.floats(0, 1),
       junk=st.binary(max_size=64))
def test_random_truncation_and_junk(finished, tmp_path_factory, capsys, name, cut, junk):
    d = tmp_path_factory.mktemp("h") / "study"
    shutil.copytree(finished, d)
    data = (d / name).read_bytes()
    (d / name).write_bytes(data[: int(len(data) * cut)] + junk)
    for cmd in ("status", "export-best"):
        _check(_commands(d, d.parent)[cmd], d, capsys, name)


def test_export_best_names_the_file_for_a_garbled_config_column(finished, tmp_path, capsys):
    import pandas as pd

    d = tmp_path / "study"
    shutil.copytree(finished, d)
    df = pd.read_parquet(d / "results.parquet")
    df["config"] = "{not json"
    df.to_parquet(d / "results.parquet", index=False)
    assert _check(_commands(d, tmp_path)["export-best"], d, capsys, "results.parquet") == 1
