"""The NumPy plan against the reference interpreter, its definition; its event list.

(The native executor has its own tests, in test_native.py.)"""

from __future__ import annotations

import numpy as np
import pytest
from cellgen import valid_cells
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lstm_graph
from lstm_graph.executors.contract import Spec
from lstm_graph.executors.layout import analyse
from lstm_graph.executors.numpy_plan import (
    Activate,
    AddPeep,
    CarryState,
    Compute,
    Gemm,
    NumpyPlan,
    WriteOutput,
    events,
)

TOLERANCE = {"float32": dict(rtol=1e-4, atol=1e-5), "float64": dict(rtol=1e-10, atol=1e-12)}


def both(cell, x, dtype, hidden, seed=0, allow_nonfinite=False):
    ours = cell.compile(input_size=x.shape[-1], hidden_size=hidden, dtype=dtype, seed=seed,
                        executor="numpy")
    ref = cell.compile(input_size=x.shape[-1], hidden_size=hidden, dtype=dtype, seed=seed,
                       executor="reference")
    return ours(x, allow_nonfinite=allow_nonfinite), ref(x, allow_nonfinite=allow_nonfinite)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", lstm_graph.builtin_names())
def test_plan_agrees_with_reference_on_builtins(name, dtype):
    cell = lstm_graph.load_cell(name)
    x = np.random.default_rng(1).standard_normal((12, 3, 5)).astype(dtype)
    (y, state), (y_ref, state_ref) = both(cell, x, dtype, hidden=7)
    np.testing.assert_allclose(y, y_ref, **TOLERANCE[dtype])
    for key in state_ref:
        np.testing.assert_allclose(state[key], state_ref[key], **TOLERANCE[dtype])


@settings(deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(source=valid_cells(), dtype=st.sampled_from(["float32", "float64"]),
       batch=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_plan_agrees_with_reference_on_random_cells(source, dtype, batch, seed):
    cell = lstm_graph.compile_source(source, "random.cell")
    x = np.random.default_rng(seed).standard_normal((3, batch, 2)).astype(dtype)
    if seed % 3 == 0:
        x[1, 0, seed % 2] = np.nan
    (y, state), (y_ref, state_ref) = both(cell, x, dtype, hidden=3, seed=seed,
                                          allow_nonfinite=True)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_ref), err_msg=source)
    np.testing.assert_allclose(y, y_ref, **TOLERANCE[dtype], err_msg=source)
    for key in state_ref:
        np.testing.assert_allclose(state[key], state_ref[key], **TOLERANCE[dtype],
                                   err_msg=source)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_row_split_threads_give_the_same_numbers(threads):
    cell = lstm_graph.load_cell("peephole_lstm")
    run = cell.compile(input_size=4, hidden_size=6, seed=3)
    x = np.random.default_rng(2).standard_normal((9, 7, 4)).astype("float32")
    start = {k: np.zeros((7, 6), "float32") for k in ("c", "h")}
    plan = NumpyPlan(Spec(cell.schedule, np, run.params, 7, 4, 6, np.dtype("float32")),
                     threads=threads)
    y, _ = plan.run(x, start)
    y_ref, _ = cell.compile(input_size=4, hidden_size=6, seed=3, executor="reference")(x)
    np.testing.assert_allclose(y, y_ref, **TOLERANCE["float32"])


def test_lstm_gates_share_one_gemm_and_hoist_the_input():
    layout = analyse(lstm_graph.load_cell("lstm").schedule)
    assert list(layout.groups) == ["h[t-1]"]
    # sigmoid gates first, then tanh: f, i, o share one reciprocal
    assert layout.groups["h[t-1]"].members == ["f.linear", "i.linear", "o.linear", "g.linear"]
    assert layout.hoisted == ["f.linear", "i.linear", "o.linear", "g.linear"]
    assert all(info.static == [("x", f"{name[0]}.W_x")] for name, info in layout.linears.items())


def test_peephole_output_valve_is_ordered_after_the_memory_in_its_group():
    layout = analyse(lstm_graph.load_cell("peephole_lstm").schedule)
    assert layout.groups["h[t-1]"].members == ["f.linear", "i.linear", "g.linear", "o.linear"]


def test_gru_input_only_linear_is_static_and_hoisted():
    layout = analyse(lstm_graph.load_cell("gru").schedule)
    assert "a.linear" not in layout.static  # a is the bare linear: its node is 'a'
    assert "a" in layout.static
    assert "b" not in layout.static


def test_generated_source_is_deterministic_and_has_one_gemm_per_step():
    cell = lstm_graph.load_cell("lstm")
    sources = {cell.compile(input_size=3, hidden_size=64, executor="numpy").compiled(32).source
               for _ in range(2)}
    assert len(sources) == 1
    source = sources.pop()
    assert source.count("matmul(") == 1
    assert source.count("exp(") == 2  # the gate block, and tanh(c)
    assert "reciprocal(z_f_linear_i_linear_o_linear" in source
    assert "old_c, v_c = v_c, old_c" in source  # the new memory is swapped in, not copied


def test_small_steps_use_one_tanh_call_per_run_of_gates():
    source = lstm_graph.load_cell("lstm").compile(input_size=3, hidden_size=8,
                                                  executor="numpy").compiled(1).source
    assert "exp(" not in source
    assert source.count("tanh(") == 2  # the gate block, and tanh(c)


def test_lstm_step_is_one_gemm_one_activation_run_and_three_element_wise_ops():
    cell = lstm_graph.load_cell("lstm")
    assert events(cell.schedule, analyse(cell.schedule)) == [
        Gemm("h[t-1]"),
        Activate(("f.linear", "i.linear", "o.linear", "g.linear")),  # f, i, o, g: adjacent
        Compute("c.mul"), Compute("c.mul2"), Compute("c"),
        Compute("h.tanh"), Compute("h"),
        WriteOutput("h"),
        CarryState("c", swap=True), CarryState("h", swap=True),
    ]


def test_peephole_output_valve_is_activated_only_after_the_new_memory_exists():
    cell = lstm_graph.load_cell("peephole_lstm")
    found = events(cell.schedule, analyse(cell.schedule))
    position = {event: k for k, event in enumerate(found)}
    assert found[0] == Gemm("h[t-1]")
    # f and i peek at the old memory at once; o's peephole waits for the new c
    assert position[AddPeep("f.linear", "c[t-1]", "f.p_c")] < position[Compute("c")]
    assert position[Compute("c")] < position[AddPeep("o.linear", "c", "o.p_c")] \
        < position[Activate(("o.linear",))] < position[Compute("h")]
    assert Activate(("f.linear", "i.linear", "g.linear")) in found  # stage 1's gates at once


def test_a_state_that_lives_in_a_shared_buffer_is_copied_not_swapped():
    cell = lstm_graph.compile_source("input x\nstate h\noutput h\nh = tanh(linear(x, h[t-1]))\n")
    found = events(cell.schedule, analyse(cell.schedule))
    assert found[-1] == CarryState("h", swap=False)  # h is its fused activation's accumulator


def test_returned_state_is_not_overwritten_by_a_later_run():
    run = lstm_graph.load_cell("gru").compile(input_size=2, hidden_size=3, seed=1,
                                              executor="numpy")
    x = np.random.default_rng(0).standard_normal((4, 2, 2)).astype("float32")
    _, first = run(x)
    kept = {k: v.copy() for k, v in first.items()}
    run(x * 2)
    for key in kept:
        np.testing.assert_array_equal(first[key], kept[key])


def test_progress_is_called_once_per_step():
    run = lstm_graph.load_cell("gru").compile(input_size=2, hidden_size=3, executor="numpy")
    calls = []
    run(np.zeros((6, 2, 2), "float32"), progress=calls.append)
    assert calls == [1] * 6
