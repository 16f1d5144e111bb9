"""The package layout's rules, checked on the source: no import circle, layers only import
downwards, `model/` never imports Ray, `reports/` never imports torch or `model`, `model/` and
`reports/` import of `study` only its leaves (vocabulary, key rules, atomic writes, Pareto
fronts), which import nothing of the project, and the modules that validate or describe a study load without torch."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("model", "study", "search_spaces", "reports")
# study's layers, lowest first: a layer imports only from layers at or below it
LEAVES = ("study.vocab", "study.keys", "study.fsio", "study.pareto")  # shared by study, model and reports
LAYERS = (LEAVES, "study.provenance", "study.data", "study.training", "study.runs", "study.cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module imported anywhere in the file (top level and inside functions)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def project_graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    names = {module_name(p) for p in files}
    return {module_name(p): {m for m in imports_of(p) if m in names and m != module_name(p)}
            for p in files}


def test_every_module_is_seen():
    graph = project_graph()
    assert {"study.training.config", "study.runs.stages", "model.registry", "reports.build"} <= set(graph)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path + [node, nxt]
            if nxt not in state and (found := visit(nxt, path + [node])):
                return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [])):
            return found
    return None


def test_no_import_circle():
    """Function-level imports count: a circle hidden inside a function is still a circle."""
    assert _cycle(project_graph()) is None, _cycle(project_graph())


def test_cycle_finder_finds_a_planted_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def _layer(module: str) -> int | None:
    for i, prefixes in enumerate(LAYERS):
        for prefix in (prefixes if isinstance(prefixes, tuple) else (prefixes,)):
            if module == prefix or module.startswith(prefix + "."):
                return i
    return None


def test_study_layers_import_downwards_only():
    upward = []
    for mod, deps in project_graph().items():
        here = _layer(mod)
        for dep in deps:
            there = _layer(dep)
            if here is not None and there is not None and there > here:
                upward.append(f"{mod} -> {dep}")
    assert not upward, upward


def _third_party(package: str) -> dict[str, set[str]]:
    return {module_name(p): {m.split(".")[0] for m in imports_of(p)} for p in (ROOT / package).rglob("*.py")}


def test_model_never_imports_ray():
    offenders = {m: deps & {"ray"} for m, deps in _third_party("model").items() if "ray" in deps}
    assert not offenders, offenders


def test_reports_never_import_torch_or_model():
    banned = {"torch", "model"}
    offenders = {m: deps & banned for m, deps in _third_party("reports").items() if deps & banned}
    assert not offenders, offenders


@pytest.mark.parametrize("package", ["model", "reports"])
def test_model_and_reports_import_only_studys_leaves(package):
    graph = project_graph()
    offenders = {m: {d for d in deps if d.startswith("study") and d not in (*LEAVES, "study")}
                 for m, deps in graph.items() if m.split(".")[0] == package}
    assert not {m: d for m, d in offenders.items() if d}, offenders


def test_leaves_import_nothing_of_the_project():
    graph = project_graph()
    assert {leaf: graph[leaf] - {"study"} for leaf in LEAVES} == {leaf: set() for leaf in LEAVES}


TORCH_FREE = ("model.config", "model.registry", "study.training.config", "study.runs.spec", "study.vocab",
              "study.keys", "study.fsio", "study.pareto", "study.runs.spaces_info", "study.runs.export",
              "study.runs.status", "study.runs.results", "search_spaces", "reports.build")


@pytest.mark.parametrize("module", TORCH_FREE)
def test_modules_load_without_torch(module, tmp_path):
    """Spec validation, the search spaces, status and reports never pull torch in."""
    answer = tmp_path / "loaded.json"
    code = (f"import sys, json, importlib; importlib.import_module({module!r}); "
            f"open({str(answer)!r}, 'w').write(json.dumps(sorted(m for m in ('torch', 'ray') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "torch" not in json.loads(answer.read_text())


def test_tests_import_other_test_files_by_full_name():
    """`from test_x import ...` resolves only when pytest happened to collect test_x's folder
    first (it works in the whole suite, fails when a file runs alone or under mutmut): a test file
    imports another as `tests.<area>.test_x`."""
    tests = ROOT / "tests"
    bare = {f"{p.relative_to(ROOT)}: {m}" for p in tests.rglob("*.py") for m in imports_of(p)
            if m.split(".")[0].startswith("test_")}
    assert bare == set()
