"""Where a study's state lives, and how it is written safely.

- `StudyLock`: one writer per study directory. A second `sweep` on a directory in use refuses,
  naming the holder; the lock is an fcntl lock on `STUDY_DIR/.lock`, so a crashed driver's lock
  is released by the kernel and the next run takes it over (the file itself is only a note).
- `optuna_storage`: the Optuna storage of a study: sqlite in STUDY_DIR (WAL, so readers such as
  optuna-dashboard never lock out the writer, and a busy timeout), an RDB URL, or a journal file.
- `atomic_write_text`: write-then-rename, so a reader sees the old file or the new, never half.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
import sqlite3
from pathlib import Path

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


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


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
