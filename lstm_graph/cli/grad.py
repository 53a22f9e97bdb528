"""The ``grad`` command: gradients of a loss on a cell's output, to an ``.npz``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np

from lstm_graph.checks import REAL_KINDS, unread
from lstm_graph.cli.app import SPEC_HELP, InputPath, OutputPath, emit_json, is_stdout, main, say
from lstm_graph.cli.inputs import (
    OnDask,
    Prepared,
    dask_options,
    load_stored,
    prepare,
    run_options,
    stored_array,
)
from lstm_graph.cli.run import read_files
from lstm_graph.distributed.jobs import (
    Moments,
    check_finite,
    check_grad_names,
    grad_arrays,
    last_step_loss,
)
from lstm_graph.errors import DataError
from lstm_graph.formats.files import check_output, refuse_inputs, write_npz


def read_grad_output(path: Path, prepared: Prepared, mapped: bool) -> np.ndarray:
    """``--grad-output``, checked against the shape of ``y`` and for real numbers by its
    header, before it is read. Without ``mapped`` it is read, converted to the run's dtype
    and checked for NaN and infinity as ``x`` is; with ``mapped`` (a run on Dask) it is
    memory-mapped, and its rows are checked as each shard is read."""
    runner, x = prepared.runner, prepared.x
    shape = (*x.shape[:-1], runner.output_width)
    steps = x.shape[1] if runner.batch_first and x.ndim == 3 else x.shape[0]
    stored = stored_array(path, "grad_output", "grad_output")
    if stored.shape != shape:
        raise DataError(f"{path}: grad_output has shape {stored.shape}, but y has shape "
                        f"{shape}")
    if stored.dtype.kind not in REAL_KINDS:
        raise DataError(f"{path}: grad_output has dtype {stored.dtype}; it must hold real "
                        "numbers")
    grad_y = load_stored(stored, mapped)
    if mapped:
        return grad_y
    with np.errstate(over="ignore"):  # a number too large for the dtype: named below
        converted = np.asarray(grad_y, dtype=runner.dtype)
    if not prepared.allow_nonfinite:
        try:
            check_finite("grad_output", grad_y, converted, None if x.ndim == 2 else 0,
                         "clean it", 0 if runner.batch_first else 1,
                         unread(prepared.lengths, steps, x.ndim, runner.batch_first))
        except DataError as err:  # named by its file, as x's is
            raise DataError(f"{path}: {err}") from None
    return converted


@main.command(epilog=SPEC_HELP + " The loss is sum(grad_output · y): without --grad-output, "
              "the sum of the last step's output (each sequence's own last step, with "
              "--lengths). Writes x (the gradient with respect to the input), one array per "
              "parameter under its name, and initial.STATE for each state's initial value.")
@click.argument("spec")
@run_options
@dask_options
@click.option("--grad-output", "grad_output", type=InputPath(),
              help="dL/dy as .npy, the shape of y (T, B, the output's size).")
@click.option("--out", type=OutputPath(), required=True,
              help="Output .npz of gradients.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def grad(spec: str, grad_output: Path | None, out: Path, as_json: bool,
         on_dask: OnDask | None, **inputs: Any) -> None:
    """Backpropagate through time: gradients for the input, weights and initial states."""
    refuse_inputs({"--out": out}, {**read_files(spec, inputs), "--grad-output": grad_output})
    check_output(out)  # a place it cannot write is said before the gradients are computed
    extra: dict[str, Any] = {}
    if on_dask is None:
        prepared = prepare(spec, work="grad", **inputs)
        runner, x = prepared.runner, prepared.x
        grad_y = last_step_loss(runner, x.shape, prepared.lengths) if grad_output is None \
            else read_grad_output(grad_output, prepared, mapped=False)
        found = grad_arrays(runner, x, grad_y, prepared.state, prepared.allow_nonfinite,
                            prepared.lengths)
        write_npz(out, found.arrays)
        shapes = {name: tuple(value.shape) for name, value in found.arrays.items()}
        norms = {name: Moments.of(value).norm for name, value in found.arrays.items()}
        loss, ran_with = found.loss, found.ran_with
    else:
        from lstm_graph.cli import sharded

        prepared, job = sharded.prepare("grad", spec, inputs)
        check_grad_names(prepared.runner)
        mapped = None if grad_output is None else \
            read_grad_output(grad_output, prepared, mapped=True)
        every = ("x", *job.weights, *(f"initial.{name}" for name in prepared.cell.graph.states))
        outcome = sharded.execute_on(prepared, job, on_dask, out, mapped, measure=every,
                                     grad_file=grad_output)
        shapes, loss, ran_with = outcome.shapes, outcome.loss, "+".join(outcome.ran_with)
        norms = {name: outcome.moments[name].norm for name in shapes}
        extra["dask"] = sharded.summary(on_dask, outcome)
        if not as_json:
            sharded.say_spread(on_dask, outcome)
    cell, aside = prepared.cell, is_stdout(out)  # --out /dev/stdout: the summary aside
    if as_json:
        emit_json({"cell": cell.name, "ran_with": ran_with, "loss": loss, "out": str(out),
                   "norms": norms, **extra}, err=aside)
        return
    say(f"{cell.name}: loss {loss:.6g} ({ran_with}); wrote {out}", err=True)
    width_names = max(map(len, shapes))
    for name, shape in shapes.items():
        say(f"{name:<{width_names}}  {str(shape):<14}  norm {norms[name]:.6g}",
            err=aside)
