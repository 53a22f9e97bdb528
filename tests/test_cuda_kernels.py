"""The CuPy plan's generated kernel source, checked as text on the CPU."""

from __future__ import annotations

import lstm_graph
from lstm_graph.cuda import kernel_segments
from lstm_graph.layout import analyse


def kernels(cell, hidden=8):
    return kernel_segments(cell.schedule, analyse(cell.schedule), hidden)


def test_peephole_lstm_step_is_one_fused_kernel_after_one_gemm():
    k = kernels(lstm_graph.load_cell("peephole_lstm"))
    assert len(k.segments) == 1
    (segment,) = k.segments
    assert segment.gemms == ["h[t-1]"]
    source = segment.source()
    assert source.count("exp(-") == 3  # f, i, o
    assert source.count("tanh(") == 2  # g and tanh(c)
    # the output valve's peephole reads the NEW memory (v8 is c), never old_c
    o_line = next(line for line in source.splitlines() if line.endswith("// o.linear"))
    assert "* v8" in o_line and "old_c" not in o_line
    # every state is read before any state is written
    lines = source.splitlines()
    reads = [k for k, line in enumerate(lines) if line.startswith("const T new_")]
    writes = [k for k, line in enumerate(lines) if line.startswith("old_")]
    assert max(reads) < min(writes)
    assert segment.outputs == ["old_c", "old_h", "y"]


def test_source_is_deterministic_and_bakes_in_the_shapes():
    cell = lstm_graph.load_cell("gru")
    assert kernels(cell, 5).source() == kernels(lstm_graph.load_cell("gru"), 5).source()
    source = kernels(cell, 5).source()
    assert "const int j = i % 5;" in source
    assert "static_" in source  # a = linear(x) is hoisted before the loop


def test_a_matrix_on_a_value_of_this_step_splits_the_kernel_around_its_gemm():
    cell = lstm_graph.compile_source("input x\nstate c, h\noutput h\n"
                                     "c = tanh(linear(x, h[t-1]))\n"
                                     "o = sigmoid(linear(x, c))\nh = o * c\n")
    k = kernels(cell, 4)
    assert [s.gemms for s in k.segments] == [["h[t-1]"], ["c"]]
    assert "buffer_" in k.segments[0].outputs[0]
    assert k.bindings[k.segments[0].outputs[0]] == ("buffer", "c")
    assert k.segments[1].outputs[-3:] == ["old_c", "old_h", "y"]


def test_every_op_has_a_c_expression():
    from lstm_graph.ops import OPS

    assert all(op.c for op in OPS.values() if op.name != "linear")
