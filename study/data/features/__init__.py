"""Feature extraction from raw media: audio (wav2vec2 / log-mel / openSMILE eGeMAPS, ComParE),
video (face crops from dlib / YuNet / Haar -> EfficientNet / pixels / dlib landmarks), sharded,
run in parallel processes or Ray tasks, resumable, merged into a study.data.dataset directory.

`choices.py` (torch-free) names the choices for the CLI; `extractors.py` maps them to extractors
(with `ExtractConfig`, `preflight`, `fingerprint`); `extract.py` runs the shards.
May import `study.data.corpora`, `study.data.dataset` and `study.provenance`.
"""
