"""Every command: importing this module registers each family's commands on
:data:`group` (:data:`lstm_graph.cli.app.main`)."""

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
from lstm_graph.cli.app import main as group

__all__ = ["group"]
