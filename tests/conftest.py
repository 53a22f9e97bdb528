"""Shared helpers for the tests."""

from __future__ import annotations

import shutil
import textwrap

import pytest

from lstm_graph import CellError, compile_source

HEADER = "cell t\ninput x\nstate c, h\noutput h\n"

needs_dot = pytest.mark.skipif(shutil.which("dot") is None,
                               reason="Graphviz's dot program is not installed")


def cell_errors(body: str, header: str = HEADER) -> list[tuple[int, int, str]]:
    """``(line, col, message)`` of every error a cell source raises (test helper)."""
    with pytest.raises(CellError) as info:
        compile_source(header + textwrap.dedent(body), "t.cell")
    return [(d.line, d.col, d.message) for d in info.value.diagnostics if d.severity == "error"]
