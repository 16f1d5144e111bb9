"""Search spaces (define-by-run functions of an Optuna trial) and shipped study specs.

`SPACES` maps the names a study spec lists under `spaces:` to the functions in `spaces.py`;
`combine(names, fixed)` builds the one define-by-run function OptunaSearch receives.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from search_spaces.spaces import architecture, architecture_tiny, fusion, missing, optimisation, optimisation_tiny

SpaceFn = Callable[[Any], dict]

SPACES: dict[str, SpaceFn] = {
    "architecture": architecture,
    "architecture_tiny": architecture_tiny,
    "optimisation": optimisation,
    "optimisation_tiny": optimisation_tiny,
    "fusion": fusion,
    "missing": missing,
}

__all__ = ["SPACES", "CombinedSpace", "FixingTrial", "combine", "get_space"]


def get_space(name: str) -> SpaceFn:
    if name not in SPACES:
        raise KeyError(f"unknown search space {name!r}; choose from {sorted(SPACES)}")
    return SPACES[name]


class FixingTrial:
    """Wraps an Optuna trial: `suggest_*(name, ...)` returns `fixed[name]` without suggesting.

    So a cell that fixes `fusion` and `train_missing_rate` makes the fusion/missing spaces
    skip those suggestions (and Optuna never records them as searched parameters), while the
    branches of a fixed fusion still get their own parameters suggested.
    """

    def __init__(self, trial: Any, fixed: Mapping[str, Any]):
        self._trial = trial
        self._fixed = dict(fixed)

    def __getattr__(self, item: str) -> Any:
        attr = getattr(self._trial, item)
        if not (item.startswith("suggest_") and callable(attr)):
            return attr

        def suggest(name: str, *args, **kwargs):
            if name in self._fixed:
                return self._fixed[name]
            return attr(name, *args, **kwargs)

        return suggest


class CombinedSpace:
    """Define-by-run function over several named spaces (picklable, so Tune can checkpoint the
    searcher): every named space in order, then the fixed values on top."""

    def __init__(self, names: list[str] | tuple[str, ...], fixed: Mapping[str, Any] | None = None):
        for n in names:
            get_space(n)  # fail early on an unknown name
        self.names = tuple(names)
        self.fixed = dict(fixed or {})

    def __call__(self, trial) -> dict:
        proxy = FixingTrial(trial, self.fixed)
        params: dict = {}
        for name in self.names:
            params.update(get_space(name)(proxy))
        params.update(self.fixed)
        return params


def combine(names: list[str] | tuple[str, ...], fixed: Mapping[str, Any] | None = None
            ) -> CombinedSpace:
    """One define-by-run function for OptunaSearch from space names and fixed keys."""
    return CombinedSpace(names, fixed)
