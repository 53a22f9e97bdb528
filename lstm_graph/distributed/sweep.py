"""A sweep: many cells trained on one task as Dask tasks, ranked on a leaderboard.

One Dask task per training run: a cell (a built-in or a user's ``.cell`` file, sent
as its text) × a seed × a hidden size, each :func:`lstm_graph.training.train` with the
same settings. A run's result is the cell's held-out loss after its last step, beside
the task's memoryless baseline: the ratio says how much of the task the cell learned
(1: nothing; 0: all of it). A run that diverges (its loss becomes NaN) or fails (any
error on its worker, out of memory included) is listed, last, with the reason, and does
not stop the others; a run whose worker dies is run again elsewhere by the scheduler
(and listed with the reason if it dies every time). Only a lost cluster stops a sweep.
"""

from __future__ import annotations

import math
import re
import statistics
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from distributed import CancelledError, Client, Future, KilledWorker, as_completed

from lstm_graph.distributed import DaskError
from lstm_graph.distributed.cluster import arrivals, one_line, result, threads
from lstm_graph.distributed.jobs import CellSource
from lstm_graph.distributed.sharded import IN_FLIGHT
from lstm_graph.errors import DataError, LstmGraphError
from lstm_graph.formats.files import finite
from lstm_graph.training import Task, train

#: The most training runs one sweep takes: its configs and results are held by the client
#: (a grid of two million was taken, and its configs alone filled the scheduler).
MAX_RUNS = 100_000


@dataclass(frozen=True)
class Settings:
    """How every run of a sweep trains (as ``lstm-graph train`` takes them)."""

    steps: int
    batch: int = 64
    lr: float = 2e-3
    clip: float = 1.0
    dtype: str = "float32"
    eval_every: int = 100


@dataclass(frozen=True)
class Config:
    """One training run: a cell, as given, as text and by its own name, with a hidden size
    and a seed."""

    spec: str
    source: CellSource
    cell: str  # the compiled cell's name, as every entry names it
    hidden_size: int
    seed: int


@dataclass(frozen=True)
class Entry:
    """One run's line on the leaderboard."""

    spec: str  # the cell as given: a built-in name or a path
    cell: str  # the cell's own name
    hidden_size: int
    seed: int
    params: int | None  # the cell's parameters (the readout not counted); None if it failed
    loss: float | None  # on the held-out batch after the last step; None if it failed
    baseline: float  # the task's memoryless baseline
    steps: int | None  # None for a run that failed before it ended
    seconds: float  # training time on its worker
    evals: list[tuple[int, float]] = field(default_factory=list)  # (step, held-out loss)
    error: str | None = None

    @property
    def ratio(self) -> float | None:
        """Held-out loss over the baseline: below 1, the cell learned something. ``None``
        for a failed run, or where the baseline is 0 (a task a memoryless guess solves).

        >>> from dataclasses import replace
        >>> entry = Entry("rnn", "rnn", 4, 0, 10, 0.5, 0.0, 1, 0.1)
        >>> entry.ratio is None, replace(entry, baseline=2.0).ratio
        (True, 0.25)
        """
        if self.loss is None or self.baseline == 0:
            return None
        return self.loss / self.baseline


def grid(specs: Sequence[tuple[str, CellSource]], hidden_sizes: Sequence[int],
         seeds: Sequence[int]) -> list[Config]:
    """Every cell × hidden size × seed, in that order; a DataError past :data:`MAX_RUNS`
    (counted before a config is made)."""
    runs = len(specs) * len(hidden_sizes) * len(seeds)
    if runs > MAX_RUNS:
        counts = [f"{n} {word}{'s' if n != 1 else ''}" for n, word in (
            (len(specs), "cell"), (len(hidden_sizes), "hidden size"), (len(seeds), "seed"))]
        raise DataError(f"{' × '.join(counts)} make {runs:,} training runs, more than the "
                        f"{MAX_RUNS:,} a sweep takes; sweep fewer at a time")
    names = {spec: source.compile().name for spec, source in specs}
    return [Config(spec, source, names[spec], hidden, seed) for spec, source in specs
            for hidden in hidden_sizes for seed in seeds]


def failed(config: Config, task: Task, error: str) -> Entry:
    """The entry of a run that ended without a result, saying why."""
    return Entry(config.spec, config.cell, config.hidden_size, config.seed, None, None,
                 task.baseline, None, 0.0, error=error)


def _reason(err: BaseException) -> str:
    """An error of ours as its message; any other with its type (``MemoryError: …``)."""
    if isinstance(err, LstmGraphError):
        return str(err)
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


def train_one(config: Config, task: Task, settings: Settings) -> Entry:
    """One run, as a worker does it; a run that diverges or fails (any error) is an
    entry with its reason."""
    try:
        trained = train(config.source.compile(), task, config.hidden_size, settings.steps,
                        settings.batch, settings.lr, settings.clip, config.seed,
                        settings.dtype, eval_every=settings.eval_every)
    except Exception as err:  # one run's failure is its entry, not the sweep's
        return failed(config, task, _reason(err))
    params = sum(int(value.size) for value in trained.weights.values())
    loss = float(trained.evals[-1][1])  # train measures it after the last step
    finite = math.isfinite(loss)
    return Entry(config.spec, config.cell, config.hidden_size, config.seed, params,
                 loss if finite else None, task.baseline, trained.steps, trained.seconds,
                 [(int(step), float(value)) for step, value in trained.evals],
                 None if finite else f"the held-out loss is {loss}")


def rank(entries: Sequence[Entry]) -> list[Entry]:
    """Best first: by held-out loss; failed runs last."""
    return sorted(entries, key=lambda e: (e.loss is None, e.loss or 0.0, e.spec,
                                          e.hidden_size, e.seed))


def sweep(client: Client, configs: Sequence[Config], task: Task, settings: Settings,
          report: Callable[[Entry, int], None] | None = None) -> list[Entry]:
    """Train every config as a Dask task on ``client``'s cluster; return the entries
    ranked. ``report`` is called with each entry as it comes, and how many have. At most
    :data:`~lstm_graph.distributed.sharded.IN_FLIGHT` runs per worker thread are out at
    once (all were submitted at once: a grid of two million runs grew the scheduler
    without bound)."""
    tag = uuid.uuid4().hex[:12]
    window = IN_FLIGHT * max(1, threads(client))
    config_of: dict[Future, Config] = {}  # the runs out now
    arrived = as_completed()
    submitted = 0

    def top_up() -> None:  # each task carries all it needs: no dependencies
        nonlocal submitted
        while submitted < len(configs) and len(config_of) < window:
            future = client.submit(train_one, configs[submitted], task, settings,
                                   key=f"lstm-graph-sweep-{tag}-{submitted}")
            config_of[future] = configs[submitted]
            arrived.add(future)
            submitted += 1

    entries = []
    top_up()
    try:
        for future in arrivals(client, arrived, config_of.keys):
            config = config_of.pop(future)
            try:
                entry = result(client, future)
            except KilledWorker:
                entry = failed(config, task, "its worker died each time it ran (out of "
                               "memory?)")
            except (CancelledError, OSError) as err:
                raise DaskError(f"the Dask cluster lost the sweep ({one_line(err)}); is the "
                                "scheduler still running?") from None
            except Exception as err:  # raised on its worker, outside train_one
                entry = failed(config, task, _reason(err))
            entries.append(entry)
            if report is not None:
                report(entry, len(entries))
            top_up()
    finally:
        client.cancel(list(config_of))
    return rank(entries)


@dataclass(frozen=True)
class Group:
    """The runs of one cell at one hidden size, over seeds."""

    spec: str
    hidden_size: int
    runs: int
    median: float | None  # of the finished runs' held-out losses
    best: float | None


def groups(entries: Sequence[Entry]) -> list[Group]:
    """Per cell and hidden size, the median and best held-out loss over seeds; best first."""
    found: dict[tuple[str, int], list[Entry]] = {}
    for entry in entries:
        found.setdefault((entry.spec, entry.hidden_size), []).append(entry)
    result = []
    for (spec, hidden), runs in found.items():
        losses = [e.loss for e in runs if e.loss is not None]
        result.append(Group(spec, hidden, len(runs), statistics.median(losses) if losses
                            else None, min(losses) if losses else None))
    return sorted(result, key=lambda g: (g.median is None, g.median or 0.0, g.spec,
                                         g.hidden_size))


_COLUMNS = ("rank", "cell", "H", "seed", "held-out loss", "× baseline", "params", "steps",
            "seconds")


def labels(entries: Sequence[Entry | Config]) -> dict[str, str]:
    """What the board calls each cell: its own name, as ``train`` says it (``mgu`` for
    ``cells/mgu.cell``), or the spec as given where two specs hold cells of one name."""
    names = {entry.spec: entry.cell for entry in entries}
    shared = {name for name in names.values() if list(names.values()).count(name) > 1}
    return {spec: spec if name in shared else name for spec, name in names.items()}


def loss_text(loss: float) -> str:
    """A loss with four significant digits, trailing zeros kept (``0.1600`` beside
    ``0.1488``, not ``0.16``)."""
    return f"{loss:#.4g}"


def _rows(entries: Sequence[Entry]) -> list[list[str]]:
    rows = []
    label = labels(entries)
    for place, entry in enumerate(entries, 1):
        loss = "failed" if entry.loss is None else loss_text(entry.loss)
        ratio = "—" if entry.ratio is None else f"{entry.ratio:.3f}"
        params, steps = ("—" if n is None else str(n) for n in (entry.params, entry.steps))
        rows.append([str(place), label[entry.spec], str(entry.hidden_size), str(entry.seed),
                     loss, ratio, params, steps, f"{entry.seconds:.1f}"])
    return rows


def table(entries: Sequence[Entry]) -> str:
    """The leaderboard as aligned text, best first; failed runs say why below it."""
    rows = [list(_COLUMNS), *_rows(entries)]
    widths = [max(len(row[k]) for row in rows) for k in range(len(_COLUMNS))]
    lines = ["  ".join(cell.ljust(w) if _COLUMNS[k] == "cell" else cell.rjust(w)
                       for k, (cell, w) in enumerate(zip(row, widths))).rstrip()
             for row in rows]
    label = labels(entries)
    lines += [f"{label[entry.spec]} H={entry.hidden_size} seed {entry.seed}: {entry.error}"
              for entry in entries if entry.error]
    return "\n".join(lines)


_MARKDOWN_ACTIVE = re.compile(r"([\\`*_\[\]|#<>&])")


def markdown_text(text: str) -> str:
    """``text`` as Markdown shows it literally, in a table cell or a list: every character
    Markdown or HTML would act on escaped (``|`` would end a cell, ``<b>`` would be a tag),
    line breaks as spaces.

    >>> markdown_text("a|b <i>x</i> & *y*")
    'a\\\\|b &lt;i&gt;x&lt;/i&gt; &amp; \\\\*y\\\\*'
    """
    entities = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}
    flat = " ".join(text.splitlines())
    return _MARKDOWN_ACTIVE.sub(lambda m: entities.get(m.group(1), "\\" + m.group(1)), flat)


def markdown(entries: Sequence[Entry], title: str) -> str:
    """The leaderboard as a Markdown table under a heading, every text escaped
    (:func:`markdown_text`)."""
    align = ["---" if column == "cell" else "---:" for column in _COLUMNS]
    lines = [f"## {markdown_text(title)}", "", "| " + " | ".join(_COLUMNS) + " |",
             "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(markdown_text(cell) for cell in row) + " |"
              for row in _rows(entries)]
    label = labels(entries)
    lines += [f"\n- {markdown_text(label[entry.spec])} H={entry.hidden_size} seed "
              f"{entry.seed}: {markdown_text(entry.error)}"
              for entry in entries if entry.error]
    return "\n".join(lines) + "\n"


def as_json(entries: Sequence[Entry], task: Task, settings: Settings) -> dict[str, object]:
    """The leaderboard, the per-cell summary, the task and the settings, for ``--out``
    (valid JSON: a number that is not finite is ``None``, :func:`finite`)."""
    ranked = [{**asdict(entry), "rank": place, "ratio": entry.ratio,
               "evals": [list(pair) for pair in entry.evals]}
              for place, entry in enumerate(entries, 1)]
    data: dict[str, object] = {"task": {"name": task.name, "length": task.length, "loss": task.loss,
                     "baseline": task.baseline},
            "settings": asdict(settings), "leaderboard": ranked,
            "by_cell": [asdict(group) for group in groups(entries)]}
    return {key: finite(value) for key, value in data.items()}
