"""The op table's element-wise functions against PyTorch's own, and on every executor.

Each function's reference form and its vector-Jacobian product are checked against
PyTorch's implementation of the same function and its autograd (independent code);
then a cell using it runs on every executor and must agree with the reference, the
compiled backward included.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import executor_params

import lstm_graph
from lstm_graph.executors.buildcache import compiler
from lstm_graph.executors.contract import Spec
from lstm_graph.executors.cuda import CudaPlan, HostLauncher
from lstm_graph.ops import FUNCTIONS, ONNX_ACTIVATIONS, OPS

torch = pytest.importorskip("torch")
F = torch.nn.functional

#: Each function with attributes of its own, as PyTorch computes it.
TORCH = {
    "sigmoid": ({}, torch.sigmoid),
    "tanh": ({}, torch.tanh),
    "relu": ({}, torch.relu),
    "leaky_relu": ({"alpha": 0.2}, lambda v: F.leaky_relu(v, 0.2)),
    "thresholded_relu": ({"alpha": 0.25}, lambda v: F.threshold(v, 0.25, 0.0)),
    "elu": ({"alpha": 0.7}, lambda v: F.elu(v, 0.7)),
    "hard_sigmoid": ({"alpha": 0.3, "beta": 0.4}, lambda v: torch.clamp(0.3 * v + 0.4, 0, 1)),
    "scaled_tanh": ({"alpha": 1.5, "beta": 0.75}, lambda v: 1.5 * torch.tanh(0.75 * v)),
    "affine": ({"alpha": -1.5, "beta": 0.25}, lambda v: -1.5 * v + 0.25),
    "softsign": ({}, F.softsign),
    "softplus": ({}, lambda v: F.softplus(v, threshold=1000)),
    "clip": ({"threshold": 1.25}, lambda v: torch.clamp(v, -1.25, 1.25)),
}


def test_every_function_is_checked_here_and_onnx_names_its_activations():
    assert set(TORCH) == set(FUNCTIONS)
    assert sorted(ONNX_ACTIVATIONS) == ["Affine", "Elu", "HardSigmoid", "LeakyRelu", "Relu",
                                        "ScaledTanh", "Sigmoid", "Softplus", "Softsign",
                                        "Tanh", "ThresholdedRelu"]


@pytest.mark.parametrize("name", sorted(TORCH))
def test_function_and_its_gradient_equal_pytorch(name):
    attrs, reference = TORCH[name]
    op = OPS[name]
    # away from kinks (0, ±threshold, the hard sigmoid's ends), where the one-sided
    # derivatives differ by convention
    v = np.concatenate([np.linspace(-30, 30, 301), [-700.0, 700.0]]) + 0.0123
    g = np.random.default_rng(0).standard_normal(v.shape)
    out = op.reference(np, [v], [], op.attrs([attrs[a.name] for a in op.attributes]))
    (grad,), _ = op.vjp(np, [v], [], op.attrs([attrs[a.name] for a in op.attributes]), out, g)
    tv = torch.tensor(v, requires_grad=True)
    expected = reference(tv)
    expected.backward(torch.tensor(g))
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grad, tv.grad.numpy(), rtol=1e-12, atol=1e-14)


#: Each function's kinks, for attributes where they are exact numbers.
KINKS = {"relu": ({}, [0.0]), "leaky_relu": ({"alpha": 0.2}, [0.0]),
         "thresholded_relu": ({"alpha": 0.25}, [0.25]), "elu": ({"alpha": 0.7}, [0.0]),
         "hard_sigmoid": ({"alpha": 0.25, "beta": 0.5}, [-2.0, 2.0]),
         "clip": ({"threshold": 1.25}, [-1.25, 1.25])}


@pytest.mark.parametrize("name", sorted(KINKS))
def test_at_a_kink_the_gradient_is_the_pytorch_export_s_autograd(name):
    """Exactly at a kink the one-sided derivatives differ by convention: ours is what the
    op's PyTorch form (what ``export --format torch`` writes) gives under autograd, so the
    exported module's gradients equal ``grad`` there too (hard_sigmoid's once passed
    nothing at its bounds, where the exported torch.clamp passes the gradient)."""
    attrs, kinks = KINKS[name]
    v = np.array([*kinks, -0.5, 0.5])
    ours, torchs = gradients_and_the_export_s(name, attrs, v,
                                              np.array([0.75, -1.25, 0.5, 2.0][:len(v)]))
    np.testing.assert_allclose(ours, torchs, rtol=1e-12, atol=0)


def gradients_and_the_export_s(name: str, attrs: dict, v: np.ndarray, g: np.ndarray
                               ) -> tuple[np.ndarray, np.ndarray]:
    """The op's gradient at ``v`` (of ``g``), and what PyTorch's autograd gives the op's
    PyTorch form (the op table's own text, as ``export --format torch`` writes it)."""
    op = OPS[name]
    values = op.attrs([attrs[a.name] for a in op.attributes])
    with np.errstate(invalid="ignore", over="ignore"):
        out = op.reference(np, [v], [], values)
        (grad,), _ = op.vjp(np, [v], [], values, out, g)
    tv = torch.tensor(v, requires_grad=True)
    expression = str(op.torch).format("tv", **{k: repr(float(x)) for k, x in attrs.items()})
    expected = eval(expression, {"torch": torch, "F": F, "tv": tv})
    expected.backward(torch.tensor(g))
    return grad, tv.grad.numpy()


@pytest.mark.parametrize("name", sorted(TORCH))
def test_the_gradient_at_nan_and_infinity_is_the_pytorch_export_s_autograd(name):
    """``relu``'s gradient stopped at NaN, where PyTorch's passes it (its backward zeroes
    the gradient only where the value is 0 or less)."""
    ours, torchs = gradients_and_the_export_s(name, TORCH[name][0],
                                              np.array([np.nan, np.inf, -np.inf]),
                                              np.array([0.75, -1.25, 0.5]))
    np.testing.assert_array_equal(ours, torchs)


@pytest.mark.parametrize("name", sorted(TORCH))
def test_nan_propagates_as_the_op_table_says(name):
    attrs, _ = TORCH[name]
    op = OPS[name]
    with np.errstate(invalid="ignore"):  # softsign's inf / inf
        out = op.reference(np, [np.array([np.nan, np.inf, -np.inf])], [],
                           op.attrs([attrs[a.name] for a in op.attributes]))
    assert np.isnan(out[0]) == (name != "thresholded_relu")  # ONNX: x > alpha ? x : 0
    assert not np.isnan(out[1:]).any() or name == "softsign"  # inf / inf, as PyTorch


def source(name: str) -> str:
    attrs = TORCH[name][0]
    call = OPS[name].call_text("linear(x, h[t-1])", attrs)
    return f"cell f\ninput x\nstate h\noutput h\nh = {call}\n"


def inputs(dtype: str, steps: int = 6, batch: int = 3):
    x = np.random.default_rng(1).standard_normal((steps, batch, 4)).astype(dtype) * 2
    x[2, 1, 0] = np.nan  # one poisoned sequence: the NaN pattern must agree too
    return x


@pytest.mark.parametrize("executor", executor_params(["numpy", "native", "cuda-kernels"]))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(TORCH))
def test_a_cell_using_the_function_runs_alike_on_every_executor(name, dtype, executor):
    cell = lstm_graph.compile_source(source(name), "f.cell")
    x = inputs(dtype)
    reference = cell.compile(input_size=4, hidden_size=5, dtype=dtype, executor="reference")
    state = {"h": np.full((3, 5), 0.5, dtype)}
    expected, final = reference(x, state, allow_nonfinite=True)
    if executor == "cuda-kernels":
        spec = Spec(cell.schedule, np, reference.params, 3, 4, 5, np.dtype(dtype))
        found, found_final = CudaPlan(spec, launcher=HostLauncher()).run(x, state)
    else:
        runner = cell.compile(input_size=4, hidden_size=5, dtype=dtype, executor=executor)
        found, found_final = runner(x, state, allow_nonfinite=True)
    tolerance = dict(rtol=1e-5, atol=1e-6) if dtype == "float32" else dict(rtol=1e-12,
                                                                             atol=1e-13)
    np.testing.assert_allclose(found, expected, **tolerance)
    np.testing.assert_allclose(found_final["h"], final["h"], **tolerance)
    assert np.isnan(expected).any() == (name != "thresholded_relu")  # which swallows NaN


@pytest.mark.parametrize("executor", executor_params(["numpy", "native"]))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softplus_of_a_very_negative_value_is_e_to_it_not_zero(dtype, executor):
    """The C form computed log(1 + e^v): 0 from v = -37 (float64; -17 in float32), where
    PyTorch's log1p(exp(v)) is e^v, 4e-18 at v = -40."""
    cell = lstm_graph.compile_source("cell s\ninput x\nstate h\noutput h\n"
                                     "h = softplus(linear(x, h[t-1]))\n", "s.cell")
    weights = {"h.W_x": np.eye(3, dtype=dtype), "h.W_h": np.zeros((3, 3), dtype),
               "h.b": np.zeros(3, dtype)}
    runner = cell.compile(weights=weights, dtype=dtype, executor=executor)
    x = np.array([[[-20.0, -40.0, -80.0]]], dtype)
    expected = F.softplus(torch.from_numpy(x), threshold=20).numpy()
    np.testing.assert_allclose(runner(x)[0], expected, rtol=1e-6 if dtype == "float32"
                               else 1e-14, atol=0)


@pytest.mark.parametrize("poisoned", [False, True])
@pytest.mark.parametrize("name", sorted(TORCH))
def test_the_compiled_backward_of_the_function_equals_the_reference(name, poisoned):
    """On finite sequences, and on ones with NaN and ±inf (each executor's C or NumPy form
    of the function's gradient at NaN and infinity: relu's once stopped at NaN)."""
    cell = lstm_graph.compile_source(source(name), "f.cell")
    x = inputs("float64")[:, [0, 2]] if not poisoned else inputs("float64")  # NaN in seq 1
    if poisoned:
        x[4, 0, 1], x[2, 0, 3] = np.inf, -np.inf  # sequence 2 stays finite
    grad_y = np.random.default_rng(2).standard_normal((6, x.shape[1], 5))
    found = {}
    executors = ("reference", "numpy", *(("native",) if compiler() else ()))
    for executor in executors:
        runner = cell.compile(input_size=4, hidden_size=5, dtype="float64", executor=executor)
        with np.errstate(invalid="ignore", over="ignore"):
            found[executor] = runner.grad(x, grad_y, allow_nonfinite=poisoned)
    if poisoned:  # the poisoned sequences' ∂L/∂x, and the finite one's numbers
        assert np.isfinite(found["reference"].x[:, 2]).all()
    for executor in executors[1:]:
        np.testing.assert_allclose(found[executor].x, found["reference"].x, rtol=1e-10,
                                   atol=1e-12, err_msg=executor)
        for param, value in found["reference"].weights.items():
            np.testing.assert_allclose(found[executor].weights[param], value, rtol=1e-10,
                                       atol=1e-12, err_msg=f"{executor} {param}")


def test_attributes_are_numbers_written_in_the_call(tmp_path):
    bad = "cell f\ninput x\nstate h\noutput h\nh = leaky_relu(linear(x, h[t-1]), h[t-1])\n"
    with pytest.raises(lstm_graph.CellError, match=r"f.cell:5:35: error: leaky_relu\(\) takes "
                       r"one value and then numbers only: leaky_relu\(v, alpha=0.01\)"):
        lstm_graph.compile_source(bad, "f.cell")
    missing = "cell f\ninput x\nstate h\noutput h\nh = clip(linear(x, h[t-1]))\n"
    with pytest.raises(lstm_graph.CellError, match=r"clip\(\) needs its threshold: "
                       r"clip\(v, threshold\)"):
        lstm_graph.compile_source(missing, "f.cell")
    # a negative threshold: ours bounded v to [t, -t], ONNX's Clip and torch.clamp give -t
    negative = "cell f\ninput x\nstate h\noutput h\nh = clip(linear(x, h[t-1]), -0.5)\n"
    with pytest.raises(lstm_graph.CellError, match=r"f.cell:5:5: error: clip\(\)'s threshold "
                       r"is -0.5; it must be 0 or more: clip\(v, threshold\)"):
        lstm_graph.compile_source(negative, "f.cell")
    large = "cell f\ninput x\nstate h\noutput h\nh = elu(linear(x, h[t-1]), 1e39)\n"
    cell = lstm_graph.compile_source(large, "f.cell")
    with pytest.raises(lstm_graph.CellError, match=r"the alpha of elu\(\) 1e\+39 is too large "
                       "for float32"):
        cell.compile(input_size=2, hidden_size=3)
    assert cell.schedule.expression("h") == "elu(linear(x, h[t-1]), 1e+39)"
