"""Storage access for local directories and URIs (s3://, gs://, file://) through pyarrow.fs."""
from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass

import pandas as pd
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from study.fsio import atomic_write_text

SKIP_DIRS = {"ray", ".git", "__pycache__", "checkpoints"}


@dataclass(frozen=True)
class Location:
    fs: pafs.FileSystem
    path: str  # path inside fs (posix)
    uri: str  # what the user gave, for display

    def join(self, *parts: str) -> Location:
        return Location(self.fs, posixpath.join(self.path, *parts), posixpath.join(self.uri, *parts))


def locate(uri: str | os.PathLike) -> Location:
    uri = str(uri)
    if "://" in uri:
        fs, path = pafs.FileSystem.from_uri(uri)
        return Location(fs, path.rstrip("/") or "/", uri.rstrip("/"))
    path = os.path.abspath(uri)
    return Location(pafs.LocalFileSystem(), path, path)


def exists(loc: Location) -> bool:
    return loc.fs.get_file_info(loc.path).type != pafs.FileType.NotFound


def read_text(loc: Location) -> str:
    with loc.fs.open_input_stream(loc.path) as f:
        return f.read().decode("utf-8")


def read_json(loc: Location) -> dict:
    return json.loads(read_text(loc))


def read_parquet(loc: Location) -> pd.DataFrame:
    return pq.read_table(loc.path, filesystem=loc.fs).to_pandas()


def write_text(loc: Location, text: str) -> None:
    """Write `text` at `loc`: on a local disk through the one atomic write (study/fsio.py: a
    reader, or a process killed mid-write, sees the old file or the new one); an object store's
    upload is atomic itself."""
    if isinstance(loc.fs, pafs.LocalFileSystem):
        atomic_write_text(loc.path, text)
        return
    parent = posixpath.dirname(loc.path)
    if parent:
        loc.fs.create_dir(parent, recursive=True)
    with loc.fs.open_output_stream(loc.path) as f:
        f.write(text.encode("utf-8"))


def _subdirs(loc: Location) -> list[Location]:
    infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, allow_not_found=True))
    dirs = [i for i in infos if i.type == pafs.FileType.Directory and i.base_name not in SKIP_DIRS]
    return [loc.join(i.base_name) for i in sorted(dirs, key=lambda i: i.base_name)]


def find_studies(root: Location, max_depth: int = 3) -> list[Location]:
    """Directories under root (root included) that hold a study.json; does not descend into a study."""
    found, frontier = [], [root]
    for _ in range(max_depth + 1):
        nxt = []
        for loc in frontier:
            if exists(loc.join("study.json")):
                found.append(loc)
            else:
                nxt += _subdirs(loc)
        frontier = nxt
    return found
