"""Where a study's state lives, and how it is written safely.

- `StudyLock`: one writer per study directory. A second `sweep` on a directory in use refuses,
  naming the holder; the lock is an fcntl lock on `STUDY_DIR/.lock`, so a crashed driver's lock
  is released by the kernel and the next run takes it over (the file itself is only a note).
- `optuna_storage`: the Optuna storage of a study: sqlite in STUDY_DIR (WAL, so readers such as
  optuna-dashboard never lock out the writer, and a busy timeout), an RDB URL, or a journal file.
- `atomic_write_text`: write-then-rename, so a reader sees the old file or the new, never half.
- `StudyMirror`: with `storage: s3://...` (any pyarrow filesystem URI), the study's own files
  (spec, study.json, results, curves, parts, stage markers, progress, a snapshot of optuna.db,
  the report) are copied beside Ray's files, each as one object (an S3 PUT is atomic: a reader
  sees the old object or the new). `--resume` on a new head pulls them back first.
"""


from __future__ import annotations

import datetime as dt
import fcntl
import fnmatch
import json
import os
import posixpath
import socket
import sqlite3
import tempfile
from pathlib import Path

from study import vocab
from study.fsio import atomic_write_bytes

SQLITE_TIMEOUT_S = 60  # a writer waits this long for a reader's lock before giving up


class StudyInUse(ValueError):
    """Another process is running a sweep on the same study directory (a ValueError, so the
    CLI prints the message without a traceback)."""


class StudyLock:
    """Exclusive lock on a study directory for the lifetime of one driver."""

    def __init__(self, study_dir: str | Path):
        self.path = Path(study_dir) / ".lock"
        self._fd: int | None = None

    def acquire(self) -> StudyLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_note(fd)
            os.close(fd)
            raise StudyInUse(
                f"{self.path.parent} is in use by another sweep ({holder}); wait for it to "
                f"finish or stop it, then run again (with --resume to continue)") from None
        # the lock is free: any note left in the file is from a driver that died (stale)
        os.ftruncate(fd, 0)
        note = {"pid": os.getpid(), "host": socket.gethostname(),
                "since": dt.datetime.now(dt.timezone.utc).isoformat()}
        os.write(fd, json.dumps(note).encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StudyLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_note(fd: int) -> str:
    try:
        note = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        note = {}
    if not note:
        return "holder unknown"
    return f"pid {note.get('pid')} on {note.get('host')} since {note.get('since')}"


def sqlite_wal(db: str | Path) -> str:
    """Put the sqlite file in WAL mode (persistent in the file) and return its URL."""
    db = Path(db)
    db.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(db, timeout=SQLITE_TIMEOUT_S)
    try:
        con.execute("PRAGMA journal_mode=WAL")
    finally:
        con.close()
    return f"sqlite:///{db}"


def optuna_storage(url: str | None, study_dir: str | Path):
    """The Optuna storage of a study (spec `optuna_storage`; None = STUDY_DIR/optuna.db)."""
    import optuna

    if url and url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url[len("journal:"):]))
    if url and not url.startswith("sqlite:"):
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    if url:
        db = url[len("sqlite:///"):]
    else:
        db = str(Path(study_dir) / "optuna.db")
    return optuna.storages.RDBStorage(sqlite_wal(db), engine_kwargs={
        "connect_args": {"timeout": SQLITE_TIMEOUT_S}})


# ----------------------------------------------------------------------------- remote copies


def join_uri(uri: str, *parts: str) -> str:
    """`uri` with path parts appended, keeping a query string (`?endpoint_override=...`) last."""
    base, sep, query = uri.partition("?")
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)]) + sep + query


# what a study needs to be reported and resumed from the bucket alone (globs under STUDY_DIR);
# not Ray's files (under ray/, already in the bucket), the lock or the local log
MIRRORED = vocab.MIRRORED


class StudyMirror:
    """A copy of a study's own files at a remote URI (s3://bucket/prefix/NAME, or any pyarrow
    filesystem URI). `push` uploads what changed since the last push; `pull` brings a study
    back onto a new head. Picklable (Tune pickles the callback that holds it)."""

    def __init__(self, study_dir: str | Path, remote: str):
        self.dir, self.remote = Path(study_dir), remote
        self._pushed: dict[str, tuple] = {}
        self._fs = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fs": None}

    def _remote(self, rel: str = "") -> tuple:
        import pyarrow.fs as pafs

        if self._fs is None:
            self._fs, self._root = pafs.FileSystem.from_uri(self.remote)
        return self._fs, posixpath.join(self._root, rel) if rel else self._root

    def local_files(self) -> list[str]:
        found = set()
        for pattern in MIRRORED:
            found.update(str(p.relative_to(self.dir)) for p in self.dir.glob(pattern) if p.is_file())
        return sorted(found)

    def push(self) -> int:
        """Upload every mirrored file that changed; returns how many were uploaded."""
        n = 0
        for rel in self.local_files():
            stamp = _stamp(self.dir / rel)
            if self._pushed.get(rel) == stamp:
                continue
            _put(*self._remote(rel), _snapshot(self.dir / rel))
            self._pushed[rel] = stamp
            n += 1
        return n

    def holds_study(self) -> bool:
        import pyarrow.fs as pafs

        fs, path = self._remote("spec.yaml")
        return fs.get_file_info(path).type == pafs.FileType.File

    def remote_files(self) -> list[str]:
        """Mirrored files at the remote (one listing per folder: never Ray's many files)."""
        import pyarrow.fs as pafs

        fs, root = self._remote()
        rels = []
        for folder in sorted({posixpath.dirname(p) for p in MIRRORED}):
            where = posixpath.join(root, folder) if folder else root
            infos = fs.get_file_info(pafs.FileSelector(where, allow_not_found=True))
            rels += [posixpath.relpath(i.path, root) for i in infos if i.type == pafs.FileType.File]
        return sorted(r for r in rels if any(fnmatch.fnmatchcase(r, p) for p in MIRRORED))

    def read(self, rel: str) -> bytes | None:
        """One remote file's bytes, or None where there is none."""
        import pyarrow.fs as pafs

        fs, path = self._remote(rel)
        if fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with fs.open_input_stream(path) as f:
            return f.read()

    def pull(self) -> int:
        """Download every mirrored file into STUDY_DIR (a new head's empty working copy)."""
        rels = self.remote_files()
        for rel in rels:
            data = self.read(rel)
            dst = atomic_write_bytes(self.dir / rel, data)
            self._pushed[rel] = _stamp(dst)
        return len(rels)


def _stamp(path: Path) -> tuple:
    """What tells a changed file: size and mtime, and for sqlite its write-ahead log's too (in
    WAL mode a commit touches only the -wal file until a checkpoint)."""
    files = [path, path.with_name(path.name + "-wal")] if path.suffix == ".db" else [path]
    return tuple((st.st_size, st.st_mtime_ns) for st in (f.stat() for f in files if f.exists()))


def _snapshot(path: Path) -> bytes:
    """The file's bytes; for a sqlite database a consistent copy (the backup API, WAL-safe)."""
    if path.suffix != ".db":
        return path.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / path.name
        src, dst = sqlite3.connect(path, timeout=SQLITE_TIMEOUT_S), sqlite3.connect(copy)
        try:
            src.backup(dst)
        finally:
            src.close()
            dst.close()
        return copy.read_bytes()


def _put(fs, path: str, data: bytes) -> None:
    """One atomic write: an object store's PUT is; a local filesystem gets write-then-rename."""
    parent = posixpath.dirname(path)
    if fs.type_name == "local":
        fs.create_dir(parent, recursive=True)
        tmp = posixpath.join(parent, f".{posixpath.basename(path)}.{os.getpid()}.tmp")
        with fs.open_output_stream(tmp) as f:
            f.write(data)
        fs.move(tmp, path)
        return
    with fs.open_output_stream(path) as f:
        f.write(data)
