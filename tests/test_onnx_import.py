"""ONNX models as exporters write them are read exactly or refused: ours (each parameter
stored under its own name, joined by Concat and Unsqueeze; stacks with their layers
reshaped between them) and PyTorch's (gates reordered by Slice and Concat, initial states
made as zeros shaped after the input, batch_first as Transposes). What is read is run
and compared with the model's own run in onnxruntime, an independent implementation,
or, for our exports, with the runner that wrote them."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import lstm_graph

onnx = pytest.importorskip("onnx")
helper = onnx.helper


def _export(tmp_path, cell: str, layers: int = 1, direction: str = "forward"):
    runner = lstm_graph.load_cell(cell).compile(input_size=3, hidden_size=4, seed=0,
                                                layers=layers, direction=direction)
    path = tmp_path / f"{cell}.onnx"
    runner.export_onnx(path)
    return runner, path


@pytest.mark.parametrize("cell,layers,direction", [
    ("lstm", 1, "forward"), ("peephole_lstm", 1, "forward"), ("gru", 1, "reverse"),
    ("gru_cho", 1, "forward"), ("rnn", 1, "bidirectional"), ("lstm", 2, "forward"),
    ("lstm", 3, "bidirectional"), ("gru", 2, "bidirectional")])
def test_our_exports_read_back_as_the_runner_that_wrote_them(tmp_path, cell, layers,
                                                             direction):
    runner, path = _export(tmp_path, cell, layers, direction)
    model = lstm_graph.load_model(path)
    assert (model.stack.layers, model.stack.direction) == (layers, direction)
    x = np.random.default_rng(1).standard_normal((6, 2, 3)).astype("float32")
    want_y, want_final = runner(x)
    y, final = model.compile()(x)
    assert np.array_equal(y, want_y)
    assert final.keys() == want_final.keys()
    assert all(np.array_equal(final[k], want_final[k]) for k in final)


def _torch_export(tmp_path, module, x, name: str):
    torch = pytest.importorskip("torch")
    path = tmp_path / f"{name}.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's advice on batch sizes and its future
        torch.onnx.export(module.eval(), (torch.from_numpy(x),), str(path), dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "a", 1: "b"}})
    return path


@pytest.mark.parametrize("kind,kwargs", [
    ("LSTM", {"num_layers": 2}), ("LSTM", {"num_layers": 2, "bidirectional": True}),
    ("LSTM", {"num_layers": 2, "batch_first": True}),
    ("GRU", {"num_layers": 2, "bidirectional": True}), ("RNN", {"num_layers": 3})])
def test_pytorch_exports_of_stacks_run_as_onnxruntime_runs_them(tmp_path, kind, kwargs):
    torch = pytest.importorskip("torch")
    onnxruntime = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    module = getattr(torch.nn, kind)(3, 5, **kwargs)
    x = np.random.default_rng(2).standard_normal((4, 7, 3)).astype("float32")
    path = _torch_export(tmp_path, module, x, kind)
    model = lstm_graph.load_model(path)
    directions = 2 if kwargs.get("bidirectional") else 1
    assert (model.stack.layers, model.stack.directions) == (kwargs["num_layers"], directions)
    assert model.batch_first == kwargs.get("batch_first", False)
    x = np.random.default_rng(3).standard_normal((2, 9, 3)).astype("float32")  # other T, B
    y, final = model.compile()(x)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"x": x})  # output, h_n (, c_n): nn.LSTM's order
    np.testing.assert_allclose(y, outputs[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(final["h"], outputs[1], rtol=0, atol=1e-6)
    if kind == "LSTM":
        np.testing.assert_allclose(final["c"], outputs[2], rtol=0, atol=1e-6)


def _layer_input(model, k: int) -> str:
    return [n for n in model.graph.node if n.op_type == "LSTM"][k].input[0]


def _refused(model, tmp_path) -> str:
    path = tmp_path / "changed.onnx"
    onnx.save(model, str(path))
    with pytest.raises(lstm_graph.WeightsError) as refused:
        lstm_graph.load_model(path)
    return str(refused.value)


def test_layers_joined_by_anything_but_a_stacks_reshaping_are_refused(tmp_path):
    _, path = _export(tmp_path, "lstm", 2, "bidirectional")
    model = onnx.load(str(path))
    upper = next(n for n in model.graph.node if n.op_type == "LSTM" and "l1" in n.name)
    upper.input[0], source = "between.relu", upper.input[0]
    model.graph.node.append(helper.make_node("Relu", [source], ["between.relu"]))
    assert "which are not one stack of layers" in _refused(model, tmp_path)
    model = onnx.load(str(path))  # directions not interleaved: a Transpose left out
    transpose = next(n for n in model.graph.node if n.op_type == "Transpose"
                     and n.output[0] == "l0.Y.tbdh")
    transpose.attribute[0].ints[:] = [0, 1, 2, 3]
    assert "through Transpose, Reshape, which does not reshape it as a stack's layers do" \
        in _refused(model, tmp_path)


def test_a_weight_computed_by_arithmetic_is_refused_and_says_which_node(tmp_path):
    _, path = _export(tmp_path, "lstm")
    model = onnx.load(str(path))
    node = next(n for n in model.graph.node if n.op_type == "LSTM")
    node.input[1], source = "W.doubled", node.input[1]
    model.graph.node.insert(0, helper.make_node("Mul", [source, "two"], ["W.doubled"],
                                                name="double"))
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.float32(2), "two"))
    assert "the W ('W.doubled') of the LSTM node 'LSTM:Y' is not stored in the model, and " \
        "the Mul node 'double' computes it" in _refused(model, tmp_path)


def test_initial_states_made_as_zeros_are_zeros_and_any_other_made_state_is_refused(
        tmp_path):
    torch = pytest.importorskip("torch")
    module = torch.nn.LSTM(3, 4)
    path = _torch_export(tmp_path, module, np.zeros((2, 2, 3), "float32"), "lstm")
    assert lstm_graph.load_model(path).state == {}
    model = onnx.load(str(path))
    fill = next(n for n in model.graph.node if n.op_type == "ConstantOfShape")
    del fill.attribute[:]
    fill.attribute.append(helper.make_attribute(
        "value", onnx.numpy_helper.from_array(np.ones(1, "float32"))))
    refusal = _refused(model, tmp_path)
    assert "initial_h" in refusal and "the ConstantOfShape node" in refusal
