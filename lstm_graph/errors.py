"""The project's exceptions: one base class, a few kinds, never ``assert``.

Everything a user can cause (a bad cell file, a wrong array, a broken weights
file, a missing program) raises a subclass of :class:`LstmGraphError`; the CLI
turns exactly these into a message and exit code 1. Anything else escaping is
a bug in lstm-graph.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass
from importlib import metadata


@dataclass(frozen=True, order=True)
class Diagnostic:
    """One message about a cell file, anchored at ``file:line:col`` (1-based)."""

    file: str
    line: int
    col: int
    severity: str  # "error" or "warning"
    message: str

    def __str__(self) -> str:  # a file's name on one line, its escapes shown (inert)
        return f"{inert(self.file)}:{self.line}:{self.col}: {self.severity}: {self.message}"


class LstmGraphError(Exception):
    """Base class of every error a user can cause."""


#: Errors reported per file; past this a file is probably not a cell file at all.
MAX_ERRORS = 100
#: What the parser says where it stopped, at the file's last line.
STOPPED = f"stopped after {MAX_ERRORS} errors; is this a .cell file?"


class CellError(LstmGraphError):
    """A cell file is wrong; carries the errors found, in file order, each once (a sum of
    many terms of the wrong size finds the same error at the same place for each): the
    first :data:`MAX_ERRORS`, then one that counts the rest (the parser stops there and
    says so, :data:`STOPPED`, kept; the validator's checks did not stop: a state line of
    220,000 names never assigned printed 220,001 lines, 50 MB as JSON), and every warning.

    >>> err = CellError([Diagnostic("a.cell", 3, 5, "error", "undefined name 'q'")])
    >>> str(err)
    "a.cell:3:5: error: undefined name 'q'"
    """

    def __init__(self, diagnostics: list[Diagnostic]):
        found = sorted(set(diagnostics), key=_stopped_last)
        errors = [d for d in found if d.severity == "error" and d.message != STOPPED]
        if len(errors) > MAX_ERRORS:  # the parser's own STOPPED line is kept, not counted
            more = errors[MAX_ERRORS]
            found = [d for d in found if d.severity != "error" or d.message == STOPPED
                     or d <= errors[MAX_ERRORS - 1]]
            found = sorted([*found, Diagnostic(
                more.file, more.line, more.col, "error", f"and {len(errors) - MAX_ERRORS:,} "
                f"more errors from here (the first {MAX_ERRORS} are listed)")], key=_stopped_last)
        self.diagnostics = found
        super().__init__("\n".join(str(d) for d in self.diagnostics))


def _stopped_last(diagnostic: Diagnostic) -> tuple[bool, Diagnostic]:
    """File order, but the parser's :data:`STOPPED` last: it stands at the last line's
    first column, before the errors of that line it stopped after."""
    return diagnostic.message == STOPPED, diagnostic


class UnknownCellError(LstmGraphError):
    """A SPEC is neither a built-in cell name nor an existing file."""


class DataError(LstmGraphError):
    """An input array or state has the wrong shape, dtype or values."""


class WeightsError(LstmGraphError):
    """A weights file or dict does not fit the cell, or cannot be read."""


class SizeMismatch(WeightsError):
    """Weights of another input or hidden size, or stack, than the one asked for (``what``:
    ``"input"``, ``"hidden"``, ``"layers"`` or ``"direction"``): a caller that chose it can
    say where it came from (the command line: an option that contradicts the weights).

    >>> import pickle
    >>> err = pickle.loads(pickle.dumps(SizeMismatch("w.npz has input size 3, …", "input")))
    >>> err.what, str(err)
    ('input', 'w.npz has input size 3, …')
    """

    def __init__(self, message: str, what: str, held: str = "") -> None:
        super().__init__(message, what, held)  # all in args: it pickles (a Dask worker
        self.what, self.held = what, held  # raises it); held: what the weights hold

    def __str__(self) -> str:
        return str(self.args[0])


class BackendError(LstmGraphError):
    """The requested array backend (CuPy, a GPU) is not available."""


class RenderError(LstmGraphError):
    """A diagram cannot be drawn (unknown highlight, Graphviz missing)."""


class OutputError(LstmGraphError):
    """An output file cannot be written."""


class LstmGraphWarning(UserWarning):
    """Something worth a line on a terminal that does not stop the work (the default
    executor falling back to the NumPy plan, say). The command line prints it as
    ``warning: …``."""


#: Terminal escape sequences (colours, cursor moves) and other control characters.
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b.|[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` without terminal escape codes or control characters: how a message quotes
    what another program said (PyTorch colours its errors).

    >>> printable("\\x1b[1mWeights only load failed\\x1b[0m")
    'Weights only load failed'
    """
    return _CONTROL.sub("", text)


def inert(text: str, quotes: bool = False) -> str:
    r"""``text`` as generated source (a comment; with ``quotes``, a docstring or a string
    literal in double quotes) may hold it: on one line, every character that is not
    printable written as its escape, and with ``quotes`` the backslash and the double quote
    too, so that no name from a file (a path, a node's name) can end the comment or the
    string and become code. A literal's escapes read back as ``text``.

    >>> inert('say "hi"\rnow'), inert('say "hi"\rnow', quotes=True)
    ('say "hi"\\rnow', 'say \\"hi\\"\\rnow')
    """
    special = '\\"' if quotes else ""
    return "".join(f"\\{ch}" if ch in special else ch if ch.isprintable()
                   else ascii(ch)[1:-1] for ch in text)


def inert_lines(text: str) -> str:
    r"""``text`` (a message) as a terminal may show it: its own lines kept, and every other
    character that is not printable (an ESC in a file's name, a direction override, a
    lone carriage return) written as its escape (:func:`inert`).

    >>> print(inert_lines("t\x1b[31m.npz: no such file\nsee --help"))
    t\x1b[31m.npz: no such file
    see --help
    """
    return "\n".join(inert(line) for line in text.split("\n"))


def installed_version() -> str:
    """The version of the lstm-graph running here: its package's, or, imported from a
    source tree that pip never installed (``PYTHONPATH=checkout``), where it lies (a lookup
    of the package's metadata raised there: ``--version`` and a Dask client crashed, and
    such a worker was refused though it could run the work)."""
    try:
        return metadata.version("lstm-graph")
    except metadata.PackageNotFoundError:
        return f"unpackaged, from {os.path.dirname(os.path.abspath(__file__))}"


def install_hint(extra: str) -> str:
    """The command that installs an optional part (the ``extra`` of ``pyproject.toml``: its
    packages as the installed lstm-graph declares them) into the Python running now, so it
    works alike from a clone's ``.venv`` and from an installed wheel."""
    try:
        declared = metadata.requires("lstm-graph") or []
    except metadata.PackageNotFoundError:
        declared = []
    marker = re.compile(rf"""extra\s*==\s*["']{re.escape(extra)}["']""")
    packages = [r.split(";", 1)[0].strip() for r in declared if marker.search(r)]
    if not packages:
        return f"pip install '.[{extra}]' in the lstm-graph checkout"
    return " ".join([shlex.quote(sys.executable), "-m", "pip", "install",
                     *map(shlex.quote, packages)])
