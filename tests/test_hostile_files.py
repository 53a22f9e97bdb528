"""Malformed and hostile weights and data files: each ends with a clear message naming
the file and what is wrong, exit 1, no traceback, no output file, and nothing run or
read beyond what the file is allowed to hold.

Every file is built here, inside ``tmp_path``.
"""

from __future__ import annotations

import builtins
import os
import struct
import warnings
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from hostile import deflate_bomb, npy_header
from onnx import TensorProto, helper
from onnx_models import random_onnx_weights, rnn_model

import lstm_graph


@pytest.fixture
def x_file(tmp_path: Path) -> Path:
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).standard_normal((6, 2, 3)).astype("float32"))
    return path


# -- PyTorch state dicts ----------------------------------------------------------------

def _lstm_state() -> dict:
    torch.manual_seed(0)
    return dict(torch.nn.LSTM(3, 4).state_dict())


def _with(key, value) -> dict:
    state = _lstm_state()
    state[key] = value
    return state


def _quantized() -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized tensors are deprecated in torch
        return _with("weight_ih_l0", torch.quantize_per_tensor(torch.zeros(16, 3), 0.1, 0,
                                                               torch.qint8))


#: What a refusal of a tensor's dtype goes on to say.
NUMPY_DTYPES = ("a layer's parameters are floating-point numbers of a dtype NumPy has "
                "(float16, float32, float64): save tensor.float()")
#: Each case: its state dict, and the whole message after the file's name.
PT_CASES = {
    "bfloat16": (lambda: {k: v.to(torch.bfloat16) for k, v in _lstm_state().items()},
                 f"weight_ih_l0 has dtype bfloat16; {NUMPY_DTYPES}"),
    "float8": (lambda: {k: v.to(torch.float8_e4m3fn) for k, v in _lstm_state().items()},
               f"weight_ih_l0 has dtype float8_e4m3fn; {NUMPY_DTYPES}"),
    "qint8": (_quantized, "weight_ih_l0 is a quantized tensor (qint8); save it dequantized "
                          "(tensor.dequantize())"),
    "sparse": (lambda: _with("weight_ih_l0", torch.zeros(16, 3).to_sparse()),
               "weight_ih_l0 is a sparse tensor (torch.sparse_coo); save it dense "
               "(tensor.to_dense())"),
    "meta": (lambda: _with("weight_ih_l0", torch.empty(16, 3, device="meta")),
             "weight_ih_l0 is a meta tensor: it has a shape but no values (saved from a model "
             "on the 'meta' device?)"),
    "complex": (lambda: _with("weight_ih_l0", torch.zeros(16, 3, dtype=torch.complex64)),
                f"weight_ih_l0 has dtype complex64; {NUMPY_DTYPES}"),
    "integer key": (lambda: {**_lstm_state(), 3: torch.zeros(3)},
                    "holds the key 3 of type int; the keys of a state dict are parameter "
                    "names such as weight_ih_l0"),
    "bias of shape (3,)": (lambda: _with("bias_ih_l0", torch.zeros(3)),
                           "bias_ih_l0 has shape (3,); an nn.LSTM with H=4 needs (16,)"),
    "weight_hh (0, 0)": (lambda: _with("weight_hh_l0", torch.zeros(0, 0)),
                         "weight_hh_l0 has shape (0, 0); a layer's is (gates·H, H) with H at "
                         "least 1"),
    "weight_ih (16, 0)": (lambda: _with("weight_ih_l0", torch.zeros(16, 0)),
                          "weight_ih_l0 has shape (16, 0); an nn.LSTM with H=4 needs (16, I "
                          "with I at least 1)"),
    "bias that is a dict": (lambda: _with("bias_ih_l0", {"a": torch.zeros(16)}),
                            "bias_ih_l0 is of type dict, not a tensor"),
    "bias that is a number": (lambda: _with("bias_ih_l0", 3), "bias_ih_l0 is of type int, "
                                                              "not a tensor"),
    "a string": (lambda: _with("weight_hh_l0", "abc"), "weight_hh_l0 is of type str, not a "
                                                       "tensor"),
    "five stacked gates": (lambda: _with("weight_hh_l0", torch.zeros(20, 4)),
                           "weight_hh_l0 has shape (20, 4): 5 stacked gates is not an RNN (1), "
                           "GRU (3) or LSTM (4)"),
    "a list": (lambda: [torch.zeros(3)], "holds a list, not a state dict"),
}


@pytest.mark.parametrize("case", PT_CASES)
def test_malformed_pytorch_files(tmp_path, x_file, case, cli_refused):
    make, words = PT_CASES[case]
    torch.save(make(), tmp_path / "w.pt")
    stderr = cli_refused("run", "lstm", "--input", x_file, "--weights", tmp_path / "w.pt")
    assert stderr == f"{tmp_path / 'w.pt'}: {words}\n"  # no warning from torch leaks through


def test_pytorch_weights_near_1e300_in_a_float32_run_name_the_parameter(tmp_path, x_file,
                                                                        cli_refused):
    torch.save({k: v.double() * 1e300 for k, v in _lstm_state().items()}, tmp_path / "w.pt")
    stderr = cli_refused("run", "lstm", "--input", x_file, "--weights", tmp_path / "w.pt")
    assert stderr.startswith(f"{tmp_path / 'w.pt'} does not fit cell 'lstm': f.W_x holds ")
    assert "too large for float32 (the largest is about 3.4e+38); run in float64 " \
        "(--dtype float64); f.W_h holds" in stderr
    assert stderr.endswith("; and 9 more parameters\n")


@pytest.mark.skipif(np.finfo(np.longdouble).max <= np.finfo(np.float64).max,
                    reason="this platform's long double is a float64")
def test_float128_data_beyond_float64_and_its_weights_are_named_as_they_are(
        tmp_path, cli_refused, cli_run):
    """A float128 x of 1e400 (finite) was said to hold 'NaN or infinity'; float128 weights
    got the advice --dtype float128, which no command takes."""
    x = np.ones((3, 2, 2), np.longdouble)
    x[1, 1, 1] = np.longdouble("1e400")
    np.save(tmp_path / "x.npy", x)
    stderr = cli_refused("run", "rnn", "--input", tmp_path / "x.npy", "-H", "2", "--dtype",
                         "float64")
    assert stderr == (f"note: x is float128; computing in float64 (see --dtype)\n"
                      f"{tmp_path / 'x.npy'}: x holds 1e+400 at index (1, 1, 1), too large "
                      "for float64 (the largest is about 1.8e+308); lstm-graph computes in "
                      "float32 or float64: scale the data down\n")
    # in float32 too: float64 would not hold it either (it said run in float64)
    assert cli_refused("run", "rnn", "--input", tmp_path / "x.npy", "-H", "2").endswith(
        "too large for float32 (the largest is about 3.4e+38); lstm-graph computes in "
        "float32 or float64: scale the data down\n")
    weights = lstm_graph.load_cell("rnn").compile(input_size=2, hidden_size=2).weights
    np.savez(tmp_path / "w.npz", **{k: v.astype(np.longdouble) for k, v in weights.items()})
    np.save(tmp_path / "x.npy", np.ones((3, 2, 2)))
    done = cli_run("run", "rnn", "--input", tmp_path / "x.npy", "--weights",
                   tmp_path / "w.npz", "--dtype", "float64", "--out", tmp_path / "y.npz")
    assert "holds float128 weights; computing in float64, which rounds them (lstm-graph " \
        "computes in float32 or float64)" in done.stderr


# -- ONNX models ------------------------------------------------------------------------

def _lstm_onnx(changes: dict | None = None, peepholes: bool = False) -> onnx.ModelProto:
    weights = random_onnx_weights("LSTM", 3, 4, peepholes, np.random.default_rng(0))
    weights.update(changes or {})
    return rnn_model("LSTM", weights, 4, "float32")


def _replace(model: onnx.ModelProto, name: str, tensor: onnx.TensorProto) -> onnx.ModelProto:
    for stored in model.graph.initializer:
        if stored.name == name:
            stored.CopyFrom(tensor)
    return model


def _raw(name: str, dims: list[int], data: bytes) -> onnx.TensorProto:
    """A float tensor holding ``data`` whatever its dims say (make_tensor would refuse)."""
    tensor = onnx.TensorProto(name=name, data_type=TensorProto.FLOAT, dims=dims)
    tensor.raw_data = data
    return tensor


def _huge_dims() -> onnx.ModelProto:
    """An LSTM declaring H = 10⁶ (R: 16 TB) whose tensors hold a few bytes."""
    model = _lstm_onnx()
    dims = {"W": [1, 4_000_000, 3], "R": [1, 4_000_000, 1_000_000], "B": [1, 8_000_000]}
    for stored in model.graph.initializer:
        del stored.dims[:]
        stored.dims.extend(dims[stored.name])
    model.graph.node[0].attribute[0].i = 1_000_000
    return model


#: What a refusal of a tensor's data type goes on to say.
ONNX_TYPES = "parameters are floating-point numbers (FLOAT, DOUBLE, FLOAT16)"  # h86
#: Each case: its model, and the whole message after the file's name.
ONNX_CASES = {
    "B of rank 1": (lambda: _lstm_onnx({"B": np.zeros(32)}),
                    "B has shape (32,); with R of shape (1, 16, 4) (LSTM, H=4) it must be "
                    "[1, 32]"),
    "B of the wrong length": (lambda: _lstm_onnx({"B": np.zeros((1, 30))}),
                              "B has shape (1, 30); with R of shape (1, 16, 4) (LSTM, H=4) it "
                              "must be [1, 32]"),
    "P of rank 1": (lambda: _lstm_onnx({"P": np.zeros(12)}, peepholes=True),
                    "P has shape (12,); with R of shape (1, 16, 4) (LSTM, H=4) it must be "
                    "[1, 12]"),
    "STRING B": (lambda: _replace(_lstm_onnx(), "B", helper.make_tensor(
        "B", TensorProto.STRING, [1, 32], [b"a"] * 32)),
        f"B has data type STRING; {ONNX_TYPES}"),
    "BFLOAT16 W": (lambda: _replace(_lstm_onnx(), "W", helper.make_tensor(
        "W", TensorProto.BFLOAT16, [1, 16, 3], [0] * 48)),
        f"W has data type BFLOAT16; {ONNX_TYPES}"),
    "INT32 W": (lambda: _replace(_lstm_onnx(), "W", helper.make_tensor(
        "W", TensorProto.INT32, [1, 16, 3], [1] * 48)),
        "the W ('W') of the LSTM node holds int32 numbers; the operator's W is float16, "
        "float32 or float64 (onnxruntime refuses such a model too)"),
    "R with short data": (lambda: _replace(_lstm_onnx(), "R", _raw("R", [1, 16, 4],
                                                                   b"\0" * 20)),
                          "R declares shape (1, 16, 4) (256 bytes) but holds 20 bytes; the "
                          "model is damaged"),
    "dims 1e6 x 1e6 with short data": (_huge_dims, "W declares shape (1, 4000000, 3) "
                                                   "(48000000 bytes) but holds 192 bytes; the "
                                                   "model is damaged"),
    "hidden size 0": (lambda: rnn_model("LSTM", {"W": np.zeros((1, 0, 3)),
                                                 "R": np.zeros((1, 0, 0)),
                                                 "B": np.zeros((1, 0))}, 0, "float32"),
                      "R has shape (1, 0, 0); the LSTM node (forward) needs [1, 4·H, H] with "
                      "H at least 1"),
    "hidden_size attribute that disagrees": (
        lambda: rnn_model("LSTM", random_onnx_weights("LSTM", 3, 4, False,
                                                      np.random.default_rng(0)), 5, "float32"),
        "the hidden_size of the LSTM node is 5, but R has shape (1, 16, 4) (H=4)"),
}


@pytest.mark.parametrize("case", ONNX_CASES)
def test_malformed_onnx_models(tmp_path, x_file, case, cli_refused):
    make, words = ONNX_CASES[case]
    onnx.save(make(), str(tmp_path / "m.onnx"))
    stderr = cli_refused("run", "peephole_lstm" if "P " in case else "lstm",
                     "--input", x_file, "--weights", tmp_path / "m.onnx")
    assert stderr == f"{tmp_path / 'm.onnx'}: {words}\n"


def test_an_onnx_model_larger_than_the_memory_bound(tmp_path, x_file, cli_refused):
    weights = random_onnx_weights("LSTM", 3, 512, False, np.random.default_rng(0))
    onnx.save(rnn_model("LSTM", weights, 512, "float32"), str(tmp_path / "m.onnx"))
    stderr = cli_refused("run", "lstm", "--input", x_file, "--weights",
                     tmp_path / "m.onnx", env={"LSTM_GRAPH_MAX_BYTES": "1M"})
    assert stderr == f"{tmp_path / 'm.onnx'}: reading its 4.24 MB would take more than the " \
        "limit of 1.05 MB set by LSTM_GRAPH_MAX_BYTES\n"


def _external(tmp_path: Path, location: str | None = None, truncate: int | None = None) -> Path:
    """An LSTM model whose tensors live in ``tensors.data`` beside it; ``location``
    rewrites where the model says they are."""
    model_dir = tmp_path / "model"
    model_dir.mkdir(exist_ok=True)
    path = model_dir / "m.onnx"
    onnx.save(_lstm_onnx(), str(path), save_as_external_data=True,
              all_tensors_to_one_file=True, location="tensors.data", size_threshold=0)
    if truncate is not None:
        os.truncate(model_dir / "tensors.data", truncate)
    if location is not None:
        model = onnx.load(str(path), load_external_data=False)
        for tensor in model.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
        onnx.save(model, str(path))
    return path


def test_external_data_beside_the_model_is_read(tmp_path, x_file, cli_run):
    """The run reads the tensors from the file beside the model: it writes what the same
    model with its tensors inside gives."""
    path = _external(tmp_path)
    result = cli_run("run", "lstm", "--input", x_file, "--weights", path, "--out",
                     tmp_path / "y.npz")
    assert result.stderr.endswith(  # after the notes on the model's initial_h, initial_c
        f"wrote {tmp_path / 'y.npz'}: y (6, 2, 4), c (2, 4), h (2, 4)\n")
    onnx.save(_lstm_onnx(), str(tmp_path / "inside.onnx"))
    cli_run("run", "lstm", "--input", x_file, "--weights", tmp_path / "inside.onnx", "--out",
            tmp_path / "inside.npz")
    with np.load(tmp_path / "y.npz") as found, np.load(tmp_path / "inside.npz") as expected:
        assert sorted(found) == ["c", "h", "y"]
        for name in found:
            np.testing.assert_array_equal(found[name], expected[name])


def test_external_data_too_short(tmp_path, x_file, cli_refused):
    path = _external(tmp_path, truncate=100)
    stderr = cli_refused("run", "lstm", "--input", x_file, "--weights", path)
    assert stderr == f"{path}: W needs 192 bytes at offset 0 of {path.parent / 'tensors.data'}, " \
        "which holds 100; the file is too short\n"


@pytest.mark.parametrize("where", ["relative", "absolute", "symlink"])
def test_external_data_outside_the_model_s_directory_is_never_read(tmp_path, x_file, where,
                                                                   monkeypatch, cli_refused):
    secret = tmp_path / "secret.data"
    secret.write_bytes(b"\0" * 4096)
    location = {"relative": "../secret.data", "absolute": str(secret),
                "symlink": "link.data"}[where]
    path = _external(tmp_path, location=location)
    if where == "symlink":
        (path.parent / "link.data").symlink_to(secret)
    opened: list[str] = []
    real_open = builtins.open

    def recording_open(file, *args, **kwargs):
        opened.append(os.path.realpath(file) if isinstance(file, (str, Path)) else str(file))
        return real_open(file, *args, **kwargs)

    real_os_open = os.open

    def recording_os_open(file, *args, **kwargs):
        opened.append(os.path.realpath(file) if isinstance(file, (str, Path)) else str(file))
        return real_os_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", recording_open)
    monkeypatch.setattr(os, "open", recording_os_open)
    stderr = cli_refused("run", "lstm", "--input", x_file, "--weights", path)
    assert stderr == f"{path}: W is stored in '{location}', outside the model's directory " \
        f"{path.parent}; only files beside the model are read\n"
    assert str(secret) not in opened


def test_external_data_in_a_fifo_or_at_a_nul_location_is_refused_at_once(tmp_path, x_file,
                                                                          cli_refused):
    """A FIFO beside the model would block an open() for a writer that never comes."""
    path = _external(tmp_path, location="fifo.data")
    os.mkfifo(path.parent / "fifo.data")
    assert f"{path}: W's external data {path.parent / 'fifo.data'} is not a regular file" in \
        cli_refused("run", "lstm", "--input", x_file, "--weights", path)
    path = _external(tmp_path, location="tensors.data\x00/etc/passwd")
    assert f"{path}: W's external data has a location with a NUL character " \
        "('tensors.data\\x00/etc/passwd')" in \
        cli_refused("run", "lstm", "--input", x_file, "--weights", path)


# -- .npy and .npz ----------------------------------------------------------------------

@pytest.mark.parametrize("option", ["--input", "--lengths", "--grad-output"])
def test_a_fifo_named_npz_is_refused_not_waited_on(tmp_path, cli_process, option):
    """The finding: grad --input f.npz (a FIFO) hung until killed: its first bytes were
    read, to tell an .npy named .npz, before it was seen to be no file."""
    os.mkfifo(tmp_path / "f.npz")
    data = [] if option == "--input" else ["--sample"]
    done = cli_process("grad", "lstm", "-H", "4", *data, option, "f.npz", "--out", "g.npz",
                       cwd=tmp_path, timeout=60)
    assert (done.returncode, done.stderr) == \
        (1, "f.npz: not a regular file (a FIFO, socket or device); give a file\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.npz"]


def test_a_deflate_bomb_of_weights_is_refused_by_its_names_before_any_data(tmp_path, x_file,
                                                                            cli_refused):
    bomb = tmp_path / "w.npz"
    deflate_bomb(bomb, "f.W_x.npy", (32000, 32000))
    assert bomb.stat().st_size < 5_000_000
    stderr = cli_refused("run", "lstm", "--input", x_file, "--weights", bomb)
    assert stderr == f"{bomb} does not fit cell 'lstm': missing f.W_h, f.b, i.W_x, i.W_h, " \
        "i.b, g.W_x, g.W_h, g.b, o.W_x, o.W_h, o.b\n"


def test_a_deflate_bomb_as_x_is_refused_by_its_size(tmp_path, cli_refused):
    bomb = tmp_path / "x.npz"
    deflate_bomb(bomb, "x.npy", (20000, 20000))
    stderr = cli_refused("run", "rnn", "--input", bomb, "-H", "2",
                     env={"LSTM_GRAPH_MAX_BYTES": "256M"})
    assert stderr == f"{bomb}: x of shape (20000, 20000) would take 1.6 GB; 1.6 GB in all for " \
        "this run, more than the limit of 268 MB set by LSTM_GRAPH_MAX_BYTES\n"


def test_an_npy_header_declaring_3e9_elements_in_a_small_file(tmp_path, cli_refused):
    path = tmp_path / "x.npy"
    path.write_bytes(npy_header((3_000_000_000, 1, 1)) + b"\0" * 4_000_000)
    stderr = cli_refused("run", "rnn", "--input", path, "-H", "2")
    assert stderr == f"{path}: the header declares x of shape (3000000000, 1, 1) float32 " \
        "(12 GB), but the file holds 4 MB of data; it is truncated, or not an .npy array\n"


def test_an_npz_member_longer_in_its_header_than_in_the_zip(tmp_path, x_file, cli_refused):
    path = tmp_path / "w.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("f.W_x.npy", npy_header((4, 3)) + b"\0" * 8)
    stderr = cli_refused("run", "lstm", "--input", x_file, "--weights", path)
    assert stderr == f"{path}: f.W_x: the header declares f.W_x of shape (4, 3) float32 " \
        "(48 bytes), but the file holds 8 bytes of data; it is truncated, or not an .npy array\n"


@pytest.mark.parametrize("descr, words", [
    ("[('a', '<f4'), ('b', '<f4')]",
     "has the structured dtype [('a', '<f4'), ('b', '<f4')]; it must hold plain numbers"),
    ("'|O'", "holds Python objects (dtype object), not numbers; nothing in it was unpickled"),
])
def test_npy_dtypes_that_are_not_numbers(tmp_path, descr, words, cli_refused):
    header = f"{{'descr': {descr}, 'fortran_order': False, 'shape': (2, 1, 3), }}"
    header = header.ljust(118) + "\n"
    path = tmp_path / "x.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode()
                     + b"\0" * 48)
    assert cli_refused("run", "rnn", "--input", path, "-H", "2") == f"{path}: {words}\n"


def test_a_state_file_of_strings_complex_or_bool_is_refused(tmp_path, x_file, cli_refused):
    for value, words in ((np.array([["a"] * 4] * 2), "dtype <U1"),
                         (np.zeros((2, 4), complex), "dtype complex128"),
                         (np.zeros((2, 4), bool), "dtype bool")):
        np.savez(tmp_path / "s.npz", h=value)
        stderr = cli_refused("run", "gru", "--input", x_file, "-H", "4", "--state",
                         tmp_path / "s.npz")
        assert stderr == f"{tmp_path / 's.npz'}: state 'h' has {words}; states are real " \
            "numbers\n"


def test_nan_in_a_state_is_caught_like_in_x(tmp_path, x_file, cli_refused):
    state = np.zeros((2, 4), "float32")
    state[1, 2] = np.nan
    np.savez(tmp_path / "s.npz", h=state)
    stderr = cli_refused("run", "gru", "--input", x_file, "-H", "4", "--state",
                     tmp_path / "s.npz")
    assert stderr == f"{tmp_path / 's.npz'}: state 'h' holds NaN or infinity, first at " \
        "index (1, 2); clean it or pass --allow-nonfinite\n"


def test_nan_in_x_is_refused_naming_the_file(tmp_path, cli_refused):
    x = np.zeros((5, 2, 3), "float32")
    x[2, 1, 0] = np.nan
    np.save(tmp_path / "x.npy", x)
    for command in ("run", "trace"):
        stderr = cli_refused(command, "lstm", "--input", tmp_path / "x.npy", "-H", "4")
        assert stderr == f"{tmp_path / 'x.npy'}: x holds NaN or infinity, first at index " \
            "(2, 1, 0); clean the input or pass --allow-nonfinite\n"


def test_an_input_too_large_for_float32_says_so(tmp_path, cli_refused):
    x = np.ones((4, 2, 3))
    x[2, 1, 0] = 1e39
    np.save(tmp_path / "x.npy", x)
    stderr = cli_refused("run", "rnn", "--input", tmp_path / "x.npy", "-H", "2")
    assert stderr == "note: x is float64; computing in float32 (see --dtype)\n" \
        f"{tmp_path / 'x.npy'}: x holds 1e+39 at index (2, 1, 0), too large for float32 " \
        "(the largest is about 3.4e+38); run in float64 (--dtype float64)\n"  # no warning


def test_an_input_of_size_0_is_refused(tmp_path, cli_refused):
    np.save(tmp_path / "x.npy", np.zeros((5, 2, 0), "float32"))
    stderr = cli_refused("run", "rnn", "--input", tmp_path / "x.npy", "-H", "2")
    assert stderr == "the input size I is 0; it must be at least 1\n"


def test_an_overflowing_constant_names_its_line_and_column(tmp_path, cli_refused):
    cell = tmp_path / "big.cell"
    cell.write_text("input x\nstate h\noutput h\nh = tanh(linear(x, h[t-1])) * 1e39\n")
    stderr = cli_refused("run", cell, "--sample", "-H", "2")
    assert stderr == f"{cell}:4:31: error: the constant 1e+39 is too large for float32 (the " \
        "largest is about 3.4e+38); run in float64 (--dtype float64) or use a smaller number\n"


def test_weights_whose_products_would_overflow_are_refused(tmp_path, x_file, cli_refused):
    weights = {"h.W_x": np.full((2, 3), 1e38, "float32"), "h.W_h": np.zeros((2, 2), "float32"),
               "h.b": np.zeros(2, "float32")}
    np.savez(tmp_path / "w.npz", **weights)
    stderr = cli_refused("run", "rnn", "--input", x_file, "--weights", tmp_path / "w.npz")
    assert stderr == f"{tmp_path / 'w.npz'} does not fit cell 'rnn': h.W_x holds 1e+38: its " \
        "linear adds up 6 such terms, so even operands of size 1 could overflow float32 (the " \
        "largest is about 3.4e+38)\n"
