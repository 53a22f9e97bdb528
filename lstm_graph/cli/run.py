"""The ``run`` command: a cell over a sequence, outputs to an ``.npz``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from lstm_graph.cli.app import SPEC_HELP, OutputPath, emit_json, main
from lstm_graph.cli.inputs import OnDask, dask_options, prepare, run_options, with_progress
from lstm_graph.executors.backends import to_numpy
from lstm_graph.formats.files import write_npz


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
    if on_dask is not None:  # the batch sharded across a Dask cluster
        from lstm_graph.cli import sharded

        return sharded.run(spec, out, as_json, on_dask, inputs)
    prepared = prepare(spec, **inputs)
    cell, runner, x = prepared.cell, prepared.runner, prepared.x
    began = time.perf_counter()
    y, final = with_progress(len(x), lambda progress: runner(
        x, prepared.state, progress=progress, allow_nonfinite=prepared.allow_nonfinite))
    elapsed = time.perf_counter() - began
    arrays = {"y": to_numpy(y), **{name: to_numpy(v) for name, v in final.items()}}
    write_npz(out, arrays)
    y_host = arrays["y"]
    stats = {"mean": float(y_host.mean()), "std": float(y_host.std()),
             "min": float(y_host.min()), "max": float(y_host.max())}
    backend, dtype = runner.backend, runner.dtype.name
    summary = {
        "cell": cell.name, "backend": backend, "dtype": dtype, "executor": runner.executor,
        "ran_with": runner.ran_with,
        "input_shape": list(x.shape), "hidden_size": runner.hidden_size,
        "seconds": round(elapsed, 6), "out": str(out),
        "arrays": {name: list(value.shape) for name, value in arrays.items()},
        "y": stats,
    }
    if as_json:
        emit_json(summary)
        return  # the summary says where it wrote what
    shapes = ", ".join(f"{name} {tuple(value.shape)}" for name, value in arrays.items())
    click.echo(f"wrote {out}: {shapes}", err=True)
    click.echo(f"{cell.name}: ran x {tuple(x.shape)} with H={runner.hidden_size} on {backend} "
               f"{dtype} ({runner.ran_with}) in {elapsed * 1e3:.2f} ms")
    click.echo(f"y: mean {stats['mean']:+.5f}  std {stats['std']:.5f}  "
               f"min {stats['min']:+.5f}  max {stats['max']:+.5f}")
