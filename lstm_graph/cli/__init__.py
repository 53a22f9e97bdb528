"""The command line (``lstm-graph …``, ``python -m lstm_graph.cli …``).

:mod:`.app` holds the click group and turns errors into messages; each sibling
module adds one family of commands to it.
"""

from lstm_graph.cli import cache, describe, explore, render, run, trace  # noqa: F401  (they register commands)
from lstm_graph.cli.app import main

__all__ = ["main"]
