"""Backends: the reference interpreter stays inside the array API; CuPy is explicit.

``array_api_strict`` refuses anything outside the standard (NumPy-only
functions, implicit conversions), so running the interpreter on it proves the
same code runs on CuPy. The GPU tests run where CuPy and a GPU are present and
skip with a reason elsewhere.
"""

from __future__ import annotations

import array_api_strict as xps
import numpy as np
import pytest

import lstm_graph
from lstm_graph.executors import interpreter
from lstm_graph.executors.backends import namespace


def _gpu_reason() -> str | None:
    try:
        import cupy
    except ImportError:
        return "CuPy is not installed (the gpu extra)"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "no GPU visible to CuPy"
    except Exception as err:  # CUDA driver or runtime missing
        return f"no usable GPU ({err})"
    return None


needs_gpu = pytest.mark.skipif(_gpu_reason() is not None, reason=str(_gpu_reason()))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", lstm_graph.builtin_names())
def test_reference_interpreter_runs_on_array_api_strict(name, dtype):
    cell = lstm_graph.load_cell(name)
    weights = cell.random_weights(input_size=3, hidden_size=4, seed=1, dtype=dtype)
    x = np.random.default_rng(2).standard_normal((5, 2, 3)).astype(dtype)
    start = {s: np.zeros((2, 4), dtype) for s in cell.graph.states}
    y_np, final_np = interpreter.run(cell.schedule, np, weights, x, start)
    strict = lambda a: xps.asarray(a)  # noqa: E731
    y, final = interpreter.run(cell.schedule, xps, {k: strict(v) for k, v in weights.items()},
                               strict(x), {k: strict(v) for k, v in start.items()})
    assert isinstance(y, type(xps.asarray(0.0)))
    np.testing.assert_allclose(np.asarray(y), y_np, rtol=1e-6, atol=1e-7)
    for key, value in final_np.items():
        np.testing.assert_allclose(np.asarray(final[key]), value, rtol=1e-6, atol=1e-7)


def test_reference_sigmoid_and_tanh_survive_huge_inputs_on_array_api_strict():
    from lstm_graph.ops import OPS

    v = xps.asarray([-1e4, -50.0, 0.0, 50.0, 1e4], dtype=xps.float32)
    s = np.asarray(OPS["sigmoid"].reference(xps, [v], [], {}))
    assert np.all(np.isfinite(s))
    np.testing.assert_allclose(s, [0.0, 1.9287e-22, 0.5, 1.0, 1.0], rtol=1e-4, atol=0)


@pytest.mark.skipif(_gpu_reason() is None, reason="CuPy and a GPU are present")
def test_asking_for_cupy_without_it_is_a_clear_error_not_a_fallback():
    with pytest.raises(lstm_graph.BackendError, match="cupy backend"):
        namespace("cupy")
    with pytest.raises(lstm_graph.BackendError):
        lstm_graph.load_cell("lstm").compile(input_size=2, hidden_size=3, backend="cupy")


def test_unknown_backend_and_dtype():
    with pytest.raises(lstm_graph.BackendError, match="unknown backend"):
        namespace("tpu")
    with pytest.raises(lstm_graph.BackendError, match="unsupported dtype"):
        lstm_graph.load_cell("lstm").compile(input_size=2, hidden_size=3, dtype="float16")


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("executor", ["plan", "reference"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", lstm_graph.builtin_names())
def test_cupy_agrees_with_numpy(name, dtype, executor):
    cell = lstm_graph.load_cell(name)
    x = np.random.default_rng(3).standard_normal((7, 5, 6)).astype(dtype)
    y_cpu, s_cpu = cell.compile(input_size=6, hidden_size=9, dtype=dtype, seed=4,
                                executor="reference")(x)
    y_gpu, s_gpu = cell.compile(input_size=6, hidden_size=9, dtype=dtype, seed=4,
                                backend="cupy", executor=executor)(x)
    tolerance = {"float32": 1e-5, "float64": 1e-10}[dtype]
    np.testing.assert_allclose(y_gpu.get(), y_cpu, atol=tolerance, rtol=0)
    for key, value in s_cpu.items():
        np.testing.assert_allclose(s_gpu[key].get(), value, atol=tolerance, rtol=0)
