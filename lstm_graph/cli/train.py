"""The ``train`` and ``gradflow`` commands: learning a task, and watching gradients flow."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np

from lstm_graph.cli.app import (
    FiniteFloat,
    OutputPath,
    emit_json,
    given,
    is_stdout,
    load,
    main,
    refuse_same_outputs,
    say,
    stderr_is_terminal,
)
from lstm_graph.cli.describe import plural
from lstm_graph.errors import DataError, RenderError, SizeMismatch, WeightsError, inert
from lstm_graph.executors.backends import DTYPES
from lstm_graph.formats.files import check_output, refuse_inputs, write_npz, written_through
from lstm_graph.formats.memory import allocation, require
from lstm_graph.library import builtin_names
from lstm_graph.models import is_model
from lstm_graph.render import FORMATS, STYLES, dot_missing, dot_program, render, save
from lstm_graph.render.scene import sink_id
from lstm_graph.training import Task, named, train
from lstm_graph.training.gradflow import Flow, flow
from lstm_graph.training.plots import (
    chart_format_problem,
    check_chart,
    gradient_flow_chart,
    loss_curves,
)
from lstm_graph.training.trainer import Stopped, check_fits, checkpoint_step

if TYPE_CHECKING:
    from click._termui_impl import ProgressBar  # what click.progressbar returns

TASK_HELP = ("adding (the adding problem), copy (the copy task), or the path of an .npz "
             "holding x (T, N, I) and y (N, O) or (T, N, O).")


def usage_chart(option: str, path: Path) -> None:
    """A chart's path of another format is wrong usage, as a diagram's is."""
    problem = chart_format_problem(path)
    if problem:
        raise click.UsageError(f"{option} {problem}")


def task_of(task_name: str, length: int) -> Task:
    """The task ``--task`` names; ``--length`` given beside a task file is wrong usage
    (its sequences have their own length, and the option would do nothing)."""
    # a name that is no file (a typo: addng) is said as an unknown task, by named()
    if not task_name:
        raise click.BadParameter("the task is empty (an unset shell variable?); name a "
                                 "task (adding, copy) or give a task file", param_hint="'--task'")
    file = Path(task_name)
    if given("length") and task_name not in ("adding", "copy") and \
            (file.suffix.lower() == ".npz" or file.exists()):
        raise click.UsageError(f"--length sets the adding problem's length and the copy "
                               f"task's delay; the task file {inert(task_name)} holds "
                               "sequences of their own length: drop --length")
    if task_name in ("adding", "copy"):
        try:
            return named(task_name, length)
        except DataError as err:  # --length out of the task's range: wrong usage, as others
            raise click.UsageError(f"--length {length}: {err}") from None
    return named(task_name, length)


def _ratio(first: float, last: float) -> str:
    """How much of the last step's gradient size reaches the first step."""
    return f"{first / last:.3g}" if last else "—"


def _show_loss(loss: float | None) -> str:
    return f"loss {loss:.4g}" if loss is not None else ""


def _replaceable(checkpoint: Path) -> int | None:
    """Refuse the checkpoint's default place (beside ``--out``: a name the user did not
    give) where it holds anything but a checkpoint ``train`` wrote; the step of an earlier
    run's there, which this run replaces (None where there is none)."""
    if not os.path.lexists(checkpoint):
        return None
    earlier = None if checkpoint.is_symlink() or not checkpoint.is_file() \
        else checkpoint_step(checkpoint)
    if earlier is None:
        what = "a link" if checkpoint.is_symlink() else "something"
        raise click.UsageError(f"{checkpoint}, the checkpoint's place beside --out, holds "
                               f"{what} train did not write; it is left alone: give "
                               "--checkpoint FILE, or move it")
    return earlier


@contextmanager
def _stop_at_a_step_end() -> Iterator[list[int]]:
    """SIGTERM and Ctrl-C (SIGINT) noted, not acted on at once: training ends at the end
    of its step, with a checkpoint. The list holds the signals received; a second one
    acts as it would have (the command ends now, as on any other command)."""
    received: list[int] = []
    previous = {int(number): signal.getsignal(number)
                for number in (signal.SIGTERM, signal.SIGINT)}

    def note(number: int, frame: Any) -> None:
        if received:
            handler = previous[number]
            if callable(handler):
                handler(number, frame)
            raise KeyboardInterrupt
        received.append(number)

    for number in previous:
        signal.signal(number, note)
    try:
        yield received
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@main.command(epilog="SPEC is a built-in cell name (see 'cells') or a path to a .cell file "
              "(a model file's cell trains from fresh weights: give its cell). Writes the "
              "cell's trained parameters (in its own names, ready for run, trace, grad, "
              "explore) to --out; the checkpoint also holds the readout and Adam's state.")
@click.argument("spec")
@click.option("--task", "task_name", required=True, help=TASK_HELP)
@click.option("--length", type=click.IntRange(min=1), default=50, show_default=True,
              help="Sequence length of the adding problem; the copy task's delay.")
@click.option("--hidden-size", "-H", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), required=True,
              help="Training steps in all (a resumed run counts those already done).")
@click.option("--lr", type=FiniteFloat(min=0, min_open=True), default=2e-3,
              show_default=True, help="Adam's learning rate.")
@click.option("--clip", type=FiniteFloat(min=0), default=1.0, show_default=True,
              help="Clip the global gradient norm to this (0: no clipping).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed for the initial weights and the batches.")
@click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True)
@click.option("--out", type=OutputPath(), required=True,
              help="Trained weights (.npz, the cell's parameter names).")
@click.option("--checkpoint", type=OutputPath(),
              help="Checkpoint file (default: OUT with .ckpt.npz), written whole every "
                   "--checkpoint-every steps.")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=500, show_default=True)
@click.option("--resume", is_flag=True, help="Continue from the checkpoint.")
@click.option("--eval-every", type=click.IntRange(min=1), default=100, show_default=True,
              help="Measure the loss on a held-out batch every this many steps.")
@click.option("--plot", type=OutputPath(),
              help="Also draw the loss curves (.png or .svg).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def train_command(spec: str, task_name: str, length: int, hidden_size: int, batch: int,
                  steps: int, lr: float, clip: float, seed: int, dtype: str, out: Path,
                  checkpoint: Path | None, checkpoint_every: int, resume: bool, eval_every: int,
                  plot: Path | None, as_json: bool) -> None:
    """Train a cell (with a linear readout) on a task, with Adam and gradient clipping."""
    if plot is not None:
        usage_chart("--plot", plot)
        check_chart(plot)
    earlier = None  # the step of an earlier run's checkpoint this run replaces
    if checkpoint is None:  # beside --out, or beside the file a link there leads to
        base = Path(os.path.realpath(out)) if out.is_symlink() else out
        if written_through(out) or base.exists() and not base.is_file():
            raise click.UsageError(f"--out {out} is not a regular file, so there is no place "
                                   "beside it for the checkpoint: give --checkpoint FILE")
        stem = base.name[:-4] if base.suffix.lower() == ".npz" else base.name
        checkpoint = base.with_name(stem + ".ckpt.npz")
        earlier = None if resume else _replaceable(checkpoint)
    elif written_through(checkpoint):  # --resume reads it back: a device or pipe keeps none
        raise click.UsageError(f"--checkpoint {checkpoint} is a device or pipe, which keeps "
                               "nothing for --resume to read back: give a file")
    refuse_same_outputs({"--out": out, "--checkpoint": checkpoint, "--plot": plot})
    inputs = {"SPEC": spec, "--task": task_name}
    refuse_inputs({"--out": out, "--plot": plot}, {**inputs, "--checkpoint": checkpoint})
    refuse_inputs({"--checkpoint": checkpoint}, inputs)
    for path in (out, checkpoint, plot):  # a directory it cannot write in: said now
        if path is not None:
            check_output(path)
    if is_model(spec):  # its weights and layers would be set aside without a word
        raise click.UsageError(f"train starts a cell from fresh weights (-H, --seed) and "
                               f"cannot go on from a model's: give the cell {spec} holds "
                               f"('lstm-graph validate {spec}' names it) as SPEC")
    cell = load(spec)
    task = task_of(task_name, length)
    check_fits(cell, task, hidden_size, steps, batch, dtype)  # before the progress bar shows
    if earlier is not None:  # said once the run is known to start
        say(f"replacing {checkpoint}, the checkpoint of an earlier run at step {earlier} "
            "(--resume would go on from it)", err=True)
    with ExitStack() as shown, _stop_at_a_step_end() as received:
        on_terminal = stderr_is_terminal()  # elsewhere click hides the bar: print lines
        bars: list[ProgressBar[float]] = []

        def begin(step: int) -> None:  # the checkpoint read: a refused one shows no bar
            bars.append(shown.enter_context(click.progressbar(
                length=steps, label=f"training {cell.name} on {task.name}", file=sys.stderr,
                item_show_func=_show_loss)))
            bars[0].update(step)

        def report(step: int, loss: float) -> None:
            bars[0].update(step - bars[0].pos, current_item=loss)
            if not on_terminal and step % eval_every == 0:
                say(f"step {step}: loss {loss:.4g}", err=True)

        try:
            trained = train(cell, task, hidden_size, steps, batch, lr, clip, seed, dtype,
                            checkpoint, checkpoint_every, resume, eval_every, report,
                            stop=lambda: bool(received), begin=begin)
        except Stopped as stopped:
            terminated = received[0] == signal.SIGTERM
            say(f"\n{'terminated' if terminated else 'interrupted'} at step "
                f"{stopped.step}; the checkpoint {checkpoint} holds it (train again "
                f"with --resume to go on); --out {out} was not written", err=True)
            click.get_current_context().exit(143 if terminated else 130)
    write_npz(out, trained.weights)
    if plot is not None:
        loss_curves([(cell.name, trained)], plot, f"{cell.name} on {task.name}")
    final = float(trained.evals[-1][1]) if len(trained.evals) else float("nan")
    summary = {"cell": cell.name, "task": task.name, "steps": trained.steps,
               "held_out_loss": final, "baseline": task.baseline,
               "seconds": round(trained.seconds, 3), "resumed_from": trained.resumed_from,
               "out": str(out),
               "checkpoint": str(checkpoint), "plot": str(plot) if plot else None}
    aside = is_stdout(out) or (plot is not None and is_stdout(plot))  # not after its bytes
    if as_json:
        emit_json(summary, err=aside)
        return
    resumed = f", resumed at step {trained.resumed_from}" if trained.resumed_from else ""
    say(f"{cell.name} on {task.name}: held-out loss {final:.4g} after {trained.steps} "
        f"steps{resumed} (memoryless baseline {task.baseline:.4g}) in "
        f"{trained.seconds:.1f} s", err=aside)
    say(f"wrote {out}, the checkpoint {checkpoint}" + (f" and {plot}" if plot else ""),
        err=True)


train_command.name = "train"


def _spec_and_weights(entry: str) -> tuple[str, str | None]:
    """A CELL argument as its cell and its weights: ``lstm=w.npz`` -> ``("lstm", "w.npz")``;
    a model file alone is its cell with its own weights (``m.pt`` -> ``("m.pt", "m.pt")``),
    a built-in name or another existing file alone a cell without weights, and a path
    holding ``=`` is split where a cell and an existing weights file meet
    (``a=b/c.cell=w=1.npz``); else at the first ``=``."""
    def is_cell(text: str) -> bool:
        return text in builtin_names() or Path(text).is_file()

    if is_cell(entry):
        return entry, entry if is_model(entry) else None
    for at in (k for k, char in enumerate(entry) if char == "="):
        if is_cell(entry[:at]) and entry[at + 1:] and Path(entry[at + 1:]).exists():
            return entry[:at], entry[at + 1:]
    spec, equals, weights = entry.partition("=")
    if equals and not weights:  # lstm=$W with W unset: not random weights without a word
        raise click.UsageError(f"{inert(entry)}: no weights file after '='; give "
                               f"{inert(spec)}=FILE, or {inert(spec)} alone for random weights")
    return spec, weights or None


@main.command(epilog="Each CELL is a built-in name or a .cell path, optionally with weights: "
              "lstm=trained.npz (a path may hold '='). The loss is the sum of the last "
              "step's output.")
@click.argument("cells", nargs=-1, required=True)
@click.option("--task", "task_name", default="adding", show_default=True,
              help="Where the inputs come from: " + TASK_HELP)
@click.option("--length", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--hidden-size", "-H", type=click.IntRange(min=1), default=32, show_default=True,
              help="Hidden size of cells given without weights.")
@click.option("--batch", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--out", type=OutputPath(), required=True,
              help="The chart (.png or .svg).")
@click.option("--diagram", type=OutputPath(),
              help="Also draw one cell's diagram with the gradient each edge carried back at "
                   "--step (.svg, .png, .pdf or .dot).")
@click.option("--step", type=click.IntRange(min=1), help="The step --diagram shows (1 is the "
              "first; default: the last).")
@click.option("--style", type=click.Choice(list(STYLES)), default="cell", show_default=True,
              help="The style of --diagram.")
@click.option("--json", "as_json", is_flag=True, help="Print every gradient size as JSON.")
def gradflow(cells: tuple[str, ...], task_name: str, length: int, hidden_size: int, batch: int,
             seed: int, out: Path, diagram: Path | None, step: int | None, style: str,
             as_json: bool) -> None:
    """Chart how much gradient reaches each step back: ‖∂L/∂state_t‖ against t."""
    if len(set(cells)) != len(cells):
        raise click.UsageError("a CELL is given twice (to compare weights, give lstm=a.npz "
                               "lstm=b.npz)")
    if any(not entry.partition("=")[0] for entry in cells):
        raise click.UsageError("a CELL is empty before its '=': give a cell, as in "
                               "lstm=trained.npz")
    if diagram is not None and len(cells) != 1:
        raise click.UsageError("--diagram draws one cell: give exactly one CELL")
    if step is not None and diagram is None:
        raise click.UsageError("--step chooses the step of --diagram; give --diagram too")
    if diagram is None and given("style"):  # it was ignored
        raise click.UsageError("--style chooses the style of --diagram; give --diagram too")
    usage_chart("--out", out)
    check_chart(out)
    diagram_format = None if diagram is None else diagram.suffix.lower().lstrip(".") or "svg"
    if diagram_format is not None and diagram_format not in FORMATS:
        raise click.UsageError(f"--diagram {diagram}: a diagram is written as "
                               f"{', '.join(FORMATS)} (by its suffix), not .{diagram_format}")
    refuse_same_outputs({"--out": out, "--diagram": diagram})
    specs = [_spec_and_weights(entry) for entry in cells]
    if all(weights for _, weights in specs) and given("hidden_size"):
        raise click.UsageError("-H sets the hidden size of cells given without weights; "
                               "every CELL here has its own (their weights tell it): drop -H")
    read = {"--task": task_name, **{f"CELL {entry}": path for entry, (spec, weights) in
                                    zip(cells, specs) for path in (spec, weights) if path}}
    refuse_inputs({"--out": out, "--diagram": diagram}, read)
    for path in (out, diagram):  # a directory it cannot write in: said now
        if path is not None:
            check_output(path)
    if diagram is not None and diagram_format != "dot" and dot_program() is None:
        raise RenderError(dot_missing(  # said before the chart: gradflow has no --format
            "write the diagram as DOT text (--diagram "
            f"{'d' if is_stdout(diagram) else diagram.with_suffix('')}.dot)"))
    task = task_of(task_name, length)
    if step is not None and step > task.length:
        raise click.UsageError(f"--step {step}: the sequences have {task.length} steps")
    runners = []
    for spec, weights_path in specs:
        cell = load(spec)
        if weights_path:
            try:
                runners.append(cell.compile(input_size=task.input_size,
                                            weights=Path(weights_path), dtype="float64",
                                            warn=False))
            except SizeMismatch as err:
                if err.what != "input":
                    raise
                raise WeightsError(f"{err} (the input size of --task {task_name}, whose "
                                   f"x has {task.input_size} channels)") from None
        else:
            runners.append(cell.compile(input_size=task.input_size, hidden_size=hidden_size,
                                        seed=seed, dtype="float64"))
    batch_shape = (task.length, batch, task.input_size + task.output_size)
    for runner in runners:  # before the batch is drawn: it may be the largest of all
        (output,) = runner.cell.graph.outputs
        width = runner.cell.schedule.width(output, task.input_size, runner.hidden_size)
        require([allocation("the batch of --task and its targets (float64)", batch_shape,
                            np.float64),
                 allocation("the gradient of y", (task.length, batch, width), np.float64),
                 allocation("a state's gradients squared", (2, task.length, batch,
                                                            runner.hidden_size), np.float64),
                 *runner.allocations(task.length, batch, np.dtype(np.float64), "grad",
                                     record=True)],
                f"charting the gradient flow of {runner.cell.name} over a batch of {batch}")
    x, _ = task.sample(np.random.default_rng([seed, 3]), batch)
    flows: list[Flow] = [flow(runner, x) for runner in runners]
    names = [found.cell for found in flows]  # the cell's own name, or the argument if shared
    flows = [found if names.count(found.cell) == 1 else replace(found, cell=entry)
             for found, entry in zip(flows, cells)]
    for found in flows:  # an overflow on the way, forward or back: gaps in the chart
        for state, norms in found.states.items():
            bad = int(np.count_nonzero(~np.isfinite(norms)))
            if bad:
                say(f"note: {found.cell}: ‖∂L/∂{state}_t‖ is not finite at {bad} of "
                    f"{plural(len(norms), 'step')} (a value overflowed the dtype in the run or "
                    "on the way back); the chart leaves them out", err=True)
    gradient_flow_chart(flows, out, f"gradient flow back from the last step ({task.name})")
    if diagram is not None:
        shown = step or task.length
        sizes = {edge: float(norms[shown - 1]) for edge, norms in flows[0].edges.items()}
        sizes.update({(state, sink_id(state)): float(norms[shown - 1])
                      for state, norms in flows[0].states.items()})
        drawn = render(load(specs[0][0]), style, gradients=sizes,
                       gradient_note=f"step {shown} of {task.length}, the loss at the last; "
                       f"each sequence's norm, the mean over {plural(batch, 'sequence')}")
        save(drawn, diagram, diagram_format or "svg")
        say(f"wrote {diagram}", err=True)
    aside = is_stdout(out) or (diagram is not None and is_stdout(diagram))  # not after it
    if as_json:
        emit_json({"task": task.name, "out": str(out), "flows": {
            f.cell: {s: [float(v) for v in norms] for s, norms in f.states.items()}
            for f in flows}}, err=aside)
        return
    for found in flows:
        for state, norms in found.states.items():
            say(f"{found.cell:<14} ‖∂L/∂{state}_t‖  t=1: {norms[0]:.3g}   "
                f"t={len(norms)}: {norms[-1]:.3g}   ratio {_ratio(norms[0], norms[-1])}",
                err=aside)
    say(f"wrote {out}", err=True)
