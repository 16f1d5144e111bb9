"""Sanity of a study's results: degenerate predictions (the `flag` / `degenerate` columns of
docs/CONTRACTS.md), whole modalities that are degenerate, data conditions searched inside cells and
features that were not normalised. What `check` finds goes to the top of the report and the index."""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from reports import baselines
from reports.html import esc
from reports.load import FIXED_CONDITIONS
from reports.tables import STAGES, searched_data_conditions

FLAG_MEANING = {"nan": "non-finite predictions", "one_class": "every prediction is the same class",
                "chance": "score within chance level",
                "untrained": "predicted by a single-modality head the recipe does not train"}
UNTRAINED = "untrained"  # study/training/sanity.py: not a broken prediction, an untrained head


@dataclass(frozen=True)
class Sanity:
    has_flags: bool  # the results carry the `flag` column
    flagged: pd.DataFrame  # one row per flagged row: trial_id, stage, split, fusion, condition, flag
    trials: tuple[str, ...]  # degenerate trials (a flag on av / audio_only / video_only)
    modalities: tuple[dict, ...]  # {condition, stage, n, flags}: every trial of that stage flagged
    searched_data: tuple[str, ...] = ()  # data conditions searched inside cells
    not_normalised: int = 0  # trials whose features were not z-scored
    opt_in: bool = False  # study.json says data conditions may be searched inside cells
    notes: tuple[str, ...] = field(default=())
    # degenerate trials of the search stage alone: short, often scheduler-stopped trials whose
    # flags the search's design expects; the rerun/final stages (the results) are in `trials`
    search_trials: tuple[str, ...] = ()

    @property
    def alarming(self) -> bool:
        return bool(self.modalities)


def _recorded_data_conditions(meta: dict) -> dict:
    """study.json's selection.data_conditions ({"searched": [...], "opt_in": bool}), {} if absent."""
    sel = meta.get("selection") if isinstance(meta.get("selection"), dict) else {}
    dc = sel.get("data_conditions")
    return dc if isinstance(dc, dict) else {}


def _opt_in(meta: dict) -> bool:
    spec = meta.get("spec") if isinstance(meta.get("spec"), dict) else {}
    return bool(spec.get("search_data_conditions") or _recorded_data_conditions(meta).get("opt_in"))


def _searched(results: pd.DataFrame, meta: dict) -> tuple[str, ...]:
    recorded = _recorded_data_conditions(meta).get("searched") or []
    found = searched_data_conditions(results) if results is not None and len(results) else []
    return tuple(dict.fromkeys([*map(str, recorded if isinstance(recorded, list) else []), *found]))


def _degenerate_trials(results: pd.DataFrame) -> tuple[str, ...]:
    ids = set()
    if "degenerate" in results:
        ids |= set(results.loc[results["degenerate"].fillna(False).astype(bool), "trial_id"])
    if "flag" in results:
        named = results[results["condition"].isin(FIXED_CONDITIONS) & results["flag"].notna()
                        & (results["flag"] != UNTRAINED)]
        ids |= set(named["trial_id"])
    return tuple(sorted(map(str, ids)))


def _split_by_stage(results: pd.DataFrame, ids: tuple[str, ...]) -> tuple[tuple, tuple]:
    """(degenerate trials of the stages the results come from, degenerate search trials)."""
    stage = results.drop_duplicates("trial_id").set_index("trial_id")["stage"] if "stage" in results else {}
    search = tuple(i for i in ids if stage.get(i) == "search")
    return tuple(i for i in ids if i not in search), search


def _modalities(rows: pd.DataFrame) -> tuple[dict, ...]:
    """Named conditions whose rows are flagged in every trial of a stage (latest stage first)."""
    out = []
    for stage in reversed(STAGES):
        for cond in FIXED_CONDITIONS:
            g = rows[(rows["stage"] == stage) & (rows["condition"] == cond)]
            if len(g) and g["flag"].notna().all():
                out.append({"condition": cond, "stage": stage, "n": int(g["trial_id"].nunique()),
                            "flags": ", ".join(sorted(set(g["flag"].astype(str))))})
    return tuple(out)


def check(results: pd.DataFrame | None, meta: dict) -> Sanity:
    empty = pd.DataFrame(columns=["trial_id", "stage", "split", "fusion", "condition", "flag"])
    notes = tuple(baselines.warning_lines(results, meta))  # the searched strategies vs the probes
    results = baselines.models(results)
    if results is None or results.empty:
        return Sanity(False, empty, (), (), _searched(results, meta), opt_in=_opt_in(meta))
    rows = results[results["condition"].notna()]
    has = "flag" in rows.columns
    flagged = rows[rows["flag"].notna()] if has else rows.iloc[:0]
    cols = [c for c in ("trial_id", "stage", "split", "fusion", "train_missing_rate", "condition", "flag")
            if c in rows.columns]
    norm = results.drop_duplicates("trial_id")["normalize"] if "normalize" in results else pd.Series(dtype=object)
    trials, search_trials = _split_by_stage(results, _degenerate_trials(results))
    return Sanity(has, flagged[cols].reset_index(drop=True), trials,
                  _modalities(rows) if has else (), _searched(results, meta),
                  int((norm.notna() & ~norm.fillna(True).astype(bool)).sum()), _opt_in(meta), notes,
                  search_trials)


def _trial_list(ids, limit: int = 12) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def warnings(s: Sanity) -> list[tuple[str, str]]:
    """(level, text) lines: "alarm" for a degenerate modality, "warn" for what the results carry,
    "note" for flags the design expects (the sanity section shows them, the banner does not)."""
    out = []
    for cond in dict.fromkeys(m["condition"] for m in s.modalities):
        ms = [m for m in s.modalities if m["condition"] == cond]
        where = ", ".join(f"{m['stage']} stage ({m['n']} of {m['n']})" for m in ms)
        flags = ", ".join(sorted({f for m in ms for f in m["flags"].split(", ")}))
        if flags == UNTRAINED:
            out.append(("alarm", f"UNTRAINED HEAD: {cond} is predicted by a single-modality head that the "
                        f"recipe does not train (unimodal_weight 0) in every trial of the {where}. Its scores "
                        "are not the model's, and the missing-modality rows (audio_only, video_only, miss_*, "
                        "robustness) are not results for this strategy."))
            continue
        out.append(("alarm", f"DEGENERATE MODALITY: {cond} predictions are degenerate in every trial of the "
                    f"{where}; flags: {flags}. Scores and comparisons on {cond} are not results, and neither is "
                    "a ranking of strategies that relies on them."))
    if s.trials:
        out.append(("warn", f"{len(s.trials)} trial(s) have degenerate predictions on av, audio_only or "
                    f"video_only: {_trial_list(list(s.trials), 6)} (all in Sanity checks)."))
    if s.search_trials:
        out.append(("note", f"Expected by the design: {len(s.search_trials)} search trial(s) have degenerate "
                    f"predictions on av, audio_only or video_only ({_trial_list(list(s.search_trials), 6)}). "
                    "Search trials are short (the scheduler stops weak ones after a few epochs), and a cell "
                    "trained without missing modalities (train_missing_rate 0) rarely sees one stream alone, "
                    "so a single-modality score at chance there is what the search is built to weed out; the "
                    "rerun and final stages, which the results come from, carry no such flag unless listed "
                    "above."))
    for name in s.searched_data:
        opt = "the spec opts in" if s.opt_in else "the spec does not say it opted in"
        out.append(("warn", f"Data condition searched inside cells: {name} varies between the search trials "
                    f"of one cell ({opt}), so each cell could pick its easiest data mix; cells do not compare "
                    "like with like."))
    out += [("warn", note) for note in s.notes]
    if s.not_normalised:
        out.append(("warn", f"{s.not_normalised} trial(s) ran on features that were not z-scored with "
                    "training statistics (normalize = false)."))
    return out


def banner_html(s: Sanity, href: str = "#sanity") -> str:
    lines = [(lvl, text) for lvl, text in warnings(s) if lvl != "note"]  # expected: sanity section only
    if not lines:
        return ""
    items = "".join(f"<li class='{lvl}'>{esc(text)}</li>" for lvl, text in lines)
    klass = "banner alarm" if s.alarming else "banner"
    return f"<div class='{klass}' role='alert'><ul>{items}</ul><a href='{esc(href)}'>details</a></div>"


def index_text(s: Sanity) -> str:
    """Short warning of one index row ("" when nothing is wrong)."""
    stages = {}
    for m in s.modalities:
        word = "UNTRAINED" if m["flags"] == UNTRAINED else "DEGENERATE"
        stages.setdefault((word, m["condition"]), []).append(m["stage"])
    parts = [f"{word} {cond} ({', '.join(st)})" for (word, cond), st in stages.items()]
    if s.trials:
        parts.append(f"{len(s.trials)} degenerate trial(s)")
    parts += [f"{n} searched in cells" for n in s.searched_data]
    if s.notes:
        parts.append("no strategy beats the baseline on dev")
    return "; ".join(parts)
