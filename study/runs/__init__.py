"""Studies: the YAML spec and study paths (`spec`), stages search -> rerun -> final (`stages`),
Ray Train/Tune execution (`ray_exec`), the results files (`results`), progress (`status`) and
the demo (`demo`).

May import `study.training`, `study.data`, `search_spaces`; Ray and torch only inside
`ray_exec` and the functions that start trials. `spec`, `status` and `results` stay torch-free.
"""
