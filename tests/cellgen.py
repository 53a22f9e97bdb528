"""Hypothesis strategies that write random, valid .cell sources (test helper).

A cell has one input ``x``, one to three states and values of every size the
validator admits: input-sized values ``u*`` (from ``x`` and numbers), numbers
``k*`` (from constants alone) and hidden-sized values ``v*`` and states.
Expressions use every op of the language: + - * and unary minus, every function
of the op table (with attributes where it takes them), a bare copy, and
``linear`` (at most once per line, with peepholes on hidden-sized operands)
over the input, input-sized values, old values ``s[t-1]`` and new values
computed earlier in the step. The output is any
state or value but a number (so it may have the input's size). Lines come out
shuffled, because the language is order-free.
"""

from __future__ import annotations

from hypothesis import strategies as st

from lstm_graph.ops import FUNCTIONS

#: Every function of the op table with attributes of its own (not its defaults), and unary -.
ATTRIBUTES = {"leaky_relu": "0.2", "thresholded_relu": "0.25", "elu": "0.5",
              "hard_sigmoid": "0.3, 0.4", "scaled_tanh": "1.5, 0.75", "affine": "-1.5, 0.25",
              "clip": "1.25"}
UNARY = tuple(f"{name}({{}}, {ATTRIBUTES[name]})" if name in ATTRIBUTES else f"{name}({{}})"
              for name in sorted(FUNCTIONS)) + ("-({})",)
NUMBERS = ("1", "0.5", "2", "1.5", "-0.25")


@st.composite
def expressions(draw, leaves: list[str], numbers: list[str], linear_operands: list[str],
                depth: int = 3, allow_linear: list[bool] | None = None) -> str:
    """An expression over ``leaves`` (one size) and ``numbers``; may hold one linear(...)."""
    allow_linear = allow_linear if allow_linear is not None else [bool(linear_operands)]
    choices = ["leaf", "unary", "binary", "number"] if depth > 0 else ["leaf"]
    if allow_linear[0]:
        choices.append("linear")
    kind = draw(st.sampled_from(choices))
    if kind == "leaf":
        return draw(st.sampled_from(leaves))
    if kind == "linear":
        allow_linear[0] = False
        operands = draw(st.lists(st.sampled_from(linear_operands), min_size=1, max_size=3,
                                 unique_by=lambda o: o.split("[")[0]))
        rendered = []
        for operand in operands:
            hidden = operand[0] in "sv"  # states, their old values and v*: size H
            rendered.append(f"peep({operand})" if hidden and draw(st.booleans()) else operand)
        return f"linear({', '.join(rendered)})"

    def sub() -> str:
        return draw(expressions(leaves, numbers, linear_operands, depth - 1, allow_linear))

    if kind == "number":
        number = draw(st.sampled_from([*NUMBERS, *numbers]))
        return f"{number} {draw(st.sampled_from('+-*'))} ({sub()})"
    if kind == "unary":
        return draw(st.sampled_from(UNARY)).format(sub())
    return f"({sub()}) {draw(st.sampled_from('+-*'))} ({sub()})"


@st.composite
def valid_cells(draw) -> str:
    """Source text of a random valid cell."""
    states = [f"s{k}" for k in range(draw(st.integers(1, 3)))]
    inputs_sized = [f"u{k}" for k in range(draw(st.integers(0, 2)))]
    numbers = [f"k{k}" for k in range(draw(st.integers(0, 1)))]
    hidden = [f"v{k}" for k in range(draw(st.integers(0, 4)))]
    order = draw(st.permutations(states + inputs_sized + numbers + hidden))
    defined: list[str] = []
    lines = []
    for name in order:
        if name[0] == "k":  # a number: constants only
            lines.append(f"{name} = {draw(expressions(list(NUMBERS), [], []))}")
        elif name[0] == "u":  # the input's size: x, earlier u*, numbers
            leaves = ["x", *(d for d in defined if d[0] == "u")]
            numbers_now = [d for d in defined if d[0] == "k"]
            lines.append(f"{name} = {draw(expressions(leaves, numbers_now, []))}")
        else:  # the hidden size: old values, earlier states and v*, numbers; a linear
            leaves = [f"{s}[t-1]" for s in states] + [d for d in defined if d[0] in "sv"]
            numbers_now = [d for d in defined if d[0] == "k"]
            operands = ["x", *(d for d in defined if d[0] == "u"), *leaves]
            lines.append(f"{name} = {draw(expressions(leaves, numbers_now, operands))}")
        defined.append(name)
    output = draw(st.sampled_from(states + inputs_sized + hidden))
    lines = draw(st.permutations(lines))
    header = f"cell random\ninput x\nstate {', '.join(states)}\noutput {output}\n"
    return header + "\n".join(lines) + "\n"
