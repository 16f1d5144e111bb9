"""One rule per config key, declared with the key (a leaf: imports nothing of the project).

A config dataclass declares each field with `key(default, bound=..., choices=..., doc=...)`;
the field's annotation gives its type. The same rule then checks the field when the dataclass
is built (`problems_of(instance)` in `__post_init__`), a flat dict of keys before any config
exists (`flat_problems`: the spec's `fixed:` and `search:` blocks, `avstudy train --set`,
every trial config), and a search range (`range_problems`). Fusion strategies declare their
own keys the same way in `model/registry.py`.

Every checker returns a list of messages, one per bad key, each naming the key, so a spec's
errors are reported at once. `closest` gives the did-you-mean of an unknown key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import reprlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Bound:
    """low <= x (low < x when low_open) and x <= high (x < high when high_open)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def holds(self, x: float) -> bool:
        if self.low is not None and (x < self.low or (self.low_open and x == self.low)):
            return False
        return self.high is None or not (x > self.high or (self.high_open and x == self.high))

    def text(self) -> str:
        if self.high is None:
            return f"> {self.low:g}" if self.low_open else f">= {self.low:g}"
        lo = "(-inf" if self.low is None else f"{'(' if self.low_open else '['}{self.low:g}"
        return f"in {lo}, {self.high:g}{')' if self.high_open else ']'}"


POSITIVE = Bound(0, low_open=True)
AT_LEAST_1 = Bound(1)
NON_NEGATIVE = Bound(0)
UNIT = Bound(0, 1)
UNIT_OPEN = Bound(0, 1, high_open=True)


@dataclass(frozen=True)
class Rule:
    """What a key accepts besides its type: a numeric bound, a set of choices (a tuple, or a
    function returning one when the set may grow at run time, like the fusion table), oddness."""

    bound: Bound | None = None
    choices: tuple | Callable[[], tuple] | None = None
    odd: bool = False
    doc: str = ""

    def allowed(self) -> tuple | None:
        return self.choices() if callable(self.choices) else self.choices


def key(default: Any, *, bound: Bound | None = None, choices: tuple | Callable[[], tuple] | None = None,
        odd: bool = False, doc: str = "") -> Any:
    """A dataclass field carrying its rule (`dataclasses.field` metadata)."""
    rule = Rule(bound=bound, choices=choices, odd=odd, doc=doc)
    return dataclasses.field(default=default, metadata={"rule": rule})


@dataclass(frozen=True)
class KeySpec:
    """A key's type (element type for a list) and rule."""

    kind: type
    is_list: bool
    rule: Rule
    default: Any = None


_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


def _kind(annotation: Any) -> tuple[type, bool] | None:
    ann = str(annotation).replace(" ", "")
    if ann.startswith("tuple[") and ann.endswith(",...]"):
        return _TYPES.get(ann[len("tuple["):-len(",...]")], object), True
    return (_TYPES[ann], False) if ann in _TYPES else None


def table_of(*classes: type) -> dict[str, KeySpec]:
    """{field name: KeySpec} of the dataclasses' typed fields (later classes win)."""
    out = {}
    for cls in classes:
        for f in dataclasses.fields(cls):
            kind = _kind(f.type)
            if kind is not None:
                default = f.default if f.default is not dataclasses.MISSING else None
                out[f.name] = KeySpec(*kind, f.metadata.get("rule", Rule()), default)
    return out


# ----------------------------------------------------------------------------- checking


def short(value: Any, limit: int = 60) -> str:
    """repr(value) cut to `limit` characters (error messages never embed huge values)."""
    r = reprlib.Repr()
    r.maxstring, r.maxother, r.maxlist, r.maxdict, r.maxlevel = limit, limit, 6, 6, 3
    text = r.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def clip(text: str, limit: int = 500) -> str:
    """`text` cut to `limit` characters."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def value_problem(spec: KeySpec, value: Any, where: str) -> str | None:
    """Why `value` breaks the key's type or rule (a message naming `where`), or None."""
    kind, rule = spec.kind, spec.rule
    if kind is bool:
        return None if isinstance(value, bool) else f"{where}: expected true or false, got {short(value)}"
    if kind is str and not isinstance(value, str):
        return f"{where}: expected a string, got {type(value).__name__} {short(value)}"
    if kind in (int, float):
        ok = isinstance(value, numbers.Integral if kind is int else numbers.Real)
        if isinstance(value, bool) or not ok:
            return (f"{where}: expected {'an integer' if kind is int else 'a number'}, "
                    f"got {type(value).__name__} {short(value)}")
        if not math.isfinite(float(value)):
            return f"{where}: expected a finite number, got {short(value)}"
        if rule.bound is not None and not rule.bound.holds(float(value)):
            return f"{where}: must be {rule.bound.text()}, got {short(value)}"
        if rule.odd and int(value) % 2 == 0:
            return f"{where}: must be odd, got {short(value)}"
    allowed = rule.allowed()
    if allowed is not None and value not in allowed:
        return f"{where}: {short(value)} not one of {list(allowed)}"
    return None


def key_problems(spec: KeySpec, value: Any, where: str) -> list[str]:
    """Every problem of one key's value (each element of a list-valued key)."""
    if not spec.is_list:
        problem = value_problem(spec, value, where)
        return [problem] if problem else []
    if not isinstance(value, (list, tuple)):
        return [f"{where}: expected a list, got {type(value).__name__} {short(value)}"]
    found = (value_problem(spec, v, f"{where}[{i}]") for i, v in enumerate(value[:1000]))
    return [p for p in found if p]


def closest(name: Any, known: Iterable[str]) -> str:
    """' (did you mean `x`?)' for the closest known name, or ''."""
    match = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.6)
    return f" (did you mean `{match[0]}`?)" if match else ""


def flat_problems(flat: Mapping[str, Any], table: Mapping[str, KeySpec], prefix: str = "",
                  unknown: str | None = None) -> list[str]:
    """Every problem of a flat dict of keys: bad values, and (with `unknown`, the phrase that
    says what a key must be) unknown keys with their did-you-mean."""
    out = []
    for name, value in flat.items():
        if name in table:
            out += key_problems(table[name], value, f"{prefix}{name}")
        elif unknown is not None:
            out.append(f"{prefix}{clip(str(name), 60)}: unknown {unknown}{closest(name, table)}")
    return out


def problems_of(instance: Any) -> list[str]:
    """Every field of a dataclass instance checked against its declared rule."""
    table = table_of(type(instance))
    return [p for name, spec in table.items()
            for p in key_problems(spec, getattr(instance, name), name)]


def range_problems(spec: KeySpec, values: Iterable[Any], where: str) -> list[str]:
    """Problems of a search range's end points or choices (the key's own rule)."""
    return [p for i, v in enumerate(values) for p in key_problems(
        dataclasses.replace(spec, is_list=False), v, f"{where}[{i}]")]
