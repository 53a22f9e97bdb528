"""The explorer page's data: the trace, what was kept of it, and the numbers as JSON text.

The page embeds one JSON object (``<script type="application/json"
id="lstm-graph-trace">``); its contract keys are ``cell``, ``stages`` (as
``schedule --json``) and ``values`` (every assignment, ``T × B × width``, as
nested lists). Numbers are written as the shortest decimal that reads back as
the same number in the run's dtype (float32: ``str(numpy.float32)``; float64:
``repr(float)``), so a reader gets the trace's values exactly; NaN is ``null``
and ±infinity ``±1e999`` (which JSON readers take for ±infinity).

The page is kept under 2 MB: its numbers take at most :data:`BUDGET_BYTES` (less where
the rest of the page takes more than its share: :func:`.page.page_and_kept`)
(:func:`budget`: 125,000 float32 or 71,428 float64 numbers; the peephole LSTM at
T = 50, B = 4, H = 32 with I = 16 is about 42,000, a 0.6 MB page). A larger run
is cut, in this order, and the page and the JSON (``subsampled``, ``kept``) say
so: the first :data:`MAX_SEQUENCES` sequences; then the first steps that fit (at
least :data:`MIN_STEPS`); then the first units of every value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

#: About how many bytes a page's numbers may take (values and input together).
BUDGET_BYTES = 1_500_000
#: About how many characters one number takes in the JSON, by dtype.
CHARS = {"float32": 12, "float64": 21}
#: Sequences kept of a run over budget.
MAX_SEQUENCES = 4
#: Steps kept at least before units are cut.
MIN_STEPS = 10


@dataclass(frozen=True)
class Kept:
    """What a page keeps of a run: the first ``steps`` steps, the first ``sequences``
    sequences, and the first ``units`` units of each value and of the input (None: all),
    which ``cut`` names those wider than that (the note says which were cut: it said
    "each value" where a wide input alone was)."""

    steps: int
    sequences: int
    units: int | None
    cut: tuple[str, ...] = ()

    def numbers(self, widths: Mapping[str, int]) -> int:
        """How many numbers the page holds of values of ``widths``."""
        return held(self.steps, self.sequences, self.units, widths)

    def shown(self, steps: int, sequences: int) -> str | None:
        """What a page of a run of ``steps`` × ``sequences`` shows, in words, when it was
        cut ("the first 4 of 64 sequences, steps 1 to 40 of 2000"); None when it was not.

        >>> Kept(40, 4, None).shown(2000, 64)
        'the first 4 of 64 sequences, steps 1 to 40 of 2000'
        >>> Kept(10, 2, 892, ("x",)).shown(10, 2)
        'the first 892 units of x'
        """
        cut = []
        if self.sequences < sequences:
            cut.append(f"the first {self.sequences} of {sequences} sequences")
        if self.steps < steps:
            cut.append(f"steps 1 to {self.steps} of {steps}")
        if self.units is not None:
            names = ", ".join(self.cut[:4]) + (", …" if len(self.cut) > 4 else "")
            units = "unit" if self.units == 1 else f"{self.units} units"
            cut.append(f"the first {units} of {names}")
        return ", ".join(cut) or None

    def sentence(self, steps: int, sequences: int, heavy: bool = False) -> str | None:
        """What was left out, in the page's words; None when nothing was. ``heavy``: the
        page is over 2 MB with the fewest numbers it holds (its diagrams and the data of
        the paths they light are), which it says even where nothing was left out."""
        shown = self.shown(steps, sequences)
        if shown is None:
            return "This page holds the whole run and is over 2 MB: its diagrams and the " \
                "paths they light take more than that." if heavy else None
        return f"This page shows {shown}, {self.reason(heavy)}. 'lstm-graph trace' writes " \
            "every value."

    @staticmethod
    def reason(heavy: bool) -> str:
        """Why a page shows part of a run (``heavy``: see :meth:`sentence`)."""
        return ("the fewest it holds: its diagrams and the paths they light take more than "
                "2 MB") if heavy else "to stay under 2 MB"


def budget(dtype: np.dtype) -> int:
    """The most numbers of ``dtype`` a page embeds.

    >>> budget(np.dtype("float32")), budget(np.dtype("float64"))
    (125000, 71428)
    """
    return BUDGET_BYTES // CHARS[str(dtype)]


def held(steps: int, sequences: int, units: int | None, widths: Mapping[str, int]) -> int:
    """The numbers of ``steps`` × ``sequences`` of values of ``widths``, each of its first
    ``units`` units (None: all)."""
    return steps * sequences * sum(w if units is None else min(w, units)
                                   for w in widths.values())


def keep(steps: int, sequences: int, widths: Mapping[str, int], budget: int) -> Kept:
    """What of a run of ``steps`` × ``sequences`` with values (and an input) of ``widths``,
    by name, fits ``budget``.

    >>> keep(50, 4, {"h": 32, "x": 16}, 125_000)
    Kept(steps=50, sequences=4, units=None, cut=())
    >>> keep(5000, 64, dict.fromkeys("abcdef", 256), 125_000)
    Kept(steps=20, sequences=4, units=None, cut=())
    >>> keep(5000, 64, {**dict.fromkeys("abcdef", 4096), "x": 3}, 125_000)
    Kept(steps=10, sequences=4, units=446, cut=('a', 'b', 'c', 'd', 'e', 'f'))
    """
    if held(steps, sequences, None, widths) <= budget:
        return Kept(steps, sequences, None)
    sequences = min(sequences, MAX_SEQUENCES)
    per_step = held(1, sequences, None, widths)
    fit = budget // per_step
    if fit >= min(steps, MIN_STEPS):
        return Kept(min(steps, fit), sequences, None)
    steps = min(steps, MIN_STEPS)
    units = max(1, budget // (steps * sequences * len(widths)))
    cut = tuple(n for n, w in widths.items() if w > units)
    return Kept(steps, sequences, units if cut else None, cut)  # none narrower: none cut


def number(value: float, dtype: np.dtype) -> str:
    """One number as JSON: the shortest decimal that reads back as the same ``dtype`` value.

    >>> f32 = np.dtype("float32")
    >>> [number(v, f32) for v in (0.1, float("nan"), float("-inf"), 3.0)]
    ['0.1', 'null', '-1e999', '3.0']
    """
    if math.isnan(value):
        return "null"
    if math.isinf(value):
        return "1e999" if value > 0 else "-1e999"
    return str(np.float32(value)) if dtype == np.float32 else repr(float(value))


def array_json(array: np.ndarray, dtype: np.dtype) -> str:
    """``array`` as nested JSON lists of :func:`number` texts."""
    flat = [number(v, dtype) for v in np.asarray(array, dtype=np.float64).ravel().tolist()]

    def nest(start: int, shape: tuple[int, ...]) -> str:
        if len(shape) == 1:
            return "[" + ",".join(flat[start:start + shape[0]]) + "]"
        stride = math.prod(shape[1:])
        return "[" + ",".join(nest(start + k * stride, shape[1:])
                              for k in range(shape[0])) + "]"

    return nest(0, array.shape) if array.ndim else flat[0]


def to_json(data: Mapping[str, object], arrays: Mapping[str, Mapping[str, np.ndarray]],
            dtype: np.dtype) -> str:
    """``data`` as JSON, then each ``arrays`` group (``values``, ``input``, ``initial``, keys
    that ``data`` does not have) written by :func:`array_json`, made safe to sit inside a
    ``<script>`` element. The groups are appended to the object, never put in place of a
    marker, so no text of the user's (a caption, a cell's name) can be taken for one.

    >>> to_json({"caption": "@@values@@"}, {"values": {"h": np.ones((1, 1, 1))}},
    ...         np.dtype("float32"))
    '{"caption":"@@values@@","values":{"h":[[[1.0]]]}}'
    """
    text = json.dumps(dict(data), ensure_ascii=False, separators=(",", ":"))
    groups = [json.dumps(key) + ":{" + ",".join(f"{json.dumps(name)}:{array_json(value, dtype)}"
                                                 for name, value in group.items()) + "}"
              for key, group in arrays.items()]
    if groups:
        text = text[:-1] + ("," if data else "") + ",".join(groups) + "}"
    # no "</script>" or "<!--" can end the element early: "<" only occurs in strings
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
