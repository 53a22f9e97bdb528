"""The command line (``lstm-graph …``, ``python -m lstm_graph.cli …``).

:mod:`.app` holds the click group and turns errors into messages; each sibling
module adds one family of commands to it.
"""

from lstm_graph.cli import (  # noqa: F401  (each module registers its commands)
    cache,
    describe,
    explore,
    export,
    from_torch,
    grad,
    render,
    run,
    sweep,
    trace,
    train,
)
from lstm_graph.cli.app import main

__all__ = ["main"]
