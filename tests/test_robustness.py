"""Every mistake a user can make: a clear message, exit 1 (2 for usage), no traceback,
no damaged file. Each test feeds the CLI what a user might, and checks all four."""

from __future__ import annotations

import os
import re
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import executor_params, needs_compiler
from onnx_models import random_onnx_weights, rnn_model

import lstm_graph
from lstm_graph.formats.files import write_atomic
from lstm_graph.language.parser import MAX_DEPTH

HEADER = "cell t\ninput x\nstate h\noutput h\n"


@pytest.fixture
def x_file(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).standard_normal((6, 2, 3)).astype("float32"))
    return path


# -- cell files -----------------------------------------------------------------------

@pytest.mark.parametrize("content, words", [
    (b"", "1:1: error: empty cell file"),
    (b"\x00\x01\x02binary\xff", "1:1: error: this is a binary file"),
    (b"input x\nstate h\noutput h\nh = tanh(linear(x, h[t-1]))  # caf\xe9\n",
     "4:35: error: not UTF-8 text (byte 0xe9)"),
    # columns in characters (three é before it: 6 bytes), lines after a byte-order mark
    (b"input x\nstate h\noutput h\nh = tanh(linear(x, h[t-1]))  # \xc3\xa9\xc3\xa9\xc3\xa9 "
     b"caf\xe9\n", "4:39: error: not UTF-8 text (byte 0xe9)"),
    (b"\xef\xbb\xbf# a cell\n\xe9nput x\n", "2:1: error: not UTF-8 text (byte 0xe9)"),
    (b"input x\noutput h\nh = tanh(linear(x))\n", "no 'state' line"),
    (b"input x\nstate h\nh = tanh(linear(x, h[t-1]))\n", "no 'output' line"),
    (b"input x\nstate h\noutput h\nsigmoid = tanh(x)\nh = h[t-1]\n", "'sigmoid' is reserved"),
])
def test_bad_cell_files(tmp_path, content, words, cli_fails):
    path = tmp_path / "bad.cell"
    path.write_bytes(content)
    assert words in cli_fails("validate", path)


def test_deeply_nested_expression_is_a_clear_error(tmp_path, cli_fails):
    path = tmp_path / "deep.cell"
    path.write_text(HEADER + "h = " + "(" * 500 + "h[t-1]" + ")" * 500 + "\n")
    assert "syntax error: too many nested parentheses" in cli_fails("validate", path)


def test_very_long_expression_is_handled(tmp_path, cli):
    path = tmp_path / "long.cell"
    path.write_text(HEADER + "h = tanh(" + " + ".join(["h[t-1]"] * 30_000) + ")\n")
    result = cli("validate", path)
    assert result.exit_code in (0, 1) and "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    if result.exit_code:
        assert "too large or too deeply nested" in result.stderr or \
            f"at most {MAX_DEPTH}: split it" in result.stderr


def test_enormous_file_of_100000_lines(tmp_path, cli_fails):
    path = tmp_path / "huge.cell"
    body = "".join(f"# line {k}\n" for k in range(99_994))
    path.write_text(HEADER + body + "h = tanh(linear(x, h[t-1]))\nq = nope\n")
    assert "100000:5: error: undefined name 'nope'" in cli_fails("validate", path)


def test_a_100000_line_data_file_stops_after_100_errors(tmp_path, cli_fails):
    path = tmp_path / "data.csv"
    path.write_text("".join(f"{k},{2 * k},0.5\n" for k in range(100_000)))
    stderr = cli_fails("validate", path)
    assert f"{path}:100000:1: error: stopped after 100 errors; is this a .cell file?" in stderr
    assert len(stderr.splitlines()) < 110


def test_unknown_cell_name_suggests_and_lists(cli_refused):
    stderr = cli_refused("run", "grue", "--sample", "-H", "2")
    assert "did you mean 'gru'?" in stderr and "built-in cells:" in stderr


# -- data -----------------------------------------------------------------------------

def test_x_of_the_wrong_rank_and_size(tmp_path, cli_refused):
    np.save(tmp_path / "r.npy", np.zeros((5,), "float32"))
    assert "x has shape (5,)" in cli_refused("run", "lstm", "--input", tmp_path / "r.npy",
                                             "-H", "2")
    np.save(tmp_path / "s.npy", np.zeros((5, 2, 4), "float32"))
    words = cli_refused("run", "lstm", "--input", tmp_path / "s.npy", "--weights",
                        _npz_weights(tmp_path, "lstm", 3, 2))
    assert "x has shape (5, 2, 4): its last axis is 4, but the cell's input size I is 3" in words


def test_object_and_text_arrays_are_refused(tmp_path, cli_refused):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert "o.npy: holds Python objects (dtype object), not numbers; nothing in it was " \
        "unpickled" in cli_refused("run", "rnn", "--input", tmp_path / "o.npy", "-H", "2")
    np.save(tmp_path / "t.npy", np.array([["a", "b"]]))
    assert "dtype <U1; it must hold real numbers" in cli_refused(
        "run", "rnn", "--input", tmp_path / "t.npy", "-H", "2")


def test_nan_in_x_names_the_first_position_and_can_be_allowed(tmp_path, x_file, cli_run,
                                                               cli_refused):
    x = np.load(x_file)
    x[3, 1, 2] = np.nan
    x[4, 0, 0] = np.inf
    np.save(x_file, x)
    assert "first at index (3, 1, 2)" in cli_refused("run", "lstm", "--input", x_file, "-H",
                                                     "4")
    cli_run("run", "lstm", "--input", x_file, "-H", "4", "--out", tmp_path / "y.npz",
            "--allow-nonfinite")


def test_float16_and_integer_input_are_upcast_with_a_notice(tmp_path, cli_run):
    np.save(tmp_path / "h.npy", np.ones((4, 3), "float16"))
    assert "note: x is float16; computing in float32" in cli_run(
        "run", "gru", "--input", tmp_path / "h.npy", "-H", "2", "--out", tmp_path / "y.npz").stderr
    np.save(tmp_path / "i.npy", np.ones((4, 3), "int64"))
    assert "note: x is int64" in cli_run("run", "gru", "--input", tmp_path / "i.npy", "-H", "2",
                                         "--out", tmp_path / "y.npz").stderr


def test_bad_initial_state(tmp_path, x_file, cli_refused):
    np.savez(tmp_path / "s.npz", h=np.zeros((3, 4), "float32"))
    assert "state 'h' has shape (3, 4), expected (2, 4)" in cli_refused(
        "run", "gru", "--input", x_file, "-H", "4", "--state", tmp_path / "s.npz")


# -- weights --------------------------------------------------------------------------

def _npz_weights(tmp_path: Path, cell: str, input_size: int, hidden: int, **changes) -> Path:
    weights = lstm_graph.load_cell(cell).random_weights(input_size, hidden)
    weights.update(changes)
    weights = {k: v for k, v in weights.items() if v is not None}
    path = tmp_path / "w.npz"
    np.savez(path, **weights)
    return path


@pytest.mark.parametrize("changes, words", [
    ({"f.b": None}, "missing f.b"),
    ({"q.W_x": np.zeros((4, 3), "float32")}, "not parameters of this cell: q.W_x"),
    ({"o.W_h": np.zeros((4, 5), "float32")}, "o.W_h has shape (4, 5), the cell needs (4, 4)"),
    ({"g.b": np.array(["a"] * 4)}, "g.b has dtype <U1"),
    ({"i.b": np.full(4, np.nan, "float32")}, "i.b holds NaN or infinity"),
])
def test_weights_that_do_not_fit(tmp_path, x_file, changes, words, cli_refused):
    path = _npz_weights(tmp_path, "lstm", 3, 4, **changes)
    assert words in cli_refused("run", "lstm", "--input", x_file, "--weights", path)


@pytest.mark.parametrize("suffix", [".npz", ".onnx", ".pt"])
def test_corrupt_weights_files(tmp_path, x_file, suffix, cli_refused):
    path = tmp_path / f"w{suffix}"
    path.write_bytes(b"PK\x03\x04 this is not what it claims to be" * 3)
    stderr = cli_refused("run", "lstm", "--input", x_file, "--weights", path)
    assert str(path) in stderr


def test_unknown_weights_format(tmp_path, x_file, cli_refused):
    (tmp_path / "w.h5").write_bytes(b"x")
    assert "unknown weights format '.h5'" in cli_refused("run", "lstm", "--input", x_file,
                                                         "--weights", tmp_path / "w.h5")


def test_onnx_model_with_no_or_several_rnn_nodes(tmp_path, x_file, cli_refused):
    weights = random_onnx_weights("LSTM", 3, 4, False, np.random.default_rng(0))
    model = rnn_model("LSTM", weights, 4, "float32")
    model.graph.node.append(model.graph.node[0])  # the same node twice: both read x
    model.graph.node[1].output[:] = [f"{name}.2" for name in model.graph.node[1].output]
    onnx.save(model, str(tmp_path / "two.onnx"))
    stderr = cli_refused("run", "lstm", "--input", x_file, "--weights", tmp_path / "two.onnx")
    assert "holds 2 recurrent nodes: (unnamed) (LSTM), (unnamed) (LSTM), which are not one " \
        "stack of layers (each reading the one below's output, reshaped as a stack does); " \
        "lstm-graph runs one layer or one stack from a model" in stderr
    del model.graph.node[:]
    onnx.save(model, str(tmp_path / "none.onnx"))
    assert "holds no LSTM, GRU or RNN node (its nodes: none)" in cli_refused(
        "run", "lstm", "--input", x_file, "--weights", tmp_path / "none.onnx")


def test_an_onnx_gru_of_the_other_reset_form_is_refused_for_the_gru_cell(tmp_path, x_file,
                                                                          cli_run, cli_refused):
    weights = random_onnx_weights("GRU", 3, 4, False, np.random.default_rng(0))
    onnx.save(rnn_model("GRU", weights, 4, "float32"), str(tmp_path / "g.onnx"))
    stderr = cli_refused("run", "gru", "--input", x_file, "--weights", tmp_path / "g.onnx")
    assert "reset valve scales h[t-1] before its linear (linear_before_reset=0), and cell " \
        "'gru''s does not; use the cell gru_cho" in stderr
    cli_run("run", "gru_cho", "--input", x_file, "--weights", tmp_path / "g.onnx", "--out",
            tmp_path / "y.npz")


@pytest.mark.parametrize("kwargs, args, words", [
    ({"proj_size": 2}, [], "has a projection (weight_hr, proj_size 2) and cell 'lstm' has none; "
     "use the cell lstm_proj"),
    # an option against what the weights hold: usage, in the options' words (was exit 1,
    # "direction=forward")
    ({"bidirectional": True}, ["--direction", "forward"],
     "w.pt holds 1 layer, bidirectional; drop --direction forward"),
    ({"num_layers": 2}, ["--layers", "3"], "w.pt holds 2 layers, forward; drop --layers 3"),
])
def test_pytorch_layers_a_cell_cannot_take_say_why(tmp_path, x_file, kwargs, args, words,
                                                    cli_fails):
    torch.save(torch.nn.LSTM(3, 4, **kwargs).state_dict(), tmp_path / "w.pt")
    assert words in cli_fails("run", "lstm", "--input", x_file, "--weights", tmp_path / "w.pt",
                              *args, "--out", tmp_path / "y.npz", code=2 if args else 1)
    assert not (tmp_path / "y.npz").exists()


def test_pytorch_gru_weights_for_an_lstm_cell_say_what_the_cell_takes(tmp_path, x_file,
                                                                       cli_refused):
    torch.save(torch.nn.GRU(3, 4).state_dict(), tmp_path / "w.pt")
    stderr = cli_refused("run", "lstm", "--input", x_file, "--weights", tmp_path / "w.pt")
    assert "w.pt holds gru weights, but cell 'lstm' has no 'gates gru:' line" in stderr
    assert "(it takes stacked weights of: lstm)" in stderr


class _Evil:
    """Unpickling this would run code: it must never be unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running_it(tmp_path, x_file, cli_refused):
    marker = tmp_path / "pwned"
    torch.save({"weight_ih_l0": _Evil(marker)}, tmp_path / "evil.pt")
    assert zipfile.is_zipfile(tmp_path / "evil.pt")
    stderr = cli_refused("run", "lstm", "--input", x_file, "--weights", tmp_path / "evil.pt")
    assert f"holds a pickled {os.system.__module__}.system, which a weights-only load does " \
        "not make (making it would run code); lstm-graph never runs code from a file" in stderr
    assert "weights_only" not in stderr and "\x1b" not in stderr
    assert not marker.exists()


def test_a_pytorch_archive_that_unpacks_past_the_memory_limit_is_refused_before_loading(
        tmp_path, x_file, cli, cli_refused, monkeypatch):
    """torch.load reads every member of a torch.save zip, a deflated one too: 120 kB that
    unpacked to 120 MB passed a 50 MB limit (only the size on disk was checked)."""
    state = dict(torch.nn.LSTM(3, 4).state_dict())
    torch.save(state, tmp_path / "small.pt")
    state["junk"] = torch.zeros(30_000_000)
    torch.save(state, tmp_path / "big.pt")
    with zipfile.ZipFile(tmp_path / "big.pt") as plain, \
            zipfile.ZipFile(tmp_path / "bomb.pt", "w", zipfile.ZIP_DEFLATED) as bomb:
        for member in plain.infolist():
            bomb.writestr(member.filename, plain.read(member.filename))
    monkeypatch.setenv("LSTM_GRAPH_MAX_BYTES", "50M")
    loaded = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: loaded.append(a))
    said = cli_refused("run", "lstm", "--input", x_file, "--weights", tmp_path / "bomb.pt")
    assert re.search(r"bomb\.pt: its 1\d\d kB unpack to 120 MB, more than the limit of "
                     r"52\.4 MB set by LSTM_GRAPH_MAX_BYTES\n$", said), said
    assert loaded == []
    archive = bytearray((tmp_path / "small.pt").read_bytes())
    directory = archive.rindex(b"PK\x01\x02")  # the last member's central directory entry
    archive[directory:directory + 4] = b"XXXX"
    (tmp_path / "damaged.pt").write_bytes(bytes(archive))
    assert "damaged.pt: not a readable PyTorch file (a damaged zip archive: " in cli_refused(
        "run", "lstm", "--input", x_file, "--weights", tmp_path / "damaged.pt")
    # cut short: the zip's member list is gone ("[Errno 22] Invalid argument" before)
    whole = (tmp_path / "small.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(whole[: len(whole) // 2])
    assert "cut.pt: not a readable PyTorch file (a truncated or damaged zip archive: the " \
        "list of its members at its end is missing)" in cli_refused(
            "run", "lstm", "--input", x_file, "--weights", tmp_path / "cut.pt")
    # a flipped byte in a tensor's bytes: torch.load reads past the wrong checksum
    with zipfile.ZipFile(tmp_path / "small.pt") as archive:
        member = next(m for m in archive.infolist() if "/data/" in m.filename)
    flipped = bytearray(whole)
    lengths = whole[member.header_offset + 26: member.header_offset + 30]  # the local header's
    at = member.header_offset + 30 + int.from_bytes(lengths[:2], "little") + \
        int.from_bytes(lengths[2:], "little")  # name and extra field (padding) lengths
    flipped[at] ^= 0x10
    (tmp_path / "flipped.pt").write_bytes(bytes(flipped))
    assert f"flipped.pt: not a readable PyTorch file (a damaged zip archive: the bytes of " \
        f"{member.filename} fail their checksum)" in cli_refused(
            "run", "lstm", "--input", x_file, "--weights", tmp_path / "flipped.pt")


def test_npz_with_pickled_objects_is_refused(tmp_path, x_file, cli_refused):
    marker = tmp_path / "pwned"
    np.savez(tmp_path / "evil.npz", **{"f.b": np.array([_Evil(marker)], dtype=object)})
    assert "evil.npz: f.b: holds Python objects (dtype object), not numbers; nothing in it " \
        "was unpickled" in cli_refused("run", "lstm", "--input", x_file, "--weights",
                                       tmp_path / "evil.npz")
    assert not marker.exists()


# -- environment ----------------------------------------------------------------------

def test_missing_output_directories_are_created(tmp_path, x_file, cli_run):
    cli_run("run", "rnn", "--input", x_file, "-H", "2", "--out",
            tmp_path / "new" / "dirs" / "y.npz")
    assert (tmp_path / "new" / "dirs" / "y.npz").is_file()


def test_output_directories_created_for_a_failed_run_are_removed(tmp_path, x_file, cli_fails):
    stderr = cli_fails("run", "rnn", "--input", x_file, "--weights", tmp_path / "nope.npz",
                       "--out", tmp_path / "new" / "y.npz")
    assert stderr == f"{tmp_path / 'nope.npz'}: no such file\n"
    assert not (tmp_path / "new").exists()


def test_unusable_output_directory(x_file, cli_fails):
    assert f"{x_file} is not a directory" in cli_fails("run", "rnn", "--input", x_file, "-H",
                                                       "2", "--out", x_file / "y.npz")
    if Path("/proc/self").is_dir():  # a directory nobody can create files in, even root
        assert "cannot write in /proc/self" in cli_fails(
            "render", "rnn", "--style", "cell", "--format", "dot", "--out", "/proc/self/x.dot")


def test_cupy_backend_without_cupy_is_a_clear_error(x_file, cli_refused):
    try:
        import cupy  # noqa: F401

        pytest.skip("CuPy is installed here")
    except ImportError:
        pass
    message = cli_refused("run", "rnn", "--input", x_file, "-H", "2", "--backend", "cupy")
    assert "the cupy backend needs CuPy" in message
    assert f"{sys.executable} -m pip install 'cupy-cuda12x>=13'" in message  # runnable as is


def test_a_missing_weights_file_is_missing_before_any_importer_is_needed(tmp_path,
                                                                         cli_refused):
    message = cli_refused("run", "lstm", "--sample", "--weights", tmp_path / "nope.pt")
    assert "no such file" in message and "PyTorch" not in message


# -- nothing lost ---------------------------------------------------------------------

def test_a_failed_run_leaves_the_earlier_output_untouched(tmp_path, x_file, cli_run, cli_fails):
    out = tmp_path / "y.npz"
    cli_run("run", "rnn", "--input", x_file, "-H", "2", "--out", out)
    before = out.read_bytes()
    np.save(tmp_path / "bad.npy", np.zeros((3, 2, 9), "float32"))
    assert cli_fails("run", "rnn", "--input", tmp_path / "bad.npy", "--weights",
                     _npz_weights(tmp_path, "rnn", 3, 2), "--out", out) == \
        f"{tmp_path / 'bad.npy'}: x has shape (3, 2, 9): its last axis is 9, but the " \
        "cell's input size I is 3\n"
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npy", "w.npz", "x.npy", "y.npz"]


def test_an_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "diagram.svg"
    target.write_bytes(b"earlier")

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, b"new content")
    assert target.read_bytes() == b"earlier"
    assert [p.name for p in tmp_path.iterdir()] == ["diagram.svg"]


def test_a_failed_render_leaves_the_earlier_diagram(tmp_path, cli_run, cli_fails):
    out = tmp_path / "g.dot"
    cli_run("render", "gru", "--style", "pipe", "--format", "dot", "--out", out)
    before = out.read_bytes()
    assert cli_fails("render", "gru", "--style", "pipe", "--format", "dot", "--out", out,
                     "--highlight", "nope").startswith(
        "nothing named 'nope' to highlight in cell 'gru'; choose its presets reset, update, "
        "candidate, memory or one of its names: r, z, a, b, n, h")
    assert out.read_bytes() == before


# -- numerical safety -----------------------------------------------------------------

@pytest.mark.parametrize("executor", executor_params(["native", "numpy", "reference"]))
@pytest.mark.parametrize("batch, hidden", [(1, 4), (8, 256)])  # both forms of both plans
def test_huge_pre_activations_give_no_warning_and_no_nan(executor, batch, hidden):
    cell = lstm_graph.load_cell("peephole_lstm")
    weights = {k: v * 1e4 for k, v in cell.random_weights(2, hidden, seed=0).items()}
    x = np.random.default_rng(0).choice([-1e4, 1e4], size=(5, batch, 2)).astype("float32")
    run = cell.compile(weights=weights, executor=executor)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="warn", invalid="warn", divide="warn"):
            y, state = run(x)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(state["c"]))


def test_sigmoid_and_tanh_of_plus_minus_1e4():
    from lstm_graph.ops import OPS

    v = np.array([-1e4, 1e4], "float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert OPS["sigmoid"].reference(np, [v], [], {}).tolist() == [0.0, 1.0]
        assert OPS["tanh"].reference(np, [v], [], {}).tolist() == [-1.0, 1.0]


@pytest.mark.parametrize("name", ["lstm", "gru", "peephole_lstm"])
def test_ten_thousand_steps_stay_finite(name):
    run = lstm_graph.load_cell(name).compile(input_size=3, hidden_size=8, seed=0)
    y, state = run(np.random.default_rng(0).standard_normal((10_000, 1, 3)).astype("float32"))
    assert np.all(np.isfinite(y)) and all(np.all(np.isfinite(v)) for v in state.values())


# -- the Python API -------------------------------------------------------------------

@pytest.mark.parametrize("executor, largest", [
    ("numpy", r"the hoisted products \(T·B rows\) of shape \(40000000, 4096\) would take "
              r"655 GB"),
    pytest.param("native", r"y of shape \(20000000, 2, 1024\) would take 164 GB",
                 marks=needs_compiler),  # two sequences, a small x: it hoists nothing
])
def test_a_run_too_large_for_memory_is_refused_before_it_allocates(executor, largest,
                                                                    monkeypatch):
    monkeypatch.setenv("LSTM_GRAPH_MAX_BYTES", "4G")  # a wrong estimate fails, not the machine
    run = lstm_graph.load_cell("lstm").compile(input_size=4, hidden_size=1024, seed=0,
                                               executor=executor)
    x = np.broadcast_to(np.zeros(4, "float32"), (20_000_000, 2, 4))  # no memory of its own
    with pytest.raises(lstm_graph.LstmGraphError, match=largest):
        run(x)


@pytest.mark.parametrize("sizes", [{"input_size": 0, "hidden_size": 3},
                                   {"input_size": 3, "hidden_size": 0}])
def test_sizes_of_zero_are_refused(sizes):
    with pytest.raises(lstm_graph.DataError, match="is 0; it must be at least 1"):
        lstm_graph.load_cell("rnn").compile(**sizes)


def test_states_are_checked_like_x_through_the_api():
    run = lstm_graph.load_cell("rnn").compile(input_size=2, hidden_size=3, seed=0)
    x = np.zeros((4, 2, 2), "float32")
    with pytest.raises(lstm_graph.DataError, match=r"state 'h' holds NaN or infinity, first "
                       r"at index \(0, 1\)"):
        run(x, {"h": np.array([[0, np.inf, 0], [0, 0, 0]])})
    with pytest.raises(lstm_graph.DataError, match="state 'h' has dtype complex128"):
        run(x, {"h": np.zeros((2, 3), complex)})
    with pytest.raises(lstm_graph.DataError, match="state 'h' is not an array of numbers"):
        run(x, {"h": [[0, 1, 2], [3]]})
    y, _ = run(x, {"h": np.full((2, 3), np.nan)}, allow_nonfinite=True)
    assert np.isnan(y).all()


@pytest.mark.parametrize("given", [(np.zeros((2, 4)), np.zeros((2, 4))), np.zeros((2, 4)),
                                   [1, 2], "h", 5])
def test_a_state_that_is_not_a_mapping_is_a_clear_error(given):
    run = lstm_graph.load_cell("lstm").compile(input_size=3, hidden_size=4, seed=0)
    x, grad_y = np.zeros((5, 2, 3), "float32"), np.zeros((5, 2, 4), "float32")
    from lstm_graph.distributed import sharded

    calls = {"state": [lambda: run(x, given), lambda: run.trace(x, given),
                       lambda: run.grad(x, grad_y, state=given),
                       lambda: sharded.check(run, x, given, False)],
             "grad_state": [lambda: run.grad(x, grad_y, grad_state=given)]}
    for what, attempts in calls.items():
        for attempt in attempts:
            with pytest.raises(lstm_graph.DataError, match=rf"^{what} is .*; it must map state "
                               r"names to arrays, as \{'c': \.\.\., 'h': \.\.\.\}"):
                attempt()


def test_a_pytorch_state_dict_passed_as_a_dict_is_checked_like_a_file():
    state = {k: v.to(torch.bfloat16) for k, v in torch.nn.GRU(3, 4).state_dict().items()}
    with pytest.raises(lstm_graph.WeightsError, match="state dict: weight_ih_l0 has dtype "
                       "bfloat16"):
        lstm_graph.load_cell("gru").compile(weights=state)


def test_weights_given_as_a_dict_name_the_dict():
    weights = lstm_graph.load_cell("rnn").random_weights(2, 3)
    del weights["h.b"]
    with pytest.raises(lstm_graph.WeightsError, match="the weights dict does not fit cell "
                       "'rnn': missing h.b"):
        lstm_graph.load_cell("rnn").compile(weights=weights)


def test_weights_of_another_cell_are_named_and_a_long_list_says_it_is_cut():
    weights = lstm_graph.load_cell("peephole_lstm").random_weights(2, 3)  # 15 parameters
    with pytest.raises(lstm_graph.WeightsError) as refused:
        lstm_graph.load_cell("gru").compile(weights=weights)
    held = ", ".join(sorted(weights)[:12])
    assert str(refused.value).endswith(f"it holds {held}, … (15 names) (weights of another "
                                       "cell?)")


@pytest.mark.parametrize("command", ["run", "grad"])  # grad said nothing, exit 0
def test_a_run_that_overflows_says_where_unless_allowed(tmp_path, cli_run, command):
    cell = tmp_path / "ovf.cell"
    cell.write_text("input x\nstate h\noutput h\nh = h[t-1] * 1e20 + tanh(linear(x))\n")
    args = ["--sample", "-I", "2", "-H", "3", "--out", tmp_path / "out.npz"]
    loud = cli_run(command, cell, *args)
    assert "warning: the run made NaN or infinity from finite inputs: 'h' is not finite at " \
        "step 3 first" in loud.stderr
    assert "RuntimeWarning" not in loud.stderr
    quiet = cli_run(command, cell, *args, "--allow-nonfinite")
    assert "warning" not in quiet.stderr
    fine = cli_run("run", "lstm", "--sample", "-H", "3", "--out", tmp_path / "out.npz")
    assert "warning" not in fine.stderr


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_finiteness_test_is_exact_where_its_sum_of_squares_overflows(dtype, tmp_path):
    """checks.all_finite sums squares first: numbers whose squares overflow (1e20 in
    float32, 1e200 in float64) are finite all the same, and NaN or infinity anywhere is
    found, in NumPy and in a namespace without vdot (array_api_strict)."""
    import array_api_strict

    from lstm_graph.checks import all_finite
    from lstm_graph.errors import LstmGraphWarning

    big = 1e20 if dtype == "float32" else 1e200
    assert all_finite(np, np.array([big, -big, 1.0], dtype), np.zeros((0, 3), dtype))
    for bad in (np.nan, np.inf, -np.inf):
        values = np.ones((4, 5), dtype)
        values[3, 2] = bad
        assert not all_finite(np, np.ones(3, dtype), values)
        assert not all_finite(np, np.array([big, bad], dtype))
        assert not all_finite(array_api_strict, array_api_strict.asarray(values))
    assert all_finite(array_api_strict, array_api_strict.asarray(np.ones(3, dtype)))
    # a plain call whose h overflows still warns, and says where
    (tmp_path / "ovf.cell").write_text("input x\nstate h\noutput h\nh = h[t-1] * "
                                       f"{1e30 if dtype == 'float32' else 1e200} + "
                                       "tanh(linear(x))\n")
    run = lstm_graph.load_cell(tmp_path / "ovf.cell").compile(input_size=2, hidden_size=3,
                                                             seed=0, dtype=dtype)
    with pytest.warns(LstmGraphWarning, match="'h' is not finite at step 3 first"):
        run(np.ones((4, 2, 2), dtype))


@pytest.mark.parametrize("name", ["two\nlines", "tab\there"])
def test_a_cell_named_by_a_file_name_with_a_line_end_or_tab_is_refused_on_one_line(
        tmp_path, name, cli_fails):
    path = tmp_path / f"{name}.cell"
    path.write_text(HEADER.removeprefix("cell t\n") + "h = tanh(linear(x, h[t-1]))\n")
    stderr = cli_fails("validate", path)
    shown = str(path).replace("\n", "\\n").replace("\t", "\\t")
    assert stderr.startswith(f"{shown}:1:1: error: the cell's name, from the file's name, "
                             "holds the character U+000") and stderr.count("\n") == 1, stderr


def test_a_message_quoting_a_file_name_shows_its_escapes_not_a_terminal_s_codes(tmp_path,
                                                                                cli_fails):
    """An ESC in a name reached the terminal raw (colours, cursor moves) in any message."""
    name = tmp_path / "t\x1b[31m\u202ex.npy"
    stderr = cli_fails("run", "lstm", "-H", "4", "--input", name, "--out", tmp_path / "y.npz")
    assert "t\\x1b[31m\\u202ex.npy" in stderr and "\x1b" not in stderr, stderr
    assert "\u202e" not in stderr


@pytest.mark.parametrize("command", [["run", "lstm", "--sample", "-I", "2", "-H", "3"],
                                     ["params", "lstm", "-I", "2", "-H", "3"],
                                     ["export", "lstm", "-I", "2", "-H", "3", "--format", "onnx"]])
def test_what_a_command_says_of_a_file_it_wrote_shows_escapes(tmp_path, cli_run, command):
    """``wrote …`` printed the name raw: only errors and warnings escaped it."""
    out = tmp_path / ("red\x1b[31m.onnx" if command[0] == "export" else "red\x1b[31m.npz")
    result = cli_run(*command, "--out", out)
    assert out.exists() and "red\\x1b[31m" in result.stderr, result.stderr
    assert "\x1b" not in result.stderr + result.stdout


@pytest.mark.parametrize("arguments, words", [
    ({"hidden_size": 3.0}, "hidden_size is 3.0, of type float; it must be a whole number"),
    ({"input_size": np.float64(2)}, "of type float64; it must be a whole number"),
    ({"hidden_size": "4"}, "hidden_size is '4', of type str"),
    ({"layers": 2.0}, "layers is 2.0, of type float"),
    ({"layers": 0}, "layers must be between 1 and 64, not 0"),
    ({"seed": -1}, "seed is -1; it must be a whole number, 0 or more"),
    ({"seed": "a"}, "seed is 'a', of type str"),
    ({"direction": ""}, "unknown direction ''; choose one of forward"),
    ({"batch_first": "no"}, "batch_first is 'no'; it must be True or False"),
    ({"weights": [("f.b", 1)]}, "weights is of type list; give a dict of arrays"),
])
def test_compile_refuses_arguments_of_the_wrong_kind(arguments, words):
    """TypeErrors and ValueErrors from deep inside before; layers=0 ran one layer, and
    batch_first="no" read x batch-first."""
    with pytest.raises(lstm_graph.DataError, match=re.escape(words)):
        lstm_graph.load_cell("lstm").compile(**({"input_size": 2, "hidden_size": 3}
                                                | arguments))


def test_x_that_a_run_would_misread_is_refused():
    """A masked array's mask was dropped; a tensor that requires grad raised PyTorch's
    RuntimeError."""
    run = lstm_graph.load_cell("lstm").compile(input_size=3, hidden_size=4)
    with pytest.raises(lstm_graph.DataError, match="x is a masked array"):
        run(np.ma.masked_array(np.ones((2, 2, 3)), mask=True))
    with pytest.raises(lstm_graph.DataError, match="x is not an array of numbers .*requires "):
        run(torch.zeros(5, 2, 3, requires_grad=True))
    with pytest.raises(lstm_graph.DataError, match="state 'h' is not an array of numbers"):
        run(np.zeros((5, 2, 3), "float32"), {"h": torch.zeros(2, 4, requires_grad=True)})


def test_the_one_weight_of_a_wrong_shape_is_the_one_blamed():
    """The sizes were read off the first parameter: a wrong f.W_x blamed all the others."""
    weights = lstm_graph.load_cell("lstm").random_weights(3, 4)
    weights["f.W_x"] = np.zeros((4, 2), "float32")
    with pytest.raises(lstm_graph.WeightsError, match=r"f\.W_x has shape \(4, 2\), the cell "
                       r"needs \(4, 3\) \(I=3, H=4\)$"):
        lstm_graph.load_cell("lstm").compile(weights=weights)


def test_a_file_that_is_no_model_is_refused_as_such(tmp_path):
    with pytest.raises(lstm_graph.WeightsError, match="is not a model file"):
        lstm_graph.load_model(tmp_path / "x.cell")


@pytest.mark.parametrize("dask", [[], ["--dask", "local"]])
def test_a_state_named_y_is_refused_by_run_whose_output_is_y(tmp_path, cli_refused, dask):
    """The final state overwrote the output sequence in the file, exit 0."""
    cell = tmp_path / "ycell.cell"
    cell.write_text("input x\nstate y, h\noutput h\ny = tanh(linear(x, h[t-1]))\nh = y * 2\n")
    stderr = cli_refused("run", cell, "--sample", "-I", "4", "-H", "3", *dask)
    assert "cell 'ycell' has a state named y, the name under which run writes the output " \
        "sequence" in stderr
    if not dask:  # validate said it was ok, and nothing more
        assert [d.message for d in lstm_graph.load_cell(cell).warnings] == [
            "state 'y' has the name under which 'run' writes the output sequence, so run "
            "refuses this cell (trace writes the state as final.y); rename the state"]


def test_params_refuses_a_negative_seed_as_every_command_does(tmp_path, cli_fails):
    """A NumPy traceback before."""
    stderr = cli_fails("params", "lstm", "-I", "3", "-H", "4", "--seed", "-1", "--out",
                       tmp_path / "w.npz", code=2)
    assert "Invalid value for '--seed': -1 is not in the range x>=0." in stderr
    assert not list(tmp_path.iterdir())


def test_messages_name_what_is_wrong(tmp_path, cli_fails):
    """A model's NaN weights were "the weights dict" (and params --out wrote them), an empty
    SPEC "is a directory", an .npy as --state "not a zip file"."""
    model = torch.nn.LSTM(3, 4)
    state = model.state_dict()
    state["bias_ih_l0"][0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    assert cli_fails("run", tmp_path / "nan.pt", "--sample", "--out", tmp_path / "o.npz") \
        .startswith(f"{tmp_path / 'nan.pt'} does not fit cell 'lstm': i.b holds NaN")
    assert "i.b holds NaN" in cli_fails("params", tmp_path / "nan.pt", "--out",
                                        tmp_path / "p.npz")
    assert cli_fails("validate", "").startswith("the cell's name is empty; built-in cells:")
    np.save(tmp_path / "s.npy", np.zeros((2, 3), "float32"))
    assert "s.npy: is an .npy file, one array; this takes an .npz of arrays by name" in \
        cli_fails("run", "rnn", "--sample", "-I", "2", "-H", "3", "--state",
                  tmp_path / "s.npy", "--out", tmp_path / "o.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.pt", "s.npy"]


def test_nan_past_a_sequence_length_is_not_read_so_run_and_grad_take_it(tmp_path, cli_run,
                                                                        cli_refused):
    """NaN padding past --lengths was refused, naming a position no step reads; run and
    grad take it now (grad's loss, sum(grad_output · y), counts nothing there), and name
    NaN that is read at its index in the file, batch-first too."""
    x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype("float32")
    x[2:, 1] = np.nan
    grad_output = np.ones((4, 2, 5), "float32")
    grad_output[2:, 1] = np.nan
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "xb.npy", np.ascontiguousarray(x.swapaxes(0, 1)))
    np.save(tmp_path / "gy.npy", grad_output)
    np.save(tmp_path / "lengths.npy", np.array([4, 2]))
    common = ("-H", "5", "--lengths", tmp_path / "lengths.npy")
    cli_run("run", "lstm", "--input", tmp_path / "x.npy", *common, "--out", tmp_path / "y.npz")
    cli_run("run", "lstm", "--input", tmp_path / "xb.npy", "--batch-first", *common, "--out",
            tmp_path / "yb.npz")
    y = np.load(tmp_path / "y.npz")["y"]
    np.testing.assert_array_equal(np.load(tmp_path / "yb.npz")["y"], y.swapaxes(0, 1))
    assert np.all(y[2:, 1] == 0) and np.all(np.isfinite(y))
    said = cli_run("grad", "lstm", "--input", tmp_path / "x.npy", *common, "--grad-output",
                   tmp_path / "gy.npy", "--out", tmp_path / "g.npz").stderr
    loss = float(re.search(r"loss (\S+)", said).group(1))
    assert loss == pytest.approx(float(np.sum(y[:2]) + np.sum(y[2:, 0])), rel=1e-5)
    assert np.all(np.load(tmp_path / "g.npz")["x"][2:, 1] == 0)
    x[1, 1, 2] = np.inf  # read: sequence 1 runs 2 steps
    np.save(tmp_path / "xb.npy", np.ascontiguousarray(x.swapaxes(0, 1)))
    assert "xb.npy: x holds NaN or infinity, first at index (1, 1, 2)" in cli_refused(
        "run", "lstm", "--input", tmp_path / "xb.npy", "--batch-first", *common)
    x[1, 1, 2] = 0
    x[0, 1, 1] = np.inf  # batch-first index (1, 0, 1)
    np.save(tmp_path / "xb.npy", np.ascontiguousarray(x.swapaxes(0, 1)))
    assert "xb.npy: x holds NaN or infinity, first at index (1, 0, 1)" in cli_refused(
        "run", "lstm", "--input", tmp_path / "xb.npy", "--batch-first", *common)
