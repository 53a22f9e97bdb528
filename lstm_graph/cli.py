"""The command line: one thin click group over the Python API.

Exit codes: 0 ok, 1 the input is wrong (any :class:`LstmGraphError`), 2 wrong
usage (click). Data goes to stdout, messages to stderr; the only place domain
errors become messages is :class:`_Group.invoke`.
"""

from __future__ import annotations

import json
import math
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import click
import numpy as np

from lstm_graph.backends import BACKENDS, DTYPES, to_numpy
from lstm_graph.cell import EXECUTORS
from lstm_graph.errors import DataError, LstmGraphError, OutputError
from lstm_graph.files import write_npz
from lstm_graph.library import builtin_names, describe_builtin, load_cell
from lstm_graph.render import FORMATS, STYLES, gallery, save, to_bytes
from lstm_graph.render import render as draw
from lstm_graph.weights import load_npz


class _UserError(click.ClickException):
    """A domain error shown as-is (``file:line:col: error: …``), exit code 1."""

    def show(self, file: Any = None) -> None:
        click.echo(self.message, err=True)


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LstmGraphError as err:
            raise _UserError(str(err)) from None
        except KeyboardInterrupt:
            click.echo("interrupted; no output was written", err=True)
            ctx.exit(130)


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def _load(spec: str):
    cell = load_cell(spec)
    for warning in cell.warnings:
        click.echo(str(warning), err=True)
    return cell


SPEC_HELP = "SPEC is a built-in cell name (see 'cells') or a path to a .cell file."


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lstm-graph")
def main() -> None:
    """Read, run and check recurrent cells as dataflow graphs."""


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def cells(as_json: bool) -> None:
    """List the built-in cells."""
    rows = {name: describe_builtin(name) for name in builtin_names()}
    if as_json:
        _emit_json({"cells": [{"name": n, "description": d} for n, d in rows.items()]})
        return
    width = max(map(len, rows))
    for name, description in rows.items():
        click.echo(f"{name:<{width}}  {description}")


@main.command(epilog=SPEC_HELP)
@click.argument("spec")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def validate(spec: str, as_json: bool) -> None:
    """Check a cell; exit 1 with file:line:col errors if it is wrong."""
    cell = _load(spec)
    graph, schedule = cell.graph, cell.schedule
    summary = {
        "cell": cell.name,
        "valid": True,
        "inputs": list(graph.inputs),
        "states": list(graph.states),
        "outputs": list(graph.outputs),
        "assignments": len(graph.assignments),
        "stages": len(schedule.stages),
        "parameters": len(schedule.params),
        "warnings": [str(w) for w in cell.warnings],
    }
    if as_json:
        _emit_json(summary)
        return
    click.echo(f"{cell.name}: ok — {len(graph.assignments)} assignments in "
               f"{len(schedule.stages)} stages, {len(schedule.params)} parameters, "
               f"states {', '.join(graph.states)}, output {', '.join(graph.outputs)}")


@main.command(epilog=SPEC_HELP)
@click.argument("spec")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--nodes", is_flag=True, help="Also list every node with its size and edge kinds.")
def schedule(spec: str, as_json: bool, nodes: bool) -> None:
    """Show the stages: what runs when, and which reads are old or new memory."""
    cell = _load(spec)
    if as_json:
        _emit_json(cell.schedule.to_json())
    else:
        click.echo(cell.schedule.to_text(nodes=nodes), nl=False)


@main.command(epilog=SPEC_HELP)
@click.argument("spec")
@click.option("--input-size", "-I", type=click.IntRange(min=1), required=True,
              help="Size of the input x.")
@click.option("--hidden-size", "-H", type=click.IntRange(min=1), required=True,
              help="Size of the states.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write a weights template (.npz, random values in our names) to fill.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --out values.")
def params(spec: str, input_size: int, hidden_size: int, as_json: bool, out: Path | None,
           seed: int) -> None:
    """List parameter names and shapes."""
    cell = _load(spec)
    shapes = cell.params(input_size, hidden_size)
    if out is not None:
        write_npz(out, cell.random_weights(input_size, hidden_size, seed))
        click.echo(f"wrote {out}", err=True)
    if as_json:
        _emit_json({"cell": cell.name, "params": {k: list(v) for k, v in shapes.items()}})
        return
    width = max(map(len, shapes), default=0)
    for name, shape in shapes.items():
        click.echo(f"{name:<{width}}  {shape}")
    total = sum(math.prod(s) for s in shapes.values())
    click.echo(f"{len(shapes)} parameters, {total} numbers", err=True)


def _render_paths(out: Path, styles: list[str], fmt: str) -> dict[str, Path]:
    """Where each style goes: ``out`` itself for one style with the right suffix, else
    ``OUT.STYLE.FMT`` (``out/peephole_lstm`` -> ``out/peephole_lstm.pipe.svg``)."""
    if len(styles) == 1 and out.suffix == f".{fmt}":
        return {styles[0]: out}
    base = out.with_suffix("") if out.suffix == f".{fmt}" else out
    return {style: base.parent / f"{base.name}.{style}.{fmt}" for style in styles}


@main.command(epilog=SPEC_HELP + " With --all, draws the whole gallery (every built-in cell "
              "in both styles, SVG and DOT, and the peephole LSTM's highlight sequence) into "
              "the --out directory.")
@click.argument("spec", required=False)
@click.option("--style", type=click.Choice([*STYLES, "both"]), default="both", show_default=True)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="svg", show_default=True,
              help="svg/png/pdf run Graphviz's dot; dot needs nothing.")
@click.option("--out", type=click.Path(path_type=Path),
              help="Output file, or base name for both styles (default for dot: stdout).")
@click.option("--highlight", help="A node or assignment name, or a preset: forget, input, "
              "memory, output. Draws its path in colour and fades the rest.")
@click.option("--stages", is_flag=True, help="Write each node's stage number on it.")
@click.option("--all", "everything", is_flag=True, help="Regenerate the gallery into --out.")
def render(spec: str | None, style: str, fmt: str, out: Path | None, highlight: str | None,
           stages: bool, everything: bool) -> None:
    """Draw a cell in pipe style (Olah's) and/or cell style (the classic diagram)."""
    if everything:
        if out is None or spec is not None:
            raise click.UsageError("--all takes no SPEC and needs --out DIRECTORY")
        if not out.is_dir():
            raise OutputError(f"{out}: no such directory; create it first")
        for name, (cell_name, one_style, preset) in gallery().items():
            dot = draw(load_cell(cell_name), one_style, highlight=preset)
            for kind in ("dot", "svg"):
                click.echo(f"wrote {save(dot, out / f'{name}.{kind}', kind)}", err=True)
        return
    if spec is None:
        raise click.UsageError("give a SPEC (or --all)")
    cell = _load(spec)
    styles = list(STYLES) if style == "both" else [style]
    diagrams = {s: draw(cell, s, highlight=highlight, stages=stages) for s in styles}
    if out is None:
        if fmt != "dot" or len(styles) != 1:
            raise click.UsageError("give --out (only one style in --format dot goes to stdout)")
        click.echo(to_bytes(diagrams[styles[0]], "dot").decode(), nl=False)
        return
    for one_style, path in _render_paths(out, styles, fmt).items():
        click.echo(f"wrote {save(diagrams[one_style], path, fmt)}", err=True)


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
        return np.load(path, allow_pickle=False)
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
    cell = _load(spec)
    if sample:
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
    summary = {
        "cell": cell.name, "backend": backend, "dtype": dtype, "executor": executor,
        "ran_with": runner.ran_with,
        "input_shape": list(x.shape), "hidden_size": runner.hidden_size,
        "seconds": round(elapsed, 6), "out": str(out),
        "arrays": {name: list(value.shape) for name, value in arrays.items()},
        "y": {"mean": float(y_host.mean()), "std": float(y_host.std()),
              "min": float(y_host.min()), "max": float(y_host.max())},
    }
    if as_json:
        _emit_json(summary)
        return
    shapes = ", ".join(f"{name} {tuple(value.shape)}" for name, value in arrays.items())
    stats = summary["y"]
    click.echo(f"{cell.name}: ran x {tuple(x.shape)} with H={runner.hidden_size} on {backend} "
               f"{dtype} ({runner.ran_with}) in {elapsed * 1e3:.2f} ms")
    click.echo(f"wrote {out}: {shapes}")
    click.echo(f"y: mean {stats['mean']:+.5f}  std {stats['std']:.5f}  "
               f"min {stats['min']:+.5f}  max {stats['max']:+.5f}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
