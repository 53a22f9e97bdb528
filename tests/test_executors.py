"""Every executor behind the one contract, against equations written here by hand.

The cells below stress what only some executors used to get right: an output of
the input's size, constants with relu and minus, a state read both old and new,
a linear of a state's new value. Each runs on every CPU executor (and the CUDA
plan's kernels, compiled for the host) and must equal plain NumPy written
independently of lstm-graph, NaN pattern included.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import executor_params, needs_compiler

import lstm_graph
from lstm_graph.errors import BackendError
from lstm_graph.executors import registry
from lstm_graph.executors.contract import Executor, Spec
from lstm_graph.executors.cuda import CudaPlan, HostLauncher

TOLERANCE = {"float32": dict(rtol=2e-5, atol=2e-6), "float64": dict(rtol=1e-12, atol=1e-13)}

OUTPUT_OF_INPUT_SIZE = """\
input x
state h
output y
h = tanh(linear(x, h[t-1]))
y = x * 0.5 + tanh(x) * 0.25
"""

RELU_MINUS_OLD_AND_NEW = """\
input x
state c, h
output h
c = relu(linear(x, h[t-1])) - 0.5 * c[t-1]
o = sigmoid(linear(c, peep(c[t-1])))
h = o * (1 - c) - relu(-c[t-1])
"""


def sigmoid(v):
    return 1 / (1 + np.exp(-v))


def relu(v):
    return np.where(v < 0, 0, v)  # NaN passes, as in torch.relu


def by_hand_output_of_input_size(w, x, state):
    h = state["h"]
    for t in range(len(x)):
        h = np.tanh(x[t] @ w["h.W_x"].T + h @ w["h.W_h"].T + w["h.b"])
    return x * 0.5 + np.tanh(x) * 0.25, {"h": h}


def by_hand_relu_minus_old_and_new(w, x, state):
    c, h, ys = state["c"], state["h"], []
    for t in range(len(x)):
        c_new = relu(x[t] @ w["c.W_x"].T + h @ w["c.W_h"].T + w["c.b"]) - 0.5 * c
        o = sigmoid(c_new @ w["o.W_c"].T + w["o.p_c"] * c + w["o.b"])
        h = o * (1 - c_new) - relu(-c)
        c = c_new
        ys.append(h)
    return np.stack(ys), {"c": c, "h": h}


CASES = [(OUTPUT_OF_INPUT_SIZE, by_hand_output_of_input_size),
         (RELU_MINUS_OLD_AND_NEW, by_hand_relu_minus_old_and_new)]


def run_on(executor: str, cell, weights, x, state):
    if executor == "cuda-kernels-on-host":
        spec = Spec(cell.schedule, np, weights, x.shape[1], x.shape[2],
                    weights[next(iter(weights))].shape[0], x.dtype)
        return CudaPlan(spec, launcher=HostLauncher()).run(x, state)
    return cell.compile(weights=weights, dtype=x.dtype.name, executor=executor)(
        x, state, allow_nonfinite=True)


EXECUTORS = [*executor_params(["reference", "numpy", "native", "plan"]),
             pytest.param("cuda-kernels-on-host", marks=needs_compiler)]


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("source, by_hand", CASES, ids=["output-of-size-I", "relu-minus-old-new"])
def test_every_executor_equals_the_equations_written_by_hand(source, by_hand, dtype, executor):
    cell = lstm_graph.compile_source(source, "hand.cell")
    input_size, hidden = 3, 5  # I != H: an I-sized output is not H wide
    weights = cell.random_weights(input_size, hidden, seed=2, dtype=dtype)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 4, input_size)).astype(dtype)
    x[2, 1, 0] = np.nan  # one sequence, one step: its NaN must spread exactly as in NumPy
    state = {s: rng.standard_normal((4, hidden)).astype(dtype) for s in cell.graph.states}
    y, final = run_on(executor, cell, weights, x, state)
    y_hand, final_hand = by_hand({k: v.astype(dtype) for k, v in weights.items()}, x, state)
    assert y.shape == y_hand.shape and y.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_hand))
    np.testing.assert_allclose(y, y_hand, **TOLERANCE[dtype])
    for name, value in final_hand.items():
        np.testing.assert_array_equal(np.isnan(final[name]), np.isnan(value))
        np.testing.assert_allclose(final[name], value, **TOLERANCE[dtype])


@pytest.mark.parametrize("executor", executor_params(["reference", "numpy", "native"]))
def test_relu_of_nan_is_nan_and_infinities_saturate_on_every_executor(executor):
    cell = lstm_graph.compile_source("input x\nstate h\noutput y\nh = h[t-1]\n"
                                     "y = relu(x) + sigmoid(x) * 0 + tanh(x)\n", "nan.cell")
    x = np.array([[[np.nan, np.inf, -np.inf, -1.0]]], "float32")
    y, _ = cell.compile(input_size=4, hidden_size=2, executor=executor)(x, allow_nonfinite=True)
    np.testing.assert_allclose(y[0, 0], [np.nan, np.inf, -1.0, -0.7615942], rtol=1e-6)


def test_the_registry_is_the_one_place_that_picks():
    cell = lstm_graph.load_cell("gru")
    spec = Spec(cell.schedule, np, cell.random_weights(2, 3), 1, 2, 3, np.dtype("float32"))
    for name in ("reference", "numpy"):
        executor = registry.build(name, spec, "numpy")
        assert isinstance(executor, Executor) and executor.name == name and executor.source
    # the message lists every executor that does run there, the reference one included
    with pytest.raises(BackendError, match="the cuda executor does not run on the numpy "
                       "backend; use --executor plan, native, numpy or reference there"):
        registry.check("cuda", "numpy")
    with pytest.raises(BackendError, match="the native executor does not run on the cupy "
                       "backend; use --executor plan, numpy, reference or cuda there"):
        registry.check("native", "cupy")
    with pytest.raises(BackendError, match="unknown executor 'fast'"):
        registry.check("fast", "numpy")


def test_an_executor_that_does_not_run_on_the_backend_is_a_usage_mistake(cli_fails):
    for command in ("run", "trace", "grad"):
        stderr = cli_fails(command, "lstm", "--sample", "-H", "3", "--executor", "cuda",
                           "--out", "never.npz", code=2)
        assert "the cuda executor does not run on the numpy backend; use --executor plan, " \
            "native, numpy or reference there" in stderr


def test_the_runner_keeps_a_few_plans_one_per_batch_size():
    run = lstm_graph.load_cell("lstm").compile(input_size=2, hidden_size=3, executor="numpy")
    first = {batch: run.compiled(batch) for batch in (1, 2)}
    for batch in (1, 2, 1, 2):
        run(np.zeros((3, batch, 2), "float32"))
        assert run.compiled(batch) is first[batch]  # alternating sizes build nothing new
    for batch in range(3, 3 + run.PLANS):
        run.compiled(batch)
    assert run.compiled(1) is not first[1]  # the least recently used went


def test_a_runner_called_from_several_threads_gives_each_its_own_answer():
    run = lstm_graph.load_cell("peephole_lstm").compile(input_size=3, hidden_size=8, seed=1)
    inputs = [np.random.default_rng(k).standard_normal((20, 4, 3)).astype("float32")
              for k in range(6)]
    expected = [run(x)[0] for x in inputs]
    results: dict[int, np.ndarray] = {}

    def work(k: int) -> None:
        results[k] = run(inputs[k])[0]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for k in range(6):
        np.testing.assert_array_equal(results[k], expected[k])


#: Linears of values made from ``x`` alone, before the loop: the native backward kept the
#: spec it was built with and differentiated them with the old weights after ``update``
#: (∂L/∂x 0.997 off; a resumed ``train`` left an uninterrupted one's weights by 0.058).
BEFORE_THE_LOOP = """cell chain
input x
state h
output h
a = tanh(linear(x))
b = sigmoid(linear(a))
h = tanh(linear(b, h[t-1]))
"""


@pytest.mark.parametrize("source", ["peephole_lstm", BEFORE_THE_LOOP])
@pytest.mark.parametrize("executor", executor_params(["reference", "numpy", "native"]))
def test_new_weights_run_and_differentiate_as_a_new_executor_would(executor, source):
    """``update`` (a trainer's every step) reloads the weights in place: runs, traces and
    gradients then equal those of an executor built with the new weights."""
    cell = lstm_graph.load_cell(source) if source == "peephole_lstm" else \
        lstm_graph.compile_source(source, "chain.cell")
    first, second = (cell.random_weights(3, 5, seed=k) for k in (1, 2))
    spec = Spec(cell.schedule, np, first, 4, 3, 5, np.dtype("float32"))
    built = registry.build(executor, spec, "numpy")
    rng = np.random.default_rng(0)
    x, grad_y = rng.standard_normal((6, 4, 3)).astype("float32"), \
        rng.standard_normal((6, 4, 5)).astype("float32")
    zeros = {s: np.zeros((4, 5), "float32") for s in cell.graph.states}
    built.run(x, zeros), built.grad(x, zeros, grad_y, {})  # build every variant first
    built.update(second)
    fresh = registry.build(executor, Spec(cell.schedule, np, second, 4, 3, 5,
                                          np.dtype("float32")), "numpy")
    np.testing.assert_allclose(built.run(x, zeros)[0], fresh.run(x, zeros)[0], rtol=1e-6)
    ours, theirs = built.grad(x, zeros, grad_y, {}), fresh.grad(x, zeros, grad_y, {})
    np.testing.assert_allclose(ours.x, theirs.x, rtol=1e-6, atol=1e-7)
    for name, value in theirs.weights.items():
        np.testing.assert_allclose(ours.weights[name], value, rtol=1e-6, atol=1e-7)


def test_a_runner_keeps_its_own_weights_whatever_happens_to_the_arrays_it_was_given():
    """It kept the caller's arrays: after an in-place step on the PyTorch model whose state
    dict it was given, the reference followed it and the compiled executors, built once
    per batch size, did not (the same rows differed by 0.1 between batch sizes)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.LSTM(3, 4)
    x = np.random.default_rng(0).standard_normal((5, 3, 3)).astype("float32")
    runners = {executor: lstm_graph.load_cell("lstm").compile(weights=model.state_dict(),
                                                              executor=executor)
               for executor in ("reference", "plan")}
    before = {executor: run(x[:, :2])[0] for executor, run in runners.items()}
    with torch.no_grad():
        model.weight_ih_l0.add_(0.5)  # an optimiser's step
    for executor, run in runners.items():
        np.testing.assert_array_equal(run(x[:, :2])[0], before[executor])
        np.testing.assert_array_equal(run(x)[0][:, :2], before[executor])  # a new batch size
        with pytest.raises(ValueError, match="read-only"):
            run.weights["f.b"] += 1
    np.testing.assert_allclose(before["plan"], before["reference"], rtol=2e-5, atol=2e-6)


def test_a_cell_and_a_runner_show_themselves_in_one_line():
    cell = lstm_graph.load_cell("lstm")
    assert repr(cell) == "<Cell lstm: input x; states c, h; output h; 3 stages>"
    runner = cell.compile(input_size=3, hidden_size=4, layers=2, direction="bidirectional",
                          batch_first=True)
    assert repr(runner) == "<Runner lstm: I=3, H=4, 2 layers, bidirectional, batch-first, " \
        "float32 on numpy, executor plan>"
