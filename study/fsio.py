"""One atomic write for every file a study writes (a leaf: imports nothing of the project).

`atomic_write(path, write)` lets `write` fill a fresh temporary file beside `path`, flushes it to
disk, then renames it over `path`: a reader sees the old file or the new one, never half of
either, and a process killed mid-write leaves the old file intact (and a stray `.NAME.*.tmp`,
which nothing reads). Two writers never share a temporary file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any], suffix: str = ".tmp") -> Path:
    """Write `path` through `write(tmp_path)` and an atomic rename; returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # as an ordinary new file (mkstemp makes it 0600)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, doc: Any, indent: int | None = None) -> Path:
    return atomic_write_text(path, json.dumps(doc, indent=indent))


def atomic_write_parquet(path: str | os.PathLike, df: Any) -> Path:
    """A pandas DataFrame as parquet (no index)."""
    return atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))
