"""The ``render`` command: diagrams in pipe and cell style."""

from __future__ import annotations

from pathlib import Path

import click

from lstm_graph.cli.app import SPEC_HELP, load, main
from lstm_graph.errors import OutputError
from lstm_graph.library import load_cell
from lstm_graph.render import FORMATS, STYLES, gallery, save, to_bytes
from lstm_graph.render import render as draw


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
    cell = load(spec)
    styles = list(STYLES) if style == "both" else [style]
    diagrams = {s: draw(cell, s, highlight=highlight, stages=stages) for s in styles}
    if out is None:
        if fmt != "dot" or len(styles) != 1:
            raise click.UsageError("give --out (only one style in --format dot goes to stdout)")
        click.echo(to_bytes(diagrams[styles[0]], "dot").decode(), nl=False)
        return
    for one_style, path in _render_paths(out, styles, fmt).items():
        click.echo(f"wrote {save(diagrams[one_style], path, fmt)}", err=True)
