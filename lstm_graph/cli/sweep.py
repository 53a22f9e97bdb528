"""The ``sweep`` command: train many cells on one task on a Dask cluster; a leaderboard."""

from __future__ import annotations

from pathlib import Path

import click

from lstm_graph.cli.app import (
    FiniteFloat,
    OutputPath,
    emit_json,
    is_stdout,
    main,
    refuse_same_outputs,
    say,
)
from lstm_graph.cli.describe import plural
from lstm_graph.cli.inputs import ADDRESS_HELP, dask_address, timeout_option
from lstm_graph.cli.train import TASK_HELP, task_of
from lstm_graph.distributed.jobs import CellSource, cell_source
from lstm_graph.errors import DataError
from lstm_graph.executors.backends import DTYPES
from lstm_graph.executors.prepare import usable_cpus
from lstm_graph.formats.files import check_output, json_text, refuse_inputs, write_atomic
from lstm_graph.formats.trace import digest
from lstm_graph.training.trainer import check_fits


def _numbers(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    """A comma-separated list of distinct whole numbers (``0,1,2``)."""
    try:
        numbers = [int(part) for part in value.split(",")]
    except ValueError:
        example = "32,64,128" if param.name == "hidden_sizes" else "0,1,2"
        raise click.BadParameter(f"'{value}' is not a comma-separated list of whole numbers, "
                                 f"e.g. {example}") from None
    if len(set(numbers)) != len(numbers):
        raise click.BadParameter(f"'{value}' names a number twice")
    if param.name == "hidden_sizes" and min(numbers) < 1:
        raise click.BadParameter("hidden sizes are at least 1")
    if param.name == "seeds" and min(numbers) < 0:
        raise click.BadParameter("seeds are 0 or more")
    return numbers


@main.command(epilog="Each CELL is a built-in name or a path to a .cell file; its text is "
              "sent to the workers. One Dask task per cell, hidden size and seed. The "
              "leaderboard ranks the runs by their loss on a held-out batch after the last "
              "step, beside the task's memoryless baseline.")
@click.argument("cells", nargs=-1, required=True)
@click.option("--task", "task_name", default="adding", show_default=True, help=TASK_HELP)
@click.option("--length", type=click.IntRange(min=1), default=50, show_default=True,
              help="Sequence length of the adding problem; the copy task's delay.")
@click.option("--steps", type=click.IntRange(min=1), required=True,
              help="Training steps of every run.")
@click.option("--seeds", default="0", show_default=True, callback=_numbers,
              help="Seeds, comma-separated: one run per seed.")
@click.option("--hidden-sizes", "-H", default="64", show_default=True, callback=_numbers,
              help="Hidden sizes, comma-separated: one run per size.")
@click.option("--batch", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--lr", type=FiniteFloat(min=0, min_open=True), default=2e-3,
              show_default=True, help="Adam's learning rate.")
@click.option("--clip", type=FiniteFloat(min=0), default=1.0, show_default=True,
              help="Clip the global gradient norm to this (0: no clipping).")
@click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True)
@click.option("--eval-every", type=click.IntRange(min=1), default=100, show_default=True,
              help="Measure the held-out loss every this many steps (and after the last).")
@click.option("--dask", "address", default="local", show_default=True, metavar="ADDRESS",
              help=ADDRESS_HELP)
@timeout_option
@click.option("--out", type=OutputPath(),
              help="Write the leaderboard as JSON (with every run's held-out losses).")
@click.option("--markdown", type=OutputPath(),
              help="Write the leaderboard as a Markdown table.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON instead of the table.")
def sweep(cells: tuple[str, ...], task_name: str, length: int, steps: int, seeds: list[int],
          hidden_sizes: list[int], batch: int, lr: float, clip: float, dtype: str,
          eval_every: int, address: str, dask_timeout: float, out: Path | None,
          markdown: Path | None, as_json: bool) -> None:
    """Train cells × seeds × hidden sizes on a task as Dask tasks; rank them."""
    if len(set(cells)) != len(cells):
        raise click.UsageError("a CELL is given twice")
    refuse_same_outputs({"--out": out, "--markdown": markdown})
    refuse_inputs({"--out": out, "--markdown": markdown},
                  {"--task": task_name, **{f"CELL {spec}": spec for spec in cells}})
    for path in (out, markdown):  # a directory it cannot write in: said before the sweep
        if path is not None:
            check_output(path)
    address = dask_address(address)
    from lstm_graph.distributed import sweep as sweeping
    from lstm_graph.distributed.cluster import LOCAL, connect

    sources: list[tuple[str, CellSource]] = []
    seen: dict[str, str] = {}  # digest -> the CELL given first
    for spec in cells:
        source = cell_source(spec)
        cell = source.compile()
        for warning in cell.warnings:
            say(str(warning), err=True)
        same = seen.setdefault(digest(cell.schedule), spec)
        if same != spec:  # d/my.cell and ./d/my.cell, lstm and its file: trained twice
            raise click.UsageError(f"CELL {spec} is {same} again (the same equations); "
                                   "give each cell once")
        sources.append((spec, source))
    task = task_of(task_name, length)
    settings = sweeping.Settings(steps, batch, lr, clip, dtype, eval_every)
    try:
        configs = sweeping.grid(sources, hidden_sizes, seeds)
    except DataError as err:  # too many runs: the options' product
        raise click.UsageError(str(err)) from None
    if address == LOCAL:  # its workers are this machine's, one run a core at once: what
        at_once = min(len(configs), usable_cpus())  # cannot fit is said first
        for _, source in sources:
            check_fits(source.compile(), task, max(hidden_sizes), steps, batch, dtype,
                       at_once)

    label = sweeping.labels(configs)

    def report(entry: sweeping.Entry, done: int) -> None:
        loss = f"loss {sweeping.loss_text(entry.loss)}" if entry.loss is not None else \
            f"failed: {entry.error}"
        say(f"[{done}/{len(configs)}] {label[entry.spec]} H={entry.hidden_size} seed "
            f"{entry.seed}: {loss} in {entry.seconds:.1f} s", err=True)

    say(f"sweep: {plural(len(configs), 'training run')} of {plural(steps, 'step')} "
        f"on {task.name} (on Dask: {address})", err=True)
    with connect(address, dask_timeout) as client:
        entries = sweeping.sweep(client, configs, task, settings, report)
    data = sweeping.as_json(entries, task, settings)
    title = f"{task.name} (T={task.length}), {plural(steps, 'step')}: memoryless baseline " \
            f"{task.baseline:.4g}"
    aside = any(path is not None and is_stdout(path) for path in (out, markdown))
    if as_json:  # shown first: a file that cannot be written then loses no result
        emit_json(data, err=aside)  # not after the board's bytes on stdout
    else:
        say(title, err=aside)
        say(sweeping.table(entries), err=aside)
    if out is not None:
        write_atomic(out, (json_text(data) + "\n").encode())
    if markdown is not None:
        write_atomic(markdown, sweeping.markdown(entries, title).encode())
    written = [str(path) for path in (out, markdown) if path is not None]
    if written and not as_json:
        say(f"wrote {' and '.join(written)}", err=True)
    if all(entry.loss is None for entry in entries):  # nothing ranked: the sweep failed
        say(f"every training run failed (the first: {entries[0].error})", err=True)
        click.get_current_context().exit(1)
