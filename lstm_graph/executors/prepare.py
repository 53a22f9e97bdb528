"""What the compiled plans do before the time loop, and the weights they pack.

Shared by the NumPy, native and CUDA plans (the reference interpreter does
none of it):

- :func:`static_values`: every value that reads only the input and constants,
  for all steps at once;
- :func:`hoist`: the hoisted GEMM ``S = X·W (+ b)`` over all ``T·B`` rows for
  every dynamic linear's static operands (see
  :mod:`~lstm_graph.executors.layout`);
- :func:`pack_hoisted`, :func:`pack_group`: the weights of those GEMMs,
  stacked in the layout's column order.

Everything here is written against the array namespace ``xp`` (NumPy or CuPy).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lstm_graph.errors import LstmGraphWarning
from lstm_graph.executors.backends import to_numpy
from lstm_graph.executors.layout import Layout
from lstm_graph.ir import NodeKind
from lstm_graph.schedule import Schedule

Array = Any


#: The values of $LSTM_GRAPH_THREADS already said to be no number of threads (once each).
_SAID_THREADS: set[str] = set()


def usable_threads() -> int:
    """Threads a compiled plan may use: ``$LSTM_GRAPH_THREADS``, else ``$OMP_NUM_THREADS``
    (the convention PyTorch and the BLAS libraries follow), where a positive number;
    else at most 8; never more than :func:`usable_cpus` (with a warning where
    ``$LSTM_GRAPH_THREADS``, ours alone, asks for more). The plans' threads meet at a
    barrier every step: one more than there are CPUs to run it waits there for another
    to be given a CPU (2 threads on one CPU: a run of 64 steps of 7 sequences, H = 129,
    took 1.8 ms, 7.6 before a waiting thread yielded as soon as it saw the other not
    running, against one thread's 0.83; AMD EPYC Zen 4)."""
    cpus = usable_cpus()
    for variable in ("LSTM_GRAPH_THREADS", "OMP_NUM_THREADS"):
        given = os.environ.get(variable, "")
        try:
            wanted = int(given or "0")
        except ValueError:
            wanted = 0
        if given and wanted < 1 and variable == "LSTM_GRAPH_THREADS" \
                and given not in _SAID_THREADS:  # ours: said (OMP's: other programs')
            _SAID_THREADS.add(given)
            warnings.warn(LstmGraphWarning(
                f"LSTM_GRAPH_THREADS={given!r} is not a number of threads of 1 or more; it "
                "is ignored"), stacklevel=2)
        if wanted > 0:
            if wanted > cpus and variable == "LSTM_GRAPH_THREADS":
                warnings.warn(LstmGraphWarning(
                    f"LSTM_GRAPH_THREADS={wanted}, but this process may use {cpus} "
                    f"CPU{'s' * (cpus > 1)} (its affinity and CPU quota): running on {cpus} "
                    "thread" + "s" * (cpus > 1)), stacklevel=2)
            return min(wanted, cpus)
    return min(cpus, 8)


#: Where Linux mounts the control groups, and where it says which this process is in.
CGROUPS, MEMBERSHIP = Path("/sys/fs/cgroup"), Path("/proc/self/cgroup")


def usable_cpus(root: Path = CGROUPS, membership: Path = MEMBERSHIP) -> int:
    """The CPUs this process may run on, fewer where its control groups allow it less CPU
    time than that (a container's ``--cpus``: :func:`cpu_quota`, rounded up: the quota
    stops all of a group's threads at once when it is spent, so none waits at a barrier
    for another that the quota stopped)."""
    cpus = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count()) or 1
    quota = cpu_quota(root, membership)
    return max(1, min(cpus, math.ceil(quota))) if quota else cpus


def cpu_quota(root: Path = CGROUPS, membership: Path = MEMBERSHIP) -> float | None:
    """The CPUs' worth of time this process's control groups allow it: the smallest quota
    of its group and the groups above it (cgroup v2's ``cpu.max``, v1's
    ``cpu.cfs_quota_us`` over ``cpu.cfs_period_us``); None where none is set or none can
    be read (another system)."""
    try:
        lines = membership.read_text().splitlines()
    except (OSError, ValueError):  # unreadable, or a group's name not in UTF-8
        return None
    quotas = []
    for line in lines:
        number, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if ".." in path.split("/"):  # a group outside this namespace's view: not ours to read
            continue
        if number == "0" and not controllers:  # v2: /sys/fs/cgroup, or .../unified beside v1
            bases = [(root, "cpu.max"), (root / "unified", "cpu.max")]
        elif "cpu" in controllers.split(","):
            bases = [(root / "cpu", "cpu.cfs_quota_us"), (root / controllers, "cpu.cfs_quota_us")]
        else:
            continue
        for base, name in bases:
            group = base / path.lstrip("/")
            for folder in (group, *group.parents):
                if folder == base.parent:
                    break
                quota = _quota(folder, name)
                if quota is not None:
                    quotas.append(quota)
    return min(quotas, default=None)


def _quota(folder: Path, name: str) -> float | None:
    """The quota in ``folder``'s file ``name`` as CPUs, None where none is set or readable."""
    try:
        if name == "cpu.max":  # "max 100000" or "<quota> <period>", in microseconds
            quota, period = (folder / name).read_text().split()[:2]
        else:
            quota = (folder / name).read_text().strip()
            period = (folder / "cpu.cfs_period_us").read_text().strip()
        if quota == "max" or int(quota) <= 0 or int(period) <= 0:
            return None
        return int(quota) / int(period)
    except (OSError, ValueError):
        return None


#: Where Linux describes CPU 0's caches (one ``index*`` folder a cache).
CACHES = Path("/sys/devices/system/cpu/cpu0/cache")
#: Multipliers of the size suffixes in :data:`CACHES` ("1024K", "32M").
SIZE_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def cache_bytes(level: int, root: Path = CACHES) -> int | None:
    """Bytes of this CPU's level-``level`` data or unified cache, as the kernel describes
    it under ``root``; None where it does not (another system, a VM that hides it)."""
    try:
        for index in sorted(root.glob("index*")):
            if (index / "level").read_text().strip() == str(level) and \
                    (index / "type").read_text().strip() in ("Data", "Unified"):
                size = (index / "size").read_text().strip().upper()
                digits = size.rstrip("KMG")
                return int(digits) * SIZE_SUFFIXES[size[len(digits):]] or None
    except (OSError, ValueError, KeyError):
        return None
    return None


def static_values(schedule: Schedule, layout: Layout, xp: Any, params: Mapping[str, Array],
                  x: Array, dtype: np.dtype, skip: Collection[str] = ()) -> dict[str, Array]:
    """Every static node for all steps at once, as ``(T, B, size)`` (or a 0-d number);
    but those in ``skip``, which the caller computes itself (no static node reads them)."""
    graph = schedule.graph
    (input_name,) = graph.inputs
    env: dict[str, Array] = {input_name: x}
    for node in graph.nodes.values():
        if node.kind is NodeKind.CONST:
            env[node.id] = xp.asarray(node.value, dtype=dtype)
    for node_id in schedule.order:
        node = graph.node(node_id)
        if node.kind is NodeKind.OP and node_id in layout.static and node_id not in skip:
            args = [env[a] for a in node.args]
            weights = [params[p] for p in node.params]
            fast = node.is_linear and bool(args) and all(a.ndim == 3 for a in args) \
                and all(w.ndim == 2 for w in weights[:-1])
            env[node_id] = _linear_over_steps(xp, args, weights) if fast else \
                node.operation.reference(xp, args, weights, node.attributes)
    return env


def _linear_over_steps(xp: Any, args: list[Array], params: list[Array]) -> Array:
    """The op table's ``linear`` on ``(T, B, size)`` operands, as one GEMM per operand over
    all ``T·B`` rows with the sums done in place (a third faster than the batched form,
    which multiplies step by step and allocates every partial sum); the same additions
    in the same order: ``(bias + a·Wᵀ) + b·Vᵀ …``.
    """
    *weights, bias = params
    steps, batch = args[0].shape[:2]
    products = (xp.matmul(value.reshape(steps * batch, -1), weight.T)
                for value, weight in zip(args, weights))
    total = next(products)
    total += bias
    for product in products:
        total += product
    return total.reshape(steps, batch, -1)


def unscaled(linear: str) -> float:
    """The scale for packers when no activation is folded into the weights (C kernels)."""
    return 1.0


@dataclass
class HoistTerm:
    """One GEMM of the hoisted product: ``S[:, start:stop] (+)= operand · weights``."""

    operand: str
    start: int
    stop: int
    weights: Array  # (size of the operand, stop - start)
    accumulate: bool  # an earlier term wrote these columns: add to them


@dataclass
class Hoisting:
    """The hoisted GEMM of every dynamic linear's static operands, over all ``T·B`` rows.

    Column block *k* (``H`` wide) belongs to ``layout.hoisted[k]``. Each operand is
    multiplied only into the blocks of the linears that read it, never through zero
    weights: ``NaN · 0`` is NaN, and a NaN in ``x`` must not reach a linear that does
    not read ``x``. ``blank`` column runs read no static operand (there ``S`` is 0).
    """

    bias: Array  # (width,)
    terms: list[HoistTerm]
    blank: list[tuple[int, int]]

    @property
    def width(self) -> int:
        return int(self.bias.shape[0])


def pack_hoisted(layout: Layout, params: Mapping[str, Any], hidden: int, dtype: np.dtype,
                 scale: Callable[[str], float], xp: Any = np) -> Hoisting:
    """The hoisted GEMM's terms and bias, arrays of ``xp``; each linear's parameters are
    multiplied by ``scale(linear)`` (an exact power of two, or 1)."""
    blocks = len(layout.hoisted)
    bias = np.zeros(blocks * hidden, dtype=dtype)
    for k, name in enumerate(layout.hoisted):
        bias[k * hidden:(k + 1) * hidden] = to_numpy(params[layout.linears[name].bias]) \
            * dtype.type(scale(name))
    operands = list(dict.fromkeys(o for name in layout.hoisted
                                  for o, _ in layout.linears[name].static))
    written = [False] * blocks
    terms = []
    for operand in operands:
        weight_of = {k: p for k, name in enumerate(layout.hoisted)
                     for o, p in layout.linears[name].static if o == operand}
        for run in _runs(sorted(weight_of), lambda a, b: written[a] == written[b]):
            weights = np.concatenate([to_numpy(params[weight_of[k]]).T
                                      * dtype.type(scale(layout.hoisted[k])) for k in run], 1)
            terms.append(HoistTerm(operand, run[0] * hidden, (run[-1] + 1) * hidden,
                                   xp.asarray(np.ascontiguousarray(weights, dtype=dtype)),
                                   written[run[0]]))
            for k in run:
                written[k] = True
    blank = [(run[0] * hidden, (run[-1] + 1) * hidden)
             for run in _runs([k for k in range(blocks) if not written[k]], lambda a, b: True)]
    return Hoisting(xp.asarray(bias), terms, blank)


def _runs(blocks: list[int], alike: Callable[[int, int], bool]) -> list[list[int]]:
    """``blocks`` (ascending) cut into runs of consecutive, ``alike`` neighbours."""
    runs: list[list[int]] = []
    for k in blocks:
        if runs and runs[-1][-1] == k - 1 and alike(runs[-1][-1], k):
            runs[-1].append(k)
        else:
            runs.append([k])
    return runs


def hoist(xp: Any, static: Mapping[str, Array], hoisting: Hoisting, steps: int, batch: int,
          add_bias: bool = True, out: Array | None = None) -> Array:
    """The hoisted part of every dynamic linear for all steps: ``S = X·W + b``, (T, B, width).

    One GEMM per static operand (and run of columns it feeds) over all ``T·B`` rows,
    writing in place. With ``add_bias=False``, ``S = X·W`` and the caller adds ``b``
    itself (the fused kernels add it per element, saving a pass over ``S``). ``out``, a
    ``(T·B, width)`` buffer to reuse, saves allocating (and the OS zeroing) ``S`` anew.
    """
    rows, width = steps * batch, hoisting.width
    hoisted = xp.empty((rows, width), dtype=hoisting.bias.dtype) if out is None else out
    for start, stop in hoisting.blank:
        hoisted[:, start:stop] = 0
    for term in hoisting.terms:
        product = static[term.operand].reshape(rows, -1)
        view = hoisted if (term.start, term.stop) == (0, width) else \
            hoisted[:, term.start:term.stop]
        if term.accumulate:
            view += product @ term.weights
        else:
            xp.matmul(product, term.weights, out=view)
    if add_bias:
        hoisted += hoisting.bias
    return hoisted.reshape(steps, batch, width)


def pack_group(layout: Layout, source: str, params: Mapping[str, Any], dtype: np.dtype,
               scale: Callable[[str], float]) -> np.ndarray:
    """One group's per-step GEMM weights, ``(size, members·H)``, transposed and contiguous;
    each member's scaled straight into its columns (no other copy of the group's weights
    is held meanwhile)."""
    members = layout.groups[source].members
    names = [p for member in members for s, p in layout.linears[member].matrix if s == source]
    hidden, size = np.shape(params[names[0]])
    found = np.empty((size, len(members) * hidden), dtype=dtype)
    for k, (member, name) in enumerate(zip(members, names)):
        np.multiply(to_numpy(params[name]).T, dtype.type(scale(member)),
                    out=found[:, k * hidden:(k + 1) * hidden], casting="unsafe")
    return found


def static_trace(schedule: Schedule, layout: Layout, static: Mapping[str, Array], xp: Any,
                 steps: int, batch: int, width: Callable[[str], int], dtype: np.dtype
                 ) -> dict[str, Array]:
    """The trace of every static assignment: its value at every step, ``(T, B, width)``."""
    found = {}
    for name in schedule.graph.assignments:
        if name in layout.static:
            found[name] = xp.empty((steps, batch, width(name)), dtype=dtype)
            found[name][...] = static[name]
    return found


def static_output(schedule: Schedule, static: Mapping[str, Array], xp: Any, steps: int,
                  batch: int, width: int, dtype: np.dtype) -> Array:
    """``y`` of a cell whose output reads only the input and constants: computed before
    the loop, broadcast to ``(T, B, width)`` and copied (so it owns its memory)."""
    (output,) = schedule.graph.outputs
    y = xp.empty((steps, batch, width), dtype=dtype)
    y[...] = static[output]
    return y
