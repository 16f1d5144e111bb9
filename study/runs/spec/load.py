"""Reading a spec file: YAML with duplicate keys refused, `--set` overrides applied, validated by
`spec_from_dict` (and, given the cluster, checked to fit)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from study.keys import clip, short
from study.runs.spec.parse import TOP_KEYS, spec_from_dict
from study.runs.spec.placement import check_resources
from study.runs.spec.schema import SpecError, StudySpec


def apply_overrides(raw: Any, overrides: Mapping[str, Any]) -> Any:
    """`sweep --set KEY=VALUE`: a dotted spec key (`budget.max_epochs`, `top_k`) replaces that
    value; any other key is a training config key and goes into `fixed` (validated there)."""
    if not overrides:
        return raw
    raw = dict(raw) if isinstance(raw, Mapping) else raw
    for key, value in overrides.items():
        head, *rest = key.split(".")
        if head not in TOP_KEYS:
            raw["fixed"] = {**(raw.get("fixed") or {}), key: value}
            continue
        node = raw
        for part in [head, *rest][:-1]:
            if not isinstance(node.get(part, {}), Mapping):
                raise SpecError(f"--set {key}: `{part}` is not a mapping in the spec")
            node[part] = dict(node.get(part) or {})
            node = node[part]
        node[[head, *rest][-1]] = value
    return raw


def load_spec(path: str | Path, cluster: Mapping[str, float] | None = None,
              overrides: Mapping[str, Any] | None = None) -> StudySpec:
    """Read and validate a YAML spec (with `overrides` applied, see apply_overrides); with
    `cluster` ({"CPU", "GPU"}) also check it fits."""
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(), Loader=UniqueKeyLoader)
    except (yaml.YAMLError, RecursionError) as exc:
        raise SpecError(f"{path}: not valid YAML: {clip(str(exc), 500)}") from None
    except (UnicodeDecodeError, IsADirectoryError) as exc:
        raise SpecError(f"{path}: not a readable YAML text file ({type(exc).__name__})") from None
    try:
        spec = spec_from_dict(apply_overrides(raw, overrides or {}))
        if cluster is not None:
            check_resources(spec, cluster)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None
    except RecursionError:
        raise SpecError(f"{path}: nested too deeply") from None
    return spec


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that rejects a key given twice in one mapping (YAML silently keeps the
    last one, so a spec with two `budget:` blocks would run the wrong budget)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the base class reports it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {short(key)}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)
