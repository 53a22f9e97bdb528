"""The ``grad`` command: gradients of a loss on a cell's output, to an ``.npz``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np

from lstm_graph.cli.app import SPEC_HELP, OutputPath, emit_json, main
from lstm_graph.cli.inputs import prepare, read_array, run_options
from lstm_graph.errors import DataError
from lstm_graph.executors.backends import to_numpy
from lstm_graph.formats.files import write_npz


@main.command(epilog=SPEC_HELP + " The loss is sum(grad_output · y): without --grad-output, "
              "the sum of the last step's output. Writes x (the gradient with respect to the "
              "input), one array per parameter under its name, and initial.STATE for each "
              "state's initial value.")
@click.argument("spec")
@run_options
@click.option("--grad-output", "grad_output", type=click.Path(dir_okay=False, path_type=Path),
              help="dL/dy as .npy, the shape of y (T, B, the output's size).")
@click.option("--out", type=OutputPath(), required=True,
              help="Output .npz of gradients.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def grad(spec: str, grad_output: Path | None, out: Path, as_json: bool, **inputs: Any) -> None:
    """Backpropagate through time: gradients for the input, weights and initial states."""
    prepared = prepare(spec, work="grad", **inputs)
    cell, runner, x = prepared.cell, prepared.runner, prepared.x
    (output,) = cell.graph.outputs
    width = cell.schedule.width(output, runner.input_size, runner.hidden_size)
    shape = (*x.shape[:-1], width)
    if grad_output is None:
        grad_y = np.zeros(shape, dtype=runner.dtype)
        grad_y[-1] = 1
    else:
        grad_y = read_array(grad_output, "grad_output", "grad_output")
        if grad_y.shape != shape:
            raise DataError(f"{grad_output}: grad_output has shape {grad_y.shape}, but y has "
                            f"shape {shape}")
    found = runner.grad(x, grad_y, state=prepared.state,
                        allow_nonfinite=prepared.allow_nonfinite)
    arrays = {"x": to_numpy(found.x),
              **{name: to_numpy(value) for name, value in found.weights.items()},
              **{f"initial.{name}": to_numpy(value) for name, value in found.state.items()}}
    write_npz(out, arrays)
    loss = float(np.sum(grad_y * to_numpy(found.y)))
    norms = {name: float(np.linalg.norm(value)) for name, value in arrays.items()}
    if as_json:
        emit_json({"cell": cell.name, "ran_with": runner.ran_with, "loss": loss,
                   "out": str(out), "norms": norms})
        return
    click.echo(f"{cell.name}: loss {loss:.6g} ({runner.ran_with}); wrote {out}", err=True)
    width_names = max(map(len, arrays))
    for name, value in arrays.items():
        click.echo(f"{name:<{width_names}}  {str(tuple(value.shape)):<14}  "
                   f"norm {norms[name]:.6g}")
