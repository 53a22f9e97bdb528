"""The ``trace`` command: every value a cell computes, at every step, to an ``.npz``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from lstm_graph.cli.app import SPEC_HELP, OutputPath, emit_json, is_stdout, main, say
from lstm_graph.cli.inputs import (
    OnDask,
    dask_options,
    prepare,
    progress_steps,
    run_options,
    with_progress,
)
from lstm_graph.cli.run import read_files
from lstm_graph.distributed.jobs import check_trace_names, trace_arrays
from lstm_graph.formats.files import check_output, refuse_inputs, write_npz


@main.command(epilog=SPEC_HELP + " Writes one array (T, B, width; with --batch-first (B, T, "
              "width)) per assignment under its name (in a stack, under its layer and "
              "direction: l0.c, l0_reverse.c, ...), y, and final.STATE for each state's final "
              "value.")
@click.argument("spec")
@run_options
@dask_options
@click.option("--out", type=OutputPath(), required=True,
              help="Output .npz: every assignment's value at every step.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def trace(spec: str, out: Path, as_json: bool, on_dask: OnDask | None, **inputs: Any) -> None:
    """Record every value a cell computes at every step (for plots and the explorer)."""
    refuse_inputs({"--out": out}, read_files(spec, inputs))
    check_output(out)  # a place it cannot write is said before the run
    extra: dict[str, Any] = {}
    if on_dask is None:
        prepared = prepare(spec, work="trace", **inputs)
        runner, x = prepared.runner, prepared.x
        found = with_progress(progress_steps(prepared), lambda progress: trace_arrays(
            runner, x, prepared.state, prepared.allow_nonfinite, progress, prepared.lengths))
        write_npz(out, found.arrays)
        shapes = {name: tuple(value.shape) for name, value in found.arrays.items()}
        ran_with = found.ran_with
    else:
        from lstm_graph.cli import sharded

        prepared, job = sharded.prepare("trace", spec, inputs)
        check_trace_names(prepared.runner)
        outcome = sharded.execute_on(prepared, job, on_dask, out)
        shapes, ran_with = outcome.shapes, "+".join(outcome.ran_with)
        extra["dask"] = sharded.summary(on_dask, outcome)
        if not as_json:
            sharded.say_spread(on_dask, outcome)
    cell, aside = prepared.cell, is_stdout(out)  # --out /dev/stdout: the summary aside
    if as_json:
        emit_json({"cell": cell.name, "ran_with": ran_with, "out": str(out),
                   "arrays": {name: list(shape) for name, shape in shapes.items()}, **extra},
                  err=aside)
        return
    steps = progress_steps(prepared) // len(prepared.runner.units)
    units = len(prepared.runner.units)
    where = f" in each of {units} layers and directions" if units > 1 else ""
    say(f"{cell.name}: traced {len(cell.graph.assignments)} values{where} over "
        f"{steps} steps ({ran_with}); wrote {out}", err=True)
    for name, shape in shapes.items():
        say(f"{name:<{max(map(len, shapes))}}  {shape}", err=aside)
