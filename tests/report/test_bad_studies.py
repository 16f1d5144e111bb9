"""Damaged studies seen by `report` and `report --index` (issue 26's bad-input cases): a
results.parquet that lacks a contract column, one that is not parquet at all, and a study whose
every dev score is NaN. Each is a clear error or an honest page; the other studies of an index are
listed as usual, and no study file is changed."""
from __future__ import annotations

import argparse
import hashlib
import html
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fake_results import FakeStudy, write_study

from reports import cli
from reports.build import write_report


def _report(*argv) -> int:
    parser = argparse.ArgumentParser(prog="avstudy")
    cli.add_subparser(parser.add_subparsers(dest="command"))
    return cli.run(parser.parse_args(["report", *map(str, argv)]))


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _drop_column(study: Path, column: str) -> None:
    res = pd.read_parquet(study / "results.parquet")
    res.drop(columns=[column]).to_parquet(study / "results.parquet", index=False)


def _index_rows(text: str) -> dict[str, str]:
    """study name -> the text of its index row (tags stripped)."""
    rows = re.findall(r"<tr>(.*?)</tr>", text, flags=re.S)
    out = {}
    for r in rows:
        cells = [html.unescape(re.sub(r"<[^>]+>", "", c)).strip()
                 for c in re.findall(r"<td[^>]*>(.*?)</td>", r, flags=re.S)]
        if cells:  # report link, study, status, warnings, best, ...
            out[cells[1]] = " | ".join(cells[1:])
    return out


def test_report_on_a_results_file_that_lacks_a_column_fails_naming_it(tmp_path, capsys):
    study = write_study(tmp_path / "s", FakeStudy(n_trials=6))
    _drop_column(study, "split")
    before = _sha(study / "results.parquet")
    assert _report(study, "--out", tmp_path / "r.html") == 1
    err = capsys.readouterr().err
    assert "results.parquet" in err and "'split'" in err
    assert not (tmp_path / "r.html").exists()
    assert _sha(study / "results.parquet") == before


def test_index_lists_broken_studies_as_broken_and_the_rest_as_usual(tmp_path, capsys):
    root = tmp_path / "root"
    write_study(root / "good", FakeStudy(name="good-study", n_trials=8, seed=1))
    _drop_column(write_study(root / "nocol", FakeStudy(name="nocol-study", n_trials=8, seed=2)), "condition")
    corrupt = write_study(root / "corrupt", FakeStudy(name="corrupt-study", n_trials=8, seed=3))
    (corrupt / "results.parquet").write_bytes(b"PAR1 not really parquet")
    assert _report("--index", root) == 0
    rows = _index_rows((root / "index.html").read_text())
    assert set(rows) == {"good-study", "nocol-study", "corrupt-study"}
    assert rows["good-study"].startswith("good-study | finished |  | ")  # no warning, then its best
    assert "broken" not in rows["good-study"] and re.search(r"\| 0\.\d{4} \|", rows["good-study"])
    assert "broken" in rows["nocol-study"] and "'condition'" in rows["nocol-study"]
    assert "broken" in rows["corrupt-study"] and "could not be read" in rows["corrupt-study"]
    for name in ("nocol-study", "corrupt-study"):                    # never "finished, 0 trials"
        assert rows[name].startswith(f"{name} | broken | broken: results.parquet could not be read")
    assert (corrupt / "results.parquet").read_bytes() == b"PAR1 not really parquet"


def test_all_nan_dev_scores_say_so_instead_of_no_scores_yet(tmp_path):
    study = write_study(tmp_path / "s", FakeStudy(n_trials=6, final=False))
    res = pd.read_parquet(study / "results.parquet")
    n_dev = int(((res["split"] == "dev") & res["condition"].notna()).sum())
    res["macro_f1"] = np.nan
    res.to_parquet(study / "results.parquet", index=False)
    text = write_report(study, tmp_path / "r.html").read_text()
    assert "every dev macro_f1 score is NaN or missing" in text
    assert f"{n_dev} dev rows" in text and "0 with a score" in text
    assert "No trial has reported dev scores yet" not in text
    empty = write_study(tmp_path / "e", FakeStudy(n_trials=6, final=False))
    res = pd.read_parquet(empty / "results.parquet")
    res[res["split"] != "dev"].to_parquet(empty / "results.parquet", index=False)
    assert "No trial has reported dev scores yet" in write_report(empty, tmp_path / "e.html").read_text()
