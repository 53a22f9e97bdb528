"""The command line: one thin click group over the Python API.

Exit codes: 0 ok, 1 the input is wrong (any :class:`LstmGraphError`), 2 wrong
usage (click). Data goes to stdout, messages to stderr; the only place domain
errors become messages is :class:`_Group.invoke`.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import click

from lstm_graph.errors import LstmGraphError
from lstm_graph.library import builtin_names, describe_builtin, load_cell


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
def params(spec: str, input_size: int, hidden_size: int, as_json: bool) -> None:
    """List parameter names and shapes."""
    cell = _load(spec)
    shapes = cell.params(input_size, hidden_size)
    if as_json:
        _emit_json({"cell": cell.name, "params": {k: list(v) for k, v in shapes.items()}})
        return
    width = max(map(len, shapes), default=0)
    for name, shape in shapes.items():
        click.echo(f"{name:<{width}}  {shape}")
    total = sum(math.prod(s) for s in shapes.values())
    click.echo(f"{len(shapes)} parameters, {total} numbers", err=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
