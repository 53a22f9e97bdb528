"""What every command that runs a cell reads: the cell, ``x``, weights and the initial state.

``run``, ``trace`` and ``grad`` share these options (:func:`run_options`), how they are
read (:func:`prepare`), how a long run shows its progress (:func:`with_progress`), and
the options that send the run to a Dask cluster instead (:func:`dask_options`).
Everything is sized before it is read or made: ``x`` and the initial states by
their headers, the run by the arrays it will allocate
(:func:`lstm_graph.checks.run_allocations`); work that would not fit in memory
is refused before it starts (:mod:`lstm_graph.formats.memory`). A run on Dask
memory-maps ``x`` instead (``mapped``), and its shards are sized to fit.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
import numpy as np

from lstm_graph.cell import Cell, Runner
from lstm_graph.checks import REAL_KINDS, check_finite, check_state, convert, unread
from lstm_graph.cli.app import (
    FiniteFloat,
    InputPath,
    given,
    load,
    load_model_spec,
    say,
    stderr_is_terminal,
)
from lstm_graph.distributed import DaskError
from lstm_graph.distributed.jobs import CellSource, cell_source
from lstm_graph.errors import DataError, SizeMismatch, install_hint
from lstm_graph.executors import registry
from lstm_graph.executors.backends import BACKENDS, DTYPES
from lstm_graph.executors.contract import Progress
from lstm_graph.executors.registry import EXECUTORS
from lstm_graph.formats.arrays import StoredArray, is_npy, open_npy, open_npz
from lstm_graph.formats.memory import allocation, require
from lstm_graph.layers import DIRECTIONS, MAX_LAYERS, check_lengths
from lstm_graph.models import is_model

F = TypeVar("F", bound=Callable[..., Any])
#: Steps from which a run on a terminal shows a progress bar.
PROGRESS_FROM = 1000

#: T and B of --sample; its I is the cell's input size (-I, else the weights', else this).
SAMPLE_STEPS, SAMPLE_BATCH, SAMPLE_INPUT = 20, 2, 8


def stored_array(path: Path, what: str, key: str) -> StoredArray:
    """An array by its header: an ``.npy``, or from an ``.npz`` by ``key`` (or its only
    array). Nothing is read yet (:meth:`StoredArray.read`); nothing is ever unpickled."""
    if path.suffix.lower() != ".npz":
        return open_npy(path, what)
    if is_npy(path):  # open_npz's hint (an .npz of arrays by name) is not this option's
        raise DataError(f"{path}: is an .npy file (one array) named .npz; name it "
                        f"{path.with_suffix('.npy').name}, or save {what} with numpy.savez")
    arrays = open_npz(path)
    if key in arrays:
        return arrays[key]
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    raise DataError(f"{path}: no array named '{key}' for {what} (it holds "
                    f"{', '.join(arrays) or 'nothing'})")


def read_array(path: Path, what: str, key: str, mapped: bool = False) -> np.ndarray:
    """An array from .npy, or from .npz by ``key`` (or its only array), once it fits in
    memory (see :func:`stored_array`); with ``mapped``, see :func:`load_stored`."""
    return load_stored(stored_array(path, what, key), mapped)


def load_stored(stored: StoredArray, mapped: bool = False) -> np.ndarray:
    """The array ``stored`` holds, read once it fits in memory. With ``mapped``, an ``.npy``
    is memory-mapped (read-only) instead, to be read a part at a time (a run on Dask reads
    a shard at a time); a member of an ``.npz`` is always read whole."""
    if not mapped or stored.member is not None or stored.nbytes == 0:
        return stored.read()
    try:
        return np.asarray(np.load(stored.path, mmap_mode="r", allow_pickle=False))
    except (OSError, ValueError) as err:
        raise DataError(f"{stored.path}: cannot map {stored.name} ({err})") from None


def run_options(command: F) -> F:
    """The options of a run's inputs, shared by every command that runs a cell."""
    options = [
        click.option("--input", "input_path", type=InputPath(),
                     help="x as .npy, time-major (T, B, I) or (T, I); or .npz holding x."),
        click.option("--sample", is_flag=True, help="Run on a seeded random input of shape "
                     f"({SAMPLE_STEPS}, {SAMPLE_BATCH}, I) instead of --input."),
        click.option("--input-size", "-I", type=click.IntRange(min=1),
                     help="I of --sample  [default: the weights', else "
                          f"{SAMPLE_INPUT}]"),
        click.option("--weights", type=InputPath(),
                     help=".npz in our names (see 'params'), PyTorch .pt/.pth state dict, or "
                          ".onnx."),
        click.option("--hidden-size", "-H", type=click.IntRange(min=1),
                     help="Hidden size H (needed without --weights)."),
        click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Seed for random weights (without --weights) and for --sample."),
        click.option("--backend", type=click.Choice(BACKENDS), default="numpy",
                     show_default=True),
        click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True),
        click.option("--state", "state_path", type=InputPath(),
                     help="Initial states as .npz (one array per state, e.g. from an earlier "
                          "run's --out)."),
        click.option("--executor", type=click.Choice(EXECUTORS), default=EXECUTORS[0],
                     show_default=True,
                     help="plan: the fastest available (native C step where a C compiler is "
                          "found, else the NumPy plan; cuda on --backend cupy); native, numpy, "
                          "cuda: force one; reference: the interpreter that defines the "
                          "semantics."),
        click.option("--allow-nonfinite", is_flag=True,
                     help="Run even if x or a state (for grad, --grad-output too) holds "
                          "NaN or infinity."),
        click.option("--layers", type=click.IntRange(min=1, max=MAX_LAYERS),
                     help="Stacked layers: layer k > 1 reads layer k-1's output  [default: "
                          "what the weights hold, else 1]"),
        click.option("--direction", type=click.Choice(DIRECTIONS),
                     help="forward, reverse (the sequence from its end), or bidirectional "
                          "(both; y holds the forward half, then the reverse half)  "
                          "[default: what the weights hold, else forward]"),
        click.option("--batch-first", is_flag=True,
                     help="x is (B, T, I) and y (B, T, ·), as PyTorch's batch_first=True."),
        click.option("--lengths", "lengths_path",
                     type=InputPath(),
                     help="Each sequence's length as .npy (integers, shape (B,)), or .npz "
                          "holding 'lengths': y is zero after it and the final state is the "
                          "one at its last step."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@dataclass
class Prepared:
    """A cell bound to its weights, and the run's input, initial state and lengths."""

    cell: Cell
    runner: Runner
    x: np.ndarray
    state: dict[str, np.ndarray] | None
    allow_nonfinite: bool
    lengths: np.ndarray | None = None
    #: The cells' text, for a run sharded on Dask (set by :func:`prepare`).
    sources: tuple[CellSource, ...] = ()
    #: The file ``x`` was read from (None for ``--sample``), to name it in errors.
    x_file: Path | None = None


def check_usage(model: bool, input_path: Path | None, sample: bool, input_size: int | None,
                weights: Path | None, hidden_size: int | None) -> None:
    """What :func:`run_options` needs together, checked before any file is read (exit 2).
    ``model``: SPEC is a model file, which holds the weights and sizes."""
    if (input_path is None) == (not sample):
        raise click.UsageError("give exactly one of --input FILE and --sample")
    if input_size is not None and not sample:
        raise click.UsageError("--input-size is the I of --sample; --input's last axis is I")
    seeded = given("seed")
    if seeded and not sample and (model or weights is not None):  # it would draw nothing
        raise click.UsageError("--seed draws random weights and --sample's x; here "
                               f"{'SPEC' if model else '--weights'} gives the weights and "
                               "--input the x: drop --seed")
    if model:
        for value, what in ((weights, "--weights"), (hidden_size, "--hidden-size"),
                            (input_size, "--input-size")):
            if value is not None:
                raise click.UsageError(f"SPEC is a model file, which holds its weights and "
                                       f"sizes: drop {what} (or name a cell as SPEC and pass "
                                       "the model as --weights)")
        return
    if weights is None and hidden_size is None:
        raise click.UsageError("give --hidden-size (or --weights, which tell it)")


def prepare(spec: str, input_path: Path | None, sample: bool, input_size: int | None,
            weights: Path | None, hidden_size: int | None, seed: int, backend: str, dtype: str,
            state_path: Path | None, executor: str, allow_nonfinite: bool, layers: int | None,
            direction: str | None, batch_first: bool, lengths_path: Path | None,
            work: str = "run", mapped: bool = False) -> Prepared:
    """Read everything :func:`run_options` names, checked; usage errors exit 2. ``work``
    ("run", "trace" or "grad") says what will be done, so what it holds is counted too.
    SPEC may be a model file (:mod:`lstm_graph.models`): its cell, stack, weights, and the
    initial states and lengths it stores (which ``--state`` and ``--lengths`` replace).
    With ``mapped``, see :func:`bind`."""
    model = is_model(spec)
    check_usage(model, input_path, sample, input_size, weights, hidden_size)
    problem = registry.mismatch(executor, backend)
    if problem is not None:
        raise click.UsageError(problem)
    bound = compile_spec(spec, input_path, input_size, weights, hidden_size, seed, backend,
                         dtype, executor, layers, direction, batch_first)
    prepared = bind(bound.runner, input_path, seed, state_path, allow_nonfinite, lengths_path,
                    work, mapped, bound.state, bound.lengths)
    prepared.sources = bound.sources
    return prepared


@dataclass(frozen=True)
class Bound:
    """A SPEC compiled: the runner, its cells' text (what Dask workers compile), and the
    initial states and sequence lengths a model file stores (empty and None for a cell)."""

    runner: Runner
    sources: tuple[CellSource, ...]
    state: dict[str, np.ndarray]
    lengths: np.ndarray | None


def compile_spec(spec: str, input_path: Path | None, input_size: int | None,
                 weights: Path | None, hidden_size: int | None, seed: int, backend: str,
                 dtype: str, executor: str, layers: int | None, direction: str | None,
                 batch_first: bool) -> Bound:
    """The runner SPEC and the options ask for (see :class:`Bound`)."""
    if is_model(spec):
        model = load_model_spec(spec)
        stack = model.stack
        for what, asked, held in (("--layers", layers, stack.layers),
                                  ("--direction", direction, stack.direction)):
            if asked is not None and asked != held:
                raise click.UsageError(f"{spec} holds {stack.describe()}; drop {what} "
                                       f"{asked}")
        runner = model.compile(backend, dtype, executor, batch_first or model.batch_first,
                               warn=False)  # its notes said at load, its states used
        for note in runner.notes:
            say(note, err=True)
        return Bound(runner, tuple(CellSource(*source) for source in model.sources),
                     model.state, model.lengths)
    cell = load(spec)
    if input_size is None and weights is None:  # with weights, they tell it
        found = None if input_path is None else stored_array(input_path, "x", "x").shape
        input_size = found[-1] if found else SAMPLE_INPUT
    try:
        runner = cell.compile(input_size=input_size, hidden_size=hidden_size, backend=backend,
                              dtype=dtype, weights=weights, seed=seed, executor=executor,
                              layers=layers, direction=direction, batch_first=batch_first,
                              warn=False)  # its notes said here, in order
    except SizeMismatch as err:  # --layers or --direction against what --weights hold
        if err.what not in ("layers", "direction"):
            raise
        asked = layers if err.what == "layers" else direction
        raise click.UsageError(f"{weights} holds {err.held}; drop --{err.what} {asked}") \
            from None
    for note in runner.notes:
        say(note, err=True)
    return Bound(runner, (cell_source(spec),), {}, None)


def bind(runner: Runner, input_path: Path | None, seed: int, state_path: Path | None,
         allow_nonfinite: bool, lengths_path: Path | None, work: str = "run",
         mapped: bool = False, stored_state: dict[str, np.ndarray] | None = None,
         stored_lengths: np.ndarray | None = None) -> Prepared:
    """The run's input, initial states and lengths for ``runner``, sized before they are
    read. With ``mapped`` (a run sharded on Dask), an ``.npy`` ``x`` is memory-mapped rather
    than read, and the whole run is not weighed against this machine's memory: its shards
    are (:mod:`lstm_graph.distributed.sharded`). ``stored_state`` and ``stored_lengths``
    (a model file's) are used where ``--state`` and ``--lengths`` do not give them: a
    ``--state`` file that holds some states replaces those, the model's others stay."""
    cell = runner.cell
    stored = None if input_path is None else stored_array(input_path, "x", "x")
    batch_axis = 0 if runner.batch_first else 1
    if stored is not None:
        if len(stored.shape) not in (2, 3):
            layout = "(B, T, I)" if runner.batch_first else "(T, B, I)"
            raise DataError(f"{input_path}: x has shape {stored.shape}; expected {layout} or "
                            "(T, I)")
        if stored.dtype.kind not in REAL_KINDS:
            raise DataError(f"{input_path}: x has dtype {stored.dtype}; it must hold real "
                            "numbers")
        if stored.shape[-1] != runner.input_size:
            raise DataError(f"{input_path}: x has shape {stored.shape}: its last axis is "
                            f"{stored.shape[-1]}, but the cell's input size I is "
                            f"{runner.input_size}")
        if stored.dtype != runner.dtype:
            say(f"note: x is {stored.dtype}; computing in {runner.dtype.name} (see "
                "--dtype)", err=True)
    sample_shape = (SAMPLE_BATCH, SAMPLE_STEPS, runner.input_size) if runner.batch_first \
        else (SAMPLE_STEPS, SAMPLE_BATCH, runner.input_size)
    shape = stored.shape if stored is not None else sample_shape
    x_dtype = stored.dtype if stored is not None else np.dtype(np.float64)
    steps = shape[0] if len(shape) == 2 or not runner.batch_first else shape[1]
    batch = shape[batch_axis] if len(shape) == 3 else 1
    states = read_states(state_path, runner) if state_path is not None else {}
    for name, array in states.items():
        want = runner.state_shape(name, None if len(shape) == 2 else batch)
        if array.shape != want:
            raise DataError(f"{state_path}: state '{name}' has shape {array.shape}, expected "
                            f"{want}")
    lengths = None if lengths_path is None else read_lengths(lengths_path, batch, steps)
    if not mapped:
        require([allocation("x", shape, x_dtype),
                 *runner.allocations(steps, batch, x_dtype, work),
                 *(allocation(f"state '{name}'", a.shape, a.dtype) for name, a in states.items())],
                "this run", str(input_path or ""))
    x = load_stored(stored, mapped) if stored is not None else \
        np.random.default_rng(seed).standard_normal(shape).astype(runner.dtype)
    state = {name: array.read() for name, array in states.items()} if state_path else None
    if state is not None and not allow_nonfinite:
        for name, value in state.items():
            want = runner.state_shape(name, None if len(shape) == 2 else batch)
            try:  # here too, to name the file
                check_state({name: value}, {name: None}, batch, want[-1], False, False, np,
                            runner.dtype, want)
            except DataError as err:
                raise DataError(f"{state_path}: {err}") from None
    kept = {name: value for name, value in (stored_state or {}).items()
            if state is None or name not in state}
    if kept:  # --state replaces the stored states it holds; the others stay the model's
        if state:
            say(f"note: {_listed(kept)} from the model, {_listed(state)} from {state_path}",
                err=True)
        axis = 1 if not runner.stack.single else 0
        fitted = _fitted(kept, "initial states", batch, axis, "--state" if state is None
                         else f"--state with {', '.join(kept)} in it too")
        if len(shape) == 2:  # one sequence, x of (T, I): its states have no batch axis
            fitted = {name: np.take(value, 0, axis=axis) for name, value in fitted.items()}
        state = {**fitted, **(state or {})}
    if lengths is None and stored_lengths is not None:
        lengths = _fitted({"lengths": stored_lengths}, "sequence lengths", batch, 0,
                          "--lengths")["lengths"]
        try:
            check_lengths(lengths, batch, steps)
        except DataError as err:
            raise DataError(f"the model's stored sequence lengths do not fit x: {err}; give "
                            "--lengths") from None
    if stored is not None and not mapped and not allow_nonfinite:
        try:  # here, to name the file (the runner checks x again, as it checks any x)
            check_finite(x, convert(x, np, runner.dtype), "x", runner.dtype, np,
                         "clean the input",
                         unread(lengths, steps, x.ndim, runner.batch_first))
        except DataError as err:
            raise DataError(f"{input_path}: {err}") from None
    return Prepared(cell, runner, x, state, allow_nonfinite, lengths, x_file=input_path)


def _fitted(arrays: dict[str, np.ndarray], what: str, batch: int, axis: int, option: str
            ) -> dict[str, np.ndarray]:
    """A model's stored arrays, refused when they are for another number of sequences."""
    for name, value in arrays.items():
        if value.shape[axis] != batch:
            raise DataError(f"the model stores {what} for {value.shape[axis]} sequence"
                            f"{'s' if value.shape[axis] != 1 else ''} ({name} of shape "
                            f"{value.shape}), and x holds {batch}; give {option}")
    return arrays


def _listed(states: dict[str, np.ndarray]) -> str:
    """``state 'c'`` or ``states 'c', 'h'``: the names of some initial states, in a note."""
    names = ", ".join(f"'{name}'" for name in states)
    return f"state{'s' if len(states) > 1 else ''} {names}"


def read_states(path: Path, runner: Runner) -> dict[str, StoredArray]:
    """``--state``: one array per state by its header (an earlier run's ``--out`` also holds
    ``y``, which is left); any other name is refused, naming the states expected."""
    arrays = open_npz(path)
    states = runner.cell.graph.states
    unknown = [name for name in arrays if name not in states and name != "y"]
    if unknown:
        raise DataError(f"{path}: holds {', '.join(unknown)}, which "
                        f"{'is not a state' if len(unknown) == 1 else 'are not states'} of "
                        f"cell '{runner.cell.name}'; its states are {', '.join(states)} "
                        f"(each of shape {_shape_words(runner)})")
    found = {name: array for name, array in arrays.items() if name in states}
    for name, array in found.items():
        if array.dtype.kind not in REAL_KINDS:
            raise DataError(f"{path}: state '{name}' has dtype {array.dtype}; states are real "
                            "numbers")
    return found


def _shape_words(runner: Runner) -> str:
    return "(B, H)" if runner.stack.single else f"(L·D = {len(runner.units)}, B, H)"


def read_lengths(path: Path, batch: int, steps: int) -> np.ndarray:
    """``--lengths``: integers of shape ``(B,)``, each from 1 to the ``steps`` of ``x``."""
    stored = stored_array(path, "lengths", "lengths")
    if stored.dtype.kind not in "iuf":  # whole floats pass, as in the API (check_lengths)
        raise DataError(f"{path}: lengths has dtype {stored.dtype}; give whole numbers of "
                        "steps (int32 or int64)")
    if stored.shape != (batch,):
        raise DataError(f"{path}: lengths has shape {stored.shape}, but x holds {batch} "
                        f"sequence{'s' if batch != 1 else ''}: give one length per sequence, "
                        f"shape ({batch},)")
    try:
        return check_lengths(stored.read(), batch, steps)
    except DataError as err:
        raise DataError(f"{path}: {err}") from None


def progress_steps(prepared: Prepared) -> int:
    """The steps a run of ``prepared`` reports: every step of every layer and direction."""
    x, runner = prepared.x, prepared.runner
    steps = x.shape[1] if runner.batch_first and x.ndim == 3 else x.shape[0]
    return int(steps) * len(runner.units)


def with_progress(steps: int, call: Callable[[Progress | None], Any]) -> Any:
    """``call(progress)``, with a progress bar on a terminal for long sequences."""
    if stderr_is_terminal() and steps >= PROGRESS_FROM:
        with click.progressbar(length=steps, label="steps", file=sys.stderr) as bar:
            return call(bar.update)
    return call(None)


@dataclass(frozen=True)
class OnDask:
    """Where ``--dask`` sends a run, and how it is cut up."""

    address: str  # "local" or a scheduler's address, checked
    shard_size: int | None  # sequences per shard (None: chosen from the sizes)
    timeout: float  # seconds to reach the scheduler and to wait for a worker


def dask_address(value: str) -> str:
    """``--dask``'s value checked (exit 2 when malformed); an error (exit 1) without Dask."""
    try:
        from lstm_graph.distributed.cluster import check_address
    except ImportError as err:
        raise DaskError(f"running on Dask (--dask, sweep) needs Dask, which is not installed "
                        f"here ({err}): {install_hint('dask')}") from None
    try:
        return check_address(value)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="'--dask'") from None


ADDRESS_HELP = ("'local' (a cluster of worker processes on this machine, one a core, on "
                "127.0.0.1) or a scheduler's address, tcp://HOST:PORT.")
DASK_HELP = "Shard the batch across a Dask cluster: " + ADDRESS_HELP
TIMEOUT_HELP = ("Seconds, in all, to reach the Dask scheduler and find a worker there "
                "that runs lstm-graph.")
#: The longest ``--dask-timeout``: an hour (Dask's timers need a finite number).
MAX_TIMEOUT = 3600.0


def timeout_option(command: F) -> F:
    """``--dask-timeout S``: more than 0, at most :data:`MAX_TIMEOUT` seconds."""
    return click.option("--dask-timeout", type=FiniteFloat(min=0, max=MAX_TIMEOUT,
                                                           min_open=True),
                        default=10.0, show_default=True, help=TIMEOUT_HELP)(command)


def dask_options(command: F) -> F:
    """``--dask ADDRESS``, ``--shard-size N``, ``--dask-timeout S``; the command receives
    them as one argument, ``on_dask`` (an :class:`OnDask`, or ``None`` without ``--dask``)."""

    @functools.wraps(command)
    def with_dask(*args: Any, dask: str | None, shard_size: int | None, dask_timeout: float,
                  **kwargs: Any) -> Any:
        if dask is None:
            if shard_size is not None:
                raise click.UsageError("--shard-size shards a run on Dask: give --dask too")
            if given("dask_timeout"):  # it was ignored
                raise click.UsageError("--dask-timeout bounds the wait for a Dask cluster: "
                                       "give --dask too")
            return command(*args, on_dask=None, **kwargs)
        if kwargs.get("backend", "numpy") != "numpy":
            raise click.UsageError("--dask runs on the numpy backend only: workers get NumPy "
                                   "arrays; drop --backend or --dask")
        return command(*args, on_dask=OnDask(dask_address(dask), shard_size, dask_timeout),
                       **kwargs)

    options = [
        click.option("--dask", metavar="ADDRESS", help=DASK_HELP),
        click.option("--shard-size", type=click.IntRange(min=1),
                     help="Sequences per Dask task (default: what fits in 512 MiB of the "
                          "worker's arrays, and a whole number of shards per worker)."),
        timeout_option,
    ]
    wrapped: Any = with_dask
    for option in reversed(options):
        wrapped = option(wrapped)
    return wrapped  # type: ignore[no-any-return]
