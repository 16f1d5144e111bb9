"""Raw-corpus adapters: each `scan(root, partition=None, ...)` returns a manifest with media paths.

`scan_corpus(name, ...)` picks the adapter by name; `corpus_targets(name, ...)` says which classes
and dimensions the resulting dataset has.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from study.data.corpora import cremad, iemocap, mspimprov
from study.data.corpora.common import CorpusError

CORPORA = ("crema-d", "msp-improv", "iemocap")


def scan_corpus(name: str, root: str | Path, partition: str | Path | None = None,
                **options) -> pd.DataFrame:
    """Dispatch to the adapter for `name` (one of CORPORA); options go to its scan()."""
    if name == "crema-d":
        return cremad.scan(root, partition, **options)
    if name == "msp-improv":
        return mspimprov.scan(root, partition, **options)
    if name == "iemocap":
        return iemocap.scan(root, partition, **options)
    raise CorpusError(f"unknown corpus {name!r}; choose one of {CORPORA}")


def corpus_targets(name: str, manifest: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(classes, dimensions) of the dataset built from `manifest`."""
    if name == "crema-d":
        return list(cremad.CLASSES), []
    if name == "msp-improv":
        classes = list(mspimprov.CLASSES) if manifest["label"].notna().any() else []
        return classes, list(mspimprov.DIMENSIONS)
    if name == "iemocap":
        return list(iemocap.CLASSES), ["arousal", "valence", "dominance"]
    raise CorpusError(f"unknown corpus {name!r}; choose one of {CORPORA}")


__all__ = ["CORPORA", "CorpusError", "scan_corpus", "corpus_targets"]
