"""The formats of paper.py's tables: HTML (the report), CSV (tidy, one row per cell) and LaTeX
(booktabs: mean ± sd, best per column in bold, `*` where a difference to that best survives the
correction). docs/export.md describes the files."""
from __future__ import annotations

import math

import pandas as pd

from reports.html import esc, fmt, table
from reports.paper import Comparisons, ScoreTable

DIGITS = 3  # decimals of scores in LaTeX
LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


# ---------------------------------------------------------------- HTML

def _cell_html(s: pd.Series | None) -> str:
    if s is None or s["n"] == 0:
        return "<td></td>"
    mean = f"{s['mean']:.4f}" + ("" if _nan(s["sd"]) else f" ± {s['sd']:.4f}")
    mean = f"<b>{mean}</b>" if s["best"] else mean
    mark = "<span class='sig' title='significantly worse than the best of this column'>*</span>" \
        if s["worse_than_best"] else ""
    ci = (f"95% {esc(s['ci_method'])} [{s['ci_lo']:.4f}, {s['ci_hi']:.4f}], n={int(s['n'])}" if s["n"] >= 2
          else "n=1, no interval")
    return f"<td data-v='{s['mean']!r}' class='num'>{mean}{mark}<br><small>{ci}</small></td>"


def score_table_html(t: ScoreTable) -> str:
    info = [c for c in t.info.columns]
    head = "".join(f"<th title='click to sort'>{esc(c)}</th>" for c in ["strategy", *info, *t.columns])
    body = []
    for s, row in t.info.iterrows():
        cells = [f"<td>{esc(s)}</td>"] + [f"<td>{esc(fmt(row[c]))}</td>" for c in info]
        cells += [_cell_html(t.at(s, c)) for c in t.columns]
        klass = " class='baseline'" if row.get("kind") == "baseline" else ""
        body.append(f"<tr{klass}>{''.join(cells)}</tr>")
    return (f"<div class='tablewrap'><table class='sortable scores'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


def comparisons_frame(c: Comparisons) -> pd.DataFrame:
    """The paired table as the report shows it (and the CSV holds it)."""
    name = f"p ({c.name})"
    t = c.table.rename(columns={"p_adjusted": name, "significant": f"significant ({c.name}, alpha {c.alpha:g})"})
    return t.drop(columns=["condition", "metric"])


def comparisons_html(c: Comparisons) -> str:
    return table(comparisons_frame(c))


# ---------------------------------------------------------------- CSV

def score_csv(t: ScoreTable, correction: str) -> str:
    """One row per (strategy, column): the row's info, then mean, sd, n, the interval and the marks."""
    info = t.info.reset_index()
    df = t.stats.merge(info, on="strategy", how="left")
    first = ["strategy", *[c for c in info.columns if c != "strategy"]]
    df = df[first + [c for c in t.stats.columns if c != "strategy"]].assign(level=0.95, correction=correction)
    return df.to_csv(index=False)


def comparisons_csv(c: Comparisons) -> str:
    return c.table.assign(correction=c.name, alpha=c.alpha).to_csv(index=False)


# ---------------------------------------------------------------- LaTeX

def latex_escape(text) -> str:
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in str(text)).replace("±", r"$\pm$").replace("·", r"$\cdot$")


def _latex_cell(s: pd.Series | None) -> str:
    if s is None or s["n"] == 0:
        return "--"
    body = f"{s['mean']:.{DIGITS}f}" + ("" if _nan(s["sd"]) else rf" \pm {s['sd']:.{DIGITS}f}")
    body = rf"\mathbf{{{body}}}" if s["best"] else body
    return f"${body}{'^{*}' if s['worse_than_best'] else ''}$"


def _header(t: ScoreTable, col: str, group: str) -> str:
    return col[len(group) + len(" · "):] if group and col.startswith(group + " · ") else col


def _group_rows(t: ScoreTable, first: int) -> list[str]:
    """\\multicolumn headers of the column groups, with their \\cmidrule lines."""
    if not any(t.groups):
        return []
    spans, start = [], first + 1
    for g in dict.fromkeys(t.groups):
        k = t.groups.count(g)
        spans.append((g, start, start + k - 1))
        start += k
    heads = " & " * first + " & ".join(rf"\multicolumn{{{b - a + 1}}}{{c}}{{{latex_escape(g)}}}" for g, a, b in spans)
    rules = " ".join(rf"\cmidrule(lr){{{a}-{b}}}" for _g, a, b in spans)
    return [heads + r" \\", rules]


def score_latex(t: ScoreTable, label_prefix: str = "avstudy") -> str:
    """A booktabs table: the strategy (a dagger when selected on test), the dev objective for the
    leaderboard, then mean ± sd per column."""
    dev = [c for c in t.info.columns if c.startswith("dev objective")]
    lead = ["strategy", *dev]
    spec = "l" + "r" * len(dev) + "c" * len(t.columns)
    lines = [f"% avstudy report --tables: {t.name}. Needs \\usepackage{{booktabs}}.",
             r"\begin{table}[t]", r"\centering", rf"\caption{{{latex_escape(t.title)}. {latex_escape(t.caption)}}}",
             rf"\label{{tab:{label_prefix}-{t.name}}}", rf"\begin{{tabular}}{{{spec}}}", r"\toprule"]
    lines += _group_rows(t, len(lead))
    heads = [latex_escape(c) for c in lead] + [latex_escape(_header(t, c, g)) for c, g in zip(t.columns, t.groups)]
    lines += [" & ".join(heads) + r" \\", r"\midrule"]
    for s, row in t.info.iterrows():
        name = latex_escape(s) + (r"$^{\dagger}$" if str(row.get("selection", "")).startswith("test") else "")
        vals = [name] + ["--" if _nan(row[c]) else f"{row[c]:.{DIGITS}f}" for c in dev]
        vals += [_latex_cell(t.at(s, c)) for c in t.columns]
        lines.append(" & ".join(vals) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def _p(x) -> str:
    if _nan(x):
        return "--"
    return f"{x:.3f}" if x >= 0.001 else r"$<$0.001"


def comparisons_latex(c: Comparisons, label_prefix: str = "avstudy") -> str:
    """Every comparison: a - b, the mean difference with its interval, d_z, p and the corrected p
    (bold where the difference survives the correction)."""
    cap = (f"Paired comparisons (a - b) on the shown split: mean difference and its 95% interval over the pairs "
           f"(n), Cohen's d_z, p of the {c.text()}. Bold: survives the correction.")
    lines = ["% avstudy report --tables: paired. Needs \\usepackage{booktabs}.", r"\begin{table}[t]", r"\centering",
             rf"\caption{{{latex_escape(cap)}}}", rf"\label{{tab:{label_prefix}-paired}}",
             r"\begin{tabular}{lllrrrrr}", r"\toprule",
             rf"a & b & score & $n$ & $\Delta$ [95\% CI] & $d_z$ & $p$ & $p_{{\mathrm{{{latex_escape(c.name)}}}}}$ \\",
             r"\midrule"]
    for r in c.table.itertuples(index=False):
        diff = "--" if _nan(r.mean_diff) else (f"${r.mean_diff:+.{DIGITS}f}$" if _nan(r.ci_lo) else
                                                f"${r.mean_diff:+.{DIGITS}f}$ [{r.ci_lo:+.{DIGITS}f}, "
                                                f"{r.ci_hi:+.{DIGITS}f}]")
        dz = "--" if _nan(r.d_z) else f"{r.d_z:.2f}"
        padj = _p(r.p_adjusted)
        padj = rf"\textbf{{{padj}}}" if r.significant else padj
        lines.append(" & ".join([latex_escape(r.a), latex_escape(r.b), latex_escape(r.column), str(int(r.n)), diff,
                                 dz, _p(r.p_value), padj]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)
