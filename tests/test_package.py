"""The package's shape: no import cycle among its modules, a base config layer that knows no
study, and the config schema shipped as package data (config/schema.yaml links to it)."""

from __future__ import annotations

import ast
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import pytest
import yaml

from conftest import REPO

PACKAGE = REPO / "workflow" / "iclscope"


def _modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules ``name`` imports anywhere in its source (at the top or inside a
    function: a deferred import is still a dependency), ``from a import b`` counting as
    ``a.b`` where that is a module and as ``a`` otherwise."""

    def module_of(dotted: str) -> str | None:
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    found: set[str | None] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {module_of(a.name) for a in node.names if a.name.split(".")[0] == "iclscope"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "iclscope":
                continue
            for alias in node.names:
                full = f"{source}.{alias.name}"
                found.add(full if full in modules else module_of(source))
    found.discard(None)
    found.discard(name)
    return {m for m in found if m is not None}


def _import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imported(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycle():
    graph = _import_graph()
    assert "iclscope.config" in graph and "iclscope.tasks.binary" in graph
    assert "iclscope.config" in graph["iclscope.tasks.binary"]  # the graph sees the imports
    assert _cycles(graph) == []


def test_the_base_config_imports_no_study_task_or_dataset():
    """iclscope.config is the base layer: nothing of the studies, the tasks or the datasets,
    neither in its source (deferred imports included) nor once imported."""
    graph = _import_graph()
    reached, todo = set(), ["iclscope.config"]
    while todo:  # everything iclscope.config can import, directly or not
        for dep in graph[todo.pop()] - reached:
            reached.add(dep)
            todo.append(dep)
    banned = ("iclscope.studies", "iclscope.tasks", "iclscope.datasets")
    assert not [m for m in reached if m.startswith(banned)]
    code = ("import sys; sys.path.insert(0, 'workflow'); import iclscope.config; "
            "print(sorted(m for m in sys.modules if m.startswith(('iclscope.studies', 'iclscope.tasks', "
            "'iclscope.datasets'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_study_in_the_schema_has_its_checks():
    """validate_config finds each study's own checks by its name (no list of studies in
    iclscope.config): a settings module with ``check_config(config, root)``."""
    from iclscope import config

    studies = config.known_studies(config.load_schema())
    assert studies == ["binary", "representations", "labels"]
    for name in studies:
        assert callable(config.study_checks(name))
    source = (PACKAGE / "config.py").read_text(encoding="utf-8")
    for name in studies:
        assert f'"{name}"' not in source and f"'{name}'" not in source


def test_the_schema_is_package_data_and_config_schema_yaml_links_to_it():
    from iclscope.config import SCHEMA_PATH, load_schema

    shipped = resources.files("iclscope").joinpath("schema.yaml")
    assert shipped.is_file()
    assert Path(str(shipped)) == SCHEMA_PATH == PACKAGE / "schema.yaml"
    assert not SCHEMA_PATH.is_symlink()  # the one real file
    documented = REPO / "config" / "schema.yaml"
    assert documented.is_symlink() and os.path.samefile(documented, SCHEMA_PATH)
    assert load_schema() == yaml.safe_load(documented.read_text(encoding="utf-8"))
    assert load_schema(documented) == load_schema()


@pytest.mark.skipif(importlib.util.find_spec("setuptools") is None or importlib.util.find_spec("pip") is None,
                    reason="needs pip and setuptools to build a wheel")
def test_a_built_wheel_carries_the_schema(tmp_path):
    """A non-editable install (a wheel, as ``pip install .`` builds) carries schema.yaml
    beside the modules; built from a copy, so the checkout gets no build folders."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(PACKAGE, source / "workflow" / "iclscope", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(source),
                    "-w", str(tmp_path / "dist")], cwd=tmp_path, check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("iclscope-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        assert yaml.safe_load(zf.read("iclscope/schema.yaml")) == yaml.safe_load(
            (PACKAGE / "schema.yaml").read_text(encoding="utf-8"))


def test_analysis_defaults_are_the_schemas():
    """The public analysis functions' documented defaults (iclscope.analysis.defaults) equal
    the schema's defaults of the keys they stand for, so the two cannot drift."""
    from iclscope.analysis import defaults
    from iclscope.config import load_schema

    schema = load_schema()
    for name, keys in defaults.SCHEMA_KEYS.items():
        for key in keys:
            node = schema
            for part in key.split("."):
                node = node["properties"][part]
            assert node["default"] == getattr(defaults, name), (name, key)
    constants = {k for k in vars(defaults) if k.isupper() and k != "SCHEMA_KEYS"}
    assert constants == set(defaults.SCHEMA_KEYS)


def test_study_functions_repeat_no_schema_default():
    """Internal (study) functions take their settings from the caller, never from a signature
    default: no parameter of a function under iclscope.studies named like a schema setting
    has a default."""
    from iclscope.analysis import defaults

    settings = {"n_boot", "level", "ci_level", "n_permutations", "n_shuffles", "n_shuffles_max", "n_splits",
                "alpha", "C", "classifier", "comparators", "min_units", "windows", "levenshtein", "parse",
                "control_folds", "method", "correlation", "smooth", "scoring", "calibrate"}
    found = []
    for path in (PACKAGE / "studies").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            args = node.args
            positional = args.posonlyargs + args.args
            pairs = list(zip(positional[len(positional) - len(args.defaults):], args.defaults))
            pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
            found += [f"{path.name}:{node.name}({a.arg})" for a, _ in pairs if a.arg in settings]
    assert found == []
    assert defaults.N_BOOT == 1000  # the constants module is importable on its own
