"""Charts for training: loss curves and gradient flow, as PNG or SVG (by the file's suffix).

They need matplotlib (the ``plot`` extra); SVG output is
deterministic (no dates, fixed ids), like every other file lstm-graph writes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lstm_graph.errors import RenderError, install_hint
from lstm_graph.formats.files import write_atomic, written_through
from lstm_graph.training.gradflow import Flow
from lstm_graph.training.trainer import Trained

FORMATS = (".png", ".svg")
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2")


def chart_format_problem(path: Path) -> str | None:
    """Why a chart cannot be written to ``path`` as its suffix says, or None (a device or
    FIFO, ``/dev/null``, takes one whatever its name: a PNG where it has no suffix)."""
    if path.suffix.lower() in FORMATS or (not path.suffix and written_through(path)):
        return None
    had = f"not {path.suffix}" if path.suffix else "and this path has no suffix"
    return f"{path}: a chart is written as .png or .svg (by its suffix), {had}"


def check_chart(path: Path) -> None:
    """Refuse, before any work, a chart path of another format or a missing matplotlib."""
    problem = chart_format_problem(path)
    if problem:
        raise RenderError(problem)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise RenderError(f"charts need matplotlib: {install_hint('plot')}") from None


def _pyplot(path: Path) -> Any:
    check_chart(path)
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "lstm-graph"
    import matplotlib.pyplot as plt

    return plt


def _finish(plt: Any, figure: Any, axes: Any, path: Path, xlabel: str, ylabel: str,
            title: str) -> Path:
    """Log scale, labels, grid and legend, then the chart written whole to ``path``. Steps
    are whole numbers: so are the ticks (a chart of 20 steps was marked 2.5, 5.0, …)."""
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    with np.errstate(over="ignore"):  # a log axis's margin past 1e308: matplotlib's concern
        axes.set_yscale("log")
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        axes.set_title(title)
        axes.grid(True, which="both", alpha=0.25)
        axes.legend(frameon=False, fontsize=9)
        return _save(plt, figure, path)


def _save(plt: Any, figure: Any, path: Path) -> Path:
    buffer = io.BytesIO()
    kind = path.suffix.lower()[1:] or "png"  # a device's (chart_format_problem)
    metadata = {"Date": None} if kind == "svg" else {"Software": None}
    figure.savefig(buffer, format=kind, dpi=120, metadata=metadata, bbox_inches="tight")
    plt.close(figure)
    return write_atomic(path, buffer.getvalue())


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if len(values) < window or window < 2:
        return values
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode="valid")


def loss_curves(runs: Sequence[tuple[str, Trained]], path: Path, title: str) -> Path:
    """Training loss (smoothed) and held-out loss against steps, with the task's baseline."""
    plt = _pyplot(path)
    figure, axes = plt.subplots(figsize=(7.5, 4.2))
    for k, (label, trained) in enumerate(runs):
        colour = _COLOURS[k % len(_COLOURS)]
        if len(trained.losses):
            steps, losses = np.asarray(trained.losses).T
            window = max(1, len(losses) // 50)
            axes.plot(steps[window - 1:], _smooth(losses, window), color=colour, alpha=0.35,
                      linewidth=1, label=f"{label} (training batches, mean of {window})")
        if len(trained.evals):
            steps, evals = np.asarray(trained.evals).T
            axes.plot(steps, evals, color=colour, linewidth=2, label=f"{label} (held out)")
    baseline = runs[0][1].baseline if runs else 0.0
    axes.axhline(baseline, color="#555555", linestyle="--", linewidth=1,
                 label=f"memoryless baseline {baseline:.3g}")
    return _finish(plt, figure, axes, path, "training step", "loss", title)


def gradient_flow_chart(flows: Sequence[Flow], path: Path, title: str) -> Path:
    """‖∂L/∂s_t‖ against t for every state of every cell, the loss at the last step."""
    plt = _pyplot(path)
    figure, axes = plt.subplots(figsize=(7.5, 4.2))
    styles = ("-", "--", ":", "-.")
    for k, found in enumerate(flows):
        colour = _COLOURS[k % len(_COLOURS)]
        for j, (state, norms) in enumerate(found.states.items()):
            steps = np.arange(1, len(norms) + 1)
            shown = np.where(np.isfinite(norms), np.maximum(norms, 1e-30), np.nan)  # gaps
            axes.plot(steps, shown, color=colour,
                      linestyle=styles[j % len(styles)], linewidth=2,
                      label=f"{found.cell}: ‖∂L/∂{state}_t‖")
    return _finish(plt, figure, axes, path, "step t (the loss is at the last step)",
                   "gradient size (mean over the batch)", title)
