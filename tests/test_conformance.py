"""Our numbers against implementations we did not write: PyTorch and ONNX.

float32 must agree to 1e-5 and float64 to 1e-10 (max absolute error), for
random shapes including T = 1, B = 1 and I != H, through the Python API and
through the CLI.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from conftest import executor_params
from onnx.reference import ReferenceEvaluator
from onnx_models import random_onnx_weights, rnn_model

import lstm_graph

TOLERANCE = {"float32": 1e-5, "float64": 1e-10}
SHAPES = [  # T, B, I, H
    (1, 1, 3, 5),
    (6, 1, 4, 4),
    (9, 3, 7, 2),
    (17, 5, 16, 24),
]
DTYPES = ["float32", "float64"]
#: Every executor that runs on the CPU (the CUDA plan's are in test_backends.py).
EXECUTORS = ["plan", "native", "numpy", "reference"]


def max_error(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b))))


def torch_reference(module_cls, shape, dtype, seed):
    """A seeded torch module, an input, initial states and torch's outputs."""
    steps, batch, input_size, hidden = shape
    torch.manual_seed(seed)
    module = module_cls(input_size, hidden).to(getattr(torch, dtype))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((steps, batch, input_size)).astype(dtype)
    h0 = rng.standard_normal((1, batch, hidden)).astype(dtype) * 0.5
    c0 = rng.standard_normal((1, batch, hidden)).astype(dtype) * 0.5
    with torch.no_grad():
        if module_cls is torch.nn.LSTM:
            y, (h, c) = module(torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0)))
            final = {"h": h[0].numpy(), "c": c[0].numpy()}
        else:
            y, h = module(torch.from_numpy(x), torch.from_numpy(h0))
            final = {"h": h[0].numpy()}
    return module, x, {"h": h0[0], "c": c0[0]}, y.numpy(), final


@pytest.mark.parametrize("executor", executor_params(EXECUTORS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("cell_name, module_cls", [("lstm", torch.nn.LSTM),
                                                   ("gru", torch.nn.GRU),
                                                   ("rnn", torch.nn.RNN)])
def test_matches_pytorch(cell_name, module_cls, shape, dtype, executor):
    module, x, start, y_ref, final_ref = torch_reference(module_cls, shape, dtype, seed=sum(shape))
    run = lstm_graph.load_cell(cell_name).compile(weights=module.state_dict(), dtype=dtype,
                                                  executor=executor, warn=False)
    state = {k: v for k, v in start.items() if k in final_ref}
    y, final = run(x, state)
    assert y.dtype == np.dtype(dtype)
    assert max_error(y, y_ref) < TOLERANCE[dtype]
    for name, value in final_ref.items():
        assert max_error(final[name], value) < TOLERANCE[dtype]


def onnx_reference(op, shape, dtype, peepholes, seed, **attributes):
    steps, batch, input_size, hidden = shape
    rng = np.random.default_rng(seed)
    weights = random_onnx_weights(op, input_size, hidden, peepholes, rng)
    model = rnn_model(op, weights, hidden, dtype, **attributes)
    x = rng.standard_normal((steps, batch, input_size)).astype(dtype)
    h0 = (rng.standard_normal((1, batch, hidden)) * 0.5).astype(dtype)
    c0 = (rng.standard_normal((1, batch, hidden)) * 0.5).astype(dtype)
    feeds = {"X": x, "initial_h": h0} | ({"initial_c": c0} if op == "LSTM" else {})
    if dtype == "float32":
        session = onnxruntime.InferenceSession(model.SerializeToString(),
                                               providers=["CPUExecutionProvider"])
        outputs = session.run(None, feeds)
    else:  # onnxruntime's CPU RNN kernels are float32 only
        outputs = ReferenceEvaluator(model).run(None, feeds)
    final = {"h": outputs[1][0]} | ({"c": outputs[2][0]} if op == "LSTM" else {})
    start = {"h": h0[0]} | ({"c": c0[0]} if op == "LSTM" else {})
    return model, x, start, outputs[0][:, 0], final


@pytest.mark.parametrize("executor", executor_params(EXECUTORS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("cell_name, op, peepholes, attributes", [
    ("peephole_lstm", "LSTM", True, {}),
    ("lstm", "LSTM", False, {}),
    ("gru", "GRU", False, {"linear_before_reset": 1}),
])
def test_matches_onnx(cell_name, op, peepholes, attributes, shape, dtype, executor, tmp_path):
    model, x, start, y_ref, final_ref = onnx_reference(op, shape, dtype, peepholes,
                                                       seed=7 * sum(shape), **attributes)
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    run = lstm_graph.load_cell(cell_name).compile(weights=path, dtype=dtype, executor=executor,
                                                  warn=False)  # its notes: initial_h an input
    y, final = run(x, start)
    assert max_error(y, y_ref) < TOLERANCE[dtype]
    for name, value in final_ref.items():
        assert max_error(final[name], value) < TOLERANCE[dtype]


def test_onnx_lstm_without_peepholes_runs_as_peephole_lstm_with_zero_peepholes(tmp_path):
    model, x, start, y_ref, _ = onnx_reference("LSTM", (5, 2, 3, 4), "float32", False, seed=3)
    onnx.save(model, str(tmp_path / "m.onnx"))
    for name in ("peephole_lstm", "lstm"):  # ONNX: P left out is zero
        y, _ = lstm_graph.load_cell(name).compile(weights=tmp_path / "m.onnx",
                                                  warn=False)(x, start)
        assert max_error(y, y_ref) < 1e-5


def test_pytorch_weights_through_the_cli(tmp_path, cli_run):
    module, x, start, y_ref, final_ref = torch_reference(torch.nn.LSTM, (11, 3, 5, 6),
                                                          "float32", seed=5)
    torch.save(module.state_dict(), tmp_path / "w.pt")
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "s.npz", **start)
    cli_run("run", "lstm", "--input", tmp_path / "x.npy", "--weights", tmp_path / "w.pt",
            "--state", tmp_path / "s.npz", "--out", tmp_path / "y.npz")
    with np.load(tmp_path / "y.npz") as out:
        assert sorted(out.files) == ["c", "h", "y"]
        assert max_error(out["y"], y_ref) < 1e-5
        assert max_error(out["c"], final_ref["c"]) < 1e-5


def test_onnx_weights_through_the_cli_in_float64(tmp_path, cli_run):
    model, x, start, y_ref, final_ref = onnx_reference("LSTM", (4, 2, 3, 5), "float64", True,
                                                       seed=11)
    onnx.save(model, str(tmp_path / "p.onnx"))
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "s.npz", **start)
    cli_run("run", "peephole_lstm", "--input", tmp_path / "x.npy", "--dtype", "float64",
            "--weights", tmp_path / "p.onnx", "--state", tmp_path / "s.npz", "--out",
            tmp_path / "y.npz")
    with np.load(tmp_path / "y.npz") as out:
        assert max_error(out["y"], y_ref) < 1e-10
        assert max_error(out["h"], final_ref["h"]) < 1e-10
