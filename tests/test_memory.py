"""Commands turn off numpy's huge-page requests unless the user chose (iclscope.memory)."""

import pytest

from iclscope.cli import main
from iclscope.memory import ENV, avoid_hugepage_stalls

try:
    from numpy._core.multiarray import _set_madvise_hugepage
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _set_madvise_hugepage


@pytest.fixture
def hugepages_on():
    """numpy asking for huge pages at the start, its setting restored after (it is process-wide)."""
    before = _set_madvise_hugepage(True)
    yield
    _set_madvise_hugepage(before)


def _asking() -> bool:
    """Whether numpy asks for huge pages now (reading the setting sets it: set it back)."""
    now = _set_madvise_hugepage(True)
    _set_madvise_hugepage(now)
    return bool(now)


def test_turned_off_where_the_user_did_not_choose(hugepages_on, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert _asking()
    assert avoid_hugepage_stalls() is True and not _asking()


def test_the_users_choice_stands(hugepages_on, monkeypatch):
    monkeypatch.setenv(ENV, "1")
    assert avoid_hugepage_stalls() is False and _asking()


def test_every_command_turns_it_off(hugepages_on, monkeypatch, tmp_path, capsys):
    monkeypatch.delenv(ENV, raising=False)
    main(["info", str(tmp_path / "missing.parquet")])  # any command, even one that fails
    assert not _asking()
