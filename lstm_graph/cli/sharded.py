"""``run``, ``trace`` and ``grad`` with ``--dask``: the batch sharded across a Dask cluster.

Each command reads its inputs as its plain form does (:func:`prepare`), except that
``x`` (and ``grad``'s ``--grad-output``) is memory-mapped, not read; it sends the cell's
text and the weights to the workers and writes the same ``.npz``, chunk by chunk
(:func:`execute_on`). ``run``, ``trace`` and ``grad`` call these and report as they
always do, with how the work was spread (:func:`say_spread`, :func:`summary`). Imported
only when ``--dask`` is given: it needs Dask.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from lstm_graph.cli.app import say, stderr_is_terminal
from lstm_graph.cli.describe import plural
from lstm_graph.cli.inputs import OnDask, Prepared
from lstm_graph.cli.inputs import prepare as prepare_inputs
from lstm_graph.distributed.cluster import connect
from lstm_graph.distributed.jobs import Job, job_of
from lstm_graph.distributed.sharded import Outcome, execute


def prepare(command: str, spec: str, inputs: dict[str, Any]) -> tuple[Prepared, Job]:
    """The command's inputs, ``x`` memory-mapped, and the job its workers run."""
    prepared = prepare_inputs(spec, **inputs, work=command, mapped=True)
    return prepared, job_of(command, prepared.sources, prepared.runner)


def execute_on(prepared: Prepared, job: Job, on_dask: OnDask, out: Path, grad_y: Any = None,
               measure: tuple[str, ...] = (), grad_file: Path | None = None) -> Outcome:
    """Run ``job`` on the cluster ``on_dask`` names, sharded; write ``out``. On a terminal,
    a progress bar counts the sequences written. ``grad_file``: the file ``grad_y`` came
    from (it and ``x``'s name the errors about their numbers, as a plain run's do)."""
    x = prepared.x
    files = {what: str(path) for what, path in (("x", prepared.x_file),
                                                ("grad_output", grad_file)) if path is not None}
    with connect(on_dask.address, on_dask.timeout) as client:
        if not stderr_is_terminal():
            return execute(client, job, x, out, prepared.state, grad_y, on_dask.shard_size,
                           measure, prepared.allow_nonfinite, lengths=prepared.lengths,
                           files=files)
        sequences = 1 if x.ndim == 2 else x.shape[0 if job.batch_first else 1]
        with click.progressbar(length=sequences, label="sequences", file=sys.stderr) as bar:
            return execute(client, job, x, out, prepared.state, grad_y, on_dask.shard_size,
                           measure, prepared.allow_nonfinite, bar.update, prepared.lengths,
                           files)


def summary(on_dask: OnDask, outcome: Outcome) -> dict[str, Any]:
    """How the work was spread, for ``--json``."""
    return {"address": on_dask.address, "workers": outcome.workers, "shards": outcome.shards,
            "shard_size": outcome.shard_size}


def say_spread(on_dask: OnDask, outcome: Outcome) -> None:
    """How the work was spread, on stderr."""
    say(f"on Dask ({on_dask.address}): {plural(outcome.shards, 'shard')} of up to "
        f"{plural(outcome.shard_size, 'sequence')}, "
        f"{plural(outcome.workers, 'worker thread')}", err=True)
