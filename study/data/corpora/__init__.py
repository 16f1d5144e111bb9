"""Raw-corpus adapters, one module per corpus, listed in the `CORPORA` table.

A corpus module exposes:
- `NAME`: the `--corpus` value;
- `scan(root, partition=None, **options)`: the manifest (dataset columns + media paths);
- `targets(manifest)`: (classes, dimensions) of the dataset built from that manifest;
- `OPTIONS`: a tuple of `CorpusOption`, the scan() keywords and their `features extract` flags;
- `PARTITION`: one line on what `--partition` means for it.
Adding a corpus is one module plus one line in `CORPORA` (recipe in docs/corpora.md).
May import: pandas, numpy and the standard library only (no torch, no other study package).
"""
from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pandas as pd

from study.data.corpora import cremad, iemocap, mspimprov
from study.data.corpora.common import CorpusError, CorpusOption

CORPORA: dict[str, ModuleType] = {
    cremad.NAME: cremad,
    mspimprov.NAME: mspimprov,
    iemocap.NAME: iemocap,
}


def corpus(name: str) -> ModuleType:
    """The adapter module of `name`; CorpusError listing the known corpora otherwise."""
    if name not in CORPORA:
        raise CorpusError(f"unknown corpus {name!r}; choose one of {sorted(CORPORA)}")
    return CORPORA[name]


def default_options(name: str) -> dict:
    """{scan keyword: default} of corpus `name`."""
    return {opt.key: opt.default for opt in corpus(name).OPTIONS}


def check_options(name: str, options: dict) -> dict:
    """Defaults overlaid with `options`; CorpusError naming an option the corpus does not take."""
    known = default_options(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise CorpusError(f"corpus {name!r} takes no option(s) {unknown}; its options are "
                          f"{sorted(known) or 'none'}")
    return {**known, **options}


def scan_corpus(name: str, root: str | Path, partition: str | Path | None = None,
                **options) -> pd.DataFrame:
    """The manifest of corpus `name` (a key of CORPORA); options go to its scan()."""
    return corpus(name).scan(root, partition, **check_options(name, options))


def corpus_targets(name: str, manifest: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(classes, dimensions) of the dataset built from `manifest`."""
    return corpus(name).targets(manifest)


def all_options() -> dict[str, tuple[CorpusOption, list[str]]]:
    """{flag: (option, [corpus names])}: each flag once; corpora sharing a flag must agree on it."""
    flags: dict[str, tuple[CorpusOption, list[str]]] = {}
    for name, module in CORPORA.items():
        for opt in module.OPTIONS:
            if opt.flag in flags:
                first, names = flags[opt.flag]
                if (first.key, first.default, first.type, first.flag_value) != \
                        (opt.key, opt.default, opt.type, opt.flag_value):
                    raise CorpusError(f"corpus {name!r} declares {opt.flag} unlike {names}")
                names.append(name)
            else:
                flags[opt.flag] = (opt, [name])
    return flags


__all__ = ["CORPORA", "CorpusError", "CorpusOption", "all_options", "check_options", "corpus",
           "corpus_targets", "default_options", "scan_corpus"]
