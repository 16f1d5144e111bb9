"""avstudy's runtime: everything that runs a study, in three layers plus the CLI on top.

- `study.data`: datasets (format, reader, synthetic corpora), the missing-modality protocol,
  corpus adapters and feature extraction. Imports: `study.provenance` only.
- `study.training`: the trial configuration (torch-free), batches, the training session and
  metrics. Imports: `study.data`, `model`.
- `study.runs`: study specs, stages, Ray execution, results files, status. Imports:
  `study.training`, `study.data`, `search_spaces`.
- `study.cli`: the `avstudy` command, on top of all three (imports them lazily).

Layers import only downwards (tests/quality/test_architecture.py checks it).
"""
