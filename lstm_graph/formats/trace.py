"""A trace file: every value of a run, and which cell made them.

``lstm-graph trace --out trace.npz`` writes each assignment ``(T, B, width)`` under its
name, ``y`` and ``final.STATE``, and two 0-d text arrays (NumPy ``<U``, read without
pickle) that say which cell the values came from:

- ``cell``: the cell's name (``cell`` is a reserved word of the language, so no
  assignment has that name);
- ``cell.sha256``: the SHA-256 of the cell's canonical text (:func:`canonical_text`),
  its equations without layout, comments, captions or directives, so that reformatting
  a ``.cell`` file keeps its traces and changing an equation does not;
- ``trace.layout``: ``"time-major"`` (each value ``(T, B, width)``) or ``"batch-first"``
  (``(B, T, width)``, ``trace --batch-first``), which a reader turns time-major: a
  batch-first trace read as time-major drew sequence 1's values at step 6 as step 2 of
  sequence 5. A trace without it (written before it was recorded) is time-major.
- ``trace.lengths``: where the run had sequence lengths (``--lengths``), each sequence's
  (int64, ``(B,)``): past its length a sequence's values are zeros, which a reader
  refuses to draw as values.

A reader (``render --trace``) refuses a trace whose digest is not the cell's, naming
both cells: the numbers of another cell, drawn on this one's nodes, would be a silent
wrong picture. A trace written before lstm-graph recorded its cell has neither entry;
it is read with a warning that it cannot be checked (its values are still matched to
the cell's assignments by name).
"""

from __future__ import annotations

import hashlib
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from lstm_graph.errors import DataError, LstmGraphWarning, inert
from lstm_graph.formats.arrays import StoredArray, open_npz, read_npz
from lstm_graph.ir import NodeKind
from lstm_graph.schedule import Schedule

#: The entries that name the cell a trace came from, and the axes its values are in.
NAME, DIGEST, LAYOUT = "cell", "cell.sha256", "trace.layout"  # dotted: no value's name
LENGTHS = "trace.lengths"
#: The layouts a trace's values may be in: its ``trace.layout`` entry, and whether that
#: is batch-first.
LAYOUTS = {"time-major": False, "batch-first": True}


def canonical_text(schedule: Schedule) -> str:
    """The cell's equations in one form whatever the file's layout: the declarations,
    then every node as ``id = op(args)`` in stage order (within a stage, by assignment
    name, so that the order of independent lines does not count), numbers exact.

    >>> from lstm_graph.library import compile_source
    >>> a = compile_source("input x\\nstate h\\noutput h\\nh = tanh(linear(x, h[t-1]))  # hi")
    >>> print(canonical_text(a.schedule), end="")
    lstm-graph cell 1
    input x
    state h
    output h
    h.linear = linear(x, h[t-1])
    h = tanh(h.linear)
    """
    graph = schedule.graph
    lines = ["lstm-graph cell 1", f"input {' '.join(graph.inputs)}",
             f"state {' '.join(graph.states)}", f"output {' '.join(graph.outputs)}"]
    for names in schedule.stages:
        for name in sorted(names):
            for node_id in graph.assignments[name].nodes:
                node = graph.node(node_id)
                if node.kind is NodeKind.CONST:
                    lines.append(f"{node_id} = {float(node.value or 0.0)!r}")
                    continue
                args = [f"peep {arg}" if peep else arg
                        for arg, peep in zip(node.args, node.peep or (False,) * len(node.args))]
                attrs = "".join(f", {key}={float(value)!r}" for key, value in node.attrs)
                lines.append(f"{node_id} = {node.op}({', '.join(args)}{attrs})")
    return "\n".join(lines) + "\n"


def digest(schedule: Schedule) -> str:
    """The SHA-256 (hex) of :func:`canonical_text`."""
    return hashlib.sha256(canonical_text(schedule).encode("utf-8")).hexdigest()


def identity(schedule: Schedule, batch_first: bool = False) -> dict[str, np.ndarray]:
    """The entries a trace of this cell carries: its name, digest and layout (its values
    ``(B, T, width)`` where ``batch_first``), 0-d text arrays."""
    layout = next(name for name, first in LAYOUTS.items() if first == batch_first)
    return {NAME: np.array(schedule.graph.name), DIGEST: np.array(digest(schedule)),
            LAYOUT: np.array(layout)}


#: The longest name or digest a trace's entries may hold, in characters.
MAX_TEXT = 4096


def cell_entries(path: Path, stored: Mapping[str, StoredArray]
                 ) -> tuple[str | None, str | None, str | None]:
    """The name, digest and layout the trace file ``path`` records (``None`` where
    absent), from its index ``stored`` (:func:`~lstm_graph.formats.arrays.open_npz`), each
    checked by its header to be one text before it is read."""
    found = []
    for key in (NAME, DIGEST, LAYOUT):
        entry = stored.get(key)
        if entry is not None and (entry.shape != () or entry.dtype.kind != "U"
                                  or entry.dtype.itemsize > 4 * MAX_TEXT):
            raise DataError(f"{path}: '{key}' is {entry.dtype} of shape {entry.shape}; a "
                            "trace holds it as one short text, as 'lstm-graph trace' "
                            "writes it")
        found.append(None if entry is None else str(entry.read()))
    if found[2] is not None and found[2] not in LAYOUTS:
        raise DataError(f"{path}: '{LAYOUT}' is {inert(found[2])!r}; a trace's values are "
                        f"{' or '.join(LAYOUTS)}, as 'lstm-graph trace' writes them")
    return found[0], found[1], found[2]


def check_cell(name: str | None, recorded: str | None, schedule: Schedule,
               source: str) -> None:
    """Refuse (:class:`DataError`) a trace that records (``name``, ``recorded`` digest)
    another cell than ``schedule``'s, naming both; warn for one that records none."""
    graph = schedule.graph
    if name is None and recorded is None:
        warnings.warn(f"{source} does not say which cell it was traced from (an older "
                      f"lstm-graph wrote it); its values are drawn on cell '{graph.name}' "
                      "unchecked: trace it again to have it checked", LstmGraphWarning,
                      stacklevel=2)
        return
    if name is None or recorded is None:
        missing, present = (NAME, DIGEST) if name is None else (DIGEST, NAME)
        raise DataError(f"{source} has '{present}' but no '{missing}'; it is not a trace "
                        "as 'lstm-graph trace' writes it")
    expected = digest(schedule)
    if recorded == expected:
        return
    # the file's text and name: quoted on one line, with nothing a terminal acts on
    name, recorded, source = inert(name), inert(recorded), inert(source)
    if name == graph.name:
        raise DataError(f"{source} was traced from cell '{name}' with other equations "
                        f"(sha256 {recorded[:12]}…) than cell '{graph.name}' has now "
                        f"(sha256 {expected[:12]}…); trace the cell again with "
                        "'lstm-graph trace'")
    raise DataError(f"{source} was traced from cell '{name}' (sha256 {recorded[:12]}…), "
                    f"not from cell '{graph.name}' (sha256 {expected[:12]}…): its values "
                    f"are another cell's; trace cell '{graph.name}' with 'lstm-graph "
                    f"trace', or draw this trace on cell '{name}'")


def missing_values(source: str, graph_name: str, missing: list[str],
                   present: Iterable[str] = ()) -> DataError:
    """The error for a trace (``source``, holding ``present``) without the values of
    ``missing`` assignments of cell ``graph_name``; a stack's trace (``l0.f``, …: a layer's
    values under its prefix) is said as one (it was said to be another cell's)."""
    present = set(present)
    if missing and all(f"l0.{name}" in present for name in missing):
        return DataError(f"{source} is the trace of a stack (each layer's values under its "
                         f"own prefix: l0.{missing[0]}, …), and the diagram draws one cell; "
                         f"trace one layer of cell '{graph_name}' to draw its values "
                         f"('lstm-graph trace {graph_name} ... --out trace.npz', without "
                         "--layers or --direction)")
    return DataError(f"{source} has no values for {', '.join(missing)}; it was not recorded "
                     f"from cell '{graph_name}' (make it with 'lstm-graph trace {graph_name} "
                     "... --out trace.npz')")


def read_trace(path: Path, schedule: Schedule) -> dict[str, np.ndarray]:
    """The arrays of the trace file ``path``, once it holds every value of ``schedule``'s
    cell and its entries say that cell made it (:func:`check_cell`; both before any
    value is read), and they fit in memory; every value and ``y`` time-major
    ``(T, B, width)``, whatever the file's ``layout``."""
    graph, stored = schedule.graph, open_npz(
        path, expected="a trace, the .npz of every value that 'lstm-graph trace' writes")
    missing = [name for name in graph.assignments if name not in stored]
    if missing:  # not a trace of this cell at all (a weights file, say): no warning first
        raise missing_values(str(path), graph.name, missing, stored)
    name, recorded, layout = cell_entries(path, stored)
    check_cell(name, recorded, schedule, str(path))
    names = list(graph.assignments)
    for name in names:
        entry = stored[name]
        if entry.dtype.kind != "f" or len(entry.shape) != 3 or 0 in entry.shape:
            raise DataError(f"{path}: '{name}' is {entry.dtype} of shape {entry.shape}; a trace "
                            "holds each value as real numbers of shape (steps, sequences, "
                            "units), none of them 0, as 'lstm-graph trace' writes it")
    usual = Counter(stored[name].shape[:2] for name in names).most_common(1)[0][0]
    for name in names:
        if stored[name].shape[:2] != usual:
            others = next(n for n in names if stored[n].shape[:2] == usual)
            raise DataError(f"{path}: '{name}' has shape {stored[name].shape} and "
                            f"'{others}' {stored[others].shape}; a trace holds every value "
                            "over the same steps and sequences")
    lengths = stored.get(LENGTHS)
    sequences = usual[0] if layout is not None and LAYOUTS[layout] else usual[1]
    if lengths is not None and (lengths.dtype.kind not in "iu"
                                or lengths.shape != (sequences,)):
        raise DataError(f"{path}: '{LENGTHS}' is {lengths.dtype} of shape {lengths.shape}; "
                        f"a trace of {sequences} sequences holds one whole number of steps "
                        "for each")
    arrays = read_npz(path)
    steps = usual[1] if layout is not None and LAYOUTS[layout] else usual[0]
    if lengths is not None and not all(1 <= n <= steps for n in arrays[LENGTHS].tolist()):
        raise DataError(f"{path}: '{LENGTHS}' holds {arrays[LENGTHS].tolist()}; each "
                        f"sequence's length is from 1 to the trace's {steps} steps")
    if layout is not None and LAYOUTS[layout]:  # (B, T, width): the values and y
        for key in (*names, "y"):
            if key in arrays and arrays[key].ndim == 3:
                arrays[key] = np.ascontiguousarray(np.swapaxes(arrays[key], 0, 1))
    return arrays
