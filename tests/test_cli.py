"""The command line through click's CliRunner: exit codes, streams, JSON shapes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lstm_graph.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cli():
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(main, [str(a) for a in args])

    return invoke


def test_cells_lists_every_builtin(cli):
    result = cli("cells")
    assert result.exit_code == 0
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert names == ["coupled_lstm", "gru", "lstm", "peephole_lstm", "rnn"]
    data = json.loads(cli("cells", "--json").stdout)
    assert [c["name"] for c in data["cells"]] == names


def test_validate_ok_prints_a_summary(cli):
    result = cli("validate", "peephole_lstm")
    assert result.exit_code == 0
    assert result.stdout.startswith("peephole_lstm: ok — 6 assignments in 4 stages")
    data = json.loads(cli("validate", "lstm", "--json").stdout)
    assert data["valid"] is True and data["stages"] == 3 and data["states"] == ["c", "h"]


def test_validate_bad_file_exits_1_with_positions_and_no_traceback(cli, tmp_path):
    bad = tmp_path / "bad.cell"
    bad.write_text("cell b\ninput x\nstate h\noutput h\nh = tanh(linear(x, h)) + q\n")
    result = cli("validate", bad)
    assert result.exit_code == 1
    assert f"{bad}:5:26: error: undefined name 'q'" in result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_validate_warnings_go_to_stderr(cli, tmp_path):
    cell = tmp_path / "w.cell"
    cell.write_text("input x\nstate h\noutput h\nh = tanh(linear(x, h[t-1]))\nk = h * 2\n")
    result = cli("validate", cell)
    assert result.exit_code == 0
    assert f"{cell}:5:1: warning: 'k' is never used" in result.stderr


def test_unknown_cell_suggests_and_lists(cli):
    result = cli("validate", "peephole")
    assert result.exit_code == 1
    assert "did you mean 'peephole_lstm'?" in result.stderr
    assert "built-in cells: coupled_lstm, gru, lstm, peephole_lstm, rnn" in result.stderr


def test_missing_file(cli, tmp_path):
    result = cli("validate", tmp_path / "nope.cell")
    assert result.exit_code == 1
    assert "no such file" in result.stderr


def test_usage_errors_exit_2(cli):
    assert cli("validate").exit_code == 2
    assert cli("params", "lstm", "--input-size", "0", "--hidden-size", "3").exit_code == 2
    assert cli("frobnicate").exit_code == 2


def test_schedule_json_shows_the_output_valve_waiting(cli):
    result = cli("schedule", "peephole_lstm", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["stages"] == [["f", "i", "g"], ["c"], ["o"], ["h"]]
    assert data["waits_for_new"]["o"] == ["c"]
    assert data["reads"]["f"]["old"] == ["h[t-1]", "c[t-1]"]


def test_schedule_json_lists_every_assigned_name_under_its_own_name(cli):
    data = json.loads(cli("schedule", "gru", "--json").stdout)
    assert sorted(n for stage in data["stages"] for n in stage) == sorted("rzabnh")


def test_schedule_text(cli):
    result = cli("schedule", "lstm")
    assert result.exit_code == 0
    assert "stage 1: f, i, g, o" in result.stdout


def test_params_text_and_json(cli):
    result = cli("params", "rnn", "--input-size", "3", "--hidden-size", "2")
    assert result.exit_code == 0
    assert result.stdout.split("\n")[0].split() == ["h.W_x", "(2,", "3)"]
    data = json.loads(cli("params", "lstm", "-I", "5", "-H", "7", "--json").stdout)
    assert data["params"]["f.W_x"] == [7, 5] and data["params"]["o.b"] == [7]


def test_root_shim_and_console_script_both_work():
    for command in ([sys.executable, str(ROOT / "cli.py"), "cells"],
                    [str(Path(sys.executable).parent / "lstm-graph"), "cells"]):
        result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        assert result.returncode == 0, result.stderr
        assert "peephole_lstm" in result.stdout


def test_params_out_writes_a_template_that_runs(tmp_path):
    runner = CliRunner()
    template = tmp_path / "w.npz"
    result = runner.invoke(main, ["params", "peephole_lstm", "-I", "3", "-H", "5", "--out",
                                  str(template)])
    assert result.exit_code == 0, result.output
    with np.load(template) as weights:
        assert weights["o.p_c"].shape == (5,) and weights["f.W_x"].shape == (5, 3)
    np.save(tmp_path / "x.npy", np.ones((4, 2, 3), "float32"))
    result = runner.invoke(main, ["run", "peephole_lstm", "--input", str(tmp_path / "x.npy"),
                                  "--weights", str(template), "--out", str(tmp_path / "y.npz"),
                                  "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["arrays"] == {"y": [4, 2, 5], "c": [2, 5], "h": [2, 5]}
