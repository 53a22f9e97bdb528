"""``export --format onnx``: one model that onnx.checker accepts and onnxruntime runs, equal to
``run`` at any T and B; ONNX's own operator exactly where the cell is that operator (decided
from the graph: near misses get a Scan), a Scan of the step from the op table otherwise."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx.reference import ReferenceEvaluator
from onnx_models import random_onnx_weights

import lstm_graph
from lstm_graph.export import onnx_model
from lstm_graph.export.fused import match

#: What each built-in cell runs as.
BUILTINS = {"lstm": "LSTM", "peephole_lstm": "LSTM", "gru": "GRU", "gru_cho": "GRU",
            "rnn": "RNN", "rnn_relu": "RNN", "coupled_lstm": "Scan", "lstm_proj": "Scan"}
SIZES = [(5, 2), (9, 3)]

#: A cell of every kind of op: each activation with numbers, constants, a unary minus, an
#: expression operand of a linear, a peephole on a new value, an output that is no state.
EVERYTHING = """\
cell everything
input x
state c, h
output y
k = hard_sigmoid(linear(x, h[t-1]), 0.3, 0.4)
e = linear(x)
u = leaky_relu(linear(x, k * h[t-1]), 0.15) + elu(e, 0.7)
v = thresholded_relu(linear(h[t-1], peep(c[t-1])), 0.05) - softsign(u) * 0.5
c = k * c[t-1] + (1 - k) * clip(u + softplus(v), 2.5)
w = scaled_tanh(linear(x, h[t-1], peep(c)), 1.5, 0.5)
h = affine(w, 0.5, 0.1) * tanh(c) + -relu(v) * 0.25
y = sigmoid(h) * 2
"""

#: An LSTM written otherwise: other names, other order, operands swapped. Exactly ONNX's.
RENAMED_LSTM = """\
cell renamed
input u
state hx, cx
output hx
gates lstm: i = ingate, f = forgetgate, g = cellgate, o = outgate
outgate = sigmoid(linear(hx[t-1], u))
cellgate = tanh(linear(u, hx[t-1]))
ingate = sigmoid(linear(u, hx[t-1]))
forgetgate = sigmoid(linear(u, hx[t-1]))
cx = cellgate * ingate + cx[t-1] * forgetgate
hx = tanh(cx) * outgate
"""

LSTM_LINES = {
    "f": "f = sigmoid(linear(x, h[t-1]))",
    "i": "i = sigmoid(linear(x, h[t-1]))",
    "g": "g = tanh(linear(x, h[t-1]))",
    "o": "o = sigmoid(linear(x, h[t-1]))",
    "c": "c = f * c[t-1] + i * g",
    "h": "h = o * tanh(c)",
}


def lstm_like(gates="i, f, g, o", **lines) -> str:
    body = {**LSTM_LINES, **lines}
    return "\n".join(["input x", "state c, h", "output h", f"gates lstm: {gates}",
                      *body.values()]) + "\n"


#: Cells that look like ONNX's LSTM or GRU but compute something else: each must get a Scan.
NEAR_MISSES = {
    "output_valve_reads_new_c": lstm_like(o="o = sigmoid(linear(x, h[t-1], peep(c)))"),
    "gates_line_swaps_i_and_f": lstm_like(gates="i = f, f = i, g, o"),
    "relu_output": lstm_like(h="h = o * relu(c)"),
    "forget_bias_constant": lstm_like(f="f = sigmoid(linear(x, h[t-1]) + 1)"),
    "memory_reads_new_h": lstm_like(c="c = f * c[t-1] + i * g * h[t-1]"),
    # ONNX's LSTM, but its state named h plays the operator's c: a reader of the operator
    # (lstm-graph's own) gave each final state under the other's name (h84)
    "states_named_as_each_others_roles": "\n".join([
        "input x", "state h, c", "output c", "gates lstm: i, f, g, o",
        *(f"{g} = {act}(linear(x, c[t-1]))" for g, act in
          (("i", "sigmoid"), ("f", "sigmoid"), ("g", "tanh"), ("o", "sigmoid"))),
        "h = f * h[t-1] + i * g", "c = o * tanh(h)"]) + "\n",
    "gru_update_swapped": """\
input x
state h
output h
gates gru: r, z, n = a + b
r = sigmoid(linear(x, h[t-1]))
z = sigmoid(linear(x, h[t-1]))
a = linear(x)
b = linear(h[t-1])
n = tanh(a + r * b)
h = z * n + (1 - z) * h[t-1]
""",
}


def sequences(input_size, dtype="float32"):
    rng = np.random.default_rng(3)
    return [rng.standard_normal((t, b, input_size)).astype(dtype) for t, b in SIZES]


def onnxruntime_run(path, x):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"x": x})))


def assert_model_equals_runner(path, runner, tolerance, dtype="float32"):
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= 17
    for x in sequences(runner.input_size, dtype):
        got = onnxruntime_run(path, x)
        y, final = runner(x)
        assert got["y"].shape == y.shape
        np.testing.assert_allclose(got["y"], y, rtol=0, atol=tolerance)
        for state, value in final.items():
            np.testing.assert_allclose(got[f"final_{state}"], value, rtol=0, atol=tolerance)
    return model


def runs_as(model) -> set[str]:
    return {n.op_type for n in model.graph.node} & {"LSTM", "GRU", "RNN", "Scan"}


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_each_builtin_cell_exports_to_a_model_that_onnxruntime_runs_as_the_cell(tmp_path, name):
    runner = lstm_graph.load_cell(name).compile(input_size=3, hidden_size=5, seed=2,
                                                      executor="numpy")
    checked = runner.export_onnx(tmp_path / "m.onnx")
    assert checked.startswith("checked in onnxruntime")
    model = assert_model_equals_runner(tmp_path / "m.onnx", runner, 1e-5)
    assert runs_as(model) == {BUILTINS[name]}
    inputs = [i.name for i in model.graph.input]
    assert inputs == ["x"]
    x_dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in x_dims] == ["T", "B", 3]
    assert {i.name for i in model.graph.initializer} == set(runner.weights)
    assert [o.name for o in model.graph.output] == \
        ["y", *(f"final_{s}" for s in runner.cell.graph.states)]


@pytest.mark.parametrize("name, layers, direction", [("lstm", 1, "forward"),
                                                    ("gru", 2, "bidirectional"),
                                                    ("rnn_relu", 1, "reverse")])
def test_scan_writes_an_operator_cell_as_a_scan_that_keeps_nan_in_onnxruntime(
        tmp_path, name, layers, direction, cli_run):
    """onnxruntime's fused kernels give numbers for NaN in x; a Scan of the cell keeps NaN,
    and equals the cell elsewhere."""
    runner = lstm_graph.load_cell(name).compile(input_size=3, hidden_size=4, seed=0,
                                                layers=layers, direction=direction)
    runner.export_onnx(tmp_path / "m.onnx", scan=True)
    model = assert_model_equals_runner(tmp_path / "m.onnx", runner, 1e-5)
    assert runs_as(model) == {"Scan"}
    x = np.random.default_rng(1).standard_normal((4, 2, 3)).astype("float32")
    x[1, 0, 0] = np.nan
    y, _ = runner(x, allow_nonfinite=True)
    got = onnxruntime_run(tmp_path / "m.onnx", x)["y"]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(y))
    assert np.isnan(y).any() and not np.isnan(y[:, 1]).any()
    out = cli_run("export", name, "-I", "3", "-H", "4", "--layers", layers, "--direction",
                  direction, "--format", "onnx", "--scan", "--out", tmp_path / "c.onnx").stdout
    assert "a Scan over the cell's step" in out
    with pytest.raises(lstm_graph.WeightsError, match="it is lstm-graph's export of a cell as "
                       "a Scan over its step .*, which is not read back: run the cell itself"):
        lstm_graph.load_model(tmp_path / "c.onnx")  # it said only which nodes it holds


@pytest.mark.parametrize("text", [EVERYTHING, RENAMED_LSTM, *NEAR_MISSES.values()],
                         ids=["everything", "renamed_lstm", *NEAR_MISSES])
def test_user_cells_export_and_only_an_exact_operator_cell_gets_the_operator(tmp_path, text):
    cell = lstm_graph.compile_source(text, "user.cell")
    runner = cell.compile(input_size=4, hidden_size=3, seed=5, executor="numpy")
    runner.export_onnx(tmp_path / "m.onnx")
    model = assert_model_equals_runner(tmp_path / "m.onnx", runner, 1e-5)
    assert runs_as(model) == ({"LSTM"} if text is RENAMED_LSTM else {"Scan"})


def test_a_renamed_lstm_maps_its_own_states_onto_the_operators():
    fused = match(lstm_graph.compile_source(RENAMED_LSTM, "renamed.cell"))
    assert fused is not None and fused.states == {"c": "cx", "h": "hx"}


@pytest.mark.parametrize("name, layers, direction", [
    ("lstm", 2, "bidirectional"), ("gru", 1, "reverse"), ("coupled_lstm", 2, "bidirectional"),
    ("rnn_relu", 3, "forward"), ("peephole_lstm", 1, "reverse")])
def test_stacks_and_directions_export_with_states_in_pytorchs_order(tmp_path, name, layers,
                                                                    direction):
    runner = lstm_graph.load_cell(name).compile(input_size=3, hidden_size=4, seed=1,
                                                layers=layers, direction=direction,
                                                executor="numpy")
    runner.export_onnx(tmp_path / "m.onnx")
    assert_model_equals_runner(tmp_path / "m.onnx", runner, 1e-5)
    got = onnxruntime_run(tmp_path / "m.onnx", sequences(3)[0])
    units = layers * (2 if direction == "bidirectional" else 1)
    assert got["final_h"].shape == ((units, 2, 4) if units > 1 else (2, 4))


@pytest.mark.parametrize("text", [None, EVERYTHING], ids=["peephole_lstm", "everything"])
def test_float64_models_scan_and_equal_the_cell_to_1e10(tmp_path, text):
    cell = lstm_graph.load_cell("peephole_lstm") if text is None else \
        lstm_graph.compile_source(text, "everything.cell")
    runner = cell.compile(input_size=3, hidden_size=4, seed=1, dtype="float64",
                          executor="numpy")
    runner.export_onnx(tmp_path / "m.onnx")
    model = assert_model_equals_runner(tmp_path / "m.onnx", runner, 1e-10, "float64")
    assert runs_as(model) == {"Scan"}  # onnxruntime's LSTM has no float64 kernel
    x = sequences(3, "float64")[1]
    y = ReferenceEvaluator(model).run(None, {"x": x})[0]
    np.testing.assert_allclose(y, runner(x)[0], rtol=0, atol=1e-10)


def test_the_export_command_from_params_weights_equals_run(tmp_path, monkeypatch, cli_run):
    """The harness's way: weights from params, a model from export, y from run."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.cell").write_text(EVERYTHING)
    x = sequences(4)[1]
    np.save("x.npy", x)
    for spec in ("peephole_lstm", "mine.cell"):
        cli_run("params", spec, "-I", "4", "-H", "3", "--out", "w.npz")
        done = cli_run("export", spec, "--weights", "w.npz", "--format", "onnx", "--out",
                       "out/m.onnx")
        assert "opset 17" in done.stdout and "wrote out/m.onnx" in done.stderr
        cli_run("run", spec, "--weights", "w.npz", "--input", "x.npy", "--out", "y.npz")
        want = np.load("y.npz")
        got = onnxruntime_run(tmp_path / "out" / "m.onnx", x)
        np.testing.assert_allclose(got["y"], want["y"], rtol=0, atol=1e-5)
        for state in ("c", "h"):
            np.testing.assert_allclose(got[f"final_{state}"], want[state], rtol=0, atol=1e-5)


def test_export_takes_the_layers_options_and_random_weights(tmp_path, cli_run):
    done = cli_run("export", "gru", "-I", "3", "-H", "4", "--layers", "2", "--direction",
                   "bidirectional", "--format", "onnx", "--out", tmp_path / "m.onnx", "--json")
    assert '"runs_as": "GRU"' in done.stdout and '"layers": 2' in done.stdout
    runner = lstm_graph.load_cell("gru").compile(input_size=3, hidden_size=4, seed=0,
                                                 layers=2, direction="bidirectional")
    assert_model_equals_runner(tmp_path / "m.onnx", runner, 1e-5)


@pytest.mark.parametrize("args, message", [
    (["lstm", "-I", "3", "--format", "onnx", "--out", "m.onnx"], "--hidden-size"),
    (["lstm", "-I", "3", "-H", "4", "--format", "onnx", "--out", "m.py"], "name it m.onnx"),
    (["lstm", "-I", "3", "-H", "4", "--format", "tflite", "--out", "m.onnx"], "tflite"),
    (["lstm", "-I", "3", "-H", "4", "--format", "torch", "--scan", "--out", "m.py"],
     "--scan chooses how an ONNX model runs the cell"),
])
def test_export_usage_mistakes_exit_2_saying_what(tmp_path, monkeypatch, args, message,
                                                  cli_fails):
    monkeypatch.chdir(tmp_path)
    assert message in cli_fails("export", *args, code=2)
    assert not list(tmp_path.iterdir())


def test_weights_that_do_not_fit_the_layers_asked_are_wrong_usage(tmp_path, cli_run,
                                                                   cli_fails):
    weights = tmp_path / "w.npz"
    cli_run("params", "lstm", "-I", "3", "-H", "4", "--out", weights)
    assert f"{weights} holds 1 layer, forward; drop --layers 2" in cli_fails(
        "export", "lstm", "--weights", weights, "--layers", "2", "--format", "onnx", "--out",
        tmp_path / "m.onnx", code=2)
    assert not (tmp_path / "m.onnx").exists()


def test_a_model_that_would_differ_from_the_cell_is_not_written(tmp_path, monkeypatch):
    runner = lstm_graph.load_cell("lstm").compile(input_size=4, hidden_size=4, seed=1)
    real = onnx_model.build

    def wrong(r, scan):  # a bug in the exporter, simulated: the operator's gate order swapped
        model = real(r, scan)
        for node in model.graph.node:
            if node.op_type == "LSTM":
                node.input[1], node.input[2] = node.input[2], node.input[1]
        return model

    monkeypatch.setattr(onnx_model, "build", wrong)
    with pytest.raises(lstm_graph.LstmGraphError, match="differs from the cell's run"):
        runner.export_onnx(tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_a_pytorch_model_file_exports_as_its_cell_and_stack(tmp_path, cli_run, cli_fails):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    layer = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    torch.save(layer.state_dict(), tmp_path / "lstm.pt")
    done = cli_run("export", tmp_path / "lstm.pt", "--format", "onnx", "--out",
                   tmp_path / "m.onnx")
    assert "LSTM operator (2 layers, bidirectional)" in done.stdout
    x = sequences(3)[1]
    got = onnxruntime_run(tmp_path / "m.onnx", x)
    with torch.no_grad():
        y, (h, c) = layer(torch.from_numpy(x))
    np.testing.assert_allclose(got["y"], y.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(got["final_h"], h.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(got["final_c"], c.numpy(), rtol=0, atol=1e-5)
    assert "holds its weights and sizes" in cli_fails(
        "export", tmp_path / "lstm.pt", "-H", "4", "--format", "onnx", "--out",
        tmp_path / "n.onnx", code=2)
    assert not (tmp_path / "n.onnx").exists()


def test_a_cell_whose_run_overflows_exports_and_its_model_overflows_alike(tmp_path, cli_run):
    """The check before writing compares NaN and infinity by where they are, not by
    subtraction (inf - inf is NaN), and the cell's own overflow warning stays out of it."""
    cell = tmp_path / "ovf.cell"
    cell.write_text("input x\nstate h\noutput h\nh = h[t-1] * 1e20 + tanh(linear(x))\n")
    for fmt, out in (("onnx", tmp_path / "ovf.onnx"), ("torch", tmp_path / "d" / "ovf.py")):
        result = cli_run("export", cell, "-I", "3", "-H", "4", "--format", fmt, "--out", out)
        assert out.exists() and "warning" not in result.stderr


def stored_lstm(tmp_path, stored: dict[str, np.ndarray]):
    """An ONNX model of one LSTM (I = 3, H = 4) whose ``initial_h`` or ``sequence_lens`` is
    an initializer: a value the model file stores."""
    from onnx import TensorProto, helper, numpy_helper

    weights = random_onnx_weights("LSTM", 3, 4, False, np.random.default_rng(0))
    inputs = ["X", "W", "R", "B", "sequence_lens" if "sequence_lens" in stored else "",
              "initial_h" if "initial_h" in stored else ""]
    node = helper.make_node("LSTM", inputs, ["Y", "Y_h", "Y_c"], hidden_size=4)
    tensors = [numpy_helper.from_array(v.astype("float32"), k) for k, v in weights.items()]
    tensors += [numpy_helper.from_array(v, k) for k, v in stored.items()]
    graph = helper.make_graph(
        [node], "stored", [helper.make_tensor_value_info("X", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("Y", "Y_h")],
        tensors)
    path = tmp_path / "stored.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), path)
    return path


@pytest.mark.parametrize("stored, what", [
    ({"initial_h": np.full((1, 2, 4), 0.5, "float32")}, "stores initial h"),
    ({"sequence_lens": np.array([3, 1], "int32")}, "stores sequence lengths")])
@pytest.mark.parametrize("fmt, out", [("onnx", "m.onnx"), ("torch", "m.py")])
def test_a_model_file_that_stores_states_or_lengths_is_not_exported(tmp_path, cli_fails, stored,
                                                                    what, fmt, out):
    """The finding: it was exported with a note, and the model's y differed from the file's
    by 0.118 (a stored initial_h) and 0.42 (stored lengths)."""
    model = stored_lstm(tmp_path, stored)
    message = cli_fails("export", model, "--format", fmt, "--out", tmp_path / out)
    assert f"stored.onnx {what}, which an exported model does not hold" in message
    assert "nothing was written" in message and f"params {model} --out w.npz" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stored.onnx"]
    runner = lstm_graph.load_model(model).compile()  # from Python, without its check too:
    twin = lstm_graph.load_model(model).compile(batch_first=True).time_major()  # lost them
    x = np.random.default_rng(5).standard_normal((4, 2, 3)).astype("float32")
    np.testing.assert_array_equal(twin(x)[0], runner(x)[0])  # it ran from zeros, whole
    for export in (runner.export_onnx, runner.export_torch, twin.export_onnx):  # it wrote,
        for check in (True, False):  # 0.118 off, unsaid
            with pytest.raises(lstm_graph.DataError, match=f"the model this runner was "
                               f"compiled from {what}, which an exported model does not hold"):
                export(tmp_path / out, check=check)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stored.onnx"]


@pytest.mark.parametrize("batch", [2, 3])
def test_a_model_file_whose_stored_initial_state_is_zeros_exports_as_it_runs(tmp_path,
                                                                            cli_run, batch):
    """Zeros stored for 3 sequences were refused: the export's check ran 2 sequences from
    the stored states ('x holds 2; give state=…', h84)."""
    model = stored_lstm(tmp_path, {"initial_h": np.zeros((1, batch, 4), "float32")})
    cli_run("export", model, "--format", "onnx", "--out", tmp_path / "m.onnx")
    cli_run("export", model, "--format", "torch", "--out", tmp_path / "m.py")
    x = np.random.default_rng(1).standard_normal((5, batch, 3)).astype("float32")
    want = onnxruntime_run_named(model, {"X": x})
    np.testing.assert_allclose(onnxruntime_run(tmp_path / "m.onnx", x)["y"],
                               want["Y"].transpose(0, 2, 1, 3).reshape(len(x), batch, 4),
                               rtol=0, atol=1e-6)
    lstm_graph.load_model(model).compile().export_onnx(tmp_path / "api.onnx")


def onnxruntime_run_named(path, feeds):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def test_weights_too_large_for_memory_are_refused_before_they_are_drawn(tmp_path, cli_fails,
                                                                       monkeypatch):
    """The finding: -H 30000 drew 14 GB of weights (21 GB at the peak) before the refusal."""
    import lstm_graph.cell

    def drawn(*args, **kwargs):
        raise AssertionError("the weights were drawn before the refusal")

    monkeypatch.setattr(lstm_graph.cell, "random_weights", drawn)
    for fmt, out, what in (("onnx", "m.onnx", "ONNX"), ("torch", "m.py", "PyTorch")):
        message = cli_fails("export", "lstm", "-I", "3", "-H", "2000", "--format", fmt,
                            "--out", tmp_path / out, env={"LSTM_GRAPH_MAX_BYTES": "50M"})
        assert f"the weights as the {what} export copies them" in message
    assert list(tmp_path.iterdir()) == []


def test_a_model_the_evaluator_cannot_run_without_onnxruntime_is_not_written(tmp_path,
                                                                             monkeypatch):
    """The finding: without onnxruntime, rnn_relu (ONNX's RNN with Relu, which the onnx
    reference evaluator lacks) was written unchecked, exit 0, a note in its summary."""
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)  # import fails
    runner = lstm_graph.load_cell("rnn_relu").compile(input_size=3, hidden_size=4, seed=1)
    with pytest.raises(lstm_graph.LstmGraphError, match="cannot be checked: onnxruntime is "
                       "not installed, and the onnx reference evaluator cannot run it"):
        runner.export_onnx(tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
    assert runner.export_onnx(tmp_path / "m.onnx", scan=True) == \
        "checked in the onnx reference evaluator"
    assert runner.export_onnx(tmp_path / "n.onnx", check=False) == "not run"


def test_seed_with_weights_or_a_model_file_is_a_usage_error(tmp_path, cli_run, cli_fails):
    cli_run("params", "lstm", "-I", "3", "-H", "4", "--out", tmp_path / "w.npz")
    assert "--seed draws random weights, and --weights gives them: not both" in cli_fails(
        "export", "lstm", "--weights", tmp_path / "w.npz", "--seed", "5", "--format", "onnx",
        "--out", tmp_path / "m.onnx", code=2)
    model = stored_lstm(tmp_path, {})
    assert "holds its weights and sizes: drop --weights, -I, -H and --seed" in cli_fails(
        "export", model, "--seed", "5", "--format", "onnx", "--out", tmp_path / "m.onnx",
        code=2)
    summary = json.loads(cli_run("export", "lstm", "--weights", tmp_path / "w.npz", "--format",
                                 "onnx", "--out", tmp_path / "m.onnx", "--json").stdout)
    assert summary["checked"] is True and summary["checked_in"].startswith("onnxruntime ")


@pytest.mark.parametrize("xdg", [False, True])
def test_the_check_leaves_nothing_of_onnxruntimes_in_the_users_cache(tmp_path, xdg,
                                                                     cli_process):
    """The finding: importing onnxruntime for the check made Microsoft/DeveloperTools/
    .onnxruntime/ (a device id, a database) in ~/.cache (or $XDG_CACHE_HOME), and .ses
    (a session id) in $TMPDIR, which lstm-graph did not make; the bench's onnxruntime
    peer does the same import."""
    home, cache, temporary = tmp_path / "home", tmp_path / "xdg", tmp_path / "tmp"
    for folder in (home, cache, temporary):
        folder.mkdir()
    env = {"HOME": str(home), "LSTM_GRAPH_CACHE": str(tmp_path / "ours"),
           "TMPDIR": str(temporary)}
    if xdg:
        env["XDG_CACHE_HOME"] = str(cache)
    result = cli_process("export", "lstm", "-I", "2", "-H", "3", "--format", "onnx", "--out",
                         tmp_path / "a.onnx", cwd=tmp_path,
                         env={**env, **({} if xdg else {"XDG_CACHE_HOME": ""})})
    assert result.returncode == 0, result.stderr
    assert list(home.rglob("*")) == [] and list(cache.rglob("*")) == []
    assert list(temporary.rglob("*")) == []
