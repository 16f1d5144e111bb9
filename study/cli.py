"""The `avstudy` command line. `main(argv)` is testable; every subcommand returns an exit code.

Exit codes: 0 done; 2 the request is wrong (an option, a `--set`/`--config` value, the spec):
fix what was typed; 1 the request is valid but could not be carried out (a file missing or
corrupt, an invalid dataset, a study in use, storage unreachable). Either way the error is one
message on stderr naming the file or key at fault, never a traceback.

Light by design: `--help`, `--version`, `report`, `status`, `spaces` and `plan --no-probe` never
import torch (the heavy modules are imported inside the subcommands that train).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import yaml

SCALES = ("tiny", "small", "full")
EXIT_RUNTIME, EXIT_USAGE = 1, 2


class UsageError(ValueError):
    """The command line or a value given on it is wrong (exit 2)."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" unless the help already says what the default is, or there is none."""

    def _get_help_string(self, action):
        text = action.help or ""
        if not text or "default" in text or any(action.default is v for v in (None, False, argparse.SUPPRESS)):
            return text
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """Every (sub)command's --help shows each option's default and choices."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("avstudy")
    except PackageNotFoundError:
        return "unknown (not installed)"


# ----------------------------------------------------------------------------- data


def _add_data(sub) -> None:
    p = sub.add_parser("data", help="datasets: generate the synthetic corpus, describe a dataset")
    dsub = p.add_subparsers(dest="data_cmd", required=True)
    s = dsub.add_parser("synth", help="generate a synthetic CREMA-D-like dataset directory")
    s.add_argument("--preset", default="crema-d", help="corpus recipe (study/data/synth.py: crema-d is "
                   "CREMA-D-like; the known-answer presets plant a known effect)")
    s.add_argument("--scale", default="small", choices=SCALES,
                   help="tiny: 360 utterances (tests); small: 2,400 (the demo); full: CREMA-D's 7,442")
    s.add_argument("--seed", type=int, default=0, help="generator seed (same seed, same corpus)")
    s.add_argument("--out", required=True, type=Path, help="dataset directory to write")
    s.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out (written beside it, then swapped in by a rename, so "
                        "a sweep reading the old files keeps its copy)")
    d = dsub.add_parser("describe", help="validate a dataset directory and summarise it")
    d.add_argument("dir", type=Path, help="dataset directory (dataset.json, manifest.parquet, *.arrow)")
    r = dsub.add_parser("resplit", help="a new partition of a dataset over its feature files (no "
                        "re-extraction, no copy: a manifest and dataset.json pointing at them)")
    r.add_argument("dataset", type=Path, help="dataset directory to resplit")
    r.add_argument("--partition", required=True, type=Path,
                   help="CSV with utt_id (or FileName) and split (or Split_Set: Train/Development/"
                        "Test), e.g. VAVL's label_consensus_N.csv; its rows are the new dataset's")
    r.add_argument("--out", required=True, type=Path, help="new dataset directory")
    r.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")


def _run_data(args) -> int:
    from study.data.dataset import describe, open_dataset
    if args.data_cmd == "resplit":
        from study.data.folds import resplit
        out = resplit(args.dataset, args.partition, args.out, overwrite=args.overwrite)
        print(f"wrote {out} (features read from {args.dataset}): "
              f"{describe(open_dataset(out, check_values=False))}")
    elif args.data_cmd == "synth":
        from study.data.generate import ensure_corpus
        out = ensure_corpus(args.out, args.preset, args.scale, args.seed, progress=True,
                            if_exists="replace" if args.overwrite else "error")
        print(f"wrote {out}: {describe(open_dataset(out, check_values=False))}")
    else:
        print(describe(open_dataset(args.dir)))
    return 0


# ----------------------------------------------------------------------------- train


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train one configuration; print per-epoch dev metrics")
    p.add_argument("--data", required=True, type=Path, help="dataset directory")
    p.add_argument("--config", type=Path,
                   help="YAML/JSON file of flat config keys (and 'preset'), e.g. from `avstudy export-best`")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key (YAML value), repeatable")
    p.add_argument("--out", type=Path,
                   help="new directory for record.json/.parquet, curves and checkpoint (an existing run "
                        "is never overwritten); none: nothing is written")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")


def load_flat_config(path: Path | None, sets: list[str]) -> dict:
    from study.runs.spec import UniqueKeyLoader

    flat = {}
    if path is not None:
        try:
            loaded = yaml.load(path.read_text(), Loader=UniqueKeyLoader) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML: {str(exc)[:300]}") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of config keys, got {type(loaded).__name__}")
        flat.update(loaded)
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        flat[key.strip()] = yaml.safe_load(value)
    return flat


def _run_train(args) -> int:
    from study.training.config import config_from_flat

    if args.out is not None and args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        raise FileExistsError(f"--out {args.out}: holds a run already; choose a new directory "
                              "(runs are never overwritten)")
    from study.data.dataset import open_dataset

    open_dataset(args.data, check_values=False)  # a missing or broken dataset is a runtime error
    try:
        cfg = config_from_flat(load_flat_config(args.config, args.set), data_dir=args.data)
    except ValueError as exc:  # a key or value of --config/--set
        raise UsageError(str(exc)) from None
    from study.training.fit import fit, summary_table

    print(f"training {cfg.preset} preset, fusion={cfg.model.fusion}, task={cfg.task}, "
          f"schedule={cfg.train_schedule}, train_missing_rate={cfg.protocol.train_missing_rate}")
    record = fit(cfg, args.data, args.out, device=args.device)
    print(f"best dev epoch {record['best_epoch']} of {record['epochs']}, "
          f"{record['wall_time_s']:.0f}s; test metrics per condition:")
    print(summary_table(record, cfg))
    if args.out:
        print(f"records in {args.out}")
    return 0


# ----------------------------------------------------------------------------- sweep / demo


def _add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="run a study (search -> rerun -> final test) on Ray")
    p.add_argument("spec", help="study spec YAML (see search_spaces/demo.yaml; check it first with `avstudy plan`)")
    p.add_argument("--out", default=None, help="STUDY_DIR (default: the spec's storage when a local path, "
                                                "else runs/NAME; with an s3:// storage it is the working "
                                                "copy, mirrored to STORAGE/NAME)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted study in STUDY_DIR "
                                                         "(pulled from STORAGE/NAME onto a new head)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override the spec (YAML value), repeatable: a dotted spec key (budget.max_epochs=2, "
                        "top_k=2) or a training config key, which goes into `fixed:` (lr=3e-4); recorded "
                        "in STUDY_DIR/study.json `overrides`")
    _console_options(p)


def _console_options(p) -> None:
    p.add_argument("--verbose", action="store_true",
                   help="show Ray Tune's own per-trial tables and Ray's logs on the console (by default "
                        "they go to STUDY_DIR/logs/ray.log)")
    p.add_argument("--refresh", type=float, default=None,
                   help="seconds between live-view updates (default: 1 on a terminal, 30 otherwise)")
    p.add_argument("--quiet", action="store_true", help="no live view; only the final summary")


def _run_sweep(args) -> int:
    from study.runs.console import sweep_cli
    from study.runs.spec import load_spec

    try:
        overrides = load_flat_config(None, args.set)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    spec = load_spec(args.spec, overrides=overrides)
    sweep_cli(spec, out=args.out, resume=args.resume, verbose=args.verbose, refresh=args.refresh,
              live=not args.quiet, overrides=overrides)
    return 0


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the main job: synthetic corpus -> demo study -> report")
    p.add_argument("--out", type=Path, default=Path("runs/demo"),
                   help="STUDY_DIR; an unfinished demo there is resumed")
    p.add_argument("--spec", type=Path, default=None, help="study spec (default: search_spaces/demo.yaml)")
    _console_options(p)


def _run_demo(args) -> int:
    from study.runs.demo import run_demo

    return run_demo(args.out, args.spec, verbose=args.verbose, refresh=args.refresh, live=not args.quiet)


# ----------------------------------------------------------------------------- plan / spaces / export-best


def _add_plan(sub) -> None:
    p = sub.add_parser("plan", help="dry run: validate a spec and its data, count trials, estimate the cost",
                       description="Validate everything `avstudy sweep` would (spec, dataset, each cell's "
                                   "spaces sampled once), print cells x trials per stage, how many trials "
                                   "run at once, and the estimated CPU/GPU-hours. Ray is not started.")
    p.add_argument("spec", help="study spec YAML")
    p.add_argument("--cluster-cpus", type=float, default=None,
                   help="CPUs of the cluster the sweep will run on (default: this machine's)")
    p.add_argument("--cluster-gpus", type=float, default=None,
                   help="GPUs of the cluster the sweep will run on (default: this machine's, via nvidia-smi)")
    p.add_argument("--no-probe", action="store_true",
                   help="do not time one training epoch (no torch import); use a stated rough figure")
    p.add_argument("--device", help="device of the timed epoch: cpu or cuda (default: cuda when available)")
    p.add_argument("--format", default="text", choices=["text", "json"],
                   help="json: one object with the fields of docs/CONTRACTS.md (for scripts and CI)")


def _run_plan(args) -> int:
    import json

    from study.runs.plan import local_resources, plan_doc, render_plan
    from study.runs.spec import load_spec

    cluster, source = local_resources()
    if args.cluster_cpus is not None or args.cluster_gpus is not None:
        given = {"CPU": args.cluster_cpus, "GPU": args.cluster_gpus}
        cluster = {k: float(v) if v is not None else cluster[k] for k, v in given.items()}
        source = "--cluster-cpus/--cluster-gpus" + ("" if None not in given.values() else " and " + source)
    spec = load_spec(args.spec)
    doc = plan_doc(spec, cluster, source, probe=not args.no_probe, device=args.device)
    print(json.dumps(doc, indent=1) if args.format == "json" else render_plan(doc))
    return 0


def _add_spaces(sub) -> None:
    p = sub.add_parser("spaces", help="list the search spaces and their parameters with ranges",
                       description="Each named space's parameters, ranges and when they apply; with a "
                                   "spec file, what that study searches: its spaces with its `search:` "
                                   "ranges on top, and its fixed keys.")
    p.add_argument("names", nargs="*", help="spaces to show, or one spec YAML (default: every space)")


def _run_spaces(args) -> int:
    from study.runs.spaces_info import spaces_text, spec_spaces_text

    if len(args.names) == 1 and args.names[0].endswith((".yaml", ".yml")):
        from study.runs.spec import load_spec

        print(spec_spaces_text(load_spec(args.names[0])))
        return 0
    try:
        print(spaces_text(args.names))
    except ValueError as exc:  # an unknown space name
        raise UsageError(str(exc)) from None
    return 0


def _add_export_best(sub) -> None:
    p = sub.add_parser("export-best", help="write a study's dev-selected configuration as a train config")
    p.add_argument("study_dir", type=Path, help="STUDY_DIR of a finished (or partly finished) study")
    p.add_argument("--stage", default="rerun", choices=["search", "rerun"],
                   help="search: the single best search trial on dev; rerun: the configuration with the "
                        "best mean over seeds on dev, with its first seed. Test rows are never used")
    p.add_argument("--out", type=Path, default=Path("best.yaml"), help="config file to write")


def _run_export_best(args) -> int:
    import shlex

    from study.runs.export import export_best

    note = export_best(args.study_dir, args.out, args.stage)
    print(f"wrote {args.out}: {note}")
    print(f"reproduce: avstudy train --data DATA --config {shlex.quote(str(args.out))} --out RUN_DIR")
    return 0


def _add_dashboard(sub) -> None:
    p = sub.add_parser("dashboard", help="open optuna-dashboard on a study: every cell's Optuna study, "
                       "objectives named, each trial with its Ray trial id, cell and stage")
    p.add_argument("study_dir", type=Path, help="STUDY_DIR of a running or finished study")
    p.add_argument("--port", type=int, default=8080, help="port of the dashboard's web server")
    p.add_argument("--print", dest="print_only", action="store_true",
                   help="print the optuna-dashboard command instead of running it")


def dashboard_command(study_dir: Path, port: int = 8080) -> list[str]:
    """optuna-dashboard on the study's Optuna storage (one storage holds every cell's study)."""
    import json

    meta = Path(study_dir) / "study.json"
    url = (json.loads(meta.read_text()).get("spec") or {}).get("optuna_storage") if meta.exists() else None
    if url is None:
        db = Path(study_dir) / "optuna.db"
        if not db.exists():
            raise FileNotFoundError(f"{db}: no Optuna storage here (is {study_dir} a study directory "
                                    "whose search has started?)")
        url = f"sqlite:///{db.resolve()}"
    elif url.startswith("journal:"):
        url = url.removeprefix("journal:")  # optuna-dashboard opens a journal file by its path
    return ["optuna-dashboard", "--port", str(port), url]


def _run_dashboard(args) -> int:
    import shlex

    cmd = dashboard_command(args.study_dir, args.port)
    if args.print_only:
        print(shlex.join(cmd))
        return 0
    exe = shutil.which("optuna-dashboard") or str(Path(sys.executable).parent / "optuna-dashboard")
    if not Path(exe).exists():
        raise RuntimeError("optuna-dashboard is not installed: pip install 'avstudy[dashboard]' "
                           "(scripts/setup.sh installs it)")
    print(f"optuna-dashboard on http://127.0.0.1:{args.port} (Ctrl-C stops it)", flush=True)
    os.execv(exe, [exe, *cmd[1:]])
    return 0


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="avstudy", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"avstudy {version()}")
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for add in (_add_data, _add_train, _add_sweep, _add_demo, _add_plan, _add_spaces, _add_export_best,
                _add_dashboard):
        add(sub)
    for add in _optional_subparsers():
        add(sub)
    return parser


def _optional_subparsers():
    """Subcommands of the other packages (status, features, reports)."""
    from reports import cli as reports_cli
    from study.data.features import cli as features_cli
    from study.runs import status
    from study.training import predict_cli
    return [status.add_subparser, features_cli.add_subparser, reports_cli.add_subparser,
            predict_cli.add_subparser]


HANDLERS = {"data": _run_data, "train": _run_train, "sweep": _run_sweep, "demo": _run_demo,
            "plan": _run_plan, "spaces": _run_spaces, "export-best": _run_export_best,
            "dashboard": _run_dashboard}


def _dispatch(args) -> int:
    if args.cmd in HANDLERS:
        return HANDLERS[args.cmd](args)
    from reports import cli as reports_cli
    from study.data.features import cli as features_cli
    from study.runs import status
    from study.training import predict_cli
    others = {"status": status.run, "features": features_cli.run, "report": reports_cli.run,
              "predict": predict_cli.run}
    return others[args.cmd](args)


def _errors() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(usage errors, runtime errors) the command turns into one message."""
    from reports.load import StudyError
    from study.runs.spec import SpecError

    return (UsageError, SpecError), (ValueError, OSError, StudyError, RuntimeError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # a wrong option: argparse's message and exit 2
    usage, runtime = _errors()
    try:
        return _dispatch(args)
    except usage as err:
        print(f"avstudy {args.cmd}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except runtime as err:  # DatasetError, StudyInUse, PartsMissing, ... are among these
        print(f"avstudy {args.cmd}: error: {err}", file=sys.stderr)
        return EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
