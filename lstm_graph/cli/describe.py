"""Commands that describe a cell: ``cells``, ``validate``, ``schedule``, ``params``."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import click

from lstm_graph.cli.app import (
    SPEC_HELP,
    OutputPath,
    emit_json,
    given,
    is_stdout,
    load,
    load_model_spec,
    main,
    say,
)
from lstm_graph.errors import CellError
from lstm_graph.executors.backends import DTYPES
from lstm_graph.export.torch_module import torch_names
from lstm_graph.formats.files import refuse_inputs, write_npz
from lstm_graph.formats.importers import RECORD, layer_record
from lstm_graph.layers import DIRECTIONS, MAX_LAYERS, Stack
from lstm_graph.library import builtin_names, describe_builtin
from lstm_graph.models import Model, is_model


def plural(count: int, noun: str) -> str:
    """``"1 stage"``, ``"4 stages"``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def cells(as_json: bool) -> None:
    """List the built-in cells."""
    rows = {name: describe_builtin(name) for name in builtin_names()}
    if as_json:
        emit_json({"cells": [{"name": n, "description": d} for n, d in rows.items()]})
        return
    width = max(map(len, rows))
    for name, description in rows.items():
        say(f"{name:<{width}}  {description}")


@main.command(epilog=SPEC_HELP)
@click.argument("spec")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON: the summary, or every diagnostic (exit 1) if the cell is wrong.")
@click.pass_context
def validate(ctx: click.Context, spec: str, as_json: bool) -> None:
    """Check a cell; exit 1 with file:line:col errors if it is wrong."""
    try:
        model = load_model_spec(spec) if is_model(spec) else None
        cell = model.cell if model is not None else load(spec)
    except CellError as err:
        if not as_json:
            raise
        emit_json({"cell": spec, "valid": False,
                   "diagnostics": [dataclasses.asdict(d) for d in err.diagnostics]})
        ctx.exit(1)
    graph, schedule = cell.graph, cell.schedule
    if as_json:
        emit_json({
            "cell": cell.name,
            **({} if model is None else {"model": model_json(model)}),
            "valid": True,
            "inputs": list(graph.inputs),
            "states": list(graph.states),
            "outputs": list(graph.outputs),
            "assignments": len(graph.assignments),
            "stages": len(schedule.stages),
            "parameters": len(schedule.params),
            "warnings": [str(w) for w in cell.warnings],
            "diagnostics": [dataclasses.asdict(w) for w in cell.warnings],
        })
        return
    if model is not None:
        say(model.describe())
    say(f"{cell.name}: ok — {plural(len(graph.assignments), 'assignment')} in "
        f"{plural(len(schedule.stages), 'stage')}, "
        f"{plural(len(schedule.params), 'parameter')}, "
        f"{'state' if len(graph.states) == 1 else 'states'} {', '.join(graph.states)}, "
        f"output {', '.join(graph.outputs)}")


@main.command(epilog=SPEC_HELP)
@click.argument("spec")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--nodes", is_flag=True, help="Also list every node with its size and edge kinds.")
def schedule(spec: str, as_json: bool, nodes: bool) -> None:
    """Show the stages: what runs when, and which reads are old or new memory."""
    cell = load(spec)
    if as_json:
        emit_json(cell.schedule.to_json(nodes))
    else:
        say(cell.schedule.to_text(nodes), nl=False)


def model_json(model: Model) -> dict[str, Any]:
    """What a model file holds, for ``--json``."""
    stack = model.stack
    return {"file": model.file.source, "format": model.file.format, "layer": model.file.name,
            "layers": stack.layers, "direction": stack.direction, "proj_size": stack.proj,
            "batch_first": model.batch_first, "input_size": model.file.input_size,
            "hidden_size": model.file.hidden_size, "cells": [c.name for c in model.cells],
            "stores": [*(f"initial_{s}" for s in model.file.state),
                       *(["sequence_lens"] if model.lengths is not None else [])]}


@main.command(epilog=SPEC_HELP + " For a model file, -I and -H come from it and --out writes "
              "its weights in our names. Exported models keep these names: an ONNX model "
              "(export --format onnx) as its initializers' names, a PyTorch module "
              "(export --format torch) with each dot an underscore (f.W_x is the attribute "
              "f_W_x; in a stack l0.f.W_x is l0.f_W_x); --json gives both as 'exported'.")
@click.argument("spec")
@click.option("--input-size", "-I", type=click.IntRange(min=1),
              help="Size of the input x (needed for a cell).")
@click.option("--hidden-size", "-H", type=click.IntRange(min=1),
              help="Size of the states (needed for a cell).")
@click.option("--layers", type=click.IntRange(min=1, max=MAX_LAYERS), default=1,
              show_default=True, help="Stacked layers (names l0., l1., ... when more than one).")
@click.option("--direction", type=click.Choice(DIRECTIONS), default="forward",
              show_default=True, help="bidirectional adds each layer's l0_reverse. weights.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--out", type=OutputPath(),
              help="Also write a weights template (.npz, random values in our names) to fill; "
                   "for a model file, its own weights in our names.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed for --out values.")
@click.option("--dtype", type=click.Choice(DTYPES),
              help="Type of --out values for a cell (default float32): drawn with --seed as "
                   "run, export and train draw them in that type.")
def params(spec: str, input_size: int | None, hidden_size: int | None, layers: int,
           direction: str, as_json: bool, out: Path | None, seed: int,
           dtype: str | None) -> None:
    """List parameter names and shapes."""
    refuse_inputs({"--out": out}, {"SPEC": spec})
    if dtype is not None and out is None and not is_model(spec):  # a model's: said below
        raise click.UsageError("--dtype is the type of the --out values; give --out")
    aside = False  # --out /dev/stdout: the list on stderr, not after the weights' bytes
    if given("seed") and out is None and not is_model(spec):
        raise click.UsageError("--seed draws the --out values; give --out")
    if is_model(spec):
        if input_size is not None or hidden_size is not None:
            raise click.UsageError(f"{spec} holds its sizes: drop -I and -H")
        if dtype is not None:
            raise click.UsageError(f"{spec} holds its weights: drop --dtype")
        dropped = [f"--{name}" for name in ("layers", "direction", "seed") if given(name)]
        if dropped:  # they were ignored: the file's stack and weights are listed
            raise click.UsageError(f"{spec} holds its layers, direction and weights: drop "
                                   f"{', '.join(dropped)}")
        model = load_model_spec(spec)
        if out is not None:  # what run would refuse (NaN, sizes), refused before it is written
            model.compile(executor="reference", warn=False)
        cell, weights = model.cell, model.weights
        shapes = {name: tuple(value.shape) for name, value in weights.items()}
        weights = {**weights, RECORD: layer_record(model.file)}
    else:
        if input_size is None or hidden_size is None:
            raise click.UsageError("give --input-size and --hidden-size for a cell")
        cell = load(spec)
        runner = None if out is None else cell.compile(
            input_size=input_size, hidden_size=hidden_size, seed=seed, layers=layers,
            direction=direction, dtype=dtype or "float32")
        weights = {} if runner is None else runner.weights
        shapes = cell.stack_params(input_size, hidden_size, Stack(layers, direction))
    if out is not None:
        write_npz(out, weights)
        say(f"wrote {out}", err=True)
        aside = is_stdout(out)
    if as_json:
        torch = torch_names(list(shapes))
        emit_json({"cell": cell.name, "params": {k: list(v) for k, v in shapes.items()},
                   "exported": {k: {"onnx": k, "torch": torch[k]} for k in shapes}},
                  err=aside)
        return
    width = max(map(len, shapes), default=0)
    for name, shape in shapes.items():
        say(f"{name:<{width}}  {shape}", err=aside)
    total = sum(math.prod(s) for s in shapes.values())
    say(f"{plural(len(shapes), 'parameter')}, {plural(total, 'number')}", err=True)
