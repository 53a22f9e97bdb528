"""How much gradient reaches each step back in time: the constant error carousel, measured.

For a loss at the last step (the sum of the last step's output, as ``grad``
without ``--grad-output``), the size of ``∂L/∂s_t`` for every state ``s`` and
every step ``t``: in an LSTM the memory pipe ``c = f * c[t-1] + …`` carries it
back through the forget valve alone, with no squashing between steps, while a
plain RNN's ``h = tanh(linear(x, h[t-1]))`` multiplies it by ``W·tanh'`` at
every step, so it fades geometrically (Hochreiter & Schmidhuber 1997).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lstm_graph.cell import Runner
from lstm_graph.errors import DataError
from lstm_graph.executors.backends import mean_sequence_norm, to_numpy


@dataclass(frozen=True)
class Flow:
    """Gradient sizes over time for one cell, each sequence's norm over the units averaged
    over the batch: per state (also what its new value carries leaving the step: the
    memory pipe into the Cell, all its readers' gradient) and per IR edge."""

    cell: str
    states: dict[str, np.ndarray]  # state -> (T,): mean over the batch of ‖∂L/∂s_t‖
    edges: dict[tuple[str, str], np.ndarray]  # IR edge -> (T,): the gradient it carried


def flow(runner: Runner, x: Any, state: dict[str, Any] | None = None) -> Flow:
    """The gradient flow of ``runner``'s cell on ``x`` ``(T, B, I)``, loss at the last step:
    one forward layer's (a stack's layers and directions would each need a chart, and a
    reverse layer's last step is its first)."""
    if not runner.plain:
        layout = ", batch-first" if runner.batch_first else ""
        raise DataError(f"gradflow charts one forward layer, time-major; these weights are "
                        f"{runner.stack.describe()}{layout}: chart a single layer's")
    cell = runner.cell
    (output,) = cell.graph.outputs
    width = cell.schedule.width(output, runner.input_size, runner.hidden_size)
    grad_y = np.zeros((*x.shape[:-1], width), dtype=runner.dtype)
    grad_y[-1] = 1
    # sizes that are not finite are what the chart shows as gaps (and gradflow notes):
    # grad's warning would advise an option gradflow has no need of
    found = runner.grad(x, grad_y, state=state, record=True, allow_nonfinite=True)
    states = {name: mean_sequence_norm(np, to_numpy(found.values[name]))
              for name in cell.graph.states}  # (T, B, H) -> (T,)
    edges = {edge: to_numpy(norms).astype(np.float64) for edge, norms in found.edges.items()}
    return Flow(cell.name, states, edges)
