"""The visual vocabulary, in one place: colours, shapes, fonts, stage marks, the value scale.

Olah's symbols, which Shi Yan's article redraws the classic diagram with: learned
layers are yellow boxes labelled σ or tanh; element-wise ops are pink circles;
the memory pipe runs straight along the top. On top of that, the edge kinds of
the IR: dashed for a previous-step value, green for a state's new value. Values
(``render --trace``, the explorer page) are heat strips on one diverging scale.
"""

from __future__ import annotations

import math

FONT = "Helvetica"
LAYER_FILL = "#FFE08A"  # yellow: learned layer (linear + activation)
LAYER_LINE = "#B8860B"
OP_FILL = "#F7B6CF"  # pink: element-wise op
OP_LINE = "#B03A6C"
MEMORY_FILL = "#E8F5E9"  # the classic diagram's central Cell
TEXT = "#222222"
EDGE = "#333333"
NEW_STATE = "#1E9E3A"  # green: a state's new value (new memory)
OLD_STYLE = "dashed"  # a value from the previous step
CAPTION = "#555555"
HIGHLIGHT = "#D9480F"  # the highlighted path
GRADIENT = "#7048E8"  # gradient sizes on edges (gradflow --diagram)
FADED = "#C8C8C8"  # everything else while highlighting
FADED_FILL = "#F2F2F2"
PIPE_WIDTH = "3.5"
EDGE_WIDTH = "1.3"
HIGHLIGHT_WIDTH = "3"

#: Small digits for stage numbers written on nodes (--stages): circled up to ⑩, then
#: "(11)": common fonts (DejaVu) stop at ⑩, and ⑪–⑳ drew as empty boxes.
STAGE_MARKS = "⓪①②③④⑤⑥⑦⑧⑨⑩"

#: The value scale (ColorBrewer RdBu): blue for −1, white for 0, red for +1; values
#: beyond ±HEAT_RANGE take the end colours. Valves (σ) live in [0, 1]: shut is
#: white, open is red. The explorer page's script interpolates the same stops.
HEAT_STOPS = ("#2166ac", "#67a9cf", "#d1e5f0", "#f7f7f7", "#fddbc7", "#ef8a62", "#b2182b")
HEAT_RANGE = 1.0
NAN_FILL = "#7f7f7f"  # a NaN, on the strip and in the heatmaps


def stage_mark(stage: int) -> str:
    return STAGE_MARKS[stage] if stage < len(STAGE_MARKS) else f"({stage})"


def heat(value: float, scale: float = HEAT_RANGE) -> str:
    """The colour of ``value`` on the value scale ``[-scale, scale]``, as ``#rrggbb``.

    >>> heat(0.0), heat(1.0), heat(-5.0), heat(float("nan"))
    ('#f7f7f7', '#b2182b', '#2166ac', '#7f7f7f')
    """
    if math.isnan(value):
        return NAN_FILL
    position = (min(max(value / scale, -1.0), 1.0) + 1) / 2 * (len(HEAT_STOPS) - 1)
    low = min(int(position), len(HEAT_STOPS) - 2)
    frac = position - low
    a, b = _rgb(HEAT_STOPS[low]), _rgb(HEAT_STOPS[low + 1])
    return "#" + "".join(f"{math.floor(x + (y - x) * frac + 0.5):02x}" for x, y in zip(a, b))


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)
