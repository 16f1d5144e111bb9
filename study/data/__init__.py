"""Data: the dataset directory format and reader (`dataset`; its
dataset.json and manifest.parquet checks in `manifest`), the synthetic corpora (`synth`),
the missing-modality protocol (`protocol`), raw-corpus adapters (`corpora`) and feature
extraction (`features`).

Owns every file under a dataset directory. May import `study.provenance`, never
`study.training`, `study.runs` or `model`.
"""
