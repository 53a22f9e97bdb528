"""The ``render`` command: diagrams in pipe and cell style, with values, or unrolled.

Where a diagram goes: ``--out FILE`` (its suffix names the format), ``--out
BASE`` (``BASE.STYLE.FMT``), ``--out DIR/`` (``DIR/CELL.STYLE.FMT``); missing
directories are created. Without ``--out``, one diagram goes to stdout and the
default two styles to ``CELL.pipe.svg`` and ``CELL.cell.svg`` in the current
directory. Data on stdout, messages on stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import graphviz

from lstm_graph.cell import Cell
from lstm_graph.cli.app import SPEC_HELP, InputPath, echo, load, main, refuse_same_outputs, say
from lstm_graph.errors import OutputError
from lstm_graph.formats.files import check_output, refuse_inputs, write_atomic
from lstm_graph.formats.trace import read_trace
from lstm_graph.library import load_cell
from lstm_graph.render import FORMATS, MAX_UNROLL, STYLES, gallery, to_bytes, unrolled
from lstm_graph.render import render as draw
from lstm_graph.render.scene import build_scene
from lstm_graph.render.values import Strip, strips_at

#: Suffixes of image formats Graphviz knows but lstm-graph does not write: refused, so
#: ``--out x.jpg`` is never taken for a base name (``x.jpg.pipe.svg``).
OTHER_IMAGES = ("jpg", "jpeg", "gif", "bmp", "tif", "tiff", "webp", "eps", "ps", "ico")


def output_format(fmt: str | None, out: str | None) -> str:
    """The format asked for: ``--format``, else the suffix of ``--out``, else SVG;
    a suffix that contradicts ``--format`` or names another image format is refused."""
    suffix = Path(out).suffix.lower().lstrip(".") if out and not _is_directory(out) else ""
    if suffix in OTHER_IMAGES:
        raise click.UsageError(f"--out {out}: lstm-graph writes {', '.join(FORMATS)}, not "
                               f".{suffix}; name the file .svg, .png, .pdf or .dot")
    if suffix in FORMATS:
        if fmt is not None and fmt != suffix:
            raise click.UsageError(f"--out {out} names a .{suffix} file, but --format {fmt} "
                                   f"was asked; give --out with a .{fmt} suffix, or leave "
                                   "out --format")
        return suffix
    return fmt or "svg"


def _is_directory(out: str) -> bool:
    return out.endswith(("/", "\\")) or Path(out).is_dir()


def output_paths(out: str, cell: str, names: list[str], fmt: str) -> dict[str, Path]:
    """Where each diagram goes (``names``: the styles, or the one tag of an unrolled view).

    ``out`` is a directory (ends in ``/`` or exists): ``DIR/CELL.NAME.FMT``; a file
    with the format's suffix and one diagram: ``out`` itself; a device, FIFO or symbolic
    link (``/dev/stdout``) and one diagram: ``out`` itself, and several: a usage error
    (no ``/dev/stdout.pipe.svg``); else a base name: ``BASE.NAME.FMT``
    (``out/peephole_lstm`` -> ``out/peephole_lstm.pipe.svg``).
    """
    if _is_directory(out):
        return {name: Path(out) / f"{cell}.{name}.{fmt}" for name in names}
    path = Path(out)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        if len(names) == 1:
            return {names[0]: path}
        raise click.UsageError(f"--out {out} is a device, FIFO or link, and two diagrams "
                               f"need two files: give --out BASE (writes BASE.pipe.{fmt} and "
                               f"BASE.cell.{fmt}), or one --style for {out}")
    if len(names) == 1 and path.suffix.lower() == f".{fmt}":
        return {names[0]: path}
    base = path.with_suffix("") if path.suffix.lower() == f".{fmt}" else path
    return {name: base.parent / f"{base.name}.{name}.{fmt}" for name in names}


def make_parent(path: Path) -> None:
    """Create the directories ``path`` goes in (``--out gallery/``)."""
    make_directory(path.parent, f"{path}: ")


#: Names that are a diagram's file, not a directory for --all's gallery (render --all
#: --out gallery.svg made a directory of that name).
DIAGRAM_SUFFIXES = (".svg", ".dot", ".gv", ".png", ".pdf")


def make_directory(directory: Path, where: str = "") -> None:
    """Create ``directory`` and those above it, saying which could not be made."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{where}cannot create the directory {directory} "
                          f"({err.strerror or err})") from None


def _write(files: dict[Path, tuple[graphviz.Digraph, str]],
           reads: dict[str, str | Path | None]) -> None:
    """Each diagram in its format to its path: none over a file the command reads, every
    path checked before any is written, every diagram drawn before any is written."""
    for path in files:  # never over the cell file or the trace it draws
        refuse_inputs({"--out": path}, reads)
    refuse_same_outputs({str(path): path for path in files},  # x.pipe.svg -> x.cell.svg
                        "a symbolic link joins them: remove it, or give --out another name")
    for path in files:  # every one writable, or none written
        check_output(path)
    data = {path: to_bytes(dot, fmt) for path, (dot, fmt) in files.items()}
    for path, drawn in data.items():
        make_parent(path)
        say(f"wrote {write_atomic(path, drawn)}", err=True)


def _files(diagrams: dict[str, graphviz.Digraph], paths: dict[str, Path], fmt: str
           ) -> dict[Path, tuple[graphviz.Digraph, str]]:
    """Each style's diagram by its path, in one format."""
    return {paths[name]: (dot, fmt) for name, dot in diagrams.items()}


def _values(cell: Cell, trace: Path | None, step: int | None, batch: int | None
            ) -> tuple[dict[str, Strip] | None, str | None]:
    """The strips of ``--trace`` at ``--step``, and the legend's words for them."""
    if trace is None:
        if step is not None or batch is not None:
            raise click.UsageError("--step and --batch choose values of a --trace; give "
                                   "--trace trace.npz (from 'lstm-graph trace')")
        return None, None
    if step is None:
        raise click.UsageError(f"--trace {trace} needs --step T: which step's values to draw "
                               "(1 is the first)")
    batch = batch or 0
    strips = strips_at(build_scene(cell.schedule), read_trace(trace, cell.schedule), step,
                       batch, str(trace))
    return strips, f"step {step}, sequence {batch}"


@main.command(epilog=SPEC_HELP + " With --all, draws the whole gallery (every built-in cell "
              "in both styles, SVG and DOT, and the peephole LSTM's highlight sequence) into "
              "the --out directory. Without --out, one diagram goes to stdout and the two "
              "styles to CELL.pipe.svg and CELL.cell.svg here.")
@click.argument("spec", required=False)
@click.option("--style", type=click.Choice([*STYLES, "both"]),
              help="pipe (Olah's), cell (the classic diagram) or both  [default: both; "
                   "pipe with --unroll]")
@click.option("--format", "fmt", type=click.Choice(FORMATS),
              help="svg/png/pdf run Graphviz's dot; dot needs nothing.  [default: the suffix "
                   "of --out, else svg]")
@click.option("--out", metavar="PATH", help="A file (its suffix names the format), a base name for "
              "BASE.STYLE.FMT, a directory (ending in /), or - for stdout (one diagram). "
              "Missing directories are created.")
@click.option("--highlight", help="A node or assignment name, or a preset: forget, input, "
              "memory, output. Draws its path in colour and fades the rest.")
@click.option("--stages", is_flag=True, help="Write each node's stage number on it.")
@click.option("--trace", "trace", type=InputPath(),
              help="A trace .npz (from 'lstm-graph trace'): draw each value's numbers at "
                   "--step on it, as a heat strip and its mean.")
@click.option("--step", type=click.IntRange(min=1), help="The step of --trace to draw "
              "(1 is the first).")
@click.option("--batch", type=click.IntRange(min=0), help="The sequence of --trace to draw "
              "(0 is the first).  [default: 0]")
@click.option("--unroll", type=click.IntRange(1, MAX_UNROLL), metavar="K",
              help=f"Draw K consecutive steps side by side (pipe style; K up to {MAX_UNROLL}).")
@click.option("--all", "everything", is_flag=True, help="Regenerate the gallery into --out.")
def render(spec: str | None, style: str | None, fmt: str | None, out: str | None,
           highlight: str | None, stages: bool, trace: Path | None, step: int | None,
           batch: int | None, unroll: int | None, everything: bool) -> None:
    """Draw a cell in pipe style (Olah's) and/or cell style (the classic diagram)."""
    if out == "":
        raise click.UsageError("--out is empty; give a file, a base name or a directory")
    if highlight == "":
        raise click.UsageError("--highlight is empty; give a node or assignment name, or a "
                               "preset: forget, input, memory, output")
    to_stdout = out == "-"  # the usual name of standard output
    if to_stdout:
        out = None
    if everything:
        if out is None or spec is not None:
            raise click.UsageError("--all takes no SPEC and needs --out DIRECTORY")
        given = [option for option, value in (
            ("--style", style), ("--format", fmt), ("--highlight", highlight),
            ("--stages", stages or None), ("--trace", trace), ("--step", step),
            ("--batch", batch), ("--unroll", unroll)) if value is not None]
        if given:  # the gallery is what it is: they were ignored
            raise click.UsageError(f"--all draws the gallery as it is (both styles, SVG and "
                                   f"DOT); drop {', '.join(given)}")
        directory = Path(out)
        if (directory.exists() and not directory.is_dir()) or (
                not directory.exists() and directory.suffix.lower() in DIAGRAM_SUFFIXES):
            raise click.UsageError(f"--out {out} is not a directory; --all writes the gallery "
                                   "into one: give --out DIRECTORY/")
        drawn = {name: draw(load_cell(cell_name), one_style, highlight=preset)
                 for name, (cell_name, one_style, preset) in gallery().items()}
        _write({directory / f"{name}.{kind}": (dot, kind) for name, dot in drawn.items()
                for kind in ("dot", "svg")}, {})
        return
    if spec is None:
        raise click.UsageError("give a SPEC (or --all)")
    fmt = output_format(fmt, out)
    cell = load(spec)
    if unroll is not None:
        if style == "cell":
            raise click.UsageError("--unroll draws the pipe style (Olah's unrolled chain); "
                                   "leave out --style cell")
        if highlight or stages or trace or step is not None or batch is not None:
            raise click.UsageError("--unroll draws the plain chain: it does not combine with "
                                   "--highlight, --stages, --trace, --step or --batch")
        diagrams = {f"unrolled{unroll}": unrolled(cell, unroll)}
    else:
        strips, values = _values(cell, trace, step, batch)
        styles = list(STYLES) if style in (None, "both") else [style]
        diagrams = {s: draw(cell, s, highlight=highlight, stages=stages, strips=strips,
                            values=values) for s in styles}
    if out is not None:
        _write(_files(diagrams, output_paths(out, cell.name, list(diagrams), fmt), fmt),
               {"SPEC": spec, "--trace": trace})
    elif len(diagrams) == 1:
        _to_stdout(next(iter(diagrams.values())), fmt)
    elif to_stdout:
        both = "--style both draws" if style == "both" else "both styles (the default) draw"
        raise click.UsageError(f"{both} two diagrams, and stdout takes one: give "
                               f"--out BASE (writes BASE.pipe.{fmt} and BASE.cell.{fmt}) or "
                               "--style pipe or --style cell")
    else:
        _write(_files(diagrams, output_paths(".", cell.name, list(diagrams), fmt), fmt),
               {"SPEC": spec, "--trace": trace})


def _to_stdout(dot: graphviz.Digraph, fmt: str) -> None:
    """One diagram on stdout: text as text; PNG/PDF only where stdout is not a terminal."""
    if fmt in ("png", "pdf") and sys.stdout is not None and sys.stdout.isatty():
        raise click.UsageError(f"{fmt.upper()} is binary and stdout is a terminal: give --out "
                               f"FILE.{fmt}, or redirect (> diagram.{fmt})")
    data = to_bytes(dot, fmt)
    echo(data if fmt in ("png", "pdf") else data.decode("utf-8"), nl=False)
