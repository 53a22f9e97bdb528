"""Hypothesis strategies that write random, valid .cell sources (test helper).

Each cell has one input ``x``, one to three states and a handful of values;
expressions mix every op the language has, ``linear`` (with peepholes) at
most once per line, constants, old and new reads. Lines come out shuffled,
because the language is order-free.
"""

from __future__ import annotations

from hypothesis import strategies as st

UNARY = ("sigmoid", "tanh", "relu")


@st.composite
def expressions(draw, leaves: list[str], linear_operands: list[str], depth: int = 3,
                allow_linear: list[bool] | None = None) -> str:
    """An H-sized expression over ``leaves``; may contain one linear(...)."""
    allow_linear = allow_linear if allow_linear is not None else [True]
    choices = ["leaf", "unary", "binary", "const"]
    if allow_linear[0]:
        choices.append("linear")
    kind = draw(st.sampled_from(choices if depth > 0 else ["leaf", "linear"]
                                if allow_linear[0] else ["leaf"]))
    if kind == "leaf":
        return draw(st.sampled_from(leaves))
    if kind == "linear":
        allow_linear[0] = False
        operands = draw(st.lists(st.sampled_from(linear_operands), min_size=1, max_size=3,
                                 unique_by=lambda o: o.split("[")[0]))
        rendered = []
        for operand in operands:
            peep = operand != "x" and draw(st.booleans())
            rendered.append(f"peep({operand})" if peep else operand)
        return f"linear({', '.join(rendered)})"
    sub = lambda: draw(expressions(leaves, linear_operands, depth - 1, allow_linear))  # noqa: E731
    if kind == "unary":
        func = draw(st.sampled_from((*UNARY, "-")))
        return f"-({sub()})" if func == "-" else f"{func}({sub()})"
    if kind == "const":
        number = draw(st.sampled_from(["1", "0.5", "2", "1.5"]))
        return f"{number} {draw(st.sampled_from('+-*'))} {sub()}"
    return f"({sub()}) {draw(st.sampled_from('+-*'))} ({sub()})"


@st.composite
def valid_cells(draw) -> str:
    """Source text of a random valid cell."""
    states = [f"s{k}" for k in range(draw(st.integers(1, 3)))]
    names = states + [f"v{k}" for k in range(draw(st.integers(0, 4)))]
    order = draw(st.permutations(names))
    defined: list[str] = []
    lines = []
    for name in order:
        leaves = [f"{s}[t-1]" for s in states] + defined
        operands = ["x", *leaves]
        expr = draw(expressions(leaves, operands))
        lines.append(f"{name} = {expr}")
        defined.append(name)
    output = draw(st.sampled_from(names))
    lines = draw(st.permutations(lines))
    header = f"cell random\ninput x\nstate {', '.join(states)}\noutput {output}\n"
    return header + "\n".join(lines) + "\n"
