"""The one list of studies: each study's record, which the rest of the system dispatches through.

A study registers a :class:`Study` record in its own package (``iclscope.studies.<name>.plugin``
for the three built in; any importable module for a study outside this package, announced by
a Python entry point in the group ``iclscope.studies``, see docs/extending.md). The record says
what the Snakefile (through ``rules/common.smk`` and ``rules/studies.smk``), the CLI, the task
builders, the extraction plan, the findings, the report and the comparison ask of the study:
its tables and figures, its tasks, and ``hooks``, ``"module:function"`` strings resolved only
when called. This module imports nothing beyond the standard library and the studies'
light ``plugin`` modules, so building the DAG stays light.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import types
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Callable, Mapping

# what the extraction step writes per model and task
EXTRACT_TABLES = ("embeddings", "attention", "readouts")

# the entry-point group a study outside this package registers under (name = the study's name,
# value = "module:ATTRIBUTE" holding its Study record)
ENTRY_POINT_GROUP = "iclscope.studies"

# the built-in studies' records, in registry order (the order of reports, findings and compare)
BUILTIN = (
    "iclscope.studies.binary.plugin:STUDY",
    "iclscope.studies.representations.plugin:STUDY",
    "iclscope.studies.labels.plugin:STUDY",
)


@dataclass(frozen=True)
class SizePanel:
    """One panel of the comparison's size figure: a headline quantity of the study (the findings'
    ``quantity``) against model size, one series per unit."""

    quantity: str
    words: str  # its y-axis label, in words
    units: tuple[str, ...] = ()  # the units shown, as fnmatch patterns (empty: every unit)

    def shows(self, unit: str) -> bool:
        return not self.units or any(fnmatchcase(unit, pattern) for pattern in self.units)


@dataclass(frozen=True)
class Study:
    """One study: where its outputs go, what they are called, and the hooks that compute them.

    Hooks (``hooks[name]`` = ``"module:function"``; the ones marked optional have a default):

    ``task_names(config) -> list[str]``
        the tasks a validated config asks of the study (optional: ``tasks``)
    ``task_params(name, config) -> dict``
        the config slice that builds task ``name`` (the build rule's params)
    ``task_data_files(name, config, root) -> list[Path]``
        local files task ``name`` reads (optional: none)
    ``build_task(name, params, root) -> pyarrow.Table``
        the task table
    ``plan(task, row) -> PromptPlan``
        the extraction plan of one task row (optional: a study whose tasks are all sampled)
    ``generate_params(config) -> dict``
        what the generation job of a sampled task reads of the config beside the model's
        run-time settings (a study with ``sampled_tasks``)
    ``extract_params(task, config) -> dict``
        what the study adds to the extraction params of its task (optional: nothing)
    ``datasets(config) -> list[str]``
        the datasets of a ``per_dataset`` study
    ``inputs(config, dataset) -> dict[str, str]``
        the analysis' named inputs, paths relative to the results folder with ``{model}``
    ``spec(config, dataset) -> dict``
        the config slice the analysis and the figures read: the rules' params (optional:
        ``{"seed": ..., name: config[name]}``, plus ``"dataset"`` for a per-dataset study)
    ``analyse(inputs, params, outs)``, ``plot(inputs, params, out_dir) -> captions``
        the analysis and the figures (``iclscope analyse|plot NAME``)
    ``headlines(root, context) -> list[findings.Headline]``
        the findings' headline quantities (``context``: seed, n_boot, level, datasets)
    ``schema() -> dict``
        JSON schema of the study's config section ``config[name]`` (optional; for a study
        outside this package, whose section config/schema.yaml does not declare)
    ``compare(results, models, params, figures_dir) -> captions``
        the study's overlay figures in the comparison (optional; two or more models): draws
        exactly the figures of ``compare_figures`` into ``figures_dir`` (a Path,
        ``results/compare/figures``) from the models' tables under ``results`` (a Path;
        ``models``: their names; ``params``: the compare rule's, ``seed``, ``studies`` and
        ``datasets``) and returns {figure file name: caption}. Called for every registered
        study: a model without the study's tables is left out (``iclscope.compare.model_tables``
        reads those that exist), and a figure with no model says so

    The comparison's size figure (headline quantities against model size) shows each study's
    ``size_panels`` (:class:`SizePanel`: a quantity of its headlines, its axis label, the units
    shown), one panel each, the studies ordered by ``size_rank`` (the unranked after them, in
    registry order).
    """

    name: str  # the config's `studies` entry, the results folder and the CLI's study argument
    title: str  # how reports and findings head it
    tables: tuple[str, ...]  # results/{model}/{name}/[{dataset}/]{table}.parquet
    figures: tuple[str, ...]  # results/{model}/figures/{name}/[{dataset}/]{figure}
    per_dataset: bool = False  # one analysis, table set and figure set per dataset
    key_tables: tuple[str, ...] = ()  # also offered in Snakemake's report (as downloads)
    citation: str = ""  # the paper, shown beside the title in the HTML report
    guide: str = ""  # how to read the study's figures (the HTML report)
    tasks: tuple[str, ...] = ()  # the task names it owns
    task_prefix: str = ""  # ... and every task named task_prefix + something (per-dataset tasks)
    sampled_tasks: tuple[str, ...] = ()  # of its tasks, those a model samples (`generate`), not extracts
    plot_tables: tuple[str, ...] = ()  # the tables the plot step reads (empty: all of `tables`)
    compare_figures: tuple[str, ...] = ()  # results/compare/figures/{figure}, drawn by its `compare` hook
    size_panels: tuple[SizePanel, ...] = ()  # its panels of the comparison's size figure, in order
    size_rank: int | None = None  # where they go there: by rank, then the unranked in registry order
    hooks: Mapping[str, str] = field(default_factory=dict)

    def owns(self, task: str) -> bool:
        """Whether task ``task`` is one of this study's."""
        return task in self.tasks or bool(self.task_prefix and task.startswith(self.task_prefix))

    def has(self, hook: str) -> bool:
        return hook in self.hooks

    def hook(self, hook: str) -> Callable[..., Any]:
        """The function behind ``hooks[hook]``, imported now."""
        try:
            target = self.hooks[hook]
        except KeyError:
            raise KeyError(f"study {self.name!r} registers no {hook!r} hook") from None
        return resolve(target)

    def call(self, hook: str, *args: Any) -> Any:
        return self.hook(hook)(*args)

    # what the rules and the CLI ask, with the defaults the docstring names
    def task_names(self, config: Mapping[str, Any]) -> list[str]:
        return list(self.call("task_names", config)) if self.has("task_names") else list(self.tasks)

    def datasets(self, config: Mapping[str, Any]) -> list[str]:
        return list(self.call("datasets", config)) if self.per_dataset else []

    def spec(self, config: Mapping[str, Any], dataset: str | None = None) -> dict[str, Any]:
        if self.has("spec"):
            return self.call("spec", config, dataset)
        spec = {"seed": config["seed"], self.name: config[self.name]}
        return {**spec, "dataset": dataset} if self.per_dataset else spec

    def inputs(self, config: Mapping[str, Any], dataset: str | None = None) -> dict[str, str]:
        return self.call("inputs", config, dataset)

    def extract_params(self, task: str, config: Mapping[str, Any]) -> dict[str, Any]:
        return self.call("extract_params", task, config) if self.has("extract_params") else {}

    def task_data_files(self, task: str, config: Mapping[str, Any], root: Path) -> list[Path]:
        return list(self.call("task_data_files", task, config, root)) if self.has("task_data_files") else []


def resolve(target: str) -> Any:
    """``"package.module:attribute"`` -> the attribute (the module imported now)."""
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"expected 'module:attribute', got {target!r}")
    value: Any = importlib.import_module(module)
    for part in attr.split("."):
        value = getattr(value, part)
    return value


def _plugins() -> list[Study]:
    """Studies outside this package: entry points in the group ``iclscope.studies``."""
    from importlib.metadata import entry_points

    found = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        record = ep.load()
        if not isinstance(record, Study) or record.name != ep.name:
            raise TypeError(f"entry point {ep.name} = {ep.value} ({ENTRY_POINT_GROUP}): expected the Study "
                            f"record of a study named {ep.name!r}")
        found.append(record)
    return found


def _load() -> dict[str, Study]:
    studies: dict[str, Study] = {}
    for record in [*(resolve(t) for t in BUILTIN), *_plugins()]:
        if record.name in studies:
            raise ValueError(f"study {record.name!r} registered twice")
        if foreign := [t for t in record.sampled_tasks if not record.owns(t)]:
            raise ValueError(f"study {record.name!r}: sampled task(s) {', '.join(foreign)} not among its tasks")
        taken = {SIZE_FIGURE, *(f for s in studies.values() for f in s.compare_figures)}
        if clash := sorted(taken.intersection(record.compare_figures)):  # one folder for all
            raise ValueError(f"study {record.name!r}: compare figure(s) {', '.join(clash)} drawn already")
        studies[record.name] = record
    return studies


def study(name: str) -> Study:
    try:
        return STUDIES[name]
    except KeyError:
        raise KeyError(f"unknown study {name!r}; known: {', '.join(STUDIES)}") from None


def owner(task: str) -> Study:
    """The study that owns task ``task``."""
    for record in STUDIES.values():
        if record.owns(task):
            return record
    raise KeyError(f"no study owns task {task!r}; studies: {', '.join(STUDIES)}")


def sampled_task() -> str:
    """The task a model samples instead of extracting: the `generate` rule's and ``iclscope
    generate``'s (its study's ``generate_params`` hook gives the job's params). The rule
    samples one task: a registry whose studies list more, or none, in ``sampled_tasks`` is
    refused here."""
    found = [f"{t} (study {s.name})" for s in STUDIES.values() for t in s.sampled_tasks]
    if len(found) != 1:
        raise ValueError(f"the generate rule samples exactly one task; the registered studies' sampled_tasks "
                         f"are {', '.join(found) or 'none'}")
    return next(t for s in STUDIES.values() for t in s.sampled_tasks)


def plugin_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` (config/schema.yaml, loaded) admitting the studies registered from outside this
    package: their names in ``studies`` and their config sections (their ``schema`` hook)."""
    extra = [s for s in STUDIES.values() if s.name not in schema["properties"]["studies"]["items"]["enum"]]
    if not extra:
        return dict(schema)
    out = json.loads(json.dumps(schema))  # a deep copy of plain data
    out["properties"]["studies"]["items"]["enum"] += [s.name for s in extra]
    for s in extra:
        out["properties"][s.name] = s.call("schema") if s.has("schema") else {"type": "object", "default": {}}
    return out


def schema_file(base: str | Path) -> Path:
    """The config schema to validate against: ``base`` itself, or, when studies from outside
    this package are registered, a copy admitting them (:func:`plugin_schema`), written once
    per content to the temporary folder."""
    import hashlib
    import tempfile

    import yaml

    base = Path(base)
    schema = yaml.safe_load(base.read_text(encoding="utf-8"))
    extended = plugin_schema(schema)
    if extended == schema:
        return base
    text = json.dumps(extended, sort_keys=True, indent=1)  # JSON is YAML
    path = Path(tempfile.gettempdir()) / f"iclscope-schema-{hashlib.sha256(text.encode()).hexdigest()[:16]}.yaml"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return path


# results/compare/figures/: the models side by side (two or more models): the size figure, then
# each study's overlay figures (its `compare_figures`; COMPARE_FIGURES below)
SIZE_FIGURE = "headlines_vs_size.png"
CAPTIONS_FILE = "captions.json"  # beside each figure set: every figure's caption, written by the plot step


class Captions:
    """The captions a plot step wrote (``captions.json``), read when a report asks.

    The one source of every figure's caption: the plot step generates it from what ran,
    iclscope's HTML report shows it, and Snakemake's ``--report`` shows it through the
    figure's rst caption (``{{ snakemake.params.captions["generation.png"] }}``). As a
    rule param this object is not a rerun trigger (Snakemake records only plain values).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __getitem__(self, figure: str) -> str:
        try:
            captions = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return f"(no caption: {self.path} is missing or unreadable)"
        return rst_escape(str(captions.get(figure, f"(no caption for {figure} in {self.path})")))

    def __repr__(self) -> str:
        return f"Captions({str(self.path)!r})"


def rst_escape(text: str) -> str:
    """Plain text made safe for reStructuredText (captions hold ``*``, `` ` `` and ``|``)."""
    for char in ("\\", "*", "`", "|", "_"):
        text = text.replace(char, "\\" + char)
    return text


class _StudyPackage(types.ModuleType):
    """A study package whose API is imported on first use (:func:`lazy_exports`).

    Importing a submodule binds it on its package under its name; an exported function of the
    same name (``analyse``, from the submodule ``analyse``) keeps that name instead, as when the
    package imported it eagerly."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and name in self.__dict__.get("_EXPORTS", {}):
            return
        super().__setattr__(name, value)


def lazy_exports(package: str, exports: Mapping[str, tuple[str, ...]]) -> None:
    """Make ``package`` (a study's ``__init__``) export ``exports`` = {submodule: names} lazily.

    ``from iclscope.studies.binary import plot`` and ``binary.plot`` work as before, but
    importing the package (and its light ``plugin`` module) imports no analysis library."""
    module = sys.modules[package]
    where = {name: sub for sub, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{where[name]}"), name)
        module.__dict__[name] = value
        return value

    module.__dict__.update(_EXPORTS=where, __getattr__=__getattr__,
                           __dir__=lambda: sorted({*module.__dict__, *where}))
    module.__class__ = _StudyPackage


# last: the studies' plugin modules import this module's names above
STUDIES: dict[str, Study] = _load()
# the studies' overlay figures by study name: the order of the compare rule's outputs and of the
# report's "Models compared" section, whatever order the studies register in
COMPARE_FIGURES = (SIZE_FIGURE, *(f for s in sorted(STUDIES.values(), key=lambda s: s.name)
                                  for f in s.compare_figures))
