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


@pytest.mark.parametrize("kind,kwargs", [
    ("LSTM", {"num_layers": 2}), ("LSTM", {"num_layers": 3, "bidirectional": True}),
    ("GRU", {"num_layers": 2, "bidirectional": True, "batch_first": True}),
    ("RNN", {"num_layers": 3})])
def test_a_stack_exported_with_its_initial_states_as_inputs_takes_them_whole(tmp_path, kind,
                                                                             kwargs):
    """forward(x, (h0, c0)) of nn.LSTM(num_layers=2): PyTorch slices h0 per layer, and the
    model was refused ('computed from h0, an input of the model, by nodes between them').
    The model's h0 is the stack's own (L·D, B, H) state: --state gives it whole."""
    torch = pytest.importorskip("torch")
    onnxruntime = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    module = getattr(torch.nn, kind)(3, 5, **kwargs).eval()
    rows = kwargs["num_layers"] * (2 if kwargs.get("bidirectional") else 1)
    names = ["h0", "c0"] if kind == "LSTM" else ["h0"]

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = module

        def forward(self, x, *states):
            return self.rnn(x, tuple(states) if kind == "LSTM" else states[0])

    x = np.random.default_rng(2).standard_normal((4, 7, 3)).astype("float32")
    batch = 4 if kwargs.get("batch_first") else 7
    states = [np.random.default_rng(k).standard_normal((rows, batch, 5)).astype("float32")
              for k in range(len(names))]
    path = tmp_path / "m.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Model(), (torch.from_numpy(x), *map(torch.from_numpy, states)),
                          str(path), dynamo=False, input_names=["x", *names],
                          dynamic_axes={"x": {0: "a", 1: "b"},
                                        **{n: {1: "a" if kwargs.get("batch_first") else "b"}
                                           for n in names}})
    with pytest.warns(lstm_graph.errors.LstmGraphWarning, match="the initial_h of every "
                      "layer is its part of 'h0', an input of the model"):
        runner = lstm_graph.load_model(path).compile()
    given = dict(zip(["h", "c"], states))
    y, final = runner(x, given)
    outputs = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"x": x, **dict(zip(names, states))})
    np.testing.assert_allclose(y, outputs[0], rtol=0, atol=1e-6)
    for k, name in enumerate(given):
        np.testing.assert_allclose(final[name], outputs[1 + k], rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind,kwargs", [
    ("LSTM", {"num_layers": 2}), ("LSTM", {"num_layers": 2, "bidirectional": True}),
    ("LSTM", {"num_layers": 2, "batch_first": True}),
    ("GRU", {"num_layers": 2, "bidirectional": True}), ("RNN", {"num_layers": 2})])
def test_pytorch_dynamo_exports_of_stacks_run_as_onnxruntime_runs_them(tmp_path, kind,
                                                                       kwargs):
    """torch.onnx.export's default exporter, given dynamic sizes, computes the reshaping
    between layers from the values' shapes (Shape, Slice, Mul, Concat into Reshape) and
    the initial states as a stored 0 Expanded after the input. Its model still fixes some
    sizes (an output Reshape may hold T), so it runs at those."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    onnxruntime = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    module = getattr(torch.nn, kind)(3, 5, **kwargs).eval()
    x = np.random.default_rng(6).standard_normal((4, 2, 3)).astype("float32")
    path = tmp_path / "dynamo.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sizes = {0: torch.export.Dim("T", min=2), 1: torch.export.Dim("B", min=2)}
        torch.onnx.export(module, (torch.from_numpy(x),), str(path), dynamo=True,
                          input_names=["x"], dynamic_shapes=(sizes,), verbose=False)
    if kind == "RNN":  # written step by step (MatMul, Tanh), no RNN node: refused
        with pytest.raises(lstm_graph.WeightsError, match="export it with dynamo=False"):
            lstm_graph.load_model(path)
        return
    model = lstm_graph.load_model(path)
    assert model.stack.layers == 2 and model.batch_first == kwargs.get("batch_first", False)
    with warnings.catch_warnings():  # the nodes around the layers, said (and tested) elsewhere
        warnings.simplefilter("ignore", lstm_graph.errors.LstmGraphWarning)
        y, final = model.compile()(x)
    outputs = onnxruntime.InferenceSession(
        str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(y, outputs[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(final["h"], outputs[1], rtol=0, atol=1e-6)
    if kind == "LSTM":
        np.testing.assert_allclose(final["c"], outputs[2], rtol=0, atol=1e-6)


def test_a_reshape_whose_shape_is_computed_from_shapes_is_checked_on_the_probes(tmp_path):
    """The dynamo exporter's join, written by hand: (T, B, D·H) from Shape, Slices and a
    Mul of the transposed output's own shape. The same join multiplying D by D (a wrong
    width) is refused, and so is one that adds: sizes made with Add, Sub or Div could
    match the probes alone (onnx_graph.SHAPE_OPS)."""
    onnxruntime = pytest.importorskip("onnxruntime")

    def model(arithmetic: str, right: str = "h"):
        ints = {name: onnx.numpy_helper.from_array(np.array(v, "int64"), name)
                for name, v in (("i0", [0]), ("i1", [1]), ("i2", [2]), ("i3", [3]),
                                ("i4", [4]))}
        nodes = [
            helper.make_node("LSTM", ["x", "l0.W", "l0.R", "l0.B"], ["Y0"], hidden_size=4,
                             direction="bidirectional"),
            helper.make_node("Transpose", ["Y0"], ["Yt"], perm=[0, 2, 1, 3]),
            helper.make_node("Shape", ["Yt"], ["shape"]),
            helper.make_node("Slice", ["shape", "i0", "i2"], ["tb"]),
            helper.make_node("Slice", ["shape", "i2", "i3"], ["d"]),
            helper.make_node("Slice", ["shape", "i3", "i4"], ["h"]),
            helper.make_node(arithmetic, ["d", right], ["dh"]),
            helper.make_node("Concat", ["tb", "dh"], ["target"], axis=0),
            helper.make_node("Reshape", ["Yt", "target"], ["X1"]),
            helper.make_node("LSTM", ["X1", "l1.W", "l1.R", "l1.B"], ["Y1"], hidden_size=4,
                             direction="bidirectional")]
        weights = [onnx.numpy_helper.from_array(np.concatenate([w, w * 0.5]).astype(
            "float32"), w_name) for w_name, w in (
            (t.name, onnx.numpy_helper.to_array(t)) for t in
            [*_weights("l0.", 3), *_weights("l1.", 8)])]
        graph = helper.make_graph(
            nodes, "dynamo-like", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT,
                                                                 None)],
            [helper.make_tensor_value_info("Y1", onnx.TensorProto.FLOAT, None)],
            [*ints.values(), *weights])
        return _write(tmp_path, helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", 17)]))

    path = model("Mul")
    x = np.random.default_rng(7).standard_normal((5, 2, 3)).astype("float32")
    y, _ = lstm_graph.load_model(path).compile()(x)
    (want,) = onnxruntime.InferenceSession(
        str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(y, want.transpose(0, 2, 1, 3).reshape(5, 2, 8), rtol=0,
                               atol=1e-6)
    with pytest.raises(lstm_graph.WeightsError, match="which does not reshape it as a "
                       "stack's layers do"):
        lstm_graph.load_model(model("Mul", "d"))
    with pytest.raises(lstm_graph.WeightsError, match="which are not one stack of layers"):
        lstm_graph.load_model(model("Add"))


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


def _weights(prefix: str, inputs: int, hidden: int = 4) -> list:
    rng = np.random.default_rng(len(prefix) + inputs)
    return [onnx.numpy_helper.from_array(
        (rng.standard_normal(shape) * 0.5).astype("float32"), prefix + name)
        for name, shape in (("W", (1, 4 * hidden, inputs)), ("R", (1, 4 * hidden, hidden)),
                            ("B", (1, 8 * hidden)))]


def _stack(change: str):
    """A 2-layer LSTM stack as onnx.helper writes it (l0's Y squeezed into l1), with one
    thing changed that a stack lstm-graph runs must not have."""
    axes = onnx.numpy_helper.from_array(np.array([1], "int64"), "axes")
    extra = {"clip": {"clip": 0.5}, "direction": {"direction": "reverse"}}.get(change, {})
    l0 = helper.make_node("LSTM", ["x", "l0.W", "l0.R", "l0.B"], ["Y0", "Yh0"], name="l0",
                          hidden_size=4)
    l1 = helper.make_node("LSTM", ["X1", "l1.W", "l1.R", "l1.B"], ["Y1", "Yh1"], name="l1",
                          hidden_size=4, **extra)
    nodes = [l0, helper.make_node("Squeeze", ["Y0", "axes"], ["X1"]), l1]
    inits = [axes, *_weights("l0.", 3), *_weights("l1.", 4)]
    outputs = ["Y1"]
    if change == "lengths on one layer":
        l1.input.extend(["lens"])
        inits.append(onnx.numpy_helper.from_array(np.array([3, 2], "int32"), "lens"))
    if change == "a lower layer's output":
        outputs.append("X1")
    if change == "initial states of two batches":
        l0.input.extend(["", "h0"])
        l1.input.extend(["", "h1"])
        inits += [onnx.numpy_helper.from_array(np.zeros(shape, "float32"), name)
                  for name, shape in (("h0", (1, 2, 4)), ("h1", (1, 3, 4)))]
    if change == "a cycle":  # W computed from itself: no valid model, but a file can say so
        l0.input[1] = "a"
        nodes += [helper.make_node("Identity", ["b"], ["a"]),
                  helper.make_node("Identity", ["a"], ["b"])]
    if change in ("a size used as an index", "a Squeeze without axes",
                  "a size computed from itself"):
        inits += [onnx.numpy_helper.from_array(np.array(v, "int64"), name)
                  for name, v in (("table", list(range(8))), ("rest", [-1, 4]))]
        first = {"a size used as an index": [helper.make_node("Shape", ["X0"], ["t"], end=1),
                                             helper.make_node("Gather", ["table", "t"],
                                                              ["steps"], axis=0)],
                 "a Squeeze without axes": [helper.make_node("Shape", ["X0"], ["steps"],
                                                             end=1)],
                 "a size computed from itself": [helper.make_node("Shape", ["X1"], ["steps"],
                                                                  end=1)]}[change]
        squeeze = helper.make_node("Squeeze", ["Y0"], ["X0"]) \
            if change == "a Squeeze without axes" else \
            helper.make_node("Squeeze", ["Y0", "axes"], ["X0"])
        nodes[1:2] = [squeeze, *first,
                      helper.make_node("Concat", ["steps", "rest"], ["target"], axis=0),
                      helper.make_node("Reshape", ["X0", "target"], ["X1"])]
    if change == "a value computed twice":
        nodes.append(helper.make_node("Identity", ["l0.W"], ["X1"]))
    if change == "an axis out of range":
        l0.input[1] = "W.sliced"
        inits += [onnx.numpy_helper.from_array(np.array([v], "int64"), name)
                  for name, v in (("start", 0), ("end", 1), ("axis", 3))]
        nodes.append(helper.make_node("Slice", ["l0.W", "start", "end", "axis"], ["W.sliced"]))
    if change == "a Concat that doubles its size 30 times":
        previous = "l0.W"
        for k in range(30):
            nodes.append(helper.make_node("Concat", [previous, previous], [f"c{k}"], axis=0))
            previous = f"c{k}"
        l0.input[1] = "W.cut"
        inits += [onnx.numpy_helper.from_array(np.array([v], "int64"), name)
                  for name, v in (("zero", 0), ("one", 1))]
        nodes.append(helper.make_node("Slice", [previous, "zero", "one", "zero"], ["W.cut"]))
    graph = helper.make_graph(
        nodes, "stack", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None) for o in outputs],
        inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_the_stack_built_for_the_refusals_below_runs_as_onnxruntime_runs_it(tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    path = tmp_path / "stack.onnx"
    onnx.save(_stack("nothing"), str(path))
    x = np.random.default_rng(4).standard_normal((5, 2, 3)).astype("float32")
    y, _ = lstm_graph.load_model(path).compile()(x)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(y, session.run(None, {"x": x})[0][:, 0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("change,words", [
    ("clip", "the LSTM node 'l1' has another cell than the first layer's"),
    ("direction", "the LSTM node 'l1' has another direction than the first layer's"),
    ("lengths on one layer", "its layers take different sequence_lens ('', 'lens')"),
    ("a lower layer's output", "the output of 'l0', below the LSTM node 'l1', is also an "
                               "output of the model ('X1')"),
    ("initial states of two batches", "the initial_h of 'l0' has shape (1, 2, 4) and that of "
                                      "'l1' (1, 3, 4)"),
    ("a cycle", "the model's nodes compute it from itself (a cycle)"),
    ("a value computed twice", "two of its nodes compute values of one name"),
    ("a size used as an index", "which are not one stack of layers"),
    ("a Squeeze without axes", "which are not one stack of layers"),
    ("a size computed from itself", "does not reshape it as a stack's layers do"),
    ("an axis out of range", "the Slice node (unnamed) has the axes [3], not distinct axes of "
                             "a tensor of rank 3"),
    ("a Concat that doubles its size 30 times", "where the model stores 1.24 kB: more than "
                                                "moving them makes")])
def test_what_a_stack_must_not_have_is_refused_before_anything_runs(tmp_path, change, words):
    with pytest.raises(lstm_graph.LstmGraphError) as refused:
        lstm_graph.load_model(_write(tmp_path, _stack(change)))
    assert words in str(refused.value)


def _write(tmp_path, model):
    path = tmp_path / "stack.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("before, words", [
    # arithmetic on the input: x was run as X, the model's Mul skipped (0.45 from onnxruntime)
    (lambda: [helper.make_node("Mul", ["x", "three"], ["x.in"], name="scale")],
     "the X of LSTM 'lstm' ('x.in') is made by Mul 'scale', not the model's input as it is"),
    # time reversed by a Slice: y 0.53 from onnxruntime
    (lambda: [helper.make_node("Slice", ["x", "end", "start", "axis", "back"], ["x.in"],
                               name="reverse")],
     "the X of LSTM 'lstm' ('x.in') is made by Slice 'reverse'"),
    # a flat (T·B, I) input reshaped to (T, B, I): run as one sequence of T·B steps
    (lambda: [helper.make_node("Reshape", ["x", "shape"], ["x.in"], name="unflatten")],
     "the model reshapes its input 'x' into the X of 'lstm' (Reshape 'unflatten') otherwise "
     "than by swapping time and batch"),
])
def test_a_model_that_computes_its_layers_input_is_refused_not_run_on_x_as_x(tmp_path,
                                                                            before, words):
    """Nodes before the first recurrent layer were left out with a note, x run as the
    layer's X: exit 0 and numbers that were not the model's."""
    lstm = helper.make_node("LSTM", ["x.in", "W", "R", "B"], ["Y"], hidden_size=4,
                            name="lstm")
    numbers = {"three": np.float32(3), "start": np.array([-1]), "end": np.array([-2**62]),
               "axis": np.array([0]), "back": np.array([-1]), "shape": np.array([5, 3, 3])}
    graph = helper.make_graph(
        [*before(), lstm], "computed", [helper.make_tensor_value_info(
            "x", onnx.TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, None)],
        [*_weights("", 3), *(onnx.numpy_helper.from_array(v, k) for k, v in numbers.items())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    said = _refused(model, tmp_path)
    assert words in said and "x is run as X itself, so the numbers would not be the " \
        "model's" in said


@pytest.mark.parametrize("kind,bidirectional", [("LSTM", False), ("LSTM", True),
                                                ("GRU", False), ("GRU", True)])
def test_one_layer_exported_by_dynamo_with_its_initial_states_takes_them(tmp_path, kind,
                                                                        bidirectional):
    """PyTorch's default exporter slices h0 for one layer too (Slice(h0, 0, D)): the
    model was refused ('computed from h0, an input of the model, by nodes between them'),
    where the same module of two layers ran."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    onnxruntime = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    module = getattr(torch.nn, kind)(3, 4, bidirectional=bidirectional).eval()
    rows = 2 if bidirectional else 1
    names = ["h0", "c0"] if kind == "LSTM" else ["h0"]

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = module

        def forward(self, x, h0, c0=None):
            return self.rnn(x, (h0, c0) if kind == "LSTM" else h0)

    x = np.random.default_rng(2).standard_normal((5, 2, 3)).astype("float32")
    states = [np.random.default_rng(k).standard_normal((rows, 2, 4)).astype("float32")
              for k in range(len(names))]
    path = tmp_path / "m.onnx"
    sizes = {"x": {0: torch.export.Dim("T"), 1: torch.export.Dim("B")}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Model(), (torch.from_numpy(x), *map(torch.from_numpy, states)),
                          str(path), dynamo=True, input_names=["x", *names], verbose=False,
                          dynamic_shapes={**sizes, **{n: {1: sizes["x"][1]} for n in names}})
    with pytest.warns(lstm_graph.errors.LstmGraphWarning, match=r"the initial_h of every "
                      r"layer is its part of 'h0', an input of the model, not stored in it: "
                      r"give it whole with --state \(an npz holding h: \(B, H\) for one layer "
                      r"of one direction, else the model's shape"):
        runner = lstm_graph.load_model(path).compile()
    given = {name: state if bidirectional else state[0]
             for name, state in zip(["h", "c"], states)}
    y, final = runner(x, given)
    outputs = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"x": x, **dict(zip(names, states))})
    np.testing.assert_allclose(y, outputs[0].reshape(y.shape), rtol=0, atol=1e-6)
    for k, name in enumerate(given):
        np.testing.assert_allclose(final[name], outputs[1 + k].reshape(final[name].shape),
                                   rtol=0, atol=1e-6)


def test_an_initial_state_sliced_from_an_input_is_refused_saying_what_can_run(tmp_path):
    """It said to give the state with --state, which could not work: only a state that is
    the node's own input, or the rows of one a stack's layer takes (rows 0 to D for one
    layer), is taken so; the second row is not."""
    cut = helper.make_node("Slice", ["h0", "one", "two", "zero"], ["h0.first"], name="cut")
    lstm = helper.make_node("LSTM", ["x", "W", "R", "B", "", "h0.first"], ["Y"],
                            hidden_size=4, name="lstm")
    numbers = {"zero": np.array([0]), "one": np.array([1]), "two": np.array([2])}
    graph = helper.make_graph(
        [cut, lstm], "sliced", [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
                                for n in ("x", "h0")],
        [helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, None)],
        [*_weights("", 3), *(onnx.numpy_helper.from_array(v, k) for k, v in numbers.items())])
    said = _refused(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
                    tmp_path)
    assert "the initial_h ('h0.first') of the LSTM node 'lstm' is computed from 'h0', an " \
        "input of the model, by nodes between them; lstm-graph reads an initial_h that the " \
        "model stores, makes as zeros, or takes as the node's own input (that one given " \
        "with --state (an npz of h)), and cannot run this one" in said


def test_a_model_of_an_opset_before_7_is_refused(tmp_path):
    """LSTM-1 (output_sequence, …) was read as the current operator."""
    lstm = helper.make_node("LSTM", ["x", "W", "R", "B"], ["Y"], hidden_size=4, name="old")
    graph = helper.make_graph(
        [lstm], "old", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, None)], _weights("", 3))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 5)])
    assert "is opset 5, whose LSTM operator predates the one lstm-graph reads (opset 7 and " \
        "later" in _refused(model, tmp_path)


def test_an_input_transposed_for_a_layer_of_layout_1_is_read_time_major(tmp_path):
    """The mirror of PyTorch's batch_first export: x is (T, B, I), a Transpose makes it
    (B, T, I) for a layout-1 LSTM. onnxruntime has no layout 1: the onnx package's
    reference evaluator runs the model."""
    from onnx.reference import ReferenceEvaluator

    swap = helper.make_node("Transpose", ["x"], ["x.bt"], perm=[1, 0, 2])
    lstm = helper.make_node("LSTM", ["x.bt", "W", "R", "B"], ["Y"], hidden_size=4, layout=1)
    graph = helper.make_graph(
        [swap, lstm], "swapped", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT,
                                                                None)],
        [helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, None)], _weights("", 3))
    path = _write(tmp_path, helper.make_model(graph,
                                              opset_imports=[helper.make_opsetid("", 17)]))
    model = lstm_graph.load_model(path)
    assert not model.batch_first
    x = np.random.default_rng(5).standard_normal((6, 2, 3)).astype("float32")
    y, _ = model.compile()(x)
    (want,) = ReferenceEvaluator(str(path)).run(None, {"x": x})  # (B, T, 1, H)
    np.testing.assert_allclose(y, want[:, :, 0].transpose(1, 0, 2), rtol=0, atol=1e-6)


@pytest.mark.parametrize("sliced", [False, True])
def test_zeros_of_another_size_than_the_node_s_states_are_refused(tmp_path, cli_refused,
                                                                  sliced):
    """The finding: an LSTM of H = 2 whose initial_c is zeros of shape (1, B, 4) ran, 0.22
    off the PyTorch module whose dynamo export writes it so (nn.LSTM(proj_size=2)), where
    onnxruntime refuses the model. Made as PyTorch makes them: ConstantOfShape of
    [1, batch, 4] (its first exporter), or Expand of a stored 0 sliced per layer (dynamo)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    tensors = [numpy_helper.from_array(rng.standard_normal((1, 8, 3)).astype("float32"), "W"),
               numpy_helper.from_array(rng.standard_normal((1, 8, 2)).astype("float32"), "R"),
               numpy_helper.from_array(np.array([1], np.int64), "one"),
               numpy_helper.from_array(np.array([0], np.int64), "zero"),
               numpy_helper.from_array(np.array([4], np.int64), "four"),
               numpy_helper.from_array(np.array(0, np.float32), "nought")]
    nodes = [helper.make_node("Shape", ["X"], ["batch"], start=1, end=2),
             helper.make_node("Concat", ["one", "batch", "four"], ["shape"], axis=0)]
    if sliced:
        nodes += [helper.make_node("Expand", ["nought", "shape"], ["all"]),
                  helper.make_node("Slice", ["all", "zero", "one", "zero"], ["c0"])]
    else:
        nodes.append(helper.make_node("ConstantOfShape", ["shape"], ["c0"], value=numpy_helper
                                      .from_array(np.array([0], np.float32))))
    nodes.append(helper.make_node("LSTM", ["X", "W", "R", "", "", "", "c0"], ["Y"],
                                  hidden_size=2, name="rnn"))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["t", "b", 3])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], tensors)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)]),
              tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", rng.standard_normal((5, 3, 3)).astype("float32"))
    assert "m.onnx: the initial_c ('c0') of the LSTM node 'rnn' is zeros of shape (1, ?, 4); " \
        "with R of shape (1, 8, 2) (LSTM, H=2) it must be (1, B, 2): the model does not run " \
        "as written" in cli_refused("run", tmp_path / "m.onnx", "--input", tmp_path / "x.npy")
