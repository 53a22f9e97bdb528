"""The ``explore`` command: a cell's run on its diagram, as one offline HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from lstm_graph.cli.app import SPEC_HELP, OutputPath, main
from lstm_graph.cli.inputs import prepare, run_options, with_progress
from lstm_graph.cli.render import make_parent
from lstm_graph.formats.files import write_atomic
from lstm_graph.notebook import explorer_page


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
    prepared = prepare(spec, work="grad", **inputs)
    cell, runner, x = prepared.cell, prepared.runner, prepared.x
    page, ran_with = with_progress(len(x), lambda progress: explorer_page(
        runner, x, prepared.state, prepared.allow_nonfinite, progress))
    sequences = 1 if x.ndim == 2 else x.shape[1]
    make_parent(out)
    write_atomic(out, page.encode("utf-8"))
    click.echo(f"{cell.name}: {len(x)} steps, {sequences} sequences ({ran_with}); "
               f"wrote {out} ({len(page.encode('utf-8')) / 1e6:.2f} MB)", err=True)
