"""The README runs as written: every Python block, in a fresh interpreter and an empty
directory as a newcomer would paste it, printing what its comments say; and the
``schedule`` output it shows is the real one."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
PYTHON_BLOCKS = re.findall(r"^```python\n(.*?)^```$", README, re.MULTILINE | re.DOTALL)


def test_the_readme_has_python_blocks():
    assert len(PYTHON_BLOCKS) >= 2


@pytest.mark.parametrize("block", PYTHON_BLOCKS,
                         ids=[f"block{k}" for k in range(1, len(PYTHON_BLOCKS) + 1)])
def test_each_python_block_runs_and_prints_what_its_comments_say(tmp_path, block):
    result = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    promised = [line.split("#", 1)[1].strip() for line in block.splitlines()
                if line.lstrip().startswith("print(") and "#" in line]
    assert result.stdout.splitlines() == promised


def test_the_schedule_shown_is_what_the_command_prints(cli_run):
    shown = re.search(r"`schedule peephole_lstm` prints:\n\n```\n(.*?)```", README, re.DOTALL)
    assert shown is not None
    assert cli_run("schedule", "peephole_lstm").stdout == shown.group(1)
