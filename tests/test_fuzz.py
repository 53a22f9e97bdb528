"""Fuzzing: whatever text a user feeds in, only lstm-graph's own errors come out.

Example counts come from the hypothesis profile (tests/conftest.py): 2,000 per
test in CI, 300 locally, 50,000 with HYPOTHESIS_PROFILE=long.
"""

from __future__ import annotations

import warnings

from cellgen import valid_cells
from hypothesis import given
from hypothesis import strategies as st

import lstm_graph
from lstm_graph.render import render
from lstm_graph.render.scene import build_scene

SEEDS = [lstm_graph.library._BUILTIN_DIR.joinpath(f"{n}.cell").read_text()
         for n in lstm_graph.builtin_names()]
ALPHABET = st.sampled_from(list("abcfghioxz_ ()[]+-*/=#,.:;0123456789t\n\t'\"\\{}@!é\x00"))


def compiles_or_says_why(source: str) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing may leak to the user as a warning
            lstm_graph.compile_source(source, "fuzz.cell")
    except lstm_graph.CellError as err:
        assert err.diagnostics, "a CellError must carry at least one diagnostic"
        for diagnostic in err.diagnostics:
            assert diagnostic.line >= 1 and diagnostic.col >= 1
            assert diagnostic.message


@st.composite
def mutated(draw) -> str:
    """A valid cell (built-in or generated) with a few random edits."""
    source = draw(st.one_of(st.sampled_from(SEEDS), valid_cells()))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["delete", "insert", "duplicate", "swap", "replace"]))
        lines = source.splitlines(keepends=True) or [""]
        if kind == "delete" and source:
            start = draw(st.integers(0, len(source) - 1))
            source = source[:start] + source[start + draw(st.integers(1, 12)):]
        elif kind == "insert":
            at = draw(st.integers(0, len(source)))
            source = source[:at] + draw(st.text(ALPHABET, min_size=1, max_size=8)) + source[at:]
        elif kind == "duplicate":
            line = draw(st.sampled_from(lines))
            source = source + line
        elif kind == "swap" and len(lines) > 1:
            a, b = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            lines[a], lines[b] = lines[b], lines[a]
            source = "".join(lines)
        elif kind == "replace":
            old = draw(st.sampled_from(["h", "c", "x", "t-1", "linear", "peep", "sigmoid", "*",
                                        "state", "output", "="]))
            new = draw(st.sampled_from(["q", "h[t-1]", "t-2", "lin", "", "**", "tanh", "x[t-1]",
                                        "((", "1", "input"]))
            source = source.replace(old, new, 1)
    return source


@given(st.text(ALPHABET, max_size=200))
def test_random_text_gives_only_cell_errors(source):
    compiles_or_says_why(source)


@given(mutated())
def test_mutated_cells_give_only_cell_errors(source):
    compiles_or_says_why(source)


@given(valid_cells())
def test_random_valid_cells_render_to_dot_in_both_styles(source):
    cell = lstm_graph.compile_source(source, "random.cell")
    memory = build_scene(cell.schedule).memory_state()
    for style in ("pipe", "cell"):
        dot = render(cell, style, stages=True).source
        assert dot.startswith(f"digraph random_{style} {{")
        for name in cell.graph.states:
            drawn_as_cell = style == "cell" and name == memory and name not in cell.graph.outputs
            assert ('"[cell]"' if drawn_as_cell else f'"{name}[t]"') in dot
