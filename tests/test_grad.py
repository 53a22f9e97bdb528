"""Gradients: against PyTorch's autograd, against finite differences, executors alike.

The loss is ``sum(grad_y · y) + Σ_s sum(grad_state[s] · final[s])``. PyTorch's
modules (and peephole equations written here in torch) are the independent
implementation; float64 central differences check random cells of every shape.
"""

from __future__ import annotations

import warnings

import array_api_strict as xps
import numpy as np
import pytest
import torch
from cellgen import valid_cells
from conftest import executor_params
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import lstm_graph
from lstm_graph.executors.buildcache import compiler
from lstm_graph.executors.interpreter import backward
from lstm_graph.formats.importers import GATE_ORDER, gate_params, stack

EXECUTORS = executor_params(["reference", "numpy", "native", "plan"])
SHAPES = [(1, 1, 3, 4), (5, 3, 4, 6), (9, 2, 7, 3)]  # T, B, I, H


def torch_gradients(module, x, h0, c0, grad_y, grad_h, grad_c):
    """PyTorch autograd of the same loss, and the module's stacked weight gradients."""
    module.zero_grad()
    x_t = torch.from_numpy(x).requires_grad_()
    h_t, c_t = torch.from_numpy(h0[None]).requires_grad_(), torch.from_numpy(c0[None]) \
        .requires_grad_()
    if isinstance(module, torch.nn.LSTM):
        y, (h_n, c_n) = module(x_t, (h_t, c_t))
        loss = (y * torch.from_numpy(grad_y)).sum() + (h_n[0] * torch.from_numpy(grad_h)).sum() \
            + (c_n[0] * torch.from_numpy(grad_c)).sum()
    else:
        y, h_n = module(x_t, h_t)
        loss = (y * torch.from_numpy(grad_y)).sum() + (h_n[0] * torch.from_numpy(grad_h)).sum()
    loss.backward()
    return {"x": x_t.grad.numpy(), "h": h_t.grad[0].numpy(),
            "c": c_t.grad[0].numpy() if c_t.grad is not None else None,
            "w_x": module.weight_ih_l0.grad.numpy(), "w_h": module.weight_hh_l0.grad.numpy(),
            "b_x": module.bias_ih_l0.grad.numpy(), "b_h": module.bias_hh_l0.grad.numpy()}


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("cell_name, module_cls", [("lstm", torch.nn.LSTM),
                                                   ("gru", torch.nn.GRU),
                                                   ("rnn", torch.nn.RNN)])
def test_gradients_equal_pytorch_autograd(cell_name, module_cls, shape, executor):
    steps, batch, input_size, hidden = shape
    torch.manual_seed(sum(shape))
    module = module_cls(input_size, hidden).double()
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal((steps, batch, input_size))
    h0, c0 = rng.standard_normal((batch, hidden)), rng.standard_normal((batch, hidden))
    grad_y = rng.standard_normal((steps, batch, hidden))
    grad_h, grad_c = rng.standard_normal((batch, hidden)), rng.standard_normal((batch, hidden))
    expected = torch_gradients(module, x, h0, c0, grad_y, grad_h, grad_c)

    cell = lstm_graph.load_cell(cell_name)
    run = cell.compile(weights=module.state_dict(), dtype="float64", executor=executor)
    states = {"h": h0, "c": c0} if cell_name == "lstm" else {"h": h0}
    finals = {"h": grad_h, "c": grad_c} if cell_name == "lstm" else {"h": grad_h}
    g = run.grad(x, grad_y, state=states, grad_state=finals)

    np.testing.assert_allclose(g.x, expected["x"], atol=1e-10)
    np.testing.assert_allclose(g.state["h"], expected["h"], atol=1e-10)
    if cell_name == "lstm":
        np.testing.assert_allclose(g.state["c"], expected["c"], atol=1e-10)
    family = cell_name
    params = gate_params(cell.graph, family, "test")
    w_x, w_h, b_x, b_h = stack(params, GATE_ORDER["torch", family], g.weights)
    np.testing.assert_allclose(w_x, expected["w_x"], atol=1e-10)
    np.testing.assert_allclose(w_h, expected["w_h"], atol=1e-10)
    np.testing.assert_allclose(b_x, expected["b_x"], atol=1e-10)
    # A gate with one bias here: PyTorch's two biases both get its gradient.
    single = np.concatenate([np.full(hidden, params[gate].b_h is None)
                             for gate in GATE_ORDER["torch", family]])
    np.testing.assert_allclose(np.where(single, b_x, b_h), expected["b_h"], atol=1e-10)
    np.testing.assert_allclose(g.y, module(torch.from_numpy(x), *(
        [(torch.from_numpy(h0[None]), torch.from_numpy(c0[None]))] if cell_name == "lstm"
        else [torch.from_numpy(h0[None])]))[0].detach().numpy(), atol=1e-12)


def peephole_lstm_in_torch(x, h, c, w):
    """ONNX LSTM with peepholes, written out here in torch (gates as in the ONNX operator)."""
    ys = []
    for t in range(x.shape[0]):
        i = torch.sigmoid(x[t] @ w["i.W_x"].T + h @ w["i.W_h"].T + w["i.p_c"] * c + w["i.b"])
        f = torch.sigmoid(x[t] @ w["f.W_x"].T + h @ w["f.W_h"].T + w["f.p_c"] * c + w["f.b"])
        g = torch.tanh(x[t] @ w["g.W_x"].T + h @ w["g.W_h"].T + w["g.b"])
        c = f * c + i * g
        o = torch.sigmoid(x[t] @ w["o.W_x"].T + h @ w["o.W_h"].T + w["o.p_c"] * c + w["o.b"])
        h = o * torch.tanh(c)
        ys.append(h)
    return torch.stack(ys), h, c


@pytest.mark.parametrize("executor", EXECUTORS)
def test_peephole_gradients_equal_autograd_of_the_onnx_equations(executor):
    cell = lstm_graph.load_cell("peephole_lstm")
    rng = np.random.default_rng(5)
    weights = cell.random_weights(4, 5, seed=3, dtype="float64")
    x = rng.standard_normal((6, 2, 4))
    h0, c0 = rng.standard_normal((2, 5)), rng.standard_normal((2, 5))
    grad_y, grad_c = rng.standard_normal((6, 2, 5)), rng.standard_normal((2, 5))
    w = {k: torch.from_numpy(v).requires_grad_() for k, v in weights.items()}
    x_t = torch.from_numpy(x).requires_grad_()
    h_t, c_t = torch.from_numpy(h0).requires_grad_(), torch.from_numpy(c0).requires_grad_()
    y, _, c_n = peephole_lstm_in_torch(x_t, h_t, c_t, w)
    ((y * torch.from_numpy(grad_y)).sum() + (c_n * torch.from_numpy(grad_c)).sum()).backward()

    g = cell.compile(weights=weights, dtype="float64", executor=executor).grad(
        x, grad_y, state={"h": h0, "c": c0}, grad_state={"c": grad_c})
    np.testing.assert_allclose(g.x, x_t.grad.numpy(), atol=1e-10)
    np.testing.assert_allclose(g.state["h"], h_t.grad.numpy(), atol=1e-10)
    np.testing.assert_allclose(g.state["c"], c_t.grad.numpy(), atol=1e-10)
    for name, tensor in w.items():
        np.testing.assert_allclose(g.weights[name], tensor.grad.numpy(), atol=1e-10,
                                   err_msg=name)


def bound(cell, weights, input_size, hidden, executor="reference"):
    """``cell`` compiled with ``weights`` in float64 (a cell may have no parameters)."""
    if not weights:
        return cell.compile(input_size=input_size, hidden_size=hidden, dtype="float64",
                            executor=executor)
    return cell.compile(input_size=input_size, weights=weights, dtype="float64",
                        executor=executor)


def loss_of(run, x, state, grad_y, grad_final):
    y, final = run(x, state, allow_nonfinite=True)
    return float(np.sum(grad_y * y) + sum(np.sum(grad_final[s] * final[s])
                                          for s in grad_final))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=valid_cells(), executor=st.sampled_from(
    ["reference", "numpy", *(["native"] if compiler() else [])]), seed=st.integers(0, 2**16))
def test_gradients_equal_central_differences_on_random_cells(source, executor, seed):
    cell = lstm_graph.compile_source(source, "random.cell")
    rng = np.random.default_rng(seed)
    steps, batch, input_size, hidden = 3, 2, 2, 3
    weights = cell.random_weights(input_size, hidden, seed=seed, dtype="float64")
    x = rng.standard_normal((steps, batch, input_size))
    state = {s: rng.standard_normal((batch, hidden)) for s in cell.graph.states}
    run = bound(cell, weights, input_size, hidden, executor)
    y, _ = run(x, state)
    grad_y = rng.standard_normal(y.shape)
    grad_final = {s: rng.standard_normal((batch, hidden)) for s in cell.graph.states}
    g = run.grad(x, grad_y, state=state, grad_state=grad_final)
    eps = 1e-6
    # Directional derivatives along random directions of x, the states and the weights.
    for _ in range(2):
        dx = rng.standard_normal(x.shape)
        ds = {s: rng.standard_normal(v.shape) for s, v in state.items()}
        dw = {k: rng.standard_normal(v.shape) for k, v in weights.items()}

        def moved(sign: float, dx=dx, ds=ds, dw=dw) -> float:
            shifted = bound(cell, {k: v + sign * eps * dw[k] for k, v in weights.items()},
                            input_size, hidden)
            return loss_of(shifted, x + sign * eps * dx,
                           {s: v + sign * eps * ds[s] for s, v in state.items()},
                           grad_y, grad_final)

        ahead, here, behind = moved(1.0), moved(0.0), moved(-1.0)
        numeric = (ahead - behind) / (2 * eps)
        # not where the loss has a kink or a jump along the direction (a random cell may
        # put thresholded_relu(x - (x - 0.25), 0.25) exactly at its threshold): there the
        # slopes on either side differ, and no derivative is defined to compare with
        assume(abs((ahead - here) - (here - behind)) / eps <= 1e-3 * max(1.0, abs(numeric)))
        analytic = float(np.sum(g.x * dx) + sum(np.sum(g.state[s] * ds[s]) for s in state)
                         + sum(np.sum(g.weights[k] * dw[k]) for k in weights))
        assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(numeric)), source


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=valid_cells(), seed=st.integers(0, 2**16), dtype=st.sampled_from(
    ["float32", "float64"]))
def test_the_compiled_backward_equals_the_reference_on_random_cells(source, seed, dtype):
    cell = lstm_graph.compile_source(source, "random.cell")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4, 3, 2)).astype(dtype)
    reference = cell.compile(input_size=2, hidden_size=3, seed=seed, dtype=dtype,
                             executor="reference")
    compiled = cell.compile(input_size=2, hidden_size=3, seed=seed, dtype=dtype,
                            executor="numpy")
    grad_y = rng.standard_normal(reference(x)[0].shape).astype(dtype)
    expected, ours = reference.grad(x, grad_y), compiled.grad(x, grad_y)
    tolerance = dict(rtol=1e-4, atol=1e-4) if dtype == "float32" else dict(rtol=1e-9,
                                                                           atol=1e-10)
    np.testing.assert_allclose(ours.x, expected.x, **tolerance, err_msg=source)
    np.testing.assert_allclose(ours.y, expected.y, **tolerance, err_msg=source)
    for name in expected.weights:
        np.testing.assert_allclose(ours.weights[name], expected.weights[name], **tolerance,
                                   err_msg=f"{name}\n{source}")
    for name in expected.state:
        np.testing.assert_allclose(ours.state[name], expected.state[name], **tolerance,
                                   err_msg=f"{name}\n{source}")


def test_the_reference_backward_stays_inside_the_array_api():
    cell = lstm_graph.load_cell("peephole_lstm")
    weights = cell.random_weights(3, 4, seed=1, dtype="float64")
    rng = np.random.default_rng(2)
    x, grad_y = rng.standard_normal((5, 2, 3)), rng.standard_normal((5, 2, 4))
    start = {s: np.zeros((2, 4)) for s in cell.graph.states}
    expected = backward(cell.schedule, np, weights, x, start, grad_y, {})
    strict = backward(cell.schedule, xps, {k: xps.asarray(v) for k, v in weights.items()},
                      xps.asarray(x), {k: xps.asarray(v) for k, v in start.items()},
                      xps.asarray(grad_y), {})
    np.testing.assert_allclose(np.asarray(strict.x), expected.x, rtol=1e-12)
    for name, value in expected.weights.items():
        np.testing.assert_allclose(np.asarray(strict.weights[name]), value, rtol=1e-12)


def test_float32_gradients_are_close_to_float64():
    cell = lstm_graph.load_cell("gru")
    rng = np.random.default_rng(0)
    x, grad_y = rng.standard_normal((20, 4, 3)), rng.standard_normal((20, 4, 5))
    g64 = cell.compile(input_size=3, hidden_size=5, dtype="float64").grad(x, grad_y)
    g32 = cell.compile(input_size=3, hidden_size=5, dtype="float32").grad(x, grad_y)
    assert g32.x.dtype == np.float32
    np.testing.assert_allclose(g32.x, g64.x, rtol=1e-4, atol=1e-5)


def test_a_grad_y_of_the_wrong_shape_says_what_it_should_be():
    run = lstm_graph.load_cell("lstm").compile(input_size=3, hidden_size=4)
    with pytest.raises(lstm_graph.DataError, match=r"grad_y has shape \(5, 2, 3\), expected "
                                                   r"\(5, 2, 4\)"):
        run.grad(np.zeros((5, 2, 3), "float32"), np.zeros((5, 2, 3), "float32"))
    with pytest.raises(lstm_graph.DataError, match="grad_state names 'q'"):
        run.grad(np.zeros((5, 2, 3), "float32"), np.zeros((5, 2, 4), "float32"),
                 grad_state={"q": np.zeros((2, 4))})


def test_a_grad_y_or_grad_state_holding_nan_is_refused_unless_allowed():
    run = lstm_graph.load_cell("lstm").compile(input_size=3, hidden_size=4)
    x, grad_y = np.zeros((5, 2, 3), "float32"), np.zeros((5, 2, 4), "float32")
    grad_y[1, 0, 2] = np.nan
    with pytest.raises(lstm_graph.DataError, match=r"grad_y holds NaN or infinity, first at "
                                                   r"index \(1, 0, 2\)"):
        run.grad(x, grad_y)
    grad_c = np.zeros((2, 4))
    grad_c[1, 3] = np.inf
    with pytest.raises(lstm_graph.DataError, match=r"grad_state\['c'\] holds NaN or infinity, "
                                                   r"first at index \(1, 3\)"):
        run.grad(x, np.zeros_like(grad_y), grad_state={"c": grad_c})
    assert np.isnan(run.grad(x, grad_y, allow_nonfinite=True).x).any()
    with warnings.catch_warnings():  # NumPy's overflow warning in the cast was shown first
        warnings.simplefilter("error")
        with pytest.raises(lstm_graph.DataError, match=r"grad_y holds 1e\+300 at index "
                                                       r"\(0, 0, 0\), too large for float32"):
            run.grad(x, np.full((5, 2, 4), 1e300))
    torch = pytest.importorskip("torch")  # PyTorch's tensors are taken as NumPy takes them
    as_tensor = run.grad(x, torch.ones(5, 2, 4), grad_state={"c": torch.ones(2, 4)})
    as_array = run.grad(x, np.ones((5, 2, 4)), grad_state={"c": np.ones((2, 4))})
    assert np.array_equal(as_tensor.x, as_array.x)


def test_a_masked_grad_y_or_grad_state_and_a_switch_that_is_no_bool_are_refused():
    """A masked grad_y was read with its masked-out numbers (x, state refuse a mask), and
    allow_nonfinite="no" turned the NaN check off."""
    run = lstm_graph.load_cell("lstm").compile(input_size=3, hidden_size=4)
    x, grad_y = np.zeros((5, 2, 3), "float32"), np.ones((5, 2, 4), "float32")
    masked = np.ma.masked_array(grad_y, mask=np.zeros_like(grad_y, bool))
    with pytest.raises(lstm_graph.DataError, match="grad_y is a masked array"):
        run.grad(x, masked)
    with pytest.raises(lstm_graph.DataError, match=r"grad_state\['c'\] is a masked array"):
        run.grad(x, grad_y, grad_state={"c": np.ma.masked_array(np.ones((2, 4)))})
    for call in (lambda: run.grad(x, grad_y, allow_nonfinite="no"),
                 lambda: run(x, allow_nonfinite="no"), lambda: run.trace(x, allow_nonfinite=1),
                 lambda: run.grad(x, grad_y, record="yes")):
        with pytest.raises(lstm_graph.DataError, match="it must be True or False"):
            call()


def test_a_gradient_that_overflows_on_the_way_back_is_said_unless_allowed():
    """grad gave NaN gradients of finite inputs and a finite run, without a word (the run's
    own overflow: test_robustness)."""
    run = lstm_graph.load_cell("lstm").compile(input_size=3, hidden_size=4, dtype="float32",
                                               executor="numpy")  # the runner's test: no C
    x = np.ones((4, 2, 3), "float32")
    with pytest.warns(lstm_graph.errors.LstmGraphWarning, match="the gradient holds NaN or "
                      "infinity from finite inputs and a finite run: the gradient of x first"):
        run.grad(x, np.full((4, 2, 4), 3e38, "float32"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run.grad(x, np.full((4, 2, 4), 3e38, "float32"), allow_nonfinite=True)
        run.grad(x, np.ones((4, 2, 4), "float32"))


def test_grad_refuses_a_parameter_named_as_an_initial_state_s_gradient(tmp_path, cli_fails):
    """A value named initial with a state b: its bias initial.b lost its place in grad's
    file to the initial value of b's gradient, exit 0."""
    cell = tmp_path / "init.cell"
    cell.write_text("cell initcell\ninput x\nstate b\noutput b\ninitial = linear(x, b[t-1])\n"
                    "b = tanh(initial)\n")
    said = cli_fails("grad", cell, "-H", "4", "--sample", "--out", tmp_path / "g.npz")
    assert "cell 'initcell' has a parameter named initial.b, the name under which grad " \
        "writes the gradient of the initial value of state 'b'; rename the value" in said
    assert not (tmp_path / "g.npz").exists()


def test_grad_command_writes_input_weight_and_initial_state_gradients(tmp_path, cli_run,
                                                                       cli_refused):
    cell = lstm_graph.load_cell("gru")
    weights = cell.random_weights(3, 4, seed=2)
    np.savez(tmp_path / "w.npz", **weights)
    x = np.random.default_rng(1).standard_normal((6, 2, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    cli_run("grad", "gru", "--weights", tmp_path / "w.npz", "--input", tmp_path / "x.npy",
            "--out", tmp_path / "g.npz")
    last = np.zeros((6, 2, 4), "float32")
    last[-1] = 1  # the default loss: the sum of the last step's output
    expected = cell.compile(weights=weights).grad(x, last)
    with np.load(tmp_path / "g.npz") as saved:
        assert sorted(saved.files) == sorted(["x", "initial.h", *weights])
        np.testing.assert_allclose(saved["x"], expected.x, rtol=1e-6)
        np.testing.assert_allclose(saved["b.W_h"], expected.weights["b.W_h"], rtol=1e-6)
    np.save(tmp_path / "gy.npy", np.ones((6, 2, 3), "float32"))
    assert "grad_output has shape (6, 2, 3), but y has shape (6, 2, 4)" in cli_refused(
        "grad", "gru", "--weights", tmp_path / "w.npz", "--input", tmp_path / "x.npy",
        "--grad-output", tmp_path / "gy.npy")


def test_each_executor_refuses_the_work_it_would_not_fit_naming_its_own_largest_array(
        monkeypatch):
    """The memory a gradient takes is each executor's own model: the native backward keeps
    a tape of what its VJPs read (7 of the LSTM's 13 values a step), the NumPy plan and
    the reference every value of every step."""
    monkeypatch.setenv("LSTM_GRAPH_MAX_BYTES", "40M")
    cell = lstm_graph.load_cell("lstm")
    x = np.zeros((2000, 8, 3), "float32")
    grad_y = np.zeros((2000, 8, 128), "float32")
    executors = ["numpy", "reference", *(["native"] if compiler() else [])]
    found = {}
    for executor in executors:
        run = cell.compile(input_size=3, hidden_size=128, executor=executor)
        with pytest.raises(lstm_graph.LstmGraphError, match="set by LSTM_GRAPH_MAX_BYTES") \
                as refused:
            run.grad(x, grad_y)
        found[executor] = str(refused.value)
    for executor in ("numpy", "reference"):
        assert found[executor].startswith("every value of every step (T·B rows) of shape "
                                          "(16000, 1664)")
    if compiler():
        assert found["native"].startswith("the tape (what backward reads, T·B rows) of shape "
                                          "(2001, 8, 896)")
        run = cell.compile(input_size=3, hidden_size=128, executor="native")
        run(x)  # a run keeps no tape: it fits
