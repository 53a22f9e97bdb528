"""The layers people bring, against PyTorch and onnxruntime: stacks, directions, sequence
lengths, batch-first, projections, every ONNX attribute; run, trace and gradients.

PyTorch's ``nn.LSTM``/``nn.GRU``/``nn.RNN`` (and their cells, packed sequences and
autograd) and onnxruntime's LSTM/GRU/RNN kernels are the references: nothing here
restates our equations.
"""

from __future__ import annotations

import argparse
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import executor_params

import lstm_graph
from lstm_graph.errors import LstmGraphWarning
from lstm_graph.executors.contract import Spec
from lstm_graph.executors.cuda import CudaPlan, HostLauncher
from lstm_graph.formats.importers import GATE_ORDER, gate_params
from lstm_graph.layers import Packing, grad_unit, run_unit

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx_models import random_onnx_weights, rnn_model  # noqa: E402

EXECUTORS = executor_params(["reference", "numpy", "native"])
TOLERANCE = {"float32": dict(rtol=2e-5, atol=2e-5), "float64": dict(rtol=1e-10, atol=1e-11)}


def inputs(steps: int, batch: int, size: int, dtype: str, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((steps, batch, size)).astype(dtype)


# -- PyTorch layers ----------------------------------------------------------------------

TORCH_LAYERS = {
    "2-layer LSTM": (lambda: torch.nn.LSTM(3, 5, num_layers=2), "lstm"),
    "bidirectional LSTM": (lambda: torch.nn.LSTM(3, 5, bidirectional=True), "lstm"),
    "bidirectional GRU": (lambda: torch.nn.GRU(3, 5, bidirectional=True), "gru"),
    "2-layer bidirectional LSTM": (lambda: torch.nn.LSTM(3, 5, 2, bidirectional=True), "lstm"),
    "LSTM with proj_size": (lambda: torch.nn.LSTM(3, 6, 2, proj_size=2), "lstm_proj"),
    "3-layer RNN": (lambda: torch.nn.RNN(3, 5, 3), "rnn"),
    "3-layer relu RNN": (lambda: torch.nn.RNN(3, 5, 3, nonlinearity="relu"), "rnn_relu"),
    "GRU without bias": (lambda: torch.nn.GRU(3, 5, 2, bias=False), "gru"),
}


def torch_run(module, x, lengths=None, state=None):
    """PyTorch's outputs: y (zero past each length), and h_n (and c_n)."""
    xs = torch.from_numpy(x)
    given = None if state is None else (
        tuple(torch.from_numpy(state[k]) for k in ("h", "c")) if "c" in state
        else torch.from_numpy(state["h"]))
    with torch.no_grad():
        if lengths is None:
            y, final = module(xs, given)
        else:
            packed = torch.nn.utils.rnn.pack_padded_sequence(xs, torch.as_tensor(lengths),
                                                             enforce_sorted=False)
            y, final = module(packed, given)
            y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, total_length=len(x))
    finals = {"h": final[0], "c": final[1]} if isinstance(final, tuple) else {"h": final}
    return y.numpy(), {k: v.numpy() for k, v in finals.items()}


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layer", sorted(TORCH_LAYERS))
def test_pytorch_layers_run_exactly_with_lengths_and_initial_states(layer, dtype, executor):
    make, cell = TORCH_LAYERS[layer]
    torch.manual_seed(1)
    module = make().to(getattr(torch, dtype))
    runner = lstm_graph.load_cell(cell).compile(weights=module.state_dict(), dtype=dtype,
                                                executor=executor)
    x = inputs(7, 4, 3, dtype)
    rng = np.random.default_rng(2)
    state = {name: rng.standard_normal(runner.state_shape(name, 4)).astype(dtype) * 0.5
             for name in runner.cell.graph.states}
    lengths = np.array([3, 7, 1, 5])
    for given_lengths, given_state in ((None, None), (lengths, state)):
        expected_y, expected = torch_run(module, x, given_lengths, given_state)
        y, final = runner(x, given_state, lengths=given_lengths)
        np.testing.assert_allclose(y, expected_y, **TOLERANCE[dtype])
        for name, value in expected.items():
            np.testing.assert_allclose(final[name], value, **TOLERANCE[dtype], err_msg=name)


@pytest.mark.parametrize("cell_module, cell", [(torch.nn.LSTMCell, "lstm"),
                                               (torch.nn.GRUCell, "gru"),
                                               (torch.nn.RNNCell, "rnn")])
def test_pytorch_cells_run_over_the_sequence(cell_module, cell, tmp_path, cli_run):
    torch.manual_seed(3)
    module = cell_module(3, 4)
    torch.save(module.state_dict(), tmp_path / "cell.pt")
    x = inputs(6, 2, 3, "float32")
    h = torch.zeros(2, 4)
    c = torch.zeros(2, 4)
    ys = []
    with torch.no_grad():
        for t in range(len(x)):
            out = module(torch.from_numpy(x[t]), (h, c) if cell == "lstm" else h)
            h, c = out if cell == "lstm" else (out, c)
            ys.append(h.numpy())
    np.save(tmp_path / "x.npy", x)
    spec = ["rnn", "--weights", tmp_path / "cell.pt"] if cell == "rnn" else \
        [tmp_path / "cell.pt"]  # an RNNCell's file does not say its nonlinearity
    cli_run("run", *spec, "--input", tmp_path / "x.npy", "--out", tmp_path / "y.npz")
    found = np.load(tmp_path / "y.npz")
    np.testing.assert_allclose(found["y"], np.stack(ys), atol=2e-6)
    np.testing.assert_allclose(found["h"], h.numpy(), atol=2e-6)


def test_a_batch_first_lstm_reads_and_writes_batch_first(tmp_path, cli_run):
    torch.manual_seed(4)
    module = torch.nn.LSTM(3, 4, batch_first=True)
    torch.save(module.state_dict(), tmp_path / "bf.pt")
    x = np.ascontiguousarray(inputs(6, 2, 3, "float32").transpose(1, 0, 2))  # (B, T, I)
    with torch.no_grad():
        expected, (h, c) = module(torch.from_numpy(x))
    np.save(tmp_path / "x.npy", x)
    cli_run("run", tmp_path / "bf.pt", "--input", tmp_path / "x.npy", "--batch-first",
            "--out", tmp_path / "y.npz")
    found = np.load(tmp_path / "y.npz")
    assert found["y"].shape == (2, 6, 4) and found["h"].shape == (2, 4)
    np.testing.assert_allclose(found["y"], expected.numpy(), atol=2e-6)
    np.testing.assert_allclose(found["c"], c[0].numpy(), atol=2e-6)


def test_a_peephole_cell_given_an_lstm_without_peepholes_says_they_are_zero(tmp_path,
                                                                            cli_run):
    torch.manual_seed(4)
    module = torch.nn.LSTM(3, 4)
    torch.save(module.state_dict(), tmp_path / "w.pt")
    x = inputs(6, 2, 3, "float32")
    with torch.no_grad():
        expected, _ = module(torch.from_numpy(x))
    np.save(tmp_path / "x.npy", x)
    result = cli_run("run", "peephole_lstm", "--weights", tmp_path / "w.pt", "--input",
                     tmp_path / "x.npy", "--out", tmp_path / "y.npz")
    assert f"note: {tmp_path / 'w.pt'} holds no peepholes; cell 'peephole_lstm' runs with " \
        "its peephole weights at zero, so it computes what the nn.LSTM does" in result.stderr
    np.testing.assert_allclose(np.load(tmp_path / "y.npz")["y"], expected.numpy(), atol=2e-6)
    plain = cli_run("run", "lstm", "--weights", tmp_path / "w.pt", "--input",
                    tmp_path / "x.npy", "--out", tmp_path / "y.npz")
    assert "note:" not in plain.stderr


def test_a_checkpoint_or_a_model_holding_one_recurrent_layer_is_found(tmp_path):
    torch.manual_seed(5)
    model = torch.nn.Sequential()
    model.add_module("embed", torch.nn.Linear(3, 3))
    model.add_module("rnn", torch.nn.GRU(3, 4, 2))
    torch.save({"epoch": 3, "model": model.state_dict(), "lr": 0.1}, tmp_path / "ckpt.pt")
    loaded = lstm_graph.load_model(tmp_path / "ckpt.pt")
    assert (loaded.cell.name, loaded.stack.layers) == ("gru", 2)
    assert "nn.GRU 'model/rnn'" in loaded.describe()
    x = inputs(5, 2, 3, "float32")
    expected, _ = torch_run(model.rnn, x)
    with pytest.warns(LstmGraphWarning, match="running nn.GRU 'model/rnn' of .* alone; its "
                      "4 other entries are not run \\(epoch, model/embed.weight"):
        run = loaded.compile()
    np.testing.assert_allclose(run(x)[0], expected, atol=2e-6)
    twice = {"a": torch.nn.LSTM(3, 4).state_dict(), "b": torch.nn.LSTM(3, 4).state_dict()}
    torch.save(twice, tmp_path / "two.pt")
    with pytest.raises(lstm_graph.WeightsError, match="holds 2 recurrent layers"):
        lstm_graph.load_model(tmp_path / "two.pt")


# -- gradients of stacks against autograd --------------------------------------------------

def torch_gradients(module, x, grad_y, lengths=None):
    """PyTorch autograd: dx and every parameter's gradient for the loss sum(grad_y · y)."""
    xs = torch.from_numpy(x).requires_grad_(True)
    if lengths is None:
        y, _ = module(xs)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(xs, torch.as_tensor(lengths),
                                                         enforce_sorted=False)
        y, _ = module(packed)
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, total_length=len(x))
    (y * torch.from_numpy(grad_y)).sum().backward()
    return xs.grad.numpy(), {n: p.grad.numpy() for n, p in module.named_parameters()}


@pytest.mark.parametrize("executor", executor_params(["reference", "numpy"]))
@pytest.mark.parametrize("layer, with_lengths", [
    ("2-layer bidirectional LSTM", False), ("2-layer bidirectional LSTM", True),
    ("bidirectional GRU", True), ("3-layer RNN", False)])
def test_stack_gradients_equal_pytorch_autograd(layer, with_lengths, executor):
    make, cell = TORCH_LAYERS[layer]
    torch.manual_seed(6)
    module = make().double()
    runner = lstm_graph.load_cell(cell).compile(weights=module.state_dict(), dtype="float64",
                                                executor=executor)
    x = inputs(6, 3, 3, "float64")
    lengths = np.array([4, 6, 2]) if with_lengths else None
    grad_y = np.random.default_rng(7).standard_normal((6, 3, runner.output_width))
    if lengths is not None:  # past a sequence's end y is 0: PyTorch sends nothing back there
        grad_y *= (np.arange(6)[:, None] < lengths[None, :])[..., None]
    expected_x, expected = torch_gradients(module, x, grad_y, lengths)
    found = runner.grad(x, grad_y, lengths=lengths)
    np.testing.assert_allclose(found.x, expected_x, rtol=1e-9, atol=1e-11)
    family = next(iter(runner.cell.graph.gates))
    for unit in runner.units:
        suffix = f"_l{unit.layer}{'_reverse' if unit.reverse else ''}"
        params = gate_params(unit.cell.graph, family, "test")
        order = GATE_ORDER["torch", family]
        size = expected[f"weight_hh{suffix}"].shape[1]
        for k, gate in enumerate(order):
            names, rows = params[gate], slice(k * size, (k + 1) * size)
            assert names is not None
            for ours, theirs in ((names.w_x, "weight_ih"), (names.w_h, "weight_hh"),
                                 (names.b_x, "bias_ih")):
                np.testing.assert_allclose(found.weights[unit.prefix + ours],
                                           expected[f"{theirs}{suffix}"][rows], rtol=1e-9,
                                           atol=1e-11, err_msg=unit.prefix + ours)


def test_a_reverse_stack_compiles_again_from_its_weights_and_its_onnx_export(tmp_path):
    """A stack of reverse layers names its weights l0., l1., as a forward stack does: its
    own weights, given back with direction="reverse", and its ONNX export, run as a model,
    were refused as a forward stack's."""
    runner = lstm_graph.load_cell("lstm").compile(input_size=3, hidden_size=4, layers=2,
                                                  direction="reverse", seed=1)
    x = inputs(6, 2, 3, "float32")
    y, _ = runner(x)
    again = lstm_graph.load_cell("lstm").compile(weights=runner.weights, direction="reverse")
    assert again.stack.describe() == "2 layers, reverse"
    np.testing.assert_array_equal(again(x)[0], y)
    forward = lstm_graph.load_cell("lstm").compile(weights=runner.weights)
    assert forward.stack.describe() == "2 layers, forward"  # the names alone: forward
    runner.export_onnx(tmp_path / "r.onnx")
    model = lstm_graph.load_model(tmp_path / "r.onnx")
    assert model.stack.describe() == "2 layers, reverse"
    with pytest.warns(LstmGraphWarning, match="running the 2 LSTM nodes"):
        run = model.compile()
    np.testing.assert_allclose(run(x)[0], y, rtol=1e-6, atol=1e-7)


def test_recording_the_gradient_flow_with_lengths_is_refused_not_left_empty():
    """``grad(record=True, lengths=...)`` recorded nothing and said nothing; lengths that
    are all full pack nothing, and record as without them."""
    runner = lstm_graph.load_cell("lstm").compile(input_size=3, hidden_size=4)
    x = inputs(5, 2, 3, "float32")
    grad_y = np.ones((5, 2, 4), "float32")
    with pytest.raises(lstm_graph.DataError, match=r"record=True\) works on one layer and "
                                                   r"direction, forward, time-major, with no "
                                                   r"sequence shorter than x \(lengths\)"):
        runner.grad(x, grad_y, record=True, lengths=[5, 3])
    full = runner.grad(x, grad_y, record=True, lengths=[5, 5])
    assert set(full.values) >= {"c", "h"} and full.edges


def test_the_loss_of_a_stack_grad_is_the_run_s(tmp_path):
    runner = lstm_graph.load_cell("lstm").compile(input_size=3, hidden_size=4, layers=2,
                                                  direction="bidirectional", dtype="float64")
    x = inputs(5, 2, 3, "float64")
    y, final = runner(x, lengths=[5, 2])
    found = runner.grad(x, np.ones_like(y), lengths=[5, 2])
    assert list(found.weights) == list(runner.weights)  # l0. first, as the weights are
    np.testing.assert_allclose(found.y, y, rtol=1e-12)
    np.testing.assert_allclose(found.final["c"], final["c"], rtol=1e-12)
    assert found.state["h"].shape == (4, 2, 4)


# -- ONNX: every attribute, against onnxruntime ---------------------------------------------

def onnx_layer(op: str, direction: str, layout: int, seed: int, store: bool, **attributes):
    """A model of one recurrent node, everything but X stored in it; X and ORT's outputs."""
    rng = np.random.default_rng(seed)
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    d = 2 if direction == "bidirectional" else 1
    steps, batch, size, hidden = 5, 3, 3, 4
    tensors = {"W": rng.uniform(-0.6, 0.6, (d, gates * hidden, size)),
               "R": rng.uniform(-0.6, 0.6, (d, gates * hidden, hidden)),
               "B": rng.uniform(-0.6, 0.6, (d, 2 * gates * hidden))}
    shape_h = (batch, d, hidden) if layout else (d, batch, hidden)
    if store:
        tensors["sequence_lens"] = np.array([5, 2, 4], dtype=np.int32)
        tensors["initial_h"] = rng.uniform(-0.5, 0.5, shape_h)
        if op == "LSTM":
            tensors["initial_c"] = rng.uniform(-0.5, 0.5, shape_h)
    if op == "LSTM" and attributes.pop("peepholes", False):
        tensors["P"] = rng.uniform(-0.6, 0.6, (d, 3 * hidden))
    outputs = ["Y", "Y_h", "Y_c"][: 3 if op == "LSTM" else 2]

    def model_of(layout: int, tensors: dict[str, np.ndarray]) -> onnx.ModelProto:
        names = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"][
            : 8 if op == "LSTM" else 6]
        node = helper.make_node(op, [n if n in tensors or n == "X" else "" for n in names],
                                outputs, name="layer", hidden_size=hidden,
                                direction=direction, layout=layout, **attributes)
        x_shape = (batch, steps, size) if layout else (steps, batch, size)
        initializers = [numpy_helper.from_array(v.astype(np.int32 if k == "sequence_lens"
                                                         else np.float32), k)
                        for k, v in tensors.items()]
        graph = helper.make_graph(
            [node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
            initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
        model.ir_version = 8
        return model

    model = model_of(layout, tensors)
    x = rng.standard_normal((batch, steps, size) if layout else (steps, batch, size)
                            ).astype(np.float32)
    # onnxruntime runs only layout 0: the same node, time-major, its outputs batch-major
    time_major = {k: v.transpose(1, 0, 2) if layout and k.startswith("initial") else v
                  for k, v in tensors.items()}
    session = onnxruntime.InferenceSession(model_of(0, time_major).SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    found = dict(zip(outputs, session.run(None, {"X": x.transpose(1, 0, 2) if layout
                                                 else x})))
    if layout:
        found = {k: v.transpose(2, 0, 1, 3) if k == "Y" else v.transpose(1, 0, 2)
                 for k, v in found.items()}
    return model, x, found


ONNX_CASES = {
    "LSTM hard_sigmoid/leaky/elu, clip, peepholes, stored lengths and states, reverse": (
        "LSTM", "reverse", 0, dict(activations=["HardSigmoid", "LeakyRelu", "Elu"],
                                   activation_alpha=[0.3, 0.2, 0.8], activation_beta=[0.4],
                                   clip=1.5, peepholes=True)),
    "LSTM input_forget, bidirectional, batch-major, two sets of activations": (
        "LSTM", "bidirectional", 1, dict(
            input_forget=1, activations=["Sigmoid", "Tanh", "Tanh", "Sigmoid", "Softsign",
                                         "ScaledTanh"],
            activation_alpha=[1.5], activation_beta=[0.7])),
    "GRU linear_before_reset=0 (ONNX's default), bidirectional, stored lengths": (
        "GRU", "bidirectional", 0, {}),
    "GRU linear_before_reset=1, affine and thresholded relu, clip": (
        "GRU", "forward", 0, dict(linear_before_reset=1, clip=2.0,
                                  activations=["Sigmoid", "Affine"],
                                  activation_alpha=[0.5], activation_beta=[0.1])),
    "RNN relu, reverse, batch-major": ("RNN", "reverse", 1, dict(activations=["Relu"])),
    "RNN softplus and thresholded relu, bidirectional": (
        "RNN", "bidirectional", 0, dict(activations=["Softplus", "ThresholdedRelu"],
                                        activation_alpha=[0.1])),
}


def our_outputs(found_y, final, layout, directions):
    """ORT's Y, Y_h, Y_c from ours (y (T, B, D·H) or (B, T, D·H); finals (D, B, H))."""
    if layout:
        y = found_y.reshape(*found_y.shape[:2], directions, -1)  # (B, T, D, H)
    else:
        y = found_y.reshape(*found_y.shape[:2], directions, -1).transpose(0, 2, 1, 3)
    out = {"Y": y}
    for name, key in (("h", "Y_h"), ("c", "Y_c")):
        if name in final:
            value = final[name] if directions == 2 else final[name][None]
            out[key] = value.transpose(1, 0, 2) if layout else value
    return out


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("case", sorted(ONNX_CASES))
@pytest.mark.parametrize("store", [True, False])
def test_onnx_attributes_equal_onnxruntime(case, store, executor, tmp_path):
    op, direction, layout, attributes = ONNX_CASES[case]
    model, x, expected = onnx_layer(op, direction, layout, seed=len(case), store=store,
                                    **dict(attributes))
    onnx.save(model, str(tmp_path / "m.onnx"))
    loaded = lstm_graph.load_model(tmp_path / "m.onnx")
    runner = loaded.compile(executor=executor)
    assert runner.batch_first == bool(layout)
    y, final = runner(x, loaded.state or None, lengths=loaded.lengths)
    found = our_outputs(y, final, layout, 2 if direction == "bidirectional" else 1)
    for name, value in expected.items():
        np.testing.assert_allclose(found[name], value, rtol=3e-5, atol=3e-5, err_msg=name)


def test_onnx_defaults_that_onnxruntime_and_the_operators_disagree_on_are_refused(tmp_path):
    model, _, _ = onnx_layer("RNN", "forward", 0, 0, False, activations=["Sigmoid"])
    node = model.graph.node[0]
    del node.attribute[:]
    node.attribute.extend([helper.make_attribute("hidden_size", 4),
                           helper.make_attribute("activations", ["ThresholdedRelu"])])
    onnx.save(model, str(tmp_path / "m.onnx"))
    with pytest.raises(lstm_graph.WeightsError, match="uses ThresholdedRelu without its "
                       r"activation_alpha: the ONNX operator's default \(1.0\) and "
                       r"onnxruntime's \(0.0\) differ"):
        lstm_graph.load_model(tmp_path / "m.onnx")


@pytest.mark.parametrize("op, attribute, value, words", [
    ("GRU", "layout", 1.0, "layout of type FLOAT; the operator defines it as INT"),
    ("LSTM", "input_forget", 1.0, "input_forget of type FLOAT; the operator defines it as INT"),
    ("RNN", "activation_alpha", [2], "activation_alpha of type INTS; the operator defines it "
                                     "as FLOATS (a list of floats)"),
    ("GRU", "clip", 3, "clip of type INT; the operator defines it as FLOAT (a float)"),
    ("LSTM", "hidden_size", 4.0, "hidden_size of type FLOAT; the operator defines it as INT"),
    ("RNN", "direction", ["forward"], "direction of type STRINGS; the operator defines it as "
                                      "STRING"),
])
def test_an_attribute_of_another_type_than_the_operator_s_is_refused(tmp_path, op, attribute,
                                                                     value, words):
    """Read by the field of its type, a layout of 1.0 was 0 (0.42 off the reference
    evaluator, which honours it), an input_forget of 1.0 was 0 and an activation_alpha of
    integers none (LeakyRelu's 0.01, not 2); onnxruntime refuses such models."""
    model, _, _ = onnx_layer(op, "forward", 0, 0, False,
                             **({"activations": ["LeakyRelu"]} if op == "RNN" else {}))
    node = model.graph.node[0]
    kept = [a for a in node.attribute if a.name not in (attribute, "activation_alpha")]
    del node.attribute[:]
    node.attribute.extend([*kept, helper.make_attribute(attribute, value)])
    if attribute != "activation_alpha" and op == "RNN":
        node.attribute.append(helper.make_attribute("activation_alpha", [0.5]))
    onnx.save(model, str(tmp_path / "m.onnx"))
    with pytest.raises(onnxruntime.capi.onnxruntime_pybind11_state.InvalidGraph):
        onnxruntime.InferenceSession(str(tmp_path / "m.onnx"),
                                     providers=["CPUExecutionProvider"])
    with pytest.raises(lstm_graph.WeightsError, match=re.escape(words)):
        lstm_graph.load_model(tmp_path / "m.onnx")


def test_an_initial_state_fed_to_a_batch_major_node_is_said_in_the_runner_s_layout(
        tmp_path, cli_run):
    """The note said "give it with --state": the node's own (B, D, H) then ran, where B ==
    D, as (D, B, H) (0.87 off). The runner's states are time-major, as PyTorch's h0."""
    node = helper.make_node("GRU", ["X", "W", "R", "", "", "h0"], ["Y"], hidden_size=3,
                            direction="bidirectional", layout=1)
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                      for n in ("X", "h0")],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(rng.uniform(-.6, .6, (2, 9, 2)).astype("float32"), "W"),
         numpy_helper.from_array(rng.uniform(-.6, .6, (2, 9, 3)).astype("float32"), "R")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])
    model.ir_version = 10
    onnx.save(model, str(tmp_path / "m.onnx"))
    said = cli_run("run", tmp_path / "m.onnx", "--sample", "--out", tmp_path / "y.npz").stderr
    assert "note: the initial_h ('h0') of the GRU node is an input of the model, not stored " \
        "in it: give it with --state (an npz holding h; (B, H), or (layers·directions, B, " \
        "H) for a stack: not the node's layout=1 (B, directions, H)), or the run uses " \
        "zeros" in said


def test_a_clip_keeps_every_digit_of_the_model_s_value(tmp_path):
    # 100000.5 is a float32; written with 6 significant digits it was 100000 (0.5 off)
    node = helper.make_node("RNN", ["X", "W", "R"], ["Y"], hidden_size=1,
                            activations=["Relu"], clip=100000.5)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.full((1, 1, 1), 1e6, np.float32), "W"),
         numpy_helper.from_array(np.zeros((1, 1, 1), np.float32), "R")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])
    model.ir_version = 10
    onnx.save(model, str(tmp_path / "clip.onnx"))
    x = np.ones((2, 1, 1), np.float32)
    expected = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"X": x})[0]
    loaded = lstm_graph.load_model(tmp_path / "clip.onnx")
    assert "100000.5" in loaded.cell.schedule.expression("h")
    for executor in ("native", "numpy", "reference"):
        y, _ = loaded.compile(executor=executor)(x)
        assert np.array_equal(y, expected[:, 0]), executor


def test_an_infinite_clip_runs_as_no_clip_as_onnxruntime_runs_it(tmp_path):
    """clip = +inf was refused as 'not a positive, finite threshold'; it bounds nothing."""
    model, x, expected = onnx_layer("LSTM", "forward", 0, seed=3, store=False,
                                    clip=float("inf"))
    onnx.save(model, str(tmp_path / "m.onnx"))
    loaded = lstm_graph.load_model(tmp_path / "m.onnx")
    assert "clip" not in loaded.sources[0][0]
    y, _ = loaded.compile()(x)
    np.testing.assert_allclose(y, expected["Y"][:, 0], atol=3e-6)
    next(a for a in model.graph.node[0].attribute if a.name == "clip").f = float("nan")
    onnx.save(model, str(tmp_path / "m.onnx"))
    with pytest.raises(lstm_graph.WeightsError, match="has clip nan; a cell clip is a "
                       "positive threshold"):
        lstm_graph.load_model(tmp_path / "m.onnx")


def test_a_node_name_with_line_breaks_stays_in_its_comment(tmp_path):
    """The cell written for a model names its node in a comment: a name with line breaks
    (any that ``splitlines`` takes) must not add lines to the cell."""
    model, x, expected = onnx_layer("LSTM", "forward", 0, seed=7, store=False, clip=2.5)
    model.graph.node[0].name = "n\nc = 0 * c[t-1]\u2028h = 0 * h[t-1]\x85"
    onnx.save(model, str(tmp_path / "m.onnx"))
    loaded = lstm_graph.load_model(tmp_path / "m.onnx")
    text = loaded.sources[0][0]
    assert "n\\nc = 0 * c[t-1]\\u2028h = 0 * h[t-1]\\x85" in text.splitlines()[0]
    y, _ = loaded.compile()(x)
    np.testing.assert_allclose(y, expected["Y"][:, 0], atol=3e-6)


def test_a_user_cell_cannot_take_an_onnx_layer_it_does_not_compute(tmp_path):
    model, _, _ = onnx_layer("LSTM", "forward", 0, 0, False, clip=3.0)
    onnx.save(model, str(tmp_path / "m.onnx"))
    with pytest.raises(lstm_graph.WeightsError, match="computes activations sigmoid, tanh, "
                       "tanh; clip 3, which cell 'lstm' does not; run the file itself"):
        lstm_graph.load_cell("lstm").compile(weights=tmp_path / "m.onnx")


# -- the executors' CUDA kernels under layers (on the host) ---------------------------------

def test_cuda_kernels_run_layers_reverse_and_lengths_on_the_host():
    cell = lstm_graph.load_cell("peephole_lstm")
    reference = cell.compile(input_size=3, hidden_size=5, dtype="float64",
                             executor="reference")
    x = inputs(6, 4, 3, "float64")
    start = {s: np.full((4, 5), 0.1) for s in cell.graph.states}
    packing = Packing.of(np.array([2, 6, 3, 6]), 6)

    def host(batch):
        return CudaPlan(Spec(cell.schedule, np, reference.params, batch, 3, 5,
                             np.dtype("float64")), launcher=HostLauncher())

    def ref(batch):
        return reference.compiled(batch)

    for reverse in (False, True):
        y, final = run_unit(host, x, start, np, reverse, packing)
        y_ref, final_ref = run_unit(ref, x, start, np, reverse, packing)
        np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(final["c"], final_ref["c"], rtol=1e-12, atol=1e-13)
        grad_y = np.ones_like(y)
        found = grad_unit(host, x, start, grad_y, {}, np, reverse, packing)
        expected = grad_unit(ref, x, start, grad_y, {}, np, reverse, packing)
        np.testing.assert_allclose(found.x, expected.x, rtol=1e-10, atol=1e-12)


# -- the command line: shapes, stored states and lengths, refusals ---------------------------

def test_the_five_silent_wrong_numbers_are_right_or_refused(tmp_path, cli_run, cli_refused):
    # 1, 2: an ONNX model storing sequence_lens and initial_h/c
    model, x, expected = onnx_layer("LSTM", "forward", 0, seed=9, store=True)
    onnx.save(model, str(tmp_path / "m.onnx"))
    np.save(tmp_path / "x.npy", x)
    cli_run("run", tmp_path / "m.onnx", "--input", tmp_path / "x.npy", "--out",
            tmp_path / "y.npz")
    found = np.load(tmp_path / "y.npz")
    np.testing.assert_allclose(found["y"], expected["Y"][:, 0], atol=2e-5)
    np.testing.assert_allclose(found["h"], expected["Y_h"][0], atol=2e-5)
    np.testing.assert_allclose(found["c"], expected["Y_c"][0], atol=2e-5)
    for length, why in ((0, "every sequence needs at least one step (onnxruntime zeroes"),
                        (-1, "a length counts steps: it is never negative")):
        stored = onnx.ModelProto()
        stored.CopyFrom(model)
        lens = next(t for t in stored.graph.initializer if t.name == "sequence_lens")
        lens.CopyFrom(numpy_helper.from_array(np.array([5, length, 4], np.int32),
                                              "sequence_lens"))
        onnx.save(stored, str(tmp_path / "lens.onnx"))
        assert f"lens.onnx: sequence_lens holds {length} at index 1: {why}" in cli_refused(
            "run", tmp_path / "lens.onnx", "--input", tmp_path / "x.npy")
    # 3: --state with names that are not the cell's states
    np.savez(tmp_path / "s.npz", h0=np.ones((2, 4), "float32"), c0=np.ones((2, 4), "float32"))
    assert "s.npz: holds h0, c0, which are not states of cell 'lstm'; its states are c, h" \
        in cli_refused("run", "lstm", "--sample", "-I", "3", "-H", "4", "--state",
                       tmp_path / "s.npz")
    # 5: nn.RNN(nonlinearity='relu'): a note for the tanh cell, exact with rnn_relu
    torch.manual_seed(8)
    module = torch.nn.RNN(3, 4, nonlinearity="relu")
    torch.save(module.state_dict(), tmp_path / "r.pt")
    x = inputs(5, 2, 3, "float32")
    np.save(tmp_path / "x.npy", x)
    noted = cli_run("run", "rnn", "--weights", tmp_path / "r.pt", "--input",
                    tmp_path / "x.npy", "--out", tmp_path / "o.npz")
    assert "assuming tanh, nn.RNN's default; for nonlinearity='relu' name the cell " \
        "rnn_relu" in noted.stderr
    quiet = cli_run("run", "rnn_relu", "--weights", tmp_path / "r.pt", "--input",
                    tmp_path / "x.npy", "--out", tmp_path / "o.npz")
    assert "assuming tanh" not in quiet.stderr
    np.testing.assert_allclose(np.load(tmp_path / "o.npz")["y"], torch_run(module, x)[0],
                               atol=2e-6)


def test_stack_shapes_states_and_lengths_through_the_command_line(tmp_path, cli_run,
                                                                  cli_refused):
    x = inputs(6, 3, 2, "float32")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "lengths.npy", np.array([6, 2, 4]))
    common = ["lstm", "-H", "4", "--layers", "2", "--direction", "bidirectional"]
    cli_run("run", *common, "--input", tmp_path / "x.npy", "--lengths",
            tmp_path / "lengths.npy", "--out", tmp_path / "a.npz")
    first = np.load(tmp_path / "a.npz")
    assert first["y"].shape == (6, 3, 8) and first["h"].shape == (4, 3, 4)
    assert not first["y"][2:, 1].any() and first["y"][:2, 1].all()  # zero past length 2
    cli_run("run", *common, "--input", tmp_path / "x.npy", "--state", tmp_path / "a.npz",
            "--out", tmp_path / "b.npz")  # an earlier run's states, y left
    np.save(tmp_path / "bad.npy", np.array([6, 0, 4]))
    assert "lengths holds 0 at index 1: every sequence needs at least one step" \
        in cli_refused("run", *common, "--input", tmp_path / "x.npy", "--lengths",
                       tmp_path / "bad.npy")
    np.save(tmp_path / "negative.npy", np.array([6, -1, 4]))
    assert "lengths holds -1 at index 1: a length counts steps: it is never negative" \
        in cli_refused("run", *common, "--input", tmp_path / "x.npy", "--lengths",
                       tmp_path / "negative.npy")
    np.save(tmp_path / "half.npy", np.array([6.0, 3.5, 1.0]))  # whole floats pass, 3.5 not
    assert "half.npy: lengths holds 3.5 at index 1: give whole numbers of steps" \
        in cli_refused("run", *common, "--input", tmp_path / "x.npy", "--lengths",
                       tmp_path / "half.npy")
    np.savez(tmp_path / "flat.npz", h=np.zeros((3, 4), "float32"))
    assert "state 'h' has shape (3, 4), expected (4, 3, 4)" in cli_refused(
        "run", *common, "--input", tmp_path / "x.npy", "--state", tmp_path / "flat.npz")
    params = cli_run("params", "lstm", "-I", "2", "-H", "4", "--layers", "2", "--direction",
                     "bidirectional")
    assert "l1_reverse.f.W_x  (4, 8)" in params.stdout
    np.save(tmp_path / "whole.npy", np.array([6.0, 2.0, 4.0]))  # whole floats, as in the API
    cli_run("run", *common, "--input", tmp_path / "x.npy", "--lengths",
            tmp_path / "whole.npy", "--out", tmp_path / "c.npz")
    assert np.array_equal(np.load(tmp_path / "c.npz")["y"], first["y"])


@pytest.mark.parametrize("layer", ["onnx reverse", "torch projected",
                                   "torch projected, 2 layers, bidirectional", "torch relu rnn"])
def test_a_model_s_weights_written_by_params_run_as_the_model(layer, tmp_path, cli_run):
    """What the names of ``params MODEL --out`` cannot say (a reverse layer, a projection's
    width) comes back from the record beside them: running them is running the model."""
    x = inputs(5, 2, 3, "float32")
    np.save(tmp_path / "x.npy", x)
    cell = "lstm"
    if layer == "onnx reverse":
        model, x, expected = onnx_layer("LSTM", "reverse", 0, seed=4, store=False)
        np.save(tmp_path / "x.npy", x)
        onnx.save(model, str(tmp_path / "m.onnx"))
        spec, y = tmp_path / "m.onnx", expected["Y"][:, 0]
    else:
        torch.manual_seed(5)
        module = {"torch projected": torch.nn.LSTM(3, 6, proj_size=2),
                  "torch projected, 2 layers, bidirectional": torch.nn.LSTM(
                      3, 6, 2, proj_size=2, bidirectional=True),
                  "torch relu rnn": torch.nn.RNN(3, 4, nonlinearity="relu")}[layer]
        cell = "rnn_relu" if "rnn" in layer else "lstm_proj"
        torch.save(module.state_dict(), tmp_path / "m.pt")
        spec, y = tmp_path / "m.pt", torch_run(module, x)[0]
    weights = tmp_path / "w.npz"
    if "rnn" in layer:  # the file does not say relu: no model, the cell named with it
        weights = spec
    else:
        cli_run("params", spec, "--out", weights)
    cli_run("run", cell, "--weights", weights, "--input", tmp_path / "x.npy",
            "--out", tmp_path / "y.npz")
    found = np.load(tmp_path / "y.npz")["y"]
    assert found.shape == y.shape
    np.testing.assert_allclose(found, y, atol=2e-6)


def test_a_record_beside_the_weights_refuses_a_cell_that_computes_otherwise(tmp_path,
                                                                            cli_run, cli_refused):
    model, x, _ = onnx_layer("LSTM", "forward", 0, seed=6, store=False,
                             activations=["Sigmoid", "Relu", "Tanh"])
    onnx.save(model, str(tmp_path / "m.onnx"))
    np.save(tmp_path / "x.npy", x)
    cli_run("params", tmp_path / "m.onnx", "--out", tmp_path / "w.npz")
    said = cli_refused("run", "lstm", "--weights", tmp_path / "w.npz", "--input",
                       tmp_path / "x.npy")
    assert "holds the weights of the LSTM node 'layer' in" in said
    assert "computes activations sigmoid, relu, tanh, and cell 'lstm' computes something " \
        "else" in said
    weights = dict(np.load(tmp_path / "w.npz"))
    good = json.loads(str(weights["__layer__"]))
    cell = good["cells"][0]
    edited = [{**good, "cells": [{**cell, "family": []}]},  # was a TypeError
              {**good, "cells": [{**cell, "activations": [["leaky_relu", {}]] * 3}]},
              {**good, "proj_size": 2},  # a projection its cell does not have
              {**good, "stores": "initial_h"}, {**good, "dtypes": ["object"]},
              {**good, "dtypes": [[1]]}, {**good, "stores": [[1]]}]  # were TypeErrors
    for record in (np.array('{"layers": 1}'), np.array(["x"]), np.array("not json"),
                   np.array("[" * 30000), *(np.array(json.dumps(e)) for e in edited)):
        np.savez(tmp_path / "bad.npz", **{**weights, "__layer__": record})
        assert "__layer__ is not the record of a layer as 'lstm-graph params' writes it" in \
            cli_refused("run", "lstm", "--weights", tmp_path / "bad.npz", "--input",
                        tmp_path / "x.npy")


def test_what_a_run_of_a_model_s_weights_must_be_told_is_said(tmp_path, cli_run):
    """The record says what the weights alone do not: the model reads x batch-first, it
    stores initial states and lengths, an nn.RNN's nonlinearity was assumed."""
    model, x, expected = onnx_layer("GRU", "forward", 1, seed=3, store=True)
    onnx.save(model, str(tmp_path / "m.onnx"))
    np.save(tmp_path / "x.npy", x)
    cli_run("params", tmp_path / "m.onnx", "--out", tmp_path / "w.npz")
    run = ["run", "gru_cho", "--weights", tmp_path / "w.npz", "--input", tmp_path / "x.npy"]
    said = cli_run(*run, "--out", tmp_path / "a.npz").stderr
    assert "is of a model that reads x batch-first, (B, T, I); this run reads x time-major" \
        in said
    assert f"holds the weights of {tmp_path / 'm.onnx'}, which also stores initial_h, " \
        "sequence_lens; only a run of that file uses them" in said
    said = cli_run(*run, "--batch-first", "--out", tmp_path / "b.npz").stderr
    assert "batch-first" not in said
    torch.save(torch.nn.RNN(3, 4).state_dict(), tmp_path / "r.pt")
    said = cli_run("run", "rnn", "--weights", tmp_path / "r.pt", "--sample", "--out",
                   tmp_path / "c.npz").stderr
    assert "do not record the nonlinearity: assuming tanh" in said
    assert "float64" not in said  # a float32 file: no rounding note
    assert cli_run("run", "rnn", "--weights", tmp_path / "r.pt", "--sample", "--dtype",
                   "float64", "--out", tmp_path / "d.npz").stderr.count("note:") == 1


def test_compiling_a_cell_from_python_warns_what_the_weights_file_says(tmp_path, cli_run):
    """From Python the notes were only in ``runner.notes``: x given (B, T, I) to a runner of
    a batch-first model's weights ran time-major without a word. The precision's note
    stays a note (float64 weights computed in float32 are the common case)."""
    model, _, _ = onnx_layer("GRU", "forward", 1, seed=3, store=False)  # reads x batch-first
    onnx.save(model, str(tmp_path / "m.onnx"))
    cli_run("params", tmp_path / "m.onnx", "--out", tmp_path / "g.npz")
    with pytest.warns(LstmGraphWarning, match="of a model that reads x "
                                               "batch-first"):
        runner = lstm_graph.load_cell("gru_cho").compile(weights=tmp_path / "g.npz")
    assert any("batch-first" in note for note in runner.notes)
    torch.save(torch.nn.RNN(3, 4).state_dict(), tmp_path / "r.pt")
    with pytest.warns(LstmGraphWarning, match="assuming tanh"):
        lstm_graph.load_cell("rnn").compile(weights=tmp_path / "r.pt")
    weights = lstm_graph.load_cell("gru").random_weights(3, 4, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lstm_graph.load_cell("gru_cho").compile(weights=tmp_path / "g.npz", batch_first=True)
        lstm_graph.load_cell("gru_cho").compile(weights=tmp_path / "g.npz", warn=False)
        done = lstm_graph.load_cell("gru").compile(
            weights={k: v.astype(np.float64) for k, v in weights.items()})
    assert any("rounds them" in note for note in done.notes)


def test_a_float64_model_runs_in_float64_from_python_unless_asked_otherwise(tmp_path):
    """``load_model(m).compile()`` ran a float64 model in float32 (7e-8 off the reference
    evaluator) with its note in ``runner.notes`` alone."""
    torch.manual_seed(0)
    module = torch.nn.GRU(3, 4, num_layers=2).double()
    torch.save(module.state_dict(), tmp_path / "g.pt")
    x = np.random.default_rng(0).standard_normal((6, 2, 3))
    expected = module(torch.from_numpy(x))[0].detach().numpy()
    model = lstm_graph.load_model(tmp_path / "g.pt")
    y, _ = model.compile()(x)
    assert y.dtype == np.float64 and np.abs(y - expected).max() < 1e-12
    assert model.compile(dtype=np.float32)(x)[0].dtype == np.float32  # NumPy's dtype too
    torch.save(module.float().state_dict(), tmp_path / "f.pt")
    assert lstm_graph.load_model(tmp_path / "f.pt").compile()(x)[0].dtype == np.float32
    assert lstm_graph.load_cell("gru").compile(input_size=3, hidden_size=4,
                                               dtype=np.float64).dtype == np.float64


def test_lengths_out_of_range_are_named_as_given():
    run = lstm_graph.load_cell("lstm").compile(input_size=2, hidden_size=3)
    x = inputs(5, 2, 2, "float32")
    with pytest.raises(lstm_graph.DataError, match=r"lengths holds 1e\+300 at index 0: x has "
                                                   "5 steps"):
        run(x, lengths=[1e300, 1.0])  # not int64's overflow (-9223372036854775808)
    with pytest.raises(lstm_graph.DataError, match="lengths holds -2 at index 1: a length "
                                                   "counts steps: it is never negative"):
        run(x, lengths=np.array([3.0, -2.0]))
    with pytest.raises(lstm_graph.DataError, match="lengths has dtype <U3; give whole numbers"):
        run(x, lengths="abc")  # was "lengths has shape ()"


def test_a_model_s_stored_lengths_longer_than_x_are_named_as_the_model_s(tmp_path, cli_refused):
    model, x, _ = onnx_layer("GRU", "forward", 0, seed=3, store=True)
    onnx.save(model, str(tmp_path / "m.onnx"))
    np.save(tmp_path / "x.npy", x[:2])
    stored = lstm_graph.load_model(tmp_path / "m.onnx").lengths
    assert stored is not None and stored.max() > 2
    assert "the model's stored sequence lengths do not fit x: lengths holds " \
        f"{stored.max()} at index {int(np.argmax(stored))}: x has 2 steps; give --lengths" \
        in cli_refused("run", tmp_path / "m.onnx", "--input", tmp_path / "x.npy")


def test_a_model_file_is_a_spec_for_every_command(tmp_path, cli_run, cli_fails):
    torch.manual_seed(10)
    torch.save(torch.nn.GRU(3, 4, 2, bidirectional=True).state_dict(), tmp_path / "g.pt")
    spec = tmp_path / "g.pt"
    assert "the nn.GRU (PyTorch): 2 layers, bidirectional, I=3, H=4; cell gru" in \
        cli_run("validate", spec).stdout
    assert "stage 1: r, z, a, b" in cli_run("schedule", spec).stdout
    cli_run("render", spec, "--style", "both", "--format", "dot", "--out", tmp_path / "d")
    assert "digraph" in (tmp_path / "d.pipe.dot").read_text()
    cli_run("params", spec, "--out", tmp_path / "w.npz")
    assert np.load(tmp_path / "w.npz")["l1_reverse.r.W_x"].shape == (4, 8)
    np.save(tmp_path / "x.npy", inputs(5, 2, 3, "float32"))
    run = ["--input", tmp_path / "x.npy"]
    cli_run("trace", spec, *run, "--out", tmp_path / "t.npz")
    traced = np.load(tmp_path / "t.npz")
    assert traced["l1_reverse.h"].shape == (5, 2, 4) and traced["final.h"].shape == (4, 2, 4)
    cli_run("grad", spec, *run, "--out", tmp_path / "gr.npz")
    assert np.load(tmp_path / "gr.npz")["initial.h"].shape == (4, 2, 4)
    assert "holds its weights and sizes: drop --hidden-size" in cli_fails(
        "run", spec, *run, "-H", "4", "--out", tmp_path / "y.npz", code=2)
    assert not (tmp_path / "y.npz").exists()


@pytest.mark.parametrize("save, words", [
    (lambda path: torch.save(torch.nn.LSTM(3, 4), path),
     "holds a whole pickled module or a TorchScript archive, not a state dict; lstm-graph "
     "never runs code from a file: save model.state_dict()"),
    (lambda path: torch.jit.save(torch.jit.script(torch.nn.LSTM(3, 4)), path),
     "holds a whole pickled module or a TorchScript archive, not a state dict"),
    (lambda path: torch.save({"model": torch.nn.LSTM(3, 4).state_dict(),
                              "args": argparse.Namespace(lr=1)}, path),
     "holds a pickled argparse.Namespace, which a weights-only load does not make (making "
     "it would run code); lstm-graph never runs code from a file: save tensors, numbers and "
     "text alone"),
    (lambda path: torch.save({k: v.to(torch.int8) for k, v in
                              torch.nn.LSTM(3, 4).state_dict().items()}, path),
     "weight_ih_l0 has dtype int8; a layer's parameters are floating-point numbers of a "
     "dtype NumPy has (float16, float32, float64): save tensor.float()"),
    (lambda path: torch.save({**torch.nn.LSTM(3, 4).state_dict(), "weight_ih_l0":
                              torch.nested.nested_tensor([torch.zeros(3), torch.zeros(4)])},
                             path),
     "weight_ih_l0 is a nested tensor; save it as a regular tensor"),
])
def test_files_that_are_not_state_dicts_are_refused_in_our_words(save, words, tmp_path,
                                                                  cli_refused):
    with warnings.catch_warnings():  # the nested tensor's prototype notice
        warnings.simplefilter("ignore")
        save(tmp_path / "m.pt")
    stderr = cli_refused("run", tmp_path / "m.pt", "--sample")
    assert words in stderr
    assert "weights_only" not in stderr and "\x1b" not in stderr



def test_a_stack_too_large_for_memory_is_refused_counting_every_unit(monkeypatch):
    """Each unit alone fits under the bound; the four units of a two-layer bidirectional
    LSTM and the layers' outputs between them do not: refused before any work."""
    x = np.zeros((200, 16, 8), "float32")
    monkeypatch.setenv("LSTM_GRAPH_MAX_BYTES", "3M")
    lstm = lstm_graph.load_cell("lstm")
    alone = lstm.compile(input_size=8, hidden_size=64)
    alone(x)
    stack = lstm.compile(input_size=8, hidden_size=64, layers=2, direction="bidirectional")
    assert sum(a.nbytes for a in stack.allocations(200, 16, np.dtype("float32"))) > 3 << 20
    with pytest.raises(lstm_graph.LstmGraphError, match=r"in all for this run, more than "
                                                        r"the limit of 3\.15 MB"):
        stack(x)


def _onnx_rnn_tanh(path: Path) -> Path:
    rng = np.random.default_rng(4)
    weights = {"W": rng.standard_normal((1, 4, 3)), "R": rng.standard_normal((1, 4, 4)),
               "B": rng.standard_normal((1, 8))}
    onnx.save(rnn_model("RNN", weights, 4, "float32"), path)
    return path


def test_an_onnx_files_weights_are_refused_by_a_cell_that_computes_otherwise(tmp_path,
                                                                             cli_refused):
    """An ONNX file records its activations: its weights in a cell with other ones (a tanh
    RNN's in rnn_relu) would be a silent wrong number (0.99 off onnxruntime)."""
    model = _onnx_rnn_tanh(tmp_path / "rnn.onnx")
    with pytest.raises(lstm_graph.WeightsError, match=r"the RNN node computes activations "
                                                      r"tanh, and cell 'rnn_relu' computes "
                                                      r"something else"):
        lstm_graph.load_cell("rnn_relu").compile(weights=model)
    assert "cell 'rnn_relu' computes something else" in cli_refused(
        "run", "rnn_relu", "--weights", model, "--sample")
    lstm_graph.load_cell("rnn").compile(weights=model)  # the cell it computes


LSTM_TEXT = (Path(lstm_graph.__file__).parent / "cells" / "lstm.cell").read_text()


@pytest.mark.parametrize("change", [("g = tanh(linear", "g = sigmoid(linear"),
                                    ("c = f * c", "c = 0.5 + f * c")])
def test_a_pytorch_layers_weights_are_refused_by_a_cell_that_computes_otherwise(
        tmp_path, cli_refused, change):
    """An nn.LSTM's state dict ran in a user's LSTM with a sigmoid candidate (0.746 off
    nn.LSTM) or a shifted memory (0.62 off), with no word: only ONNX files were held to the
    cell they compute. The built-in cells that compute it still take it."""
    torch.manual_seed(0)
    torch.save(torch.nn.LSTM(3, 4).state_dict(), tmp_path / "q.pt")
    old, new = change
    assert old in LSTM_TEXT
    (tmp_path / "mine.cell").write_text(LSTM_TEXT.replace(old, new, 1).replace(
        "cell lstm", "cell mine"))
    with pytest.raises(lstm_graph.WeightsError, match=r"q.pt: the nn.LSTM computes activations "
                                                      r"sigmoid, tanh, tanh, and cell 'mine' "
                                                      r"computes something else"):
        lstm_graph.load_cell(str(tmp_path / "mine.cell")).compile(weights=tmp_path / "q.pt")
    assert "cell 'mine' computes something else" in cli_refused(
        "run", tmp_path / "mine.cell", "--weights", tmp_path / "q.pt", "--sample")
    for name in ("lstm", "peephole_lstm"):
        lstm_graph.load_cell(name).compile(weights=tmp_path / "q.pt")
    torch.save(torch.nn.RNN(3, 4, nonlinearity="relu").state_dict(), tmp_path / "r.pt")
    for name in ("rnn", "rnn_relu"):  # a state dict does not say which: either, with a note
        lstm_graph.load_cell(name).compile(weights=tmp_path / "r.pt")


def test_states_and_lengths_that_are_inputs_of_an_onnx_model_are_named_in_a_note(tmp_path,
                                                                                 cli_run):
    model = _onnx_rnn_tanh(tmp_path / "rnn.onnx")  # initial_h is a graph input
    assert lstm_graph.load_model(model).notes == (
        "note: the initial_h ('initial_h') of the RNN node is an input of the model, not "
        "stored in it: give it with --state (an npz holding h), or the run uses zeros",)
    result = cli_run("run", model, "--sample", "--out", tmp_path / "y.npz")
    assert result.stderr.count("is an input of the model, not stored in it") == 1


def _lstm_storing(path: Path, stored: tuple[str, ...], rng: np.random.Generator,
                  batch: int = 2) -> None:
    """An ONNX LSTM (T=3, I=2, H=3) storing the initial states named in ``stored`` for
    ``batch`` sequences; the others are inputs of the model (the same weights and states
    for the same ``rng``)."""
    weights = random_onnx_weights("LSTM", 2, 3, False, rng)
    states = {name: rng.uniform(-1, 1, (1, batch, 3)) for name in ("initial_h", "initial_c")}
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "", "initial_h", "initial_c"],
                            ["Y", "Y_h", "Y_c"], hidden_size=3)
    inits = [numpy_helper.from_array(v.astype("float32"), k)
             for k, v in {**weights, **{k: states[k] for k in stored}}.items()]
    graph = helper.make_graph(
        [node], "cell", [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                         for n in ("X", *(k for k in states if k not in stored))],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("Y", "Y_h", "Y_c")],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    onnx.save(model, path)


@pytest.mark.parametrize("stored", [("initial_h",), ("initial_h", "initial_c")])
def test_a_state_file_replaces_only_the_stored_states_it_holds(stored, tmp_path, cli_run):
    """``--state`` holding c alone, as the note on an input ``initial_c`` asks, once dropped
    the stored ``initial_h`` too (0.33 off onnxruntime, exit 0): the model's other stored
    states stay, named in a note, and the run equals onnxruntime fed the same c."""
    model = tmp_path / "m.onnx"
    _lstm_storing(model, stored, np.random.default_rng(8))
    c = np.random.default_rng(9).uniform(-1, 1, (1, 2, 3)).astype("float32")
    x = inputs(3, 2, 2, "float32")
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "c.npz", c=c[0])
    result = cli_run("run", model, "--input", tmp_path / "x.npy", "--state",
                     tmp_path / "c.npz", "--out", tmp_path / "y.npz")
    assert f"note: state 'h' from the model, state 'c' from {tmp_path / 'c.npz'}" \
        in result.stderr
    session = onnxruntime.InferenceSession(str(model))
    fed = {"X": x, **({"initial_c": c} if len(stored) == 1 else {})}
    if len(stored) == 2:  # onnxruntime runs the model's own c: a model taking this c instead
        _lstm_storing(model, ("initial_h",), np.random.default_rng(8))
        session, fed = onnxruntime.InferenceSession(str(model)), {"X": x, "initial_c": c}
    y, h, c_final = session.run(None, fed)
    with np.load(tmp_path / "y.npz") as ours:
        np.testing.assert_allclose(ours["y"], y[:, 0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ours["c"], c_final[0], rtol=1e-5, atol=1e-6)


def test_one_sequence_takes_the_model_s_stored_state_beside_a_state_file(tmp_path, cli_run,
                                                                         cli_refused):
    """x of (T, I) has states without a batch axis; the stored h of (1, H) was handed on
    as it was beside the file's c of (H,), and refused naming an h the user never gave.
    Stored states for another batch size name the state to add to the file."""
    model = tmp_path / "m.onnx"
    _lstm_storing(model, ("initial_h",), np.random.default_rng(8), batch=1)
    c = np.random.default_rng(9).uniform(-1, 1, (1, 1, 3)).astype("float32")
    x = inputs(3, 1, 2, "float32")
    np.save(tmp_path / "x.npy", x[:, 0])
    np.savez(tmp_path / "c.npz", c=c[0, 0])
    cli_run("run", model, "--input", tmp_path / "x.npy", "--state", tmp_path / "c.npz",
            "--out", tmp_path / "y.npz")
    y, _, _ = onnxruntime.InferenceSession(str(model)).run(None, {"X": x, "initial_c": c})
    with np.load(tmp_path / "y.npz") as ours:
        assert ours["h"].shape == (3,)
        np.testing.assert_allclose(ours["y"], y[:, 0, 0], rtol=1e-5, atol=1e-6)
    np.save(tmp_path / "x3.npy", inputs(3, 3, 2, "float32"))
    np.savez(tmp_path / "c3.npz", c=np.zeros((3, 3), "float32"))
    assert "and x holds 3; give --state with h in it too" in cli_refused(
        "run", model, "--input", tmp_path / "x3.npy", "--state", tmp_path / "c3.npz")


def test_weights_of_another_precision_than_the_run_s_are_said(tmp_path, cli_run):
    """A float64 model run in float32 is rounded, a float16 one is not run as PyTorch runs
    it in float16: each said in a note (with no note before), as a float64 x is; a run in
    the weights' precision has none."""
    torch.manual_seed(0)
    torch.save(torch.nn.LSTM(3, 4).double().state_dict(), tmp_path / "l64.pt")
    torch.save(torch.nn.GRU(3, 4).half().state_dict(), tmp_path / "g16.pt")
    rounded = cli_run("run", tmp_path / "l64.pt", "--sample", "--out", tmp_path / "y.npz")
    assert f"note: {tmp_path / 'l64.pt'} holds float64 weights; computing in float32, " \
        "which rounds them (--dtype float64, dtype='float64', keeps them)" in rounded.stderr
    kept = cli_run("run", tmp_path / "l64.pt", "--sample", "--dtype", "float64", "--out",
                   tmp_path / "y.npz")
    assert "note" not in kept.stderr
    half = cli_run("run", "gru", "--weights", tmp_path / "g16.pt", "--sample", "--out",
                   tmp_path / "y.npz")
    assert half.stderr.count("note:") == 1 and "holds float16 weights; computing in " \
        "float32" in half.stderr
    assert lstm_graph.load_model(tmp_path / "l64.pt").compile().notes == ()  # in float64
    runner = lstm_graph.load_model(tmp_path / "l64.pt").compile(dtype="float32")
    assert runner.notes == (f"note: {tmp_path / 'l64.pt'} holds float64 weights; computing "
                            "in float32, which rounds them (--dtype float64, "
                            "dtype='float64', keeps them)",)


def test_a_batch_major_model_exports_time_major_and_the_check_agrees(tmp_path, cli_run):
    """An ONNX model with layout=1 (a batch-first runner) once failed export's own check,
    which fed it time-major x: the export is time-major, said in a note, and checked."""
    rng = np.random.default_rng(5)
    model = tmp_path / "l1.onnx"
    onnx.save(rnn_model("LSTM", random_onnx_weights("LSTM", 3, 4, False, rng), 4, "float32",
                        layout=1), model)
    result = cli_run("export", model, "--format", "onnx", "--out", tmp_path / "out.onnx")
    assert "is batch-major (x of shape (B, T, I)); the exported model is time-major" \
        in result.stderr
    runner = lstm_graph.load_cell("gru").compile(input_size=3, hidden_size=4, seed=1,
                                                 batch_first=True)
    runner.export_onnx(tmp_path / "gru.onnx")
    x = inputs(5, 2, 3, "float32")
    session = onnxruntime.InferenceSession(str(tmp_path / "gru.onnx"))
    (y, *_) = session.run(None, {"x": x})
    np.testing.assert_allclose(y, runner(np.swapaxes(x, 0, 1))[0].swapaxes(0, 1), rtol=1e-5,
                               atol=1e-6)


def test_a_stacks_weights_are_weighed_together_before_any_is_drawn(monkeypatch, cli_refused):
    """16 units of 48 MB each once went ahead under a 500 MB bound (4 GB resident)."""
    monkeypatch.setenv("LSTM_GRAPH_MAX_BYTES", "500M")
    with pytest.raises(lstm_graph.LstmGraphError, match=r"in all for the weights of 8 layers, "
                                                        r"bidirectional with I=8, H=1000"):
        lstm_graph.load_cell("lstm").compile(input_size=8, hidden_size=1000, layers=8,
                                             direction="bidirectional")
    assert "more than the limit of 524 MB" in cli_refused(
        "run", "lstm", "-H", "1000", "--layers", "8", "--direction", "bidirectional",
        "--sample", env={"LSTM_GRAPH_MAX_BYTES": "500M"})


@pytest.mark.parametrize("digits", ["100000000", "9" * 5000])
def test_a_layer_number_past_the_most_layers_is_refused_before_any_layer_is_made(
        tmp_path, digits, cli_refused):
    state = torch.nn.LSTM(3, 4).state_dict()
    state[f"weight_ih_l{digits}"] = state[f"weight_hh_l{digits}"] = state["weight_ih_l0"]
    torch.save(state, tmp_path / "deep.pt")
    stderr = cli_refused("run", tmp_path / "deep.pt", "--sample")
    assert f"deep.pt: the layer has the key weight_ih_l{digits[:40]}" in stderr
    assert "layers, more than the 64 lstm-graph runs" in stderr and len(stderr) < 400


def test_a_file_that_is_not_a_pytorch_file_is_called_unreadable(tmp_path, cli_refused):
    (tmp_path / "junk.pt").write_text("garbage\n")
    stderr = cli_refused("run", "lstm", "--sample", "--weights", tmp_path / "junk.pt")
    assert stderr == f"{tmp_path / 'junk.pt'}: not a readable PyTorch file (neither a " \
        "torch.save archive nor a pickle that torch.load reads with weights only)\n"


def test_grad_of_one_sequence_with_a_length_takes_the_whole_last_step(tmp_path, cli_run):
    """Without --grad-output the loss is the sum of each sequence's last step: for one
    sequence (T, I), the whole row of its last step (one unit of it was seeded)."""
    x = inputs(6, 1, 3, "float64")
    np.save(tmp_path / "x2.npy", x[:, 0])
    np.save(tmp_path / "x3.npy", x)
    np.save(tmp_path / "len.npy", np.array([4]))
    for name in ("x2", "x3"):
        cli_run("grad", "lstm", "--input", tmp_path / f"{name}.npy", "-H", "4", "--dtype",
                "float64", "--lengths", tmp_path / "len.npy", "--out", tmp_path / f"g{name}.npz")
    with np.load(tmp_path / "gx2.npz") as one, np.load(tmp_path / "gx3.npz") as batched:
        np.testing.assert_allclose(one["x"], batched["x"][:, 0], rtol=1e-12, atol=1e-15)
    runner = lstm_graph.load_cell("lstm").compile(input_size=3, hidden_size=4, seed=0,
                                                  dtype="float64")
    grad_y = np.zeros((6, 1, 4))
    grad_y[3] = 1
    with np.load(tmp_path / "gx3.npz") as batched:
        np.testing.assert_allclose(batched["x"], runner.grad(x, grad_y, lengths=[4]).x,
                                   rtol=1e-10)


def test_a_cell_without_parameters_stacks_exports_and_takes_empty_weights(tmp_path):
    """Nothing to size it by: the weights hold nothing, the sizes and the stack are as
    asked (a stack of it was a traceback, its own empty weights file refused)."""
    cell = lstm_graph.compile_source("cell n\ninput x\nstate h\noutput h\n"
                                     "h = tanh(h[t-1] + 1) * 0.5\n", "n.cell")
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype("float32")
    stacked = cell.compile(input_size=3, hidden_size=4, layers=2, direction="bidirectional")
    y, final = stacked(x)
    assert y.shape == (5, 2, 8) and final["h"].shape == (4, 2, 4)
    stacked.export_onnx(tmp_path / "n.onnx")
    np.savez(tmp_path / "none.npz")
    again = cell.compile(weights=tmp_path / "none.npz", input_size=3, hidden_size=4,
                         layers=2, direction="bidirectional")
    np.testing.assert_array_equal(again(x)[0], y)
    with pytest.raises(lstm_graph.DataError, match="do not show the hidden size; give "
                       "hidden_size"):
        cell.compile(weights=tmp_path / "none.npz", input_size=3)


def test_a_cell_whose_values_are_named_as_layers_reads_its_own_weights(tmp_path):
    """The finding: a value named l1 has parameters l1.W_x, …, which were read as layer 1
    of a stack: params wrote them, and run --weights refused them."""
    text = "input x\nstate h\noutput h\nl1 = linear(x, h[t-1])\nl0 = tanh(l1)\nh = l0\n"
    cell = lstm_graph.compile_source(text, "l1.cell")
    first = cell.compile(input_size=3, hidden_size=4, seed=2)
    np.savez(tmp_path / "w.npz", **first.weights)
    again = cell.compile(weights=tmp_path / "w.npz")
    assert again.stack.single
    x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype("float32")
    np.testing.assert_array_equal(again(x)[0], first(x)[0])


def test_a_model_s_runner_uses_the_states_and_lengths_it_stores(tmp_path):
    """The finding: load_model(m).compile()(x) started from zeros and ran every sequence
    whole (0.65 off onnxruntime), where 'run m.onnx' used what the model stores."""
    import onnxruntime
    from test_export_onnx import stored_lstm

    path = stored_lstm(tmp_path, {"initial_h": np.full((1, 2, 4), 0.5, "float32"),
                                  "sequence_lens": np.array([3, 1], "int32")})
    x = np.random.default_rng(1).standard_normal((4, 2, 3)).astype("float32")
    want = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"X": x})
    runner = lstm_graph.load_model(path).compile()
    y, final = runner(x)
    np.testing.assert_allclose(y, want[0].transpose(0, 2, 1, 3).reshape(4, 2, 4), atol=1e-6)
    np.testing.assert_allclose(final["h"], want[1][0], atol=1e-6)
    given, _ = runner(x, {"h": np.zeros((2, 4), "float32")}, lengths=[4, 4])  # the caller's
    assert not np.allclose(given, y)
    with pytest.raises(lstm_graph.LstmGraphError, match=r"the model stores the initial h for "
                       r"2 sequences \(of shape \(2, 4\)\), and x holds 3; give state="):
        runner(np.zeros((4, 3, 3), "float32"))


def test_a_parametrized_weight_in_a_state_dict_is_refused_not_left_out(tmp_path):
    """The finding: nn.LSTM(num_layers=2, bias=False) with weight_norm on layer 1 loaded
    as one layer (0.36 off), its parametrized keys passed over."""
    torch = pytest.importorskip("torch")
    from torch.nn.utils.parametrizations import weight_norm

    layer = torch.nn.LSTM(3, 4, num_layers=2, bias=False)
    weight_norm(layer, "weight_hh_l1")
    torch.save(layer.state_dict(), tmp_path / "wn.pt")
    with pytest.raises(lstm_graph.LstmGraphError, match="holds 'parametrizations.weight_hh_l1."
                       "original0', a recurrent weight kept as the parts of a parametrization"):
        lstm_graph.load_model(tmp_path / "wn.pt")


def test_a_model_s_notes_are_warnings_from_python(tmp_path):
    torch = pytest.importorskip("torch")
    state = {f"rnn.{k}": v for k, v in torch.nn.GRU(3, 4).state_dict().items()}
    torch.save({**state, "fc.weight": torch.zeros(1, 4)}, tmp_path / "gru.pt")
    with pytest.warns(LstmGraphWarning, match="its 1 other entry is not run"):
        lstm_graph.load_model(tmp_path / "gru.pt").compile()


@pytest.mark.parametrize("module", ["RNN", "RNNCell"])
def test_an_nn_rnn_file_alone_is_no_model_its_nonlinearity_unsaid(tmp_path, module,
                                                                   cli_run, cli_fails):
    """A state dict does not record nonlinearity='relu': a relu RNN's file ran as tanh with
    a note, exit 0, 0.4 off. Named with its cell it runs exactly."""
    torch.manual_seed(0)
    layer = getattr(torch.nn, module)(3, 4, nonlinearity="relu")
    torch.save(layer.state_dict(), tmp_path / "r.pt")
    with pytest.raises(lstm_graph.WeightsError, match="do not record the nonlinearity"):
        lstm_graph.load_model(tmp_path / "r.pt")
    for command in (["run", tmp_path / "r.pt", "--sample", "--out", tmp_path / "y.npz"],
                    ["render", tmp_path / "r.pt", "--out", tmp_path / "r"],
                    ["export", tmp_path / "r.pt", "--format", "onnx", "--out",
                     tmp_path / "r.onnx"]):
        assert f"name the cell with them, rnn --weights {tmp_path / 'r.pt'} (tanh, nn.RNN's " \
            f"default) or rnn_relu --weights {tmp_path / 'r.pt'} (nonlinearity='relu')" in \
            cli_fails(*command)
    x = inputs(5, 2, 3, "float32")
    y, _ = lstm_graph.load_cell("rnn_relu").compile(weights=tmp_path / "r.pt")(x)
    with torch.no_grad():
        h, expected = torch.zeros(2, 4), []
        for step in x:
            out = layer(torch.from_numpy(step)[None] if module == "RNN" else
                        torch.from_numpy(step), h[None] if module == "RNN" else h)
            h = out[1][0] if module == "RNN" else out
            expected.append(h.numpy())
    np.testing.assert_allclose(y, np.stack(expected), atol=2e-6)


def test_a_checkpoint_s_other_modules_are_named_as_not_run(tmp_path, cli_run):
    """The finding: an LSTM among an Embedding and a Linear ran alone without a word,
    where an ONNX model's other nodes are said."""
    torch = pytest.importorskip("torch")
    model = torch.nn.ModuleDict({"emb": torch.nn.Embedding(10, 3),
                                 "lstm": torch.nn.LSTM(3, 4), "fc": torch.nn.Linear(4, 2)})
    torch.save({"model": model.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    done = cli_run("run", tmp_path / "ckpt.pt", "--sample", "--out", tmp_path / "y.npz")
    assert f"note: running nn.LSTM 'model/lstm' of {tmp_path / 'ckpt.pt'} alone; its 4 other " \
        "entries are not run (model/emb.weight, model/fc.weight, model/fc.bias, …)" \
        in done.stderr


def test_a_state_dict_of_numpy_arrays_is_said_to_hold_arrays(tmp_path, cli_fails):
    torch = pytest.importorskip("torch")
    torch.save({"weight_ih_l0": np.zeros((16, 3), "float32")}, tmp_path / "np.pt")
    assert "np.pt: holds NumPy arrays, not tensors, which a weights-only load does not " \
        "read" in cli_fails("run", tmp_path / "np.pt", "--sample", "--out", tmp_path / "y.npz")


@pytest.mark.parametrize("batch_first", [False, True])
def test_nan_past_a_sequence_length_is_not_read_so_not_refused(batch_first):
    """PyTorch's packed sequences never read x past a sequence's length, nor a gradient of
    y there: NaN padding was refused (naming a position no step reads); now such runs and
    gradients equal PyTorch's. NaN a step reads is still refused, at the caller's index
    (a batch-first x's was given as the time-major copy's: (2, 1, 0) for x[1, 2, 0])."""
    torch.manual_seed(8)
    module = torch.nn.LSTM(3, 4, 2, bidirectional=True, batch_first=batch_first).double()
    runner = lstm_graph.load_cell("lstm").compile(weights=module.state_dict(),
                                                  dtype="float64", batch_first=batch_first)
    lengths = np.array([5, 2, 4])
    clean = inputs(5, 3, 3, "float64")
    read = np.arange(5)[:, None, None] < lengths[None, :, None]
    padded = np.where(read, clean, np.nan)
    grad_y = np.where(read, np.random.default_rng(9).standard_normal((5, 3, 8)), np.nan)
    if batch_first:
        clean, padded, grad_y = (np.ascontiguousarray(a.swapaxes(0, 1))
                                 for a in (clean, padded, grad_y))
    with torch.no_grad():
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            torch.from_numpy(clean), torch.as_tensor(lengths), batch_first=batch_first,
            enforce_sorted=False)
        expected, _ = torch.nn.utils.rnn.pad_packed_sequence(
            module(packed)[0], batch_first=batch_first, total_length=5)
    y, _ = runner(padded, lengths=lengths)
    np.testing.assert_allclose(y, expected.numpy(), rtol=1e-10, atol=1e-12)
    found = runner.grad(padded, grad_y, lengths=lengths)
    same = runner.grad(clean, np.nan_to_num(grad_y, nan=0.0), lengths=lengths)
    np.testing.assert_array_equal(found.x, same.x)
    for name, value in same.weights.items():
        np.testing.assert_array_equal(found.weights[name], value, err_msg=name)
    wrong = padded.copy()
    wrong[1, 1] = np.nan  # step 1 of sequence 1 (either layout) is read
    wrong[(0, 2, 0) if batch_first else (2, 0, 0)] = np.inf  # so is sequence 0's step 2
    at = "(0, 2, 0)" if batch_first else "(1, 1, 0)"
    with pytest.raises(lstm_graph.DataError, match=re.escape(f"x holds NaN or infinity, "
                                                             f"first at index {at}")):
        runner(wrong, lengths=lengths)
    wrong_grad = np.nan_to_num(grad_y, nan=0.0)
    wrong_grad[1, 1, 3] = np.nan
    with pytest.raises(lstm_graph.DataError, match=re.escape("grad_y holds NaN or infinity, "
                                                             "first at index (1, 1, 3)")):
        runner.grad(padded, wrong_grad, lengths=lengths)
