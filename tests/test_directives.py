"""``preset`` and ``gates`` lines: cell-specific knowledge as data beside the equations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import cell_errors

import lstm_graph
from lstm_graph.render import render
from lstm_graph.render.scene import build_scene, highlighted

MY_LSTM = """\
cell my_lstm
input x
state memory, out
output out
preset keep: forget
gates lstm: i = admit, f = forget, g = candidate, o = emit
forget = sigmoid(linear(x, out[t-1]))
admit = sigmoid(linear(x, out[t-1]))
candidate = tanh(linear(x, out[t-1]))
emit = sigmoid(linear(x, out[t-1]))
memory = forget * memory[t-1] + admit * candidate
out = emit * tanh(memory)
"""


def test_builtin_cells_declare_their_presets_and_gates():
    peephole = lstm_graph.load_cell("peephole_lstm").graph
    assert list(peephole.presets) == ["forget", "input", "memory", "output"]
    assert peephole.presets["input"].assignments == ("i", "g")
    (gru,) = lstm_graph.load_cell("gru").graph.gates.values()
    assert gru.family == "gru"
    n = next(owner for owner in gru.owners if owner.gate == "n")
    assert (n.input_owner, n.recurrent_owner) == ("a", "b")


def test_a_cell_of_our_own_takes_pytorch_weights_through_its_gates_line():
    cell = lstm_graph.compile_source(MY_LSTM, "my_lstm.cell")
    torch.manual_seed(0)
    module = torch.nn.LSTM(3, 4).double()
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    with torch.no_grad():
        expected = module(torch.from_numpy(x))[0].numpy()
    y, _ = cell.compile(weights=module.state_dict(), dtype="float64")(x)
    np.testing.assert_allclose(y, expected, atol=1e-12)


def test_a_cell_of_our_own_highlights_its_own_preset():
    cell = lstm_graph.compile_source(MY_LSTM, "my_lstm.cell")
    lit = highlighted(build_scene(cell.schedule), "keep")
    assert {"forget", "memory"} <= lit and "emit" not in lit
    assert render(cell, "cell", highlight="keep").source != render(cell, "cell").source


def test_a_cell_without_a_gates_line_says_so_for_stacked_weights():
    cell = lstm_graph.load_cell("coupled_lstm")
    with pytest.raises(lstm_graph.WeightsError, match="has no 'gates lstm:' line"):
        cell.compile(weights=torch.nn.LSTM(2, 3).state_dict())


BODY = "h = tanh(linear(x, h[t-1]))\nc = sigmoid(linear(x, h[t-1])) * k\nk = c[t-1] * 2\n"


@pytest.mark.parametrize("line, col, words", [
    ("preset keep: q", 14, "preset 'keep' names 'q', which no line assigns"),
    ("preset keep:", 1, "preset 'keep' names nothing"),
    ("preset keep c", 1, "'preset' needs a name, a colon and names"),
    ("preset keep: 2c", 14, "'2c' is not a valid name"),
    ("gates lsmt: i, f, g, o", 1, "unknown gate family 'lsmt' (did you mean 'lstm'?)"),
    ("gates rnn: h, q", 15, "'q' is not a gate of rnn; its gates are h"),
    ("gates rnn: h, h", 15, "gate 'h' is listed twice"),
    ("gates gru: r = h", 1, "gates gru: no owner for z, n"),
    ("gates rnn: h = nope", 12, "gate 'h': no line assigns 'nope'"),
    ("gates rnn: h = k", 12, "gate 'h': 'k' must hold a linear(x, h[t-1])"),
    ("gates rnn: h = h + c", 12, "gate 'h': 'h' must hold a linear(x)"),
    ("gates rnn: h = ", 12, "'h =' is not a gate"),
    # each was accepted: f took i's weights; a highlight 'h' drew the preset
    ("gates lstm: i = h, f = h, g = c, o = c", 20, "gate 'f': 'h' holds gate 'i' already"),
    ("preset h: c", 1, "preset 'h' has the name of a value of the cell and leaves it out"),
])
def test_directive_errors_point_at_what_is_wrong(line, col, words):
    found = cell_errors(BODY, header=f"cell t\ninput x\nstate c, h\noutput h\n{line}\n")
    assert any(found_line == 5 and found_col == col and words in message
               for found_line, found_col, message in found), found


def test_directive_errors_are_said_beside_the_other_lines_errors():
    """A preset naming nothing and a gates line missing a gate or of no family were said
    only once every other line was right; a gate that is none was said twice."""
    header = ("cell t\ninput x\nstate c, h\noutput h\npreset keep: hh, z\npreset : c\n"
              "gates rnn: h, q\ngates lsmt: h\n")
    found = cell_errors(BODY + "k = 3\nz = tanh(\n", header=header)  # k twice, z broken
    messages = [(line, message) for line, _, message in found]
    assert any(line == 5 and "preset 'keep' names 'hh', which no line assigns (did you mean "
               "'h'?)" in message for line, message in messages), found
    assert any(line == 7 and "'q' is not a gate of rnn" in message
               for line, message in messages), found
    assert any(line == 8 and "unknown gate family 'lsmt'" in message
               for line, message in messages), found
    assert not any("gate 'q': no line assigns" in message for _, message in messages), found
    assert any("'k' is assigned twice" in message for _, message in messages), found
    assert any(line == 13 for line, _ in messages), found  # z's own error, at its line
    assert not any("names 'z'" in message for _, message in messages), found  # z is there


def test_a_preset_named_after_a_value_it_holds_widens_that_value_s_highlight():
    cell = lstm_graph.compile_source("cell t\ninput x\nstate c, h\noutput h\n"
                                     f"preset h: h, c\n{BODY}", "t.cell")
    assert cell.graph.presets["h"].assignments == ("h", "c")


def test_a_second_line_for_the_same_preset_is_an_error():
    found = cell_errors(BODY, header="cell t\ninput x\nstate c, h\noutput h\n"
                                     "preset a: h\npreset a: c\n")
    assert (6, 1, "a second 'preset a' line (the first is line 5)") in found


def test_a_gate_whose_linear_reads_a_line_with_errors_is_not_judged():
    """The gates line is checked beside the other lines' errors; a gate's linear that
    reads a value whose line failed has no form to judge (it raised KeyError)."""
    found = cell_errors("m = tanh(linear(x, h[t-1])) +\nh = tanh(linear(x, m))\n",
                        header="cell t\ninput x\nstate m, h\noutput h\ngates rnn: h\n")
    assert [(line, message.split(":")[0]) for line, _, message in found] == \
        [(6, "syntax error")]
