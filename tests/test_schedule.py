"""Stages: the order that, as Shi Yan's article says, the classic diagram hides."""

from __future__ import annotations

import json
import re

from lstm_graph import compile_source, load_cell


def test_peephole_output_valve_waits_for_the_new_memory():
    schedule = load_cell("peephole_lstm").schedule
    assert schedule.stages == (("f", "i", "g"), ("c",), ("o",), ("h",))
    assert schedule.stage_of("o") > schedule.stage_of("c") > schedule.stage_of("f")
    assert schedule.reads("o") == {"input": ["x"], "old": ["h[t-1]"], "new": ["c"]}
    assert schedule.reads("f")["old"] == ["h[t-1]", "c[t-1]"]


def test_plain_lstm_output_valve_runs_beside_the_forget_valve():
    schedule = load_cell("lstm").schedule
    assert schedule.stages == (("f", "i", "g", "o"), ("c",), ("h",))
    assert schedule.stage_of("o") == schedule.stage_of("f") == 1


def test_gru_and_rnn_stages():
    assert load_cell("gru").schedule.stages == (("r", "z", "a", "b"), ("n",), ("h",))
    assert load_cell("rnn").schedule.stages == (("h",),)
    assert load_cell("coupled_lstm").schedule.stages == (("f", "g", "o"), ("c",), ("h",))


def test_order_is_topological_and_ties_follow_the_file():
    schedule = load_cell("peephole_lstm").schedule
    order = schedule.order
    position = {node: i for i, node in enumerate(order)}
    for src, dst, _kind in schedule.graph.edges():
        if src in position:
            assert position[src] < position[dst], (src, dst)
    assert order.index("f") < order.index("i") < order.index("g")


def test_schedule_is_deterministic_across_runs():
    text = (load_cell("gru").schedule.to_json(), load_cell("gru").schedule.to_text(nodes=True))
    assert text == (load_cell("gru").schedule.to_json(),
                    load_cell("gru").schedule.to_text(nodes=True))


def test_sizes_and_parameter_shapes():
    schedule = load_cell("gru").schedule
    assert schedule.sizes["x"] == "I" and schedule.sizes["h"] == "H"
    assert schedule.sizes["h.const"] == "1"
    shapes = schedule.param_shapes(input_size=3, hidden_size=4)
    assert shapes == {
        "r.W_x": (4, 3), "r.W_h": (4, 4), "r.b": (4,),
        "z.W_x": (4, 3), "z.W_h": (4, 4), "z.b": (4,),
        "a.W_x": (4, 3), "a.b": (4,),
        "b.W_h": (4, 4), "b.b": (4,),
    }


def test_text_form_marks_old_and_new_reads():
    text = load_cell("peephole_lstm").schedule.to_text()
    assert "stage 3: o   (waits for the new c)" in text
    assert "[old h[t-1]; new c]" in text
    nodes = load_cell("peephole_lstm").schedule.to_text(nodes=True)
    assert "o.linear: H = linear(x(input), h[t-1](old), c(new))" in nodes


def test_an_assignment_of_numbers_alone_is_not_said_to_read_the_input():
    text = compile_source("input x\nstate h\noutput h\nk = 2 * 3\na = tanh(linear(x))\n"
                          "h = a * k + h[t-1]\n").schedule.to_text()
    assert re.search(r"k = 2 \* 3 +\[numbers only\]", text)
    assert re.search(r"a = tanh\(linear\(x\)\) +\[input only\]", text)


def test_a_user_cell_with_long_chain_gets_one_stage_per_link():
    cell = compile_source("input x\nstate h\noutput h\n"
                          "a = tanh(linear(x))\nb = tanh(a)\nh = b * h[t-1]\n")
    assert cell.schedule.stages == (("a",), ("b",), ("h",))


def test_schedule_json_marks_the_peephole_output_valves_reads_of_the_new_memory(cli_run):
    """``schedule --json`` alone: the output valve and the output read the NEW c; marking
    them old would pass every text test if the JSON were built apart."""
    reads = json.loads(cli_run("schedule", "peephole_lstm", "--json").stdout)["reads"]
    assert reads["o"] == {"input": ["x"], "old": ["h[t-1]"], "new": ["c"]}
    assert reads["h"] == {"input": [], "old": [], "new": ["o", "c"]}
    assert reads["f"] == {"input": ["x"], "old": ["h[t-1]", "c[t-1]"], "new": []}


def test_schedule_nodes_json_lists_every_node_as_the_text_does(cli_run):
    data = json.loads(cli_run("schedule", "peephole_lstm", "--nodes", "--json").stdout)
    cell = load_cell("peephole_lstm")
    assert [n["id"] for n in data["nodes"]] == list(cell.schedule.order)
    by_id = {n["id"]: n for n in data["nodes"]}
    assert by_id["o.linear"] == {
        "id": "o.linear", "assignment": "o", "size": "H", "op": "linear",
        "reads": [{"id": "x", "kind": "input", "peep": False},
                  {"id": "h[t-1]", "kind": "old", "peep": False},
                  {"id": "c", "kind": "new", "peep": True}],
        "params": ["o.W_x", "o.W_h", "o.p_c", "o.b"]}
    assert by_id["c.mul"]["reads"] == [{"id": "f", "kind": "new"},
                                       {"id": "c[t-1]", "kind": "old"}]
    gru = json.loads(cli_run("schedule", "gru", "--nodes", "--json").stdout)
    assert {"id": "h.const", "assignment": "h", "size": "1", "value": 1.0} in gru["nodes"]
    (sub,) = [n for n in gru["nodes"] if n["id"] == "h.sub"]  # 1 - z
    assert sub["reads"] == [{"id": "h.const", "kind": "const"}, {"id": "z", "kind": "new"}]
    plain = json.loads(cli_run("schedule", "peephole_lstm", "--json").stdout)
    assert "nodes" not in plain and {k: v for k, v in data.items() if k != "nodes"} == plain


def test_schedule_nodes_json_gives_an_ops_attributes():
    cell = compile_source("input x\nstate h\noutput h\n"
                          "h = leaky_relu(linear(x, h[t-1]), 0.25)\n", "a.cell")
    (top,) = [n for n in cell.schedule.to_json(nodes=True)["nodes"] if n["id"] == "h"]
    assert top["op"] == "leaky_relu" and top["attrs"] == {"alpha": 0.25}


def test_the_text_keeps_the_grouping_of_sums_and_products_on_their_right():
    """h = l * (l * l) + (l - (l - 1)) printed as l * l * l + l - (l - 1): another order
    of floating-point sums and products than the cell's."""
    cell = compile_source("input x\nstate h\noutput h\nl = linear(x, h[t-1])\n"
                          "h = l * (l * l) + (l - (l - 1))\n", "p.cell")
    assert "h = l * (l * l) + (l - (l - 1))" in cell.schedule.to_text()
