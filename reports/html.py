"""HTML building blocks: escaping, tables (sortable), embedded plotly figures, the page shell."""
from __future__ import annotations

import html
import json
import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

# the camera button of every figure's toolbar saves it as SVG (vector, for papers), named after its div
PLOT_CONFIG = {"displaylogo": False, "responsive": True, "toImageButtonOptions": {"format": "svg", "scale": 1}}


def esc(x) -> str:
    return html.escape(str(x), quote=True)


def script_json(obj_or_json) -> str:
    """JSON text safe inside <script>: no '<' survives, so '</script>' or '<!--' cannot break out."""
    text = obj_or_json if isinstance(obj_or_json, str) else json.dumps(obj_or_json, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026") \
        .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def fmt(x, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if isinstance(x, (float, np.floating)):
        return f"{x:.{digits}g}" if abs(x) < 1e-3 and x != 0 else f"{x:.{digits}f}".rstrip("0").rstrip(".")
    if x is pd.NA or x is pd.NaT:
        return ""
    return str(x)


def _sort_key(x) -> str:
    if isinstance(x, (int, float, np.integer, np.floating)) and not (isinstance(x, float) and math.isnan(x)):
        return repr(float(x))
    return ""


def table(df: pd.DataFrame, sortable: bool = True, cls: str = "") -> str:
    """An HTML table of df (every header and cell escaped); numeric cells carry data-v for sorting."""
    if df is None or df.empty:
        return "<p class='empty'>No rows.</p>"
    head = "".join(f"<th title='click to sort'>{esc(c)}</th>" if sortable else f"<th>{esc(c)}</th>" for c in df.columns)
    body = []
    for row in df.itertuples(index=False):
        cells = []
        for x in row:
            v = _sort_key(x)
            attr = f" data-v='{v}' class='num'" if v else ""
            cells.append(f"<td{attr}>{esc(fmt(x))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    klass = ("sortable " if sortable else "") + cls
    return (f"<div class='tablewrap'><table class='{klass.strip()}'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


def kv_table(items: dict) -> str:
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(fmt(v))}</td></tr>" for k, v in items.items())
    return f"<table class='kv'>{rows}</table>"


class FigureCounter:
    """Hands out unique div ids for the figures of one page."""

    def __init__(self) -> None:
        self.n = 0

    def next_id(self) -> str:
        self.n += 1
        return f"fig{self.n}"


def figure(fig, div_id: str) -> str:
    """A div plus the script that draws `fig` into it (plotly.js is embedded once in the page head)."""
    h = fig.layout.height or 450
    return (f"<div id='{div_id}' class='plot' style='min-height:{int(h)}px'></div>"
            f"<script>(function(){{var f={script_json(fig.to_json())};"
            f"Plotly.newPlot('{div_id}',f.data,f.layout,{json.dumps(plot_config(fig, div_id))});}})();</script>")


def plot_config(fig, div_id: str) -> dict:
    """plotly's config of one figure: its toolbar's camera button downloads an SVG named after the
    figure's title (`<div_id>.svg` when it has none)."""
    title = html.unescape(str(fig.layout.title.text or ""))
    name = re.sub(r"[^A-Za-z0-9]+", "-", title).strip("-").lower()[:60].rstrip("-") or div_id
    return {**PLOT_CONFIG, "toImageButtonOptions": {**PLOT_CONFIG["toImageButtonOptions"], "filename": name}}


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    how_to_read: str
    body: str  # HTML


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#fff;padding:14px 24px}header a{color:#b3e5fc}
header h1{margin:0 0 4px 0;font-size:22px}.badge{padding:2px 8px;border-radius:10px;background:#607d8b;font-size:13px}
.badge.finished{background:#2e7d32}.badge.running{background:#ef6c00}.badge.interrupted{background:#c62828}
nav{padding:8px 24px;background:#eceff1;font-size:13px;line-height:1.8}nav a{margin-right:12px;color:#37474f}
main{padding:0 24px 40px 24px;max-width:1400px}section{background:#fff;margin:18px 0;padding:12px 18px;
border:1px solid #e0e0e0;border-radius:6px}h2{font-size:18px;margin:4px 0}
.how{color:#555;font-size:14px;margin:4px 0 10px 0}
.note{color:#8d6e63;font-size:13px}.empty{color:#999;font-style:italic}
.tablewrap{overflow-x:auto;max-height:520px;overflow-y:auto}table{border-collapse:collapse;font-size:12px}
th,td{border:1px solid #e0e0e0;padding:3px 6px;text-align:left;vertical-align:top;white-space:nowrap}
table.wrap td{white-space:pre-wrap;min-width:120px}
thead th{background:#f5f5f5;position:sticky;top:0}table.sortable th{cursor:pointer}
td.num{text-align:right;font-variant-numeric:tabular-nums}
table.kv th{background:#f5f5f5;width:220px}
pre{background:#f7f7f7;padding:8px;font-size:12px;overflow-x:auto;white-space:pre-wrap}
details summary{cursor:pointer}.problem{color:#c62828}
.split{font-size:13px;color:#1a237e;background:#e8eaf6;padding:4px 8px;border-radius:4px;margin:4px 0 8px 0}
.banner{margin:0;padding:10px 24px;background:#fff3e0;border-bottom:2px solid #ef6c00;font-size:14px}
.banner ul{margin:0;padding-left:18px}.banner.alarm{background:#b71c1c;color:#fff;border-bottom:4px solid #7f0000;
font-size:16px;font-weight:600}.banner.alarm a{color:#ffcdd2}.banner li.warn{font-weight:normal}
ul.conclusion{font-size:14px;line-height:1.5;padding-left:20px}ul.conclusion li{margin:4px 0}
table.scores td small{color:#666}span.sig{color:#b71c1c;font-weight:700}tr.baseline td{background:#f3f6ff}
p.alarm{color:#b71c1c;font-weight:600}p.warn{color:#e65100}p.ok{color:#2e7d32}tr.alarm td{background:#ffebee}
"""

SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function(t){
  t.querySelectorAll('thead th').forEach(function(th,i){
    th.addEventListener('click',function(){
      var asc=th.dataset.dir!=='asc';th.dataset.dir=asc?'asc':'desc';
      var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows);
      rows.sort(function(a,b){
        var x=a.cells[i],y=b.cells[i],xv=x.dataset.v,yv=y.dataset.v,r;
        if(xv!==undefined&&yv!==undefined){r=parseFloat(xv)-parseFloat(yv);}
        else if(xv!==undefined){return -1;}else if(yv!==undefined){return 1;}
        else{r=x.textContent.localeCompare(y.textContent);}
        return asc?r:-r;});
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
});
"""


def page(title: str, header_html: str, sections: list[Section], plotly_js: str | None, banner: str = "") -> str:
    """The page shell: header, `banner` (warnings that must be seen first), navigation, sections."""
    nav = "".join(f"<a href='#{esc(s.id)}'>{esc(s.title)}</a>" for s in sections)
    body = "".join(
        f"<section id='{esc(s.id)}'><h2>{esc(s.title)}</h2><p class='how'>{esc(s.how_to_read)}</p>{s.body}</section>"
        for s in sections)
    head_js = f"<script>{plotly_js}</script>" if plotly_js else ""
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{esc(title)}</title>"
            f"<style>{CSS}</style>{head_js}</head><body><header>{header_html}</header>{banner}<nav>{nav}</nav>"
            f"<main>{body}</main><script>{SORT_JS}</script></body></html>")


def plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()
