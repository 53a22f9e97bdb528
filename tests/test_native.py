"""The native executor (generated C) against the reference interpreter, its definition.

Its own float32 exp and tanh are checked element by element against float64
NumPy, in units in the last place.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from cellgen import valid_cells
from conftest import needs_compiler
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import lstm_graph
from lstm_graph.checks import run_allocations
from lstm_graph.errors import BackendError, LstmGraphWarning
from lstm_graph.executors import buildcache, gemm_c, native, native_backward, registry
from lstm_graph.executors.contract import Spec
from lstm_graph.executors.gemm_c import aligned_empty
from lstm_graph.executors.layout import analyse
from lstm_graph.executors.native import MATH_FLOAT, NativePlan, hoists
from lstm_graph.executors.prepare import cache_bytes
from lstm_graph.isa import cpu

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


@pytest.mark.parametrize("name", ["lstm", "gru_cho"])  # one segment a step, and two
@pytest.mark.parametrize("batch, size, hidden", [
    (5, 3, 37),      # one row block: the unit tiles (the last of 5 units) are the items
    (4, 3, 37),      # rows split evenly: each thread owns a row block of 2, no barriers
    (12, 40, 100),   # ... of 6 rows: a whole block each
    (9, 40, 100),    # uneven (4 and 5 rows), one block each: (tile, row block) items
    (20, 40, 100),   # weights in the L2 cache: row blocks are the items, no barriers
    (32, 200, 200),  # weights beyond it: each thread its row blocks, tile by tile
    (13, 30, 250),   # 3 row blocks: (tile, row block) items, a last tile of 10 units
])
def test_two_threads_share_the_items_by_their_work_and_cover_them_all(name, batch, size,
                                                                       hidden, monkeypatch):
    """The threads' shares are even in work, not in items (a partial tile and a smaller
    row block cost less): every item is still run exactly once. Where the items are row
    blocks the threads never wait for each other within a run (each owns its rows, every
    segment of every step): over 30 steps their results are still the reference's."""
    monkeypatch.setattr(native, "ROW_MAJOR_BYTES", 512 << 10)  # the sizes', on any CPU
    monkeypatch.setattr(native, "OWN_WEIGHT_BYTES", 8 << 20)
    cell = lstm_graph.load_cell(name)
    x = np.random.default_rng(batch).standard_normal((30, batch, size)).astype("float64")
    plan, ours, reference = compare(cell, x, hidden, "float64", threads=2)
    assert plan.threads == 2
    assert plan.step.row_major == (hidden <= 100)  # weights within ROW_MAJOR_BYTES
    assert plan.step.weights_cached
    assert_same(ours, reference, "float64")


@pytest.mark.parametrize("batch", [32, 13])
def test_threads_share_the_tiles_where_the_weights_outgrow_the_caches(batch, monkeypatch):
    """Beyond OWN_WEIGHT_BYTES (here made 0) no thread reads all of a step's weights:
    the items are (tile, row block) pairs, shared evenly, with a barrier a step."""
    monkeypatch.setattr(native, "OWN_WEIGHT_BYTES", 0)
    cell = lstm_graph.load_cell("lstm")
    x = np.random.default_rng(batch).standard_normal((30, batch, 30)).astype("float64")
    plan, ours, reference = compare(cell, x, 70, "float64", threads=2)
    assert plan.threads == 2 and not plan.step.weights_cached
    assert_same(ours, reference, "float64")


@pytest.mark.parametrize("batch", [4, 9, 10, 31])
def test_three_threads_own_rows_only_where_they_split_evenly_or_in_two_blocks(batch):
    """Three threads: 9 rows are 3 each (owned, no barriers), 31 are 2 row blocks each
    (owned, one thread a row more), 10 split otherwise (items over tiles and row blocks),
    4 are too few to own (under 2 a thread). Every way, 30 steps equal the reference."""
    cell = lstm_graph.load_cell("lstm")
    x = np.random.default_rng(batch).standard_normal((30, batch, 24)).astype("float64")
    plan, ours, reference = compare(cell, x, 40, "float64", threads=3)
    assert plan.threads == 3 and plan.step.row_major
    assert_same(ours, reference, "float64")


def choices(chooser, timings, runs):
    """The ways (:class:`~lstm_graph.executors.native.Sharing`) ``chooser`` gives over
    ``runs`` runs, each run timed by ``timings(run, way, first)`` seconds a step
    (``first``: the first after a change)."""
    found, last = [], None
    for run in range(runs):
        way = chooser.next()
        chooser.record(way, 10 * timings(run, way, way != last), 10)
        found.append(way)
        last = way
    return found


ONE, TWO, ALONE = native.Sharing(1), native.Sharing(2), native.Sharing(2, alone=True)


def test_small_steps_take_the_thread_count_that_ran_faster_and_see_the_host_change():
    """Both counts are tried first (3 runs each); then the faster is kept and the other
    tried now and then; a phase where two threads are slower than one moves the runs
    to one thread, and its end moves them back, though the first run after a change is
    slow (cold caches, a sleeping worker): a count is tried for a few runs in a row."""
    try_, probe = native.ThreadChoice.TRY, native.PROBE_RUNS

    def host(run, way, first):  # two threads slower from run 100 to run 300
        two = 3.3 if 100 <= run < 300 else 1.95
        return (2.8 if way == ONE else two) * (3 if first else 1)

    found = [way.threads for way in choices(native.ThreadChoice(2), host, 600)]
    assert found[:2 * try_] == [2] * try_ + [1] * try_
    fast = found[2 * try_:100]
    assert fast.count(1) == 0  # 1 thread's next try is 16 * PROBE_RUNS runs away
    slow = found[110:300]
    assert slow.count(2) <= 2 * try_ * len(slow) // probe + try_
    assert slow.count(1) > 0.8 * len(slow)
    after = found[300 + probe + 2 * try_:]
    assert after.count(1) <= try_ * (len(after) // (16 * probe) + 1)

    def steady(run, way, first):  # one thread always faster
        return (1.0 if way.threads == 1 else 1.5) * (3 if first else 1)

    found = [way.threads for way in choices(native.ThreadChoice(3), steady, 200)]
    assert found[:2 * try_] == [3] * try_ + [1] * try_
    # after every PROBE_RUNS runs on one thread, three on all
    assert found[2 * try_:].count(3) == try_ * ((200 - try_) // (probe + try_))


def test_hoisted_products_may_take_all_threads_while_the_steps_take_one():
    """Where the products of x are hoisted a third way is tried: those on all the threads,
    the steps on one. Where it is the fastest (the host's slow phase) the runs take it,
    and try the other two in turn, each after PROBE_RUNS runs; after the phase, all
    the threads again."""
    try_, probe = native.ThreadChoice.TRY, native.PROBE_RUNS

    def host(run, way, first):  # all on two threads slowest from run 100 to run 400
        slow = 100 <= run < 400
        time = {TWO: 3.3 if slow else 1.95, ALONE: 2.6 if slow else 2.4, ONE: 2.8}[way]
        return time * (3 if first else 1)

    chooser = native.ThreadChoice(2, hoisted=True)
    assert chooser.ways == (TWO, ALONE, ONE)
    found = choices(chooser, host, 700)
    assert found[:3 * try_] == [TWO] * try_ + [ALONE] * try_ + [ONE] * try_
    assert set(found[3 * try_:100]) == {TWO}
    slow = found[120:400]
    assert slow.count(ALONE) > 0.8 * len(slow)
    tried = [way for way, before in zip(slow[1:], slow) if way != before and way != ALONE]
    assert tried[:4] == [ONE, TWO, ONE, TWO] or tried[:4] == [TWO, ONE, TWO, ONE]
    # never two tries in a row: each comes back to the fastest way
    assert all(ALONE in found[k:k + probe + try_] for k in range(120, 400 - probe - try_))
    assert found[400 + probe + 3 * try_:].count(TWO) > 0.9 * (700 - 400 - probe - 3 * try_)


class Forced(native.ThreadChoice):
    """A chooser that always gives ``way``."""

    def __init__(self, way):
        super().__init__(way.threads, way.alone)
        self.way = way

    def next(self):
        return self.way


@pytest.mark.parametrize("name", ["lstm", "gru", "peephole_lstm", "gru_cho"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_few_rows_give_the_same_bits_on_one_thread_and_on_several(name, dtype):
    """Below 2 * OWN_ROWS rows every count of threads takes all the rows as one row
    block (the same GEMM calls; the element-wise work split by units), whether the
    step goes row block by row block (weights within ROW_MAJOR_BYTES) or tile by tile
    (float64, H = I = 100): the results are equal to the bit, which is what lets a run
    of small steps take either (ThreadChoice) and stay deterministic."""
    cell = lstm_graph.load_cell(name)
    for batch, size, hidden in ((1, 100, 100), (2, 7, 37), (3, 20, 37), (3, 100, 100)):
        assert batch < 2 * native.OWN_ROWS
        x = np.random.default_rng(batch).standard_normal((9, batch, size)).astype(dtype)
        start = {s: np.random.default_rng(2).standard_normal((batch, hidden)).astype(dtype)
                 for s in cell.graph.states}
        params = cell.compile(input_size=size, hidden_size=hidden, dtype=dtype, seed=1).params
        found, alone = [], 0
        for threads in (1, 2, 3):
            plan = NativePlan(Spec(cell.schedule, np, params, batch, size, hidden,
                                   np.dtype(dtype)), threads=threads)
            found.append(plan.run(x, start))
            if threads > 1 and plan._plain.run_alone is not None:
                plan._plain.choices[batch] = Forced(native.Sharing(threads, alone=True))
                found.append(plan.run(x, start))
                alone += 1
        assert alone == 2 or batch > 1  # one sequence's products of x are hoisted
        for y, final in found[1:]:
            np.testing.assert_array_equal(y, found[0][0])
            for state, value in final.items():
                np.testing.assert_array_equal(value, found[0][1][state])


def test_only_small_steps_of_few_rows_choose_their_thread_count():
    """One sequence at H = 100 chooses (and its runs, on either count, equal the
    reference's); 4 rows (owned by the threads), a large step, or one thread do not."""
    cell = lstm_graph.load_cell("lstm")
    x = np.random.default_rng(0).standard_normal((7, 1, 100)).astype("float32")
    plan, ours, reference = compare(cell, x, 100, "float32", threads=2)
    chooser = plan._plain.choices[1]
    assert isinstance(chooser, native.ThreadChoice)
    build, given, try_ = plan._plain, [], native.ThreadChoice.TRY
    run, run_alone = build.run, build.run_alone

    def counted(t0, t1, batch, pointers, parts):  # the way that reaches the C
        given.append(native.Sharing(parts))
        run(t0, t1, batch, pointers, parts)

    def counted_alone(t0, t1, batch, pointers, parts):
        given.append(native.Sharing(parts, alone=True))
        run_alone(t0, t1, batch, pointers, parts)

    build.run, build.run_alone = counted, counted_alone
    zeros = {s: np.zeros((1, 100), "float32") for s in cell.graph.states}
    for _ in range(3 * try_):
        assert_same(plan.run(x, zeros), reference, "float32")
    # the first run was compare's
    assert given[:3 * try_ - 1] == [TWO] * (try_ - 1) + [ALONE] * try_ + [ONE] * try_
    assert set(chooser.times) == {TWO, ALONE, ONE} and all(chooser.times.values())
    for batch, hidden, threads in ((4, 100, 2), (1, 300, 2), (1, 100, 1)):
        x = np.random.default_rng(0).standard_normal((3, batch, hidden)).astype("float32")
        plan, _, _ = compare(cell, x, hidden, "float32", threads=threads)
        assert plan._plain.choices == {batch: None}


def root(array):
    """The array that owns ``array``'s memory."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


@pytest.mark.parametrize("batch", [1, 2])
def test_a_small_run_makes_y_and_the_states_at_once_and_a_large_one_apart(batch):
    """Up to TOGETHER_BYTES of y, a plain run makes y and the final states in one
    allocation (a microsecond or two of a small call; 64-byte aligned but for one
    sequence); beyond, apart, so that a final state kept alive does not keep a large y
    with it. Either way each is its own."""
    cell = lstm_graph.load_cell("lstm")
    run = cell.compile(input_size=3, hidden_size=20, seed=0)
    reference = cell.compile(input_size=3, hidden_size=20, seed=0, executor="reference")
    for steps, together in ((5, True), (native.TOGETHER_BYTES // (80 * batch) + 1, False)):
        x = np.random.default_rng(steps).standard_normal((steps, batch, 3)).astype("float32")
        run(x)  # the second run of a shape is the plain path's
        y, final = run(x)
        assert_same((y, final), reference(x), "float32")
        roots = {id(root(value)) for value in (y, *final.values())}
        assert (len(roots) == 1) == together
        if batch > 1 or not together:
            assert all(value.ctypes.data % 64 == 0 for value in (y, *final.values()))
        if not together:
            assert all(root(value).nbytes < 1024 for value in final.values())
        before = {name: value.copy() for name, value in final.items()}
        y[...] = np.nan
        for name, value in final.items():
            np.testing.assert_array_equal(value, before[name])


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_repeated_runs_of_changing_shapes_keep_every_result_right(name):
    """A plain run keeps its small work arrays (the hoisted products of one sequence)
    for the next run of that shape and places only y, x and the states then (the step
    works on the states in the array that returns them): runs of shapes that take
    turns, from given states and zeros, on a runner and on the executor itself, with
    a run through the general path (progress) between, each equal the reference, and
    no run changes an earlier run's output or final states."""
    cell = lstm_graph.load_cell(name)
    rng = np.random.default_rng(3)
    ours = cell.compile(input_size=4, hidden_size=19, seed=1)
    reference = cell.compile(input_size=4, hidden_size=19, seed=1, executor="reference")
    kept = []
    for steps, batch in ((5, 1), (7, 1), (5, 1), (5, 1), (5, 3), (5, 1), (9, 2), (9, 2)):
        x = rng.standard_normal((steps, batch, 4)).astype("float32")
        state = {s: rng.standard_normal((batch, 19)).astype("float32")
                 for s in cell.graph.states} if steps == 9 else None
        found = ours(x, state, progress=(lambda done: None) if batch == 3 else None)
        assert ours.ran_with == "native"
        assert_same(found, reference(x, state), "float32", f"T = {steps}, B = {batch}")
        kept += [(value.copy(), value) for value in (found[0], *found[1].values())]
        if batch > 1:  # the step's vector stores
            assert found[0].ctypes.data % 64 == 0
    for copy, value in kept:
        np.testing.assert_array_equal(copy, value)
    plan = ours.compiled(1)
    assert plan.hoisted and plan._plain.plain is not None
    x = rng.standard_normal((5, 1, 4)).astype("float32")
    zeros = {s: np.zeros((1, 19), "float32") for s in cell.graph.states}
    assert_same(plan.run(x, zeros), reference(x), "float32")
    y, final, x_finite, finite = plan.run_from_zeros(x[::-1].copy())
    assert_same((y, final), reference(x[::-1].copy()), "float32")
    assert x_finite and finite
    assert plan.run_from_zeros(x[:2].copy()) is None  # a shape not run before: not kept
    x = rng.standard_normal((5, 3, 4)).astype("float32")
    # the step works on the states in the array it returns them in
    y, final, x_finite, finite = ours.compiled(3).run_from_zeros(x)
    assert x_finite and finite
    assert all(value.ctypes.data % 64 == 0 for value in (y, *final.values()))
    assert_same((y, final), reference(x), "float32")


def assert_same(ours, reference, dtype, message=""):
    (y, state), (y_ref, state_ref) = ours, reference
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_ref), err_msg=message)
    np.testing.assert_allclose(y, y_ref, **TOLERANCE[dtype], err_msg=message)
    assert list(state) == list(state_ref)
    for key in state_ref:
        np.testing.assert_allclose(state[key], state_ref[key], **TOLERANCE[dtype],
                                   err_msg=message)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", lstm_graph.builtin_names())
def test_native_agrees_with_reference_on_builtins(name, dtype, threads):
    cell = lstm_graph.load_cell(name)
    x = np.random.default_rng(1).standard_normal((12, 3, 5)).astype(dtype)
    plan, ours, reference = compare(cell, x, 7, dtype, threads=threads)
    assert plan.threads == threads
    assert_same(ours, reference, dtype)


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"),
                    reason="builds for 16 vector registers with -mno-avx512f (x86-64)")
@pytest.mark.parametrize("name", ["lstm", "gru", "peephole_lstm"])
def test_the_kernels_for_sixteen_vector_registers_agree_with_the_reference(name, monkeypatch):
    """A CPU without AVX-512 (AVX2: 16 vector registers of 8 floats) runs kernels of other
    shapes (gemm_c.widest: 1 or 2 rows x 4 blocks, 3 or 4 x 3, 5 or 6 x 2) than the 32
    registers of AVX-512: built so here, every row count a row block may have (1-6, and
    7-20 split into blocks, two of 5 rows made 6 and 4 by block_row, or, where the
    threads share the tiles, whole blocks of 6 first) and a last, partial
    unit tile equal the reference, forward and backward (whose weight gradients take
    ROW_CHUNKS[16] rows at a time), on one thread and on two."""
    assert native_backward.ROW_CHUNKS[16] < 9 * 8
    cell = lstm_graph.load_cell(name)
    hidden = 37  # 4 whole tiles of 8 and 5 units
    monkeypatch.setenv("LSTM_GRAPH_CFLAGS", "-mno-avx512f")  # forward and backward builds
    for batch in (*range(1, 9), 10, 13, 14, 20):  # 10, 20: blocks of 5 paired as 6, 4
        x = np.random.default_rng(batch).standard_normal((5, batch, 11)) \
            .astype("float32")
        for threads in (1, 2):
            plan, ours, reference = compare(cell, x, hidden, "float32", threads=threads)
            assert_same(ours, reference, "float32", f"H = {hidden}, B = {batch}")
    # weights beyond ROW_MAJOR_BYTES (here 0): the LSTMs' threads share the tiles, whole
    # blocks of 6 rows first (7: 6 and 1; 20: 6, 6, 6 and 2); the GRU's (jobs of 1, 2
    # and 1 blocks) own their rows as before
    with monkeypatch.context() as patched:
        patched.setattr(native, "ROW_MAJOR_BYTES", 0)
        for batch in (4, 7, 8, 13, 20):
            x = np.random.default_rng(batch).standard_normal((5, batch, 11)) \
                .astype("float32")
            for threads in (1, 2):
                plan, ours, reference = compare(cell, x, hidden, "float32", threads=threads)
                assert not plan.step.row_major and plan.step.even_jobs == (name != "gru")
                assert_same(ours, reference, "float32", f"H = {hidden}, B = {batch}, shared")
    for batch in (1, 3, 4, 8, 20):  # 9 steps of 8: the weight gradients in 3 chunks
        x = np.random.default_rng(batch).standard_normal((9 if batch == 8 else 4,
                                                          batch, 11)).astype("float64")
        found, expected = backward_pair(cell, x, hidden, "float64", batch, 2)
        assert_same_gradients(found, expected, "float64")
    # the build the kernels for 16 registers run in: 8 floats (AVX2), 4 (SSE)
    assert plan.gradient().lanes in (4, 8)


def test_sixteen_register_kernels_prefetch_whole_rows_in_a_jobs_first_pass_only():
    """With 16 vector registers a job of 4 blocks on 5 or 6 rows is two kernel calls of 2
    blocks each (every other line of the panel's rows): the first (``lead``) asks for the
    whole rows ahead, both lines, the second for none; kernels of fewer rows, and every
    kernel for 32 registers, take no ``lead`` and never prefetch (gemm_c.prefetches)."""
    def function(text: str, head: str) -> str:
        start = text.index(head)
        return text[start:text.index("\n}\n", start)]

    wide, narrow = gemm_c.kernels({4}).split("#else  /* 16 vector registers */")
    assert "prefetch_row" not in wide
    calls = dict(re.findall(r"case (\d): (.*?) break;",
                            function(narrow, "static inline void kernel_4(")))
    for rows in ("5", "6"):
        first, second = re.findall(rf"kernel_{rows}x2\((.*?)\);", calls[rows])
        assert first.endswith("add, 1") and second.endswith("add, 0")
    assert re.findall(r"\((.*?)\);", calls["4"])[-1].endswith("add")
    six = function(narrow, "static void kernel_6x2(")
    assert "_Bool lead)" in six and six.count("if (lead) prefetch_row(p, q, ps);") == 2
    assert "prefetch_row" not in function(narrow, "static void kernel_4x3(")
    fetch = function(gemm_c.runtime(), "static inline void prefetch_row(")
    assert fetch.count("__builtin_prefetch(") == 2 and "row + 64" in fetch
    assert "if (ps * (ptrdiff_t)sizeof(vec) > 64)" in fetch  # a second line only if any


@pytest.mark.parametrize("rest", range(16))
def test_every_count_of_units_after_the_whole_vectors_is_right(rest):
    """The units of a row after its whole vectors (0 to 15 of them) run in a loop of
    their own, compiled for narrower vectors (256 bits, then 128, then one by one):
    every count of them, on one row block (the tiles are the items) and on several (row
    blocks are the items), with a NaN in the last unit of one sequence, equals the
    reference and leaves the other sequences finite; the backward pass's element-wise
    loops, split the same way, give the reference's gradients (in float64, whose vectors
    hold 8 numbers: 0 to 7 units after them, the counts below 8)."""
    cell = lstm_graph.load_cell("lstm")
    hidden = 16 + rest
    for batch in (3, 14):
        x = np.random.default_rng(rest).standard_normal((4, batch, 5)).astype("float32")
        run = cell.compile(input_size=5, hidden_size=hidden, seed=rest)
        state = {s: np.zeros((batch, hidden), "float32") for s in cell.graph.states}
        state["c"][1, hidden - 1] = np.nan
        reference = cell.compile(input_size=5, hidden_size=hidden, seed=rest,
                                 executor="reference")
        ours = run(x, state, allow_nonfinite=True)
        assert run.ran_with == "native"
        assert_same(ours, reference(x, state, allow_nonfinite=True), "float32")
        assert np.isnan(ours[0][:, 1, hidden - 1]).all()
        assert np.isfinite(np.delete(ours[0], 1, axis=1)).all()
        if rest >= 8:  # float64's tails are rest - 8's again
            continue
        grad_y = np.random.default_rng(rest + 1).standard_normal(ours[0].shape)
        x64 = x.astype("float64")
        found = cell.compile(input_size=5, hidden_size=hidden, seed=rest, dtype="float64") \
            .grad(x64, grad_y)
        expected = cell.compile(input_size=5, hidden_size=hidden, seed=rest, dtype="float64",
                                executor="reference").grad(x64, grad_y)
        assert_same_gradients(found, expected, "float64", f"H = {hidden}, B = {batch}")


@pytest.mark.parametrize("batch", [1, 3, 14])
def test_the_step_says_whether_the_results_it_wrote_were_finite(batch):
    """A run from zeros returns whether every value of y and of the final states was
    finite (each thread looks at its rows of each step's y and of the final states in
    the C), so the runner need not read the results again: numbers near the largest
    float32 (2e38) are finite; a state that overflows (u, not in y) is not, and it is
    warned about on a call that runs this way (the shape's second) as on the first; so is
    y that overflows."""
    cell = lstm_graph.compile_source("cell sums\ninput x\nstate s, u\noutput s\n"
                                     "s = s[t-1] + linear(x)\nu = u[t-1] + linear(x)\n",
                                     "sums.cell")
    eye, zero = np.eye(16, dtype="float32"), np.zeros(16, "float32")
    run = cell.compile(input_size=16, hidden_size=16, weights={
        "s.W_x": eye * np.float32(1e-30), "s.b": zero, "u.W_x": eye, "u.b": zero})
    x = np.zeros((3, batch, 16), "float32")
    x[0, -1, 5] = 2e38
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(2):  # the second call runs from the shape's kept work arrays
            y, final = run(x)
        assert run.ran_with == "native" and final["u"][-1, 5] == np.float32(2e38)
    plan = run.compiled(batch)
    assert plan.run_from_zeros(x).finite is True
    x[1, -1, 5] = 2e38  # u overflows at step 2; y stays 4e8
    assert plan.run_from_zeros(x).finite is False
    for _ in range(2):
        with pytest.warns(LstmGraphWarning, match="'u' is not finite at step 2"):
            run(x)
    x[1, -1, 5] = np.inf  # and y too
    assert plan.run_from_zeros(x).finite is False


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batch", [1, 3, 14])
def test_nan_in_x_is_refused_whether_the_step_or_the_runner_finds_it(batch, dtype):
    """A plain call leaves x's test for NaN and infinity to the native step, which looks
    at each step's rows as it reads them; the runner tests x itself where no such run
    happens (the shape's first call). Either way x holding NaN (at its last number, the
    second thread's rows where there are two) is refused with the same message, naming
    the first index, and earlier results stay as they were; allow_nonfinite runs it."""
    run = lstm_graph.load_cell("lstm").compile(input_size=5, hidden_size=40, seed=0,
                                               dtype=dtype)
    x = np.random.default_rng(batch).standard_normal((4, batch, 5)).astype(dtype)
    bad = x.copy()
    bad[3, batch - 1, 4] = np.nan
    message = rf"x holds NaN or infinity, first at index \(3, {batch - 1}, 4\)"
    with pytest.raises(lstm_graph.errors.DataError, match=message):
        run(bad)  # the shape's first call: tested before the run
    y, final = run(x)
    kept = y.copy()
    assert run.compiled(batch).run_from_zeros(bad).x_finite is False
    assert run.compiled(batch).run_from_zeros(x).x_finite is True
    with pytest.raises(lstm_graph.errors.DataError, match=message):
        run(bad)  # found by the step
    np.testing.assert_array_equal(y, kept)
    found, _ = run(bad, allow_nonfinite=True)
    assert np.isnan(found[3, batch - 1]).all() and np.isfinite(found[:3]).all()


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_tiles_rows_and_threads_cover_every_unit_and_row(name, threads):
    """Several unit tiles (the last one partial) and row blocks (the last one short),
    split between threads; a NaN in one sequence stays in that sequence."""
    cell = lstm_graph.load_cell(name)
    x = np.random.default_rng(4).standard_normal((5, 13, 9)).astype("float32")
    x[2, 4, 3] = np.nan
    _, ours, reference = compare(cell, x, 41, "float32", threads=threads)
    assert_same(ours, reference, "float32")


#: A value computed from the input alone (v0), read by a per-step linear beside a state and
#: through a peephole: the native step once computed it step by step and then looked for it
#: among the values made before the loop (KeyError: 'v0').
STATIC_BESIDE_A_STATE = """cell random
input x
state s0, s1
output s0
v0 = linear(x)
s1 = linear(x, s0[t-1], v0)
s0 = s0[t-1]
v1 = linear(peep(v0), x, s0[t-1])
"""


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=valid_cells(), dtype=st.sampled_from(["float32", "float64"]),
       batch=st.integers(1, 3), threads=st.sampled_from([1, 2]), seed=st.integers(0, 2**16))
@example(source=STATIC_BESIDE_A_STATE, dtype="float32", batch=2, threads=2, seed=1)
@example(source=STATIC_BESIDE_A_STATE.replace("output s0", "output s1"), dtype="float64",
         batch=3, threads=1, seed=3)
def test_native_agrees_with_reference_on_random_cells(source, dtype, batch, threads, seed):
    cell = lstm_graph.compile_source(source, "random.cell")
    x = np.random.default_rng(seed).standard_normal((3, batch, 2)).astype(dtype)
    if seed % 3 == 0:
        x[1, 0, seed % 2] = np.nan
    with poisoned():
        _, ours, reference = compare(cell, x, 3, dtype, seed, threads=threads)
        _, other, _ = compare(cell, x, 3, dtype, seed, threads=3 - threads)
    assert_same(ours, reference, dtype, source)
    # one thread and two give the same bits (ThreadChoice may take either, run to run)
    np.testing.assert_array_equal(ours[0], other[0])
    for state, value in ours[1].items():
        np.testing.assert_array_equal(value, other[1][state])


def test_extra_compiler_flags_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LSTM_GRAPH_CACHE", str(tmp_path))
    monkeypatch.setenv("LSTM_GRAPH_CFLAGS", "-DLG_UNUSED=1 '-DLG_QUOTED=a b'")
    assert all(a[-2:] == ("-DLG_UNUSED=1", "-DLG_QUOTED=a b") for a in native.attempts())
    built = []
    library = buildcache.library
    monkeypatch.setattr(buildcache, "library", lambda source, attempts, *args, **kw: (
        built.append((attempts, found := library(source, attempts, *args, **kw))) or found))
    if "avx512f" in cpu()[1]:
        monkeypatch.setenv("LSTM_GRAPH_CFLAGS", "-mno-avx512f")  # 16 registers, 8 floats
    x = np.random.default_rng(0).standard_normal((4, 3, 5)).astype(np.float32)
    _, ours, reference = compare(lstm_graph.load_cell("lstm"), x, 9, "float32")
    assert_same(ours, reference, "float32", "lstm")
    attempts, found = built[-1]
    assert attempts[0][-1] == shlex.split(os.environ["LSTM_GRAPH_CFLAGS"])[-1]
    if os.environ["LSTM_GRAPH_CFLAGS"] == "-mno-avx512f":
        assert gemm_c.LANES_SYMBOL.bind(found)() == 8
    for bad, message in (("'-O2", "is not a list of flags"), ("extra.c", "not a compiler flag")):
        monkeypatch.setenv("LSTM_GRAPH_CFLAGS", bad)
        with pytest.raises(BackendError, match=r"\$LSTM_GRAPH_CFLAGS"):
            native.attempts()
        with pytest.raises(BackendError, match=message):
            native.attempts()


def one_loop(monkeypatch):
    """The element-wise work generated as one loop, every statement in phase 0."""
    whole = native.phase_loops
    monkeypatch.setattr(native, "phase_loops", lambda body, lines, hidden: whole(
        body, [native.Line(0)] * len(lines), hidden))


def run_bits(cell, x, hidden, dtype, threads=1):
    """``y`` and the final states of a native run of ``cell`` over ``x`` (seed 0)."""
    run = cell.compile(input_size=x.shape[-1], hidden_size=hidden, dtype=dtype, seed=0)
    plan = NativePlan(spec(cell, run.params, x.shape[1], x.shape[-1], hidden, dtype),
                      threads=threads)
    y, final = plan.run(x, {s: np.full((x.shape[1], hidden), 0.3, dtype)
                            for s in cell.schedule.graph.states})
    return y.copy(), {s: v.copy() for s, v in final.items()}


@pytest.mark.parametrize("name", ["lstm", "gru", "peephole_lstm", "lstm_proj"])
def test_the_element_wise_phases_give_the_bits_of_one_loop(name, monkeypatch, tmp_path):
    # blocks of rows and units past a phase's 4 vectors; a partial tile (the _rest copy)
    monkeypatch.setenv("LSTM_GRAPH_CACHE", str(tmp_path))
    cell = lstm_graph.load_cell(name)
    phased = NativePlan(spec(cell, cell.compile(input_size=3, hidden_size=8).params, 2, 3,
                             8)).source
    assert "/* phase 1 */" in phased and "kept_v" in phased
    for batch, hidden, dtype, threads in [(7, 37, "float32", 1), (20, 100, "float32", 2),
                                          (13, 150, "float64", 1), (1, 72, "float32", 1)]:
        x = np.random.default_rng(batch).standard_normal((4, batch, 5)).astype(dtype) * 3
        x[1, 0, 0] = np.nan  # a NaN travels through the kept values as through registers
        with monkeypatch.context() as patched:
            one_loop(patched)
            want = run_bits(cell, x, hidden, dtype, threads)
        got = run_bits(cell, x, hidden, dtype, threads)
        np.testing.assert_array_equal(got[0], want[0])
        for state, value in want[1].items():
            np.testing.assert_array_equal(got[1][state], value)


def test_phases_cut_chains_of_two_math_functions():
    from lstm_graph.executors.codegen_c import step_kernels

    def phases(name):
        cell = lstm_graph.load_cell(name)
        (segment, *_) = step_kernels(cell.schedule, analyse(cell.schedule), 8).segments
        return {line.defines: line.phase for line in segment.lines if line.defines}, segment

    lstm, _ = phases("lstm")  # the valves and c in phase 0; tanh(c) and h in phase 1
    assert [lstm[f"v{k}"] for k in range(13)] == [0] * 11 + [1, 1]
    assert lstm["new_c"] == lstm["new_h"] == 1  # the states written in the last phase
    peephole, _ = phases("peephole_lstm")  # the output valve reads the new c: phase 1
    assert max(peephole.values()) == 1
    rnn, segment = phases("rnn")  # one math function deep: one phase, one loop
    assert set(rnn.values()) == {0} and not any(line.phase for line in segment.lines)


# -- the backward pass, compiled ----------------------------------------------------------

GRAD_TOLERANCE = {"float32": dict(rtol=1e-4, atol=1e-4), "float64": dict(rtol=1e-10, atol=1e-10)}


@contextlib.contextmanager
def poisoned():
    """Every array the native executor allocates without filling starts as NaN, so that a
    number read before it is written shows in the result, whatever the allocator gave."""
    def nan_empty(shape, dtype):
        array = aligned_empty(shape, np.dtype(dtype))
        array[...] = np.nan
        return array

    with mock.patch.object(gemm_c, "aligned_empty", nan_empty), \
            mock.patch.object(native, "aligned_empty", nan_empty), \
            mock.patch.object(native_backward, "aligned_empty", nan_empty):
        yield


def backward_pair(cell, x, hidden, dtype, seed, threads, exact=False):
    """The native backward and the reference's on ``x``, from random states, for a random
    loss on the output and the final states (the native's arrays poisoned); with
    ``exact``, also the reference's in float64 on the same numbers (None for float64)."""
    rng = np.random.default_rng(seed + 7)
    batch, size = x.shape[1], x.shape[-1]
    reference = cell.compile(input_size=size, hidden_size=hidden, dtype=dtype, seed=seed,
                             executor="reference")
    start = {s: rng.standard_normal((batch, hidden)).astype(dtype) for s in cell.graph.states}
    y, _ = reference(x, start, allow_nonfinite=True)
    grad_y = rng.standard_normal(y.shape).astype(dtype)
    grad_final = {s: rng.standard_normal((batch, hidden)).astype(dtype)
                  for s in cell.graph.states}
    expected = reference.grad(x, grad_y, state=start, grad_state=grad_final,
                              allow_nonfinite=True)
    with poisoned():
        plan = NativePlan(spec(cell, reference.params, batch, size, hidden, dtype),
                          threads=threads)
        found = plan.grad(x, start, grad_y, grad_final)
    if not exact:
        return found, expected
    if dtype == "float64":
        return found, expected, None
    weights = {k: v.astype("float64") for k, v in reference.params.items()}
    wide = cell.compile(input_size=size, hidden_size=hidden, weights=weights or None,
                        dtype="float64", executor="reference")
    return found, expected, wide.grad(
        x.astype("float64"), grad_y.astype("float64"),
        state={k: v.astype("float64") for k, v in start.items()},
        grad_state={k: v.astype("float64") for k, v in grad_final.items()},
        allow_nonfinite=True)


def assert_same_gradients(ours, expected, dtype, message="", exact=None):
    """Ours equal to the reference's within GRAD_TOLERANCE, NaN for NaN; given ``exact``
    (the reference's in float64 on the same numbers), each number also within 4 times
    the largest error the float32 reference itself makes in that array (in that step,
    for arrays over time): where a cell's values grow step by step and cancel, a sum
    taken in another order rounds as far off as the terms are large, in whichever
    element the cancellation falls (the float64 examples hold such cells to 1e-10)."""
    tolerance = GRAD_TOLERANCE[dtype]

    def parts(gradients):
        return [("x", gradients.x), ("y", gradients.y),
                *((f"weights {k}", gradients.weights[k]) for k in expected.weights),
                *((f"state {k}", gradients.state[k]) for k in expected.state)]

    exacts = [None] * len(parts(expected)) if exact is None else [v for _, v in parts(exact)]
    for (what, found), (_, wanted), wide in zip(parts(ours), parts(expected), exacts):
        np.testing.assert_array_equal(np.isnan(found), np.isnan(wanted), err_msg=what + message)
        if wide is None:
            np.testing.assert_allclose(found, wanted, **tolerance, err_msg=what + message)
            continue
        error = np.abs(wanted - wide)
        error[~(np.isfinite(wanted) & np.isfinite(wide))] = 0.0
        own = error.max(axis=(1, 2), keepdims=True) if error.ndim == 3 else error.max()
        allowed = tolerance["atol"] + tolerance["rtol"] * np.abs(wanted) + 4 * own
        excess = np.abs(found.astype("float64") - wanted) - allowed
        assert not np.any(excess > 0), f"{what}: {np.nanmax(excess)} beyond{message}"


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", lstm_graph.builtin_names())
def test_native_backward_equals_the_reference_on_builtins(name, dtype, threads):
    """Several row blocks (split between the threads) and unit tiles (the last partial)."""
    cell = lstm_graph.load_cell(name)
    x = np.random.default_rng(3).standard_normal((6, 13, 5)).astype(dtype)
    assert_same_gradients(*backward_pair(cell, x, 41, dtype, 0, threads), dtype)


@contextlib.contextmanager
def at_the_end_of_a_page(values):
    """A copy of ``values`` whose last number ends a page, the page after it unreadable:
    a read past its end kills the process."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    page = os.sysconf("SC_PAGE_SIZE")
    size = -(-values.nbytes // page) * page
    start = libc.mmap(None, size + page, 3, 0x22, -1, 0)  # read-write, private, anonymous
    assert start not in (None, ctypes.c_void_p(-1).value)
    try:
        assert libc.mprotect(start + size, page, 0) == 0  # the next page: no access
        memory = (ctypes.c_char * values.nbytes).from_address(start + size - values.nbytes)
        placed = np.frombuffer(memory, values.dtype).reshape(values.shape)
        placed[...] = values
        yield placed
    finally:
        libc.munmap(start, size + page)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("size, hidden, by_unit", [
    (37, 37, True),  # unit by unit: x read in vectors, from a padded copy of it
    (2, 64, False),  # an operand narrower than a vector, rows 4 KiB apart in dZ: transposed
])
def test_weight_gradients_unit_by_unit_or_transposed_equal_the_reference(size, hidden,
                                                                         by_unit, dtype):
    """Both layouts of the weight gradients' GEMM, with x the caller's array ending a page:
    unit by unit, its rows are read in vectors, from a padded copy (x itself would be read
    past its end)."""
    cell = lstm_graph.load_cell("lstm")
    x = np.random.default_rng(4).standard_normal((5, 13, size)).astype(dtype)
    with at_the_end_of_a_page(x) as placed:
        ours, expected = backward_pair(cell, placed, hidden, dtype, 0, 2)
        np.testing.assert_array_equal(placed, x)
    assert_same_gradients(ours, expected, dtype)
    plan = NativePlan(spec(cell, cell.compile(input_size=size, hidden_size=hidden).params, 13,
                           size, hidden, dtype))
    grad = native_backward.NativeGrad(plan)
    assert {o.operand: o.out in grad.by_unit for o in grad.outers} == \
        {"x": by_unit, "h[t-1]": by_unit}


#: A state made from the input alone, its copy a state too (their carries are the static
#: values' gradients), and a value multiplied by a matrix in the step that made it (two
#: segments; the copy's gradient reaches the linear through a buffer, not its dZ).
STATIC_STATES = """cell random
input x
state s0, s1
output s0
v0 = s0[t-1]
s1 = s0
s0 = linear(x)
u0 = x
"""
#: One sequence (the step hoists x's products over all rows before the loop): a linear of
#: a peephole alone has no product there, only its bias.
PEEPHOLE_ONLY = """cell random
input x
state s0
output u1
u1 = 2 - (1 * (x))
v0 = 0.5 - ((s0[t-1]) * (affine(linear(u1, s0[t-1], x), -1.5, 0.25)))
v1 = linear(peep(v0))
s0 = (s0[t-1]) + (v1)
"""
#: Values that grow about 2.5 times a step (to 6.6e10 in 4 steps at the example's seed):
#: float32 sums taken in another order differ by 1.9e-4 of y there, as the reference's
#: own float32 error does from float64.
GROWING = """cell random
input x
state s0, s1, s2
output s0
k0 = 1
u1 = x
s0 = (((linear(x, u1, s2[t-1])) + (s0[t-1])) + (relu(s0[t-1]))) * (1.5 + (leaky_relu(s2[t-1], 0.2)))
u0 = x
s1 = 1.5 + (s0)
s2 = softplus((relu(s1[t-1])) + (leaky_relu(s0, 0.2)))
"""
LATER_SEGMENT = """cell random
input x
state s0, s1
output v0
s1 = s0[t-1]
v2 = linear(u1, v0)
s0 = v0
u1 = x
v0 = linear(s1[t-1], x)
"""


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=valid_cells(), dtype=st.sampled_from(["float32", "float64"]),
       batch=st.integers(1, 14), threads=st.sampled_from([1, 2]), seed=st.integers(0, 2**16))
@example(source=STATIC_STATES, dtype="float32", batch=2, threads=1, seed=0)
@example(source=LATER_SEGMENT, dtype="float32", batch=2, threads=2, seed=5457)
@example(source=STATIC_BESIDE_A_STATE, dtype="float64", batch=13, threads=2, seed=3)
@example(source=PEEPHOLE_ONLY, dtype="float32", batch=1, threads=1, seed=2)
@example(source=GROWING, dtype="float32", batch=8, threads=1, seed=18277)
def test_native_backward_equals_the_reference_on_random_cells(source, dtype, batch, threads,
                                                              seed):
    cell = lstm_graph.compile_source(source, "random.cell")
    x = np.random.default_rng(seed).standard_normal((4, batch, 2)).astype(dtype)
    if seed % 3 == 0:
        x[1, 0, seed % 2] = np.nan  # NaN takes the reference's path backwards too
    ours, expected, exact = backward_pair(cell, x, 3, dtype, seed, threads, exact=True)
    assert_same_gradients(ours, expected, dtype, "\n" + source, exact)


@pytest.mark.parametrize("name", ["gru", "peephole_lstm"])
def test_the_step_hoists_x_for_one_sequence_and_for_weights_beyond_the_caches(name,
                                                                               monkeypatch):
    """Hoisted (x's products over all rows before the loop, in C): for one sequence, and
    where a step's weights outgrow the caches (x's weights a good share of them: I = 23
    beside H = 11); folded (x_t beside h_{t-1}) elsewhere."""
    cell = lstm_graph.load_cell(name)
    x = np.random.default_rng(6).standard_normal((7, 9, 23)).astype("float64")
    run = cell.compile(input_size=23, hidden_size=11, dtype="float64")
    assert NativePlan(spec(cell, run.params, 1, 23, 11, "float64")).hoisted
    assert not NativePlan(spec(cell, run.params, 9, 23, 11, "float64")).hoisted
    monkeypatch.setattr(native, "STEP_WEIGHT_BYTES", 0)
    monkeypatch.setattr(native, "HOIST_BYTES_PER_ROW", 0)
    for batch, threads in ((1, 1), (9, 2)):
        plan, ours, reference = compare(cell, x[:, :batch], 11, "float64", threads=threads)
        assert plan.hoisted
        assert_same(ours, reference, "float64")
        assert_same_gradients(*backward_pair(cell, x[:, :batch], 11, "float64", 0, threads),
                              "float64")


def test_a_native_run_of_fewer_sequences_uses_the_first_rows_backwards_too():
    cell = lstm_graph.load_cell("peephole_lstm")
    run = cell.compile(input_size=3, hidden_size=9, seed=2)
    plan = NativePlan(spec(cell, run.params, 16, 3, 9), threads=2)
    rng = np.random.default_rng(1)
    for batch in (16, 5, 11):
        x = rng.standard_normal((7, batch, 3)).astype("float32")
        grad_y = rng.standard_normal((7, batch, 9)).astype("float32")
        zeros = {s: np.zeros((batch, 9), "float32") for s in cell.graph.states}
        expected = cell.compile(input_size=3, hidden_size=9, seed=2, executor="reference") \
            .grad(x, grad_y)
        assert_same_gradients(plan.grad(x, zeros, grad_y, {}), expected, "float32",
                              f" B = {batch}")


def test_the_backward_source_keeps_only_what_the_vjps_read():
    cell = lstm_graph.load_cell("lstm")
    run = cell.compile(input_size=3, hidden_size=8)
    grad = NativePlan(spec(cell, run.params, 4, 3, 8)).gradient()
    # the gates, c, tanh(c) and h: no pre-activation is kept, no value recomputed
    assert sorted(grad.kernels.tape.columns) == ["c", "f", "g", "h", "h.tanh", "i", "o"]
    assert "lg_expf" not in grad.source.split("back_elements_0")[1]
    # dh = dZ . W, the last tile's vectors only
    assert "kernel_c(TILE_VECTORS(8 - u * UNITS, WIDEST), m, 32, dz_next + r * 32 + 0, 32" \
        in grad.source
    assert "outer(m, c, q," in grad.source  # the weight gradients over all rows


def test_default_executor_is_native_and_picks_the_threads_by_step_size():
    run = lstm_graph.load_cell("lstm").compile(input_size=4, hidden_size=32)
    run(np.zeros((2, 1, 4), "float32"))
    assert run.ran_with == "native"
    assert run.compiled(1).threads == 1  # small steps: one thread (4 · 32 · 36 < 2^14)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert run.compiled(64).threads == min(cpus or 1, 8)  # large ones: every CPU


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
    # the f, i and o valves; g, tanh(c) and the definition: the element-wise loop twice,
    # for the whole vectors and for the units after them (elements_0_rest)
    assert source.count("lg_expf(-") == 2 * 3
    assert source.count("lg_tanhf(") == 2 * 2 + 1
    assert "NARROW_VECTORS static void elements_0_rest(" in source
    # each step's y and the final states looked at while in cache (rows c0..c1)
    assert "look_at(&seen, y + c0 * 8, (c1 - c0) * 8);" in source
    # one GEMM for the four gates, over [x_t, h[t-1]] side by side: no S buffer is read
    assert "kernel_4(m, 3, X_0 + r * 3, 3, 8, snap_h + r * 8, 8," in source
    # the three ways a segment walks its items (owned row blocks, one row block, tile-major)
    assert source.count("kernel_4(m, 3, X_0") == 3 and "S[" not in source
    assert "const ptrdiff_t i = b * 8 + j" in source  # indices never overflow an int
    assert not re.search(r"\b(int|long)\s+\w+\s*[=;,)]", source)
    assert len(list(tmp_path.glob("lstm-graph-v1/*.so"))) == 1  # built once, then reused
    NativePlan(spec(cell, run.params, 5, 3, 8))  # another batch size: the same build
    assert len(list(tmp_path.glob("lstm-graph-v1/*.so"))) == 1
    double = NativePlan(spec(cell, run.params, 2, 3, 8, "float64")).source
    assert "lg_expf" not in double and "exp(-" in double  # float64: the C library's


@pytest.mark.parametrize("sixteen", [False, True])
@pytest.mark.parametrize("name, batch, hidden", [("lstm", 20, 100), ("gru", 7, 37)])
def test_the_generated_c_compiles_without_a_warning(tmp_path, name, batch, hidden, sixteen):
    """Forward and backward C, with partial unit tiles and row blocks, under -Wall -Wextra,
    as built here and (``sixteen``, x86-64) for 16 vector registers, as for AVX2: GCC 12
    once warned of undefined behaviour in a GEMM's dead remainder loop."""
    if sixteen and platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("builds for 16 vector registers with -mno-avx512f (x86-64)")
    extra = ("-mno-avx512f",) if sixteen else ()
    cell = lstm_graph.load_cell(name)
    run = cell.compile(input_size=hidden, hidden_size=hidden)
    plan = NativePlan(spec(cell, run.params, batch, hidden, hidden))
    for part, source in (("forward", plan.source),
                         ("backward", native_backward.NativeGrad(plan).source)):
        (tmp_path / "step.c").write_text(source)
        for flags in native.ATTEMPTS:  # the first the compiler takes, as the build cache does
            flags = (*flags, *extra)
            done = subprocess.run([buildcache.compiler(), *flags, "-Wall", "-Wextra", "-o",
                                   str(tmp_path / "step.so"), str(tmp_path / "step.c"), "-lm"],
                                  capture_output=True, text=True, timeout=300)
            if done.returncode == 0:
                break
        assert done.returncode == 0 and "warning" not in done.stderr, (part, done.stderr)


def test_progress_reports_every_step_with_one_or_two_threads(monkeypatch):
    monkeypatch.setattr(native, "PROGRESS_WORK", 1)  # a report after every step
    cell = lstm_graph.load_cell("gru")
    run = cell.compile(input_size=2, hidden_size=3)
    for threads in (1, 2):
        plan = NativePlan(spec(cell, run.params, 2, 2, 3), threads=threads)
        calls: list[int] = []
        plan.run(np.zeros((6, 2, 2), "float32"), {"h": np.zeros((2, 3), "float32")},
                 calls.append)
        assert calls == [1] * 6


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


@pytest.mark.parametrize("work", ["grad", "trace", "run"])
def test_each_work_compiles_only_the_library_it_runs_and_the_others_when_first_needed(
        work, monkeypatch):
    """A gradient runs the backward pass's library (its forward keeps the tape): compiling
    the plain step's too cost a first ``grad`` (and every training run) ~0.7 s for nothing.
    A run made after it compiles that library then, and gives the same ``y``."""
    built = []
    library = buildcache.library

    def counted(source, *args, **kwargs):
        built.append(source)
        return library(source, *args, **kwargs)

    monkeypatch.setattr(buildcache, "library", counted)
    run = lstm_graph.load_cell("gru").compile(input_size=5, hidden_size=11, seed=3)
    x = np.random.default_rng(0).standard_normal((4, 2, 5)).astype("float32")
    found = {"grad": lambda: run.grad(x, np.ones((4, 2, 11), "float32")).y,
             "trace": lambda: run.trace(x)["h"], "run": lambda: run(x)[0]}[work]()
    plan = run.compiled(2)
    assert len(built) == 1 and run.ran_with == "native"
    assert (plan._plain_build is None) == (work != "run")
    assert (plan._traced is None) == (work != "trace")
    assert (plan._backward is None) == (work != "grad")
    y, _ = run(x)
    assert len(built) == 1 + (work != "run")
    np.testing.assert_allclose(y, found, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("work", ["grad", "trace"])
def test_a_step_compiled_after_new_weights_runs_with_them(work):
    """A plain step compiled on first use after ``update`` (a trainer's executor, built
    for the gradient) packed the weights the executor was built with: 0.39 off (h86)."""
    cell = lstm_graph.load_cell("lstm")
    old = cell.compile(input_size=3, hidden_size=5, seed=1).params
    new = cell.compile(input_size=3, hidden_size=5, seed=2).params
    executor = registry.build("plan", Spec(cell.schedule, np, dict(old), 2, 3, 5,
                                           np.dtype("float32")), "numpy", work=work)
    executor.update(dict(new))
    x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype("float32")
    zeros = {s: np.zeros((2, 5), "float32") for s in cell.graph.states}
    y, _ = executor.run(x, zeros)
    want, _ = cell.compile(input_size=3, hidden_size=5, weights=dict(new),
                           executor="reference")(x)
    np.testing.assert_allclose(y, want, **TOLERANCE["float32"])


def test_a_compiler_failing_on_a_first_gradient_falls_back_to_the_numpy_plan(monkeypatch):
    monkeypatch.setenv("CC", "/bin/false")
    run = lstm_graph.load_cell("rnn").compile(input_size=2, hidden_size=3)
    with pytest.warns(LstmGraphWarning, match="failed on the generated step"):
        found = run.grad(np.ones((2, 1, 2), "float32"), np.ones((2, 1, 3), "float32"))
    assert run.ran_with == "numpy"
    assert np.isfinite(found.x).all()


def test_runs_of_any_length_reuse_the_plan_and_keep_no_per_run_buffer():
    cell = lstm_graph.load_cell("peephole_lstm")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 4, 3)).astype("float32")
    plan, first, reference = compare(cell, x, 5, "float32", threads=2)
    kept = {name: array.nbytes for name, array in plan._plain.fixed.items()}
    zeros = {s: np.zeros((4, 5), "float32") for s in cell.graph.states}
    reference_run = cell.compile(input_size=3, hidden_size=5, seed=0, executor="reference")
    for steps in (6, 9, 1):
        x = rng.standard_normal((steps, 4, 3)).astype("float32")
        assert_same(plan.run(x, zeros), reference_run(x), "float32", f"T = {steps}")
    assert {name: array.nbytes for name, array in plan._plain.fixed.items()} == kept


def test_two_python_threads_running_plans_of_one_build_take_turns_in_the_pool():
    cell = lstm_graph.load_cell("gru")
    run = cell.compile(input_size=6, hidden_size=40)
    plans = [NativePlan(spec(cell, run.params, 8, 6, 40), threads=2) for _ in range(2)]
    rng = np.random.default_rng(5)
    xs = [rng.standard_normal((30, 8, 6)).astype("float32") for _ in range(2)]
    zeros = {"h": np.zeros((8, 40), "float32")}
    expected = [plan.run(x, zeros)[0] for plan, x in zip(plans, xs)]
    results: list[list[np.ndarray]] = [[], []]

    def repeat(k: int) -> None:
        for _ in range(20):
            results[k].append(plans[k].run(xs[k], zeros)[0])

    workers = [threading.Thread(target=repeat, args=(k,)) for k in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for k in range(2):
        assert all(np.array_equal(y, expected[k]) for y in results[k])


def _thread_seconds() -> dict[str, float]:
    """CPU seconds each thread of this process has used (from /proc)."""
    found = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[task.name] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return found


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc")
def test_worker_threads_sleep_soon_after_a_run():
    """After a run the pool's workers look for the next one only briefly (200 µs, so
    that back-to-back runs skip waking them), then sleep: no thread of ours spins, and
    the next contender gets the cores."""
    cell = lstm_graph.load_cell("lstm")
    run = cell.compile(input_size=8, hidden_size=64)
    plan = NativePlan(spec(cell, run.params, 16, 8, 64), threads=2)
    x = np.random.default_rng(0).standard_normal((50, 16, 8)).astype("float32")
    plan.run(x, {s: np.zeros((16, 64), "float32") for s in cell.graph.states})
    time.sleep(0.01)
    before = _thread_seconds()
    time.sleep(0.5)
    after = _thread_seconds()
    main = str(threading.get_native_id())
    busy = sum(after[t] - before[t] for t in after if t in before and t != main)
    assert busy < 0.1


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
    assert len(list((tmp_path / "cache").glob("lstm-graph-v1/*.so"))) == 1


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
    evenly = np.linspace(-87, 88, 1_000_001, dtype=np.float32)
    at_random = np.random.default_rng(1).uniform(-87, 88, 2_000_000).astype(np.float32)
    for x in (evenly, at_random):  # points between the grid's found 1.01 ulp once
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
    """Exactly 0 and inf past exp's range, as NumPy's and PyTorch's: a sigmoid of -inf
    is 0 (not 4e-39), so that inf times it is NaN there too."""
    x = np.array([-np.inf, -1e30, -100, 100, 1e30, np.inf, np.nan], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exp = apply(math_library, 0, x)
        tanh, sigmoid = apply(math_library, 1, x), apply(math_library, 2, x)
    np.testing.assert_array_equal(exp[:-1], [0, 0, 0, np.inf, np.inf, np.inf])
    np.testing.assert_array_equal(tanh[:-1], [-1, -1, -1, 1, 1, 1])
    np.testing.assert_array_equal(sigmoid[:-1], [0, 0, 0, 1, 1, 1])
    assert np.isnan(exp[-1]) and np.isnan(tanh[-1]) and np.isnan(sigmoid[-1])


def test_a_gate_shut_by_infinity_times_infinity_is_nan_as_in_the_reference():
    """sigmoid(-inf) · -inf: 0 · inf, NaN in NumPy; the native step gave -inf."""
    cell = lstm_graph.compile_source("input x\nstate h\noutput h\nk = linear(x, h[t-1])\n"
                                     "h = sigmoid(k) * k\n")  # in the step: it reads h[t-1]
    weights = {"k.W_x": np.ones((1, 1), "float32"), "k.W_h": np.ones((1, 1), "float32"),
               "k.b": np.zeros(1, "float32")}
    x = np.array([[[1.0]], [[-np.inf]], [[2.0]]], "float32")
    y, _ = cell.compile(weights=weights)(x, allow_nonfinite=True)
    y_ref, _ = cell.compile(weights=weights, executor="reference")(x, allow_nonfinite=True)
    assert np.isnan(y_ref[1:]).all() and np.isnan(y[1:]).all()


def test_the_thread_count_follows_lstm_graph_threads_then_omp_num_threads(monkeypatch):
    from lstm_graph.executors import prepare

    monkeypatch.setattr(prepare, "usable_cpus", lambda: 16)
    monkeypatch.delenv("LSTM_GRAPH_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert prepare.usable_threads() == 3
    monkeypatch.setenv("LSTM_GRAPH_THREADS", "2")
    assert prepare.usable_threads() == 2
    monkeypatch.setenv("LSTM_GRAPH_THREADS", "none")
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(prepare, "_SAID_THREADS", set())
    for bad in ("none", "0", "-2"):  # ignored, no longer without a word (once each)
        monkeypatch.setenv("LSTM_GRAPH_THREADS", bad)
        with pytest.warns(LstmGraphWarning, match=f"LSTM_GRAPH_THREADS='{bad}' is not a "
                          "number of threads of 1 or more; it is ignored"):
            assert prepare.usable_threads() == 8
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert prepare.usable_threads() == 8


def test_the_thread_count_never_exceeds_the_cpus_the_process_may_use(monkeypatch):
    """More threads than CPUs would wait at every step's barrier for a CPU: the count
    asked for is cut to the CPUs (affinity, then the control groups' quota), with a
    warning where our own variable asked for more."""
    from lstm_graph.executors import prepare

    monkeypatch.setattr(prepare, "usable_cpus", lambda: 2)
    monkeypatch.setenv("LSTM_GRAPH_THREADS", "6")
    with pytest.warns(LstmGraphWarning, match="LSTM_GRAPH_THREADS=6, but this process may "
                      "use 2 CPUs .*: running on 2 threads"):
        assert prepare.usable_threads() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "6")  # other programs' convention: no warning
    monkeypatch.delenv("LSTM_GRAPH_THREADS")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert prepare.usable_threads() == 2
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert prepare.usable_threads() == 2


def _groups(root, files):
    """A control-group tree under ``root``: {relative file: text}."""
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_the_cpu_quota_is_the_smallest_on_the_way_to_the_root(tmp_path):
    """cgroup v2's cpu.max and v1's cfs quota over its period, as CPUs; a group above
    the process's may set the limit; "max" and -1 set none; a file that cannot be read
    or parsed, or no membership file, is no quota."""
    from lstm_graph.executors.prepare import cpu_quota

    membership = tmp_path / "cgroup"
    v2 = tmp_path / "v2"
    membership.write_text("0::/box/job\n")
    _groups(v2, {"box/job/cpu.max": "max 100000\n", "box/cpu.max": "150000 100000\n",
                 "cpu.max": "max 100000\n"})
    assert cpu_quota(v2, membership) == 1.5
    _groups(v2, {"box/job/cpu.max": "50000 100000\n"})
    assert cpu_quota(v2, membership) == 0.5
    _groups(v2, {"box/job/cpu.max": "garbled\n", "box/cpu.max": "max 100000\n"})
    assert cpu_quota(v2, membership) is None

    v1 = tmp_path / "v1"
    membership.write_text("4:memory:/x\n2:cpu,cpuacct:/box\n0::/\n")
    _groups(v1, {"cpu,cpuacct/box/cpu.cfs_quota_us": "200000\n",
                 "cpu,cpuacct/box/cpu.cfs_period_us": "100000\n",
                 "cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
                 "cpu,cpuacct/cpu.cfs_period_us": "100000\n"})
    assert cpu_quota(v1, membership) == 2.0
    assert cpu_quota(v1, tmp_path / "absent") is None
    membership.write_text("2:cpu:/../../elsewhere\n")  # a group above this namespace's root
    _groups(tmp_path, {"elsewhere/cpu.cfs_quota_us": "100000\n",
                       "elsewhere/cpu.cfs_period_us": "100000\n"})
    _groups(v1, {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"})
    assert cpu_quota(v1, membership) is None


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs CPU affinity")
def test_the_usable_cpus_are_the_quota_rounded_up_within_the_affinity(monkeypatch):
    from lstm_graph.executors import prepare

    monkeypatch.setattr(prepare.os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(prepare, "cpu_quota", lambda root, membership: 1.2)
    assert prepare.usable_cpus() == 2
    monkeypatch.setattr(prepare, "cpu_quota", lambda root, membership: 0.3)
    assert prepare.usable_cpus() == 1
    monkeypatch.setattr(prepare, "cpu_quota", lambda root, membership: 20.0)
    assert prepare.usable_cpus() == 8
    monkeypatch.setattr(prepare, "cpu_quota", lambda root, membership: None)
    assert prepare.usable_cpus() == 8


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity")
def test_two_threads_on_one_cpu_wait_for_each_other_and_agree_with_the_reference():
    """Two threads of a run on one CPU (a machine running more threads than it has CPUs):
    at the steps' barriers one waits while the other is not running, sees that in the
    other's CPU time and yields (the library counts such waits). The run ends with the
    reference's numbers (7 rows: the threads share the tiles and meet at a barrier every
    step). How much sooner than a spin it ends is for benchmarks (gemm_c's docstring)."""
    script = """
import os
import numpy as np
import lstm_graph
from lstm_graph.executors.contract import Spec
from lstm_graph.executors import buildcache, gemm_c, native
from lstm_graph.executors.native import NativePlan
os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
cell = lstm_graph.load_cell("lstm")
reference = cell.compile(input_size=5, hidden_size=40, seed=1, executor="reference")
plan = NativePlan(Spec(cell.schedule, np, reference.params, 7, 5, 40, np.dtype("float32")),
                  threads=2)
x = np.random.default_rng(2).standard_normal((40, 7, 5)).astype("float32")
y = plan.run(x, {s: np.zeros((7, 40), "float32") for s in cell.graph.states})[0]
library = buildcache.library(plan.source, native.attempts(), "the step",
                             symbols=(gemm_c.YIELDED.name,))
print(float(np.abs(y - reference(x)[0]).max()), gemm_c.YIELDED.bind(library)())
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    difference, yielded = done.stdout.split()
    assert float(difference) < 1e-5 and int(yielded) > 0


def test_the_caches_are_read_as_the_kernel_describes_them(tmp_path):
    """Level 2 and 3 data or unified caches, sizes in K and M; None for a level that is
    not there, a size it cannot read, or no such folder."""
    for index, (level, kind, size) in enumerate([("1", "Data", "32K"), ("1", "Instruction",
                                                 "32K"), ("2", "Unified", "512K"),
                                                ("3", "Unified", "16M")]):
        folder = tmp_path / f"index{index}"
        folder.mkdir()
        for name, text in (("level", level), ("type", kind), ("size", size)):
            (folder / name).write_text(text + "\n")
    assert (cache_bytes(1, tmp_path), cache_bytes(2, tmp_path), cache_bytes(3, tmp_path)) \
        == (32 << 10, 512 << 10, 16 << 20)
    assert cache_bytes(4, tmp_path) is None and cache_bytes(2, tmp_path / "none") is None
    (tmp_path / "index2" / "size").write_text("lots\n")
    assert cache_bytes(2, tmp_path) is None


def test_the_step_sizes_follow_smaller_caches_and_never_grow_past_the_measured_ones():
    """The native step's size limits are the measured machine's (1 MiB of L2, 32 MiB of
    L3) where the caches are as large or larger, or cannot be read, and shrink with them
    on a CPU with smaller ones (an EPYC of Zen 2: 512 KiB, 16 MiB)."""
    script = """
import importlib, json, sys
from unittest import mock
import lstm_graph.executors.prepare as prepare
from lstm_graph.executors import native
sizes = json.loads(sys.argv[1])
with mock.patch.object(prepare, "cache_bytes", lambda level: sizes.get(str(level))):
    importlib.reload(native)  # a fresh process: the sizes as its import works them out
print(json.dumps([native.ROW_MAJOR_BYTES, native.OWN_WEIGHT_BYTES, native.STEP_WEIGHT_BYTES]))
"""
    measured = [512 << 10, 8 << 20, 16 << 20]
    for sizes, expected in (({"2": 512 << 10, "3": 16 << 20}, [256 << 10, 4 << 20, 8 << 20]),
                            ({"2": 2 << 20, "3": 105 << 20}, measured), ({}, measured)):
        found = subprocess.run([sys.executable, "-c", script, json.dumps(sizes)],
                               capture_output=True, text=True, check=True, timeout=120)
        assert json.loads(found.stdout) == expected


@pytest.mark.parametrize("batch, input_size, hidden", [(1, 3, 8), (4, 3, 8)])
def test_the_hoisted_products_are_counted_exactly_where_the_step_hoists(batch, input_size,
                                                                        hidden):
    cell = lstm_graph.load_cell("lstm")
    run = cell.compile(input_size=input_size, hidden_size=hidden)
    plan = NativePlan(spec(cell, run.params, batch, input_size, hidden))
    names = {a.name for a in run_allocations(cell.schedule, 5, batch, input_size, hidden,
                                             np.dtype("float32"), np.dtype("float32"),
                                             "native")}
    assert plan.hoisted == (batch == 1)
    assert ("the hoisted products (T·B rows)" in names) == plan.hoisted


def test_a_small_input_beside_large_weights_is_not_hoisted():
    """I = 2 beside H = 5000: hoisting would save almost no reading of weights and cost a
    T·B × 4H buffer (2 GB for the trainer's held-out batch)."""
    schedule = lstm_graph.load_cell("lstm").schedule
    layout = analyse(schedule)
    assert not hoists(schedule, layout, 512, 2, 5000, np.dtype("float32"))
    assert hoists(schedule, layout, 20, 1500, 1500, np.dtype("float32"))


def test_large_weights_are_not_hoisted_for_a_large_batch():
    """Weights beyond the caches but a batch large beside them (the benchmark's large
    size, 24 MiB of weights for 256 rows): each step's GEMM is bound by arithmetic, and a
    T·B × 4H buffer would only add traffic."""
    schedule = lstm_graph.load_cell("lstm").schedule
    layout = analyse(schedule)
    assert not hoists(schedule, layout, 256, 512, 1024, np.dtype("float32"))
    assert not hoists(schedule, layout, 64, 1000, 1000, np.dtype("float32"))
    assert hoists(schedule, layout, 32, 1500, 1500, np.dtype("float32"))


def test_a_build_maps_where_new_weights_go_only_once_new_weights_come():
    """A forward run and a gradient never make the placement maps (an int64 a packed
    number, made from float64 copies of the weights); new weights make them, and then
    the run and the gradient are those of the new weights."""
    cell = lstm_graph.load_cell("lstm")
    x = np.random.default_rng(0).standard_normal((6, 4, 5)).astype("float64")
    grad_y = np.random.default_rng(1).standard_normal((6, 4, 7)).astype("float64")
    old = cell.compile(input_size=5, hidden_size=7, dtype="float64", seed=0).params
    new = cell.compile(input_size=5, hidden_size=7, dtype="float64", seed=1).params
    spec = Spec(cell.schedule, np, dict(old), 4, 5, 7, np.dtype("float64"))
    plan = NativePlan(spec)
    zeros = {s: np.zeros((4, 7)) for s in cell.graph.states}
    plan.run(x, zeros)
    plan.grad(x, zeros, grad_y, zeros)
    assert plan._plain.placement._maps is None
    assert plan._backward.build.placement._maps is None
    plan.update(new)
    ours = plan.run(x, zeros)
    grads = plan.grad(x, zeros, grad_y, zeros)
    assert plan._plain.placement._maps is not None
    assert plan._backward.build.placement._maps is not None
    reference = cell.compile(weights=new, dtype="float64", executor="reference")
    assert_same(ours, reference(x), "float64")
    expected = reference.grad(x, grad_y)
    np.testing.assert_allclose(grads.x, expected.x, rtol=1e-10, atol=1e-12)
