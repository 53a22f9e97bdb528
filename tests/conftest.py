"""Shared helpers for the tests."""

from __future__ import annotations

import os
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


# Hypothesis profiles: CI runs the fuzzers long enough to matter (issue: at least
# 2,000 examples); HYPOTHESIS_PROFILE=long runs them for a night's worth locally.
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("dev", max_examples=300, deadline=None)
settings.register_profile("ci", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=50_000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE",
                                     "ci" if os.environ.get("CI") else "dev"))
