"""avstudy model package: VAVL encoders, shared block, heads and fusion strategies (torch only).

`model.config` and `model.registry` are torch-free (spec validation and the search spaces read
them without loading torch); everything else imports torch. The names below load lazily.
"""

from __future__ import annotations

import importlib

_LAZY = {"AVModel": "model.vavl", "ModelOutput": "model.vavl", "Batch": "model.batch",
         "build_model": "model.build", "ModelConfig": "model.config",
         "model_config": "model.config"}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
