"""Study spec: a YAML file validated on load into frozen dataclasses.

By what it does: `schema` (the dataclasses and the names each section accepts), `parse`
(YAML to a validated StudySpec, every problem at once, each naming its key), `search` (the
spec's own parameter ranges), `placement` (resources, STUDY_DIR, remote copy, dataset dir).
Import from here.
"""

from study.runs.spec.parse import TOP_KEYS, UniqueKeyLoader, load_spec, spec_from_dict
from study.runs.spec.placement import check_resources, data_location, max_concurrent, study_paths, study_remote
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
           "SpecError", "StudySpec", "TaskSpec", "UniqueKeyLoader", "check_resources", "data_location",
           "load_spec", "max_concurrent", "spec_from_dict", "study_paths", "study_remote"]
