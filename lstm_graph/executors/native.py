"""The native executor: a cell's whole time loop as generated C, compiled once, run without Python.

The step of a compiled cell is GEMMs (see :mod:`~lstm_graph.executors.layout`)
and fused element-wise work. The native executor runs the whole time loop in
one C call, with its own packed GEMMs (:mod:`~lstm_graph.executors.gemm_c`):

- **Every GEMM is per step**, over ``B`` rows, on weights packed once into
  panels: the input part of each linear (``x_t · W``, which the NumPy plan
  hoists over all ``T·B`` rows), each group's recurrent part (``h_{t-1} · U``)
  and every static linear that only the step reads (the GRU's ``linear(x)``).
  So no ``T·B``-row buffer is ever made, and the weights a step needs stay in
  the caches from step to step.
- **Tiles.** A step runs tile by tile: a tile is ``MR`` rows and one *unit
  tile* of ``lanes`` hidden units (16 floats with AVX-512, 8 with AVX2) across
  every gate block. Its GEMMs write the tile's pre-activations, and the fused
  element-wise work of the shared C generator (:mod:`~lstm_graph.executors.codegen_c`,
  host dialect :data:`HOST`) runs on the tile at once, while it is in the L1 cache.
- **Threads.** The work items (unit tiles, row blocks, or both) are split
  between threads (the caller and a persistent pool's sleeping workers), evenly
  in work. Where the items are unit tiles the threads meet at a barrier after
  every segment of every step (one per step for every built-in cell); where a
  step's weights are small beside the caches (up to 8 MiB: each thread reads
  them all) and the rows split evenly between the threads (or give each two row
  blocks), each thread owns its rows through the whole run and never waits for
  another: every sequence is its own recurrence. A state that a GEMM multiplies is read
  from a snapshot (two buffers, one per step parity): a tile writes its new
  state while other tiles still multiply the old one. Runs of small steps of one
  to three sequences time themselves and take one thread, all, or all for the
  hoisted products of ``x`` and one for the steps, whichever was faster of late
  (:class:`ThreadChoice`: a virtual machine's host may put the vCPUs on one core
  for seconds); every way gives the same bits there.

Before the loop only the static values the C does not compute are made, by
:func:`~lstm_graph.executors.prepare.static_values` (none for the built-in cells).
For float32, ``exp`` and ``tanh`` are our own branch-free versions
(Cody–Waite reduction and Cephes' polynomials, within 2 ulp of the true
value), so the compiler can vectorise them; float64 uses the C library's. The
compiler runs with ``-ffp-contract=off``: each element-wise operation rounds
as NumPy's does; only the GEMM micro-kernels use fused multiply-adds.

The batch size is an argument of the generated code, not a constant, so one
build serves every batch size. Builds live in the private, self-healing cache
of :mod:`~lstm_graph.executors.buildcache`. The source is ours, generated from
the validated graph: numbers and generated names only.
"""

from __future__ import annotations

import ctypes
import math
import os
import re
import shlex
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, cast

import numpy as np

from lstm_graph.errors import BackendError
from lstm_graph.executors import buildcache, gemm_c
from lstm_graph.executors.codegen_c import (
    C_TYPES,
    Arguments,
    Binding,
    Dialect,
    Lifetime,
    Line,
    Role,
    StepKernels,
    Symbol,
    TapeLayout,
    arrays,
    step_kernels,
)
from lstm_graph.executors.contract import (
    Array,
    Executor,
    FromZeros,
    Gradients,
    Progress,
    Spec,
    Tape,
)
from lstm_graph.executors.gemm_c import POOLED, aligned, aligned_empty
from lstm_graph.executors.layout import Layout, analyse
from lstm_graph.executors.prepare import (
    cache_bytes,
    pack_group,
    pack_hoisted,
    static_output,
    static_trace,
    static_values,
    unscaled,
    usable_threads,
)
from lstm_graph.formats.memory import Allocation
from lstm_graph.ir import NodeKind, Size
from lstm_graph.schedule import Schedule

#: The default executor compiles cells up to this many op nodes to C; bigger ones would
#: spend seconds in the C compiler (10,000 nodes: about 20 s), so they run the NumPy plan.
MAX_NODES = 2000
#: Multiply-adds per step from which a run is split between threads (below it, a barrier
#: per step costs more than the second core gives back). Measured on AMD EPYC (Zen 4),
#: 2 threads against 1, runs back to back (the pool's workers spin between them):
#: 12,800 (B = 1, H = 40) 1.02-1.05x; 16,384 (B = 2, H = 32) 0.88x; 18,432 (B = 1,
#: H = 48) 0.79x; 80,000 (B = 1, H = 100) 0.66x.
THREAD_WORK = 1 << 14
#: The argument of a native step's library whose bits a run sets where it wrote a state or
#: ``y`` value that is not finite (:data:`RESULTS_NONFINITE`) and where it read one in
#: ``x`` (:data:`X_NONFINITE`): one C ``unsigned``, set to 0 before the run.
NONFINITE = "nonfinite"
RESULTS_NONFINITE, X_NONFINITE = 1, 2
#: Multiply-adds per C call between progress reports (when progress is asked for).
PROGRESS_WORK = 1 << 28
FLAGS = ("-O3", "-ffp-contract=off", "-fno-trapping-math", "-fPIC", "-shared", "-pthread")
#: Tried in order until the compiler accepts one. First: tuned for this CPU, with the widest
#: vectors it has for the element-wise loops (gcc picks 128 bits on some, e.g. AMD Zen 1,
#: and 256 where it has 512: 512 is 5 % faster on the whole run on Zen 4) and instructions
#: scheduled before register allocation, which interleaves the gates' independent exp
#: chains (the element-wise work is latency-bound: 25-45 % faster, measured on Zen 1).
#: Then tuned for this CPU only, then portable. The GEMM kernels' vector width follows the
#: ISA the compiler targets (see gemm_c).
TUNINGS = (("-march=native", "-mprefer-vector-width=512", "-fschedule-insns",
            "-fsched-pressure"),
           ("-march=native",), ())
ATTEMPTS = tuple((*FLAGS, *tuning) for tuning in TUNINGS)
#: Flags added after each attempt's, split as a shell would: ``-mno-avx512f`` builds for
#: AVX2 on a CPU with AVX-512 (the benchmark's ``--isa avx2``; or where AVX-512 lowers
#: the clock). The build cache keys a build by its flags.
CFLAGS_ENV = "LSTM_GRAPH_CFLAGS"


def attempts() -> tuple[tuple[str, ...], ...]:
    """:data:`ATTEMPTS`, each with ``$LSTM_GRAPH_CFLAGS`` after it (read at each build)."""
    text = os.environ.get(CFLAGS_ENV, "")
    try:
        extra = shlex.split(text)
    except ValueError as err:
        raise BackendError(f"${CFLAGS_ENV} ({text!r}) is not a list of flags ({err})") from None
    odd = [flag for flag in extra if not flag.startswith("-")]
    if odd:
        raise BackendError(f"${CFLAGS_ENV} holds {odd[0]!r}, which is not a compiler flag "
                           "(flags start with '-'; a flag's value is joined to it)")
    foreign = [flag for flag in extra if not TUNING_FLAG.fullmatch(flag)]
    if foreign:
        raise BackendError(f"${CFLAGS_ENV} holds {foreign[0]!r}, which lstm-graph does not "
                           "give the compiler: it takes flags that tune the code (-O…, -m…, "
                           "-f…, -D…, -U…, -W…, -g…, -std=…), not ones that name files or "
                           "pass options to the preprocessor, assembler or linker (these "
                           "could read or run what another user put in place, or write "
                           "files the tool did not make)")
    return tuple((*attempt, *extra) for attempt in ATTEMPTS)


#: The flags ``$LSTM_GRAPH_CFLAGS`` may hold: optimisation, machine, code-generation,
#: macro, warning and debug-information options, less the ``-f`` options that read or
#: write files (plugins, profiles, dumps, coverage, stack usage, optimisation reports, link
#: time optimisation's) and the ``-W`` ones that pass options on (``-Wl,``, ``-Wa,``,
#: ``-Wp,``). Anything naming a place (``-B``, ``-I``, ``-L``, ``-specs=``, ``@file``,
#: ``-o``, ``-M…``) is not among them.
TUNING_FLAG = re.compile(
    r"-(?:O[0-3sgz]?|Ofast|m[\w=.,+-]+|g[\w=-]*|D[A-Za-z_]\w*(?:=.*)?|U[A-Za-z_]\w*|w|pipe"
    r"|std=[\w+]+|W(?![lap],)[\w=,+-]+"
    r"|f(?!plugin|profile|auto-profile|dump|callgraph-info|stack-usage|opt-info|coverage"
    r"|test-coverage|lto|save-optimization-record|record-gcc-switches|debug-prefix-map"
    r"|file-prefix-map|macro-prefix-map|diagnostics-)[\w=.,+-]+)", re.DOTALL)


#: Runs steps ``t0 <= t < t1`` of the step (forward).
RUN = Symbol("lstm_graph_run", POOLED)
#: Where the step's products of ``x`` are hoisted (:func:`hoists`): runs them over steps
#: ``t0 <= t < t1`` on ``parts`` threads, then the steps on the calling thread alone.
RUN_ALONE = Symbol("lstm_graph_run_alone", POOLED)
#: C for row block ``block``'s first row ``r`` and its ``m`` rows (``block_row``: with 16
#: vector registers two blocks of 5 rows are 6 and 4; AMD EPYC Zen 4 built for AVX2, two
#: threads: T = 35, B = 20, I = H = 650, 24.6-25.5 -> 23.9-25.1 ms; H = 200, T = 50,
#: 3.47-3.51 -> 3.43-3.45; PTB medium's gradient 78.4-81.3 -> 77.7-79.2). With 16
#: registers and only jobs of an even count of blocks (``EVEN_JOBS``: the LSTM's and
#: the peephole LSTM's one job of 4), the threads own rows only where the weights are
#: within :data:`ROW_MAJOR_BYTES`, and otherwise share the tiles in whole blocks of 6
#: rows, the rest last (20 rows: 6, 6, 6 and 2, not 6, 4, 6 and 4): each thread reads
#: half the weights a step, and runs most rows in the 6 × 2-block kernel rather than the
#: 4 × 3 and 4 × 1 pair. AMD EPYC Zen 4 built for AVX2, 2 threads, T = 50, the two ways'
#: runs taking turns in one process (10th percentiles): B = 8, I = 300, H = 256 2.65 ->
#: 2.50 ms; B = 16 5.31 -> 5.08; H = 200, B = 20 3.68 -> 3.55; PTB medium 25.9 -> 25.2;
#: the medium LSTM, (50, 64, 512, 512) 1 % faster; the peephole LSTM at (50, 20, 200,
#: 200) 3.67 -> 3.53. Steps with a job of an odd count of blocks ran that way slower or
#: alike (T = 50, B = 20, I = 300, H = 256: the coupled LSTM, jobs of 3 blocks, whose 6
#: rows take a 6 × 2 and a 6 × 1 kernel, 4.81 -> 5.11 ms; the RNN, 1 block, 1.97 ->
#: 2.02; the projected LSTM, 4 and 1, 6.98 -> 7.15; the GRU, 1, 2 and 1, alike at
#: (50, 20, 200, 200), PTB medium and B = 8), so they keep the even split, and own rows
#: within ``OWN_WEIGHT_BYTES``.
BLOCK_ROWS = ("const ptrdiff_t r = block_row(block, batch, blocks, group);",
              "const ptrdiff_t m = block_row(block + 1, batch, blocks, group) - r;")
#: The parameters of a :data:`~.gemm_c.POOLED` part function.
PART_PARAMETERS = ("ptrdiff_t part, ptrdiff_t parts, ptrdiff_t t0, ptrdiff_t t1, "
                   "ptrdiff_t batch, void **a")

#: float32 exp and tanh the compiler can vectorise (no library calls, no branches).
MATH_FLOAT = r"""
#include <stdint.h>
#include <string.h>

/* a * b + c in one rounding where the target has FMA instructions, else in two */
#if defined(__FMA__) || defined(__aarch64__)
#define LG_FMA(a, b, c) __builtin_fmaf(a, b, c)
#else
#define LG_FMA(a, b, c) ((a) * (b) + (c))
#endif

#define LG_EXP_HI 88.3762626647949f
#define LG_EXP_LO -87.3365447505531f
#define LG_ROUND 12582912.0f  /* 1.5 * 2^23: adding it rounds to an integer, in the low bits */

/* exp(x) = 2^n (1 + q): returns q = exp(r) - 1 (no cancellation near 0) and sets
   *scale = 2^n, for n = round(x / ln 2) and r = x - n ln 2, |r| <= ln 2 / 2 (Cody-Waite:
   ln 2 in two parts, n * LN2_HI exact); exp(r) by Cephes' expf polynomial, its last
   step unfused as Cephes writes it (fused, exp measured 1.01 ulp off; unfused, 0.98).
   n is read from the bits of x / ln 2 + 1.5 * 2^23 (no conversion of a float to an
   integer type, undefined for NaN: NaN stays NaN through r). x must lie in
   [LG_EXP_LO, LG_EXP_HI]. */
static inline float lg_exp_parts(float x, float *scale) {
    const float m = LG_FMA(x, 1.44269504088896341f, LG_ROUND);
    const float n = m - LG_ROUND;
    float r = LG_FMA(n, -0.693359375f, x);
    r = LG_FMA(n, 2.12194440e-4f, r);
    float p = 1.9875691500e-4f;
    p = LG_FMA(p, r, 1.3981999507e-3f);
    p = LG_FMA(p, r, 8.3334519073e-3f);
    p = LG_FMA(p, r, 4.1665795894e-2f);
    p = LG_FMA(p, r, 1.6666665459e-1f);
    p = LG_FMA(p, r, 5.0000001201e-1f);
    uint32_t bits;
    memcpy(&bits, &m, sizeof bits);
    bits = (bits - 0x4B400000u + 127u) << 23;  /* 0x4B400000: the bits of 1.5 * 2^23 */
    memcpy(scale, &bits, sizeof bits);
    return p * (r * r) + r;
}

/* exp, computed within [LG_EXP_LO, LG_EXP_HI], where 2^n stays a normal float; above
   it inf, below it 0 (exp(-87.34) = 1.2e-38 standing in for 0 made sigmoid(-inf) 4e-39,
   and inf times it inf, where NumPy's and PyTorch's 0 times inf is NaN). The few results
   in between, finite above 88.38 or subnormal below -87.34, are taken as overflow and
   underflow. NaN stays NaN. */
static inline float lg_expf(float x) {
    float clamped = x > LG_EXP_HI ? LG_EXP_HI : x;
    clamped = clamped < LG_EXP_LO ? LG_EXP_LO : clamped;
    float scale;
    const float q = lg_exp_parts(clamped, &scale);
    const float e = LG_FMA(q, scale, scale);
    return x > LG_EXP_HI ? (float)INFINITY : x < LG_EXP_LO ? 0.0f : e;
}

/* tanh: Cephes' odd polynomial below |x| = 0.625 (no cancellation near 0), else
   e / (e + 2) for e = exp(2|x|) - 1 = 2^n q + (2^n - 1) (exactly 1 from |x| = 9 on),
   with the sign of x. */
static inline float lg_tanhf(float x) {
    const float ax = x < 0.0f ? -x : x;
    const float twice = 2.0f * ax > LG_EXP_HI ? LG_EXP_HI : 2.0f * ax;
    float scale;
    const float q = lg_exp_parts(twice, &scale);
    const float e = LG_FMA(scale, q, scale - 1.0f);
    float big = e / (e + 2.0f);
    big = x < 0.0f ? -big : big;
    const float z = x * x;
    float small = -5.70498872745e-3f;
    small = LG_FMA(small, z, 2.06390887954e-2f);
    small = LG_FMA(small, z, -5.37397155531e-2f);
    small = LG_FMA(small, z, 1.33314422036e-1f);
    small = LG_FMA(small, z, -3.33332819422e-1f);
    small = LG_FMA(small * z, x, x);
    return ax < 0.625f ? small : big;
}
"""


def _host_functions(dtype: np.dtype) -> dict[str, str]:
    if dtype == np.float32:
        return {"exp": "lg_expf", "tanh": "lg_tanhf", "log1p": "log1pf"}
    return {"exp": "exp", "tanh": "tanh", "log1p": "log1p"}


def _host_preamble(dtype: np.dtype) -> str:
    lines = ["#include <math.h>", "#include <stddef.h>", f"typedef {C_TYPES[dtype]} T;"]
    return "\n".join(lines) + ("\n" + MATH_FLOAT if dtype == np.float32 else "")


#: The host dialect: plain C99 compiled by the system compiler; float32 math is ours.
HOST = Dialect("c99", _host_functions, _host_preamble)


#: Vectors of units a phase's loop takes at a time, on every row of the block (see
#: :func:`phase_loops`): at 2 and 4 the same speed, at 1 no gain over one loop (AMD EPYC
#: Zen 4, AVX2 and AVX-512).
PHASE_VECTORS = 4


def phase_loops(body: list[str], lines: list[Line], hidden: int) -> list[str]:
    """C for ``body`` (element ``i = b·H + j``) on rows ``b0 <= b < b1``, units ``j0 <= j
    < j1``: one loop; or, where its statements fall into several phases (:class:`Line`),
    for each block of at most ``MR`` rows and :data:`PHASE_VECTORS` vectors of units, a
    loop of each phase in turn, the locals a later phase reads kept in between (arrays
    of the block's size: in the L1 cache)."""
    if not any(line.phase for line in lines):
        return ["    for (ptrdiff_t b = b0; b < b1; b++) {", "        #pragma GCC ivdep",
                "        for (ptrdiff_t j = j0; j < j1; j++) {",
                f"            const ptrdiff_t i = b * {hidden} + j;", *body, "        }", "    }"]
    defined = {line.defines: line.phase for line in lines if line.defines}  # in order
    later = {u for line in lines for u in line.uses if defined[u] < line.phase}
    kept = [v for v in defined if v in later]
    chunk = f"{PHASE_VECTORS} * LANES"
    out = [f"    T {', '.join(f'kept_{v}[MR * {chunk}]' for v in kept)};"] if kept else []
    out += ["    for (ptrdiff_t r0 = b0; r0 < b1; r0 += MR) {",
            "        const ptrdiff_t r1 = b1 - r0 < MR ? b1 : r0 + MR;",
            f"        for (ptrdiff_t c0 = j0; c0 < j1; c0 += {chunk}) {{",
            f"            const ptrdiff_t c1 = j1 - c0 < {chunk} ? j1 : c0 + {chunk};"]
    for phase in sorted({line.phase for line in lines}):
        here = [statement for statement, line in zip(body, lines) if line.phase == phase]
        reads = [v for v in kept if defined[v] < phase
                 and any(v in line.uses for line in lines if line.phase == phase)]
        writes = [v for v in kept if defined[v] == phase]
        out += [f"            /* phase {phase} */",
                "            for (ptrdiff_t b = r0; b < r1; b++) {",
                "                #pragma GCC ivdep",
                "                for (ptrdiff_t j = c0; j < c1; j++) {",
                f"                    const ptrdiff_t i = b * {hidden} + j, "
                f"at = (b - r0) * {chunk} + j - c0;",
                *(f"                    const T {v} = kept_{v}[at];" for v in reads),
                *("        " + statement for statement in here),
                *(f"                    kept_{v}[at] = {v};" for v in writes),
                "                }", "            }"]
    return out + ["        }", "    }"]


def element_loops(name: str, what: str, declarations: list[str], body: list[str], hidden: int,
                  part: bool = False, lines: list[Line] | None = None) -> list[str]:
    """C for ``name(t, batch, b0, b1, j0, j1, a)`` (with ``part``, the thread's part
    after ``a``): ``body`` (element ``i = b·H + j``; its ``lines``, where it has phases:
    :func:`phase_loops`) on rows ``b0 <= b < b1``, units
    ``j0 <= j < j1``. The whole vectors of each row's units run in the widest vectors;
    the units after them (``H % LANES`` of a row, where a tile is partial) in a copy,
    ``<name>_rest``, compiled for narrower ones (``NARROW_VECTORS``), not one by one in
    the wide loop's scalar remainder (T = 50, B = 20, I = H = 100, AMD EPYC Zen 4: that
    remainder cost 5 % of the forward run)."""
    signature = "(ptrdiff_t t, ptrdiff_t batch, ptrdiff_t b0, ptrdiff_t b1, ptrdiff_t j0, " \
        f"ptrdiff_t j1, void **a{', ptrdiff_t part' if part else ''})"
    loop = ["    (void)t; (void)batch;" + (" (void)part;" if part else ""),
            *phase_loops(body, lines or [Line(0)] * len(body), hidden)]
    rest = f"{name}_rest(t, batch, b0, b1, whole, j1, a{', part' if part else ''})"
    return [f"/* {what}: rows b0 <= b < b1, units j0 <= j < j1 fewer than a vector */",
            f"NARROW_VECTORS static void {name}_rest{signature} {{", *declarations, *loop, "}",
            "", f"/* {what}: rows b0 <= b < b1, units j0 <= j < j1 (the whole vectors of each "
            f"row here, the rest in {name}_rest) */",
            f"static inline void {name}{signature} {{",
            "    const ptrdiff_t whole = j0 + (j1 - j0) / LANES * LANES;",
            f"    if (whole < j1) {rest};", "    j1 = whole;", *declarations, *loop, "}"]


def suits(schedule: Schedule) -> bool:
    """Whether the default executor should use the native step for this cell."""
    ops = sum(1 for node in schedule.graph.nodes.values() if node.kind is NodeKind.OP)
    return ops <= MAX_NODES and buildcache.compiler() is not None


def require_compiler() -> str:
    """The C compiler, or a :class:`BackendError` that says what is missing."""
    cc = buildcache.compiler()
    if cc is None:
        raise BackendError("the native executor needs a C compiler (cc, gcc or clang, or $CC); "
                           "none was found. Use --executor numpy, or install one "
                           "(e.g. apt-get install gcc)")
    return cc


@dataclass(frozen=True)
class Operand:
    """One operand of a GEMM job: an array name of the generated code, its row length
    ``size``, and its weights ``(size, blocks·H)``."""

    name: str
    size: int
    weights: np.ndarray


#: What a job holds in place of its weights once they are packed (:meth:`NativeStep.packed`).
_PACKED = np.empty(0)


@dataclass(frozen=True)
class Job:
    """One GEMM of a step, run on every tile: ``out[:, blocks] (+)= [a1 a2] · W (+ b)``.

    ``out`` is an array name of the generated code; ``first`` and ``blocks`` say which
    ``H``-wide column blocks of ``out`` it writes (at most
    :data:`~lstm_graph.executors.gemm_c.MAX_BLOCKS`); one or two ``operands`` multiplied
    side by side (``[x_t, h_{t-1}]``), so their products meet in the registers.
    """

    segment: int
    out: str
    out_width: int
    first: int
    blocks: int
    operands: tuple[Operand, ...]
    bias: np.ndarray | None = None
    add: bool = False


def folded(layout: Layout) -> list[str]:
    """The linears whose hoisted product the native step computes inside their group's
    per-step GEMM (every group's accumulators): their step reads no ``S``."""
    return [m for group in layout.groups.values() for m in group.members[:group.accumulators]]


def _runs(keys: list[Any]) -> list[tuple[int, int]]:
    """``[start, stop)`` runs of equal neighbours in ``keys``, each at most MAX_BLOCKS long."""
    runs: list[tuple[int, int]] = []
    for k, key in enumerate(keys):
        if runs and keys[runs[-1][0]] == key and k - runs[-1][0] < gemm_c.MAX_BLOCKS:
            runs[-1] = (runs[-1][0], k + 1)
        else:
            runs.append((k, k + 1))
    return runs


def step_statics(schedule: Schedule, layout: Layout) -> list[str]:
    """The static linears the C computes step by step into a buffer of one step's rows:
    those of size H that only the step's element-wise work reads (an element-wise op, or a
    peephole of a dynamic linear; no static value, state or output, and no matrix, which
    multiplies every step's rows of its operands at once), over operands of the input's
    or the hidden size, without peepholes (the GRU's ``linear(x)``)."""
    graph = schedule.graph
    found = []
    for node in graph.linears():
        consumers = [graph.node(c) for c in graph.consumers(node.id)]
        if node.id in layout.static and consumers and not any(node.peep) \
                and schedule.sizes[node.id] is Size.HIDDEN \
                and node.id not in graph.states and node.id not in graph.outputs \
                and all(schedule.sizes[a] in (Size.INPUT, Size.HIDDEN) for a in node.args) \
                and not any(c.id in layout.static for c in consumers) \
                and not any(a == node.id and not peep for c in consumers if c.is_linear
                            for a, peep in zip(c.args, c.peep)):
            found.append(node.id)
    return found


#: This CPU's L2 (per core) and L3 caches as the kernel describes them; where it does not,
#: those of the machine the sizes below were measured on (AMD EPYC Zen 4: 1 MiB, 32 MiB).
#: Each size below is that machine's figure, or less on a CPU with smaller caches (an
#: EPYC of Zen 2 or 3 has 512 KiB of L2), never more (a Xeon's L3 is shared with other
#: cores, and other tenants).
L2_BYTES, L3_BYTES = cache_bytes(2) or 1 << 20, cache_bytes(3) or 32 << 20
#: Bytes of the weights a step multiplies beyond which the native step hoists its input
#: products over all rows: about half the L3 cache, beyond which every step reads its
#: weights from memory.
STEP_WEIGHT_BYTES = min(16 << 20, L3_BYTES // 2)
#: ... and beyond which they must also be per row of the batch, for hoisting to pay: with
#: many rows a step's GEMM is bound by arithmetic, not by reading its weights, and the
#: ``T·B``-row buffer only adds traffic (AMD EPYC Zen 4, 2 threads, H = I: H = 1500,
#: B = 32 hoisted 285 against 306 ms, 2.2 MiB a row; H = 1000, B = 32 even at 1 MiB a
#: row; H = 1000, B = 64: 252 against 243 ms; H = 1024, B = 256: 790 against 755 ms).
HOIST_BYTES_PER_ROW = 1 << 20


#: Bytes of a step's weights up to which the native step takes the rows in blocks, each
#: through every tile (its weights stay in the L2 cache of the core: half of it), and the
#: element-wise work of a block over whole rows: fewer, longer vector loops than tile by
#: tile, and the threads share whole row blocks (T = 50, B = 32, I = 40, H = 100, two
#: threads, AMD EPYC Zen 4: 1.43 → 1.17 ms, with the dense last tile).
ROW_MAJOR_BYTES = min(512 << 10, L2_BYTES // 2)
#: Bytes of a step's weights up to which the threads may each own rows through the whole
#: run, each reading all the weights at every step, with no barrier. Measured on AMD EPYC
#: (Zen 4), 2 threads, I = H, owning rows against sharing the tiles: a little faster up to
#: 8 MiB (the medium LSTM, 1.5 MiB: 24.1-24.3 against 24.4-24.9 ms; H = 200, B = 32:
#: 4.91-4.93 against 4.96-5.00; H = 512, B = 64: 1213-1247 against 1220-1251 µs a step),
#: slower beyond, where each thread re-reads from the L3 cache (or memory) twice the
#: weights that sharing the tiles does, for half the rows (H = 650, 13.5 MiB, B = 64:
#: 2009-2077 against 1981-2035 µs a step; H = 1000, B = 64: 248 against 238 ms;
#: H = 1500, B = 20, T = 35: 135 against 125 ms): a quarter of that L3 cache.
OWN_WEIGHT_BYTES = min(8 << 20, L3_BYTES // 4)
#: Rows each thread needs at least to own its rows (:data:`OWN_WEIGHT_BYTES`). One row a
#: thread, all the weights read for a matrix–vector product, measured no better than the
#: threads sharing the tiles (H = 100, B = 2: 4.7-4.8 µs a step either way); from 2 rows a
#: thread owning them gained (H = 100, B = 4: 4.2 against 4.4 µs; B = 6: 5.9 against 6.5).
OWN_ROWS = 2
#: A plain run keeps its per-run work arrays up to this size for the next run of the same
#: shape: making them afresh is a good part of a small run's Python (100 steps of one
#: sequence, H = 32: 62 µs a call, 29 of them in the C).
SCRATCH_BYTES = 1 << 20
#: Multiply-adds per step below which a run of fewer than ``2 * OWN_ROWS`` sequences on
#: several threads times itself, and the next run takes one thread, all of them, or all
#: for the hoisted products and one for the steps, whichever ran faster a step of late
#: (:class:`ThreadChoice`). On a virtual machine,
#: for seconds at a time, such a step can run slower on two threads than on one (on this
#: 2-vCPU VM the one-thread time stays put while the two-thread time jumps; the host
#: likely runs the two vCPUs on one core's two hardware threads then). Measured on AMD
#: EPYC (Zen 4), T = 50, I = H, in processes that fell in such a phase (from none to
#: most of them over a few minutes), 1 against 2 threads: H = 100, B = 1: 2.8 against
#: 3.3-3.4 µs a step (1.95 on 2 threads otherwise); H = 64, B = 1: 1.37 against 1.78
#: (1.0); H = 100, B = 2: 3.9 against 4.5 (2.56). From here two threads stay ahead
#: there too (H = 200, B = 1, 320,000: 9.9 against 7.5; H = 100, B = 4: 7.0 against
#: 5.6). With fewer than ``2 * OWN_ROWS`` rows (at most ``MR``) several threads never
#: own rows, so every count takes all the rows as one row block: the same GEMM calls,
#: and element-wise work that does not depend on how the units are split between
#: threads (no contraction, no fast math), so the same bits; the hoisted products are
#: the same blocks of ``MR`` rows on any count. (Four rows on two threads are two row
#: blocks of two, whose kernels split their sums otherwise.) The hoisted products on
#: two threads and the steps on one: 2.09 µs a step at H = 100, B = 1 (T = 1000)
#: against one thread's 2.41 and two threads' 1.50 outside such a phase; inside it, at
#: T = 50, 132.4 µs a run against one thread's 135.9.
SMALL_STEP_WORK = 1 << 18
#: Where a way with one thread for the steps ran faster, after every this many runs on
#: it another way is tried again (:data:`ThreadChoice.TRY` runs), the others in turn,
#: to see whether the host's phase has passed: about 2 % of the runs' time while it
#: has not. Where all the threads ran faster, another way is tried after every
#: ``16 * PROBE_RUNS`` runs (about 0.3 %).
PROBE_RUNS = 32


class Sharing(NamedTuple):
    """How a run shares its work out: on ``threads`` threads, or (``alone``) the hoisted
    products of ``x`` on ``threads`` threads and the steps on the calling thread."""

    threads: int
    alone: bool = False


class ThreadChoice:
    """How the runs of small steps of one batch size share their work: on one thread, on
    ``most``, or (where the products of ``x`` are hoisted: ``hoisted``) those products on
    ``most`` and the steps on one (:class:`Sharing`).

    Each way keeps its last few timed runs' seconds a step (:data:`KEEP`); once all have
    been tried, the runs take the one whose fastest of those is fastest, and now and
    then (:data:`PROBE_RUNS`) another, in turn, for a few runs, so that a change of the
    host's phase is seen. Timings are one-sided (what else runs slows a run, never
    speeds it up), so the fastest of a few is the estimate. A way is always run
    :data:`TRY` times in a row: after a stretch on one thread the others' caches have
    gone cold and their workers to sleep, and tried for one run only, all the threads
    would pay for that every time and never be chosen again.
    """

    KEEP, TRY = 4, 3

    def __init__(self, most: int, hoisted: bool = False):
        self.most = Sharing(most)
        self.ways = (self.most, *((Sharing(most, alone=True),) if hoisted else ()),
                     Sharing(1))
        self.times: dict[Sharing, deque[float]] = {w: deque(maxlen=self.KEEP)
                                                   for w in self.ways}
        self.current = self.most  # the way of the run in progress or the last one
        self.streak = 0  # runs in a row on it
        self.since = 0  # runs since another way was last tried
        self.probe = 0  # which of the others is tried next
        self.fastest: dict[Sharing, float] = {}  # each way's fastest kept time a step
        self.best: Sharing | None = None  # the fastest way, once all have timings

    def next(self) -> Sharing:
        """How the next run shares its work (a microsecond counts in a small run)."""
        if self.streak >= self.TRY:
            best, current = self.best, self.current
            if best is None:  # try a way without timings (where a run raised: again)
                untried = [w for w in self.ways if not self.times[w] and w != current]
                if untried:
                    self._switch(untried[0])
            elif best != current:
                self._switch(best)
            elif self.since >= (16 * PROBE_RUNS if best == self.most else PROBE_RUNS):
                others = [w for w in self.ways if w != best]
                self.probe = (self.probe + 1) % len(others)
                self._switch(others[self.probe])
        self.streak += 1
        self.since += 1
        return self.current

    def _switch(self, way: Sharing) -> None:
        """Run ``way`` from the next run on."""
        self.current, self.streak, self.since = way, 0, 0

    def record(self, way: Sharing, seconds: float, steps: int) -> None:
        """The run that :meth:`next` gave ``way`` took ``seconds`` for ``steps`` steps."""
        times = self.times[way]
        times.append(seconds / max(1, steps))
        self.fastest[way] = min(times)
        if len(self.fastest) == len(self.ways):
            self.best = min(self.fastest, key=self.fastest.__getitem__)


def hoists(schedule: Schedule, layout: Layout, batch: int, input_size: int, hidden: int,
           dtype: np.dtype) -> bool:
    """Whether the native step multiplies the static operands (``x``) of its linears before
    the loop, over all ``T·B`` rows (one large GEMM, its weights read once), rather than
    at every step beside ``h_{t-1}`` (weights read every step, but staying in the cache,
    and no ``T·B``-row buffer). Measured on AMD EPYC (Zen 4), 1 and 2 threads: hoisting
    wins for one sequence, where every step's GEMM is a matrix–vector product that
    re-reads all its weights (H = 1000: 10.0 → 5.0 ms), and where the weights of a step
    outgrow the caches (:data:`STEP_WEIGHT_BYTES`; H = 1500, B = 20: 151 → 127 ms) while
    the batch is small beside them (:data:`HOIST_BYTES_PER_ROW`), and
    the static operands' weights are a good share of them (at least a quarter: a small
    ``x``, I = 2 beside H = 5000, saves almost no reading and would cost a ``T·B × 4H``
    buffer); it loses elsewhere (T = 35, B = 32, H = I = 300: 15.9 → 18.2 ms)."""
    static_part = sum(schedule.width(o, input_size, hidden) for info in layout.linears.values()
                      if info.id not in layout.static for o, _ in info.static)
    group_part = sum(hidden * len(g.members) for g in layout.groups.values())
    step_bytes = (static_part + group_part) * hidden * dtype.itemsize
    return static_part > 0 and (batch == 1 or (
        step_bytes > max(STEP_WEIGHT_BYTES, batch * HOIST_BYTES_PER_ROW)
        and 4 * static_part >= static_part + group_part))


class NativeStep:
    """The generated C of one cell's step, width and dtype, and the arrays its GEMMs use.

    Every generated function takes ``void **a`` (:class:`~.codegen_c.Arguments`): the
    kernels' bindings, then the operands of the GEMMs (``X_k``: static values, every
    step; ``snap_<state>``: a state's snapshots), then the packed weights and biases of
    each job (``P_k``, ``Pb_k``): :attr:`names`, in that order. A ``hoisted`` step's
    jobs of segment -1 run before the loop, over every step's rows (see
    :func:`hoists`).
    """

    def __init__(self, spec: Spec, layout: Layout, kernels: StepKernels,
                 statics: list[str], hoisted: bool = False):
        self.spec, self.layout, self.kernels, self.statics = spec, layout, kernels, statics
        self.hoisted = hoisted
        self.hidden, self.dtype = spec.hidden, spec.dtype
        self.operands: dict[str, str] = {}  # static operand node -> its array name
        self.snapshots: dict[str, str] = {}  # state -> its snapshots' array name
        self.jobs = self._jobs()
        #: Whether a step's weights fit in the L2 cache: then each row block runs every
        #: tile's GEMMs and its element-wise work over whole rows (see :data:`ROW_MAJOR_BYTES`).
        step_bytes = sum(o.size * job.blocks for job in self.jobs if job.segment >= 0
                         for o in job.operands) * self.hidden * self.dtype.itemsize
        self.row_major = step_bytes <= ROW_MAJOR_BYTES
        #: Whether every thread may read all of a step's weights at every step, and so own
        #: its rows (:data:`OWN_WEIGHT_BYTES`).
        self.weights_cached = step_bytes <= OWN_WEIGHT_BYTES
        #: Whether every job of the steps has an even count of blocks: with 16 vector
        #: registers their 6-row blocks run in kernels of 2 blocks, the fastest (see
        #: BLOCK_ROWS: steps with odd jobs ran slower or alike in whole 6-row blocks).
        self.even_jobs = all(job.blocks % 2 == 0 for job in self.jobs if job.segment >= 0)
        self.names = [*kernels.bindings, *self.operands.values(), *self.snapshots.values()]
        for k, job in enumerate(self.jobs):
            self.names.append(f"P_{k}")
            if job.bias is not None:
                self.names.append(f"Pb_{k}")
        self.names.append(NONFINITE)
        #: The GEMM operands that are the cell's input (node -> array name): the step tests
        #: each number of them for NaN and infinity as it reads it (:data:`X_NONFINITE`).
        self.x_operands = {node: name for node, name in self.operands.items()
                           if node in spec.schedule.graph.inputs}
        self.args = Arguments(self.names)

    # -- what the step multiplies --------------------------------------------------------

    def operand(self, node_id: str) -> str:
        """The array name of a GEMM operand (a static value, a state's snapshot, a buffer)."""
        graph, kernels = self.spec.schedule.graph, self.kernels
        node = graph.node(node_id)
        if node_id in self.layout.static:
            return self.operands.setdefault(node_id, f"X_{len(self.operands)}")
        if node.kind is NodeKind.OLD:
            return self.snapshots.setdefault(str(node.state), f"snap_{node.state}")
        return kernels.binding_of(Role.BUFFER, node_id).name

    def _jobs(self) -> list[Job]:
        """Every GEMM of a step. Each group's GEMM also multiplies the static operands of
        its accumulators (``x_t`` for every built-in cell): a run of its blocks that
        read the same static operands is one job over ``[x_t, h_{t-1}]``; blocks that
        read none (or other static operands) are jobs of their own, so no operand is
        ever multiplied by a zero weight block. The hoisted parts of linears without a
        group (peepholes only) go into ``S``; static linears only the step reads into
        their own per-step buffers."""
        spec, layout, kernels, hidden = self.spec, self.layout, self.kernels, self.hidden
        params, dtype = spec.params, spec.dtype
        jobs: list[Job] = []
        hoisting = pack_hoisted(layout, params, hidden, dtype, unscaled)
        self.hoisted_bias = hoisting.bias
        owner = {layout.hoisted_column(m): (source, column)
                 for source, group in layout.groups.items()
                 for column, m in enumerate(group.members[:group.accumulators])}
        pieces: dict[tuple[str, int], list[Operand]] = {}  # (group, column): static parts
        for term in hoisting.terms if self.hoisted else ():  # before the loop, all rows
            assert kernels.hoisted is not None
            weights = np.asarray(term.weights)
            jobs.append(Job(-1, kernels.hoisted.name, hoisting.width, term.start // hidden,
                            (term.stop - term.start) // hidden,
                            (Operand(self.operand(term.operand), weights.shape[0], weights),),
                            None, term.accumulate))
        for term in hoisting.terms if not self.hoisted else ():
            first = term.start // hidden
            weights = np.asarray(term.weights)
            alone = []  # blocks of linears without a group: into S
            for block in range(first, term.stop // hidden):
                part = weights[:, (block - first) * hidden:(block - first + 1) * hidden]
                if block in owner:
                    pieces.setdefault(owner[block], []).append(
                        Operand(self.operand(term.operand), part.shape[0], part))
                else:
                    alone.append(block)
            for start, stop in _runs([b - k for k, b in enumerate(alone)]):
                blocks = alone[start:stop]
                part = weights[:, (blocks[0] - first) * hidden:(blocks[-1] + 1 - first) * hidden]
                assert kernels.hoisted is not None  # the linears without a group read S
                jobs.append(Job(0, kernels.hoisted.name, hoisting.width, blocks[0], len(blocks),
                                (Operand(self.operand(term.operand), part.shape[0], part),),
                                None, term.accumulate))
        for name in self.statics:  # static linears only the step reads
            node = spec.schedule.graph.node(name)
            out = kernels.binding_of(Role.STATIC, name).name
            for k, (arg, param) in enumerate(zip(node.args, node.params)):
                weights = np.ascontiguousarray(np.asarray(params[param]).T, dtype=dtype)
                bias = np.asarray(params[node.params[-1]], dtype=dtype) if k == 0 else None
                jobs.append(Job(-1 if self.hoisted else 0, out, hidden, 0, 1,
                                (Operand(self.operand(arg), weights.shape[0], weights),),
                                bias, add=k > 0))
        segment_of = {source: k for k, segment in enumerate(kernels.segments)
                      for source in segment.gemms}
        for source, group in layout.groups.items():  # the per-step GEMM of each group
            members = len(group.members)
            weights = pack_group(layout, source, params, dtype, unscaled)
            statics = [pieces.get((source, column), []) for column in range(members)]
            for start, stop in _runs([[o.name for o in ops] for ops in statics]):
                operands = [Operand(o.name, o.size, np.concatenate(
                    [p[k].weights for p in statics[start:stop]], 1))
                    for k, o in enumerate(statics[start])]
                operands.append(Operand(self.operand(source), hidden,
                                        weights[:, start * hidden:stop * hidden]))
                for k in range(0, len(operands), 2):  # two operands a job: more add on
                    jobs.append(Job(segment_of[source], kernels.groups[source].name,
                                    members * hidden, start, stop - start,
                                    tuple(operands[k:k + 2]), None, k > 0))
        return jobs

    def work(self, batch: int) -> int:
        """Multiply-adds of one step's GEMMs."""
        return batch * sum(o.size * job.blocks * self.hidden
                           for job in self.jobs for o in job.operands)

    def packed(self, lanes: int) -> dict[str, np.ndarray]:
        """The jobs' weights and biases packed into panels for ``lanes`` (by name). The
        jobs then let their weights go (from here on the step needs only their shapes):
        a build kept a second copy of every weight for as long as it lived."""
        if any(o.weights is _PACKED for job in self.jobs for o in job.operands):
            raise RuntimeError("a step's weights are packed once; build another step")
        found = {}
        widest = 4 if lanes * self.dtype.itemsize == 64 else 2
        for k, job in enumerate(self.jobs):
            weights = [np.asarray(o.weights, dtype=self.dtype) for o in job.operands]
            if job.segment < 0:  # before the loop: one run of columns, tiles of c vectors
                columns = job.blocks * self.hidden  # the last tile as wide as it needs
                width = min(widest, -(-columns // lanes)) * lanes
                found[f"P_{k}"] = gemm_c.pack_panels(weights, 1, columns, width,
                                                     dense_tail=True, vector=lanes)
                if job.bias is not None:
                    found[f"Pb_{k}"] = gemm_c.pack_bias(np.asarray(job.bias, dtype=self.dtype),
                                                        1, columns, width, dense_tail=True,
                                                        vector=lanes)
                continue
            found[f"P_{k}"] = gemm_c.pack_panels(weights, job.blocks, self.hidden, lanes,
                                                 dense_tail=True)
            if job.bias is not None:
                found[f"Pb_{k}"] = gemm_c.pack_bias(job.bias, job.blocks, self.hidden, lanes,
                                                    dense_tail=True)
        self.jobs = [replace(job, operands=tuple(replace(o, weights=_PACKED)
                                                 for o in job.operands),
                             bias=None if job.bias is None else _PACKED)
                     for job in self.jobs]
        return found

    # -- the C source --------------------------------------------------------------------

    def pointer(self, name: str, written: bool, args: Arguments) -> str:
        """The declaration of array ``name`` at step ``t`` (per-step arrays advance)."""
        binding = self.kernels.bindings.get(name)
        return args.pointer(name, written, binding.step_offset() if binding else "")

    def _elements(self, k: int, args: Arguments) -> list[str]:
        """Segment k's element-wise work on rows b0 <= b < b1, units j0 <= j < j1."""
        segment = self.kernels.segments[k]
        last = k == len(self.kernels.segments) - 1
        snapshots = self.snapshots if last else {}
        also = " (and the new states into the next step's snapshots)" if snapshots else ""
        declarations = [self.pointer(n, False, args) for n in segment.inputs]
        declarations += [self.pointer(n, True, args) for n in segment.outputs]
        for state, name in snapshots.items():
            declarations.append(args.pointer(name, True, f" + ((t + 1) & 1) * batch * "
                                             f"{self.hidden}", alias=f"next_{state}"))
        body = [*HOST.body(segment, self.dtype, indent="            "),
                *(f"            next_{state}[i] = {self.kernels.states[state].name}[i];"
                  for state in snapshots)]
        # A forward that keeps a tape stays one loop: it stores most values anyway, and
        # the phases' kept values cost it more than they gave (T = 35, B = 20, I = H = 200,
        # one thread: 4.70-4.79 ms against 4.82-4.92; a plain run 4.26-4.27 against 4.22-4.23)
        lines = None
        if self.kernels.tape is None:
            end = max((line.phase for line in segment.lines), default=0)
            lines = [*segment.lines, *(Line(end) for _ in snapshots)]
        return element_loops(f"elements_{k}", f"segment {k}'s element-wise work{also}",
                             declarations, body, self.hidden, lines=lines)

    def _segment(self, k: int, args: Arguments) -> list[str]:
        """Segment k of step t on unit tiles u0 <= u < u1: GEMMs, then elements, per tile."""
        jobs = [(n, job) for n, job in enumerate(self.jobs) if job.segment == k]
        lines = [f"/* segment {k} of step t on items i0 <= item < i1 (a unit tile and a row "
                 "block each): item by item, its GEMMs, then its element-wise work while the "
                 "tile is in cache */",
                 f"static void segment_{k}(ptrdiff_t t, ptrdiff_t batch, ptrdiff_t i0, "
                 "ptrdiff_t i1, ptrdiff_t parts, void **a) {"]
        declared = set()
        for n, job in jobs:
            for name, written in (*((o.name, False) for o in job.operands), (job.out, True)):
                if name in declared:
                    continue
                declared.add(name)
                if name in self.snapshots.values():
                    lines.append(args.pointer(name, False, f" + (t & 1) * batch * {self.hidden}"))
                elif name in self.operands.values():
                    size = next(o.size for o in job.operands if o.name == name)
                    lines.append(args.pointer(name, False, f" + t * batch * {size}"))
                else:
                    lines.append(self.pointer(name, written, args))
            lines.append(args.pointer(f"P_{n}", False))
            if job.bias is not None:
                lines.append(args.pointer(f"Pb_{n}", False))
        calls = []
        for n, job in jobs:  # on the tile of item (u, block): rows r..r+m, units j0..j0+n
            bias = f"Pb_{n} + u * {job.blocks} * LANES" if job.bias is not None else "NULL"
            (a1, *rest), size = job.operands, sum(o.size for o in job.operands)
            a2 = f"{rest[0].size}, {rest[0].name} + r * {rest[0].size}, {rest[0].size}" \
                if rest else "0, NULL, 0"
            call = f"kernel_{job.blocks}(m, {a1.size}, {a1.name} + r * {a1.size}, " \
                f"{a1.size}, {a2}, P_{n} + u * {size * job.blocks} * LANES, {bias}, " \
                f"{job.out} + r * {job.out_width} + {job.first} * HIDDEN + j0, " \
                f"{job.out_width}, HIDDEN, n, 0, {int(job.add)});"
            if job.blocks > 1:  # the last, partial tile: its blocks' units side by side
                call = f"if (n < LANES) kernel_tail_{job.blocks}(m, {a1.size}, {a1.name} + r * " \
                    f"{a1.size}, {a1.size}, {a2}, P_{n} + u * {size * job.blocks} * LANES, " \
                    f"{bias}, {job.out} + r * {job.out_width} + {job.first} * HIDDEN + j0, " \
                    f"{job.out_width}, {int(job.add)}); else {call}"
            calls.append(call)
        tile = ["const ptrdiff_t j0 = u * LANES;",
                "const ptrdiff_t n = HIDDEN - j0 < LANES ? HIDDEN - j0 : LANES;"]
        if self.row_major:  # each row block through every tile, its elements over whole rows
            owned = ["    if (own_rows(batch, parts)) {  /* items are row blocks: each runs every "
                     "tile's",
                     "        GEMMs (the weights stay in the L2 cache), then its rows' "
                     "element-wise work whole */",
                     "        for (ptrdiff_t block = i0; block < i1; block++) {",
                     *(f"            {line}" for line in BLOCK_ROWS),
                     "            for (ptrdiff_t u = 0; u < TILES; u++) {",
                     *(f"                {line}" for line in tile + calls),
                     "            }",
                     f"            elements_{k}(t, batch, r, r + m, 0, HIDDEN, a);",
                     "        }"]
        else:  # tile by tile, so that a tile's panel is read once a step
            owned = ["    if (own_rows(batch, parts)) {  /* items are row blocks, the weights "
                     "beyond the L2",
                     "        cache: tile by tile, the part's row blocks (a tile's panel read "
                     "once a step) */",
                     "        for (ptrdiff_t u = 0; u < TILES; u++) {",
                     *(f"            {line}" for line in tile),
                     "            for (ptrdiff_t block = i0; block < i1; block++) {",
                     *(f"                {line}" for line in BLOCK_ROWS),
                     *(f"                {line}" for line in calls),
                     f"                elements_{k}(t, batch, r, r + m, j0, j0 + n, a);",
                     "            }",
                     "        }"]
        lines += ["    const ptrdiff_t blocks = row_blocks(batch, parts);",
                  "    const ptrdiff_t group = row_group(batch, parts, blocks);",
                  *owned,
                  "        return;",
                  "    }",
                  "    if (batch <= MR) {  /* one row block: every tile's GEMMs, then the "
                  "element-wise work of all at once (their chains overlap) */",
                  "        const ptrdiff_t r = 0, m = batch;",
                  "        for (ptrdiff_t u = i0; u < i1; u++) {",
                  *(f"            {line}" for line in tile + calls),
                  "        }",
                  "        const ptrdiff_t end = i1 * LANES < HIDDEN ? i1 * LANES : HIDDEN;",
                  f"        if (i0 < i1) elements_{k}(t, batch, 0, batch, i0 * LANES, end, a);",
                  "        return;",
                  "    }",
                  "    /* items tile-major, so that consecutive items share a tile's panel */",
                  "    for (ptrdiff_t item = i0; item < i1; item++) {",
                  "        const ptrdiff_t u = item / blocks, block = item % blocks;",
                  *(f"        {line}" for line in tile),
                  *(f"        {line}" for line in BLOCK_ROWS),
                  *(f"        {line}" for line in calls),
                  f"        if (n == LANES) elements_{k}(t, batch, r, r + m, j0, j0 + LANES, a);",
                  f"        else elements_{k}(t, batch, r, r + m, j0, j0 + n, a);",
                  "    }", "}"]
        return lines

    def header(self, outer: bool = False) -> list[str]:
        """The preamble, the pool and every micro-kernel the jobs need (with ``outer``, the
        weight gradients' too): the start of a library."""
        name = re.sub(r"[^\w.-]", "_", self.spec.schedule.graph.name)
        return [f"/* lstm-graph native step: cell {name}, H {self.hidden}, "
                f"{self.dtype.name} (generated) */", HOST.preamble(self.dtype),
                f"#define HIDDEN ((ptrdiff_t){self.hidden})", gemm_c.runtime(),
                "#define TILES ((HIDDEN + LANES - 1) / LANES)",
                "#define TAIL (HIDDEN % LANES)  /* units of the last tile, where partial */",
                f"#define WEIGHTS_CACHED {int(self.weights_cached)}  /* every part may read "
                "all of a step's weights at every step (OWN_WEIGHT_BYTES) */",
                f"#define OWN_ROWS {OWN_ROWS}  /* rows a part needs at least to own its rows */",
                f"#define ROW_MAJOR {int(self.row_major)}  /* a step's weights within "
                "ROW_MAJOR_BYTES */",
                f"#define EVEN_JOBS {int(self.even_jobs)}  /* every job of an even count of "
                "blocks */",
                "/* whether each part owns whole row blocks through every segment of every",
                "   step, and runs them alone, with no barrier (every sequence is its own",
                "   recurrence): where a step's weights are small (WEIGHTS_CACHED; with 16",
                "   vector registers and EVEN_JOBS, ROW_MAJOR: see block_row) and the rows",
                "   split evenly between the parts, or each part has two row blocks (a row",
                "   more than another is then a small share of its work) */",
                "static inline _Bool own_rows(ptrdiff_t batch, ptrdiff_t parts) {",
                "    if (!WEIGHTS_CACHED || batch < OWN_ROWS * parts) return 0;",
                "#if VB != 64",
                "    if (EVEN_JOBS && !ROW_MAJOR) return 0;",
                "#endif",
                "    return batch % parts == 0 || (batch + MR - 1) / MR >= 2 * parts;",
                "}",
                "/* row blocks of at most MR rows, their sizes differing by at most one (64",
                "   rows: 9 of 6 and 2 of 5, not 10 of 6 and a slower one of 4); where the parts",
                "   own rows, as many as makes an even share (64 rows, 2 parts: 12, not 11);",
                "   block_row places them (with 16 registers and EVEN_JOBS, where the parts",
                "   share the tiles, 64 rows are 10 of 6 and one of 4) */",
                "static inline ptrdiff_t row_blocks(ptrdiff_t batch, ptrdiff_t parts) {",
                "    const ptrdiff_t blocks = (batch + MR - 1) / MR;",
                "    if (!own_rows(batch, parts)) return blocks;",
                "    return (blocks + parts - 1) / parts * parts;",
                "}",
                "/* the first row of row block `block` of `blocks` over `batch` rows: an even",
                "   split (sizes differing by at most one); but with 16 vector registers two",
                "   blocks of 5 rows, the first at an even place in its group of `group`",
                "   blocks (a thread's own, or all), are 6 and 4 rows: their kernels hold 12",
                "   accumulators each where 5 rows hold 10 (the pair keeps its rows, so a",
                "   group does too); and where the parts share the tiles with EVEN_JOBS",
                "   (`group` 0), whole blocks of MR rows, the rest last: with 16 registers",
                "   a job of 4 blocks runs 6 rows at the kernels' fastest, 4 (3 blocks,",
                "   then 1) among their slowest (see native.BLOCK_ROWS) */",
                "static inline ptrdiff_t block_row(ptrdiff_t block, ptrdiff_t batch, "
                "ptrdiff_t blocks, ptrdiff_t group) {",
                "#if VB != 64",
                "    if (group == 0) return block * MR < batch ? block * MR : batch;",
                "#endif",
                "    const ptrdiff_t r = batch * block / blocks;",
                "#if VB != 64",
                "    if (block % group % 2 == 1) {",
                "        const ptrdiff_t r0 = batch * (block - 1) / blocks;",
                "        if (r - r0 == 5 && batch * (block + 1) / blocks - r == 5) return r0 + 6;",
                "    }",
                "#else",
                "    (void)group;",
                "#endif",
                "    return r;",
                "}",
                "/* the blocks block_row pairs within: a part's own where the parts own rows;",
                "   where they share the tiles, all, or 0 with EVEN_JOBS (block_row) */",
                "static inline ptrdiff_t row_group(ptrdiff_t batch, ptrdiff_t parts, "
                "ptrdiff_t blocks) {",
                "    return own_rows(batch, parts) ? blocks / parts : EVEN_JOBS ? 0 : blocks;",
                "}",
                "/* the work of item `item`: a unit tile's units times a row block's rows; the",
                "   items are row blocks (own_rows), tiles (one row block) or both, tile-major */",
                "static inline ptrdiff_t item_work(ptrdiff_t item, ptrdiff_t batch, "
                "ptrdiff_t parts, ptrdiff_t blocks) {",
                "    const _Bool own = own_rows(batch, parts);",
                "    if (!own && batch <= MR)",
                "        return HIDDEN - item * LANES < LANES ? HIDDEN - item * LANES : LANES;",
                "    const ptrdiff_t block = own ? item : item % blocks;",
                "    const ptrdiff_t group = row_group(batch, parts, blocks);",
                "    const ptrdiff_t rows = block_row(block + 1, batch, blocks, group) - "
                "block_row(block, batch, blocks, group);",
                "    if (own) return rows;",
                "    const ptrdiff_t j0 = item / blocks * LANES;",
                "    return rows * (HIDDEN - j0 < LANES ? HIDDEN - j0 : LANES);",
                "}",
                "/* the first item of part `part`'s share: the shares even in work, not in",
                "   items (the last, partial tile and the smaller row blocks cost less: an",
                "   even count left one thread waiting a tenth of every step at H = 200) */",
                "static ptrdiff_t share_start(ptrdiff_t part, ptrdiff_t parts, ptrdiff_t items, "
                "ptrdiff_t batch, ptrdiff_t blocks) {",
                "    if (part <= 0) return 0;",
                "    if (part >= parts) return items;",
                "    ptrdiff_t total = 0;",
                "    for (ptrdiff_t i = 0; i < items; i++) total += item_work(i, batch, parts, "
                "blocks);",
                "    const ptrdiff_t target = total * part / parts;",
                "    ptrdiff_t done = 0;",
                "    for (ptrdiff_t i = 0; i < items; i++) {",
                "        const ptrdiff_t w = item_work(i, batch, parts, blocks);",
                "        if (done + w >= target) return done + w - target <= target - done ? "
                "i + 1 : i;",
                "        done += w;",
                "    }",
                "    return items;",
                "}",
                gemm_c.kernels({job.blocks for job in self.jobs if job.segment >= 0}, outer)]

    def _before(self, args: Arguments) -> list[str]:
        """The jobs before the loop (a hoisted step's): over the rows of steps t0 <= t < t1,
        the row blocks split between the parts."""
        lines = ["/* before the steps t0 <= t < t1: the hoisted products over all their rows "
                 "(row blocks split between the parts), tiles of c vectors */",
                 f"static void before_part({PART_PARAMETERS}) {{",
                 "    const ptrdiff_t row0 = t0 * batch, rows = (t1 - t0) * batch;",
                 "    const ptrdiff_t blocks = (rows + MR - 1) / MR;",
                 "    const ptrdiff_t k0 = blocks * part / parts, k1 = blocks * (part + 1) / "
                 "parts;", "    (void)k0; (void)k1;"]
        for n, job in enumerate(self.jobs):
            if job.segment >= 0:
                continue
            (operand,) = job.operands
            columns = job.blocks * self.hidden
            bias = f"(const T *){args.slot(f'Pb_{n}')} + u * c * LANES" \
                if job.bias is not None else "NULL"
            lines += ["    {",
                      f"    const T *restrict x = (const T *){args.slot(operand.name)} + row0 * "
                      f"{operand.size};",
                      f"    T *restrict out = (T *){args.slot(job.out)} + row0 * "
                      f"{job.out_width} + {job.first} * HIDDEN;",
                      f"    const T *restrict panel = (const T *){args.slot(f'P_{n}')};",
                      f"    const ptrdiff_t c = ({columns} + LANES - 1) / LANES < WIDEST ? "
                      f"({columns} + LANES - 1) / LANES : WIDEST;",
                      f"    const ptrdiff_t tiles = ({columns} + c * LANES - 1) / (c * LANES);",
                      "    for (ptrdiff_t u = 0; u < tiles; u++) {",
                      "        for (ptrdiff_t block = k0; block < k1; block++) {",
                      "            const ptrdiff_t r = block * MR;",
                      "            const ptrdiff_t m = rows - r < MR ? rows - r : MR;",
                      f"            kernel_c(TILE_VECTORS({columns} - u * c * LANES, c), m, "
                      f"{operand.size}, x + r * {operand.size}, "
                      f"{operand.size}, 0, NULL, 0, panel + u * {operand.size} * c * LANES, "
                      f"{bias}, out + r * {job.out_width} + u * c * LANES, {job.out_width}, "
                      f"LANES, {columns} - u * c * LANES, LANES, {int(job.add)});",
                      "        }", "    }", "    }"]
        return lines + ["}", ""]

    def functions(self, args: Arguments) -> list[str]:
        """The step's functions and :data:`RUN`, which runs steps ``t0 <= t < t1``."""
        segments = range(len(self.kernels.segments))
        lines: list[str] = self._before(args) if self.hoisted else []
        for k in segments:
            lines += self._elements(k, args) + [""] + self._segment(k, args) + [""]
        lines += ["/* steps t0 <= t < t1 for part `part` of `parts`: its share of the items "
                  "(unit tiles x row blocks: an even share of the work for any H and B), a "
                  "barrier after every segment, except where the items are row blocks: "
                  "then a part's rows need nothing from another's (every sequence is its own "
                  "recurrence) and the parts never wait for each other. Each part looks at "
                  "rows c0 <= b < c1 of the step's x and y (its own, or an even share once "
                  "all are written), and of the states at the end, while they are in its "
                  "caches, and sets the run's flags (NONFINITE) where one is not finite */",
                  "static void steps_part(ptrdiff_t part, ptrdiff_t parts, ptrdiff_t t0, "
                  "ptrdiff_t t1, ptrdiff_t batch, void **a, ptrdiff_t *sense) {",
                  "    const ptrdiff_t blocks = row_blocks(batch, parts);",
                  "    const _Bool own = own_rows(batch, parts);",
                  "    const ptrdiff_t items = own ? blocks : batch <= MR ? TILES "
                  ": TILES * blocks;",
                  "    const ptrdiff_t i0 = share_start(part, parts, items, batch, blocks), "
                  "i1 = share_start(part + 1, parts, items, batch, blocks);",
                  "    const ptrdiff_t group = row_group(batch, parts, blocks);",
                  "    const ptrdiff_t c0 = own ? block_row(i0, batch, blocks, group) : "
                  "batch * part / parts;",
                  "    const ptrdiff_t c1 = own ? block_row(i1, batch, blocks, group) : "
                  "batch * (part + 1) / parts;",
                  "    vec seen_x = {0}, seen = {0};  /* see look_at */"]
        lines += ["    for (ptrdiff_t t = t0; t < t1; t++) {"]
        for k in segments:
            lines += [f"        segment_{k}(t, batch, i0, i1, parts, a);",
                      "        if (!own) barrier(parts, sense);"]
        output = self.kernels.output
        if output is not None:
            lines += ["    " + self.pointer(output.name, False, args),
                      f"        look_at(&seen, {output.name} + c0 * {output.width}, "
                      f"(c1 - c0) * {output.width});"]
        for node_id, name in self.x_operands.items():
            size = self.spec.width(node_id)
            lines += ["    " + args.pointer(name, False, f" + t * batch * {size}"),
                      f"        look_at(&seen_x, {name} + c0 * {size}, (c1 - c0) * {size});"]
        lines.append("    }")
        for state in self.kernels.states.values():
            lines += ["    {", "    " + args.pointer(state.name, False),
                      f"        look_at(&seen, {state.name} + c0 * {self.hidden}, "
                      f"(c1 - c0) * {self.hidden});", "    }"]
        lines += [f"    const unsigned flags = (nonfinite_seen(seen) ? {RESULTS_NONFINITE} : 0)"
                  f" | (nonfinite_seen(seen_x) ? {X_NONFINITE} : 0);",
                  f"    if (flags) __atomic_fetch_or((unsigned *){args.slot(NONFINITE)}, flags, "
                  "__ATOMIC_RELAXED);", "}", ""]
        sense = "    ptrdiff_t sense = __atomic_load_n(&barrier_sense, __ATOMIC_ACQUIRE);"
        # the hoisted products' rows are all T·B rows, split otherwise than the step's
        before = ["    before_part(part, parts, t0, t1, batch, a);",
                  "    barrier(parts, &sense);"] if self.hoisted else []
        lines += ["/* steps t0 <= t < t1 for part `part` of `parts` (see steps_part) */",
                  f"static void run_part({PART_PARAMETERS}) {{", sense, *before,
                  "    steps_part(part, parts, t0, t1, batch, a, &sense);", "}", "",
                  gemm_c.entry(RUN, "run_part", "steps t0 <= t < t1 on `parts` threads"), ""]
        if self.hoisted:
            lines += ["/* the hoisted products of steps t0 <= t < t1 for part `part` of `parts`, "
                      "then the steps by part 0 alone */",
                      f"static void alone_part({PART_PARAMETERS}) {{", sense, *before,
                      "    if (part == 0) steps_part(0, 1, t0, t1, batch, a, &sense);", "}", "",
                      gemm_c.entry(RUN_ALONE, "alone_part", "the hoisted products of steps "
                                   "t0 <= t < t1 on `parts` threads, the steps on this one"),
                      ""]
        return lines

    @property
    def source(self) -> str:
        return "\n".join([*self.header(), *self.functions(self.args)])


#: Bytes of ``y`` up to which a plain run makes ``y`` and the final states in one
#: allocation (64-byte aligned, but for one sequence, where NumPy's own alignment ran
#: as fast): a small run lasts tens of microseconds, and a second aligned array and its
#: address took 2 of them (T = 1, B = 4, H = 80: 18.2 against 16.2 µs a call).
#: A final state kept alive keeps that much of ``y``'s memory with it.
TOGETHER_BYTES = 1 << 16


def _address(array: np.ndarray) -> int:
    """Where a C-contiguous array's data starts (for a writable one, through a ctypes view
    of its buffer: half the microsecond that ``array.ctypes.data`` takes)."""
    if array.flags.writeable and array.size:
        return ctypes.addressof(ctypes.c_char.from_buffer(cast(Any, array)))  # NumPy: a buffer
    return int(array.ctypes.data)


class _State(NamedTuple):
    """A state as a build holds it."""

    name: str
    buffer: np.ndarray  # (spec batch, H): read and written by the step (the first B rows)
    snapshot: np.ndarray | None  # the copy the next step's GEMMs read, if the step keeps one
    at: int  # where the step's arguments place it
    home: int  # the buffer's address (a plain run places the state in its results instead)


@dataclass
class _Build:
    """One compiled variant of the step (plain, or recording every assignment), with
    everything a run needs worked out once (a small run lasts tens of microseconds)."""

    step: NativeStep
    args: Arguments  # the library's arguments (the step's, and more in a backward's library)
    run: Any  # RUN: (t0, t1, batch, a, parts)
    run_alone: Any  # RUN_ALONE, where the step hoists the products of x; else None
    fixed: dict[str, np.ndarray]  # the arrays that stay from run to run, states included
    placement: gemm_c.Placement  # where new weights go in them
    pointers: Any  # the argument array, its per-run entries set by each run
    python_statics: bool  # some static value is computed in NumPy before the loop
    operands: list[tuple[str, str, int]]  # static GEMM operands: node, name, width
    states: list[_State]
    per_run: list[Binding]  # the bindings whose arrays each run makes
    hidden: list[Binding]  # those no caller sees: not y, not a static value made in NumPy
    shown: list[Binding]  # the others
    #: Where ``y`` and ``x`` go in :attr:`pointers` when a run of this build makes only
    #: ``y`` and reads only ``x`` (the common case, run by :meth:`NativePlan._run_plain`).
    plain: tuple[int, int] | None = None
    #: The ``hidden`` arrays of a plain run, kept for the last ``(steps, batch)`` while they
    #: are small (:data:`SCRATCH_BYTES`).
    scratch: dict[tuple[int, int], dict[str, np.ndarray]] = field(default_factory=dict)
    #: By a run's rows: how its runs share their work between threads, where that is
    #: chosen by timing (:class:`ThreadChoice`; None where not). A build's own: a tape's
    #: forward runs slower a step than a plain run, and must not set the plain run's
    #: choice.
    choices: dict[int, ThreadChoice | None] = field(default_factory=dict)


def weight_arrays(step: NativeStep, lanes: int) -> dict[str, np.ndarray]:
    """The arrays of a build that hold weights: the parameters and biases the bodies read,
    the packed panels."""
    spec, kernels = step.spec, step.kernels
    found = arrays(kernels.bindings.values(), Lifetime.WEIGHTS, np, spec.dtype, spec.batch,
                   params=spec.params, weights={kernels.bias.name: step.hoisted_bias},
                   empty=aligned_empty)
    found.update(step.packed(lanes))
    return found


def fixed_arrays(step: NativeStep, lanes: int) -> dict[str, np.ndarray]:
    """Every array a build keeps from run to run: the weights the bodies read, the work
    buffers (states included), the snapshots, the packed panels."""
    spec, kernels = step.spec, step.kernels
    bindings = kernels.bindings.values()
    fixed = weight_arrays(step, lanes)
    fixed.update(arrays(bindings, Lifetime.WORK, np, spec.dtype, spec.batch,
                        empty=aligned_empty))
    for name in step.snapshots.values():
        fixed[name] = aligned(np.zeros((2, spec.batch, spec.hidden), dtype=spec.dtype))
    fixed[NONFINITE] = np.zeros(1, dtype=np.uintc)
    return fixed


class NativePlan(Executor):
    """The native executor for one cell, batch size and dtype (NumPy arrays only).

    ``threads`` is how many threads share a run's work (default: for steps of at least
    :data:`THREAD_WORK` multiply-adds, :func:`~lstm_graph.executors.prepare.usable_threads`,
    else 1). Runs of small steps of a few sequences (:data:`SMALL_STEP_WORK`) take that
    many, one, or that many for the hoisted products and one for the steps, whichever
    their own timings found faster (:class:`ThreadChoice`).
    """

    name = "native"
    backends = ("numpy",)
    weight_copies = 2  # the panels, and a group's weights in their order while it packs

    def __init__(self, spec: Spec, threads: int | None = None, work: str = "run"):
        super().__init__(spec)
        if spec.xp is not np:
            raise BackendError("the native executor runs on the numpy backend only")
        require_compiler()
        self.layout = analyse(spec.schedule)
        self.statics = step_statics(spec.schedule, self.layout)
        self.hoisted = hoists(spec.schedule, self.layout, spec.batch, spec.input_size,
                              spec.hidden, spec.dtype)
        self.step = NativeStep(spec, self.layout, self.step_kernels(), self.statics,
                               self.hoisted)
        self.kernels = self.step.kernels
        self._plain_build: _Build | None = None
        self._traced: _Build | None = None
        self._backward: Any = None
        self._stale: set[int] = set()  # builds whose panels hold older weights
        size = self.step.work(spec.batch)
        self.threads = threads if threads is not None else \
            (1 if size < THREAD_WORK else usable_threads())
        self.chunk = max(1, PROGRESS_WORK // max(1, size))
        # the library ``work`` (run, trace or grad) needs, compiled now so that a compiler
        # that fails on it fails here (the registry then falls back); each other one is
        # compiled when first needed: a gradient never runs the plain step's library
        if work == "grad":
            self.gradient()
        elif work == "trace":
            self._traced_build()
        else:
            self._plain_build = self._build(self.step)

    def _run_steps(self, build: _Build, t0: int, t1: int, batch: int, pointers: Any) -> None:
        """Steps ``t0 <= t < t1`` of ``batch`` rows on :attr:`threads` threads; where those
        are small steps of few rows (:data:`SMALL_STEP_WORK`), shared out as their
        :class:`ThreadChoice` picks, timed for it."""
        try:
            choice = build.choices[batch]
        except KeyError:
            small = self.threads > 1 and batch < 2 * OWN_ROWS \
                and self.step.work(batch) < SMALL_STEP_WORK
            choice = build.choices[batch] = \
                ThreadChoice(self.threads, build.run_alone is not None) if small else None
        if choice is None:
            build.run(t0, t1, batch, pointers, self.threads)
            return
        way = choice.next()
        began = time.perf_counter()
        (build.run_alone if way.alone else build.run)(t0, t1, batch, pointers, way.threads)
        choice.record(way, time.perf_counter() - began, t1 - t0)

    def step_kernels(self, trace: bool = False, tape: TapeLayout | None = None) -> StepKernels:
        """The native step's kernels: hoisted products folded into the groups' GEMMs, ``S``
        and the static linears the step reads computed at each step; or (:attr:`hoisted`)
        those computed before the loop over every step's rows."""
        spec = self.spec
        return step_kernels(spec.schedule, self.layout, spec.hidden, trace=trace,
                            folded=() if self.hoisted else folded(self.layout),
                            made_statics=self.statics, hoisted_per_step=self.hoisted,
                            tape=tape)

    @property
    def _plain(self) -> _Build:
        """The plain step's build (``y`` and the final states), compiled on first use."""
        if self._plain_build is None:
            if self.step.spec is not self.spec:  # new weights since (update): its step's
                self.step = NativeStep(self.spec, self.layout, self.kernels, self.statics,
                                       self.hoisted)
            self._plain_build = self._build(self.step)
        return self._plain_build

    def _traced_build(self) -> _Build:
        """The build that records every assignment (for :meth:`trace`), compiled on
        first use."""
        if self._traced is None:
            self._traced = self._build(NativeStep(self.spec, self.layout,
                                                  self.step_kernels(trace=True), self.statics,
                                                  self.hoisted))
        return self._traced

    def _build(self, step: NativeStep) -> _Build:
        spec = self.spec
        library = buildcache.library(step.source, attempts(),
                                     f"the native step of cell '{spec.schedule.graph.name}'",
                                     symbols=(RUN.name, gemm_c.LANES_SYMBOL.name,
                                              gemm_c.PLACE.name,
                                              *((RUN_ALONE.name,) if step.hoisted else ())))
        return self._prepared(step, library)

    def _prepared(self, step: NativeStep, library: ctypes.CDLL,
                  args: Arguments | None = None) -> _Build:
        """What a run of ``step``, compiled into ``library`` (whose functions take ``args``,
        the step's own by default), needs."""
        spec, layout = self.spec, self.layout
        args = args or step.args
        lanes = int(gemm_c.LANES_SYMBOL.bind(library)())
        fixed = fixed_arrays(step, lanes)
        placement = gemm_c.Placement(library, list(spec.params), fixed,
                                     lambda: weight_arrays(self.tagged_step(step), lanes))
        pointers = (ctypes.c_void_p * len(args))(
            *(fixed[name].ctypes.data if name in fixed else None for name in args))
        graph = spec.schedule.graph
        python_statics = any(n.kind is NodeKind.OP and n.id in layout.static
                             and n.id not in step.statics for n in graph.nodes.values())
        operands = [(node, name, spec.width(node)) for node, name in step.operands.items()]
        states = [_State(state, fixed[binding.name], fixed[step.snapshots[state]][0]
                         if state in step.snapshots else None, args.index(binding.name),
                         fixed[binding.name].ctypes.data)
                  for state, binding in step.kernels.states.items()]
        per_run = [b for b in step.kernels.bindings.values() if b.lifetime is Lifetime.RUN]
        inputs = graph.inputs
        hidden = [b for b in per_run if b.role is not Role.OUTPUT
                  and not (b.role is Role.STATIC and (python_statics or b.key in inputs))]
        shown = [b for b in per_run if b not in hidden]
        output = step.kernels.output
        plain = (args.index(output.name), args.index(operands[0][1])) \
            if not python_statics and output is not None and shown == [output] \
            and len(operands) == 1 and operands[0][2] == spec.input_size else None
        return _Build(step, args, RUN.bind(library),
                      RUN_ALONE.bind(library) if step.hoisted else None, fixed, placement,
                      pointers, python_statics, operands, states, per_run, hidden, shown, plain)

    def tagged_step(self, step: NativeStep) -> NativeStep:
        """``step`` with :func:`~.gemm_c.tags` for weights (float64): its packed arrays say
        where each parameter's elements go."""
        spec = replace(self.spec, params=gemm_c.tags(self.spec.params),
                       dtype=np.dtype(np.float64))
        return NativeStep(spec, self.layout, step.kernels, self.statics, self.hoisted)

    def update(self, params: Mapping[str, Array]) -> None:
        """New weights, put into each build's packed arrays in place by one C pass (when
        the build next runs: a trainer runs only the backward pass's build)."""
        super().update(params)
        self._stale = {id(build) for build in (self._plain_build, self._traced)
                       if build is not None}
        if self._backward is not None:
            self._stale.add(id(self._backward.build))

    def refresh(self, build: _Build) -> None:
        """The spec's weights into ``build``'s arrays, if they hold older ones."""
        if id(build) in self._stale:
            build.placement.load(self.spec.params, self.spec.dtype)
            self._stale.discard(id(build))

    @property
    def source(self) -> str:
        return self.step.source

    def run(self, x: Array, state: Mapping[str, Array], progress: Progress | None = None
            ) -> tuple[Array, dict[str, Array]]:
        build = self._plain
        if progress is None and self._kept(build, x):
            y, final, _ = self._run_plain(build, x, state)
            return y, final
        y, final, _, _ = self._execute(build, x, state, progress)
        return y, final

    def run_from_zeros(self, x: Array) -> FromZeros | None:
        """:meth:`_run_plain` from zero states, where an earlier run of ``x``'s shape left
        its work arrays (then no NumPy arithmetic is done: the statics are computed in C);
        the step looked at every number of ``x`` as it read it, and at every ``y`` and
        final state value as it wrote it."""
        build = self._plain
        if not self._kept(build, x):
            return None
        y, final, flags = self._run_plain(build, x, None)
        return FromZeros(y, final, bool(build.step.x_operands) and not flags & X_NONFINITE,
                         not flags & RESULTS_NONFINITE)

    def _kept(self, build: _Build, x: Array) -> bool:
        """Whether a run of ``build`` over ``x`` can be :meth:`_run_plain`'s."""
        return build.plain is not None and type(x) is np.ndarray \
            and x.dtype == self.spec.dtype and x.ndim == 3 \
            and x.shape[2] == self.spec.input_size and x.flags.c_contiguous \
            and (x.shape[0], x.shape[1]) in build.scratch

    def _run_plain(self, build: _Build, x: np.ndarray, state: Mapping[str, Array] | None
                   ) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
        """What :meth:`_execute` does for a plain run whose work arrays an earlier run of
        the same shape left (:attr:`_Build.scratch`, their places set): only ``y`` is
        made and only ``y``, ``x`` and the states are placed: the step works on the states
        in the array it returns them in (one for all, zeros where ``state`` is None), so
        nothing is copied out. A small run lasts tens of microseconds, and this is a third
        of the Python around it. Also returns the run's :data:`NONFINITE` flags: whether
        the step read a number of ``x``, or wrote a value of ``y`` or of a final state,
        that was not finite (testing ``x`` before the run and ``y`` and ``c`` after it took
        0.6 ms of the medium LSTM's run, the arrays read from memory)."""
        self.refresh(build)
        steps, batch = x.shape[0], x.shape[1]
        output = build.step.kernels.output
        assert output is not None and build.plain is not None
        dtype, hidden = self.spec.dtype, self.spec.hidden
        lanes = gemm_c.ALIGNMENT // dtype.itemsize
        y_shape = (output.slots(steps), batch, output.width)
        y_size = math.prod(y_shape)
        count, size = len(build.states), batch * hidden
        stride = -(-size // lanes) * lanes  # each state's rows start on a 64-byte boundary
        pointers = build.pointers
        y_at, x_at = build.plain
        if y_size * dtype.itemsize <= TOGETHER_BYTES:
            span = -(-y_size // lanes) * lanes
            if batch == 1:  # NumPy's own alignment: the same speed, half a microsecond less
                flat = np.empty(span + count * stride, dtype)
                address = _address(flat)
            else:
                flat, address = gemm_c.aligned_flat(span + count * stride, dtype)
            y, block, at = flat[:y_size].reshape(y_shape), flat[span:], \
                address + span * dtype.itemsize
            pointers[y_at] = address
        else:
            y = aligned_empty(y_shape, dtype)
            pointers[y_at] = _address(y)
            block, at = gemm_c.aligned_flat(count * stride, dtype)
        pointers[x_at] = _address(x)
        finals: np.ndarray | list[np.ndarray]
        if stride == size:
            block = finals = block.reshape(count, batch, hidden)
        else:
            finals = [block[k * stride:k * stride + size].reshape(batch, hidden)
                      for k in range(count)]
        if state is None:
            block.fill(0)
        for k, held in enumerate(build.states):
            pointers[held.at] = at + k * stride * dtype.itemsize
            if state is not None:
                finals[k][...] = state[held.name]
            if held.snapshot is not None:
                np.copyto(held.snapshot[:batch], finals[k])
        flag = build.fixed[NONFINITE]
        flag[0] = 0
        self._run_steps(build, 0, steps, batch, pointers)
        return y, {held.name: finals[k] for k, held in enumerate(build.states)}, int(flag[0])

    def trace(self, x: Array, state: Mapping[str, Array], progress: Progress | None = None
              ) -> dict[str, Array]:
        spec = self.spec
        traced = self._traced_build()
        _, _, static, arrays = self._execute(traced, x, state, progress, everything=True)
        found = static_trace(spec.schedule, self.layout, static, np, x.shape[0], x.shape[1],
                             spec.width, spec.dtype)
        found.update({b.key: arrays[b.name] for b in traced.step.kernels.of_role(Role.TRACE)})
        return {name: found[name] for name in spec.schedule.graph.assignments}

    def gradient(self) -> Any:
        """The compiled backward pass (:class:`~.native_backward.NativeGrad`), built on the
        first gradient asked for and kept."""
        if self._backward is None:
            from lstm_graph.executors.native_backward import NativeGrad

            self._backward = NativeGrad(self)
        return self._backward

    def forward(self, x: Array, state: Mapping[str, Array]) -> Tape:
        tape: Tape = self.gradient().forward(x, state)
        return tape

    def backward(self, tape: Tape, grad_y: Array, grad_final: Mapping[str, Array],
                 record: bool = False) -> Gradients:
        self.refuse_record(record)
        found: Gradients = self.gradient().backward(tape, grad_y, grad_final)
        return found

    @classmethod
    def allocations(cls, schedule: Schedule, work: str, steps: int, batch: int,
                    input_size: int, hidden: int, dtype: np.dtype) -> list[Allocation]:
        """``y``, the static values computed before the loop, the hoisted products where
        the step does not multiply ``x_t`` itself (:func:`hoists`), the states; a trace's
        every assignment and every
        static value; for a gradient, the tape (what backward reads, per step), every
        linear's ``dZ`` over all steps, and the gradients of ``x`` and the static values."""
        from lstm_graph.executors.native_backward import grad_allocations

        return grad_allocations(schedule, work, steps, batch, input_size, hidden, dtype)

    def statics_for(self, build: _Build, x: Array, everything: bool = False
                    ) -> dict[str, Array]:
        """The static values a run of ``build`` reads (all of them with ``everything``)."""
        spec = self.spec
        if everything or build.python_statics:
            return static_values(spec.schedule, self.layout, np, spec.params, x, spec.dtype,
                                 skip=() if everything else build.step.statics)
        return {next(iter(spec.schedule.graph.inputs)): x}

    def _per_run(self, build: _Build, steps: int, batch: int, static: Mapping[str, Array],
                 given: Mapping[str, np.ndarray], keep: bool) -> dict[str, np.ndarray]:
        """The per-run arrays of a run of ``build``: those ``given``, and the rest made;
        with ``keep``, the :attr:`_Build.hidden` ones are taken from
        :attr:`_Build.scratch` where the last run of this shape left them."""
        dtype = self.spec.dtype
        if given or not keep:
            build.scratch.clear()  # a kept entry's places in `pointers` are about to change
            made = arrays([b for b in build.per_run if b.name not in given], Lifetime.RUN, np,
                          dtype, batch, steps, static=static, empty=aligned_empty)
            made.update(given)
            return made
        kept = build.scratch.get((steps, batch))
        if kept is None:
            kept = arrays(build.hidden, Lifetime.RUN, np, dtype, batch, steps,
                          empty=aligned_empty)
            build.scratch.clear()
            if sum(a.nbytes for a in kept.values()) <= SCRATCH_BYTES:
                build.scratch[(steps, batch)] = kept
        made = arrays(build.shown, Lifetime.RUN, np, dtype, batch, steps, static=static,
                      empty=aligned_empty)
        made.update(kept)
        return made

    def _execute(self, build: _Build, x: Array, state: Mapping[str, Array],
                 progress: Progress | None, everything: bool = False,
                 given: Mapping[str, np.ndarray] | None = None,
                 before: Callable[[dict[str, np.ndarray]], None] | None = None
                 ) -> tuple[Array, dict[str, Array], dict[str, Array], dict[str, np.ndarray]]:
        """Run ``build``; return ``y``, the final states, the static values (all of them
        with ``everything``, for a trace) and the per-run arrays (those ``given``, and the
        ones made; ``before`` sees them just before the C runs)."""
        spec, step = self.spec, build.step
        self.refresh(build)
        dtype = spec.dtype
        steps, batch = x.shape[0], x.shape[1]
        static = self.statics_for(build, x, everything)
        pointers, index = build.pointers, build.args.index
        made = self._per_run(build, steps, batch, static, given or {},
                             keep=build is self._plain_build and not build.python_statics)
        for node_id, name, width in build.operands:
            value = static[node_id]
            if value.shape != (steps, batch, width) or value.dtype != dtype \
                    or not value.flags.c_contiguous:
                value = np.ascontiguousarray(np.broadcast_to(value, (steps, batch, width)),
                                             dtype=dtype)
            made[name] = value
        output = step.kernels.output
        y = made[output.name] if output is not None else \
            static_output(spec.schedule, static, np, steps, batch, spec.output_width, dtype)
        for name, array in made.items():
            pointers[index(name)] = _address(array)
        copyto = np.copyto  # the first `batch` rows of each buffer: the C strides by batch
        for held in build.states:
            pointers[held.at] = held.home
            copyto(held.buffer[:batch], state[held.name])
            if held.snapshot is not None:
                copyto(held.snapshot[:batch], held.buffer[:batch])
        if before is not None:
            before(made)
        if progress is None:
            self._run_steps(build, 0, steps, batch, pointers)
        else:
            for start in range(0, steps, self.chunk):
                stop = min(steps, start + self.chunk)
                self._run_steps(build, start, stop, batch, pointers)
                progress(stop - start)
        final = {held.name: held.buffer[:batch].copy() for held in build.states}
        return y, final, static, made
