"""Validation costs time in proportion to a file's length, however wrong the file is.

Suggestions ("did you mean …") were once computed for every undefined name
against every known name, past the 100-error cap too: 8,000 undefined names
took minutes. These tests count the work (names compared) and also time
files built like the ones that were slow, with bounds generous enough for a
busy machine and far below what quadratic work takes.
"""

from __future__ import annotations

import difflib
import time

import pytest

from lstm_graph import CellError, compile_source
from lstm_graph.language import parser

HEADER = "input x\nstate h\noutput h\nh = tanh(linear(x, h[t-1]))\n"


def each_line_reads_an_undefined_name(count: int) -> str:
    return HEADER + "".join(f"v{k} = h * u{k}\n" for k in range(count))


def single_line_assignments_of_undefined_names(count: int) -> str:
    return HEADER + "".join(f"a{k} = b{k}\n" for k in range(count))


def errors_of(source: str) -> list[str]:
    with pytest.raises(CellError) as info:
        compile_source(source, "big.cell")
    return [d.message for d in info.value.diagnostics]


@pytest.fixture
def compared(monkeypatch) -> list[int]:
    """How many names each suggestion compared."""
    sizes: list[int] = []
    original = difflib.get_close_matches

    def counting(word, possibilities, *args, **kwargs):
        possibilities = list(possibilities)
        sizes.append(len(possibilities))
        return original(word, possibilities, *args, **kwargs)

    monkeypatch.setattr(parser.difflib, "get_close_matches", counting)
    return sizes


@pytest.mark.parametrize("count", [2000, 8000])
def test_suggestions_compare_few_names_and_stop_at_the_error_cap(compared, count):
    messages = errors_of(single_line_assignments_of_undefined_names(count))
    assert len(messages) == parser.MAX_ERRORS + 1
    assert messages[-1] == "stopped after 100 errors; is this a .cell file?"
    assert len(compared) <= parser.MAX_ERRORS
    assert sum(compared) <= 50 * parser.MAX_ERRORS  # not 100 · count


def test_a_typo_among_thousands_of_names_is_still_suggested():
    source = HEADER + "".join(f"value_{k} = h * 2\n" for k in range(5000)) + "q = valeu_4321\n"
    messages = errors_of(source)
    assert "undefined name 'valeu_4321' (did you mean 'value_4321'?)" in messages[0]


@pytest.mark.parametrize("make, count", [
    (each_line_reads_an_undefined_name, 8000),
    (single_line_assignments_of_undefined_names, 8000),
    (single_line_assignments_of_undefined_names, 19_000),  # parser.MAX_ASSIGNMENTS: 20,000
])
def test_files_full_of_undefined_names_validate_in_seconds(make, count):
    source = make(count)
    began = time.perf_counter()
    messages = errors_of(source)
    assert time.perf_counter() - began < 20  # quadratic work took minutes
    assert len(messages) == parser.MAX_ERRORS + 1


def test_a_long_file_of_syntax_errors_stops_at_the_cap_in_seconds():
    source = HEADER + "".join(f"a{k} = b{k} +\n" for k in range(19_000))
    began = time.perf_counter()
    messages = errors_of(source)
    assert time.perf_counter() - began < 20
    assert len(messages) == parser.MAX_ERRORS + 1


def test_what_reaches_a_state_is_found_in_one_search_back_from_them_all():
    """A chain of states, each copying the one before (8,000 of them, a 165 KB file, took
    54 s and 2.2 GB to validate): a search back from each state held every set of what
    reaches it at once, which grows as the square of the chain."""
    import tracemalloc

    from lstm_graph.language.validate import unused

    states = 3000
    source = (f"input x\nstate {', '.join(f's{k}' for k in range(states))}\n"
              f"output s{states - 1}\ns0 = tanh(linear(x, s0[t-1]))\n"
              + "".join(f"s{k} = s{k - 1}\n" for k in range(1, states)))
    graph = compile_source(source, "chain.cell").graph
    tracemalloc.start()
    try:
        assert unused(graph) == []
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, peak  # the sets of each state's ancestors: 300 MiB
