"""`avstudy spaces [NAME ... | SPEC]`: every search space's parameters with their ranges, found
by running each define-by-run space with a recording trial over all its categorical branches;
for a spec, the spaces as that study searches them (its `search:` ranges on top). Torch-free."""

from __future__ import annotations

from collections.abc import Mapping

from study.runs.spec import StudySpec


class RecordingTrial:
    """A stand-in Optuna trial: records each suggestion and answers from `forced` choices."""

    def __init__(self, forced: Mapping[str, int]):
        self.forced = dict(forced)
        self.seen: dict[str, dict] = {}

    def suggest_categorical(self, name: str, choices):
        self.seen[name] = {"kind": "categorical", "choices": list(choices)}
        return list(choices)[self.forced.get(name, 0)]

    def suggest_float(self, name: str, low, high, *, step=None, log=False):
        self.seen[name] = {"kind": "float", "low": low, "high": high, "log": log, "step": step}
        return low

    def suggest_int(self, name: str, low, high, *, step=1, log=False):
        self.seen[name] = {"kind": "int", "low": low, "high": high, "log": log, "step": step}
        return low


def introspect(space_fn, max_runs: int = 256) -> dict[str, dict]:
    """{parameter: description + 'when'} over every categorical branch of a define-by-run space.

    A parameter suggested only on some branches gets `when`: the choices that lead to it.
    """
    runs: list[tuple[dict, dict]] = []
    todo: list[dict[str, int]] = [{}]
    done: set[tuple] = set()
    while todo and len(runs) < max_runs:
        forced = todo.pop()
        key = tuple(sorted(forced.items()))
        if key in done:
            continue
        done.add(key)
        trial = RecordingTrial(forced)
        space_fn(trial)
        runs.append((forced, trial.seen))
        for name, d in trial.seen.items():
            if d["kind"] == "categorical" and name not in forced:
                todo += [{**forced, name: i} for i in range(1, len(d["choices"]))] + [{**forced, name: 0}]
    params: dict[str, dict] = {}
    for _forced, seen in runs:
        for name, d in seen.items():
            params.setdefault(name, {**d, "in_runs": 0})["in_runs"] += 1
    for name, d in params.items():
        if d.pop("in_runs") < len(runs):
            conds = _branch_conditions(name, runs)
            d["when"] = conds
    return params


def _branch_conditions(name: str, runs) -> str:
    """The categorical choices shared by every branch where `name` is suggested (a short note)."""
    with_it = [(forced, seen) for forced, seen in runs if name in seen]
    common = None
    for forced, seen in with_it:
        picks = {n: repr(seen[n]["choices"][forced.get(n, 0)]) for n in seen
                 if seen[n]["kind"] == "categorical" and n != name}
        common = picks if common is None else {k: v for k, v in common.items() if picks.get(k) == v}
    parts = [f"{k}={v}" for k, v in sorted((common or {}).items())]
    return ", ".join(parts) if parts else "on some branches"


def describe_param(d: dict) -> str:
    if d["kind"] == "categorical":
        text = "one of " + ", ".join(map(str, d["choices"]))
    else:
        scale = " (log)" if d.get("log") else ""
        step = f" step {d['step']}" if d.get("step") not in (None, 1) else ""
        text = f"{d['kind']} [{d['low']:g}, {d['high']:g}]{scale}{step}"
    return text + (f"   when {d['when']}" if d.get("when") else "")


def spaces_text(names: list[str] | None = None) -> str:
    from search_spaces import SPACES

    names = names or list(SPACES)
    unknown = [n for n in names if n not in SPACES]
    if unknown:
        raise ValueError(f"unknown search space(s) {unknown}; choose from {sorted(SPACES)}")
    out = []
    for name in names:
        doc = " ".join((SPACES[name].__doc__ or "").strip().split("\n\n")[0].split())
        out.append(f"{name}: {doc}")
        params = introspect(SPACES[name])
        width = max((len(p) for p in params), default=0)
        out += [f"  {p.ljust(width)}  {describe_param(d)}" for p, d in params.items()]
    return "\n".join(out)


SPEC_SEARCH = "search:"  # the `space` of a parameter the spec's `search:` block adds


def searched(spec: StudySpec) -> dict[str, dict]:
    """What a study searches, as study.json records it: {parameter: its description (kind,
    range or choices, `when`), `text` (as `avstudy spaces` prints it) and `space` (the named
    space, or "search:" for a key only the spec's block adds)}; the spec's `search:` ranges
    replace a space's own, fixed keys are never searched."""
    from search_spaces import SPACES, suggest_range

    out: dict[str, dict] = {}
    for name in spec.spaces:
        for p, d in introspect(SPACES[name]).items():
            if p not in spec.fixed and p not in out:
                out[p] = {**_override(p, d, spec), "space": name}
    for k, rng in spec.search.items():
        if k not in out:
            out[k] = {**_described(k, rng, suggest_range), "space": SPEC_SEARCH}
    return {p: {**d, "text": describe_param(d)} for p, d in out.items()}


def spec_spaces_text(spec: StudySpec) -> str:
    """What a study searches: each named space with the spec's `search:` ranges in place of the
    space's own, the spec's own keys, and the fixed keys (never suggested)."""
    params = searched(spec)
    out = [f"study {spec.name}: spaces {list(spec.spaces) or '[]'}"]
    for name in spec.spaces:
        out.append(f"{name}:")
        out += _param_lines({p: d for p, d in params.items() if d["space"] == name})
    own = {p: d for p, d in params.items() if d["space"] == SPEC_SEARCH}
    if own:
        out.append("search (the spec's own keys):")
        out += _param_lines(own)
    if spec.fixed:
        out.append("fixed: " + ", ".join(f"{k}={v!r}" for k, v in sorted(spec.fixed.items())))
    return "\n".join(out)


def _override(name: str, d: dict, spec: StudySpec) -> dict:
    if name not in spec.search:
        return d
    from search_spaces import suggest_range

    return {**_described(name, spec.search[name], suggest_range), "note": "range from the spec's search:"}


def _described(name: str, rng, suggest_range) -> dict:
    trial = RecordingTrial({})
    suggest_range(trial, name, rng)
    return trial.seen[name]


def _param_lines(params: Mapping[str, dict]) -> list[str]:
    width = max((len(p) for p in params), default=0)
    return [f"  {p.ljust(width)}  {d.get('text') or describe_param(d)}"
            + (f"   ({d['note']})" if d.get("note") else "") for p, d in params.items()]
