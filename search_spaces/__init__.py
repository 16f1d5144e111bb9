"""Search spaces (define-by-run functions of an Optuna trial) and shipped study specs.

`SPACES` maps the names a study spec lists under `spaces:` to the functions in `spaces.py`;
`combine(names, fixed)` builds the one define-by-run function OptunaSearch receives.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from search_spaces.spaces import (
    architecture,
    architecture_tiny,
    augmentation,
    balance,
    data_conditions,
    fusion,
    missing,
    optimisation,
    optimisation_tiny,
)
from study.vocab import DATA_CONDITIONS

SpaceFn = Callable[[Any], dict]

SPACES: dict[str, SpaceFn] = {
    "architecture": architecture,
    "architecture_tiny": architecture_tiny,
    "optimisation": optimisation,
    "optimisation_tiny": optimisation_tiny,
    "fusion": fusion,
    "missing": missing,
    "data_conditions": data_conditions,
    "augmentation": augmentation,
    "balance": balance,
}

# DATA_CONDITIONS (study/vocab.py): a space may search one inside a cell only when the spec sets
# `search_data_conditions: true`.

__all__ = ["DATA_CONDITIONS", "SPACES", "CombinedSpace", "DataConditionError", "FixingTrial", "combine",
           "get_space", "space_keys", "suggest_range"]


def get_space(name: str) -> SpaceFn:
    if name not in SPACES:
        raise KeyError(f"unknown search space {name!r}; choose from {sorted(SPACES)}")
    return SPACES[name]


class DataConditionError(ValueError):
    """A space suggests a data condition inside a cell without the spec's opt-in."""


class FixingTrial:
    """Wraps an Optuna trial: `suggest_*(name, ...)` returns `fixed[name]` without suggesting.

    A data condition (DATA_CONDITIONS) that is not fixed is suggested only with
    `data_conditions=True` (the spec's `search_data_conditions`), else DataConditionError.

    So a cell that fixes `fusion` and `train_missing_rate` makes the fusion/missing spaces
    skip those suggestions (and Optuna never records them as searched parameters), while the
    branches of a fixed fusion still get their own parameters suggested.
    """

    def __init__(self, trial: Any, fixed: Mapping[str, Any], data_conditions: bool = False,
                 search: Mapping[str, Mapping[str, Any]] | None = None):
        self._trial = trial
        self._fixed = dict(fixed)
        self._data_conditions = data_conditions
        self._search = dict(search or {})  # the spec's ranges win over the spaces' own

    def __getattr__(self, item: str) -> Any:
        attr = getattr(self._trial, item)
        if not (item.startswith("suggest_") and callable(attr)):
            return attr

        def suggest(name: str, *args, **kwargs):
            if name in self._fixed:
                return self._fixed[name]
            if name in DATA_CONDITIONS and not self._data_conditions:
                raise DataConditionError(
                    f"search space suggests the data condition {name!r} inside a cell; make it a "
                    "cell dimension or a fixed value, or set `search_data_conditions: true` in "
                    "the spec (the report then flags it)")
            if name in self._search:
                return suggest_range(self._trial, name, self._search[name])
            return attr(name, *args, **kwargs)

        return suggest


class CombinedSpace:
    """Define-by-run function over several named spaces (picklable, so Tune can checkpoint the
    searcher): every named space in order, then the fixed values on top."""

    def __init__(self, names: list[str] | tuple[str, ...], fixed: Mapping[str, Any] | None = None,
                 data_conditions: bool = False, search: Mapping[str, Mapping[str, Any]] | None = None):
        for n in names:
            get_space(n)  # fail early on an unknown name
        self.names = tuple(names)
        self.fixed = dict(fixed or {})
        self.data_conditions = data_conditions
        self.search = {k: dict(v) for k, v in (search or {}).items()}

    def __call__(self, trial) -> dict:
        proxy = FixingTrial(trial, self.fixed, self.data_conditions, self.search)
        params: dict = {}
        for name in self.names:
            params.update(get_space(name)(proxy))
        for name in sorted(set(self.search) - set(params) - set(self.fixed)):  # keys of the spec's own
            params[name] = proxy.suggest_float(name, 0, 1)  # the range is the spec's (FixingTrial)
        params.update(self.fixed)
        return params

    def searched_keys(self) -> set[str]:
        """Names the space draws on its first branch (the fixed keys are not drawn)."""
        probe = _Probe()
        self(probe)
        return set(probe.names)


def suggest_range(trial: Any, name: str, rng: Mapping[str, Any]) -> Any:
    """Suggest `name` from a spec `search:` range ({float|int: [low, high], log, step} or
    {choices: [...]}) through an Optuna trial."""
    if "choices" in rng:
        return trial.suggest_categorical(name, list(rng["choices"]))
    kind = "float" if "float" in rng else "int"
    low, high = rng[kind]
    options = {k: rng[k] for k in ("log", "step") if k in rng}
    if kind == "float":
        return trial.suggest_float(name, float(low), float(high), **options)
    return trial.suggest_int(name, int(low), int(high), **options)


def combine(names: list[str] | tuple[str, ...], fixed: Mapping[str, Any] | None = None,
            data_conditions: bool = False, search: Mapping[str, Mapping[str, Any]] | None = None,
            ) -> CombinedSpace:
    """One define-by-run function for OptunaSearch from space names, fixed keys and the spec's
    own ranges (`search:`, which win over the spaces')."""
    return CombinedSpace(names, fixed, data_conditions, search)


class _Probe:
    """A stand-in trial that records every suggested name (first choice / low end)."""

    def __init__(self):
        self.names: list[str] = []

    def suggest_categorical(self, name, choices):
        self.names.append(name)
        return choices[0]

    def suggest_float(self, name, low, high, **kw):
        self.names.append(name)
        return low

    def suggest_int(self, name, low, high, **kw):
        self.names.append(name)
        return low


def space_keys(name: str) -> set[str]:
    """Names a space suggests on its first branch (the spec's early check; FixingTrial is the
    authoritative one)."""
    probe = _Probe()
    get_space(name)(probe)
    return set(probe.names)
