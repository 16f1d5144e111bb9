"""The spec's `search:` block: parameter ranges and choices given in the spec itself.

    search:
      lr: {float: [1.0e-5, 1.0e-3], log: true}
      enc_layers: {int: [1, 3]}
      fusion_head: ...
      dropout: {choices: [0.0, 0.1, 0.3]}

A key that a named space suggests gets the spec's range instead of the space's own; a key that
no space suggests is searched on its own, after the spaces. Every end point and choice is
checked by the key's declared rule (study/keys.py), so `lr: {float: [-1, 1]}` fails naming
`search.lr[0]`. The block is recorded in spec.yaml and study.json, and `avstudy spaces SPEC`
shows the ranges a study searched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from study.keys import range_problems, short
from study.runs.spec.schema import SpecError
from study.training.config import flat_config_problems, key_table

KINDS = ("float", "int", "choices")
OPTIONS = {"float": ("log", "step"), "int": ("log", "step"), "choices": ()}


def parse_search(raw: Mapping) -> dict[str, dict[str, Any]]:
    block = raw.get("search") or {}
    if not isinstance(block, Mapping):
        raise SpecError(f"search: expected a mapping of config keys to ranges, got {short(block)}")
    unknown = flat_config_problems({k: None for k in block if k not in key_table()}, prefix="search.")
    problems = list(unknown)
    out = {}
    for name, rng in block.items():
        if name in key_table():
            found, parsed = _range(str(name), rng)
            problems += found
            out[str(name)] = parsed
    if problems:
        raise SpecError("; ".join(problems))
    return out


def _range(name: str, rng: Any) -> tuple[list[str], dict]:
    where = f"search.{name}"
    if not isinstance(rng, Mapping) or sum(k in rng for k in KINDS) != 1:
        return [f"{where}: expected one of {{float: [low, high]}}, {{int: [low, high]}} or "
                f"{{choices: [...]}}, got {short(rng)}"], {}
    kind = next(k for k in KINDS if k in rng)
    extra = sorted(set(rng) - {kind, *OPTIONS[kind]})
    if extra:
        return [f"{where}: unknown option(s) {extra} for a {kind} range (allowed: {list(OPTIONS[kind])})"], {}
    values = rng[kind]
    if not isinstance(values, list) or not values or (kind != "choices" and len(values) != 2):
        return [f"{where}.{kind}: expected {'a non-empty list' if kind == 'choices' else '[low, high]'}, "
                f"got {short(values)}"], {}
    spec = key_table()[name]
    problems = _kind_problems(name, kind, spec.kind) + range_problems(spec, values, f"{where}.{kind}")
    if kind != "choices" and not problems and values[0] >= values[1]:
        problems.append(f"{where}.{kind}: low {values[0]} must be below high {values[1]}")
    if rng.get("log") and not problems and values[0] <= 0:
        problems.append(f"{where}: a log range needs low > 0, got {values[0]}")
    return problems, dict(rng)


def _kind_problems(name: str, kind: str, key_kind: type) -> list[str]:
    if kind == "float" and key_kind is not float:
        return [f"search.{name}: a float range for a {key_kind.__name__} key; use int or choices"]
    if kind == "int" and key_kind is not int:
        return [f"search.{name}: an int range for a {key_kind.__name__} key; use float or choices"]
    return []
