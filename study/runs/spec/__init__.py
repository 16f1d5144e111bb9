"""Study spec: a YAML file validated on load into frozen dataclasses.

By what it does: `schema` (the dataclasses and the names each section accepts), `parse`
(a parsed document to a validated StudySpec, every problem at once, each naming its key),
`checks` (problems between sections), `load` (the YAML file, duplicate keys refused, `--set`
overrides), `search` (the spec's own parameter ranges), `placement` (resources, STUDY_DIR,
remote copy, dataset dir).
Import from here.
"""

from study.runs.spec.load import UniqueKeyLoader, apply_overrides, load_spec
from study.runs.spec.parse import TOP_KEYS, spec_from_dict
from study.runs.spec.placement import (
    check_resources,
    data_location,
    max_concurrent,
    resolve_gpus,
    study_paths,
    study_remote,
)
from study.runs.spec.schema import (
    CONDITIONS,
    METRICS,
    MODES,
    SCHEDULERS,
    SEARCHERS,
    Budget,
    Cells,
    DatasetSpec,
    FailureSpec,
    Objective,
    Resources,
    SchedulerSpec,
    SearcherSpec,
    SpecError,
    StudySpec,
    TaskSpec,
)

__all__ = ["CONDITIONS", "METRICS", "MODES", "SCHEDULERS", "SEARCHERS", "TOP_KEYS", "Budget", "Cells",
           "DatasetSpec", "FailureSpec", "Objective", "Resources", "SchedulerSpec", "SearcherSpec",
           "SpecError", "StudySpec", "TaskSpec", "UniqueKeyLoader", "apply_overrides", "check_resources",
           "data_location", "load_spec", "max_concurrent", "resolve_gpus", "spec_from_dict", "study_paths",
           "study_remote"]
