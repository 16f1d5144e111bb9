"""Checks between a spec's sections, once each section is valid on its own: searched vs fixed
keys, cell keys, the model's cross-key rules on each cell's configuration, objectives that fit the
task and the imbalance measures, data conditions searched inside a cell. Each problem names its key.
"""

from __future__ import annotations

from study.runs.spec.schema import METRICS, StudySpec
from study.training.config import model_config_problems

CELL_KEYS = frozenset({"fusion", "train_missing_rate", "max_epochs", "seed", "task", "label_kind",
                       "select_condition", "select_metric", "select_mode"})
"""Keys the cells, budget, seeds, task and objectives set: never `fixed:` or `search:`."""


def consistency(spec: StudySpec) -> list[str]:
    """Problems between sections, each naming a key."""
    out = []
    if spec.searcher.kind == "grid" and (spec.spaces or spec.search):
        out.append("spaces: searcher.kind=grid runs each cell with the `fixed` params "
                   "only; leave `spaces` and `search` empty or use optuna-tpe/random")
    if spec.searcher.kind != "grid" and not (spec.spaces or spec.search):
        out.append(f"spaces: searcher.kind={spec.searcher.kind} needs at least one space or a `search:` block")
    for section, keys in (("fixed", spec.fixed), ("search", spec.search)):
        out += [f"{section}.{k}: set by cells/budget/seeds/task/objectives, not by `{section}`"
                for k in sorted(set(keys) & CELL_KEYS)]
    out += [f"search.{k}: also fixed (fixed.{k}); a key is searched or fixed, not both"
            for k in sorted(set(spec.fixed) & set(spec.search))]
    out += _data_conditions(spec) + _model_problems(spec) + _objective_problems(spec)
    if spec.scheduler.kind == "asha" and spec.scheduler.grace_period > spec.budget.max_epochs:
        out.append(f"scheduler.grace_period: {spec.scheduler.grace_period} > "
                   f"budget.max_epochs={spec.budget.max_epochs}")
    if spec.top_k > spec.budget.trials_per_cell:  # top_k is chosen per cell
        out.append(f"top_k: {spec.top_k} > trials_per_cell={spec.budget.trials_per_cell}")
    return out


def _model_problems(spec: StudySpec) -> list[str]:
    """Rules that tie keys together (d_model divisible by foal_heads, ...), checked on each
    cell's fixed configuration, so `plan` and the sweep never meet them mid-way."""
    where: dict[str, list[str]] = {}
    for fusion in spec.cells.fusion:
        for problem in model_config_problems({**spec.fixed, "fusion": fusion}, spec.model_preset,
                                             spec.task.kind):
            where.setdefault(problem, []).append(fusion)
    return [f"fixed: {problem} (with model_preset {spec.model_preset}, in the cells of fusion "
            f"{', '.join(fusions)})" for problem, fusions in where.items()]


def _objective_problems(spec: StudySpec) -> list[str]:
    """An objective's metric must exist for the task (macro_f1 for categorical, CCC for dimensional)."""
    categorical = ("macro_f1", "accuracy", "uar")
    wrong = categorical if spec.task.kind == "dimensional" else tuple(m for m in METRICS if m.startswith("ccc"))
    out = [f"objectives[{i}].metric: {o.metric} is not a metric of a {spec.task.kind} task"
           for i, o in enumerate(spec.objectives) if o.metric in wrong]
    return out + _imbalance_objective_problems(spec)


def _imbalance_objective_problems(spec: StudySpec) -> list[str]:
    """MEI and MLI as objectives: MLI is its own metric and needs the gradient norms logged; the
    MEI of a loss is not defined (docs/imbalance.md)."""
    out = []
    logged = spec.fixed.get("log_grad_norms", True) and "log_grad_norms" not in spec.search
    for i, o in enumerate(spec.objectives):
        where = f"objectives[{i}]"
        if (o.condition == "mli") != (o.metric == "mli"):
            out.append(f"{where}: metric mli is the one metric of condition mli (got condition "
                       f"{o.condition}, metric {o.metric})")
        if o.condition == "mli" and not logged:
            out.append(f"{where}.condition: mli needs the gradient norms: fixed.log_grad_norms is "
                       "false or searched")
        if o.condition == "mei" and o.metric == "loss":
            out.append(f"{where}.metric: the MEI of a loss is not defined; use a score metric")
    return out


def _data_conditions(spec: StudySpec) -> list[str]:
    """A data condition (train_missing_rate, audio_only_share) is a cell dimension or fixed;
    searching one inside a cell needs `search_data_conditions: true`."""
    from search_spaces import DATA_CONDITIONS, space_keys

    if spec.cells.train_missing:  # per-modality cells fix both data conditions
        searched = set(spec.search) | {k for name in spec.spaces for k in space_keys(name)}
        return [f"{where}.audio_only_share: fixed by cells.train_missing (per-modality rates)"
                for where, keys in (("fixed", spec.fixed), ("search", searched))
                if "audio_only_share" in keys]
    if spec.search_data_conditions:
        return []
    out = []
    for i, name in enumerate(spec.spaces):
        searched = sorted((space_keys(name) & set(DATA_CONDITIONS)) - set(spec.fixed) - {
            "train_missing_rate"})  # a cell dimension, always fixed by the cell
        if searched:
            out.append(f"spaces[{i}]: {name!r} searches the data condition(s) {searched} "
                       "inside each cell; fix them under `fixed`, or set "
                       "`search_data_conditions: true` (the report flags it)")
    out += [f"search.{k}: a data condition; make it a cell dimension or fixed, or set "
            "`search_data_conditions: true` (the report flags it)"
            for k in sorted(set(spec.search) & set(DATA_CONDITIONS))]
    return out
