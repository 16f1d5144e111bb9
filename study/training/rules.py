"""The one table of per-key rules of a flat trial config (torch-free).

Types come from the dataclass annotations of ModelConfig, ProtocolConfig and TrainConfig
(`study.training.config` binds them), so a
new field is type-checked without an entry here; `BOUNDS` and `CHOICES` add ranges and choices.
The spec's `fixed:` values, `avstudy train --config/--set` and `config_from_flat` all check a
flat dict with `check_flat`, so `lr: -1`, `batch_size: "32"`, `dropout: 5`, `n_heads: 0`,
`schedule: four_pass`, `lr: .nan`, `use_shared: "no"` and `grad_clip: -1` fail naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import reprlib
from collections.abc import Mapping
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
        lo = "" if self.low is None else f"{'(' if self.low_open else '['}{self.low:g}"
        hi = "" if self.high is None else f"{self.high:g}{')' if self.high_open else ']'}"
        if self.high is None:
            return f"> {self.low:g}" if self.low_open else f">= {self.low:g}"
        return f"in {lo}, {hi}"


POSITIVE = Bound(0, low_open=True)
AT_LEAST_1 = Bound(1)
NON_NEGATIVE = Bound(0)
UNIT = Bound(0, 1)
UNIT_OPEN = Bound(0, 1, high_open=True)

BOUNDS: dict[str, Bound] = {
    # training
    "lr": POSITIVE, "weight_decay": NON_NEGATIVE, "batch_size": AT_LEAST_1, "max_epochs": AT_LEAST_1,
    "patience": AT_LEAST_1, "grad_clip": NON_NEGATIVE,
    # protocol
    "train_missing_rate": UNIT, "audio_only_share": UNIT, "modality_dropout": UNIT,
    "test_rates": UNIT_OPEN,
    # model
    **{k: AT_LEAST_1 for k in ("audio_dim", "video_dim", "proj_dim", "d_model", "n_heads",
                               "enc_layers", "kernel_size", "ff_mult", "head_hidden", "n_outputs",
                               "gated_hidden", "xattn_layers", "foal_proj_dim", "foal_layers")},
    "shared_layers": NON_NEGATIVE, "dropout": UNIT_OPEN, "recon_weight": NON_NEGATIVE,
    "unimodal_weight": NON_NEGATIVE, "foal_align_weight": NON_NEGATIVE,
    "foal_match_weight": NON_NEGATIVE, "foal_temperature": POSITIVE,
}


_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


def field_types(classes) -> dict[str, tuple[type, bool]]:
    """{flat key: (element type, is a list)} from the config dataclasses' annotations."""
    out = {}
    for cls in classes:
        for f in dataclasses.fields(cls):
            ann = str(f.type).replace(" ", "")
            if ann.startswith("tuple[") and ann.endswith(",...]"):
                out[f.name] = (_TYPES.get(ann[len("tuple["):-len(",...]")], object), True)
            elif ann in _TYPES:
                out[f.name] = (_TYPES[ann], False)
    return out


def short(value: Any, limit: int = 60) -> str:
    """repr(value) cut to `limit` characters (error messages never embed huge values)."""
    r = reprlib.Repr()
    r.maxstring, r.maxother, r.maxlist, r.maxdict, r.maxlevel = limit, limit, 6, 6, 3
    text = r.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def clip(text: str, limit: int = 500) -> str:
    """`text` cut to `limit` characters."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check_value(key: str, value: Any, kind: type, where: str | None = None,
                choices: Mapping[str, tuple] | None = None) -> Any:
    """The value, checked against `kind`, BOUNDS and the choices; ValueError names `where`."""
    where = where or key
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false, got {short(value)}")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {type(value).__name__} {short(value)}")
    elif kind in (int, float):
        ok = isinstance(value, numbers.Integral if kind is int else numbers.Real)
        if isinstance(value, bool) or not ok:
            raise ValueError(f"{where}: expected {'an integer' if kind is int else 'a number'}, "
                             f"got {type(value).__name__} {short(value)}")
        if not math.isfinite(float(value)):
            raise ValueError(f"{where}: expected a finite number, got {short(value)}")
        bound = BOUNDS.get(key)
        if bound is not None and not bound.holds(float(value)):
            raise ValueError(f"{where}: must be {bound.text()}, got {short(value)}")
    allowed = (choices or {}).get(key)
    if allowed is not None and value not in allowed:
        raise ValueError(f"{where}: {short(value)} not one of {list(allowed)}")
    return value


def check_flat(flat: Mapping[str, Any], types: Mapping[str, tuple[type, bool]],
               choices: Mapping[str, tuple], prefix: str = "") -> None:
    """Raise ValueError naming the first key of `flat` whose value breaks its rule (`types` from
    `field_types`, ranges from BOUNDS, `choices` per key). `study.training.config.check_flat` binds
    the trial config's tables. Keys that are not config fields are left to the caller."""
    for key, value in flat.items():
        if key not in types:
            continue
        kind, is_list = types[key]
        where = f"{prefix}{key}"
        if is_list:
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"{where}: expected a list, got {type(value).__name__} {short(value)}")
            for i, v in enumerate(value[:1000]):
                check_value(key, v, kind, f"{where}[{i}]", choices)
        else:
            check_value(key, value, kind, where, choices)
