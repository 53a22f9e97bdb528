"""Every construct of the .cell language parses into the graph it should."""

from __future__ import annotations

import textwrap

import pytest

from lstm_graph import CellError, compile_source, load_cell
from lstm_graph.ir import EdgeKind, NodeKind


def build(body: str, header: str = "cell t\ninput x\nstate c, h\noutput h\n"):
    return compile_source(header + textwrap.dedent(body), "t.cell")


LSTM_BODY = """
    f = sigmoid(linear(x, h[t-1]))
    i = sigmoid(linear(x, h[t-1]))
    g = tanh(linear(x, h[t-1]))
    o = sigmoid(linear(x, h[t-1]))
    c = f * c[t-1] + i * g
    h = o * tanh(c)
"""


def test_headers_name_inputs_states_outputs():
    cell = build(LSTM_BODY)
    assert cell.name == "t"
    assert list(cell.graph.inputs) == ["x"]
    assert list(cell.graph.states) == ["c", "h"]
    assert list(cell.graph.outputs) == ["h"]


def test_header_names_may_be_separated_by_spaces_or_commas():
    cell = build("h = tanh(linear(x, h[t-1]))\nc = c[t-1]\n",
                 header="cell t\ninput x\nstate c h\noutput h\n")
    assert list(cell.graph.states) == ["c", "h"]


def test_missing_cell_line_takes_the_default_name():
    cell = compile_source("input x\nstate h\noutput h\nh = tanh(linear(x, h[t-1]))", "f.cell",
                          default_name="from_file")
    assert cell.name == "from_file"


def test_line_order_does_not_matter():
    forward = build(LSTM_BODY)
    backward = build("\n".join(reversed(LSTM_BODY.strip().splitlines())))
    assert forward.schedule.stages == (("f", "i", "g", "o"), ("c",), ("h",))
    assert {frozenset(s) for s in backward.schedule.stages} == {
        frozenset(s) for s in forward.schedule.stages}


def test_old_and_new_reads_become_old_and_new_edges():
    graph = load_cell("peephole_lstm").graph
    assert graph.node("c[t-1]").kind is NodeKind.OLD
    assert graph.edge_kind("c[t-1]", "f.linear") is EdgeKind.OLD
    assert graph.edge_kind("c", "o.linear") is EdgeKind.NEW
    assert graph.edge_kind("x", "o.linear") is EdgeKind.INPUT
    assert graph.edge_kind("h[t-1]", "o.linear") is EdgeKind.OLD


def test_operators_constants_parentheses_and_unary_minus():
    cell = build("""
        z = sigmoid(linear(x, h[t-1]))
        c = (1 - z) * c[t-1] + z * -tanh(linear(h[t-1])) + 0.5
        h = relu(c) - 2 * c
    """)
    ops = {n.id: n.op for n in cell.graph.nodes.values() if n.kind is NodeKind.OP}
    assert ops["c"] == "add" and ops["h"] == "sub"
    assert {"neg", "mul", "sub", "tanh", "linear"} <= set(ops.values())
    consts = sorted(n.value for n in cell.graph.nodes.values() if n.kind is NodeKind.CONST)
    assert consts == [0.5, 1.0, 2.0]
    assert cell.schedule.expression("c") == "(1 - z) * c[t-1] + z * -tanh(linear(h[t-1])) + 0.5"


def test_a_function_s_numbers_may_be_given_in_order_or_by_name():
    """As the usage writes them (``hard_sigmoid(v, alpha=0.2, beta=0.5)``): by name, the
    others keep their defaults; the same cell as the numbers written in order."""
    named = build("""
        c = hard_sigmoid(linear(x, h[t-1]), beta=0.6) * c[t-1]
        h = leaky_relu(c, alpha=0.1)
    """)
    ordered = build("""
        c = hard_sigmoid(linear(x, h[t-1]), 0.2, 0.6) * c[t-1]
        h = leaky_relu(c, 0.1)
    """)
    attrs = {n.id: dict(n.attrs) for n in named.graph.nodes.values() if n.attrs}
    assert attrs == {"c.hard_sigmoid": {"alpha": 0.2, "beta": 0.6}, "h": {"alpha": 0.1}}
    assert named.schedule.expression("c") == ordered.schedule.expression("c")


def test_linear_operands_name_their_parameters():
    cell = load_cell("peephole_lstm")
    f = cell.graph.node("f.linear")
    assert f.params == ("f.W_x", "f.W_h", "f.p_c", "f.b")
    assert f.peep == (False, False, True)
    shapes = cell.params(input_size=3, hidden_size=5)
    assert shapes["f.W_x"] == (5, 3) and shapes["f.W_h"] == (5, 5)
    assert shapes["f.p_c"] == (5,) and shapes["f.b"] == (5,)
    assert shapes["o.p_c"] == (5,)


def test_linear_operand_that_is_an_expression_is_named_by_position():
    cell = build("""
        r = sigmoid(linear(x, h[t-1]))
        h = tanh(linear(x, r * h[t-1]))
        c = c[t-1]
    """)
    assert cell.graph.node("h.linear").params == ("h.W_x", "h.W_arg2", "h.b")


def test_comment_becomes_caption_and_full_line_comments_are_ignored():
    cell = build("""
        # a whole-line comment
        h = tanh(linear(x, h[t-1]))   # the output
        c = c[t-1]
    """)
    assert cell.graph.assignments["h"].caption == "the output"
    assert cell.graph.assignments["c"].caption is None


def test_an_assignment_may_continue_inside_parentheses():
    cell = build("""
        h = tanh(linear(x,
                        h[t-1]))   # spans two lines
        c = c[t-1]
    """)
    assert cell.graph.node("h.linear").args == ("x", "h[t-1]")
    assert cell.graph.assignments["h"].caption == "spans two lines"


def test_alias_gets_its_own_copy_node():
    cell = build("h = tanh(linear(x, h[t-1]))\nc = h\n")
    assert cell.graph.node("c").op == "copy"
    assert cell.graph.node("c").args == ("h",)


@pytest.mark.parametrize("name", ["lstm", "peephole_lstm", "gru", "coupled_lstm", "rnn"])
def test_builtin_cells_validate_without_warnings(name):
    cell = load_cell(name)
    assert cell.name == name
    assert cell.warnings == []


def test_builtin_cell_files_cite_their_source():
    from lstm_graph.library import _BUILTIN_DIR

    for path in _BUILTIN_DIR.iterdir():
        if path.name.endswith(".cell"):
            assert "Source:" in path.read_text(), path.name


def test_unused_values_and_inputs_are_warnings_not_errors():
    cell = compile_source("cell t\ninput x, \nstate h\noutput h\n"
                          "h = tanh(linear(h[t-1]))\nk = x * 2\n", "t.cell")
    messages = [(w.line, w.message) for w in cell.warnings]
    assert (6, "'k' is never used: it reaches no state and no output") in messages
    assert all(w.severity == "warning" for w in cell.warnings)


def test_a_cell_of_many_unused_values_lists_a_hundred_and_counts_the_rest():
    unused = "".join(f"k{n} = x * {n}\n" for n in range(150))
    cell = compile_source("input x\nstate h\noutput h\nh = tanh(linear(x, h[t-1]))\n"
                          + unused, "t.cell")
    assert len(cell.warnings) == 101
    assert cell.warnings[99].message.startswith("'k99' is never used")
    last = cell.warnings[-1]
    assert (last.line, last.message) == (105, "and 50 more values from here that reach no "
                                         "state and no output (the first 100 are listed)")


def test_the_parser_never_evaluates_python(tmp_path):
    marker = tmp_path / "pwned"
    source = f"input x\nstate h\noutput h\nh = __import__('os').system('touch {marker}')\n"
    with pytest.raises(CellError, match="only the functions .* may be called"):
        compile_source(source)
    assert not marker.exists()


def test_compiling_a_cell_leaves_the_garbage_collector_as_it_found_it():
    import gc

    source = "input x\nstate h\noutput h\nh = tanh(linear(x, h[t-1]))\n"
    compile_source(source)
    assert gc.isenabled()
    gc.disable()
    try:
        compile_source(source)
        assert not gc.isenabled()
    finally:
        gc.enable()
    with pytest.raises(CellError):
        compile_source("input x\nstate h\noutput h\nh = q\n")
    assert gc.isenabled()  # an error re-enables it too

