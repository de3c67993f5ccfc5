"""The registry is the one list of studies, tables and figures: the plotting code, the
caption files of Snakemake's report and the DAG agree with it."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from iclscope.registry import COMPARE_FIGURES, SIZE_FIGURE, STUDIES, Captions, rst_escape, study

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_each_study_draws_exactly_the_registered_figures(name):
    module = importlib.import_module(f"iclscope.studies.{name}")
    assert list(module.FIGURES) == list(STUDIES[name].figures)
    for figure in STUDIES[name].figures:  # a caption file for Snakemake's report
        rst = REPO / "report" / "captions" / name / f"{Path(figure).stem}.rst"
        assert f'snakemake.params.captions["{figure}"]' in rst.read_text(), rst


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_each_study_draws_exactly_its_registered_compare_figures(name):
    module = importlib.import_module(f"iclscope.studies.{name}.compare")
    assert list(module.FIGURES) == list(STUDIES[name].compare_figures)
    assert STUDIES[name].hook("compare") is module.compare


def test_compare_figures_are_registered_and_captioned():
    """The size figure, then each study's overlay figures by study name (the report's order)."""
    assert COMPARE_FIGURES == (SIZE_FIGURE, "judgment_curves.png", "label_curves.png", "depth_profiles.png")
    for figure in COMPARE_FIGURES:  # a caption file for Snakemake's report
        rst = REPO / "report" / "captions" / "compare" / f"{Path(figure).stem}.rst"
        assert f'snakemake.params.captions["{figure}"]' in rst.read_text(), rst


def test_unknown_study_is_named():
    with pytest.raises(KeyError, match="unknown study 'vision'"):
        study("vision")


def test_captions_come_from_the_plot_steps_file(tmp_path):
    path = tmp_path / "captions.json"
    captions = Captions(path)
    assert "missing" in captions["a.png"]  # before the plot step ran
    path.write_text(json.dumps({"a.png": "p(random) at |x| = 5, *all* concepts_"}))
    assert captions["a.png"] == r"p(random) at \|x\| = 5, \*all\* concepts\_"
    assert "no caption for b.png" in captions["b.png"]
    assert repr(captions) == f"Captions({str(path)!r})"  # constant: not a rerun trigger
    assert rst_escape("a\\b") == "a\\\\b"


def test_building_the_dag_imports_no_analysis_library():
    """The Snakefile reads the registry, not the study modules: DAG parsing stays light."""
    code = ("import sys; sys.path.insert(0, 'workflow'); import iclscope.registry, iclscope.config, "
            "iclscope.tasks, iclscope.provenance; "
            "print(sorted(m for m in ('pandas', 'scipy', 'sklearn', 'matplotlib', 'torch', 'seaborn') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_readout_names_are_built_and_parsed_in_one_place():
    from iclscope.contracts import answer_index, answer_name, example_index, example_name, flip_index, flip_name

    for build, parse in ((flip_name, flip_index), (answer_name, answer_index), (example_name, example_index)):
        assert [parse(build(i)) for i in (1, 7, 120)] == [1, 7, 120]
    assert flip_index("answer_3") is None and answer_index("flip_3") is None and flip_index("flip_") is None
    assert example_index("examples") is None  # the span over all examples is not one example


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_every_hook_of_a_study_resolves(name):
    """Each registered "module:function" hook names a callable (they are imported only when
    called, so a typo would otherwise surface in a job)."""
    from iclscope.registry import resolve

    record = STUDIES[name]
    for hook in ("task_params", "build_task", "plan", "inputs", "analyse", "plot", "headlines"):
        assert callable(resolve(record.hooks[hook])), (name, hook)
    for hook, target in record.hooks.items():
        assert callable(resolve(target)), (name, hook)


def test_every_task_of_the_default_run_has_one_owner(default_config, repo):
    from iclscope.config import validate_config
    from iclscope.registry import owner
    from iclscope.tasks import task_names

    cfg = validate_config(default_config, root=repo)
    for task in task_names(cfg):
        owners = [s.name for s in STUDIES.values() if s.owns(task)]
        assert owners == [owner(task).name] and owners[0] in cfg["studies"], task
    with pytest.raises(KeyError, match="no study owns task 'vision'"):
        owner("vision")


def test_a_study_package_exports_its_api_lazily():
    """Importing a study package (for its plugin record) imports no analysis library; its API
    is still there, and `analyse` stays the function even when its submodule is imported first."""
    code = ("import sys; sys.path.insert(0, 'workflow'); import iclscope.studies.binary as b; "
            "heavy = [m for m in ('pandas', 'matplotlib') if m in sys.modules]; "
            "import iclscope.studies.binary.analyse; "
            "print(heavy, callable(b.analyse), b.plot.__module__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "True", "iclscope.studies.binary.figures"]


def test_the_sampled_task_is_the_one_a_study_registers(monkeypatch):
    """The generate rule's task comes from the records (study A's `sampled_tasks`); it samples one."""
    from iclscope import registry

    assert registry.sampled_task() == "binary_generation"
    monkeypatch.setitem(STUDIES, "more", registry.Study("more", "More", (), (), tasks=("more_gen",),
                                                        sampled_tasks=("more_gen",)))
    with pytest.raises(ValueError, match=r"exactly one task.*binary_generation \(study binary\), more_gen"):
        registry.sampled_task()


def test_a_record_is_refused_for_a_foreign_sampled_task_or_a_taken_compare_figure(monkeypatch):
    from iclscope import registry

    def plugins(record):
        monkeypatch.setattr(registry, "_plugins", lambda: [record])
        return registry._load

    with pytest.raises(ValueError, match="sampled task.*binary_generation not among its tasks"):
        plugins(registry.Study("x", "X", (), (), tasks=("x_a",), sampled_tasks=("binary_generation",)))()
    with pytest.raises(ValueError, match="compare figure.*label_curves.png drawn already"):
        plugins(registry.Study("x", "X", (), (), compare_figures=("label_curves.png",)))()
    assert list(plugins(registry.Study("x", "X", (), ()))()) == [*STUDIES, "x"]
