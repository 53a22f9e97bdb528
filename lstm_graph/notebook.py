"""Cells, runs and schedules in a Jupyter notebook.

- A :class:`~lstm_graph.cell.Cell` that is the last expression of a notebook cell shows
  its diagram in the pipe style (``Cell._repr_svg_``: :func:`cell_svg`);
  ``cell.render("cell")`` gives the other style (a ``graphviz.Digraph``, which notebooks
  show too, drawn by lstm-graph's own bounded run of ``dot``:
  :class:`~lstm_graph.render.draw.Diagram`).
- ``runner.explore(x)`` returns an :class:`Explorer`: the explorer page of that run,
  shown inline (``_repr_html_``) in an ``iframe`` whose ``srcdoc`` holds the whole page,
  so nothing is loaded from anywhere; ``.html`` is the page, ``.save(path)`` writes it.
- ``cell.schedule`` prints as the ``schedule`` command does.

:func:`explorer_run` is also what ``lstm-graph explore`` draws its page from.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lstm_graph.checks import as_array
from lstm_graph.errors import DataError, OutputError, RenderError, inert
from lstm_graph.executors.backends import sequence_norms, to_numpy
from lstm_graph.executors.contract import Progress
from lstm_graph.formats.files import write_atomic

if TYPE_CHECKING:
    from lstm_graph.cell import Cell, Runner
    from lstm_graph.explore import Run

#: The iframe's height in a notebook (the page scrolls inside it).
FRAME_HEIGHT = 860


def cell_svg(cell: Cell, style: str = "pipe") -> str | None:
    """The cell's diagram as SVG text; None where Graphviz's ``dot`` is missing or the
    cell cannot be drawn (too many nodes; ``cell.render()`` says why): a notebook then
    shows the cell's text form instead."""
    from lstm_graph.render import STYLES, dot_program, render, to_bytes

    if style not in STYLES:  # a mistake, not a diagram that cannot be drawn
        raise RenderError(f"unknown style '{inert(style)}'; the styles are "
                          f"{', '.join(STYLES)}")
    if dot_program() is None:
        return None
    try:
        return to_bytes(render(cell, style), "svg").decode("utf-8")
    except RenderError:  # too large to draw, say: the text form is shown, without a traceback
        return None


def require_dot() -> None:
    """A RenderError saying how to install Graphviz where its ``dot`` is missing (the
    explorer's diagrams need it)."""
    from lstm_graph.render import dot_program

    if dot_program() is None:
        raise RenderError("the explorer draws its diagrams with Graphviz's 'dot' program, "
                          "which is not installed. Install it (Debian/Ubuntu: apt-get install "
                          "graphviz; macOS: brew install graphviz; see "
                          "https://graphviz.org/download/)")


def state_gradients(runner: Runner, x: Any, state: dict[str, Any] | None,
                    allow_nonfinite: bool) -> dict[str, np.ndarray]:
    """For each state, ``‖∂L/∂s_t‖`` per step and sequence ``(T, B)`` for a loss at the last
    step of ``x`` (the sum of its output): the page's gradient-flow panel, from the last
    step it shows."""
    y, _ = runner(x, state, allow_nonfinite=allow_nonfinite)
    grad_y = np.zeros(to_numpy(y).shape, dtype=runner.dtype)
    grad_y[-1] = 1
    found = runner.grad(x, grad_y, state=state, allow_nonfinite=allow_nonfinite, record=True)
    norms = {}
    for name in runner.cell.graph.states:
        values = to_numpy(found.values[name])
        values = values if values.ndim == 3 else values[:, None]  # one sequence (T, H)
        norms[name] = sequence_norms(np, values)
    return norms


def page_part(runner: Runner, x: Any, state: dict[str, Any] | None
              ) -> tuple[Any, dict[str, Any] | None, tuple[int, int]]:
    """The part of ``x`` (time-major) and ``state`` that the page of their run keeps
    (:func:`lstm_graph.explore.data.keep`: its first sequences and steps), and the run's
    whole ``(T, B)``. Only that part is run: every sequence is its own recurrence and a
    step reads only the steps before it, so its values are those of the whole run (but
    for the last bits, where fewer rows make other row blocks; a run of 200,000 steps, of
    which the page keeps 79, took minutes and 5 GB)."""
    from lstm_graph.explore.data import budget, keep

    x = as_array(x, "x")
    if x.ndim not in (2, 3) or x.shape[-1] != runner.input_size or 0 in x.shape:
        return x, state, (0, 0)  # refused by the run, in its words
    steps, sequences = x.shape[0], x.shape[1] if x.ndim == 3 else 1
    schedule, sizes = runner.cell.schedule, (runner.input_size, runner.hidden_size)
    graph = runner.cell.graph
    widths = {name: schedule.width(name, *sizes) for name in graph.assignments}
    widths.update(dict.fromkeys(graph.inputs, runner.input_size))
    kept = keep(steps, sequences, widths, budget(runner.dtype))
    if x.ndim == 2:
        return x[: kept.steps], state, (steps, sequences)
    cut = {}
    for name, value in (state or {}).items():
        value = as_array(value, f"state '{name}'")
        if tuple(value.shape) != (sequences, runner.hidden_size):
            raise DataError(f"state '{name}' has shape {tuple(value.shape)}, expected "
                            f"{(sequences, runner.hidden_size)}")
        cut[name] = value[: kept.sequences]
    return x[: kept.steps, : kept.sequences], cut if state is not None else None, \
        (steps, sequences)


def explorer_run(runner: Runner, x: Any, state: dict[str, Any] | None = None,
                 allow_nonfinite: bool = False, progress: Progress | None = None
                 ) -> tuple[Run, str]:
    """What the explorer page of ``runner`` run on ``x`` from ``state`` shows (its trace,
    gradient flow and initial states), and which executor ran the trace. One layer and
    direction, time-major (what the page draws)."""
    from lstm_graph.explore import Run

    if runner.batch_first:  # the page is drawn time-major: the same run, x read (T, B, I)
        x = as_array(x, "x")
        if len(x.shape) == 3:
            x = runner.xp.swapaxes(runner.xp.asarray(x), 0, 1)
        runner = runner.time_major()
    if not runner.plain:
        raise DataError(f"the explorer shows one layer and direction of a cell, and this "
                        f"runner is {runner.stack.describe()}: explore one of them, "
                        "runner.unit_runner(k).explore(x) (x as that unit reads it)")
    require_dot()
    x, state, total = page_part(runner, x, state)
    values = runner.trace(x, state, progress=progress, allow_nonfinite=allow_nonfinite)
    ran_with = str(runner.ran_with)  # the trace's executor (the gradients run the reference)
    gradients = state_gradients(runner, x, state, allow_nonfinite)
    x = np.asarray(to_numpy(x), dtype=runner.dtype)
    if x.ndim == 2:  # one sequence: the page still has a sequence axis
        values = {name: value[:, None] for name, value in values.items()}
        x = x[:, None]
    sequences = x.shape[1]
    given = state or {}
    initial = {name: np.broadcast_to(np.asarray(given[name], dtype=runner.dtype),
                                     (sequences, runner.hidden_size))
               if name in given else np.zeros((sequences, runner.hidden_size), runner.dtype)
               for name in runner.cell.graph.states}
    shows, reverse = runner.unit_of  # one unit of a stack: the page says which
    run = Run(runner.cell, {name: to_numpy(v) for name, v in values.items()}, x, initial,
              runner.dtype, gradients, total, shows=shows, reverse=reverse)
    return run, ran_with


@dataclass(frozen=True)
class Explorer:
    """An explorer page that a notebook shows inline; ``html`` is the whole page."""

    html: str
    cell: str

    def _repr_html_(self) -> str:
        """The page in a sandboxed ``iframe`` (scripts on, no access to the notebook),
        whole in its ``srcdoc``: nothing is fetched from anywhere."""
        return (f'<iframe title="{html.escape(self.cell)} · lstm-graph explorer" '
                f'srcdoc="{html.escape(self.html, quote=True)}" sandbox="allow-scripts" '
                f'style="width: 100%; height: {FRAME_HEIGHT}px; border: 1px solid #ddd">'
                "</iframe>")

    def save(self, path: str | Path) -> Path:
        """Write the page to ``path`` (whole or not at all)."""
        if not isinstance(path, (str, Path)):
            raise OutputError(f"save takes the path of the page to write, not "
                              f"{type(path).__name__} {path!r}")
        return write_atomic(path, self.html.encode("utf-8"))


def explore(runner: Runner, x: Any, state: dict[str, Any] | None = None,
            allow_nonfinite: bool = False) -> Explorer:
    """The explorer page of a run as an :class:`Explorer` (``runner.explore(x)``)."""
    from lstm_graph.explore import build_page

    run, _ = explorer_run(runner, x, state, allow_nonfinite)
    return Explorer(build_page(run), runner.cell.name)
