"""The console of `avstudy sweep` and `avstudy demo`: one live status table, Ray's noise in a file.

`LiveView` runs in a background thread of the driver and reads only the progress files that
each experiment's `ProgressCallback` writes (study/runs/status.py), plus the stage done-markers.
On a terminal it redraws one table of stages x cells in place (trials done / running / stopped /
failed, best dev score so far, elapsed, ETA); otherwise (a log file, CI) it prints one plain
summary line when something changed, at most every `refresh` seconds, and the table at the end.

`ray_logs_to_file` sends Ray's and Tune's loggers and Python warnings to STUDY_DIR/logs/ray.log
(Tune itself runs with verbose=0); `--verbose` leaves them on the console.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from study.runs.spec import StudySpec, study_paths, study_remote
from study.runs.status import progress_rows

RAY_LOGGERS = ("ray", "ray.tune", "ray.train", "ray.air", "ray.data", "optuna", "mlflow", "wandb")


@dataclass
class Row:
    key: str  # progress file stem (the Tune experiment name)
    stage: str
    cell: str
    total: int  # trials the stage will run


def expected_rows(spec: StudySpec) -> list[Row]:
    """Every experiment a sweep runs, in order, before any has started."""
    from study.runs.results import cell_name, cell_of, cell_slug

    rows = [Row(f"search-{cell_slug(*cell_of(c))}", "search", cell_name(*cell_of(c)),
                spec.budget.trials_per_cell)
            for c in spec.cells.items()]
    folds = spec.dataset.folds.n if spec.dataset.folds is not None else 1
    rows.append(Row("rerun", "rerun", "top-k x seeds" + (f" x {folds} folds" if folds > 1 else ""),
                    len(spec.cells.items()) * spec.top_k * len(spec.seeds) * folds))
    return rows


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class LiveView:
    """Background-thread status view of one study (see the module docstring)."""

    HEARTBEAT_S = 300.0
    HEAD = ("stage", "cell", "done", "running", "stopped", "failed", "best", "elapsed", "eta")

    def __init__(self, spec: StudySpec, study_dir: Path, stream: TextIO | None = None,
                 refresh: float | None = None, tty: bool | None = None, clock=time.monotonic):
        self.spec, self.dir = spec, Path(study_dir)
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.refresh = refresh if refresh is not None else (1.0 if self.tty else 30.0)
        self.clock = clock
        self.rows = expected_rows(spec)
        self.t0 = clock()
        self.started: dict[str, float] = {}  # experiment -> when its first trial was seen
        self.ended: dict[str, float] = {}
        self._drawn = 0  # lines of the last in-place table
        self._last_state: tuple | None = None
        self._last_write = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- state

    def snapshot(self) -> list[dict]:
        """One dict per expected experiment: counts, best, elapsed, eta (formatted)."""
        by_key = {r["key"]: r for r in progress_rows(self.dir)}
        now = self.clock()
        out = []
        for row in self.rows:
            p = by_key.get(row.key, {})
            running = p.get("running", 0)
            finished = p.get("done", 0) + p.get("early_stopped", 0) + p.get("failed", 0)
            marker = (self.dir / "stages" / f"{row.key}.done").exists()
            if (running or finished) and row.key not in self.started and not marker:
                self.started[row.key] = now
            if marker and row.key in self.started and row.key not in self.ended:
                self.ended[row.key] = now
            start = self.started.get(row.key)
            elapsed = None if start is None else self.ended.get(row.key, now) - start
            eta = None
            if marker:
                eta = 0.0
            elif elapsed and finished:
                eta = elapsed / finished * max(row.total - finished, 0)
            out.append({"key": row.key, "stage": row.stage, "cell": row.cell, "total": row.total,
                        "done": p.get("done", 0), "running": running,
                        "stopped": p.get("early_stopped", 0), "failed": p.get("failed", 0),
                        "finished": finished, "best": p.get("best"), "complete": marker,
                        "elapsed": elapsed, "eta": eta})
        return out

    def table(self, snap: list[dict] | None = None) -> list[str]:
        snap = self.snapshot() if snap is None else snap
        cells = [[s["stage"], s["cell"], f"{s['done']}/{s['total']}", str(s["running"]),
                  str(s["stopped"]), str(s["failed"]),
                  "-" if s["best"] is None else f"{s['best']:.4f}",
                  fmt_s(s["elapsed"]), "done" if s["complete"] else fmt_s(s["eta"])] for s in snap]
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(self.HEAD)]
        line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()
        key = self.spec.objectives[0].key
        folds = self.spec.dataset.folds
        head = [f"study {self.spec.name}  ({self.summary(snap)})"] + (
            [f"folds: {folds.describe()}; search on "
             f"{'fold 0' if self.spec.search_folds == 'first' else 'the mean over folds'}"]
            if folds is not None else [])
        return (head + [line(self.HEAD)]
                + [line(c) for c in cells] + [f"best = best-epoch dev {key} so far"])

    def summary(self, snap: list[dict]) -> str:
        total = sum(s["total"] for s in snap)
        finished = sum(s["finished"] for s in snap)
        running = sum(s["running"] for s in snap)
        elapsed = self.clock() - self.t0
        eta = elapsed / finished * (total - finished) if finished and finished < total else None
        return (f"{finished}/{total} trials finished, {running} running, elapsed {fmt_s(elapsed)}"
                + (f", ETA ~{fmt_s(eta)}" if eta is not None else ""))

    def plain_line(self, snap: list[dict]) -> str:
        """One line for logs: overall counts and the stage in progress."""
        live = [s for s in snap if s["running"] or (s["finished"] and not s["complete"])]
        where = ", ".join(f"{s['stage']} {s['cell']} {s['finished']}/{s['total']}" for s in live[:2])
        bests = [s["best"] for s in snap if s["best"] is not None]
        best = ""
        if bests:
            pick = max(bests) if self.spec.objectives[0].mode == "max" else min(bests)
            best = f"; best dev {self.spec.objectives[0].key} {pick:.4f}"
        return f"[{fmt_s(self.clock() - self.t0):>6}] {self.summary(snap)}" + (
            f"; now: {where}" if where else "") + best

    # ---------------------------------------------------------------- drawing

    def draw(self, final: bool = False) -> None:
        snap = self.snapshot()
        if self.tty:
            lines = self.table(snap)
            up = f"\x1b[{self._drawn}F" if self._drawn else ""
            self.stream.write(up + "".join(f"\x1b[2K{ln}\n" for ln in lines))
            self._drawn = len(lines)
        elif final:
            self.stream.write("\n".join(self.table(snap)) + "\n")
        else:  # a line when a count or a best changed, else a heartbeat every HEARTBEAT_S
            state = tuple((s["done"], s["running"], s["stopped"], s["failed"], s["best"]) for s in snap)
            if state != self._last_state or self.clock() - self._last_write >= self.HEARTBEAT_S:
                self.stream.write(self.plain_line(snap) + "\n")
                self._last_state, self._last_write = state, self.clock()
        self.stream.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self.refresh):
            try:
                self.draw()
            except (OSError, ValueError):  # a progress file mid-replace: next tick
                continue

    def __enter__(self) -> LiveView:
        self._thread = threading.Thread(target=self._loop, name="avstudy-live-view", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.draw(final=True)


# ----------------------------------------------------------------------------- Ray's output


@contextlib.contextmanager
def ray_logs_to_file(study_dir: Path, verbose: bool, trackers=()):
    """Ray's/Tune's/Optuna's (and the trackers') loggers, print()s and Python warnings ->
    STUDY_DIR/logs/ray.log (unless verbose). Yields the log path."""
    path = Path(study_dir) / "logs" / "ray.log"
    if verbose:
        yield path
        return
    import importlib

    for module in ("optuna", "ray", *trackers):  # each adds its console handler on import: replace it
        with contextlib.suppress(ImportError):
            importlib.import_module(module)

    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    saved = []
    for name in RAY_LOGGERS:
        log = logging.getLogger(name)
        saved.append((log, list(log.handlers), log.propagate))
        log.handlers = [h for h in log.handlers if not isinstance(h, logging.StreamHandler)
                        or isinstance(h, logging.FileHandler)] + [handler]
        log.propagate = False
    show = warnings.showwarning
    warnings.showwarning = lambda msg, cat, fn, ln, file=None, line=None: handler.stream.write(
        warnings.formatwarning(msg, cat, fn, ln, line))
    try:
        with contextlib.redirect_stdout(handler.stream):  # Tune's experiment boxes are print()s
            yield path
    finally:
        warnings.showwarning = show
        for log, handlers, propagate in saved:
            log.handlers, log.propagate = handlers, propagate
        handler.close()


# ----------------------------------------------------------------------------- entry point


def watched_sweep(spec: StudySpec, study_dir: Path, resume: bool, verbose: bool, refresh: float | None,
                  live: bool, stream: TextIO) -> Path | None:
    """`stages.sweep` under the live view, with Ray's output in the study's log file (unless
    verbose); returns that log's path (None when verbose)."""
    from study.runs.stages import sweep

    view = LiveView(spec, study_dir, stream=stream, refresh=refresh)
    with ray_logs_to_file(study_dir, verbose, tuple(spec.tracking)) as log:
        if live:
            with view:
                sweep(spec, out=study_dir, resume=resume, verbose=1 if verbose else 0)
        else:
            sweep(spec, out=study_dir, resume=resume, verbose=1 if verbose else 0)
            view.draw(final=True)
    return None if verbose else log


def sweep_cli(spec: StudySpec, out=None, resume: bool = False, verbose: bool = False,
              refresh: float | None = None, live: bool = True, stream: TextIO | None = None,
              overrides: dict | None = None) -> Path:
    """`avstudy sweep`: the watched sweep, then the closing lines. `overrides` (--set) are
    recorded in STUDY_DIR/overrides.json, which study.json copies."""
    stream = stream or sys.stdout
    study_dir, _ = study_paths(spec, out)
    study_dir.mkdir(parents=True, exist_ok=True)
    if overrides:
        from study.fsio import atomic_write_json

        atomic_write_json(study_dir / "overrides.json", overrides, indent=1)
    log = watched_sweep(spec, study_dir, resume, verbose, refresh, live, stream)
    closing_lines(study_dir, log, stream, remote=study_remote(spec))
    return study_dir


def closing_lines(study_dir: Path, log: Path | None, stream: TextIO, report: Path | None = None,
                  remote: str | None = None) -> None:
    lines = [f"results:     {study_dir / 'results.parquet'} (one row per trial x stage x condition)"]
    if remote is not None:
        lines.append(f"remote:      {remote} (a copy of the study's files; avstudy report {remote})")
    if report is not None:
        lines.append(f"report:      {Path(report).resolve()}")
    else:
        lines.append(f"report:      avstudy report {study_dir}")
    lines.append(f"dashboard:   avstudy dashboard {study_dir} (optuna-dashboard: every cell's study)")
    lines.append(f"tensorboard: tensorboard --logdir {study_dir / 'ray'}")
    if log is not None:
        lines.append(f"ray log:     {log} (--verbose shows it live)")
    stream.write("\n".join(lines) + "\n")
    stream.flush()
