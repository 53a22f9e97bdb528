"""The ``run`` command: a cell over a sequence, outputs to an ``.npz``.

Everything is sized before it is read or made: ``x`` and the initial states by
their headers, the run by the arrays it will allocate
(:func:`lstm_graph.checks.run_allocations`); work that would not fit in memory
is refused before it starts (:mod:`lstm_graph.formats.memory`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
import numpy as np

from lstm_graph.checks import REAL_KINDS, run_allocations
from lstm_graph.cli.app import SPEC_HELP, OutputPath, emit_json, load, main
from lstm_graph.errors import DataError
from lstm_graph.executors.backends import BACKENDS, DTYPES, to_numpy
from lstm_graph.executors.registry import EXECUTORS
from lstm_graph.formats.arrays import StoredArray, open_npy, open_npz
from lstm_graph.formats.files import write_npz
from lstm_graph.formats.memory import allocation, require

#: T and B of --sample; its I is the cell's input size (-I, else the weights', else this).
SAMPLE_STEPS, SAMPLE_BATCH, SAMPLE_INPUT = 20, 2, 8


def _stored_x(path: Path) -> StoredArray:
    """``x`` by its header: an ``.npy``, or the array ``x`` of an ``.npz`` (or its only one)."""
    if path.suffix.lower() != ".npz":
        return open_npy(path, "x")
    arrays = open_npz(path)
    if "x" in arrays:
        return arrays["x"]
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    raise DataError(f"{path}: no array named 'x' (it holds {', '.join(arrays) or 'nothing'})")


@main.command(epilog=SPEC_HELP + " Writes y (T, B, H) and each state's final value to --out.")
@click.argument("spec")
@click.option("--input", "input_path", type=click.Path(dir_okay=False, path_type=Path),
              help="x as .npy, time-major (T, B, I) or (T, I); or .npz holding x.")
@click.option("--sample", is_flag=True,
              help=f"Run on a seeded random input of shape ({SAMPLE_STEPS}, {SAMPLE_BATCH}, I) "
                   "instead of --input.")
@click.option("--out", type=OutputPath(), required=True,
              help="Output .npz (y and the final states).")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path),
              help=".npz in our names (see 'params'), PyTorch .pt/.pth state dict, or .onnx.")
@click.option("--input-size", "-I", type=click.IntRange(min=1),
              help=f"Input size I (default: the weights', x's, or {SAMPLE_INPUT} for --sample).")
@click.option("--hidden-size", "-H", type=click.IntRange(min=1),
              help="Hidden size H (needed without --weights).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed for random weights (without --weights) and for --sample.")
@click.option("--backend", type=click.Choice(BACKENDS), default="numpy", show_default=True)
@click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True)
@click.option("--state", "state_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Initial states as .npz (one array per state, e.g. from an earlier --out).")
@click.option("--executor", type=click.Choice(EXECUTORS), default=EXECUTORS[0], show_default=True,
              help="plan: the fastest available (native C step where a C compiler is "
                   "found, else the NumPy plan); native, numpy: force one; reference: the "
                   "interpreter that defines the semantics.")
@click.option("--allow-nonfinite", is_flag=True,
              help="Run even if x or a state holds NaN or infinity.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def run(spec: str, input_path: Path | None, sample: bool, out: Path, weights: Path | None,
        input_size: int | None, hidden_size: int | None, seed: int, backend: str, dtype: str,
        state_path: Path | None, executor: str, allow_nonfinite: bool, as_json: bool) -> None:
    """Run a cell over a sequence."""
    if (input_path is None) == (not sample):
        raise click.UsageError("give exactly one of --input FILE and --sample")
    if weights is None and hidden_size is None:
        raise click.UsageError("give --hidden-size (or --weights, which tell it)")
    cell = load(spec)
    stored = None if input_path is None else _stored_x(input_path)
    if stored is not None:
        if len(stored.shape) not in (2, 3):
            raise DataError(f"{input_path}: x has shape {stored.shape}; expected (T, B, I) or "
                            "(T, I)")
        if stored.dtype.kind not in REAL_KINDS:
            raise DataError(f"{input_path}: x has dtype {stored.dtype}; it must hold real "
                            "numbers")
        if stored.dtype != np.dtype(dtype):
            click.echo(f"note: x is {stored.dtype}; computing in {dtype} (see --dtype)", err=True)
    if input_size is None and weights is None:
        input_size = stored.shape[-1] if stored is not None else SAMPLE_INPUT
    runner = cell.compile(input_size=input_size, hidden_size=hidden_size, backend=backend,
                          dtype=dtype, weights=weights, seed=seed, executor=executor)
    shape = stored.shape if stored is not None else \
        (SAMPLE_STEPS, SAMPLE_BATCH, runner.input_size)
    states = {} if state_path is None else \
        {name: array for name, array in open_npz(state_path).items() if name in cell.graph.states}
    batch = shape[1] if len(shape) == 3 else 1
    require([allocation("x", shape, stored.dtype if stored is not None else np.float64),
             *run_allocations(cell.schedule, shape[0], batch, shape[-1], runner.hidden_size,
                              runner.dtype, stored.dtype if stored is not None else runner.dtype),
             *(allocation(f"state '{name}'", a.shape, a.dtype) for name, a in states.items())],
            "this run", str(input_path or ""))
    x = stored.read() if stored is not None else \
        np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    start = {name: array.read() for name, array in states.items()}
    steps = int(x.shape[0])
    began = time.perf_counter()
    if sys.stderr.isatty() and steps >= 1000:
        with click.progressbar(length=steps, label="steps", file=sys.stderr) as bar:
            y, final = runner(x, start, progress=bar.update, allow_nonfinite=allow_nonfinite)
    else:
        y, final = runner(x, start, allow_nonfinite=allow_nonfinite)
    elapsed = time.perf_counter() - began
    arrays = {"y": to_numpy(y), **{name: to_numpy(v) for name, v in final.items()}}
    write_npz(out, arrays)
    y_host = arrays["y"]
    stats = {"mean": float(y_host.mean()), "std": float(y_host.std()),
             "min": float(y_host.min()), "max": float(y_host.max())}
    if as_json:
        emit_json({
            "cell": cell.name, "backend": backend, "dtype": dtype, "executor": executor,
            "ran_with": runner.ran_with,
            "input_shape": list(x.shape), "hidden_size": runner.hidden_size,
            "seconds": round(elapsed, 6), "out": str(out),
            "arrays": {name: list(value.shape) for name, value in arrays.items()},
            "y": stats,
        })
        return  # the summary says where it wrote what
    shapes = ", ".join(f"{name} {tuple(value.shape)}" for name, value in arrays.items())
    click.echo(f"wrote {out}: {shapes}", err=True)
    click.echo(f"{cell.name}: ran x {tuple(x.shape)} with H={runner.hidden_size} on {backend} "
               f"{dtype} ({runner.ran_with}) in {elapsed * 1e3:.2f} ms")
    click.echo(f"y: mean {stats['mean']:+.5f}  std {stats['std']:.5f}  "
               f"min {stats['min']:+.5f}  max {stats['max']:+.5f}")
