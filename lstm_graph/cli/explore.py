"""The ``explore`` command: a cell's run on its diagram, as one offline HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np

from lstm_graph.cell import Runner
from lstm_graph.cli.app import SPEC_HELP, OutputPath, is_stdout, main, say
from lstm_graph.cli.describe import plural
from lstm_graph.cli.inputs import prepare, run_options, with_progress
from lstm_graph.cli.render import make_parent
from lstm_graph.cli.run import read_files
from lstm_graph.errors import DataError
from lstm_graph.explore.page import PAGE_BYTES, check_drawable, page_and_kept
from lstm_graph.formats.files import check_output, refuse_inputs, write_atomic, written_through
from lstm_graph.notebook import explorer_run, page_part, require_dot


def _steps(runner: Runner, x: np.ndarray) -> int:
    return int(x.shape[1] if runner.batch_first and x.ndim == 3 else x.shape[0])


@main.command(epilog=SPEC_HELP + " The page holds both diagram styles, a time control over "
              "the steps and a sequence selector, a stage player, each value's numbers on its "
              "node, path highlights, heatmaps over time and the gradient flow back from the "
              "last step shown. It stays under 2 MB (a larger run is cut to its first "
              "sequences, steps and units, and only those are run; the page says so) and "
              "loads nothing from the network.")
@click.argument("spec")
@run_options
@click.option("--out", type=OutputPath(), required=True,
              help="The page to write (.html).")
def explore(spec: str, out: Path, **inputs: Any) -> None:
    """Run a cell and write a page to watch the run on its diagram, step by step."""
    if out.suffix.lower() not in (".html", ".htm") and not written_through(out) \
            and not is_stdout(out):  # /dev/stdout, even where stdout is a file
        raise click.UsageError(f"--out {out}: the page is HTML; name it .html")
    refuse_inputs({"--out": out}, read_files(spec, inputs))
    check_output(out)  # a place it cannot write is said before the run
    require_dot()  # before reading anything
    prepared = prepare(spec, work="grad", **inputs)
    cell, runner, x, state = prepared.cell, prepared.runner, prepared.x, prepared.state
    check_drawable(cell)
    if prepared.lengths is not None and np.any(prepared.lengths != _steps(runner, x)):
        raise DataError("explore shows every step of every sequence, and these sequences "
                        "have lengths of their own: cut x to sequences of one length, or "
                        "drop --lengths")
    if runner.batch_first:  # the page is drawn time-major
        x = np.swapaxes(x, 0, 1) if x.ndim == 3 else x
        runner = runner.time_major()
    if not runner.plain:  # the first layer's first direction, as a cell of its own
        if runner.units[0].reverse:
            x = x[::-1]
        state = None if state is None else {
            name: value if runner.stack.single else value[0] for name, value in state.items()}
        runner = runner.unit_runner(0)
        shows = runner.unit_of[0]
        say(f"note: {shows[0].lower()}{shows[1:]}", err=True)
    run, ran_with = with_progress(len(page_part(runner, x, state)[0]),
                                  lambda progress: explorer_run(
                                      runner, x, state, prepared.allow_nonfinite, progress))
    steps, sequences = run.shape
    page, kept = page_and_kept(run)
    make_parent(out)
    write_atomic(out, page.encode("utf-8"))
    say(f"{cell.name}: {plural(steps, 'step')}, {plural(sequences, 'sequence')} ({ran_with}); "
        f"wrote {out} ({len(page.encode('utf-8')) / 1e6:.2f} MB)", err=True)
    shown, heavy = kept.shown(steps, sequences), len(page.encode("utf-8")) > PAGE_BYTES
    if shown is not None:  # what the page says of itself, said here too
        say(f"note: the page shows {shown}, {kept.reason(heavy)}; 'lstm-graph trace' writes "
            "every value", err=True)
    elif heavy:
        say("note: the page holds the whole run and is over 2 MB: its diagrams and the paths "
            "they light take more than that", err=True)
