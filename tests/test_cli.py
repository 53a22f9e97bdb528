"""The command line in this process (conftest's ``cli`` fixtures) and as a process of its
own: exit codes, streams, JSON shapes."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import needs_compiler

import lstm_graph
from lstm_graph.executors.buildcache import compiler

ROOT = Path(__file__).resolve().parents[1]


def test_cells_lists_every_builtin(cli_run):
    result = cli_run("cells")
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert names == ["coupled_lstm", "gru", "gru_cho", "lstm", "lstm_proj", "peephole_lstm", "rnn",
                     "rnn_relu"]
    data = json.loads(cli_run("cells", "--json").stdout)
    assert [c["name"] for c in data["cells"]] == names
    # each description is the cell file's whole first paragraph, not its first line
    assert "gru_cho        GRU as Cho et al. 2014 wrote it: the reset valve scales h[t-1] " \
        "before its linear (ONNX GRU's default, linear_before_reset=0).\n" in result.stdout


def test_validate_ok_prints_a_summary(cli_run):
    result = cli_run("validate", "peephole_lstm")
    assert result.stdout.startswith("peephole_lstm: ok — 6 assignments in 4 stages")
    data = json.loads(cli_run("validate", "lstm", "--json").stdout)
    assert data["valid"] is True and data["stages"] == 3 and data["states"] == ["c", "h"]


def test_validate_bad_file_exits_1_with_positions_and_no_traceback(cli, tmp_path):
    bad = tmp_path / "bad.cell"
    bad.write_text("cell b\ninput x\nstate h\noutput h\nh = tanh(linear(x, h)) + q\n")
    result = cli("validate", bad)
    assert result.exit_code == 1
    assert f"{bad}:5:26: error: undefined name 'q'" in result.stderr
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)
    assert result.stdout == ""


def test_validate_warnings_go_to_stderr(cli_run, tmp_path):
    cell = tmp_path / "w.cell"
    cell.write_text("input x\nstate h\noutput h\nh = tanh(linear(x, h[t-1]))\nk = h * 2\n")
    result = cli_run("validate", cell)
    assert f"{cell}:5:1: warning: 'k' is never used" in result.stderr


def test_unknown_cell_suggests_and_lists(cli_fails):
    stderr = cli_fails("validate", "peephole")
    assert "did you mean 'peephole_lstm'?" in stderr
    assert ("built-in cells: coupled_lstm, gru, gru_cho, lstm, lstm_proj, peephole_lstm, rnn, "
            "rnn_relu") in stderr


def test_a_cell_s_name_is_said_on_one_line_and_the_api_takes_a_path_as_the_os_gives_it(
        cli_fails):
    """A name with a newline that names no file printed its second line as a message of
    its own; from Python, a NUL was a ValueError, None and bytes "not a built-in cell"."""
    stderr = cli_fails("validate", "nope\n/x/ok.cell: ok")
    assert stderr.splitlines()[0].startswith("nope\\n/x/ok.cell: ok: no such file;")
    with pytest.raises(lstm_graph.UnknownCellError, match=r"^a\\x00b: not a path"):
        lstm_graph.load_cell("a\x00b")
    with pytest.raises(lstm_graph.UnknownCellError, match="named by a string or a path, not "
                       "by NoneType None"):
        lstm_graph.load_cell(None)
    assert lstm_graph.load_cell(b"lstm").name == "lstm"


def test_a_link_to_nothing_is_said_to_be_one(tmp_path, cli_fails):
    (tmp_path / "gone.cell").symlink_to(tmp_path / "moved" / "x.cell")
    assert cli_fails("validate", tmp_path / "gone.cell").startswith(
        f"{tmp_path / 'gone.cell'} is a symbolic link to {tmp_path / 'moved' / 'x.cell'}, "
        "which does not exist")


@pytest.mark.parametrize("spec, meant", [("LSTM", "lstm"), ("Peephole-LSTM", "peephole_lstm"),
                                         ("GRU", "gru"), ("coupled lstm", "coupled_lstm")])
def test_a_cell_name_in_other_case_or_with_dashes_gets_a_did_you_mean(cli_refused, spec, meant):
    stderr = cli_refused("run", spec, "--sample", "-H", "2")
    assert stderr.startswith(f"{spec}: not a built-in cell (did you mean '{meant}'?)")


def test_missing_file(cli_fails, tmp_path):
    assert "no such file" in cli_fails("validate", tmp_path / "nope.cell")


def test_usage_errors_exit_2(cli_fails):
    assert "Error: Missing argument 'SPEC'." in cli_fails("validate", code=2)
    assert "Error: Invalid value for '--input-size' / '-I': 0 is not in the range x>=1." in \
        cli_fails("params", "lstm", "--input-size", "0", "--hidden-size", "3", code=2)
    assert "Error: No such command 'frobnicate'." in cli_fails("frobnicate", code=2)


def test_schedule_json_shows_the_output_valve_waiting(cli_run):
    result = cli_run("schedule", "peephole_lstm", "--json")
    data = json.loads(result.stdout)
    assert data["stages"] == [["f", "i", "g"], ["c"], ["o"], ["h"]]
    assert data["waits_for_new"]["o"] == ["c"]
    assert data["reads"]["f"]["old"] == ["h[t-1]", "c[t-1]"]


def test_schedule_json_lists_every_assigned_name_under_its_own_name(cli_run):
    data = json.loads(cli_run("schedule", "gru", "--json").stdout)
    assert sorted(n for stage in data["stages"] for n in stage) == sorted("rzabnh")


def test_schedule_text(cli_run):
    result = cli_run("schedule", "lstm")
    assert "stage 1: f, i, g, o" in result.stdout


def test_params_text_and_json(cli_run):
    result = cli_run("params", "rnn", "--input-size", "3", "--hidden-size", "2")
    assert result.stdout.split("\n")[0].split() == ["h.W_x", "(2,", "3)"]
    data = json.loads(cli_run("params", "lstm", "-I", "5", "-H", "7", "--json").stdout)
    assert data["params"]["f.W_x"] == [7, 5] and data["params"]["o.b"] == [7]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_params_out_in_a_dtype_holds_the_weights_run_draws_in_it(tmp_path, cli_run, dtype):
    """``params --seed 7 --dtype float64 --out`` is what ``run --seed 7 --dtype float64``
    runs (the float32 template, cast up, was 1e-8 off)."""
    cli_run("params", "gru", "-I", "3", "-H", "5", "--seed", "7", "--dtype", dtype, "--out",
            tmp_path / "w.npz")
    with np.load(tmp_path / "w.npz") as weights:
        assert {weights[name].dtype for name in weights.files} == {np.dtype(dtype)}
    np.save(tmp_path / "x.npy", np.random.default_rng(1).standard_normal((4, 2, 3)))
    common = ["run", "gru", "--input", tmp_path / "x.npy", "--dtype", dtype]
    cli_run(*common, "-H", "5", "--seed", "7", "--out", tmp_path / "drawn.npz")
    cli_run(*common, "--weights", tmp_path / "w.npz", "--out", tmp_path / "given.npz")
    with np.load(tmp_path / "drawn.npz") as drawn, np.load(tmp_path / "given.npz") as given:
        assert drawn["y"].tobytes() == given["y"].tobytes()


def test_params_dtype_without_out_is_wrong_usage(cli_fails):
    assert "--dtype is the type of the --out values; give --out" in cli_fails(
        "params", "gru", "-I", "3", "-H", "5", "--dtype", "float64", code=2)


def test_params_of_a_model_file_refuses_a_dtype(tmp_path, cli_run, cli_fails):
    cli_run("export", "rnn", "--format", "onnx", "-I", "2", "-H", "3", "--out",
            tmp_path / "rnn.onnx")
    assert "holds its weights: drop --dtype" in cli_fails(
        "params", tmp_path / "rnn.onnx", "--dtype", "float64", code=2)


@pytest.mark.parametrize("args, words", [
    # each option was taken and ignored, exit 0
    (["run", "lstm", "-H", "2", "--sample", "--out", "y.npz", "--dask-timeout", "5"],
     "--dask-timeout bounds the wait for a Dask cluster: give --dask too"),
    (["render", "--all", "--out", "g/", "--stages", "--highlight", "h"],
     "--all draws the gallery as it is (both styles, SVG and DOT); drop --highlight, "
     "--stages"),
    (["render", "rnn", "--unroll", "2", "--step", "3"],
     "it does not combine with --highlight, --stages, --trace, --step or --batch"),
    (["params", "lstm", "-I", "2", "-H", "3", "--seed", "3"],
     "--seed draws the --out values; give --out"),
    (["gradflow", "rnn", "--length", "3", "-H", "2", "--out", "c.png", "--style", "pipe"],
     "--style chooses the style of --diagram; give --diagram too"),
    # how --states and SOURCE are written: usage, as other options' values are (was exit 1)
    (["from-torch", "x.py:A", "-I", "2", "-H", "2", "--states", "h,h", "--out", "a.cell",
      "--weights-out", "a.npz"], "--states names a state twice: h, h"),
    (["from-torch", "x.py", "-I", "2", "-H", "2", "--states", "h", "--out", "a.cell",
      "--weights-out", "a.npz"], "give the module as FILE.py:CLASS"),
])
def test_an_option_that_would_be_ignored_is_wrong_usage(args, words, cli_fails, tmp_path,
                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert words in cli_fails(*args, code=2)
    assert list(tmp_path.iterdir()) == []


def test_params_of_a_model_file_refuses_the_options_it_would_ignore(tmp_path, cli_run,
                                                                    cli_fails):
    cli_run("export", "rnn", "--format", "onnx", "-I", "2", "-H", "3", "--out",
            tmp_path / "rnn.onnx")
    assert "holds its layers, direction and weights: drop --layers, --seed" in cli_fails(
        "params", tmp_path / "rnn.onnx", "--layers", "3", "--seed", "1", code=2)


def test_a_usage_error_shows_a_file_name_inert(cli_fails):
    """A name's escape codes went to the terminal raw in usage errors (exit 2) alone."""
    assert "--out w\\x1b[31m.npy: this writes an .npz" in cli_fails(
        "run", "lstm", "-H", "2", "--sample", "--out", "w\x1b[31m.npy", code=2)


def test_root_shim_and_console_script_both_work():
    for command in ([sys.executable, str(ROOT / "cli.py"), "cells"],
                    [str(Path(sys.executable).parent / "lstm-graph"), "cells"]):
        result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        assert result.returncode == 0, result.stderr
        assert "peephole_lstm" in result.stdout


def test_params_out_writes_a_template_that_runs(tmp_path, cli_run):
    template = tmp_path / "w.npz"
    cli_run("params", "peephole_lstm", "-I", "3", "-H", "5", "--out", template)
    with np.load(template) as weights:
        assert weights["o.p_c"].shape == (5,) and weights["f.W_x"].shape == (5, 3)
    np.save(tmp_path / "x.npy", np.ones((4, 2, 3), "float32"))
    result = cli_run("run", "peephole_lstm", "--input", tmp_path / "x.npy", "--weights",
                     template, "--out", tmp_path / "y.npz", "--json")
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
         "message": "algebraic loop k -> k: 'k' reads its own value of this same step, "
                    "which it is computing; declare it as a state ('state k') and read its "
                    "previous value with k[t-1]"},
    ]


def test_validate_json_on_a_valid_cell_lists_its_warnings_as_diagnostics(cli_run, tmp_path):
    cell = tmp_path / "w.cell"
    cell.write_text("input x\nstate h\noutput h\nh = tanh(linear(x, h[t-1]))\nk = h * 2\n")
    data = json.loads(cli_run("validate", cell, "--json").stdout)
    assert data["valid"] is True
    assert data["diagnostics"] == [{"file": str(cell), "line": 5, "col": 1,
                                    "severity": "warning",
                                    "message": "'k' is never used: it reaches no state and no "
                                               "output"}]


def test_validate_summary_counts_in_singular_and_plural(cli_run):
    assert cli_run("validate", "rnn").stdout == (
        "rnn: ok — 1 assignment in 1 stage, 3 parameters, state h, output h\n")
    assert cli_run("validate", "lstm").stdout.startswith(
        "lstm: ok — 6 assignments in 3 stages, 12 parameters, states c, h")


def test_schedule_text_aligns_reads_and_captions_in_columns(cli_run):
    lines = cli_run("schedule", "peephole_lstm").stdout.splitlines()
    assignments = [line for line in lines if line.startswith("  ") and " = " in line]
    assert len(assignments) == 6
    assert len({line.index("   [") for line in assignments}) == 1
    assert len({line.index("   #") for line in assignments}) == 1
    assert "  c = f * c[t-1] + i * g                         [old c[t-1]; new f, i, g]   # " \
        "memory pipe" in lines


def test_schedule_nodes_tags_constants_as_constants(cli_run):
    text = cli_run("schedule", "coupled_lstm", "--nodes").stdout
    assert "c.sub: H = sub(c.const(const), f(new))" in text
    assert "(input)" not in text.split("c.sub")[1].splitlines()[0]


def test_run_prints_data_on_stdout_and_messages_on_stderr(cli_run, tmp_path):
    result = cli_run("run", "rnn", "--sample", "-H", "2", "--out", tmp_path / "y.npz")
    assert result.stderr == f"wrote {tmp_path / 'y.npz'}: y (20, 2, 2), h (2, 2)\n"
    assert result.stdout.startswith("rnn: ran x (20, 2, 8) with H=2")
    assert "\ny: mean" in result.stdout


GROWS = "cell grows\ninput x\nstate h\noutput h\nh = softplus(linear(x, h[t-1]))\n"


def test_run_and_grad_summarise_a_float32_run_near_its_limit_in_float64(cli_run, tmp_path):
    """A float32 y of 1e29 has a std (summed in float32 its squares were inf) and reads in
    6 digits, not 30; grad's norms are finite, with no NumPy overflow warning; a y with NaN
    has a NaN std."""
    (tmp_path / "grows.cell").write_text(GROWS)
    np.save(tmp_path / "x.npy", np.full((5, 2, 3), 1e30, np.float32))
    np.save(tmp_path / "gy.npy", np.ones((5, 2, 4), np.float32))
    args = ["--input", tmp_path / "x.npy", "-H", "4", "--out", tmp_path / "out.npz"]
    summary = json.loads(cli_run("run", tmp_path / "grows.cell", *args, "--json").stdout)
    with np.load(tmp_path / "out.npz") as found, np.errstate(over="ignore"):
        y = found["y"].astype(np.float64)
        assert np.isinf(found["y"].std())  # as float32 sums give it
    assert 1e29 < y.max() < 1e31
    assert summary["y"]["std"] == pytest.approx(y.std(), rel=1e-12)
    text = cli_run("run", tmp_path / "grows.cell", *args).stdout
    assert re.search(r"y: mean \+\d\.\d{5}e\+29  std \d\.\d{5}e\+29  min \+0\.00000  max "
                     r"\+\d\.\d{5}e\+29\n", text), text
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # NumPy's "overflow encountered"
        result = cli_run("grad", tmp_path / "grows.cell", *args, "--grad-output",
                         tmp_path / "gy.npy")
    with np.load(tmp_path / "out.npz") as found:
        norm = float(np.linalg.norm(found["h.W_x"].astype(np.float64)))
    assert f"norm {norm:.6g}" in result.stdout and "inf" not in result.stdout
    x = np.ones((5, 2, 3), np.float32)
    x[2, 0, 1] = np.nan
    np.save(tmp_path / "x.npy", x)
    text = cli_run("run", "lstm", *args, "--allow-nonfinite").stdout
    assert "y: mean +nan  std nan  min +nan  max +nan" in text  # std was 0: max(0, nan)


def test_a_summary_over_blocks_keeps_a_nan_in_a_later_block(cli_run, tmp_path, monkeypatch):
    """Past one block of numbers (2**20; here 7), min and max were Python's, and
    min(0.0, nan) is 0.0: a y with NaN in its last step only printed finite ends."""
    from lstm_graph.distributed import jobs

    monkeypatch.setattr(jobs.Moments, "BLOCK", 7)
    x = np.ones((5, 2, 3), np.float32)
    x[4, 1, 2] = np.nan
    np.save(tmp_path / "x.npy", x)
    summary = json.loads(cli_run("run", "lstm", "--input", tmp_path / "x.npy", "-H", "4",
                                 "--out", tmp_path / "y.npz", "--allow-nonfinite",
                                 "--json").stdout)
    assert summary["y"] == {"max": None, "mean": None, "min": None, "std": None}  # NaN


def test_run_sample_takes_the_input_size_from_the_weights_or_the_option(
        cli_run, cli_refused, tmp_path):
    template = tmp_path / "w.npz"
    cli_run("params", "lstm", "-I", "5", "-H", "3", "--out", template)
    result = cli_run("run", "lstm", "--sample", "--weights", template, "--out",
                     tmp_path / "y.npz", "--json")
    assert json.loads(result.stdout)["input_shape"] == [20, 2, 5]
    result = cli_run("run", "lstm", "--sample", "-I", "7", "-H", "3", "--out",
                     tmp_path / "y.npz", "--json")
    assert json.loads(result.stdout)["input_shape"] == [20, 2, 7]
    stderr = cli_refused("run", "lstm", "--sample", "-I", "4", "--weights", template)
    assert f"{template} has input size 5, but input size 4 was asked for" in stderr


def test_params_summary_counts_in_singular_and_plural(cli_run):
    assert cli_run("params", "rnn", "-I", "1", "-H", "1").stderr == "3 parameters, 3 numbers\n"


@pytest.mark.parametrize("command", [
    ["trace", "lstm", "--sample", "-H", "2"],
    ["grad", "lstm", "--sample", "-H", "2"],
    ["explore", "lstm", "--sample", "-H", "2"],
    ["train", "lstm", "--task", "adding", "--steps", "1"],
    ["gradflow", "lstm"],
])
def test_an_empty_out_is_wrong_usage_for_every_command_that_writes(cli_fails, command):
    assert "the output path is empty" in cli_fails(*command, "--out", "", code=2)


@pytest.mark.parametrize("command, option", [
    (["run", "lstm", "-H", "2"], "--input"),
    (["run", "lstm", "--sample"], "--weights"),
    (["run", "lstm", "--sample", "-H", "2"], "--state"),
    (["run", "lstm", "--sample", "-H", "2"], "--lengths"),
    (["grad", "lstm", "--sample", "-H", "2"], "--grad-output"),
    (["render", "lstm", "--step", "1"], "--trace"),
    (["export", "lstm", "--format", "onnx"], "--weights"),
    (["train", "lstm", "--steps", "1", "--out", "w.npz"], "--task"),
])
def test_an_empty_input_path_is_wrong_usage_named_not_the_working_directory(
        cli_fails, command, option):
    """``--input "$X"`` with X unset said ``.: is a directory, not a file`` (exit 1)."""
    said = cli_fails(*command, option, "", code=2)
    assert f"Invalid value for '{option}'" in said and "is empty (an unset shell variable?)" \
        in said, said


def test_trace_and_grad_count_what_they_hold_before_they_start(cli_run, cli_refused,
                                                               tmp_path):
    # a run takes ~0.8 MB here natively (~3 MB in the NumPy plan, with its hoisted products)
    limit = {"LSTM_GRAPH_MAX_BYTES": "2M" if compiler() else "5M"}
    np.save(tmp_path / "x.npy", np.zeros((400, 20, 8), "float32"))  # 256 KB of x
    cli_run("run", "lstm", "--input", tmp_path / "x.npy", "-H", "16", "--out",
            tmp_path / "y.npz", env=limit)
    kept = "the tape (what backward reads" if compiler() else "every value of every step"
    for command, words in (("trace", "the trace (every assignment"), ("grad", kept)):
        stderr = cli_refused(command, "lstm", "--input", tmp_path / "x.npy", "-H", "16",
                             env=limit)
        assert words in stderr, stderr


def _ends_as_a_zip(data: bytes) -> bool:
    """Whether ``data`` ends where an .npz (a zip without comment) ends: nothing after."""
    return data[-22:-18] == b"PK\x05\x06"


@pytest.mark.parametrize("command", [
    ["run", "lstm", "--sample", "-H", "3"], ["run", "lstm", "--sample", "-H", "3", "--json"],
    ["trace", "lstm", "--sample", "-H", "3"], ["grad", "rnn", "--sample", "-H", "3"],
    ["params", "gru", "-I", "2", "-H", "3"]])
def test_out_on_stdout_sends_the_summary_to_stderr_not_into_the_npz(tmp_path, command,
                                                                    cli_process):
    """``run --out /dev/stdout | cat > y.npz``: the summary once went after the archive."""
    result = cli_process(*command, "--out", "/dev/stdout", cwd=tmp_path, text=False)
    assert result.returncode == 0, result.stderr
    assert _ends_as_a_zip(result.stdout), result.stdout[-200:]
    summary = result.stderr.decode()
    said = '"ran_with"' if "--json" in command else {
        "run": "y: mean", "trace": "cell.sha256", "grad": "norm", "params": "b.W_h"}[command[0]]
    assert said in summary
    plain = cli_process(*command, "--out", "y.npz", cwd=tmp_path, text=False)
    assert plain.returncode == 0 and plain.stdout  # to a file, the summary stays on stdout


def test_an_npy_named_npz_for_an_option_that_takes_npy_is_said_so(tmp_path, cli_refused):
    """The hint was 'this takes an .npz of arrays by name (numpy.savez(path, h=…, c=…))':
    --input takes an .npy, and h and c are no names of x."""
    np.save(tmp_path / "x.npy", np.ones((3, 2, 4), np.float32))
    (tmp_path / "x.npz").write_bytes((tmp_path / "x.npy").read_bytes())
    assert cli_refused("run", "lstm", "--input", tmp_path / "x.npz", "-H", "3", "--out",
                       tmp_path / "y.npz") == (
        f"{tmp_path / 'x.npz'}: is an .npy file (one array) named .npz; name it x.npy, or "
        "save x with numpy.savez\n")


def test_an_npz_named_npy_a_version_3_npy_and_no_npy_at_all_are_told_apart(tmp_path,
                                                                            cli_refused,
                                                                            cli_run):
    """An .npz named .npy said 'the magic string is not correct; expected b'\\x93NUMPY',
    got b'PK\\x03\\x04…'' (the reverse has its hint); a version 3.0 .npy, which NumPy
    reads, was refused as unsupported; a CSV got no word of what is taken."""
    x = np.random.default_rng(0).standard_normal((3, 2, 4)).astype("float32")
    with open(tmp_path / "v3.npy", "wb") as stream:
        np.lib.format.write_array(stream, x, version=(3, 0))
    cli_run("run", "lstm", "--input", tmp_path / "v3.npy", "-H", "3", "--out",
            tmp_path / "v3.npz")
    np.save(tmp_path / "v1.npy", x)
    cli_run("run", "lstm", "--input", tmp_path / "v1.npy", "-H", "3", "--out",
            tmp_path / "v1.npz")
    np.testing.assert_array_equal(np.load(tmp_path / "v3.npz")["y"],
                                  np.load(tmp_path / "v1.npz")["y"])
    with open(tmp_path / "zip.npy", "wb") as stream:
        np.savez(stream, x=x)
    assert cli_refused("run", "lstm", "--input", tmp_path / "zip.npy", "-H", "3") == (
        f"{tmp_path / 'zip.npy'}: is an .npz file (arrays by name) named .npy; this takes one "
        "array: name it zip.npz, or save it with numpy.save\n")
    (tmp_path / "x.csv").write_text("1,2,3,4\n")
    assert cli_refused("run", "lstm", "--input", tmp_path / "x.csv", "-H", "3").endswith(
        "x.csv: not a readable .npy array (the magic string is not correct; expected "
        "b'\\x93NUMPY', got b'1,2,3,'); give an array written by numpy.save\n")


def _python(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` run by a fresh Python in the repository (its imports as a user's)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


def test_the_entry_point_imports_nothing_heavy_before_its_ctrl_c_guard():
    """The console script imports ``lstm_graph.cli`` outside any handler: that import must
    not pull in NumPy and the executors (half a second in which Ctrl-C was a traceback)."""
    code = ("import sys, lstm_graph.cli\n"
            "print(sorted({'numpy', 'click', 'networkx'} & set(sys.modules)))")
    done = _python(code)
    assert done.stdout.strip() == "[]", done.stderr


def test_import_lstm_graph_reaches_its_names_and_parts_as_before_it_became_lazy():
    """``lstm_graph.cell.Runner``, ``lstm_graph.errors.DataError`` worked when the package
    imported them all at once; its names and parts are imported on first use now."""
    code = ("import lstm_graph\n"
            "print(lstm_graph.cell.Runner.__name__, lstm_graph.errors.DataError.__name__,\n"
            "      lstm_graph.executors.native.__name__, lstm_graph.load_cell('gru').name,\n"
            "      'load_model' in dir(lstm_graph), hasattr(lstm_graph, 'nope'))\n")
    done = _python(code)
    assert done.stdout.split() == ["Runner", "DataError", "lstm_graph.executors.native",
                                   "gru", "True", "False"], done.stderr


def test_ctrl_c_while_the_commands_import_ends_with_a_line_not_a_traceback():
    """A KeyboardInterrupt raised inside the commands' imports (as Ctrl-C in the first half
    second does) exits 130 with the line an interrupted command prints."""
    code = ("import sys\n"
            "class Interrupt:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'lstm_graph.cli.commands':\n"
            "            raise KeyboardInterrupt\n"
            "sys.meta_path.insert(0, Interrupt())\n"
            "from lstm_graph.cli import main\n"
            "main(['cells'])\n")
    done = _python(code)
    assert (done.returncode, done.stdout, done.stderr) == \
        (130, "", "interrupted; no output was written\n")


def _command(args: list[str], **streams) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lstm_graph.cli", *args], text=True,
                          timeout=120, cwd=ROOT, **streams)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
@pytest.mark.parametrize("args", [["render", "lstm", "--style", "pipe", "--format", "dot"],
                                  ["cells", "--json"]])
def test_a_stdout_that_cannot_take_the_output_is_one_line_not_a_traceback(args):
    with open("/dev/full", "w") as full:
        done = _command(args, stdout=full, stderr=subprocess.PIPE)
    assert (done.returncode, done.stderr) == \
        (1, "cannot write to standard output (No space left on device)\n")


def test_a_closed_stdout_is_said_and_a_closed_stderr_stops_nothing(tmp_path):
    """stdout or stderr closed as the process starts (``>&-``: Python's sys.stdout is None)
    raised AttributeError; with stderr closed a render stopped before its second file."""
    done = subprocess.run(f"{shlex.quote(sys.executable)} -m lstm_graph.cli cells >&-",
                          shell=True, text=True, capture_output=True, timeout=120, cwd=ROOT)
    assert (done.returncode, done.stderr) == (1, "cannot write to standard output (it is "
                                                 "closed)\n")
    done = subprocess.run(f"{shlex.quote(sys.executable)} -m lstm_graph.cli render lstm "
                          f"--out {shlex.quote(str(tmp_path))}/ 2>&-", shell=True, text=True,
                          capture_output=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lstm.cell.svg", "lstm.pipe.svg"]
    read, write = os.pipe()
    os.close(read)  # stderr a pipe nobody reads: each message fails with EPIPE
    try:
        done = _command(["render", "lstm", "--out", f"{tmp_path / 'again'}/"],
                        stdout=subprocess.PIPE, stderr=write)
    finally:
        os.close(write)
    assert done.returncode == 0 and len(list((tmp_path / "again").iterdir())) == 2


def test_a_reader_that_goes_away_ends_the_command_quietly():
    """| head: a long stdout whose reader closed its end said 'Broken pipe; no output was
    written' (the docs promise it ends quietly, exit 1). The pipe holds one page, less than
    the output's 39 kB (a pipe of 64 kB took it all before head ended, on a loaded
    machine, and the command then ended well: exit 0)."""
    read, write = os.pipe()
    if hasattr(fcntl, "F_SETPIPE_SZ"):
        fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, 4096)
    command = subprocess.Popen([sys.executable, "-m", "lstm_graph.cli", "params", "lstm",
                                "-I", "3", "-H", "4", "--layers", "64", "--direction",
                                "bidirectional"], stdout=write, stderr=subprocess.PIPE,
                               text=True, cwd=ROOT)
    os.close(write)
    with os.fdopen(read, "rb") as reader:  # as head -1: a line, then gone
        assert reader.readline().startswith(b"l0.")
    assert command.wait(timeout=120) == 1
    assert command.stderr is not None and command.stderr.read() == ""


def test_a_ctrl_c_once_the_command_has_ended_does_not_kill_it_silently():
    """A Ctrl-C between the command's end and the process's exit killed it by the signal,
    without a word (its outputs whole): the console script ignores it from there."""
    code = ("import signal, sys\n"
            "from lstm_graph.cli import main\n"
            "try:\n"
            "    main(['cells'])\n"
            "except SystemExit as done:\n"
            "    print(done.code, signal.getsignal(signal.SIGINT) is signal.SIG_IGN, "
            "file=sys.stderr)\n")
    done = _python(code)
    assert done.stderr == "0 True\n"


@needs_compiler
def test_a_first_runs_time_says_how_much_of_it_compiled_the_step(tmp_path, cli_run,
                                                                 cli_process):
    """A first run at a new size said 3539 ms where the next took 39 (h81): the compile is
    said apart, in the line and in the JSON; a run from the cache compiles nothing; a
    build the cache does not keep is not said to be cached."""
    env = {"LSTM_GRAPH_CACHE": str(tmp_path / "cache")}
    args = ["run", "lstm", "--sample", "-H", "29", "--out", tmp_path / "y.npz"]
    first = cli_run(*args, env=env)
    assert "ms of it compiling the step, once: the build is cached for the next runs)" in \
        first.stdout
    again = json.loads(cli_run(*args, "--json", env=env).stdout)
    assert again["compile_seconds"] == 0.0 and again["seconds"] > 0
    assert "compiling" not in cli_run(*args, env=env).stdout
    # a cache it cannot use (others can write in it): a private directory, not kept (h85)
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    for _ in range(2):  # each a process of its own, as a user's runs
        said = cli_process(*args, cwd=tmp_path, env={"LSTM_GRAPH_CACHE": str(shared)})
        assert said.returncode == 0 and "is not usable" in said.stderr, said.stderr
        assert "ms of it compiling the step, which the next runs do again: the build is not " \
            "kept)" in said.stdout, said.stdout
    failed = cli_run(*args[:4], "31", *args[5:], env={**env, "CC": "/bin/false"})
    assert "failed on the generated step" in failed.stderr and "(numpy)" in failed.stdout
    assert "ms of it in a build of the step that failed)" in failed.stdout, failed.stdout
    first = json.loads(cli_run(*args[:4], "33", *args[5:], "--json", env=env).stdout)
    assert first["compile_kept"] is True and again["compile_kept"] is None
