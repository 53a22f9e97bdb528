"""The README runs as written: every Python block, in a fresh interpreter and an empty
directory as a newcomer would paste it, printing what its comments say; and the
``schedule`` output it shows is the real one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
PYTHON_BLOCKS = re.findall(r"^```python\n(.*?)^```$", README, re.MULTILINE | re.DOTALL)


def test_the_readme_has_python_blocks():
    assert len(PYTHON_BLOCKS) >= 2


@pytest.mark.parametrize("block", PYTHON_BLOCKS,
                         ids=[f"block{k}" for k in range(1, len(PYTHON_BLOCKS) + 1)])
def test_each_python_block_runs_and_prints_what_its_comments_say(tmp_path, block):
    # a home of its own: a block importing onnxruntime left its files in ~/.cache (h93)
    home = {"HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(tmp_path / "home" / ".cache")}
    result = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, env={**os.environ, **home})
    assert result.returncode == 0, result.stderr
    promised = [line.split("#", 1)[1].strip() for line in block.splitlines()
                if line.lstrip().startswith("print(") and "#" in line]
    assert result.stdout.splitlines() == promised


def test_the_schedule_shown_is_what_the_command_prints(cli_run):
    shown = re.search(r"`schedule peephole_lstm` prints:\n\n```\n(.*?)```", README, re.DOTALL)
    assert shown is not None
    assert cli_run("schedule", "peephole_lstm").stdout == shown.group(1)


def _table_rows() -> dict[str, set[str]]:
    """The README's command table: each command's options as its rows spell them (the
    rows of one command, and the row of options several share, joined)."""
    table = README.split("| command | does |\n|---|---|\n", 1)[1].split("\n\n", 1)[0]
    found: dict[str, set[str]] = {}
    for row in table.splitlines():
        usage = row.split("` |", 1)[0]
        names = re.findall(r"`([a-z][a-z-]*)[ `]", row.split(" | ", 1)[0] + " ")
        words = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-[A-Z])(?![\w-])", usage))
        if "[run's options" in usage:
            words.add("run's options")
            but = usage.split(" but ", 1)[1] if " but " in usage else ""
            dask = {"--dask", "--shard-size", "--dask-timeout"} if "the Dask ones" in but \
                else set()
            words |= {f"not {w}" for w in {*re.findall(r"--[a-z-]+", but), *dask}}
        for name in names if usage.startswith("| `run`, ") else names[:1]:
            found.setdefault(name, set()).update(words)
    return found


def test_the_command_table_names_every_option_of_every_command():
    """Every option a command has is in its row of the table, and every option the row
    names is one the command has (``--help`` and the table cannot drift apart)."""
    from lstm_graph.cli.commands import group as main

    rows = _table_rows()
    def options(command: click.Command) -> list[set[str]]:
        """Each option's spellings: a group's (``cache``) are its commands'."""
        commands = command.commands.values() if isinstance(command, click.Group) else [command]
        return [set(param.opts) - {"-h", "--help"} for each in commands
                for param in each.params if any(opt.startswith("-") for opt in param.opts)]

    params = {name: options(command) for name, command in main.commands.items()}
    for name, words in rows.items():
        if "run's options" in words:
            words |= rows["run"] - {"--out"}
            words -= {w[4:] for w in words if w.startswith("not ")}
            words = {w for w in words if not w.startswith("not ") and w != "run's options"}
        has = [opts for opts in params.get(name, []) if opts]
        assert words <= set().union(*has), (name, sorted(words - set().union(*has)))
        missing = [sorted(opts) for opts in has if not opts & words]
        assert not missing, (name, missing)
    assert set(params) <= set(rows), sorted(set(params) - set(rows))
