"""The native executor (generated C) against the reference interpreter, its definition.

Its own float32 exp and tanh are checked element by element against float64
NumPy, in units in the last place.
"""

from __future__ import annotations

import ctypes
import re
import warnings

import numpy as np
import pytest
from cellgen import valid_cells
from conftest import needs_compiler
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lstm_graph
from lstm_graph.errors import BackendError, LstmGraphWarning
from lstm_graph.executors import buildcache, native
from lstm_graph.executors.contract import Spec
from lstm_graph.executors.native import MATH_FLOAT, NativePlan

pytestmark = needs_compiler

TOLERANCE = {"float32": dict(rtol=1e-4, atol=1e-5), "float64": dict(rtol=1e-10, atol=1e-12)}


def compare(cell, x, hidden, dtype, seed=0, **plan_options):
    """Our native run and the reference run of ``cell`` on ``x``, from zero states."""
    run = cell.compile(input_size=x.shape[-1], hidden_size=hidden, dtype=dtype, seed=seed)
    reference = cell.compile(input_size=x.shape[-1], hidden_size=hidden, dtype=dtype,
                             seed=seed, executor="reference")
    batch = x.shape[1]
    plan = NativePlan(Spec(cell.schedule, np, run.params, batch, x.shape[-1], hidden,
                           np.dtype(dtype)), **plan_options)
    zeros = {s: np.zeros((batch, hidden), dtype) for s in cell.graph.states}
    return plan, plan.run(x, zeros), reference(x, allow_nonfinite=True)


def assert_same(ours, reference, dtype, message=""):
    (y, state), (y_ref, state_ref) = ours, reference
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_ref), err_msg=message)
    np.testing.assert_allclose(y, y_ref, **TOLERANCE[dtype], err_msg=message)
    assert list(state) == list(state_ref)
    for key in state_ref:
        np.testing.assert_allclose(state[key], state_ref[key], **TOLERANCE[dtype],
                                   err_msg=message)


@pytest.mark.parametrize("mode", [dict(whole_loop=True), dict(whole_loop=False)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", lstm_graph.builtin_names())
def test_native_agrees_with_reference_on_builtins(name, dtype, mode):
    cell = lstm_graph.load_cell(name)
    x = np.random.default_rng(1).standard_normal((12, 3, 5)).astype(dtype)
    plan, ours, reference = compare(cell, x, 7, dtype, **mode)
    assert plan.whole_loop == mode["whole_loop"]
    assert_same(ours, reference, dtype)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=valid_cells(), dtype=st.sampled_from(["float32", "float64"]),
       batch=st.integers(1, 3), whole_loop=st.booleans(), seed=st.integers(0, 2**16))
def test_native_agrees_with_reference_on_random_cells(source, dtype, batch, whole_loop, seed):
    cell = lstm_graph.compile_source(source, "random.cell")
    x = np.random.default_rng(seed).standard_normal((3, batch, 2)).astype(dtype)
    if seed % 3 == 0:
        x[1, 0, seed % 2] = np.nan
    _, ours, reference = compare(cell, x, 3, dtype, seed, whole_loop=whole_loop)
    assert_same(ours, reference, dtype, source)


def test_default_executor_is_native_and_picks_the_mode_by_step_size():
    run = lstm_graph.load_cell("lstm").compile(input_size=4, hidden_size=32)
    run(np.zeros((2, 1, 4), "float32"))
    assert run.ran_with == "native"
    assert run.compiled(1).whole_loop  # small: the whole time loop is one C call
    assert not run.compiled(64).whole_loop  # large: BLAS GEMMs, fused C element-wise


def spec(cell, params, batch, input_size, hidden, dtype="float32"):
    return Spec(cell.schedule, np, params, batch, input_size, hidden, np.dtype(dtype))


def test_source_is_deterministic_uses_our_vectorisable_math_and_is_cached(tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv("LSTM_GRAPH_CACHE", str(tmp_path))
    cell = lstm_graph.load_cell("peephole_lstm")
    run = cell.compile(input_size=3, hidden_size=8)
    sources = {NativePlan(spec(cell, run.params, 2, 3, 8)).source for _ in range(2)}
    assert len(sources) == 1
    source = sources.pop()
    assert source.count("lg_expf(-") == 3  # the f, i and o valves
    assert source.count("lg_tanhf(") == 2 + 1  # g, tanh(c), and the definition
    assert "gemm(batch, 8, 32," in source  # one GEMM for the four gates
    assert "const ptrdiff_t i = b * 8 + j;" in source  # indices never overflow an int
    assert not re.search(r"\b(int|long)\s+\w+\s*[=;,)]", source)
    assert len(list(tmp_path.glob("*.so"))) == 1  # built once, then reused
    NativePlan(spec(cell, run.params, 5, 3, 8))  # another batch size: the same build
    assert len(list(tmp_path.glob("*.so"))) == 1
    double = NativePlan(spec(cell, run.params, 2, 3, 8, "float64")).source
    assert "lg_expf" not in double and "exp(-" in double  # float64: the C library's


def test_progress_reports_every_step_in_both_modes():
    cell = lstm_graph.load_cell("gru")
    run = cell.compile(input_size=2, hidden_size=3)
    for whole_loop in (True, False):
        plan = NativePlan(spec(cell, run.params, 2, 2, 3), whole_loop=whole_loop)
        calls: list[int] = []
        plan.run(np.zeros((6, 2, 2), "float32"), {"h": np.zeros((2, 3), "float32")},
                 calls.append)
        assert sum(calls) == 6


def test_nan_in_the_input_propagates_as_in_the_reference():
    cell = lstm_graph.load_cell("lstm")
    x = np.zeros((3, 2, 2), "float32")
    x[1, 0, 0] = np.nan
    y, _ = cell.compile(input_size=2, hidden_size=4)(x, allow_nonfinite=True)
    y_ref, _ = cell.compile(input_size=2, hidden_size=4, executor="reference")(
        x, allow_nonfinite=True)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_ref))
    assert np.isnan(y[1:, 0]).all() and not np.isnan(y[:, 1]).any()


def test_cells_too_big_to_compile_quickly_run_the_numpy_plan_by_default(monkeypatch):
    monkeypatch.setattr(native, "MAX_NODES", 5)
    run = lstm_graph.load_cell("lstm").compile(input_size=2, hidden_size=3)
    run(np.zeros((2, 1, 2), "float32"))
    assert run.ran_with == "numpy"


def test_without_a_compiler_native_says_what_is_missing_and_plan_falls_back(monkeypatch):
    monkeypatch.setattr(buildcache, "compiler", lambda: None)
    cell = lstm_graph.load_cell("rnn")
    with pytest.raises(BackendError, match="needs a C compiler"):
        cell.compile(input_size=2, hidden_size=3, executor="native")
    run = cell.compile(input_size=2, hidden_size=3)
    run(np.zeros((2, 1, 2), "float32"))
    assert run.ran_with == "numpy"


def test_a_failing_compiler_falls_back_to_the_numpy_plan_with_a_one_line_warning(monkeypatch):
    monkeypatch.setenv("CC", "/bin/false")
    run = lstm_graph.load_cell("rnn").compile(input_size=2, hidden_size=3)
    with pytest.warns(LstmGraphWarning, match="failed on the generated step") as caught:
        run(np.zeros((2, 1, 2), "float32"))
    assert run.ran_with == "numpy"
    assert "\n" not in str(caught[0].message)


def test_the_hoisted_buffer_is_reused_for_runs_of_the_same_length():
    cell = lstm_graph.load_cell("peephole_lstm")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 4, 3)).astype("float32")
    plan, first, reference = compare(cell, x, 5, "float32", whole_loop=False)
    buffer = plan._hoisted
    zeros = {s: np.zeros((4, 5), "float32") for s in cell.graph.states}
    reference_run = cell.compile(input_size=3, hidden_size=5, seed=0, executor="reference")
    for steps in (6, 9, 6):
        x = rng.standard_normal((steps, 4, 3)).astype("float32")
        assert_same(plan.run(x, zeros), reference_run(x), "float32", f"T = {steps}")
    assert plan._hoisted.shape == buffer.shape and plan._hoisted is not buffer  # T changed
    again = plan._hoisted
    plan.run(x, zeros)
    assert plan._hoisted is again


def test_tuning_flags_the_compiler_rejects_are_left_out(monkeypatch, tmp_path):
    real = buildcache.compiler()
    picky = tmp_path / "picky-cc"
    picky.write_text("#!/bin/sh\n"
                     'for a in "$@"; do [ "$a" = -fschedule-insns ] && exit 1; done\n'
                     f'exec {real} "$@"\n')
    picky.chmod(0o755)
    monkeypatch.setenv("LSTM_GRAPH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", str(picky))
    cell = lstm_graph.load_cell("gru")
    x = np.random.default_rng(3).standard_normal((5, 2, 3)).astype("float32")
    plan, ours, reference = compare(cell, x, 4, "float32")
    assert_same(ours, reference, "float32")
    assert len(list((tmp_path / "cache").glob("*.so"))) == 1


# -- our float32 exp and tanh, element by element -------------------------------------

@pytest.fixture(scope="module")
def math_library():
    library = buildcache.library("#include <math.h>\n" + MATH_FLOAT + """
void apply(long which, long n, const float *x, float *y) {
    for (long i = 0; i < n; i++)
        y[i] = which == 0 ? lg_expf(x[i]) : which == 1 ? lg_tanhf(x[i])
             : 1.0f / (1.0f + lg_expf(-x[i]));
}
""", native.ATTEMPTS, "math")
    library.apply.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    return library


def apply(library, which, x):
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.empty_like(x)
    library.apply(which, x.size, x.ctypes.data, y.ctypes.data)
    return y


def ulps(ours, exact):
    """Error in units in the last place of the float32 result."""
    return np.abs(ours - exact) / np.spacing(np.abs(exact).astype(np.float32)).astype(float)


def test_exp_is_within_one_ulp_over_its_whole_range(math_library):
    x = np.linspace(-87, 88, 1_000_001, dtype=np.float32)
    assert ulps(apply(math_library, 0, x), np.exp(x.astype(float))).max() < 1.0


def test_tanh_is_within_two_ulp_from_tiny_to_saturated(math_library):
    magnitudes = np.geomspace(1e-30, 30, 400_000)
    x = np.concatenate([magnitudes, -magnitudes, np.linspace(-2, 2, 400_001)])
    x = x.astype(np.float32)
    assert ulps(apply(math_library, 1, x), np.tanh(x.astype(float))).max() < 2.0


def test_sigmoid_is_within_three_ulp(math_library):
    x = np.linspace(-80, 80, 1_000_001, dtype=np.float32)
    exact = 1 / (1 + np.exp(-x.astype(float)))
    assert ulps(apply(math_library, 2, x), exact).max() < 3.0


def test_extremes_saturate_and_nan_stays_nan(math_library):
    x = np.array([-np.inf, -1e30, -100, 100, 1e30, np.inf, np.nan], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tanh, sigmoid = apply(math_library, 1, x), apply(math_library, 2, x)
    np.testing.assert_array_equal(tanh[:-1], [-1, -1, -1, 1, 1, 1])
    np.testing.assert_allclose(sigmoid[:-1], [0, 0, 0, 1, 1, 1], atol=1e-38)
    assert np.isnan(tanh[-1]) and np.isnan(sigmoid[-1])
