"""The CUDA plan without a GPU: its generated kernels as text, and run on the CPU.

:class:`~lstm_graph.executors.cuda.HostLauncher` compiles the exact text each
``ElementwiseKernel`` would get, inside a host C loop over ``i``, and the CUDA
plan runs on NumPy arrays with it: the same bindings, per-step slices, index
arithmetic and GEMM order as on a GPU. Only CuPy's compiler and launch differ.
"""

from __future__ import annotations

import numpy as np
import pytest
from cellgen import valid_cells
from conftest import needs_compiler
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lstm_graph
from lstm_graph.executors.codegen_c import Role, step_kernels
from lstm_graph.executors.contract import Spec
from lstm_graph.executors.cuda import CudaPlan, HostLauncher, host_source, kernel_body
from lstm_graph.executors.layout import analyse

TOLERANCE = {"float32": dict(rtol=1e-4, atol=1e-5), "float64": dict(rtol=1e-10, atol=1e-12)}


def kernels(cell, hidden=8):
    return step_kernels(cell.schedule, analyse(cell.schedule), hidden)


def test_peephole_lstm_step_is_one_fused_kernel_after_one_gemm():
    k = kernels(lstm_graph.load_cell("peephole_lstm"))
    assert len(k.segments) == 1
    (segment,) = k.segments
    assert segment.gemms == ["h[t-1]"]
    source = kernel_body(segment, k.hidden, np.dtype("float32"))
    assert source.startswith("const ptrdiff_t b = i / 8;\nconst ptrdiff_t j = i % 8;")
    assert source.count("exp(-") == 3  # f, i, o
    assert source.count("tanh(") == 2  # g and tanh(c)
    # the output valve's peephole reads the NEW memory (v8 is c), never old_c
    o_line = next(line for line in source.splitlines() if line.endswith("// o.linear"))
    assert "* v8" in o_line and "old_c" not in o_line
    # every state is read before any state is written
    lines = source.splitlines()
    reads = [n for n, line in enumerate(lines) if line.startswith("const T new_")]
    writes = [n for n, line in enumerate(lines) if line.startswith("old_")]
    assert max(reads) < min(writes)
    assert segment.outputs == ["old_c", "old_h", "y"]


def test_bindings_are_typed_and_the_source_is_deterministic():
    cell = lstm_graph.load_cell("gru")
    first, again = kernels(cell, 5), kernels(lstm_graph.load_cell("gru"), 5)
    assert host_source(first.segments, 5, np.dtype("float32")) == \
        host_source(again.segments, 5, np.dtype("float32"))
    roles = {b.name: b.role for b in first.bindings.values()}
    assert roles["S"] is Role.HOISTED and roles["y"] is Role.OUTPUT
    assert roles["old_h"] is Role.STATE and roles["G_0"] is Role.GROUP
    (static,) = first.of_role(Role.STATIC)  # a = linear(x) is hoisted before the loop
    assert static.key == "a" and static.per_step and not static.scalar


def test_a_matrix_on_a_value_of_this_step_splits_the_kernel_around_its_gemm():
    cell = lstm_graph.compile_source("input x\nstate c, h\noutput h\n"
                                     "c = tanh(linear(x, h[t-1]))\n"
                                     "o = sigmoid(linear(x, c))\nh = o * c\n")
    k = kernels(cell, 4)
    assert [s.gemms for s in k.segments] == [["h[t-1]"], ["c"]]
    assert k.bindings[k.segments[0].outputs[0]].role is Role.BUFFER
    assert k.bindings[k.segments[0].outputs[0]].key == "c"
    assert k.segments[1].outputs[-3:] == ["old_c", "old_h", "y"]


def test_a_static_output_is_written_before_the_loop_not_by_a_kernel():
    cell = lstm_graph.compile_source("input x\nstate h\noutput y\n"
                                     "h = tanh(linear(x, h[t-1]))\n"
                                     "y = x * 0.5 + tanh(x) * 0.25\n")
    k = kernels(cell, 4)
    assert "y" not in k.bindings
    assert all("y" not in s.outputs for s in k.segments)


def test_every_op_has_a_c_expression():
    from lstm_graph.ops import OPS

    assert all(op.c for op in OPS.values() if op.name != "linear")


# -- the kernels, run on the CPU -----------------------------------------------------

def on_host(cell, x, hidden, dtype, seed=0):
    """The CUDA plan with host-compiled kernels, and the reference, on ``x``."""
    reference = cell.compile(input_size=x.shape[-1], hidden_size=hidden, dtype=dtype, seed=seed,
                             executor="reference")
    spec = Spec(cell.schedule, np, reference.params, x.shape[1], x.shape[-1], hidden,
                np.dtype(dtype))
    plan = CudaPlan(spec, launcher=HostLauncher())
    rng = np.random.default_rng(seed + 1)
    start = {s: rng.standard_normal((x.shape[1], hidden)).astype(dtype) for s in cell.graph.states}
    return plan.run(x, start), reference(x, start, allow_nonfinite=True)


def assert_same(ours, reference, dtype, message=""):
    (y, state), (y_ref, state_ref) = ours, reference
    np.testing.assert_allclose(y, y_ref, **TOLERANCE[dtype], err_msg=message)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_ref), err_msg=message)
    for key in state_ref:
        np.testing.assert_allclose(state[key], state_ref[key], **TOLERANCE[dtype],
                                   err_msg=message)


@needs_compiler
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", lstm_graph.builtin_names())
def test_cuda_kernels_run_on_the_host_agree_with_the_reference(name, dtype):
    cell = lstm_graph.load_cell(name)
    x = np.random.default_rng(4).standard_normal((7, 3, 5)).astype(dtype)
    assert_same(*on_host(cell, x, 6, dtype), dtype)


@needs_compiler
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=valid_cells(), dtype=st.sampled_from(["float32", "float64"]),
       batch=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_cuda_kernels_run_on_the_host_agree_on_random_cells(source, dtype, batch, seed):
    cell = lstm_graph.compile_source(source, "random.cell")
    x = np.random.default_rng(seed).standard_normal((3, batch, 2)).astype(dtype)
    if seed % 3 == 0:
        x[1, 0, 0] = np.nan  # NaN takes the same path through every executor
    assert_same(*on_host(cell, x, 3, dtype, seed), dtype, source)


# -- the backward kernels, run on the CPU -------------------------------------------------

def grads_on_host(cell, x, hidden, dtype, seed=0):
    """The CUDA plan's backward pass with host-compiled kernels, and the reference's."""
    reference = cell.compile(input_size=x.shape[-1], hidden_size=hidden, dtype=dtype, seed=seed,
                             executor="reference")
    batch = x.shape[1]
    spec = Spec(cell.schedule, np, reference.params, batch, x.shape[-1], hidden,
                np.dtype(dtype))
    plan = CudaPlan(spec, launcher=HostLauncher())
    rng = np.random.default_rng(seed + 1)
    start = {s: rng.standard_normal((batch, hidden)).astype(dtype) for s in cell.graph.states}
    y, _ = reference(x, start, allow_nonfinite=True)
    grad_y = rng.standard_normal(y.shape).astype(dtype)
    grad_final = {s: rng.standard_normal((batch, hidden)).astype(dtype)
                  for s in cell.graph.states}
    return (plan.grad(x, start, grad_y, grad_final),
            reference.grad(x, grad_y, state=start, grad_state=grad_final, allow_nonfinite=True))


def assert_same_gradients(ours, expected, dtype, message=""):
    tolerance = dict(rtol=1e-4, atol=1e-4) if dtype == "float32" else dict(rtol=1e-10,
                                                                           atol=1e-10)
    pairs = [("x", ours.x, expected.x), *((k, ours.weights[k], v)
                                          for k, v in expected.weights.items()),
             *((k, ours.state[k], v) for k, v in expected.state.items())]
    for what, found, wanted in pairs:
        np.testing.assert_array_equal(np.isnan(found), np.isnan(wanted), err_msg=what + message)
        np.testing.assert_allclose(found, wanted, **tolerance, err_msg=what + message)


@needs_compiler
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", lstm_graph.builtin_names())
def test_cuda_backward_kernels_run_on_the_host_equal_the_reference(name, dtype):
    cell = lstm_graph.load_cell(name)
    x = np.random.default_rng(4).standard_normal((7, 3, 5)).astype(dtype)
    assert_same_gradients(*grads_on_host(cell, x, 6, dtype), dtype)


@needs_compiler
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=valid_cells(), dtype=st.sampled_from(["float32", "float64"]),
       batch=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_cuda_backward_kernels_run_on_the_host_equal_the_reference_on_random_cells(
        source, dtype, batch, seed):
    cell = lstm_graph.compile_source(source, "random.cell")
    x = np.random.default_rng(seed).standard_normal((3, batch, 2)).astype(dtype)
    if seed % 3 == 0:
        x[1, 0, 0] = np.nan
    assert_same_gradients(*grads_on_host(cell, x, 3, dtype, seed), dtype, "\n" + source)
