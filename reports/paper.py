"""The numbers a paper reports, as typed data: each strategy's dev-selected configuration (and each
baseline) on the shown split, per run (one trained model on one fold and seed), its interval over
folds x seeds, and the paired comparisons of every pair of strategies, corrected together.

    runs = gather_runs(results, ctx, meta, columns)   # Runs: one row per run, one column per score
    comps = compare(runs, columns, "holm")           # Comparisons: every pair x column, Holm-corrected
    leaderboard_table(runs, comps) / conditions_table(...) / folds_table(runs)   # ScoreTable

Selection stays on dev (gather.pick): a strategy's row is the configuration dev chose; its test
runs are what the tables show. Baselines (`kind` = "baseline", docs/CONTRACTS.md) are not
selected: their rows of the shown split are taken as they are (one run per fold). Pairing: by
(fold, seed) when both sides have several seeds per fold; when one side has a single run per
fold (a baseline), by fold, the other side's seeds averaged within the fold."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import cached_property

import pandas as pd

from reports import gather
from reports.load import FIXED_CONDITIONS, Context
from reports.stats import ALPHA, CORRECTIONS, Interval, adjust, interval, paired
from reports.tables import condition_value, is_area, summary_conditions

MODEL, BASELINE = "model", "baseline"


# ---------------------------------------------------------------- columns of the new layouts

def kinds(results: pd.DataFrame) -> pd.Series:
    """`kind` per row: "model" where the column is absent or null (studies before baselines)."""
    if "kind" not in results:
        return pd.Series(MODEL, index=results.index)
    return results["kind"].where(results["kind"].notna(), MODEL).astype(str)


def folds(rows: pd.DataFrame) -> pd.Series:
    """`fold` per row: 0 where the column is absent or null (one partition)."""
    if "fold" not in rows:
        return pd.Series(0, index=rows.index, dtype="int64")
    return pd.to_numeric(rows["fold"], errors="coerce").fillna(0).astype("int64")


def study_selected_on_test(meta: dict) -> bool:
    """study.json `selected_on_test` (a protocol that selects on test, e.g. IEMOCAP's Foal-Net)."""
    return bool(meta.get("selected_on_test")) or bool((meta.get("spec") or {}).get("selected_on_test"))


def baseline_labels(rows: pd.DataFrame) -> pd.Series:
    """"probe [baseline]", or "probe · <cell> [baseline]" when the baselines differ by cell."""
    name = rows["fusion"].fillna("baseline").astype(str)
    if "cell" in rows and rows["cell"].nunique() > 1:
        name = name + " · " + rows["cell"].fillna("").astype(str)
    return name + " [baseline]"


@dataclass(frozen=True)
class Column:
    """One score of a table: `metric` on `condition` (worst_single: the worse single modality)."""

    condition: str
    metric: str
    maximize: bool = True

    @property
    def label(self) -> str:
        return f"{self.condition} {self.metric}"


def summary_columns(ctx: Context) -> tuple[Column, ...]:
    """The study's objectives (every declared one), else its first objective."""
    objs = ctx.objectives or ((ctx.condition, ctx.metric, ctx.maximize),)
    return tuple(dict.fromkeys(Column(c, m, mx) for c, m, mx in objs))


def condition_columns(results: pd.DataFrame, ctx: Context) -> tuple[Column, ...]:
    """The primary metric on av, audio_only, video_only and every family's area (robustness,
    robustness_<family>) that the results hold."""
    conds = [c for c in summary_conditions(results["condition"].dropna().unique())
             if c in FIXED_CONDITIONS or is_area(c)]
    return tuple(Column(c, ctx.metric, ctx.maximize) for c in conds)


# ---------------------------------------------------------------- runs

@dataclass(frozen=True)
class Runs:
    """One row per run on the shown split: strategy, kind, fold, seed, trial_id, selected_on_test
    and one column per Column.label."""

    values: pd.DataFrame
    columns: tuple[Column, ...]
    strategies: tuple[str, ...]  # models by dev objective (best first), then baselines by name
    dev_objective: pd.Series  # strategy -> its configuration's dev objective (selection); no baselines
    pick: gather.Pick
    note: str  # the selection and the shown split, as the report's sections state them

    @property
    def shown(self) -> tuple[str, str]:
        return self.pick.show

    @cached_property
    def _groups(self) -> dict[str, pd.DataFrame]:
        return {str(k): g for k, g in self.values.groupby("strategy", sort=False)}

    def of(self, strategy: str) -> pd.DataFrame:
        return self._groups.get(strategy, self.values.iloc[:0])

    def kind(self, strategy: str) -> str:
        return str(self.of(strategy)["kind"].iloc[0])

    def selected_on_test(self, strategy: str) -> bool:
        return bool(self.of(strategy)["selected_on_test"].any())

    def design(self, strategy: str) -> str:
        """"5 folds x 3 seeds" (or "3 seeds", "1 run") of a strategy's runs."""
        v = self.of(strategy)
        nf, ns = v["fold"].nunique(), v["seed"].nunique()
        if nf > 1:
            return f"{nf} folds x {ns} seed{'s' if ns > 1 else ''}"
        return f"{ns} seeds" if ns > 1 else f"{len(v)} run{'s' if len(v) != 1 else ''}"


def _run_values(rows: pd.DataFrame, columns) -> pd.DataFrame:
    """(trial_id) x Column.label: each column's value per run (worst_single from the pair)."""
    out = pd.DataFrame(index=pd.Index(rows["trial_id"].unique(), name="trial_id"))
    for metric in dict.fromkeys(c.metric for c in columns):
        if metric not in rows:
            continue
        wide = rows.pivot_table(index="trial_id", columns="condition", values=metric, aggfunc="mean")
        for col in (c for c in columns if c.metric == metric):
            out[col.label] = condition_value(wide, col.condition, col.maximize)
    return out.reindex(columns=[c.label for c in columns])


def _shown_rows(results: pd.DataFrame, ctx: Context, meta: dict) -> tuple[pd.DataFrame, gather.Pick] | None:
    kind = kinds(results)
    p = gather.pick(results[kind != BASELINE], ctx, by=("fusion",))
    if p is None:
        return None
    models = p.rows.assign(strategy=p.rows["fusion"].astype(str), kind=MODEL)
    base = results[(kind == BASELINE) & (results["split"] == p.show[1]) & results["condition"].notna()]
    base = base.assign(strategy=baseline_labels(base), kind=BASELINE)
    rows = pd.concat([models, base], ignore_index=True)
    flag = rows["selected_on_test"].fillna(False).astype(bool) if "selected_on_test" in rows else False
    return rows.assign(fold=folds(rows), selected_on_test=flag | study_selected_on_test(meta)), p


def gather_runs(results: pd.DataFrame, ctx: Context, meta: dict, columns) -> Runs | None:
    """The runs of each strategy's dev-selected configuration and of each baseline on the shown
    split (final/test when the final stage covers every choice); None when nothing is scored."""
    got = _shown_rows(results, ctx, meta)
    if got is None:
        return None
    rows, p = got
    columns = tuple(columns)
    info = rows.drop_duplicates("trial_id").set_index("trial_id")[["strategy", "kind", "fold", "seed",
                                                                    "selected_on_test"]]
    values = info.join(_run_values(rows, columns)).reset_index()
    dev = p.best.assign(strategy=p.best["fusion"].astype(str)).set_index("strategy")["objective"]
    dev = dev.sort_values(ascending=not ctx.maximize, kind="stable")
    models = [s for s in dev.index if s in set(values["strategy"])]
    bases = sorted(set(values.loc[values["kind"] == BASELINE, "strategy"]))
    note = p.note(ctx) + (" Baselines: their own rows of that split, never selected." if bases else "")
    return Runs(values, columns, tuple(models + bases), dev, p, note)


def cell(runs: Runs, strategy: str, column: Column) -> Interval:
    return interval(runs.of(strategy)[column.label].to_numpy())


# ---------------------------------------------------------------- paired comparisons

def aligned(a: pd.DataFrame, b: pd.DataFrame, labels) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The paired runs of two strategies (rows aligned, columns `labels`) and how they were paired."""
    labels = list(labels)
    single = any(r.groupby("fold")["seed"].nunique().max() <= 1 for r in (a, b) if len(r))
    if single:  # a baseline (one run per fold): per-fold means of the other side's seeds
        ma, mb = a.groupby("fold")[labels].mean(), b.groupby("fold")[labels].mean()
        keys = ma.index.intersection(mb.index)
        return ma.loc[keys], mb.loc[keys], "fold (mean over seeds)"
    ia, ib = a.set_index(["fold", "seed"])[labels], b.set_index(["fold", "seed"])[labels]
    ia, ib = ia[~ia.index.duplicated()], ib[~ib.index.duplicated()]
    keys = ia.index.intersection(ib.index)
    return ia.loc[keys], ib.loc[keys], "fold, seed"


COMPARISON_COLUMNS = ["a", "b", "column", "condition", "metric", "n", "pairing", "mean_diff", "sd_diff", "ci_lo",
                      "ci_hi", "ci_method", "d_z", "test", "p_value", "p_adjusted", "significant"]


@dataclass(frozen=True)
class Comparisons:
    """Every pair of strategies on every column (a - b), corrected together as one family."""

    table: pd.DataFrame  # COMPARISON_COLUMNS
    correction: str  # statsmodels method name: "holm" | "fdr_bh"
    alpha: float = ALPHA

    @property
    def name(self) -> str:
        return CORRECTIONS[self.correction]

    @property
    def m(self) -> int:
        """Tests in the family (comparisons with a p-value)."""
        return int(self.table["p_value"].notna().sum())

    @cached_property
    def _index(self) -> dict[tuple[str, str, str], int]:
        t = self.table
        return {(str(a), str(b), str(c)): i for i, (a, b, c) in enumerate(zip(t["a"], t["b"], t["column"]))}

    def find(self, a: str, b: str, column: Column) -> pd.Series | None:
        """The comparison of a and b on a column (stored as a - b or b - a: check its `a`)."""
        i = self._index.get((a, b, column.label), self._index.get((b, a, column.label)))
        return None if i is None else self.table.iloc[i]

    def significant(self, a: str, b: str, column: Column) -> bool:
        r = self.find(a, b, column)
        return bool(r is not None and r["significant"])

    def text(self) -> str:
        return (f"paired t-test per pair and column, {self.name}-corrected across the {self.m} comparisons of the "
                f"paired table (alpha = {self.alpha:g})")


def compare(runs: Runs, columns, correction: str = "holm") -> Comparisons:
    """Paired comparison of every pair of strategies (names in sorted order, a - b) on every column."""
    columns = tuple(columns)
    out = []
    for a, b in itertools.combinations(sorted(runs.strategies, key=str), 2):
        x, y, how = aligned(runs.of(a), runs.of(b), [c.label for c in columns])
        for col in columns:
            r = paired(x[col.label].to_numpy(), y[col.label].to_numpy())
            out.append({"a": a, "b": b, "column": col.label, "condition": col.condition, "metric": col.metric,
                        "n": r.n, "pairing": how, "mean_diff": r.diff.mean, "sd_diff": r.diff.sd,
                        "ci_lo": r.diff.lo, "ci_hi": r.diff.hi, "ci_method": r.diff.method, "d_z": r.d_z,
                        "test": r.test, "p_value": r.p_value})
    order = {c.label: i for i, c in enumerate(columns)}
    t = pd.DataFrame(out, columns=COMPARISON_COLUMNS[:-2])
    t = t.sort_values("column", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)
    adj, rej = adjust(t["p_value"].to_numpy(), correction)
    return Comparisons(t.assign(p_adjusted=adj, significant=rej), correction)


# ---------------------------------------------------------------- tables

STAT_COLUMNS = ["strategy", "column", "group", "mean", "sd", "n", "ci_lo", "ci_hi", "ci_method", "best",
                "worse_than_best"]


@dataclass(frozen=True)
class ScoreTable:
    """Rows = strategies (and baselines), columns = scores; each cell an interval over runs.
    `stats` is long (STAT_COLUMNS, the CSV); `best` marks the best mean of a column, and
    `worse_than_best` a cell whose paired comparison with that best survives the correction."""

    name: str  # file stem of the export
    title: str
    caption: str
    info: pd.DataFrame  # index = strategy, in row order: kind, selection, ... (per-row columns)
    stats: pd.DataFrame
    columns: tuple[str, ...]  # column labels in order
    groups: tuple[str, ...]  # each column's group header ("" when none)

    def at(self, strategy: str, column: str) -> pd.Series | None:
        s = self.stats[(self.stats["strategy"] == strategy) & (self.stats["column"] == column)]
        return s.iloc[0] if len(s) else None


def _best(stats: pd.DataFrame, maximize: dict[str, bool]) -> pd.Series:
    """Per row of `stats`: its mean is the best (direction of its column) of its column."""
    best = pd.Series(False, index=stats.index)
    for col, g in stats.dropna(subset=["mean"]).groupby("column", sort=False):
        v = g["mean"] if maximize[col] else -g["mean"]
        best.loc[v[v == v.max()].index] = True
    return best


def _stats(runs: Runs, columns, comps: Comparisons | None, group: str = "",
           subset=None, suffix: str = "") -> pd.DataFrame:
    out = []
    for col in columns:
        for s in runs.strategies:
            v = runs.of(s)
            v = v[subset(v)] if subset is not None else v
            iv = interval(v[col.label].to_numpy())
            out.append({"strategy": s, "column": col.label + suffix, "group": group or "", "mean": iv.mean,
                        "sd": iv.sd, "n": iv.n, "ci_lo": iv.lo, "ci_hi": iv.hi, "ci_method": iv.method})
    df = pd.DataFrame(out, columns=STAT_COLUMNS[:-2])
    df["best"] = _best(df, {c.label + suffix: c.maximize for c in columns})
    df["worse_than_best"] = False
    if comps is not None:
        for col in columns:
            rows = df[df["column"] == col.label]
            top = rows.loc[rows["best"], "strategy"].tolist()
            if len(top) == 1:
                worse = rows["strategy"].map(lambda s, t=top[0], c=col: s != t and comps.significant(s, t, c))
                df.loc[worse.index, "worse_than_best"] = worse.astype(bool)
    return df


def _info(runs: Runs) -> pd.DataFrame:
    rows = []
    for s in runs.strategies:
        base = runs.kind(s) == BASELINE
        sel = "test (selected_on_test)" if runs.selected_on_test(s) else ("none (baseline)" if base else
                                                                          f"{runs.pick.select[0]}/dev")
        rows.append({"strategy": s, "kind": runs.kind(s), "selection": sel, "runs": runs.design(s),
                     f"dev objective ({runs.pick.select[0]})": runs.dev_objective.get(s, math.nan)})
    return pd.DataFrame(rows).set_index("strategy")


def _split_text(runs: Runs) -> str:
    return f"{runs.shown[0]} stage, {runs.shown[1]} split"


def interval_caption(runs: Runs) -> str:
    designs = sorted({runs.design(s) for s in runs.strategies})
    return (f"Mean ± sd over each row's runs ({'; '.join(designs)}); 95% intervals of the mean: Student-t below "
            f"30 runs, BCa bootstrap from 30 (method and n in every cell).")


def _marks_caption(comps: Comparisons) -> str:
    return (f"Bold: best mean of the column. *: significantly worse than that best ({comps.text()}).")


def _test_caption(runs: Runs) -> str:
    flagged = [s for s in runs.strategies if runs.selected_on_test(s)]
    return (f" SELECTED ON TEST (study.json or rows flag selected_on_test): {', '.join(flagged)}; their test "
            "scores are optimistic." if flagged else "")


def leaderboard_table(runs: Runs, comps: Comparisons, columns) -> ScoreTable:
    """Per strategy each objective on the shown split; rows in dev-objective order (baselines last)."""
    cols = tuple(columns)
    return ScoreTable("leaderboard", f"Leaderboard: each objective on {_split_text(runs)}",
                      f"{runs.note} {interval_caption(runs)} {_marks_caption(comps)}{_test_caption(runs)}",
                      _info(runs), _stats(runs, cols, comps), tuple(c.label for c in cols), ("",) * len(cols))


def conditions_table(runs: Runs, comps: Comparisons, columns) -> ScoreTable:
    """Per strategy the primary metric on av, audio_only, video_only and every family's area."""
    cols = tuple(columns)
    return ScoreTable("conditions", f"Per condition on {_split_text(runs)}",
                      f"{runs.note} {interval_caption(runs)} {_marks_caption(comps)}{_test_caption(runs)}",
                      _info(runs)[["kind", "selection", "runs"]], _stats(runs, cols, comps),
                      tuple(c.label for c in cols), ("",) * len(cols))


def folds_table(runs: Runs, columns) -> ScoreTable:
    """Per strategy and fold each objective over that fold's seeds, and over every fold."""
    fold_ids = sorted(set(runs.values["fold"]))
    parts, names, groups = [], [], []
    for col in columns:
        for k in fold_ids:
            parts.append(_stats(runs, (col,), None, col.label, lambda v, k=k: v["fold"] == k, f" · fold {k}"))
            names.append(f"{col.label} · fold {k}")
        parts.append(_stats(runs, (col,), None, col.label, None, " · all folds"))
        names.append(f"{col.label} · all folds")
        groups += [col.label] * (len(fold_ids) + 1)
    note = ("Each fold's cell: mean ± sd over that fold's seeds (a baseline: its one run); 'all folds': over "
            "folds x seeds. Bold: best mean of the column. No significance marks here: the paired table tests the "
            "pooled runs.")
    return ScoreTable("folds", f"Per fold on {_split_text(runs)}", f"{runs.note} {note}{_test_caption(runs)}",
                      _info(runs)[["kind", "selection", "runs"]], pd.concat(parts, ignore_index=True),
                      tuple(names), tuple(groups))


# ---------------------------------------------------------------- one study's tables

@dataclass(frozen=True)
class Paper:
    runs: Runs
    comparisons: Comparisons
    leaderboard: ScoreTable
    conditions: ScoreTable
    folds: ScoreTable

    @property
    def tables(self) -> tuple[ScoreTable, ...]:
        return (self.leaderboard, self.conditions, self.folds)


def build(results: pd.DataFrame, ctx: Context, meta: dict, correction: str = "holm") -> Paper | None:
    """Every table of one study (None when no configuration has dev scores yet). The paired family
    covers the objectives and the per-condition columns: one correction for every mark."""
    summary, conds = summary_columns(ctx), condition_columns(results, ctx)
    family = tuple(dict.fromkeys([*summary, *conds]))
    runs = gather_runs(results, ctx, meta, family)
    if runs is None:
        return None
    comps = compare(runs, family, correction)
    return Paper(runs, comps, leaderboard_table(runs, comps, summary), conditions_table(runs, comps, conds),
                 folds_table(runs, summary))


def paired_comparison(results: pd.DataFrame, ctx: Context, conditions, correction: str = "holm",
                      meta: dict | None = None) -> tuple[pd.DataFrame, gather.Pick | None]:
    """The paired table on the primary metric of `conditions` (every pair of strategies and
    baselines, a - b, corrected together). Returns (table, the pick of the strategies)."""
    cols = tuple(Column(c, ctx.metric, ctx.maximize) for c in conditions)
    runs = gather_runs(results, ctx, meta or {}, cols)
    if runs is None:
        return pd.DataFrame(columns=COMPARISON_COLUMNS), None
    return compare(runs, cols, correction).table, runs.pick


# ---------------------------------------------------------------- the conclusion

@dataclass(frozen=True)
class Versus:
    """The best strategy of a column against another: best - other, from the paired table."""

    other: str
    diff: float
    lo: float
    hi: float
    d_z: float
    p_adjusted: float
    n: int
    significant: bool


@dataclass(frozen=True)
class Conclusion:
    column: Column
    best: str  # highest mean on the shown split (lowest for a minimised score)
    interval: Interval
    versus: tuple[Versus, ...]  # every other strategy, in row order


def _versus(comps: Comparisons, best: str, other: str, col: Column) -> Versus:
    r = comps.find(best, other, col)
    if r is None:
        return Versus(other, math.nan, math.nan, math.nan, math.nan, math.nan, 0, False)
    sign = 1.0 if r["a"] == best else -1.0
    lo, hi = sorted((sign * r["ci_lo"], sign * r["ci_hi"]))
    return Versus(other, sign * r["mean_diff"], lo, hi, sign * r["d_z"], float(r["p_adjusted"]), int(r["n"]),
                  bool(r["significant"]))


def conclusions(p: Paper) -> list[Conclusion]:
    """Per objective: the strategy with the best mean on the shown split, and how it stands against
    each other strategy after the correction."""
    out = []
    for col in summary_columns_of(p):
        st = p.leaderboard.stats[(p.leaderboard.stats["column"] == col.label) & p.leaderboard.stats["best"]]
        if st.empty:
            continue
        best = str(st["strategy"].iloc[0])
        vs = tuple(_versus(p.comparisons, best, s, col) for s in p.runs.strategies if s != best)
        out.append(Conclusion(col, best, cell(p.runs, best, col), vs))
    return out


def summary_columns_of(p: Paper) -> tuple[Column, ...]:
    by_label = {c.label: c for c in p.runs.columns}
    return tuple(by_label[c] for c in p.leaderboard.columns)
