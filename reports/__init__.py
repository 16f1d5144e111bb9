"""avstudy reports: one self-contained HTML page per study (plotly), plus an index of studies.

Reads only the results files of a study (docs/CONTRACTS.md); never imports torch, study/ or model/.
"""
from __future__ import annotations
