"""Text a user controls cannot break what is made of it: a cell file is bounded (its text,
its assignments, its operations) and holds printable characters only, each other one
refused at its file:line:col; a caption or a name cannot be taken for the explorer's data."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
from conftest import needs_dot

from lstm_graph import CellError, compile_source, load_cell
from lstm_graph.explore import Run, build_page
from lstm_graph.language import parser

HEADER = "input x\nstate h\noutput h\n"
GOOD = "h = tanh(linear(x, h[t-1]))  # output\n"


def refused(source: str, file: str = "t.cell") -> list[str]:
    with pytest.raises(CellError) as info:
        compile_source(source, file)
    return [str(d) for d in info.value.diagnostics]


# -- how much a cell file may hold ------------------------------------------------------

def test_a_10_mb_file_of_208k_assignments_is_refused_at_once(tmp_path, cli_process):
    """The reported file: 80 s and 3.8 GB to validate before; now one line, at once."""
    body = "".join(f"value_{k} = sigmoid(h[t-1]) * tanh(h)\n" for k in range(208_000))
    (tmp_path / "big.cell").write_text(HEADER + GOOD + body)
    assert (tmp_path / "big.cell").stat().st_size > 8_000_000
    began = time.monotonic()
    result = cli_process("validate", "big.cell", cwd=tmp_path)
    assert time.monotonic() - began < 30
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr == ("big.cell:1:1: error: larger than 2 MB: too large for a .cell "
                             "file (a cell holds at most 20,000 assignments)\n")


def test_more_assignments_than_a_cell_may_hold_are_refused_before_parsing():
    body = "".join(f"a{k} = h * {k % 7}\n" for k in range(parser.MAX_ASSIGNMENTS))
    assert refused(HEADER + GOOD + body) == [
        "t.cell:1:1: error: 20,001 assignments: more than the 20,000 a cell may hold; split "
        "it into smaller cells"]


def test_more_operations_than_a_cell_may_hold_are_refused_before_parsing():
    body = "".join(f"a{k} = {' * '.join(['h'] * 60)}\n" for k in range(2000))
    assert refused(HEADER + GOOD + body) == [
        "t.cell:1:1: error: 118,002 operations (operators, calls and numbers): more than the "
        "100,000 a cell may hold; split it into smaller cells"]
    # a call's operands count too: 600,000 of one linear took 12 s and 742 MB to refuse
    operands = f"k = linear({', '.join(['x'] * 150_000)})\n"
    assert refused(HEADER + GOOD + operands) == [
        "t.cell:1:1: error: 150,000 operands after the first of calls: more than the "
        "100,000 a cell may hold; split it into smaller cells"]
    # apart from the operations: 16,075 two-operand linears and sums validate, as before
    wide = "".join(f"g{k} = sigmoid(linear(x, h[t-1]) + 0.5 * h[t-1])\n" for k in range(15_000))
    assert compile_source(HEADER + GOOD + wide, "w.cell").graph.assignments


def test_the_parser_says_where_it_stopped_after_the_errors_it_stopped_after():
    """Errors on the file's last line sorted after "stopped after 100 errors", which
    stands at that line's first column."""
    line = "k = linear(" + ", ".join(["x"] * 120) + ")\n"
    messages = refused(HEADER + GOOD + line)
    assert messages[-1].endswith("error: stopped after 100 errors; is this a .cell file?")
    assert len(messages) == 101 and all("'x'" in m for m in messages[:-1])


def test_a_cell_at_the_limits_still_validates():
    body = "".join(f"a{k} = h[t-1] * a{k - 1}\n" if k else "a0 = h[t-1] * 2\n"
                   for k in range(parser.MAX_ASSIGNMENTS - 1))
    cell = compile_source(HEADER + "h = tanh(linear(x, h[t-1])) + a0\n" + body, "t.cell")
    assert len(cell.graph.assignments) == parser.MAX_ASSIGNMENTS


# -- characters a cell file may not hold ----------------------------------------------------

@pytest.mark.parametrize("char, words", [
    ("\x01", "U+0001 (a control character)"),
    ("\x1b", "U+001B (a control character)"),
    ("\x7f", "U+007F (a control character)"),
    ("\x85", "U+0085 (a control character)"),
    ("\ufffe", "U+FFFE (a noncharacter)"),
    ("\U0010ffff", "U+10FFFF (a noncharacter)"),
    ("\u2028", "U+2028 (a line or paragraph separator)"),
    ("\u202e", "U+202E (a bidirectional override)"),
])
def test_a_character_no_cell_holds_is_refused_at_its_position(char, words):
    source = HEADER + f"h = tanh(linear(x, h[t-1]))  # out{char}put\n"
    assert refused(source) == [f"t.cell:4:35: error: the character {words} cannot be in a "
                               ".cell file; a cell's text is printable characters, tabs and "
                               "line ends"]


def test_vertical_tabs_and_form_feeds_do_not_split_lines_and_each_is_named():
    """Python's splitlines() ends a line at \\x0b and \\x0c (positions then pointed past the
    file's end); here lines end at newlines only, and each such character is an error."""
    source = HEADER + "h = tanh(\x0blinear(x, h[t-1]))\n# note\x0c\n"
    assert refused(source) == [
        "t.cell:4:10: error: the character U+000B (a control character) cannot be in a .cell "
        "file; a cell's text is printable characters, tabs and line ends",
        "t.cell:5:7: error: the character U+000C (a control character) cannot be in a .cell "
        "file; a cell's text is printable characters, tabs and line ends"]


def test_tabs_and_windows_line_ends_are_fine_but_a_lone_carriage_return_is_not():
    assert compile_source(HEADER.replace("\n", "\r\n") + "h =\ttanh(linear(x, h[t-1]))\r\n",
                          "t.cell")
    assert refused(HEADER + "h = tanh(linear(x, h[t-1]))\r# x\n")[0].startswith(
        "t.cell:4:28: error: the character U+000D (a control character)")


def test_a_cell_named_by_its_file_with_a_control_character_is_refused(tmp_path):
    path = tmp_path / "evil\x1b[31m.cell"
    path.write_text(HEADER + GOOD)
    with pytest.raises(CellError) as info:
        load_cell(path)
    (message,) = [d.message for d in info.value.diagnostics]
    assert message == ("the cell's name, from the file's name, holds the character U+001B (a "
                       "control character); rename the file, or name the cell with a header "
                       "line: cell NAME")
    assert (info.value.diagnostics[0].line, info.value.diagnostics[0].col) == (1, 1)
    path.write_text("cell evil\n" + HEADER + GOOD)  # named in the file: its file's name unused
    assert load_cell(path).name == "evil"


@pytest.mark.parametrize("command", [["validate"], ["schedule"],
                                     ["render", "--format", "dot", "--out", "d.dot"]])
def test_every_command_refuses_the_file_and_writes_nothing(tmp_path, command, cli_process):
    (tmp_path / "c.cell").write_text(HEADER + "h = tanh(linear(x, h[t-1]))  # \x1b[2J\n")
    result = cli_process(command[0], "c.cell", *command[1:], cwd=tmp_path)
    assert result.returncode == 1 and "\x1b" not in result.stderr + result.stdout
    assert "c.cell:4:32: error: the character U+001B (a control character)" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.cell"]


# -- the explorer's data --------------------------------------------------------------------

@needs_dot
@pytest.mark.parametrize("slot", ["values", "input", "initial"])
def test_a_caption_or_a_cell_named_as_the_explorer_s_data_slot_is_only_text(tmp_path, slot):
    path = tmp_path / f"@@{slot}@@.cell"
    path.write_text(HEADER + f"h = tanh(linear(x, h[t-1]))  # @@{slot}@@\n")
    cell = load_cell(path)
    runner = cell.compile(input_size=2, hidden_size=3, seed=0)
    x = np.ones((2, 1, 2), "float32")
    page = build_page(Run(cell, runner.trace(x), x, {"h": np.zeros((1, 3), "float32")},
                          np.dtype("float32")))
    found = re.search(r'<script type="application/json" id="lstm-graph-trace">(.*?)</script>',
                      page, re.S)
    assert found is not None
    data = json.loads(found.group(1))
    assert data["cell"] == f"@@{slot}@@"
    assert data["assignments"]["h"]["caption"] == f"@@{slot}@@"
    assert np.asarray(data["values"]["h"]).shape == (2, 1, 3)
    assert np.asarray(data["input"]["x"]).shape == (2, 1, 2)
    assert np.asarray(data["initial"]["h"]).shape == (1, 3)
