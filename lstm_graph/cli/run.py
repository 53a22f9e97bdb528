"""The ``run`` command: a cell over a sequence, outputs to an ``.npz``."""

from __future__ import annotations

import sys
import time
import zipfile
from pathlib import Path

import click
import numpy as np

from lstm_graph.cli.app import SPEC_HELP, emit_json, load, main
from lstm_graph.errors import DataError
from lstm_graph.executors.backends import BACKENDS, DTYPES, to_numpy
from lstm_graph.executors.registry import EXECUTORS
from lstm_graph.formats.files import write_npz
from lstm_graph.formats.weights import load_npz

SAMPLE_SHAPE = (20, 2, 8)  # T, B, I of --sample


def _read_array(path: Path, what: str, key: str) -> np.ndarray:
    """An array from .npy, or from .npz by ``key`` (or its only array); never unpickles."""
    if path.suffix.lower() == ".npz":
        arrays = load_npz(path)
        if key in arrays:
            return arrays[key]
        if len(arrays) == 1:
            return next(iter(arrays.values()))
        raise DataError(f"{path}: no array named '{key}' for {what} (it holds "
                        f"{', '.join(arrays) or 'nothing'})")
    try:
        return np.asarray(np.load(path, allow_pickle=False))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: cannot read {what} as a .npy array ({err})") from None


@main.command(epilog=SPEC_HELP + " Writes y (T, B, H) and each state's final value to --out.")
@click.argument("spec")
@click.option("--input", "input_path", type=click.Path(dir_okay=False, path_type=Path),
              help="x as .npy, time-major (T, B, I) or (T, I); or .npz holding x.")
@click.option("--sample", is_flag=True,
              help=f"Run on a seeded random input of shape {SAMPLE_SHAPE} instead of --input.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output .npz (y and the final states).")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path),
              help=".npz in our names (see 'params'), PyTorch .pt/.pth state dict, or .onnx.")
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
@click.option("--allow-nonfinite", is_flag=True, help="Run even if x holds NaN or infinity.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def run(spec: str, input_path: Path | None, sample: bool, out: Path, weights: Path | None,
        hidden_size: int | None, seed: int, backend: str, dtype: str, state_path: Path | None,
        executor: str, allow_nonfinite: bool, as_json: bool) -> None:
    """Run a cell over a sequence."""
    if (input_path is None) == (not sample):
        raise click.UsageError("give exactly one of --input FILE and --sample")
    if weights is None and hidden_size is None:
        raise click.UsageError("give --hidden-size (or --weights, which tell it)")
    cell = load(spec)
    if input_path is None:
        x = np.random.default_rng(seed).standard_normal(SAMPLE_SHAPE).astype(dtype)
    else:
        x = _read_array(input_path, "x", "x")
    if x.ndim not in (2, 3):
        raise DataError(f"{input_path}: x has shape {x.shape}; expected (T, B, I) or (T, I)")
    if x.dtype.kind not in "fiu":
        raise DataError(f"{input_path}: x has dtype {x.dtype}; it must hold real numbers")
    if x.dtype != np.dtype(dtype):
        click.echo(f"note: x is {x.dtype}; computing in {dtype} (see --dtype)", err=True)
    # With weights, they tell the input size, and x is checked against them.
    input_size = None if weights else int(x.shape[-1])
    runner = cell.compile(input_size=input_size, hidden_size=hidden_size, backend=backend,
                          dtype=dtype, weights=weights, seed=seed, executor=executor)
    start = None
    if state_path is not None:
        arrays = load_npz(state_path)
        start = {name: arrays[name] for name in cell.graph.states if name in arrays}
    steps = int(x.shape[0]) if x.ndim else 0
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
    summary = {
        "cell": cell.name, "backend": backend, "dtype": dtype, "executor": executor,
        "ran_with": runner.ran_with,
        "input_shape": list(x.shape), "hidden_size": runner.hidden_size,
        "seconds": round(elapsed, 6), "out": str(out),
        "arrays": {name: list(value.shape) for name, value in arrays.items()},
        "y": stats,
    }
    if as_json:
        emit_json(summary)
        return
    shapes = ", ".join(f"{name} {tuple(value.shape)}" for name, value in arrays.items())
    click.echo(f"{cell.name}: ran x {tuple(x.shape)} with H={runner.hidden_size} on {backend} "
               f"{dtype} ({runner.ran_with}) in {elapsed * 1e3:.2f} ms")
    click.echo(f"wrote {out}: {shapes}")
    click.echo(f"y: mean {stats['mean']:+.5f}  std {stats['std']:.5f}  "
               f"min {stats['min']:+.5f}  max {stats['max']:+.5f}")
