"""The ``explore`` command: a cell's run on its diagram, as one offline HTML page."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import click
import numpy as np

from lstm_graph.cli.app import SPEC_HELP, main
from lstm_graph.cli.inputs import prepare, run_options, with_progress
from lstm_graph.cli.render import make_parent
from lstm_graph.errors import RenderError
from lstm_graph.executors.backends import to_numpy
from lstm_graph.explore import Run, build_page
from lstm_graph.formats.files import write_atomic


@main.command(epilog=SPEC_HELP + " The page holds both diagram styles, a time control over "
              "the steps and a sequence selector, a stage player, each value's numbers on its "
              "node, path highlights and heatmaps over time. It stays under 2 MB (a larger run "
              "is cut to its first sequences, steps and units; the page says so) and loads "
              "nothing from the network.")
@click.argument("spec")
@run_options
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The page to write (.html).")
def explore(spec: str, out: Path, **inputs: Any) -> None:
    """Run a cell and write a page to watch the run on its diagram, step by step."""
    if out.suffix.lower() not in (".html", ".htm"):
        raise click.UsageError(f"--out {out}: the page is HTML; name it .html")
    if shutil.which("dot") is None:
        raise RenderError("the explorer draws its diagrams with Graphviz's 'dot' program, "
                          "which is not installed. Install it (Debian/Ubuntu: apt-get install "
                          "graphviz; macOS: brew install graphviz; see "
                          "https://graphviz.org/download/)")
    prepared = prepare(spec, **inputs)
    cell, runner, x = prepared.cell, prepared.runner, prepared.x
    values = with_progress(len(x), lambda progress: runner.trace(
        x, prepared.state, progress=progress, allow_nonfinite=prepared.allow_nonfinite))
    if x.ndim == 2:  # one sequence: the page still has a sequence axis
        values = {name: value[:, None] for name, value in values.items()}
        x = x[:, None]
    sequences = x.shape[1]
    given = prepared.state or {}
    initial = {name: np.broadcast_to(np.asarray(given[name], dtype=runner.dtype),
                                     (sequences, runner.hidden_size))
               if name in given else np.zeros((sequences, runner.hidden_size), runner.dtype)
               for name in cell.graph.states}
    page = build_page(Run(cell, {name: to_numpy(v) for name, v in values.items()},
                          np.asarray(x, dtype=runner.dtype), initial, runner.dtype))
    make_parent(out)
    write_atomic(out, page.encode("utf-8"))
    click.echo(f"{cell.name}: {len(x)} steps, {sequences} sequences ({runner.ran_with}); "
               f"wrote {out} ({len(page.encode('utf-8')) / 1e6:.2f} MB)", err=True)
