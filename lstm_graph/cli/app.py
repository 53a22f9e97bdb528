"""The command line's frame: one thin click group over the Python API.

Exit codes: 0 ok, 1 the input is wrong (any :class:`LstmGraphError`), 2 wrong
usage (click). Data goes to stdout, messages to stderr; the only place domain
errors become messages is :class:`_Group.invoke`. Commands live in the sibling
modules, one per family, and register themselves on :data:`main`.
"""

from __future__ import annotations

import errno
import io
import logging
import math
import os
import signal
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from lstm_graph.cell import Cell
from lstm_graph.errors import (
    LstmGraphError,
    LstmGraphWarning,
    OutputError,
    inert_lines,
    installed_version,
)
from lstm_graph.formats.files import json_text, recording, release_held
from lstm_graph.library import load_cell
from lstm_graph.models import Model, is_model, load_model


class _UserError(click.ClickException):
    """A domain error shown as-is (``file:line:col: error: …``), exit code 1."""

    def show(self, file: Any = None) -> None:
        click.echo(self.message, err=True)


class _Terminated(BaseException):
    """SIGTERM, raised where the process is, so every clean-up runs as on Ctrl-C."""


def _terminate(signum: int, frame: Any) -> None:
    raise _Terminated


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """Our warnings as one line, ``warning: …``; others as Python shows them."""
    if issubclass(category, LstmGraphWarning):
        echo(f"warning: {inert_lines(str(message))}", err=True)
    else:
        echo(warnings.formatwarning(message, category, filename, lineno, line).rstrip(),
             err=True)


def _what_was_written(paths: list[str]) -> str:
    """What an interrupted or failed command leaves: no output, or those it had written
    whole before the signal or the error came (each renamed into place as a whole)."""
    if not paths:
        return "no output was written"
    return (f"{', '.join(inert_lines(p) for p in paths)} had been written whole before it; "
            "nothing else was written")


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        previous = signal.signal(signal.SIGTERM, _terminate)
        notes = logging.getLogger("lstm_graph")
        handler = logging.StreamHandler(sys.stderr)  # e.g. "compiling … once (cached in …)"
        handler.setFormatter(logging.Formatter("%(message)s"))
        if stderr_is_terminal():
            notes.addHandler(handler)
            notes.setLevel(logging.INFO)
        written: list[str] = []
        try:
            with recording() as written:
                try:
                    with warnings.catch_warnings():
                        warnings.showwarning = _show_warning
                        return super().invoke(ctx)
                except (KeyboardInterrupt, _Terminated) as err:
                    interrupted = isinstance(err, KeyboardInterrupt)
                    echo(f"{'interrupted' if interrupted else 'terminated'}; "
                         f"{_what_was_written(written)}", err=True)
                    # Dask's lines as its exit hooks reap a half-started local cluster
                    logging.getLogger("distributed").setLevel(logging.CRITICAL + 1)
                    ctx.exit(130 if interrupted else 143)
        except click.UsageError as err:  # it may name a file: inert, as errors are below
            setattr(err, "message", inert_lines(err.message))  # noqa: B010 (Final in stubs)
            raise
        except LstmGraphError as err:  # names from files in it: nothing a terminal acts on
            before = f" ({_what_was_written(written)})" if written else ""
            raise _UserError(inert_lines(str(err)) + before) from None
        except OSError as err:  # a path the checks did not foresee: too long, a loop of links
            if err.errno == errno.EPIPE:  # stdout's reader went away (| head): click ends
                raise  # it quietly, exit 1
            where = f"{inert_lines(os.fsdecode(err.filename))}: " if err.filename else ""
            raise _UserError(f"{where}{err.strerror or err}; {_what_was_written(written)}") \
                from None
        except MemoryError:  # past what the estimates foresaw (lstm_graph.formats.memory)
            raise _UserError(f"out of memory; {_what_was_written(written)} (the work was "
                             "larger than the memory this process may take)") from None
        finally:
            release_held()  # FIFOs checked but never written: their readers' input ends
            signal.signal(signal.SIGTERM, previous)
            notes.removeHandler(handler)


#: A file name each file output could have, for the message that a path ending in "/" is
#: a directory: by option, then by command for ``--out``.
_EXAMPLES = {"checkpoint": "w.ckpt.npz", "plot": "loss.png", "diagram": "diagram.svg",
             "markdown": "board.md", "run": "y.npz", "trace": "trace.npz", "grad": "grads.npz",
             "params": "template.npz", "explore": "cell.html", "train": "w.npz",
             "gradflow": "chart.png", "sweep": "board.json",
             "export": "model.onnx (with --format torch, model.py)"}


def refuse_same_outputs(outputs: Mapping[str, Path | None], advice: str = "give two files"
                        ) -> None:
    """Wrong usage where two outputs (``{"--out": path}``) name one path, once symbolic links
    are followed: the second written would replace the first (``--out same.png --plot
    same.png`` lost the weights). Hard links to one file are two names, each replaced on
    its own (outputs are written beside and renamed into place); ``/dev/null`` takes any
    number (two outputs into one pipe or terminal would mix their bytes)."""
    given = [(label, path) for label, path in outputs.items()  # /dev/null twice is fine
             if path is not None and os.path.realpath(path) != os.devnull]
    for k, (label, path) in enumerate(given):
        for other, earlier in given[:k]:
            if os.path.realpath(path) == os.path.realpath(earlier):
                raise click.UsageError(f"{other} and {label} name the same file ({path}); "
                                       f"{advice}")


class InputPath(click.Path):
    """A file an option reads (``--input``, ``--weights``, …): an empty path, as an unset
    shell variable gives (``--input "$X"``), is wrong usage (exit 2), named, not the
    working directory read as a file."""

    def __init__(self) -> None:
        super().__init__(dir_okay=False, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        if not str(value):
            self.fail("the path is empty (an unset shell variable?); give a file name",
                      param, ctx)
        return super().convert(value, param, ctx)


class OutputPath(click.Path):
    """``--out``: a file path, where an empty one, one ending in ``/`` (a directory), or
    ``-`` (standard output, to most programs) is wrong usage (exit 2); so is a ``.npy``
    name for an ``.npz`` (``train --out w.npy`` wrote a zip that ``--weights w.npy`` then
    refused as an unknown format)."""

    def __init__(self) -> None:
        super().__init__(dir_okay=False, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        text = str(value)
        if not text:
            self.fail("the output path is empty; give a file name", param, ctx)
        name = param.name if param is not None else None
        example = _EXAMPLES.get(name or "") or \
            _EXAMPLES.get(ctx.command.name if ctx and ctx.command.name else "", "out")
        option = param.opts[0] if param is not None and param.opts else "the output"
        if example.endswith(".npz") and Path(text).suffix.lower() == ".npy":
            raise click.UsageError(f"{option} {text}: this writes an .npz (arrays by name), "
                                   f"not one .npy array; name it "
                                   f"{Path(text).with_suffix('.npz').name}", ctx)
        if text.endswith(("/", os.sep)) or text == "-":
            if text == "-":  # elsewhere the name of standard output: here a binary file
                raise click.UsageError(f"{option} - would be a file named '-' (this command "
                                       f"writes a file, not standard output); give a file "
                                       f"name such as {example}", ctx)
            raise click.UsageError(f"{option} {text} names a directory; give a file name such "
                                   f"as {text}{example}", ctx)
        return super().convert(value, param, ctx)


class FiniteFloat(click.FloatRange):
    """A number option in a range that is also finite: ``nan`` and ``inf`` are wrong usage
    (a NaN passes every comparison of a plain range)."""

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{number} is not a finite number", param, ctx)
        return number


def stderr_is_terminal() -> bool:
    """Whether messages go to a terminal (progress bars, notes); False where stderr was
    closed when the process started (Python's ``sys.stderr`` is then None)."""
    return sys.stderr is not None and sys.stderr.isatty()


def echo(data: str | bytes, err: bool = False, nl: bool = True) -> None:
    """``data`` on stdout (with ``err``, stderr). A stdout that cannot take it (a full disk,
    an I/O error) is an :class:`OutputError`, one line, not a traceback; a reader that went
    away (``| head``) is left to click (exit 1, quietly). A message that stderr cannot take
    is dropped: the work and its outputs go on (a closed stderr stopped a render between
    its two files)."""
    if not err and sys.stdout is None:  # closed when the process started
        raise OutputError("cannot write to standard output (it is closed)")
    try:
        click.echo(data, err=err, nl=nl)
    except OSError as error:
        if err:
            return
        if error.errno == errno.EPIPE:
            raise
        raise OutputError(f"cannot write to standard output ({error.strerror or error})"
                          ) from None


def say(text: str, err: bool = False, nl: bool = True) -> None:
    """A line (or lines) for the terminal, with what is not printable in it written as its
    escape (:func:`~lstm_graph.errors.inert_lines`): a file's name may hold an ESC or a
    direction override, and every message that quotes one (``wrote …``) showed it raw."""
    echo(inert_lines(text), err=err, nl=nl)


def emit_json(data: Any, err: bool = False) -> None:
    """``data`` on stdout (with ``err``, stderr) as JSON
    (:func:`~lstm_graph.formats.files.json_text`)."""
    echo(json_text(data), err=err)


def given(option: str) -> bool:
    """Whether the running command's parameter ``option`` (its Python name) was given on
    the command line, not left at its default: an option that would be ignored where it
    was given is wrong usage."""
    context = click.get_current_context(silent=True)
    return context is not None and \
        context.get_parameter_source(option) is click.core.ParameterSource.COMMANDLINE


def is_stdout(path: Path) -> bool:
    """Whether ``path`` is where stdout goes (``--out /dev/stdout`` in a pipe): a command
    that wrote its output there prints its summary on stderr instead, so the summary is
    not appended to the output's bytes."""
    try:
        target, ours = os.stat(path), os.fstat(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return False  # no such file, or stdout is no file (captured, closed)
    return (target.st_dev, target.st_ino) == (ours.st_dev, ours.st_ino)


def load(spec: str) -> Cell:
    """The cell named by SPEC (a built-in, a ``.cell`` file, or a model file's cell); its
    warnings, and a model's notes, go to stderr."""
    if is_model(spec):
        return load_model_spec(spec).cell
    cell = load_cell(spec)
    for warning in cell.warnings:
        say(str(warning), err=True)
    return cell


def load_model_spec(spec: str) -> Model:
    """The model file SPEC names; its notes go to stderr."""
    model = load_model(spec)
    for note in model.notes:
        say(note, err=True)
    return model


SPEC_HELP = ("SPEC is a built-in cell name (see 'cells'), a path to a .cell file, or a "
             "PyTorch (.pt/.pth state dict) or ONNX (.onnx) model file, whose cell, layers, "
             "weights and stored initial states and lengths are used.")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(installed_version(), prog_name="lstm-graph")
def main() -> None:
    """Read, run and check recurrent cells as dataflow graphs."""

