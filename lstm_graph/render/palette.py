"""The visual vocabulary, in one place: colours, shapes, fonts, stage marks.

Olah's symbols, which Shi Yan's article redraws the classic diagram with: learned
layers are yellow boxes labelled σ or tanh; element-wise ops are pink circles;
the memory pipe runs straight along the top. On top of that, the edge kinds of
the IR: dashed for a previous-step value, green for a state's new value.
"""

from __future__ import annotations

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
FADED = "#C8C8C8"  # everything else while highlighting
FADED_FILL = "#F2F2F2"
PIPE_WIDTH = "3.5"
EDGE_WIDTH = "1.3"
HIGHLIGHT_WIDTH = "3"

#: Small digits for stage numbers written on nodes (--stages).
STAGE_MARKS = "⓪①②③④⑤⑥⑦⑧⑨⑩⑪⑫⑬⑭⑮⑯⑰⑱⑲⑳"


def stage_mark(stage: int) -> str:
    return STAGE_MARKS[stage] if stage < len(STAGE_MARKS) else f"({stage})"
