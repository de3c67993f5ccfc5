"""The documentation: generated pages are current and deterministic, the site builds strictly,
the README is short and its links resolve, and nothing points outside the repository."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from iclscope import docs_reference as ref
from iclscope.cli import build_parser

GENERATED_DIRS = ("reference", "findings")


def test_generated_reference_pages_are_current():
    """docs/reference/*.md equal what the package's schema.yaml, iclscope.contracts and the CLI
    parser give now (regenerate with `iclscope docs`)."""
    pages = [g for g in ref.generate(build_parser()) if "reference" in g.page.parts]
    assert len(pages) == 3
    stale = ref.stale_pages(pages)
    assert not stale, f"stale generated pages: {stale}; regenerate them with `{ref.REGENERATE}` and commit"


@pytest.mark.parametrize("spec", ref.FINDINGS_PAGES, ids=lambda s: s.page)
def test_findings_pages_are_their_sources_verbatim(spec):
    """A findings page is exactly what the generator makes of its stated source: checked
    where the run's findings.md exists (a fresh clone has none); the page always names its
    source and the command whose run wrote it."""
    page = REPO / "docs" / spec.page
    text = page.read_text(encoding="utf-8")
    assert text.startswith(ref.GENERATED_NOTE.format(source=spec.source))
    assert f"`{spec.source}`" in text and f"`{spec.command}`" in text
    source = REPO / spec.source
    if source.is_file():
        assert text == ref.findings_page(spec, source.read_text(encoding="utf-8")), (
            f"{page} is stale against {spec.source}; regenerate it with `{ref.REGENERATE}`")


def test_generation_is_deterministic_and_independent_of_the_terminal(monkeypatch):
    first = {g.page: g.text for g in ref.generate(build_parser())}
    monkeypatch.setenv("COLUMNS", "37")  # argparse sizes help to the terminal; the page must not
    second = {g.page: g.text for g in ref.generate(build_parser())}
    assert first == second
    spec = ref.FINDINGS_PAGES[0]
    findings = "# Findings: m\n\n## Study A\n\n```text\n# not a heading\n```\n- `x`: 1 (CI [0, 2]; n = 3).\n"
    page = ref.findings_page(spec, findings)
    assert page == ref.findings_page(spec, findings)
    assert "\n## Findings: m\n" in page and "\n### Study A\n" in page and "\n# not a heading\n" in page
    assert page.count("\n# ") == 1 + 1  # the page's title, and the fenced line left alone


def test_config_reference_gives_type_default_allowed_values_and_description():
    schema = {
        "required": ["models"],
        "properties": {
            "seed": {"type": "integer", "minimum": 0, "default": 0, "description": "The seed."},
            "models": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["name"],
                "properties": {"name": {"type": "string", "pattern": "^[a-z]+$"},
                               "dtype": {"type": "string", "enum": ["auto", "float32"], "default": "auto"}}}},
            "labels": {"type": "object", "default": {}, "properties": {
                "conditions": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]},
                               "uniqueItems": True, "default": ["a"], "description": "Which | conditions."}}},
        },
    }
    keys = {k.key: k for k in ref.config_keys(schema)}
    assert list(keys) == ["seed", "models", "models[].name", "models[].dtype", "labels", "labels.conditions"]
    assert keys["seed"] == ref.ConfigKey("seed", "integer", "`0`", ">= 0", "The seed.")
    assert keys["models"].default == "required" and keys["models"].allowed == "at least 1 item(s)"
    assert keys["models[].name"].default == "required" and "^[a-z]+$" in keys["models[].name"].allowed
    assert keys["models[].dtype"].allowed == 'one of `"auto"`, `"float32"`'
    assert keys["labels.conditions"].type == "array of string"
    assert keys["labels.conditions"].allowed == 'no repeats; each item: one of `"a"`, `"b"`'
    page = ref.config_reference(schema)
    assert "| `labels.conditions` | array of string | `[\"a\"]` |" in page and "Which \\| conditions." in page


def test_every_shipped_config_key_is_in_the_reference():
    from iclscope.config import load_schema

    page = (REPO / "docs" / "reference" / "config.md").read_text(encoding="utf-8")
    for key in ref.config_keys(load_schema()):
        assert f"`{key.key}`" in page, key.key


def test_every_contract_and_column_is_in_the_tables_reference():
    import pyarrow as pa

    from iclscope import contracts

    found = {c.name: c for c in ref.table_contracts()}
    schemas = {name for name, value in vars(contracts).items() if isinstance(value, pa.Schema)}
    assert schemas - {"BINARY_GENERATION_METRICS"} <= set(found)
    assert {"TASK", "embeddings_schema", "binary_generation_metrics_schema"} <= set(found)
    page = ref.tables_reference(list(found.values()))
    for contract in found.values():
        assert f"## `{contract.name}`" in page
        for field in contract.schema:
            assert f"| `{field.name}` | `{field.type}` |" in page, (contract.name, field.name)
    assert "`fixed_size_list<item: float>[576]`" in page  # the embedding vector, at SmolLM2's width


def test_every_subcommand_and_argument_is_in_the_cli_reference():
    from iclscope.cli import build_parser

    page = ref.cli_reference(build_parser())
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, child in sub.choices.items():
        assert f"## `iclscope {name}`" in page
        for action in child._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert f"`{option}`" in page, (name, option)


def test_site_builds_strictly(tmp_path):
    """`mkdocs build --strict` (what make docs and CI run): a broken link, a missing anchor or
    a page left out of the nav fails it."""
    pytest.importorskip("mkdocs")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr
    assert (tmp_path / "site" / "reference" / "config.html").is_file()


def test_every_page_is_in_the_nav():
    import yaml

    nav = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    listed = set(re.findall(r"([\w/.-]+\.md)", yaml.safe_dump(yaml.safe_load(nav)["nav"])))
    pages = {str(p.relative_to(REPO / "docs")) for p in (REPO / "docs").rglob("*.md")}
    assert pages == listed


def test_readme_is_short_and_its_links_resolve():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if "://" not in link]
    assert len(local) > 10
    missing = [link for link in local if not (REPO / link).exists()]
    assert not missing, missing
    assert "<!-- findings:" not in text  # findings live in the generated pages, not here


def test_nothing_points_outside_the_repository():
    """Docs, docstrings and configs name only files of this repository."""
    outside = re.compile(r"\.\./shared|CONVENTIONS\.md|STUDIES\.md")
    files = [REPO / "README.md", REPO / "Snakefile", REPO / "mkdocs.yml", REPO / "Makefile"]
    for folder, pattern in (("docs", "*.md"), ("workflow/iclscope", "*.py"), ("rules", "*.smk"),
                            ("config", "*.yaml"), ("profiles", "*.yaml"), ("report", "*.rst")):
        files += sorted((REPO / folder).rglob(pattern))
    hits = [f"{path.relative_to(REPO)}:{n}" for path in files
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if outside.search(line)]
    assert not hits, hits
