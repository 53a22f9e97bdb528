"""Finding and compiling cells: built-in names and users' ``.cell`` files.

``load_cell(SPEC)`` is the one entry point: SPEC is a built-in name
(``lstm``, ``peephole_lstm``, …) or a path to a ``.cell`` file, and the result
is a validated, scheduled :class:`~lstm_graph.cell.Cell`.
"""

from __future__ import annotations

import codecs
import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from lstm_graph.cell import Cell
from lstm_graph.errors import CellError, Diagnostic, UnknownCellError, inert
from lstm_graph.language.parser import MAX_CELL_BYTES, TOO_LARGE, did_you_mean, parse
from lstm_graph.language.validate import validate
from lstm_graph.schedule import build_schedule

_BUILTIN_DIR = resources.files("lstm_graph") / "cells"


def builtin_names() -> list[str]:
    """Names of the cells that ship with lstm-graph, sorted."""
    return sorted(p.name[: -len(".cell")] for p in _BUILTIN_DIR.iterdir()
                  if p.name.endswith(".cell"))


def describe_builtin(name: str) -> str:
    """The first paragraph of a built-in cell file's opening comment, as one line: what
    the cell is."""
    text = (_BUILTIN_DIR / f"{name}.cell").read_text(encoding="utf-8")
    words = []
    for line in text.splitlines():
        said = line.removeprefix("#").strip()
        if not line.startswith("#") or not said:
            break
        words.append(said)
    return " ".join(words).rstrip(" (:;,")


def compile_source(text: str, file: str = "<string>", default_name: str = "cell") -> Cell:
    """Parse, validate and schedule cell text; raise :class:`CellError` listing every error.

    >>> cell = compile_source("input x\\nstate h\\noutput h\\nh = tanh(linear(x, h[t-1]))")
    >>> cell.schedule.stages
    (('h',),)
    """
    with _collector_paused():
        parsed = parse(text, file, default_name)
        graph, found = parsed.graph, parsed.diagnostics
        if parsed.refused:
            raise CellError(found)
        parse_errors = any(d.severity == "error" for d in found)
        sizes, more = validate(graph, parsed.assigned, parse_errors, parsed.broken,
                               parsed.headers)
        found += more
        if any(d.severity == "error" for d in found):
            raise CellError(found)
        warnings = sorted(d for d in found if d.severity == "warning")
        return Cell(graph, build_schedule(graph, sizes), warnings)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused: compiling a cell makes hundreds of
    thousands of objects (syntax trees, nodes, graph dicts) and no cycles to collect, and
    the collector would scan them over and over (half the time of a 50,000-line cell)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def read_cell_text(path: Path) -> str:
    """A cell file's text; binary, non-UTF-8 and enormous files are refused with a clear
    error."""
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_CELL_BYTES + 1)
    except OSError as err:
        raise UnknownCellError(f"{path}: cannot read: {err.strerror or err}") from None
    if len(data) > MAX_CELL_BYTES:
        raise CellError([Diagnostic(str(path), 1, 1, "error", TOO_LARGE)])
    if b"\0" in data:
        raise CellError([Diagnostic(str(path), 1, 1, "error",
                                    "this is a binary file, not a .cell text file")])
    text = data.removeprefix(codecs.BOM_UTF8)  # an editor's mark, not the cell's text
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError as err:
        start = text.rfind(b"\n", 0, err.start) + 1  # of the line; what precedes is UTF-8
        line = text[: err.start].count(b"\n") + 1
        col = len(text[start: err.start].decode("utf-8")) + 1  # in characters, not bytes
        raise CellError([Diagnostic(str(path), line, col, "error",
                                    f"not UTF-8 text (byte 0x{text[err.start]:02x}); save "
                                    "the file as UTF-8")]) from None


def load_cell(spec: str | Path) -> Cell:
    """A built-in cell by name, or a ``.cell`` file by path.

    >>> load_cell("peephole_lstm").schedule.stages
    (('f', 'i', 'g'), ('c',), ('o',), ('h',))
    """
    if isinstance(spec, bytes):  # a path as the OS gives it
        spec = os.fsdecode(spec)
    if not isinstance(spec, (str, os.PathLike)):
        raise UnknownCellError(f"a cell is named by a string or a path, not by "
                               f"{type(spec).__name__} {spec!r:.40}: a built-in cell's name "
                               f"({', '.join(builtin_names())}) or a .cell file's path")
    spec_text = os.fspath(spec)
    shown = inert(spec_text)  # on one line: a newline in it would make a second message
    if not spec_text:  # Path("") is the working directory
        raise UnknownCellError(f"the cell's name is empty; built-in cells: "
                               f"{', '.join(builtin_names())}; or give the path to a .cell file")
    if spec_text in builtin_names():
        resource = _BUILTIN_DIR / f"{spec_text}.cell"
        return compile_source(resource.read_text(encoding="utf-8"), f"<builtin>/{spec_text}.cell",
                              spec_text)
    path = Path(spec_text)
    try:
        path.stat()
    except FileNotFoundError:
        pass  # a name: said below
    except OSError as err:  # a loop of links, a name too long, no permission on the way
        raise UnknownCellError(f"{shown}: cannot read ({err.strerror or err})") from None
    except ValueError as err:  # a NUL in it, which no path holds
        raise UnknownCellError(f"{shown}: not a path ({err})") from None
    if path.is_file():
        return compile_source(read_cell_text(path), spec_text, path.stem)
    if path.is_dir():
        raise UnknownCellError(f"{shown} is a directory, not a .cell file")
    if path.exists():
        raise UnknownCellError(f"{shown} is not a regular file (a FIFO, socket or device); "
                               "give a .cell file")
    if path.is_symlink():  # a link to nothing: "no such file" hid the link
        raise UnknownCellError(f"{shown} is a symbolic link to {inert(os.readlink(path))}, "
                               "which does not exist")
    looks_like_path = path.suffix or "/" in spec_text or "\\" in spec_text
    hint = "no such file" if looks_like_path else \
        f"not a built-in cell{_closest_builtin(spec_text)}"
    raise UnknownCellError(f"{shown}: {hint}; built-in cells: {', '.join(builtin_names())};"
                           " or give the path to a .cell file")


def _closest_builtin(spec: str) -> str:
    """``" (did you mean 'lstm'?)"`` for a name close to a built-in cell's: the same but for
    case, ``-`` for ``_`` or spaces (``LSTM``, ``Peephole-LSTM``) or the order of its words
    (``lstm_peephole``, which a close spelling took for ``lstm_proj``), else a close
    spelling.

    >>> _closest_builtin("LSTM"), _closest_builtin("peephole-lstm"), _closest_builtin("grue")
    (" (did you mean 'lstm'?)", " (did you mean 'peephole_lstm'?)", " (did you mean 'gru'?)")
    >>> _closest_builtin("lstm_peephole")
    " (did you mean 'peephole_lstm'?)"
    """
    words = spec.replace("-", " ").replace("_", " ").lower().split()
    folded = "_".join(words)
    same = [name for name in builtin_names()
            if name == folded or sorted(name.split("_")) == sorted(words)]
    return f" (did you mean '{same[0]}'?)" if same else did_you_mean(folded, builtin_names())
