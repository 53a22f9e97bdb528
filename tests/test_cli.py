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
from lstm_graph.executors.buildcache import compiler

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


def test_validate_json_on_an_invalid_cell_prints_the_diagnostics(cli, tmp_path):
    bad = tmp_path / "bad.cell"
    bad.write_text("input x\nstate h\noutput h\nh = tanh(linear(x, h[t-1])) + q\n"
                   "k = k * 2\n")
    result = cli("validate", bad, "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["valid"] is False
    assert data["diagnostics"] == [
        {"file": str(bad), "line": 4, "col": 31, "severity": "error",
         "message": "undefined name 'q'; declare it (input/state) or assign it"},
        {"file": str(bad), "line": 5, "col": 5, "severity": "error",
         "message": "algebraic loop k -> k: 'k' needs 'k' of this same step, which needs "
                    "'k'; declare one of them as a state ('state NAME') and read its previous "
                    "value with NAME[t-1]"},
    ]


def test_validate_json_on_a_valid_cell_lists_its_warnings_as_diagnostics(cli, tmp_path):
    cell = tmp_path / "w.cell"
    cell.write_text("input x\nstate h\noutput h\nh = tanh(linear(x, h[t-1]))\nk = h * 2\n")
    data = json.loads(cli("validate", cell, "--json").stdout)
    assert data["valid"] is True
    assert data["diagnostics"] == [{"file": str(cell), "line": 5, "col": 1,
                                    "severity": "warning",
                                    "message": "'k' is never used: it reaches no state and no "
                                               "output"}]


def test_validate_summary_counts_in_singular_and_plural(cli):
    assert cli("validate", "rnn").stdout == (
        "rnn: ok — 1 assignment in 1 stage, 3 parameters, state h, output h\n")
    assert cli("validate", "lstm").stdout.startswith(
        "lstm: ok — 6 assignments in 3 stages, 12 parameters, states c, h")


def test_schedule_text_aligns_reads_and_captions_in_columns(cli):
    lines = cli("schedule", "peephole_lstm").stdout.splitlines()
    assignments = [line for line in lines if line.startswith("  ") and " = " in line]
    assert len(assignments) == 6
    assert len({line.index("   [") for line in assignments}) == 1
    assert len({line.index("   #") for line in assignments}) == 1
    assert "  c = f * c[t-1] + i * g                         [old c[t-1]; new f, i, g]   # " \
        "memory pipe" in lines


def test_schedule_nodes_tags_constants_as_constants(cli):
    text = cli("schedule", "coupled_lstm", "--nodes").stdout
    assert "c.sub: H = sub(c.const(const), f(new))" in text
    assert "(input)" not in text.split("c.sub")[1].splitlines()[0]


def test_run_prints_data_on_stdout_and_messages_on_stderr(cli, tmp_path):
    result = cli("run", "rnn", "--sample", "-H", "2", "--out", tmp_path / "y.npz")
    assert result.exit_code == 0
    assert result.stderr == f"wrote {tmp_path / 'y.npz'}: y (20, 2, 2), h (2, 2)\n"
    assert result.stdout.startswith("rnn: ran x (20, 2, 8) with H=2")
    assert "\ny: mean" in result.stdout


def test_run_sample_takes_the_input_size_from_the_weights_or_the_option(cli, tmp_path):
    template = tmp_path / "w.npz"
    assert cli("params", "lstm", "-I", "5", "-H", "3", "--out", template).exit_code == 0
    result = cli("run", "lstm", "--sample", "--weights", template, "--out",
                 tmp_path / "y.npz", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["input_shape"] == [20, 2, 5]
    result = cli("run", "lstm", "--sample", "-I", "7", "-H", "3", "--out", tmp_path / "y.npz",
                 "--json")
    assert json.loads(result.stdout)["input_shape"] == [20, 2, 7]
    result = cli("run", "lstm", "--sample", "-I", "4", "--weights", template, "--out",
                 tmp_path / "y.npz")
    assert result.exit_code == 1
    assert f"{template} has input size 5, but input size 4 was asked for" in result.stderr


def test_params_summary_counts_in_singular_and_plural(cli):
    assert cli("params", "rnn", "-I", "1", "-H", "1").stderr == "3 parameters, 3 numbers\n"


@pytest.mark.parametrize("command", [
    ["trace", "lstm", "--sample", "-H", "2"],
    ["grad", "lstm", "--sample", "-H", "2"],
    ["explore", "lstm", "--sample", "-H", "2"],
    ["train", "lstm", "--task", "adding", "--steps", "1"],
    ["gradflow", "lstm"],
])
def test_an_empty_out_is_wrong_usage_for_every_command_that_writes(cli, command):
    result = cli(*command, "--out", "")
    assert result.exit_code == 2 and "the output path is empty" in result.stderr


def test_trace_and_grad_count_what_they_hold_before_they_start(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("LSTM_GRAPH_MAX_BYTES", "2M")  # a run takes ~0.8 MB here
    np.save(tmp_path / "x.npy", np.zeros((400, 20, 8), "float32"))  # 256 KB of x
    assert cli("run", "lstm", "--input", tmp_path / "x.npy", "-H", "16",
               "--out", tmp_path / "y.npz").exit_code == 0
    kept = "the tape (what backward reads" if compiler() else "every value of every step"
    for command, words in (("trace", "the trace (every assignment"), ("grad", kept)):
        result = cli(command, "lstm", "--input", tmp_path / "x.npy", "-H", "16",
                     "--out", tmp_path / "o.npz")
        assert result.exit_code == 1 and words in result.stderr, result.stderr
