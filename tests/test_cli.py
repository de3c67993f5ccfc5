"""The command line a new user reads: descriptions, help texts, shard counting, Ctrl-C."""

from __future__ import annotations

import argparse

import pytest

from iclscope import cli


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_subcommand_has_a_description_and_every_argument_a_help():
    for name, sub in subcommands().items():
        assert sub.description, f"`iclscope {name}` has no description"
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"`iclscope {name}` argument {action.option_strings or action.dest} has no help"


@pytest.mark.parametrize("shard, shards", [(0, 2), (3, 2), (1, 0)])
def test_shards_count_from_one_like_their_paths(shard, shards, capsys):
    with pytest.raises(SystemExit, match="expected 1 <= shard <= shards"):
        cli.main(["extract", "--model-dir", "m", "--tasks", "t.parquet", "--out", "o.parquet",
                  "--shard", str(shard), "--shards", str(shards)])


def test_ctrl_c_ends_a_step_with_one_line(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_info", interrupted)
    assert cli.main(["info", "x.parquet"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["iclscope info: interrupted; no output was written"]


def test_bench_defaults_to_the_tasks_the_registry_gives(tmp_path):
    """Without --tasks: every task the built-in studies' defaults extract (in the registry's order,
    as the bench_extract rule lists them), the sampled one for `bench generate`; or --config's."""
    def tasks(*argv):
        return cli.bench_tasks(cli.build_parser().parse_args(["bench", *argv, "--out", "o.json"]))

    assert tasks("extract") == tasks("device") == [
        f"results/tasks/{t}.parquet" for t in ("binary_judgment", "binary_continuation", "regression", "reading",
                                               "labels_sentiment", "labels_novel")]
    assert tasks("generate") == ["results/tasks/binary_generation.parquet"]
    assert tasks("extract", "--tasks", "a.parquet") == ["a.parquet"]
    config = tmp_path / "c.yaml"
    config.write_text("models: [{name: m, embedded: smollm2-135m-instruct}]\nstudies: [labels]\nresults_dir: out\n"
                      "labels: {datasets: [{name: sentiment, source: vader, label_words: [negative, positive]}]}\n")
    assert tasks("extract", "--config", str(config)) == ["out/tasks/labels_sentiment.parquet"]
    assert tasks("generate", "--config", str(config)) == ["out/tasks/binary_generation.parquet"]
