"""The ``explore`` command: a cell's run on its diagram, as one offline HTML page."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import click
import numpy as np

from lstm_graph.cell import Runner
from lstm_graph.cli.app import SPEC_HELP, OutputPath, main
from lstm_graph.cli.inputs import prepare, run_options, with_progress
from lstm_graph.cli.render import make_parent
from lstm_graph.cli.run import read_files
from lstm_graph.errors import DataError, RenderError
from lstm_graph.executors.backends import to_numpy
from lstm_graph.explore import Run, build_page, kept_of
from lstm_graph.explore.page import check_drawable
from lstm_graph.formats.files import refuse_inputs, write_atomic


def _steps(runner: Runner, x: np.ndarray) -> int:
    return int(x.shape[1] if runner.batch_first and x.ndim == 3 else x.shape[0])


def state_gradients(runner: Runner, x: np.ndarray, state: dict[str, np.ndarray] | None,
                    allow_nonfinite: bool) -> dict[str, np.ndarray]:
    """For each state, ``‖∂L/∂s_t‖`` per step and sequence ``(T, B)`` for a loss at the last
    step (the sum of its output): the page's gradient-flow panel."""
    y, _ = runner(x, state, allow_nonfinite=allow_nonfinite)
    grad_y = np.zeros(to_numpy(y).shape, dtype=runner.dtype)
    grad_y[-1] = 1
    found = runner.grad(x, grad_y, state=state, allow_nonfinite=allow_nonfinite, record=True)
    norms = {}
    for name in runner.cell.graph.states:
        values = to_numpy(found.values[name]).astype(np.float64)
        values = values if values.ndim == 3 else values[:, None]  # one sequence (T, H)
        norms[name] = np.sqrt(np.sum(values ** 2, axis=-1))
    return norms


@main.command(epilog=SPEC_HELP + " The page holds both diagram styles, a time control over "
              "the steps and a sequence selector, a stage player, each value's numbers on its "
              "node, path highlights, heatmaps over time and the gradient flow back from the "
              "last step. It stays under 2 MB (a larger run "
              "is cut to its first sequences, steps and units; the page says so) and loads "
              "nothing from the network.")
@click.argument("spec")
@run_options
@click.option("--out", type=OutputPath(), required=True,
              help="The page to write (.html).")
def explore(spec: str, out: Path, **inputs: Any) -> None:
    """Run a cell and write a page to watch the run on its diagram, step by step."""
    if out.suffix.lower() not in (".html", ".htm"):
        raise click.UsageError(f"--out {out}: the page is HTML; name it .html")
    refuse_inputs({"--out": out}, read_files(spec, inputs))
    if shutil.which("dot") is None:
        raise RenderError("the explorer draws its diagrams with Graphviz's 'dot' program, "
                          "which is not installed. Install it (Debian/Ubuntu: apt-get install "
                          "graphviz; macOS: brew install graphviz; see "
                          "https://graphviz.org/download/)")
    prepared = prepare(spec, work="grad", **inputs)
    cell, runner, x, state = prepared.cell, prepared.runner, prepared.x, prepared.state
    check_drawable(cell)
    if prepared.lengths is not None and np.any(prepared.lengths != _steps(runner, x)):
        raise DataError("explore shows every step of every sequence, and these sequences "
                        "have lengths of their own: cut x to sequences of one length, or "
                        "drop --lengths")
    if not runner.plain:  # the first layer's first direction, as a cell of its own
        which = " (reverse: x from its last step)" if runner.units[0].reverse else \
            ", forward direction" if runner.stack.direction == "bidirectional" else ""
        click.echo(f"note: the page shows layer 1{which} of {runner.stack.describe()}",
                   err=True)
        if runner.batch_first and x.ndim == 3:
            x = np.swapaxes(x, 0, 1)
        if runner.units[0].reverse:
            x = x[::-1]
        state = None if state is None else {
            name: value if runner.stack.single else value[0] for name, value in state.items()}
        runner = runner.unit_runner(0)
    values = with_progress(len(x), lambda progress: runner.trace(
        x, state, progress=progress, allow_nonfinite=prepared.allow_nonfinite))
    ran_with = runner.ran_with  # the trace's executor (the gradients run the reference)
    gradients = state_gradients(runner, x, state, prepared.allow_nonfinite)
    if x.ndim == 2:  # one sequence: the page still has a sequence axis
        values = {name: value[:, None] for name, value in values.items()}
        x = x[:, None]
    sequences = x.shape[1]
    given = state or {}
    initial = {name: np.broadcast_to(np.asarray(given[name], dtype=runner.dtype),
                                     (sequences, runner.hidden_size))
               if name in given else np.zeros((sequences, runner.hidden_size), runner.dtype)
               for name in cell.graph.states}
    run = Run(cell, {name: to_numpy(v) for name, v in values.items()},
              np.asarray(x, dtype=runner.dtype), initial, runner.dtype, gradients)
    page = build_page(run)
    make_parent(out)
    write_atomic(out, page.encode("utf-8"))
    click.echo(f"{cell.name}: {len(x)} steps, {sequences} sequences ({ran_with}); "
               f"wrote {out} ({len(page.encode('utf-8')) / 1e6:.2f} MB)", err=True)
    shown = kept_of(run).shown(len(x), sequences)
    if shown is not None:  # what the page says of itself, said here too
        click.echo(f"note: the page shows {shown}, to stay under 2 MB; 'lstm-graph trace' "
                   "writes every value", err=True)
