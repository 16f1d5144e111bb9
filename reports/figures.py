"""Plotly figure functions: each draws what one gather.py function returned (plotly imported lazily).

Every user-provided string that plotly renders (trace names, tick labels, hover text) goes through
`_t`, which HTML-escapes it: plotly decodes the entities and shows the text, never markup.
"""
from __future__ import annotations

import html
import math

import numpy as np
import pandas as pd

from reports.tables import family_axis, log_scale

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
SYMBOLS = ("circle", "square", "diamond", "triangle-up", "cross", "x", "star", "hexagon", "pentagon", "triangle-down")


def _t(x) -> str:
    return html.escape(str(x), quote=False)


def _go():
    import plotly.graph_objects as go

    return go


def _subplots(**kw):
    from plotly.subplots import make_subplots

    return make_subplots(**kw)


def _layout(fig, title: str, height: int = 420, **kw):
    kw.setdefault("margin", dict(l=60, r=30, t=60, b=50))
    fig.update_layout(title=_t(title), height=height, template="plotly_white", **kw)
    return fig


def _colors(keys) -> dict:
    return {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(sorted({str(k) for k in keys}))}


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _data_label(key, dims) -> str:
    """"r=0.5" or "r=0.5 · audio_only_share=0.3" for a data-condition index value."""
    vals = key if isinstance(key, tuple) else (key,)
    names = ["r" if d == "train_missing_rate" else d for d in dims]
    return " · ".join(f"{n}={v:g}" if isinstance(v, (int, float)) else f"{n}={_t(v)}" for n, v in zip(names, vals))


def grid_heatmaps(data: dict[str, pd.DataFrame], metric: str):
    """One panel per fusion strategy: `metric` over the per-modality test grid (rows = share of
    test utterances without audio, columns = without video); blank cells: p_a + p_v > 1."""
    go = _go()
    names = list(data)
    fig = _subplots(rows=1, cols=len(names), subplot_titles=[_t(n) for n in names])
    vals = np.concatenate([d.to_numpy().ravel() for d in data.values()])
    zmin, zmax = float(np.nanmin(vals)), float(np.nanmax(vals))
    for i, (name, d) in enumerate(data.items(), start=1):
        z = d.to_numpy()
        text = [[("" if math.isnan(v) else f"{v:.3f}") for v in row] for row in z]
        fig.add_trace(go.Heatmap(z=z, x=[f"{v:g}" for v in d.columns], y=[f"{v:g}" for v in d.index],
                                 text=text, texttemplate="%{text}", zmin=zmin, zmax=zmax,
                                 colorscale="Viridis", showscale=i == 1, colorbar=dict(title=_t(metric)),
                                 hovertemplate="audio missing %{y}, video missing %{x}: %{z:.4f}"
                                               "<extra>" + _t(name) + "</extra>"), row=1, col=i)
        fig.update_xaxes(title_text="video missing (test)", row=1, col=i)
        fig.update_yaxes(title_text="audio missing (test)" if i == 1 else None, row=1, col=i)
    return _layout(fig, f"{metric} over per-modality test missing rates", height=380,
                   margin=dict(l=80, r=30, t=70, b=60))


def heatmaps(data: dict[str, pd.DataFrame], metric: str, realised: dict | None = None,
             dims=("train_missing_rate",)):
    """One heatmap per fusion strategy: rows = data condition (r), columns = test condition."""
    go = _go()
    names = list(data)
    realised = realised or {}
    fig = _subplots(rows=len(names), cols=1, shared_xaxes=True, vertical_spacing=0.04)
    vals = np.concatenate([d.to_numpy().ravel() for d in data.values()])
    zmin, zmax = float(np.nanmin(vals)), float(np.nanmax(vals))
    for i, (name, d) in enumerate(data.items(), start=1):
        z = d.to_numpy()
        text = [[("" if math.isnan(v) else f"{v:.3f}") for v in row] for row in z]
        share = realised.get(name, pd.Series(dtype=float))
        ylab = [_data_label(k, dims) + (f" (unpaired {share[k]:.2f})" if k in share.index and pd.notna(share[k])
                                        else "") for k in d.index]
        fig.add_trace(go.Heatmap(z=z, x=[_t(c) for c in d.columns], y=ylab, text=text,
                                 texttemplate="%{text}", zmin=zmin, zmax=zmax, colorscale="Viridis",
                                 showscale=i == 1, colorbar=dict(title=_t(metric)),
                                 hovertemplate="train %{y}<br>%{x}: %{z:.4f}<extra>" + _t(name) + "</extra>"),
                      row=i, col=1)
        fig.update_yaxes(title_text=f"<b>{_t(name)}</b>", autorange="reversed", row=i, col=1)
    n_rows = sum(len(d) for d in data.values())
    return _layout(fig, f"{metric} by data condition (r = share of unpaired training data) x test condition",
                   height=140 + 34 * n_rows + 30 * len(names), margin=dict(l=200, r=30, t=60, b=50))


def robustness_curves(df: pd.DataFrame, metric: str, families=None):
    """One panel per condition family: metric vs level, one line (+ CI band from 3 runs) per strategy."""
    go = _go()
    fams = list(families or dict.fromkeys(df["family"]))
    cols = 1 if len(fams) == 1 else 2
    rows = math.ceil(len(fams) / cols)
    fig = _subplots(rows=rows, cols=cols, subplot_titles=[_t(f) for f in fams], vertical_spacing=0.3 / rows,
                    horizontal_spacing=0.1)
    colors = _colors(df["fusion"])
    for i, fam in enumerate(fams):
        r, c = i // cols + 1, i % cols + 1
        for fusion, g in df[df["family"] == fam].groupby("fusion", sort=True):
            _curve(fig, go, g, str(fusion), colors[str(fusion)], first=i == 0, row=r, col=c)
        fig.update_xaxes(title_text=_t(family_axis(fam)), row=r, col=c)
        fig.update_yaxes(title_text=_t(metric), row=r, col=c)
        if fam.startswith("noise"):
            fig.update_xaxes(autorange="reversed", row=r, col=c)  # harder to the right, as for the others
    return _layout(fig, f"{metric} vs each family's level (mean, 95% CI band where n >= 3)",
                   height=120 + 330 * rows)


def _curve(fig, go, g: pd.DataFrame, fusion: str, c: str, first: bool, row: int, col: int) -> None:
    x = g["level"].tolist()
    if g["n"].min() >= 3:  # a t-interval from 2 runs spans most of the axis: no band then
        fig.add_trace(go.Scatter(x=x + x[::-1], y=g["hi"].tolist() + g["lo"].tolist()[::-1], fill="toself",
                                 mode="lines", fillcolor=_rgba(c, 0.15), line=dict(width=0), hoverinfo="skip",
                                 showlegend=False, legendgroup=_t(fusion)), row=row, col=col)
    fig.add_trace(go.Scatter(x=x, y=g["mean"], mode="lines+markers", name=_t(fusion), line=dict(color=c),
                             legendgroup=_t(fusion), showlegend=first,
                             customdata=np.stack([g["lo"], g["hi"], g["n"]], axis=1),
                             hovertemplate="%{y:.4f} [%{customdata[0]:.4f}, %{customdata[1]:.4f}] "
                                           "n=%{customdata[2]}"), row=row, col=col)


def condition_bars(df: pd.DataFrame, metric: str, dims):
    """Per data condition (one row of panels): each strategy's shown score per test condition; the
    strategy dev chose for a condition has a black outline."""
    go = _go()
    keys = list(dict.fromkeys(zip(*[df[d] for d in dims]))) if dims else [()]
    fig = _subplots(rows=len(keys), cols=1, subplot_titles=[_data_label(k, dims) for k in keys],
                    vertical_spacing=min(0.3, 0.4 / max(len(keys), 1)) if len(keys) > 1 else 0.1)
    colors = _colors(df["fusion"])
    for i, key in enumerate(keys, start=1):
        sub = df[np.logical_and.reduce([df[d] == v for d, v in zip(dims, key)])] if dims else df
        for fusion, g in sub.groupby("fusion", sort=True):
            fig.add_trace(go.Bar(x=[_t(c) for c in g["condition"]], y=g["shown"], name=_t(fusion),
                                 legendgroup=_t(fusion), showlegend=i == 1, marker_color=colors[str(fusion)],
                                 marker_line=dict(width=np.where(g["winner"], 2.5, 0), color="#000"),
                                 customdata=np.stack([g["dev"], g["shown_split"]], axis=1),
                                 hovertemplate="%{x}: %{y:.4f} (%{customdata[1]})<br>dev %{customdata[0]:.4f}"),
                          row=i, col=1)
        fig.update_yaxes(title_text=_t(metric), row=i, col=1)
    fig.update_layout(barmode="group")
    return _layout(fig, f"{metric} per test condition, each strategy's dev-selected configuration "
                        "(outline: the strategy dev chose)", height=140 + 360 * len(keys))


def pareto(df: pd.DataFrame, metric: str):
    go = _go()
    fig = go.Figure()
    wt = df["wall_time_s"].fillna(0) / 60
    size = 6 + 14 * (wt - wt.min()) / max(float(wt.max() - wt.min()), 1e-9)
    for i, (fusion, g) in enumerate(df.groupby("fusion", sort=True)):
        fig.add_trace(go.Scatter(x=g["av"], y=g["worst_single"], mode="markers", name=_t(fusion),
                                 text=[_t(t) for t in g["trial_id"]], customdata=wt.loc[g.index],
                                 marker=dict(symbol=SYMBOLS[i % len(SYMBOLS)], size=size.loc[g.index],
                                             color=wt.loc[g.index],
                                             coloraxis="coloraxis", line=dict(width=0.5, color="#333")),
                                 hovertemplate="%{text}<br>av %{x:.4f}<br>worst single %{y:.4f}"
                                               "<br>%{customdata:.1f} min"))
    front = df[df["on_front"]].sort_values("av")
    fig.add_trace(go.Scatter(x=front["av"], y=front["worst_single"], mode="lines", name="Pareto front",
                             line=dict(color="#d62728", dash="dot")))
    fig.update_layout(coloraxis=dict(colorscale="Cividis", colorbar=dict(title="wall min", x=1.12)),
                      legend=dict(x=1.0, y=1.0, xanchor="left"))
    return _layout(fig, "Full-modality vs worst single-modality score (size/colour: wall time)",
                   height=480, xaxis_title=f"{_t(metric)} (av)",
                   yaxis_title=f"{_t(metric)} (min of audio-only, video-only)")


def importance(table: pd.DataFrame, objective_col: str):
    go = _go()
    fig = _subplots(rows=1, cols=2, column_widths=[0.35, 0.65], horizontal_spacing=0.18,
                    subplot_titles=[f"objective ({_t(objective_col)})", "per condition"])
    s = table[objective_col].sort_values()
    fig.add_trace(go.Bar(x=s.values, y=[_t(p) for p in s.index], orientation="h", marker_color="#1f77b4",
                         showlegend=False, hovertemplate="%{y}: %{x:.3f}<extra></extra>"), row=1, col=1)
    z = table.to_numpy()
    fig.add_trace(go.Heatmap(z=z, x=[_t(c) for c in table.columns], y=[_t(p) for p in table.index],
                             text=[[f"{v:.2f}" for v in row] for row in z], texttemplate="%{text}",
                             colorscale="Blues", zmin=0, zmax=1, colorbar=dict(title="importance")), row=1, col=2)
    fig.update_yaxes(autorange="reversed", row=1, col=2)
    return _layout(fig, "Hyperparameter importance (fANOVA, normalised)", height=160 + 28 * len(table))


def parallel(df: pd.DataFrame, objective_name: str):
    go = _go()
    dims = []
    for c in df.columns[:-1]:
        dims.append(_dimension(df[c], c))
    y = df["objective"]
    dims.append(dict(label=_t(objective_name), values=y))
    crowded = len(dims) > 8  # tilt the axis labels so that they do not overlap
    fig = go.Figure(go.Parcoords(line=dict(color=y, colorscale="Viridis", showscale=True,
                                           colorbar=dict(title="objective", x=1.08)), dimensions=dims,
                                 labelangle=-30 if crowded else 0, labelside="top"))
    return _layout(fig, f"Parallel coordinates of the {len(df)} best search trials", height=500 if crowded else 460,
                   margin=dict(l=80, r=150, t=150 if crowded else 90, b=40))


def _dimension(col: pd.Series, name: str) -> dict:
    """A parcoords axis; categories become codes, missing (conditional) values an "n/a" tick."""
    v = col.dropna()
    if col.dtype == object or pd.api.types.is_string_dtype(col):
        cats = sorted({str(x) for x in v}) + (["n/a"] if col.isna().any() else [])
        codes = col.map(lambda x: cats.index(str(x) if pd.notna(x) else "n/a"))
        return dict(label=_t(name), values=codes, tickvals=list(range(len(cats))), ticktext=[_t(c) for c in cats])
    log = log_scale(v)
    x = np.log10(col.astype(float)) if log else col.astype(float)
    label = f"log10({_t(name)})" if log else _t(name)
    if not col.isna().any():
        return dict(label=label, values=x)
    lo, hi = float(x.min()), float(x.max())
    na = lo - 0.15 * max(hi - lo, 1e-9)
    ticks = list(np.linspace(lo, hi, 5))
    return dict(label=label, values=x.fillna(na), range=[na, hi], tickvals=[na, *ticks],
                ticktext=["n/a", *[f"{t:.3g}" for t in ticks]])


def history(df: pd.DataFrame, objective_name: str, maximize: bool):
    go = _go()
    fig = go.Figure()
    colors = _colors(df["fusion"])
    for fusion, g in df.groupby("fusion", sort=True):
        stopped = g["status"] == "early_stopped"
        fig.add_trace(go.Scatter(x=g["order"], y=g["value"], mode="markers", name=_t(fusion),
                                 text=[_t(t) + (" (early-stopped)" if s else "")
                                       for t, s in zip(g["trial_id"], stopped)],
                                 marker=dict(color=colors[str(fusion)], size=6, opacity=0.7,
                                             symbol=np.where(stopped, "x", "circle")),
                                 hovertemplate="#%{x} %{text}<br>%{y:.4f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=df["order"], y=df["best_so_far"], mode="lines", name="best so far",
                             line=dict(color="#222", width=2, shape="hv")))
    return _layout(fig, "Optimisation history (x: early-stopped)", xaxis_title="trial (start order)",
                   yaxis_title=_t(objective_name))


def learning_curves(df: pd.DataFrame, column: str):
    go = _go()
    fig = go.Figure()
    for i, (_tid, g) in enumerate(df.groupby("trial_id", sort=False)):
        stopped = g["status"].iloc[0] == "early_stopped"
        color = "#9e9e9e" if stopped else PALETTE[i % len(PALETTE)]
        n = len(g)
        fig.add_trace(go.Scatter(x=g["epoch"], y=g["value"], mode="lines+markers",
                                 name=_t(g["label"].iloc[0]) + (" [early-stopped]" if stopped else ""),
                                 line=dict(color=color, dash="dash" if stopped else "solid", width=1.5),
                                 marker=dict(size=[0] * (n - 1) + [10], symbol="x" if stopped else "circle",
                                             color=color)))
    fig = _layout(fig, "Learning curves (dashed grey, x at the last epoch: early-stopped)", height=460,
                  xaxis_title="epoch", yaxis_title=_t(column))
    fig.update_xaxes(dtick=max(1, int(df["epoch"].max()) // 10) if len(df) else 1)  # whole epochs
    return fig


def confusions(data: dict[str, np.ndarray], classes) -> object:
    go = _go()
    names = list(data)
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = _subplots(rows=rows, cols=cols, subplot_titles=[_t(n) for n in names], horizontal_spacing=0.08,
                    vertical_spacing=0.14)
    labels = [_t(c) for c in classes]
    for i, (_name, m) in enumerate(data.items()):
        fig.add_trace(go.Heatmap(z=m, x=labels, y=labels, zmin=0, zmax=1, colorscale="Blues", showscale=i == 0,
                                 text=[[f"{v:.2f}" for v in row] for row in m], texttemplate="%{text}",
                                 hovertemplate="true %{y}<br>predicted %{x}: %{z:.3f}<extra></extra>"),
                      row=i // cols + 1, col=i % cols + 1)
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(tickangle=-45)
    return _layout(fig, "Confusion matrices, av condition (row-normalised: rows = true class)", height=120 + 330 * rows)


def per_class(df: pd.DataFrame, ylabel: str):
    go = _go()
    conds = [c for c in ("av", "audio_only", "video_only") if c in set(df["condition"])]
    fig = _subplots(rows=1, cols=len(conds), subplot_titles=conds, shared_yaxes=True)
    colors = _colors(df["fusion"])
    for j, cond in enumerate(conds, start=1):
        for fusion, g in df[df["condition"] == cond].groupby("fusion", sort=True):
            fig.add_trace(go.Bar(x=[_t(x) for x in g["label"]], y=g["value"], name=_t(fusion), legendgroup=_t(fusion),
                                 marker_color=colors[str(fusion)], showlegend=j == 1), row=1, col=j)
    fig.update_layout(barmode="group")
    fig.update_yaxes(title_text=_t(ylabel), row=1, col=1)
    return _layout(fig, f"{ylabel} per condition", height=420)


def seed_variance(df: pd.DataFrame, metric: str, sort_by: str = "av"):
    """Columns = conditions; rows = configurations (shared y axis), mean with CI and single runs."""
    go = _go()
    conds = [c for c in ("av", "audio_only", "video_only", "robustness") if c in set(df["condition"])]
    conds += [c for c in dict.fromkeys(df["condition"]) if c not in conds]
    label = df["fusion"].map(_t) + " r=" + df["train_missing_rate"].map("{:g}".format) + " · " + df["config_id"].map(_t)
    df = df.assign(label=label)
    key = df[df["condition"] == (sort_by if sort_by in conds else conds[0])].sort_values("mean")["label"].tolist()
    fig = _subplots(rows=1, cols=len(conds), subplot_titles=[_t(c) for c in conds], shared_yaxes=True,
                    horizontal_spacing=0.02)
    colors = _colors(df["fusion"])
    for j, cond in enumerate(conds, start=1):
        g = df[df["condition"] == cond]
        fig.add_trace(go.Scatter(y=g["label"], x=g["mean"], mode="markers", showlegend=False,
                                 marker=dict(size=10, color=[colors[str(f)] for f in g["fusion"]]),
                                 hovertemplate="%{y}<br>mean %{x:.4f}<extra></extra>",
                                 error_x=dict(type="data", symmetric=False, array=g["hi"] - g["mean"],
                                              arrayminus=g["mean"] - g["lo"])), row=1, col=j)
        ys = [lab for lab, vals in zip(g["label"], g["values"]) for _ in vals]
        xs = [v for vals in g["values"] for v in vals]
        fig.add_trace(go.Scatter(y=ys, x=xs, mode="markers", showlegend=False,
                                 hovertemplate="single run: %{x:.4f}<extra></extra>",
                                 marker=dict(size=6, color="rgba(0,0,0,0.45)", symbol="circle-open")), row=1, col=j)
    fig.update_yaxes(categoryorder="array", categoryarray=key)
    return _layout(fig, f"{metric} over runs (dot: mean, bar: 95% interval, Student-t below 30 runs, "
                        "BCa from 30; rings: single runs)",
                   height=120 + 26 * len(key), margin=dict(l=230, r=30, t=70, b=40))


def study_bars(df: pd.DataFrame, metric: str):
    """Cross-study comparison: best configuration of each study, one bar group per condition."""
    go = _go()
    fig = go.Figure()
    conds = [c for c in df.columns if c != "study"]
    for i, cond in enumerate(conds):
        fig.add_trace(go.Bar(x=[_t(s) for s in df["study"]], y=df[cond], name=_t(cond),
                             marker_color=PALETTE[i % len(PALETTE)]))
    fig.update_layout(barmode="group")
    return _layout(fig, f"Best configuration of each study ({metric})", yaxis_title=_t(metric))


def study_comparison(stats: pd.DataFrame, studies, columns):
    """--compare: one panel per shared score, a bar per (strategy, study) with its 95% interval."""
    go = _go()
    cols = min(2, len(columns))
    rows = math.ceil(len(columns) / cols)
    fig = _subplots(rows=rows, cols=cols, subplot_titles=[_t(c) for c in columns], vertical_spacing=0.3 / rows)
    colors = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(studies)}
    for i, col in enumerate(columns):
        for s in studies:
            g = stats[(stats["column"] == col) & (stats["study"] == s)]
            err = dict(type="data", symmetric=False, array=(g["ci_hi"] - g["mean"]).fillna(0),
                       arrayminus=(g["mean"] - g["ci_lo"]).fillna(0))
            fig.add_trace(go.Bar(x=[_t(x) for x in g["strategy"]], y=g["mean"], name=_t(s), legendgroup=_t(s),
                                 showlegend=i == 0, marker_color=colors[s], error_y=err,
                                 customdata=np.stack([g["ci_lo"], g["ci_hi"], g["n"]], axis=1),
                                 hovertemplate="%{x}: %{y:.4f} [%{customdata[0]:.4f}, %{customdata[1]:.4f}] "
                                               "n=%{customdata[2]}<extra>" + _t(s) + "</extra>"),
                          row=i // cols + 1, col=i % cols + 1)
    fig.update_layout(barmode="group")
    return _layout(fig, "Shared strategies per score, each study (bar: mean; whisker: 95% interval)",
                   height=120 + 330 * rows)
