"""Every kind of cell error, at its exact line and column, with words that help."""

from __future__ import annotations

import pytest
from conftest import HEADER, cell_errors

import lstm_graph
from lstm_graph import CellError, compile_source
from lstm_graph.language.parser import MAX_DEPTH

# The header takes lines 1-4, so the body starts on line 5.
OK_C = "c = c[t-1]\n"


def test_algebraic_loop_names_the_cycle_and_suggests_old_value():
    errors = cell_errors("""\
        f = sigmoid(linear(x, h[t-1], peep(c)))
        c = f * c[t-1]
        h = tanh(c)
    """)
    assert len(errors) == 1
    line, col, message = errors[0]
    assert (line, col) == (5, 36)
    assert "algebraic loop f -> c -> f" in message
    assert "c[t-1]" in message


def test_longer_loop_through_non_states_suggests_declaring_a_state():
    errors = cell_errors("""\
        a = tanh(b)
        b = tanh(k)
        k = linear(a)
        h = tanh(linear(x, h[t-1])) * k
        c = c[t-1]
    """)
    assert len(errors) == 1
    assert "algebraic loop a -> b -> k -> a" in errors[0][2]
    assert "declare one of them as a state" in errors[0][2]
    assert errors[0][:2] == (5, 10)


def test_self_loop():
    errors = cell_errors("c = c * 2\nh = tanh(c)\n")
    assert errors == [(5, 5, "algebraic loop c -> c: 'c' reads its own value of this same "
                       "step, which it is computing; to use the previous step's value write "
                       "c[t-1]")]


def test_undefined_name_suggests_a_close_one():
    errors = cell_errors("gate = tanh(x)\nh = linear(gaet)\n" + OK_C)
    assert errors == [(6, 12, "undefined name 'gaet' (did you mean 'gate'?); declare it "
                       "(input/state) or assign it")]


def test_name_assigned_twice_points_at_the_second():
    errors = cell_errors("h = linear(x)\n" + OK_C + "h = linear(h[t-1])\n")
    assert errors == [(7, 1, "'h' is assigned twice (first on line 5); each name is "
                       "assigned once")]


def test_t_minus_1_on_an_input_or_value():
    errors = cell_errors("k = tanh(x)\nh = linear(x[t-1], k[t-1])\n" + OK_C)
    assert [(line, col) for line, col, _ in errors] == [(6, 12), (6, 20)]
    assert "'x' is an input" in errors[0][2]
    assert "m = linear(x), then read m[t-1]" in errors[0][2]
    assert "'k' is a value computed in this step" in errors[1][2] and "state k" in errors[1][2]


def test_the_advice_for_an_inputs_previous_value_gives_a_valid_cell():
    fixed = compile_source("input x\nstate m, h\noutput h\nm = linear(x)\n"
                                      "h = tanh(linear(x, h[t-1], m[t-1]))\n")
    assert fixed.schedule.stages


def test_errors_on_other_lines_do_not_hide_a_size_mismatch_or_a_loop():
    mismatch = cell_errors("h = tanh(linear(x, h[t-1])) * x\nk = foo(h)\n" + OK_C)
    assert [m.split(" ")[0:2] for _, _, m in mismatch] == [["size", "mismatch"],
                                                          ["unknown", "function"]]
    loop = cell_errors("f = sigmoid(linear(x, h[t-1], peep(c)))\nc = f*c[t-1] + (1-f)*gg\n"
                       "h = tanh(c)\n")
    assert [m.split(" ")[0:2] for _, _, m in loop] == [["algebraic", "loop"],
                                                      ["undefined", "name"]]


@pytest.mark.parametrize("index", ["t-2", "t", "t+1", "0", "s-1", "t-1.0", "t-True"])
def test_any_index_other_than_t_minus_1(index):
    errors = cell_errors(f"h = linear(h[{index}])\n" + OK_C)
    assert errors[0][:2] == (5, 14)
    assert "only [t-1] is supported" in errors[0][2]


def test_state_never_assigned_points_at_its_declaration():
    errors = cell_errors("h = tanh(linear(x, h[t-1]))\n")
    assert errors == [(3, 7, "state 'c' is declared but never assigned; add a line "
                       "'c = ...' computing its new value")]


def test_reading_the_new_value_of_an_unassigned_state():
    errors = cell_errors("h = tanh(linear(x, c))\n")
    assert (5, 20) in [(line, col) for line, col, _ in errors]
    assert any("read the previous step's value with c[t-1]" in m for *_, m in errors)


def test_output_that_does_not_exist():
    errors = cell_errors("h = tanh(linear(x, h[t-1]))\n" + OK_C,
                         header="cell t\ninput x\nstate c, h\noutput y\n")
    assert errors == [(4, 8, "output 'y' does not exist; assign it or name a state or "
                       "computed value")]


def test_unknown_function_lists_the_known_ones():
    errors = cell_errors("h = sigmod(linear(x, h[t-1]))\n" + OK_C)
    assert errors == [(5, 5, "unknown function 'sigmod' (did you mean 'sigmoid'?); known "
                       "functions: affine, clip, elu, hard_sigmoid, leaky_relu, linear, peep, "
                       "relu, scaled_tanh, sigmoid, softplus, softsign, tanh, thresholded_relu")]


def test_size_mismatch_between_input_and_hidden():
    errors = cell_errors("h = tanh(linear(x, h[t-1])) * x\n" + OK_C)
    assert len(errors) == 1
    assert errors[0][:2] == (5, 5)
    assert "size mismatch in '*'" in errors[0][2]
    assert "'x' has the input size I" in errors[0][2]


def test_the_same_error_at_the_same_place_is_said_once():
    """Each ``+ x`` of a long sum found the same mismatch at the sum's start: 250 terms
    printed 250 identical lines."""
    errors = cell_errors("h = tanh(linear(x, h[t-1]))" + " + x" * 250 + "\n" + OK_C)
    assert len(errors) == len(set(errors)) == 2  # the inner sums', and the tanh's
    assert all(e[:2] == (5, 5) and "'x' has the input size I" in e[2] for e in errors)


def test_state_with_the_wrong_size():
    errors = cell_errors("h = tanh(x)\n" + OK_C)
    assert errors == [(5, 1, "state 'h' must have the hidden size H, but its value has the "
                       "input size I")]


def test_peephole_on_the_input_is_a_size_error():
    errors = cell_errors("h = tanh(linear(h[t-1], peep(x)))\n" + OK_C)
    assert "peep('x') needs the hidden size H" in errors[0][2]


def test_syntax_error_has_python_s_position():
    errors = cell_errors("h = tanh(linear(x, h[t-1])))\n" + OK_C)
    assert errors[0][:2] == (5, 28)
    assert errors[0][2].startswith("syntax error: unmatched ')'")


def test_unclosed_parenthesis():
    errors = cell_errors(OK_C + "h = tanh(linear(x, h[t-1])\n")
    assert errors[0][:2] == (6, 9)
    assert "'(' was never closed" in errors[0][2]


@pytest.mark.parametrize("body, col, words", [
    # at the operator (it said the expression's start, col 5)
    ("h = linear(x) / 2\n", 15, "unsupported operator '/'"),
    ("h = (linear(x)) ** 2\n", 17, "unsupported operator '**'"),
    ("h = linear(x) * (2 % \n 3)\n", 20, "unsupported operator '%'"),
    # at the number (it said the function's name, col 5)
    ("h = clip(linear(x), 1e400)\n", 21, "clip()'s numbers must be finite"),
    ("h = clip(linear(x), threshold=-1e400)\n", 31, "clip()'s numbers must be finite"),
    ("h = tanh(linear(x, cc[t-1]))\n", 20, "'cc' is not declared; did you mean c[t-1]?"),
    # said "unsupported operator '+'; the language has element-wise +, - and *"
    ("h = +tanh(linear(x))\n", 5, "a '+' before a value does nothing; write the value"),
    ("h = linear(x) if 1 else 2\n", 5, "unsupported expression (IfExp)"),
    ("h = np.tanh(x)\n", 5, "only the functions"),
    ("h = tanh(x=linear(x))\n", 10, "tanh() has no number 'x'; it takes a value only"),
    ("h = linear(x, bias=0)\n", 15, "linear() takes no keyword arguments"),
    ("h = leaky_relu(linear(x), beta=1)\n", 27,
     "leaky_relu() has no number 'beta'; its numbers are alpha"),
    ("h = leaky_relu(linear(x), alpha=h)\n", 33, "leaky_relu()'s alpha is a number"),
    ("h = leaky_relu(linear(x), 1, alpha=1)\n", 5, "alpha is given twice"),
    ("h = 'abc'\n", 5, "unsupported constant 'abc'"),
    ("h = tanh(linear(x), 1)\n", 5, "tanh() takes 1 argument, got 2"),
    ("h = linear()\n", 5, "linear() needs at least one operand"),
    ("h = tanh(peep(c[t-1]))\n", 10, "peep(...) is only allowed as an operand of linear"),
    ("h = linear(linear(x))\n", 12, "cannot be nested"),
    ("h = linear(x) + linear(h[t-1])\n", 17, "at most one linear(...) per assignment"),
    ("h = linear(x, x)\n", 15, "both named 'x'"),
    ("h = tanh\n", 5, "'tanh' is a function; call it"),
    ("h = linear(t)\n", 12, "'t' is only used in [t-1]"),
    ("h += linear(x)\n", 1, "each name is assigned once"),
    ("h = g = linear(x)\n", 5, "one name per assignment"),
    ("h[t-1] = linear(x)\n", 1, "assign the new value 'h'"),
    ("h = linear(x); k = h\n", 16, "one assignment per line"),
    ("linear(x)\nh = linear(x)\n", 1, "expected an assignment"),
    ("x = linear(h[t-1])\nh = x\n", 1, "'x' is an input and cannot be assigned"),
    ("tanh = linear(x)\nh = tanh\n", 1, "'tanh' is reserved"),
    ("h = linear(x, lambda)\n", 15, "'lambda' is a keyword of the expressions' syntax, not a "
     "name"),
    ("h = linear(x) +\n", 15, "'+' has no value after it; give its right operand"),
    ("h = linear(x) * (1 -)\n", 20, "'-' has no value after it"),
    ("h = (linear(x) and c[t-1]) +\n", 28, "'+' has no value after it"),  # 'and' not blamed
    ("h = leaky_relu(linear(x), alpha=0.1, alpha=0.2)\n", 38, "leaky_relu()'s alpha is given "
     "twice"),
    ("h = leaky_relu(linear(x), \uff41lpha=0.1)\n", 27, "'\uff41lpha' (U+FF41 l p h a) reads "
     "as 'alpha'"),
])
def test_unsupported_or_misused_syntax(body, col, words):
    errors = cell_errors(body + OK_C)
    assert errors[0][0] == 5 and errors[0][1] == col, errors
    assert words in errors[0][2], errors


@pytest.mark.parametrize("body, words", [
    ("h == tanh(linear(x, h[t-1]))\n", "'==' compares two values; an assignment is written "
     "with one '='"),
    ("h, k = tanh(linear(x, h[t-1])), 1\n", "the left side must be one name"),
])
def test_a_line_meant_as_an_assignment_is_said_once(body, words):
    """Its names were also said to be never assigned and not to exist."""
    (found,) = cell_errors(body + OK_C)
    assert found[:2] == (5, 1) and words in found[2], found


def test_header_mistakes():
    errors = cell_errors("h = tanh(linear(x, h[t-1]))\n",
                         header="cell t\ninput x, y\nstate h, 2k, x\nstate q\noutput\n")
    assert (2, 10) in [(line, col) for line, col, _ in errors]  # second input
    assert any("a cell has exactly one input" in m for *_, m in errors)
    assert (3, 10, "'2k' is not a valid name (letters, digits, _)") in errors
    assert (3, 14, "'x' is declared both as input and state") in errors
    assert (4, 1, "a second 'state' line (the first is line 3); list all names on one "
            "line: state a, b") in errors
    assert (5, 1, "'output' needs a name: output NAME") in errors


@pytest.mark.parametrize("names, col", [("c,, h", 8), (" , c, h", 8), ("c ,  , h", 9),
                                         ("c, h,", None), ("c h", None)])
def test_a_comma_with_no_name_before_it_is_an_error_at_the_comma(names, col):
    """As in Python, a comma after the last name is allowed, two in a row are not."""
    body = "h = tanh(linear(x, h[t-1]))\nc = h\n"
    header = f"cell t\ninput x\nstate {names}\noutput h\n"
    if col is None:
        assert compile_source(header + body, "t.cell").graph.states.keys() == {"c", "h"}
        return
    errors = cell_errors(body, header=header)
    assert errors == [(3, col, "a name is missing beside this comma: state a, b")]


def test_empty_file_and_missing_headers():
    with pytest.raises(CellError, match="1:1: error: empty cell file"):
        compile_source("", "e.cell")
    with pytest.raises(CellError) as info:
        compile_source("h = tanh(h)\n", "n.cell")
    text = str(info.value)
    assert "no 'input' line" in text and "no 'state' line" in text and "no 'output' line" in text


def test_independent_errors_are_reported_together_in_file_order():
    errors = cell_errors("""\
        f = sigmod(linear(x, h[t-1]))
        g = tanh(linear(x, q))
        c = f * c[t-1] + i * g
        h = tanh(c) / 2
    """)
    assert [line for line, _, _ in errors] == [5, 6, 7, 8]


def test_columns_count_characters_not_bytes():
    errors = cell_errors("h = tanh(linear(x, h[t-1]))   # é\nc = ünknown * 2\n")
    assert errors[0][:2] == (6, 5)


def test_error_text_has_file_line_col_prefix():
    with pytest.raises(CellError) as info:
        compile_source("cell t\ninput x\nstate h\noutput h\nh = nope\n", "my/cell.cell")
    assert str(info.value).startswith("my/cell.cell:5:5: error: undefined name 'nope'")


@pytest.mark.parametrize("literal", ["1e400", "1" + "0" * 400])
def test_a_number_too_large_for_a_float_is_an_error_not_a_crash(literal):
    errors = cell_errors(f"h = {literal} * h[t-1]\n" + OK_C)
    assert [(line, col) for line, col, _ in errors] == [(5, 5)]
    assert "number too large" in errors[0][2]


def test_a_loop_and_an_undefined_name_in_other_lines_are_both_reported():
    errors = cell_errors("""\
        f = sigmoid(linear(x, h[t-1], peep(c)))
        c = f * c[t-1]
        h = tanh(c) + gg
    """)
    assert [(line, col) for line, col, _ in errors] == [(5, 36), (7, 15)]
    assert "algebraic loop f -> c -> f" in errors[0][2]
    assert "undefined name 'gg'" in errors[1][2]


def test_an_integer_of_5000_digits_is_a_number_too_large_at_its_column():
    errors = cell_errors(f"h = tanh(linear(x, h[t-1])) * {'9' * 5000}\n" + OK_C)
    assert errors == [(5, 31, "number too large (5000 digits): a constant must be finite (at "
                       "most about 1.8e308)")]
    assert "set_int_max_str_digits" not in errors[0][2]


@pytest.mark.parametrize("expression", [
    "tanh(" + " + ".join(["h[t-1]"] * 100_000) + ")",  # too large for the compiler's stack
    "-" * 100_000 + "h[t-1]",  # too deep for the parser
])
def test_a_line_too_deep_to_read_causes_no_follow_up_errors(expression):
    errors = cell_errors(f"h = {expression}\n" + OK_C)
    assert len(errors) == 1, errors
    assert errors[0][:2] == (5, 1)
    assert "too large or too deeply nested to read" in errors[0][2]


def test_a_line_too_deep_to_read_among_many_good_ones():
    body = "".join(f"a{k} = h * {k}\n" for k in range(2000))
    errors = cell_errors(body + "h = " + "-" * 50_000 + "h[t-1]\n" + OK_C
                         + "k = undefined_name\n")
    assert [(line, col) for line, col, _ in errors] == [(2005, 1), (2007, 5)]


def test_syntax_errors_deep_in_a_long_file_keep_their_lines():
    lines = [f"a{k} = h * 2\n" for k in range(3000)]
    lines[1234] = "a1234 = h * * 2\n"
    lines[2999] = "a2999 = (\n"
    errors = cell_errors("h = tanh(linear(x, h[t-1]))\n" + OK_C + "".join(lines))
    assert [line for line, _, _ in errors] == [1241, 3006]


def test_reading_a_name_whose_line_could_not_be_read_is_no_second_error():
    errors = cell_errors("q = tanh(x) +\nh = linear(x, h[t-1]) * q\n" + OK_C)
    assert [(line, col) for line, col, _ in errors] == [(5, 13)]  # the '+'
    assert errors[0][2].startswith("syntax error")


def test_an_expression_deeper_than_the_language_allows_is_refused_naming_its_depth():
    """``h[t-1]`` nests 2 deep (the index is an operation), each minus one more."""
    compile_source(HEADER + "h = " + "-" * (MAX_DEPTH - 2) + "h[t-1]\n" + OK_C, "t.cell")
    errors = cell_errors("h = " + "-" * (MAX_DEPTH - 1) + "h[t-1]\n" + OK_C)
    assert errors == [(5, 1, f"expression nested {MAX_DEPTH + 1} operations deep; at most "
                       f"{MAX_DEPTH}: split it over several assignments")]


def test_a_syntax_error_in_a_file_is_placed_at_its_own_column(tmp_path):
    """Python's parser, given a real file's name, measured the column on that file's
    first line (here 'input x', 7 characters: every column came out as 8 or 9)."""
    path = tmp_path / "p.cell"
    path.write_text("input x\nstate h\noutput h\nh = tanh(linear(x, h[t-1])) + 2 3\n"
                    "k = sigmoid(linear(x, h[t-1])\n")
    with pytest.raises(CellError) as info:
        lstm_graph.load_cell(path)
    found = [(d.line, d.col, d.message) for d in info.value.diagnostics]
    assert found == [(4, 33, "syntax error: invalid syntax"),
                     (5, 12, "syntax error: '(' was never closed; close it on this line or a "
                      "following one")]


@pytest.mark.parametrize("indent", ["", "  ", "\t"])
def test_a_bracket_left_open_swallows_no_following_assignment(indent):
    """The next line that starts a statement (indented, or of a name like α, too) ends the
    open one: its name is assigned, so no 'never assigned' or 'does not exist' follows."""
    body = "f = sigmoid(linear(x, h[t-1])\n\u03b1 = f * 2\nc = \u03b1 * c[t-1]\nh = tanh(c)\n"
    text = HEADER + "".join(indent + line + "\n" for line in body.splitlines())
    with pytest.raises(CellError) as info:  # not cell_errors: it takes the indents away
        compile_source(text, "t.cell")
    assert [(d.line, d.col, d.message) for d in info.value.diagnostics] == [
        (5, 12 + len(indent), "syntax error: '(' was never closed; close it on this line or a "
         "following one")]


def test_a_header_name_an_expression_reads_otherwise_is_refused_once():
    """Python's parser reads names in NFKC form (ℎ as h) and takes no keyword as a name; the
    name is declared as the expressions read it, so their uses raise no error of their own."""
    errors = cell_errors("h = tanh(linear(x, h[t-1]))\n",
                         header="input x\nstate \u210e\noutput \u210e\n")
    assert errors == [(2, 7, "'\u210e' (U+210E) reads as 'h' (h) in an expression (names are "
                       "compared in Unicode's NFKC form); write it so"),
                      (3, 8, "'\u210e' (U+210E) reads as 'h' (h) in an expression (names are "
                       "compared in Unicode's NFKC form); write it so")]
    assert cell_errors("h = tanh(linear(x, h[t-1]))\n",
                       header="input x\nstate None, h\noutput h\n") == [
        (2, 7, "'None' is a keyword of the expressions' syntax; choose another name")]


def test_a_name_an_expression_reads_otherwise_is_refused_where_it_is_written():
    """ℎ in an expression or as an assignment's target would read as h: refused at its place,
    in a continued line too, and α (the same in NFKC form) stays a name."""
    nfkc = ("'\u210e' (U+210E) reads as 'h' (h) in an expression (names are compared in "
            "Unicode's NFKC form); write it so")
    header = "input x\nstate h\noutput h\n"
    assert cell_errors("h = tanh(linear(x, \u210e[t-1]))\n", header) == [(4, 20, nfkc)]
    assert cell_errors("\u210e = tanh(linear(x, h[t-1]))\n", header) == [(4, 1, nfkc)]
    assert cell_errors("\u03b1 = h[t-1] * 2\nh = tanh(linear(x,\n  \u03b1 * \u210e[t-1]))\n",
                       header) == [(6, 7, nfkc)]


def test_an_operator_left_without_its_operand_over_lines_is_placed_at_it():
    errors = cell_errors("h = tanh(linear(x,\n  x * c[t-1] +\n))\n" + OK_C)
    assert errors[0][:2] == (6, 14) and "'+' has no value after it" in errors[0][2]


def test_the_input_is_no_output():
    """An output is a state or a computed value: the input would leave unchanged."""
    assert cell_errors("h = tanh(linear(x, h[t-1]))\n", "input x\nstate h\noutput x\n") == [
        (3, 8, "output 'x' is the cell's input, which the cell would hand on unchanged; name a "
         "state or computed value")]


def test_a_cell_s_own_name_may_be_any_identifier_and_a_refused_header_is_not_missing():
    """A cell's name is never read in an expression: 'cell class' is fine (from-torch
    names cells after files); a header whose only name is refused is still there."""
    compile_source("cell class\ninput x\nstate h\noutput h\nh = tanh(linear(x, h[t-1]))\n")
    errors = cell_errors("c = c[t-1]\nh = tanh(linear(x, c))\n",
                         header="input x\nstate c, lambda\noutput lambda\n")
    assert [e[:2] for e in errors] == [(2, 10), (3, 8)], errors  # no "no 'output' line"


def test_a_header_written_with_a_colon_is_said_once_and_read():
    errors = cell_errors("c = c[t-1]\nh = tanh(linear(x, h[t-1]))\n",
                         header="input x\nstate : c, 1h\noutput h\n")
    assert errors[:2] == [(2, 7, "a header line has no colon: write 'state NAMES'"),
                          (2, 12, "'1h' is not a valid name (letters, digits, _)")]
    assert cell_errors("preset: f\nc = c[t-1]\nh = tanh(linear(x, h[t-1]))\n") == [
        (5, 1, "'preset' needs a name, a colon and names: preset NAME: a, b")]  # its own form


@pytest.mark.parametrize("line, error", [
    ("a = linear(x); h = tanh(a + h[t-1])", (5, 16, "one assignment per line")),
    ("h\u200d = tanh(linear(x, h[t-1]))",
     (5, 2, "syntax error: invalid non-printable character U+200D")),
])
def test_a_refused_line_s_names_are_not_also_called_never_assigned(line, error):
    """Each gave "state 'h' is declared but never assigned" and "output 'h' does not
    exist" after the one true error (h80): the line assigns h, though it was refused."""
    assert cell_errors(line + "\n", header="cell t\ninput x\nstate h\noutput h\n") == [error]


def test_a_backslash_at_a_line_s_end_is_one_error_at_its_place():
    """It gave 'unexpected EOF while parsing' and 'expected an assignment' for the next
    line (h80)."""
    assert cell_errors("h = tanh(linear(x, h[t-1])) \\\n    * 0.5\n",
                       header="cell t\ninput x\nstate h\noutput h\n") == [
        (5, 29, "a backslash does not join lines; write the expression in parentheses to "
                "take it over several lines")]


def test_a_header_keyword_in_another_case_is_said_once_and_read():
    """'Input x' gave "no 'input' line", a syntax error and an undefined x (h80)."""
    errors = cell_errors("h = tanh(linear(x, h[t-1]))\n",
                         header="cell t\nInput x\nSTATE h\nOutput: h\n")
    assert errors == [(2, 1, "'Input': a header keyword is written in lower case: 'input'"),
                      (3, 1, "'STATE': a header keyword is written in lower case: 'state'"),
                      (4, 1, "'Output': a header keyword is written in lower case: 'output'"),
                      (4, 7, "a header line has no colon: write 'output NAMES'")]
    compile_source("cell k\ninput x\nstate h\noutput h\nState = tanh(linear(x, h[t-1]))\n"
                   "h = State\n")  # a value of that name is a value


def test_a_call_left_open_up_to_a_header_line_is_an_error_at_its_place(tmp_path,
                                                                       cli_fails):
    """'o = sigmoid(' then a header line, then 'h)': read together, the two statements were
    one assignment, the second's body empty: an IndexError's traceback."""
    path = tmp_path / "open.cell"
    path.write_text("input x\nstate h\no = sigmoid(\noutput h\nh)\n"
                    "h = tanh(linear(x, h[t-1]))\n")
    assert cli_fails("validate", path) == (
        f"{path}:3:12: error: syntax error: '(' was never closed; close it on this line or a "
        f"following one\n{path}:5:2: error: syntax error: unmatched ')'\n")


def test_the_validator_s_errors_stop_at_the_first_hundred_and_count_the_rest():
    """The finding: a state line of 220,000 names never assigned printed 220,001 lines
    (the parser stopped at 100 errors; the validator's checks did not)."""
    states = ", ".join(f"s{k}" for k in range(300))
    errors = cell_errors("h = tanh(linear(x, h[t-1]))\n",
                         header=f"cell t\ninput x\nstate h, {states}\noutput h\n")
    assert len(errors) == 101
    assert all("is declared but never assigned" in e[2] for e in errors[:100])
    assert errors[-1][2] == "and 200 more errors from here (the first 100 are listed)"
    assert errors[-1][:2] == (3, errors[99][1] + 5)  # at s100, after "s99, "


def test_a_name_too_long_for_suggestions_gets_none_and_is_not_indexed():
    """The finding: each name's every one-character deletion was indexed, so a
    30,000-character name among 200 others took 909 MB (and difflib minutes)."""
    from lstm_graph.language.parser import NameIndex

    long = "a" * 30_000
    index = NameIndex([long, *(f"v{k}" for k in range(300))])
    assert max(map(len, index.index)) <= 64
    assert index.closest(long[:-1] + "b") is None
    assert index.closest("v10x") == "v10"
    errors = cell_errors("h = tanh(linear(x, h[t-1])) + zz\n" + OK_C
                         + "".join(f"v{k} = 1\n" for k in range(210)) + f"{long} = 1\n")
    assert any(e[2].startswith("undefined name 'zz'") for e in errors)


def test_a_function_s_number_named_on_a_continuation_line_continues_the_statement():
    """The finding: alpha=0.1) at a line's start was read as a new statement."""
    cell = compile_source(HEADER + "h = leaky_relu(linear(x, h[t-1]),\n"
                          "               alpha=0.1)\nc = c[t-1]\n", "t.cell")
    assert cell.graph.node("h").attributes == {"alpha": 0.1}
    errors = cell_errors("h = tanh(linear(x, h[t-1])\nc = c[t-1]\n")
    assert errors[0][2].startswith("syntax error: '(' was never closed")
    # a line Python names is the file's, not counted from the statement's first line
    errors = cell_errors("c = c[t-1]\nh = tanh(linear(x,\n   h[t-1]]\n")
    assert errors[0][:2] == (7, 10) and errors[0][2] == (
        "syntax error: closing parenthesis ']' does not match opening parenthesis '(' on "
        "line 6"), errors


@pytest.mark.parametrize("line, col, message", [
    ("h = tanh(linear(x, h[t-1])) + x[t]", 31, "only a state may be indexed, and only with "
     "[t-1] (the previous step); write x for this step's value"),
    ("h = tanh(linear(x, h[t-1])) + tanh[t-1]", 31, "'tanh' is reserved (a function, 't' or "
     "a header keyword), not a value: only a state may be indexed, c[t-1]"),
    ("h = tanh(linear(x, h[t-1])) * h[t-1] + $", 40, "syntax error: '$' cannot be in an "
     "expression (a cell computes with names, numbers, + - * and its functions)"),
    ("h = tanh(linear(x, h[t-1])) + lambda", 31, "syntax error: 'lambda' is a keyword of the "
     "expressions' syntax, not a name; choose another name"),
    ("h = tanh(linear(x, h[t-1])) +", 29, "syntax error: '+' has no value after it; give its "
     "right operand (an expression goes on over lines inside parentheses)"),
])
def test_what_stands_in_the_way_is_said_not_a_wrong_fix(line, col, message):
    """The findings: x[t] on the input was told to write x[t-1] (an error too), tanh[t-1]
    to declare 'state tanh' (reserved), and '+ $' that '+' has no value after it."""
    assert (5, col, message) in cell_errors(line + "\n" + OK_C)


def test_a_second_cell_input_or_output_line_and_an_empty_state_line_say_what_to_do():
    errors = cell_errors("h = tanh(linear(x))\nc = c[t-1]\n", header="cell a\ncell b\n"
                         "input x\nstate c, h\noutput h\noutput k\ninput y\n")
    assert (2, 1, "a second 'cell' line (the first is line 1); a cell has one name") in errors
    assert (6, 1, "a second 'output' line (the first is line 5); a cell has one output") \
        in errors
    assert (7, 1, "a second 'input' line (the first is line 3); a cell has one input") \
        in errors  # it said to list both on one line, which is refused in turn
    empty = cell_errors("h = tanh(linear(x))\n", header="cell t\ninput x\nstate\noutput h\n")
    assert [e[2] for e in empty if "state" in e[2]] == ["'state' needs a name: state NAME"]


def test_an_expression_operand_named_by_its_place_is_said_to_be_so():
    """linear(x, c[t-1] * 1, arg2): both are 'arg2', the first by its place; the message
    said they were 'both named' so, as if the expression had a name."""
    errors = cell_errors("k = linear(x)\narg2 = tanh(k)\nh = linear(x, c[t-1] * 1, arg2)\n"
                         + OK_C)
    assert any("are both named 'arg2' (an expression is named by its place: operand 2 is "
               "'arg2')" in message for _, _, message in errors), errors
