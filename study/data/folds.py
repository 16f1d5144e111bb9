"""Folds: several train/dev/test partitions of one extracted dataset, without re-extraction.

A fold is a *resplit dataset*: a directory with its own `manifest.parquet` (the parent's rows,
a new `split`) and `dataset.json` (the parent's, plus `features_dir`, the relative path to the
parent's Arrow files, and `provenance.resplit`: parent, partition, fold). No feature byte is
copied; `open_dataset` reads the parent's `audio.arrow`/`video.arrow` through `features_dir`.

Two ways to get K folds (a study's `dataset.folds`, `FoldsSpec`):
- made from one dataset: `{by: speaker|session, k: K, seed: S, dev: next|train|test}`. The
  speakers (or sessions: the manifest's `session` column, else `fold`) are cut into K disjoint
  test groups; fold i tests group i. With K equal to the number of groups they are taken in
  sorted order (leave-one-group-out: fold i tests the i-th session), else shuffled with `seed`.
  dev: `next` = group i+1 (train/dev/test group-disjoint); `train` = a seeded `dev_share` of
  the training groups' utterances (every training speaker stays in training: IEMOCAP's standard
  leave-one-session-out with 8 training speakers); `test` = the test group itself (Foal-Net's
  protocol: selection sees test, and every result is labelled "selected on test").
- listed: `[A, B, ...]`, one dataset directory or partition CSV per fold. A partition CSV has an
  utterance column (`utt_id`, or `FileName` as in VAVL's `label_consensus_N.csv`, extension
  dropped) and a split column (`split`, or `Split_Set`: Train/Development/Test); its rows are the
  fold's utterances (labels stay the dataset's).

Checks (FoldError names what is at fault): inside a fold no speaker (or session) is in two
splits (except dev with `dev: train`/`test`); across folds no speaker (or session) is tested
twice; a partition naming utterances the dataset lacks; k above the number of groups.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

BY = ("speaker", "session")
DEV = ("next", "train", "test")  # dataset.json dev_from: speakers | train | test
DEV_FROM = {"next": "speakers", "train": "train", "test": "test"}
FOLDS_VERSION = 1


class FoldError(ValueError):
    """Folds that cannot be made or used; the message names the fold, file or key at fault."""


@dataclass(frozen=True)
class FoldsSpec:
    """A study's folds: made (`by`, `k`, ...) or listed (`entries`)."""
    by: str | None = None            # speaker | session: made from the study's dataset
    k: int = 0
    seed: int = 0
    dev: str = "next"                # next | train | test (see the module docstring)
    dev_share: float = 0.2           # dev: train only
    entries: tuple[str, ...] = ()    # listed: one dataset directory or partition CSV per fold

    @property
    def n(self) -> int:
        return len(self.entries) or self.k

    @property
    def selected_on_test(self) -> bool:
        return self.dev == "test"

    def to_dict(self):
        """The spec's YAML form: a list, or the mapping (defaults left out)."""
        if self.entries:
            return list(self.entries)
        d = {"by": self.by, "k": self.k, "seed": self.seed, "dev": self.dev}
        if self.dev == "train":
            d["dev_share"] = self.dev_share
        return d

    def describe(self) -> str:
        if self.entries:
            return f"{self.n} listed folds"
        dev = {"next": f"dev = the next {self.by} group",
               "train": f"dev = {self.dev_share:g} of the training {self.by}s' utterances",
               "test": "dev = the test group (selected on test)"}[self.dev]
        return f"{self.k} {self.by}-disjoint folds (seed {self.seed}; {dev})"


def folds_from_dict(value, where: str = "dataset.folds") -> FoldsSpec:
    """Validate the spec's `folds` value (a list or a mapping) into a FoldsSpec."""
    if isinstance(value, (list, tuple)):
        if len(value) < 2 or not all(isinstance(v, str) and v for v in value):
            raise FoldError(f"{where}: a list needs two or more dataset directories or partition "
                            f"CSVs (strings), got {value!r}"[:400])
        if len(set(value)) != len(value):
            raise FoldError(f"{where}: {sorted({v for v in value if value.count(v) > 1})} listed twice")
        return FoldsSpec(entries=tuple(value))
    if not isinstance(value, dict):
        raise FoldError(f"{where}: expected {{by: speaker|session, k: K}} or a list of datasets / "
                        f"partition CSVs, got {type(value).__name__}")
    allowed = ("by", "k", "seed", "dev", "dev_share")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise FoldError(f"{where}: unknown key(s) {unknown}; allowed: {list(allowed)}")
    if value.get("by") not in BY:
        raise FoldError(f"{where}.by: {value.get('by')!r} not one of {list(BY)}")
    for key in ("k", "seed"):
        v = value.get(key, 0 if key == "seed" else None)
        if not isinstance(v, int) or isinstance(v, bool):
            raise FoldError(f"{where}.{key}: expected an integer, got {v!r}")
    if value["k"] < 2:
        raise FoldError(f"{where}.k: needs at least 2 folds, got {value['k']}")
    if value.get("dev", "next") not in DEV:
        raise FoldError(f"{where}.dev: {value.get('dev')!r} not one of {list(DEV)}")
    share = value.get("dev_share", 0.2)
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share < 1:
        raise FoldError(f"{where}.dev_share: expected a number in (0, 1), got {share!r}")
    if "dev_share" in value and value.get("dev", "next") != "train":
        raise FoldError(f"{where}.dev_share: only used with dev: train")
    return FoldsSpec(by=value["by"], k=value["k"], seed=value.get("seed", 0),
                     dev=value.get("dev", "next"), dev_share=float(share))


def is_partition_file(entry: str) -> bool:
    return entry.lower().endswith(".csv")


# ----------------------------------------------------------------------------- partitions


def read_partition(path: str | Path) -> pd.DataFrame:
    """A partition CSV -> DataFrame(utt_id, split) (see the module docstring)."""
    from study.data.corpora.common import line_of, normalise_split, read_csv

    path = Path(path)
    raw = read_csv(path, [])
    cols = list(raw.columns)
    id_col = next((c for c in ("utt_id", "FileName") if c in cols), None)
    split_col = next((c for c in ("split", "Split_Set") if c in cols), None)
    if id_col is None or split_col is None:
        raise FoldError(f"{path}: a partition file needs an utterance column (utt_id or FileName) "
                        f"and a split column (split or Split_Set); header is {cols}")
    ids = [Path(str(f).strip()).stem if id_col == "FileName" else str(f).strip()
           for f in raw[id_col]]
    out = pd.DataFrame({"utt_id": ids, "split": [
        normalise_split(v, f"{path}: {line_of(raw, i)}") for i, v in enumerate(raw[split_col])]})
    dup = np.flatnonzero(out["utt_id"].duplicated().to_numpy())
    if len(dup):
        raise FoldError(f"{path}: {line_of(raw, int(dup[0]))}: utterance "
                        f"{out['utt_id'].iloc[dup[0]]!r} appears twice")
    return out


def apply_partition(manifest: pd.DataFrame, part: pd.DataFrame, where: str) -> pd.DataFrame:
    """The manifest's rows named by the partition, with its split (other rows are left out)."""
    known = set(manifest["utt_id"].astype(str))
    unknown = [u for u in part["utt_id"] if u not in known]
    if unknown:
        raise FoldError(f"{where}: {len(unknown)} utterance(s) are not in the dataset, e.g. "
                        f"{unknown[:5]}")
    split = dict(zip(part["utt_id"], part["split"]))
    sub = manifest[manifest["utt_id"].astype(str).isin(split)].copy()
    sub["split"] = sub["utt_id"].astype(str).map(split)
    return sub.reset_index(drop=True)


# ----------------------------------------------------------------------------- made folds


def group_column(manifest: pd.DataFrame, by: str, where: str) -> str:
    if by == "speaker":
        return "speaker"
    for col in ("session", "fold"):
        if col in manifest.columns:
            return col
    raise FoldError(f"{where}: by: session needs a `session` (or `fold`) column in "
                    "manifest.parquet; use by: speaker")


def make_splits(manifest: pd.DataFrame, spec: FoldsSpec, where: str = "dataset.folds"
                ) -> list[pd.DataFrame]:
    """K manifests (each the full manifest with a new `split`), one per fold."""
    col = group_column(manifest, spec.by, where)
    groups = sorted(manifest[col].astype(str).unique())
    if spec.k > len(groups):
        raise FoldError(f"{where}.k: {spec.k} folds but the dataset has only {len(groups)} "
                        f"{spec.by}s ({col!r}); use k <= {len(groups)}")
    if spec.k < len(groups):
        groups = [groups[i] for i in np.random.default_rng(spec.seed).permutation(len(groups))]
    parts = [list(p) for p in np.array_split(np.array(groups, dtype=object), spec.k)]
    key = manifest[col].astype(str)
    out = []
    for i in range(spec.k):
        m = manifest.copy()
        m["split"] = np.where(key.isin(parts[i]), "test", "train")
        if spec.dev == "next":
            m.loc[key.isin(parts[(i + 1) % spec.k]).to_numpy(), "split"] = "dev"
        elif spec.dev == "train":
            train = np.flatnonzero(m["split"].to_numpy() == "train")
            rng = np.random.default_rng([spec.seed, i])
            pick = rng.choice(train, size=max(1, round(spec.dev_share * len(train))), replace=False)
            m.iloc[pick, m.columns.get_loc("split")] = "dev"
        out.append(m)
    return out


def check_folds(manifests: list[pd.DataFrame], names: list[str], dev: str = "next",
                cols: tuple[str, ...] = ("speaker",)) -> None:
    """Inside a fold no speaker (nor, for session folds, session) in two splits (dev counts as
    train with dev: train); across folds none tested twice."""
    for m, name in zip(manifests, names):
        splits = m["split"] if dev == "next" else m["split"].replace({"dev": "train"})
        for col in [c for c in cols if c in m.columns]:
            n = splits.groupby(m[col].astype(str)).nunique()
            shared = sorted(n[n > 1].index)
            if shared:
                raise FoldError(f"{name}: {col}(s) {shared[:5]} are in more than one of its splits "
                                f"({len(shared)} in all); splits must be {col}-disjoint")
    for col in cols:
        seen: dict[str, str] = {}
        for m, name in zip(manifests, names):
            if col not in m.columns:
                continue
            for g in sorted(m.loc[m["split"] == "test", col].astype(str).unique()):
                if g in seen:
                    raise FoldError(f"{seen[g]} and {name} both test {col} {g!r}; each {col} may "
                                    "be tested in one fold only (folds must be disjoint)")
                seen[g] = name


# ----------------------------------------------------------------------------- writing


def _features_of(parent: Path, meta: dict) -> Path:
    """The directory of the Arrow files (a resplit parent points further; never chained)."""
    from study.data.dataset import feature_dir

    return feature_dir(parent, meta)


def write_resplit(parent: str | Path, out: str | Path, manifest: pd.DataFrame,
                  provenance: dict, dev_from: str = "speakers") -> Path:
    """Write OUT/manifest.parquet + OUT/dataset.json over the parent's feature files (no copy).
    `out` must not exist or be empty."""
    parent, out = Path(parent).resolve(), Path(out)
    meta = json.loads((parent / "dataset.json").read_text())
    feats = _features_of(parent, meta)
    out.mkdir(parents=True, exist_ok=True)
    meta = {**meta, "features_dir": os.path.relpath(feats, out.resolve())}
    if dev_from == "speakers":
        meta.pop("dev_from", None)
    else:
        meta["dev_from"] = dev_from
    meta["provenance"] = {**meta.get("provenance", {}),
                          "resplit": {"parent": str(parent), "parent_name": meta.get("name"),
                                      "features": str(feats), **provenance}}
    manifest.reset_index(drop=True).to_parquet(out / "manifest.parquet", index=False)
    (out / "dataset.json").write_text(json.dumps(meta, indent=2))
    return out


def resplit(parent: str | Path, partition: str | Path, out: str | Path,
            overwrite: bool = False) -> Path:
    """`avstudy data resplit`: a new dataset OUT with the partition's split over the parent's
    features (validated by opening it). An existing non-empty OUT is replaced only with
    `overwrite`."""
    from study.data.dataset import open_dataset

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise FileExistsError(f"{out}: exists and is not empty; pass --overwrite to replace it, or "
                              "choose another --out")
    ds = open_dataset(parent, check_values=False)
    sub = apply_partition(ds.manifest, read_partition(partition), str(partition))
    check_folds([sub], [str(partition)])
    out.parent.mkdir(parents=True, exist_ok=True)
    # a sibling of OUT: features_dir, relative, is the same from both
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        write_resplit(parent, tmp, sub, {"partition": str(Path(partition).resolve())})
        open_dataset(tmp, check_values=False)
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


# ----------------------------------------------------------------------------- a study's folds


def folds_home(spec: FoldsSpec, data_dir: str | Path) -> Path:
    """Per-node cache directory of a study's made (or CSV-listed) folds, keyed by what defines
    them: the parent dataset (path, manifest size and time), the fold spec, the CSVs' bytes."""
    parent = Path(data_dir).resolve()
    st = (parent / "manifest.parquet").stat()
    h = hashlib.blake2b(digest_size=8)
    h.update(f"v{FOLDS_VERSION}|{parent}|{st.st_size}:{st.st_mtime_ns}|".encode())
    h.update(json.dumps(spec.to_dict(), sort_keys=True).encode())
    for e in spec.entries:
        if is_partition_file(e):
            h.update(Path(e).expanduser().resolve().read_bytes())
    cache = Path(os.environ.get("AVSTUDY_CACHE", Path.home() / ".cache" / "avstudy"))
    return cache / "folds" / f"{parent.name}-{h.hexdigest()}"


def ensure_folds(spec: FoldsSpec, data_dir: str | Path, home: str | Path | None = None) -> list[str]:
    """The K fold dataset directories of a study, made once per node (file lock; cheap after).
    Listed dataset directories are used as they are; the rest are written under `home` (the
    driver's folds_home, passed to every trial; by default this node's)."""
    if spec.entries and not any(is_partition_file(e) for e in spec.entries):
        return [str(Path(e).expanduser().resolve()) for e in spec.entries]
    home = Path(home) if home is not None else folds_home(spec, data_dir)
    dirs = [str(home / f"fold{i}") if not spec.entries or is_partition_file(e) else
            str(Path(e).expanduser().resolve())
            for i, e in enumerate(spec.entries or [None] * spec.k)]
    if (home / "done.json").exists():
        return dirs
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (home / "done.json").exists():
            _make(spec, data_dir, home)
            (home / "done.json").write_text(json.dumps({"folds": spec.to_dict()}))
    return dirs


def check_study_folds(spec: FoldsSpec, dirs: list[str]) -> None:
    """Once per study (the driver): every fold opens, and the folds are disjoint."""
    from study.data.dataset import open_dataset

    frames = [open_dataset(d, check_values=False).manifest for d in dirs]
    check_folds(frames, _names(spec, dirs), spec.dev, _columns(spec, frames[0]))


def _names(spec: FoldsSpec, dirs: list[str]) -> list[str]:
    return [f"fold {i} ({spec.entries[i] if spec.entries else d})" for i, d in enumerate(dirs)]


def _columns(spec: FoldsSpec, manifest: pd.DataFrame) -> tuple[str, ...]:
    if spec.by == "session":
        return ("speaker", group_column(manifest, "session", "dataset.folds"))
    return ("speaker",)


def _make(spec: FoldsSpec, data_dir: str | Path, home: Path) -> None:
    from study.data.dataset import open_dataset

    base = open_dataset(data_dir, check_values=False).manifest
    if spec.entries:
        items = [apply_partition(base, read_partition(e), f"dataset.folds[{i}] ({e})")
                 if is_partition_file(e) else e for i, e in enumerate(spec.entries)]
    else:
        items = make_splits(base, spec)
    frames = [m if isinstance(m, pd.DataFrame) else open_dataset(m, check_values=False).manifest
              for m in items]
    check_folds(frames, _names(spec, [str(home / f"fold{i}") for i in range(len(items))]),
                spec.dev, _columns(spec, base))
    for i, m in enumerate(items):
        if isinstance(m, pd.DataFrame):
            prov = {"fold": i, "folds": spec.to_dict()}
            if spec.entries:
                prov["partition"] = str(Path(spec.entries[i]).expanduser().resolve())
            write_resplit(data_dir, home / f"fold{i}", m, prov, DEV_FROM[spec.dev])
