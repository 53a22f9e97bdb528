"""The ``from-torch`` command: a PyTorch cell module as a ``.cell`` file and its weights."""

from __future__ import annotations

from pathlib import Path

import click

from lstm_graph.cli.app import (
    InputPath,
    OutputPath,
    emit_json,
    is_stdout,
    main,
    refuse_same_outputs,
    say,
)
from lstm_graph.cli.describe import plural
from lstm_graph.formats.files import refuse_inputs, write_atomic, write_npz, written_through
from lstm_graph.frontends.from_torch import (
    CHECK_STEPS,
    ConvertError,
    check_states,
    convert,
    parse_source,
)


@main.command("from-torch", epilog="SOURCE is FILE.py:CLASS: a module whose "
              "CLASS(input_size, hidden_size) is a cell, forward(x_t, state) -> (out, "
              "new_state), state one tensor (one name in --states) or a tuple in the order of "
              "--states. FILE.py is imported and run, as Python does: convert only code you "
              "trust. The state dict is read with torch.load(weights_only=True). The cell is "
              f"run against the module over {CHECK_STEPS} steps before anything is written.")
@click.argument("source")
@click.option("--input-size", "-I", type=click.IntRange(min=1), required=True,
              help="The input size the class is made with.")
@click.option("--hidden-size", "-H", type=click.IntRange(min=1), required=True,
              help="The hidden size the class is made with.")
@click.option("--states", required=True,
              help="The states the forward's state holds, in order: h,c (names for the cell).")
@click.option("--state-dict", type=InputPath(),
              help="Trained weights (a state dict .pt); without it, the class's own "
                   "initialisation.")
@click.option("--seed", type=click.IntRange(0, 2**64 - 1),
              help="Seed of PyTorch's generator for the class's own initialisation (without "
                   "--state-dict; default 0): the same command writes the same weights.")
@click.option("--out", type=OutputPath(), required=True, help="The .cell file to write.")
@click.option("--weights-out", type=OutputPath(), required=True,
              help="The weights to write (.npz, in the cell's names).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def from_torch(source: str, input_size: int, hidden_size: int, states: str,
               state_dict: Path | None, seed: int | None, out: Path, weights_out: Path,
               as_json: bool) -> None:
    """Convert a PyTorch cell (traced with torch.fx) into a .cell file and its weights."""
    if weights_out.suffix.lower() != ".npz" and not written_through(weights_out) \
            and not is_stdout(weights_out):
        raise click.UsageError(f"--weights-out {weights_out}: the weights are written as "
                               ".npz; name it .npz")
    if seed is not None and state_dict is not None:  # it would draw weights then replaced
        raise click.UsageError("--seed draws the class's own initialisation, and --state-dict "
                               "replaces it: give one of them")
    try:  # how SOURCE and --states are written: wrong usage, before any file is read
        path, class_name = parse_source(source)
        check_states(states.split(","))
    except ConvertError as err:
        raise click.UsageError(str(err)) from None
    refuse_inputs({"--out": out, "--weights-out": weights_out},
                  {"FILE.py": path, "--state-dict": state_dict})
    refuse_same_outputs({"--out": out, "--weights-out": weights_out})
    converted = convert(path, class_name, input_size, hidden_size, states.split(","),
                        state_dict, out, 0 if seed is None else seed)
    cell = converted.cell
    write_npz(weights_out, converted.weights)
    write_atomic(out, converted.text.encode("utf-8"))
    schedule = cell.schedule
    aside = is_stdout(out) or is_stdout(weights_out)  # not after the written bytes
    if as_json:
        emit_json({"cell": cell.name, "out": str(out), "weights": str(weights_out),
                   "stages": [list(stage) for stage in schedule.stages],
                   "states": list(cell.graph.states), "output": next(iter(cell.graph.outputs)),
                   "parameters": {k: list(v.shape) for k, v in converted.weights.items()},
                   "checked_steps": CHECK_STEPS, "largest_difference": converted.error},
                  err=aside)
        return
    say(f"wrote {out} and {weights_out}", err=True)
    say(f"{class_name} ({path.name}) -> cell {cell.name}: "
        f"{plural(len(cell.graph.assignments), 'assignment')} in "
        f"{plural(len(schedule.stages), 'stage')}, "
        f"states {', '.join(cell.graph.states)}, output "
        f"{next(iter(cell.graph.outputs))}, {len(converted.weights)} parameters", err=aside)
    say("stages: " + " | ".join(", ".join(stage) for stage in schedule.stages), err=aside)
    say(f"checked: the cell equals the module stepped over {CHECK_STEPS} steps "
        f"(largest difference {converted.error:.2g})", err=aside)
