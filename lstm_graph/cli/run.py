"""The ``run`` command: a cell over a sequence, outputs to an ``.npz``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from lstm_graph.cli.app import SPEC_HELP, OutputPath, emit_json, is_stdout, main, say
from lstm_graph.cli.inputs import (
    OnDask,
    Prepared,
    dask_options,
    prepare,
    progress_steps,
    run_options,
    with_progress,
)
from lstm_graph.distributed.jobs import Moments, check_run_names, run_arrays
from lstm_graph.executors.buildcache import Building, building
from lstm_graph.formats.files import check_output, refuse_inputs, write_npz


@main.command(epilog=SPEC_HELP + " Writes y (T, B, the output's size) and each state's final "
              "value to --out.")
@click.argument("spec")
@run_options
@dask_options
@click.option("--out", type=OutputPath(), required=True,
              help="Output .npz (y and the final states).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def run(spec: str, out: Path, as_json: bool, on_dask: OnDask | None, **inputs: Any) -> None:
    """Run a cell over a sequence."""
    refuse_inputs({"--out": out}, read_files(spec, inputs))
    check_output(out)  # a place it cannot write is said before the run
    if on_dask is not None:  # the batch sharded across a Dask cluster
        return run_on_dask(spec, out, as_json, on_dask, inputs)
    prepared = prepare(spec, **inputs)
    runner, x = prepared.runner, prepared.x
    began, before = time.perf_counter(), building()
    found = with_progress(progress_steps(prepared), lambda progress: run_arrays(
        runner, x, prepared.state, prepared.allow_nonfinite, progress, prepared.lengths))
    elapsed, built = time.perf_counter() - began, building() - before
    write_npz(out, found.arrays)
    y = Moments.of(found.arrays["y"])  # in float64: a float32 y near its limit has a std
    stats = {"mean": y.mean, "std": y.std, "min": y.low, "max": y.high}
    report(prepared, out, {name: tuple(value.shape) for name, value in found.arrays.items()},
           found.ran_with, elapsed, stats, as_json, compiling=built)


def run_on_dask(spec: str, out: Path, as_json: bool, on_dask: OnDask,
                inputs: dict[str, Any]) -> None:
    """``run --dask``: writes and reports what ``run`` does, and how the work was spread."""
    from lstm_graph.cli import sharded

    prepared, job = sharded.prepare("run", spec, inputs)
    check_run_names(prepared.runner)
    outcome = sharded.execute_on(prepared, job, on_dask, out, measure=("y",))
    y = outcome.moments["y"]
    if not as_json:
        sharded.say_spread(on_dask, outcome)
    report(prepared, out, outcome.shapes, "+".join(outcome.ran_with), outcome.seconds,
           {"mean": y.mean, "std": y.std, "min": y.low, "max": y.high}, as_json,
           {"dask": sharded.summary(on_dask, outcome)})


def read_files(spec: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """The files a command of :func:`~lstm_graph.cli.inputs.run_options` reads, by option,
    which its outputs must not replace."""
    return {"SPEC": spec, "--input": inputs["input_path"], "--weights": inputs["weights"],
            "--state": inputs["state_path"], "--lengths": inputs.get("lengths_path")}


def report(prepared: Prepared, out: Path, shapes: dict[str, tuple[int, ...]], ran_with: str,
           seconds: float, y: dict[str, float], as_json: bool,
           extra: dict[str, Any] | None = None, compiling: Building | None = None) -> None:
    """What ``run`` says of a run that wrote ``out`` (the arrays ``shapes``), with or without
    ``--dask``: the summary as JSON (with ``extra``), or a line on what was written (stderr)
    and two on what ran and ``y``'s ``mean``, ``std``, ``min`` and ``max`` (stdout, or
    stderr where ``out`` is stdout). ``compiling``: the seconds of ``seconds`` spent
    compiling the step (a first run at a new size), said apart, and whether the build is
    kept for the next runs; None where the work ran elsewhere (on Dask's workers: ``null``
    in the JSON)."""
    cell, runner, x = prepared.cell, prepared.runner, prepared.x
    aside = is_stdout(out)
    if as_json:
        emit_json({"cell": cell.name, "backend": runner.backend, "dtype": runner.dtype.name,
                   "executor": runner.executor, "ran_with": ran_with,
                   "input_shape": list(x.shape), "hidden_size": runner.hidden_size,
                   "layers": runner.stack.layers, "direction": runner.stack.direction,
                   "batch_first": runner.batch_first,
                   "lengths": prepared.lengths is not None,
                   "seconds": round(seconds, 6),
                   "compile_seconds": None if compiling is None
                   else round(compiling.seconds, 6),
                   "compile_kept": None if compiling is None or not compiling.seconds
                   else not compiling.unkept,
                   "out": str(out),
                   "arrays": {name: list(shape) for name, shape in shapes.items()}, "y": y,
                   **(extra or {})}, err=aside)
        return  # the summary says where it wrote what
    listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
    say(f"wrote {out}: {listed}", err=True)
    stack = "" if runner.stack.single and runner.stack.direction == "forward" else \
        f", {runner.stack.describe()}"
    lengths = ", each sequence to its length" if prepared.lengths is not None else ""
    compiled = "" if compiling is None or not compiling.seconds else \
        f" ({compiling.seconds * 1e3:.0f} ms of it " + \
        ("in a build of the step that failed)" if compiling.failed else
         "compiling the step, once: the build is cached for the next runs)"
         if not compiling.unkept else
         "compiling the step, which the next runs do again: the build is not kept)")
    say(f"{cell.name}: ran x {tuple(x.shape)} with H={runner.hidden_size}{stack}"
        f"{lengths} on {runner.backend} {runner.dtype.name} ({ran_with}) in "
        f"{seconds * 1e3:.2f} ms{compiled}", err=aside)
    say(f"y: mean {figure(y['mean'])}  std {figure(y['std'])[1:]}  "
        f"min {figure(y['min'])}  max {figure(y['max'])}", err=aside)


def figure(value: float) -> str:
    """``value`` signed, to 5 decimals, or in 6 significant digits beyond 1e5 (not 30 digits
    for a run that grew to 1e29).

    >>> figure(0.25), figure(-3e29), figure(float("nan"))
    ('+0.25000', '-3.00000e+29', '+nan')
    """
    return f"{value:+.5f}" if abs(value) < 1e5 else f"{value:+.5e}"
