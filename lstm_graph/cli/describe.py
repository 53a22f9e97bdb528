"""Commands that describe a cell: ``cells``, ``validate``, ``schedule``, ``params``."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import click

from lstm_graph.cli.app import SPEC_HELP, OutputPath, emit_json, load, main
from lstm_graph.errors import CellError
from lstm_graph.formats.files import refuse_inputs, write_npz
from lstm_graph.library import builtin_names, describe_builtin


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
        click.echo(f"{name:<{width}}  {description}")


@main.command(epilog=SPEC_HELP)
@click.argument("spec")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON: the summary, or every diagnostic (exit 1) if the cell is wrong.")
@click.pass_context
def validate(ctx: click.Context, spec: str, as_json: bool) -> None:
    """Check a cell; exit 1 with file:line:col errors if it is wrong."""
    try:
        cell = load(spec)
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
    click.echo(f"{cell.name}: ok — {plural(len(graph.assignments), 'assignment')} in "
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
        emit_json(cell.schedule.to_json())
    else:
        click.echo(cell.schedule.to_text(nodes), nl=False)


@main.command(epilog=SPEC_HELP)
@click.argument("spec")
@click.option("--input-size", "-I", type=click.IntRange(min=1), required=True,
              help="Size of the input x.")
@click.option("--hidden-size", "-H", type=click.IntRange(min=1), required=True,
              help="Size of the states.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--out", type=OutputPath(),
              help="Also write a weights template (.npz, random values in our names) to fill.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --out values.")
def params(spec: str, input_size: int, hidden_size: int, as_json: bool, out: Path | None,
           seed: int) -> None:
    """List parameter names and shapes."""
    refuse_inputs({"--out": out}, {"SPEC": spec})
    cell = load(spec)
    shapes = cell.params(input_size, hidden_size)
    if out is not None:
        write_npz(out, cell.random_weights(input_size, hidden_size, seed))
        click.echo(f"wrote {out}", err=True)
    if as_json:
        emit_json({"cell": cell.name, "params": {k: list(v) for k, v in shapes.items()}})
        return
    width = max(map(len, shapes), default=0)
    for name, shape in shapes.items():
        click.echo(f"{name:<{width}}  {shape}")
    total = sum(math.prod(s) for s in shapes.values())
    click.echo(f"{plural(len(shapes), 'parameter')}, {plural(total, 'number')}", err=True)
