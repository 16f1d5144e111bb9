"""How a study selects, all on dev (torch-free): the checkpoint (best epoch) of every trial, the
top-k configurations of each cell, and the seeds of the search and rerun stages.

- Checkpoint: the best dev epoch by the first objective's condition and metric (its mode), when
  that condition is evaluated every epoch; otherwise `av` and the task's primary metric.
- Top-k: per cell, Pareto rank over every objective on search/dev (rank 0 = not dominated by any
  trial of the cell), then the first objective, then the trial's configuration (its canonical
  JSON: content, not Tune's random trial id, so a resumed study breaks a tie as an uninterrupted
  one does). With one objective this is the first objective alone.
- Seeds: the spec's `seeds` are the rerun seeds; the search trials use seeds above all of them,
  `max(seeds) + 1` (the grid searcher: `max(seeds) + 1 + i` for its i-th trial), so no rerun
  repeats a search trial and the rerun's dev scores are fresh.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from study import pareto
from study.training.config import SELECT_CONDITIONS, SELECT_METRICS


def base_flat(spec, cell: dict, max_epochs: int, seed: int) -> dict:
    """Keys a study fixes for every trial of a cell (never searched); the checkpoint is chosen
    on the first objective (checkpoint_selection)."""
    condition, metric, mode = checkpoint_selection(spec)
    return {**spec.fixed, **cell, "max_epochs": max_epochs, "seed": seed,
            "task": spec.task.kind, "label_kind": spec.task.label_kind,
            "select_condition": condition, "select_metric": metric, "select_mode": mode}


def checkpoint_selection(spec) -> tuple[str, str, str]:
    """(condition, metric, mode) every trial of the study chooses its best dev epoch on."""
    o = spec.objectives[0]
    if o.condition in SELECT_CONDITIONS and o.metric in SELECT_METRICS:
        return o.condition, o.metric, o.mode
    return "av", spec.primary_metric, "max"


def search_seed(spec) -> int:
    """Seed of the search trials (grid: the first of consecutive seeds); never a rerun seed."""
    return max(spec.seeds) + 1


def search_seeds(spec) -> list[int]:
    n = spec.budget.trials_per_cell if spec.searcher.kind == "grid" else 1
    return [search_seed(spec) + i for i in range(n)]


def order_top(values: np.ndarray, ties: Sequence[str]) -> list[int]:
    """Indices sorted by (Pareto rank, first objective descending, tie key); rows whose first
    objective is NaN are left out. `values` (N, M) are signed so that larger is better; `ties`
    (N,) must be reproducible across runs (a configuration, never a random trial id)."""
    keep = [i for i in range(len(ties)) if not np.isnan(values[i, 0])]
    if not keep:
        return []
    ranks = pareto.ranks(values[keep])
    order = sorted(range(len(keep)), key=lambda j: (ranks[j], -values[keep[j], 0], ties[keep[j]]))
    return [keep[j] for j in order]


def searched_data_conditions(spec) -> list[str]:
    """Data conditions a space searches inside each cell (only with `search_data_conditions`)."""
    from search_spaces import DATA_CONDITIONS, space_keys

    if not getattr(spec, "search_data_conditions", False):
        return []
    keys = set().union(*(space_keys(n) for n in spec.spaces)) if spec.spaces else set()
    return sorted((keys & set(DATA_CONDITIONS)) - set(spec.fixed) - {"train_missing_rate"})


def selection_note(spec) -> dict:
    """What study.json records under `selection`, for the report to print."""
    keys = [f"{o.key} ({o.mode})" for o in spec.objectives]
    if len(keys) > 1:
        rule = "pareto_then_first"
        text = (f"top {spec.top_k} per cell on search/dev: Pareto rank over {', '.join(keys)}, "
                f"then {keys[0]}; ties by configuration")
    else:
        rule = "first_objective"
        text = f"top {spec.top_k} per cell on search/dev by {keys[0]}; ties by configuration"
    cond, metric, mode = checkpoint_selection(spec)
    return {
        "split": "dev",
        "top_k": {"k": spec.top_k, "rule": rule, "objectives": [o.key for o in spec.objectives],
                  "text": text},
        "checkpoint": {"condition": cond, "metric": metric, "mode": mode,
                       "text": f"best dev epoch by {cond} {metric} ({mode})"},
        "seeds": {"search": search_seeds(spec), "rerun": list(spec.seeds),
                  "text": "rerun seeds are fresh: the search trials use seeds above every rerun "
                          "seed"},
        "data_conditions": {"searched": searched_data_conditions(spec),
                            "opt_in": bool(getattr(spec, "search_data_conditions", False))},
    }
