"""The `avstudy` command line. `main(argv)` is testable; every subcommand returns an exit code."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml


def _add_data(sub) -> None:
    p = sub.add_parser("data", help="datasets: generate the synthetic corpus, describe a dataset")
    dsub = p.add_subparsers(dest="data_cmd", required=True)
    s = dsub.add_parser("synth", help="generate a synthetic CREMA-D-like dataset directory")
    s.add_argument("--preset", default="crema-d", choices=["crema-d"])
    s.add_argument("--scale", default="small", choices=["tiny", "small", "full"])
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True, type=Path)
    d = dsub.add_parser("describe", help="validate a dataset directory and summarise it")
    d.add_argument("dir", type=Path)


def _run_data(args) -> int:
    from study.data.dataset import describe, open_dataset
    if args.data_cmd == "synth":
        from study.data.synth import make_corpus
        out = make_corpus(args.out, preset=args.preset, scale=args.scale, seed=args.seed)
        print(f"wrote {out}: {describe(open_dataset(out, check_values=False))}")
    else:
        print(describe(open_dataset(args.dir)))
    return 0


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train one configuration; print per-epoch dev metrics")
    p.add_argument("--data", required=True, type=Path, help="dataset directory")
    p.add_argument("--config", type=Path, help="YAML/JSON file of flat config keys (and 'preset')")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key (YAML value), repeatable")
    p.add_argument("--out", type=Path, help="where to write record.json/.parquet, curves, checkpoint")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")


def load_flat_config(path: Path | None, sets: list[str]) -> dict:
    flat = {}
    if path is not None:
        loaded = yaml.safe_load(path.read_text()) or {}
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
    from study.training.session import fit, summary_table
    flat = load_flat_config(args.config, args.set)
    cfg = config_from_flat(flat, data_dir=args.data)
    print(f"training {cfg.preset} preset, fusion={cfg.model.fusion}, task={cfg.task}, "
          f"schedule={cfg.schedule}, train_missing_rate={cfg.protocol.train_missing_rate}")
    record = fit(cfg, args.data, args.out, device=args.device)
    print(f"best dev epoch {record['best_epoch']} of {record['epochs']}, "
          f"{record['wall_time_s']:.0f}s; test metrics per condition:")
    print(summary_table(record, cfg))
    if args.out:
        print(f"records in {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avstudy", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    _add_data(sub)
    _add_train(sub)
    for add in _optional_subparsers():
        add(sub)
    return parser


def _optional_subparsers():
    """Subcommands of the other packages (studies, features, reports)."""
    from reports import cli as reports_cli
    from study.data.features import cli as features_cli
    from study.runs import stages, status
    return [stages.add_subparser, status.add_subparser, features_cli.add_subparser,
            reports_cli.add_subparser, _add_demo]


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the main job: synthetic corpus -> demo study -> report")
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--spec", type=Path, default=None, help="study spec (default: the demo spec)")


def _run_demo(args) -> int:
    from study.runs.demo import run_demo
    return run_demo(args.out, args.spec)


def _dispatch(args) -> int:
    handlers = {"data": _run_data, "train": _run_train, "demo": _run_demo}
    if args.cmd in handlers:
        return handlers[args.cmd](args)
    from reports import cli as reports_cli
    from study.data.features import cli as features_cli
    from study.runs import stages, status
    others = {"sweep": stages.run_cli, "status": status.run, "features": features_cli.run,
              "report": reports_cli.run}
    return others[args.cmd](args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"avstudy {args.cmd}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
