"""One version, declared in pyproject.toml: the package, `iclscope --version` and every
table's provenance carry it."""

from __future__ import annotations

import tomllib

import pyarrow as pa
import pytest

import iclscope
from conftest import REPO


def declared() -> str:
    with open(REPO / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["project"]["version"]


def test_package_version_is_pyprojects():
    assert iclscope.__version__ == declared()
    assert iclscope._source_tree_version() == declared()  # an uninstalled source tree reads the same


def test_cli_prints_the_version(capsys):
    from iclscope.cli import main

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"iclscope {declared()}"


def test_a_written_table_records_the_version(tmp_path):
    from iclscope import provenance
    from iclscope.tables import table_metadata, write_table

    path = tmp_path / "t.parquet"
    write_table(pa.table({"x": [1]}), path, provenance.metadata("demo", {}))
    assert table_metadata(path)["version"] == declared()


@pytest.mark.slow
def test_every_table_of_a_run_records_the_version(finished_run):
    from iclscope.tables import table_metadata

    tables = sorted((finished_run / "results").rglob("*.parquet"))
    assert len(tables) > 20
    assert {str(t.relative_to(finished_run)): table_metadata(t)["version"] for t in tables} == {
        str(t.relative_to(finished_run)): declared() for t in tables}
