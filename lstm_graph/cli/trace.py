"""The ``trace`` command: every value a cell computes, at every step, to an ``.npz``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from lstm_graph.cli.app import SPEC_HELP, OutputPath, emit_json, main
from lstm_graph.cli.inputs import prepare, run_options, with_progress
from lstm_graph.executors.backends import to_numpy
from lstm_graph.formats.files import write_npz


def trace_arrays(values: dict[str, Any], y: Any, states: list[str]) -> dict[str, Any]:
    """What ``trace --out`` holds: every assignment under its own name, ``y`` (the run's
    output, unless an assignment has that name) and ``final.STATE`` for each state."""
    arrays = {name: to_numpy(value) for name, value in values.items()}
    arrays.setdefault("y", to_numpy(y))
    arrays.update({f"final.{state}": arrays[state][-1] for state in states})
    return arrays


@main.command(epilog=SPEC_HELP + " Writes one array (T, B, width) per assignment under its "
              "name, y, and final.STATE for each state's final value.")
@click.argument("spec")
@run_options
@click.option("--out", type=OutputPath(), required=True,
              help="Output .npz: every assignment's value at every step.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def trace(spec: str, out: Path, as_json: bool, **inputs: Any) -> None:
    """Record every value a cell computes at every step (for plots and the explorer)."""
    prepared = prepare(spec, work="trace", **inputs)
    cell, runner, x = prepared.cell, prepared.runner, prepared.x
    values = with_progress(len(x), lambda progress: runner.trace(
        x, prepared.state, progress=progress, allow_nonfinite=prepared.allow_nonfinite))
    if x.ndim == 2:  # one sequence: keep the batch axis in the file, as run does not
        values = {name: value[:, None] for name, value in values.items()}
    (output,) = cell.graph.outputs  # an assignment, or the input itself
    y = values[output] if output in values else x.reshape(len(x), -1, x.shape[-1])
    arrays = trace_arrays(values, y, list(cell.graph.states))
    write_npz(out, arrays)
    summary = {"cell": cell.name, "ran_with": runner.ran_with, "out": str(out),
               "arrays": {name: list(value.shape) for name, value in arrays.items()}}
    if as_json:
        emit_json(summary)
        return
    click.echo(f"{cell.name}: traced {len(values)} values over {len(x)} steps "
               f"({runner.ran_with}); wrote {out}", err=True)
    for name, value in arrays.items():
        click.echo(f"{name:<{max(map(len, arrays))}}  {tuple(value.shape)}")
