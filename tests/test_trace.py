"""Traces: every assignment's value at every step, as each executor computes it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cellgen import valid_cells
from conftest import executor_params, needs_compiler
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lstm_graph
from lstm_graph.executors.buildcache import compiler
from lstm_graph.executors.contract import Spec
from lstm_graph.executors.cuda import CudaPlan, HostLauncher

EXECUTORS = executor_params(["numpy", "native"])
TOLERANCE = dict(rtol=1e-4, atol=1e-5)


def sigmoid(v):
    return 1 / (1 + np.exp(-v))


def test_an_lstm_trace_holds_its_gates_as_equations_written_by_hand_give_them():
    torch.manual_seed(1)
    module = torch.nn.LSTM(3, 5).double()
    x = np.random.default_rng(0).standard_normal((7, 2, 3))
    with torch.no_grad():
        y_torch, (h_n, c_n) = module(torch.from_numpy(x))
    trace = lstm_graph.load_cell("lstm").compile(weights=module.state_dict(),
                                                 dtype="float64").trace(x)
    w_ih, w_hh = module.weight_ih_l0.detach().numpy(), module.weight_hh_l0.detach().numpy()
    bias = (module.bias_ih_l0 + module.bias_hh_l0).detach().numpy()
    h, c = np.zeros((2, 5)), np.zeros((2, 5))
    for t in range(7):
        z = x[t] @ w_ih.T + h @ w_hh.T + bias  # PyTorch stacks the gates i, f, g, o
        i, f, g, o = sigmoid(z[:, :5]), sigmoid(z[:, 5:10]), np.tanh(z[:, 10:15]), \
            sigmoid(z[:, 15:])
        c = f * c + i * g
        h = o * np.tanh(c)
        for name, value in {"i": i, "f": f, "g": g, "o": o, "c": c, "h": h}.items():
            np.testing.assert_allclose(trace[name][t], value, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(trace["h"], y_torch.numpy(), atol=1e-12)
    np.testing.assert_allclose(trace["c"][-1], c_n[0].numpy(), atol=1e-12)


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("name", lstm_graph.builtin_names())
def test_every_executor_traces_what_the_reference_traces(name, executor):
    cell = lstm_graph.load_cell(name)
    x = np.random.default_rng(2).standard_normal((6, 3, 4)).astype("float32")
    ours = cell.compile(input_size=4, hidden_size=5, seed=3, executor=executor).trace(x)
    reference = cell.compile(input_size=4, hidden_size=5, seed=3,
                             executor="reference").trace(x)
    assert list(ours) == list(reference) == list(cell.graph.assignments)
    for key, value in reference.items():
        np.testing.assert_allclose(ours[key], value, **TOLERANCE, err_msg=key)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=valid_cells(), executor=st.sampled_from(
    ["numpy", "native", "cuda-on-host"] if compiler() else ["numpy"]), seed=st.integers(0, 2**16))
def test_traces_agree_on_random_cells_nan_included(source, executor, seed):
    cell = lstm_graph.compile_source(source, "random.cell")
    x = np.random.default_rng(seed).standard_normal((3, 2, 2)).astype("float32")
    if seed % 2:
        x[1, 0, 1] = np.nan
    reference = cell.compile(input_size=2, hidden_size=3, seed=seed, executor="reference")
    expected = reference.trace(x, allow_nonfinite=True)
    if executor == "cuda-on-host":
        zeros = {s: np.zeros((2, 3), "float32") for s in cell.graph.states}
        plan = CudaPlan(Spec(cell.schedule, np, reference.params, 2, 2, 3, np.dtype("float32")),
                        launcher=HostLauncher())
        ours = plan.trace(x, zeros)
    else:
        ours = cell.compile(input_size=2, hidden_size=3, seed=seed,
                            executor=executor).trace(x, allow_nonfinite=True)
    for key, value in expected.items():
        assert ours[key].shape == value.shape, (key, source)
        np.testing.assert_array_equal(np.isnan(ours[key]), np.isnan(value), err_msg=source)
        np.testing.assert_allclose(ours[key], value, **TOLERANCE, err_msg=f"{key}\n{source}")


@needs_compiler
def test_the_plain_native_step_records_nothing():
    run = lstm_graph.load_cell("lstm").compile(input_size=2, hidden_size=4, executor="native")
    plan = run.compiled(1)
    run.trace(np.zeros((3, 1, 2), "float32"))
    assert "trace_" not in plan.source  # the recording variant is a build of its own


def test_a_trace_of_one_sequence_drops_the_batch_axis_like_a_run():
    run = lstm_graph.load_cell("gru").compile(input_size=2, hidden_size=3)
    trace = run.trace(np.ones((4, 2), "float32"))
    y, state = run(np.ones((4, 2), "float32"))
    assert trace["h"].shape == (4, 3)
    np.testing.assert_allclose(trace["h"], y, rtol=1e-6)


def test_trace_command_writes_every_assignment_y_and_the_final_states(tmp_path, cli_run):
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    cli_run("trace", "peephole_lstm", "--input", tmp_path / "x.npy", "-H", "4", "--out",
            tmp_path / "t.npz")
    with np.load(tmp_path / "t.npz") as saved:
        assert sorted(saved.files) == ["c", "cell", "cell.sha256", "f", "final.c", "final.h",
                                       "g", "h", "i", "o", "trace.layout", "y"]
        assert saved["f"].shape == (5, 2, 4)
        np.testing.assert_array_equal(saved["y"], saved["h"])
        np.testing.assert_array_equal(saved["final.c"], saved["c"][-1])
    cli_run("run", "peephole_lstm", "--input", tmp_path / "x.npy", "-H", "4", "--out",
            tmp_path / "y.npz")
    with np.load(tmp_path / "y.npz") as ran, np.load(tmp_path / "t.npz") as traced:
        np.testing.assert_allclose(ran["y"], traced["y"], rtol=1e-6)


def test_an_output_of_the_input_size_is_traced_with_its_own_width(tmp_path):
    cell = lstm_graph.compile_source("input x\nstate h\noutput y\n"
                                     "h = tanh(linear(x, h[t-1]))\ny = relu(x) - 1\n")
    trace = cell.compile(input_size=3, hidden_size=5).trace(np.ones((4, 2, 3), "float32"))
    assert trace["y"].shape == (4, 2, 3) and trace["h"].shape == (4, 2, 5)
    np.testing.assert_array_equal(trace["y"], 0.0)


def test_a_value_named_y_that_is_not_the_output_is_refused_before_the_trace(tmp_path,
                                                                          cli_run, cli_fails):
    """The finding: the trace's y was that value (0.47 off the run's y), without a word.
    An output named y is the trace's y, as in a run, lengths included."""
    (tmp_path / "ty.cell").write_text("input x\nstate h\noutput h\n"
                                      "y = tanh(linear(x, h[t-1]))\nh = y * 0.5\n")
    for dask in ([], ["--dask", "tcp://127.0.0.1:9"]):  # refused before it connects
        message = cli_fails("trace", tmp_path / "ty.cell", "--sample", "-I", "3", "-H", "4",
                            "--out", tmp_path / "ty.npz", *dask)
        assert "cell 'ty' computes a value named y, the name under which trace writes the " \
            "output sequence (its output is h); rename the value" in message
    assert not (tmp_path / "ty.npz").exists()
    (tmp_path / "oy.cell").write_text("input x\nstate h\noutput y\n"
                                      "h = tanh(linear(x, h[t-1]))\ny = h * 2\n")
    np.save(tmp_path / "lengths.npy", np.array([5, 2]))
    options = ["--sample", "-I", "3", "-H", "4", "--lengths", tmp_path / "lengths.npy"]
    cli_run("trace", tmp_path / "oy.cell", *options, "--out", tmp_path / "t.npz")
    cli_run("run", tmp_path / "oy.cell", *options, "--out", tmp_path / "r.npz")
    traced, ran = np.load(tmp_path / "t.npz"), np.load(tmp_path / "r.npz")
    np.testing.assert_array_equal(traced["y"], ran["y"])
