"""The native step: a cell's time loop generated as C, compiled once, run without Python.

The NumPy plan (:mod:`lstm_graph.plan`) pays about a microsecond of Python
and NumPy overhead per call, a dozen or more calls per step, and NumPy's
scalar ``exp``/``tanh`` (3–6 ns per float32 element on a CPU without
AVX-512). The native step removes both. It reuses the CuPy plan's fused
kernels (:func:`lstm_graph.cuda.kernel_segments`: the element-wise work of a
step as C expressions from the op table, every value a register) and wraps
them in plain C loops, which the system C compiler vectorises:

- **whole-loop mode** (small steps): the whole time loop is one C call,
  the per-step GEMMs included as simple loops;
- **segment mode** (large steps): each step's GEMMs go through NumPy's BLAS,
  and each fused segment is one C call.

Everything before the loop (static values, the hoisted GEMM over ``T·B``
rows) is the NumPy plan's. For float32, ``exp`` and ``tanh`` are our own
branch-free versions (Cody–Waite reduction and Cephes' polynomials, within
2 ulp of the true value), so the compiler can vectorise them; float64 uses
the C library's. The compiler runs with ``-ffp-contract=off``: no fused
multiply-adds, each operation rounds as NumPy's does.

Builds are cached on disk by a hash of the source, the flags and the CPU
(``$LSTM_GRAPH_CACHE``, else ``~/.cache/lstm-graph``), so a cell is compiled
once per machine. The source is ours, generated from the validated graph:
numbers and generated names only. Without a C compiler (``$CC``, ``cc``,
``gcc`` or ``clang``), :func:`compiler` is None and the default executor
falls back to the NumPy plan.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from lstm_graph.cuda import Kernels, kernel_segments
from lstm_graph.errors import BackendError
from lstm_graph.ir import NodeKind
from lstm_graph.layout import Layout, analyse, pack_group, pack_hoisted, unscaled
from lstm_graph.plan import hoist, static_values
from lstm_graph.schedule import Schedule

Array = Any
#: Per-step GEMM work (multiply-adds, all groups) up to which the GEMMs run in C, inside
#: the one-call time loop; above it, NumPy's BLAS runs them (measured crossover).
WHOLE_LOOP_LIMIT = 1 << 16
#: The default executor compiles cells up to this many op nodes to C; bigger ones would
#: spend seconds in the C compiler (10,000 nodes: about 20 s), so they run the NumPy plan.
MAX_NODES = 2000
#: Steps per C call in whole-loop mode, between progress reports.
CHUNK = 4096
FLAGS = ("-O3", "-ffp-contract=off", "-fno-trapping-math", "-fPIC", "-shared")
#: Tried in order until the compiler accepts one. First: tuned for this CPU, with 256-bit
#: vectors where it has them (gcc picks 128 bits on some, e.g. AMD Zen 1) and instructions
#: scheduled before register allocation, which interleaves the gates' independent exp
#: chains (the step is latency-bound: together 25-45 % faster on the element-wise work,
#: measured on Zen 1). Then tuned for this CPU only, then portable.
TUNINGS = (("-march=native", "-mprefer-vector-width=256", "-fschedule-insns", "-fsched-pressure"),
           ("-march=native",), ())

#: float32 exp and tanh the compiler can vectorise (no library calls, no branches).
MATH_FLOAT = r"""
#include <stdint.h>
#include <string.h>

/* exp(x) = 2^n * exp(r), n = round(x / ln 2), |r| <= ln2 / 2 (Cody-Waite: ln 2 in two parts,
   n * LN2_HI exact), exp(r) by Cephes' degree-6 polynomial. Clamped so that 2^n stays a
   normal float: exp(88.38) = 2.4e38 stands in for overflow, exp(-87.34) = 1.2e-38 for
   underflow, which sigmoid and tanh cannot tell from inf and 0. NaN stays NaN. */
static inline float lg_expf(float x) {
    x = x > 88.3762626647949f ? 88.3762626647949f : x;
    x = x < -87.3365447505531f ? -87.3365447505531f : x;
    float n = x * 1.44269504088896341f + 12582912.0f;  /* 1.5 * 2^23: rounds to an integer */
    n -= 12582912.0f;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* tanh: Cephes' odd polynomial below |x| = 0.625 (no cancellation near 0), else
   1 - 2 / (exp(2|x|) + 1) with the sign of x. */
static inline float lg_tanhf(float x) {
    float ax = x < 0.0f ? -x : x;
    float big = 1.0f - 2.0f / (lg_expf(2.0f * ax) + 1.0f);
    big = x < 0.0f ? -big : big;
    float z = x * x;
    float small = -5.70498872745e-3f;
    small = small * z + 2.06390887954e-2f;
    small = small * z - 5.37397155531e-2f;
    small = small * z + 1.33314422036e-1f;
    small = small * z - 3.33332819422e-1f;
    small = small * z * x + x;
    return ax < 0.625f ? small : big;
}
"""

_C_TYPES = {np.dtype("float32"): "float", np.dtype("float64"): "double"}
_FLOAT_FUNCTIONS = {"exp": "lg_expf", "tanh": "lg_tanhf"}


@cache
def compiler() -> str | None:
    """The C compiler to use: ``$CC``, else the first of cc, gcc, clang; None if none."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def suits(schedule: Schedule) -> bool:
    """Whether the default executor should use the native step for this cell."""
    ops = sum(1 for node in schedule.graph.nodes() if node.kind is NodeKind.OP)
    return ops <= MAX_NODES and compiler() is not None


def require_compiler() -> str:
    """:func:`compiler`, or a :class:`BackendError` that says what is missing."""
    cc = compiler()
    if cc is None:
        raise BackendError("the native executor needs a C compiler (cc, gcc or clang, or $CC); "
                           "none was found. Use --executor numpy, or install one "
                           "(e.g. apt-get install gcc)")
    return cc


def _cpu_signature() -> str:
    """What a cached build depends on besides its source: the CPU it was tuned for."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(sorted({ln for ln in lines if ln.startswith(("model name", "flags"))}))
    except OSError:
        return f"{platform.machine()} {platform.processor()}"


def _cache_dir() -> Path:
    base = os.environ.get("LSTM_GRAPH_CACHE") or \
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lstm-graph"
    path = Path(base)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if os.access(path, os.W_OK):
            return path
    except OSError:
        pass
    return Path(tempfile.gettempdir())


def build(source: str) -> ctypes.CDLL:
    """Compile C ``source`` to a shared library (or reuse the cached build) and load it.

    Raises :class:`BackendError` when there is no compiler or it fails.
    """
    cc = require_compiler()
    attempts = [(*FLAGS, *tuning) for tuning in TUNINGS]
    digest = hashlib.sha256("\0".join([source, cc, *attempts[0], _cpu_signature()]).encode())
    library = _cache_dir() / f"lstm-graph-{digest.hexdigest()[:24]}.so"
    if not library.exists():
        errors = ""
        for flags in attempts:
            with tempfile.TemporaryDirectory() as work:
                c_file = Path(work) / "step.c"
                c_file.write_text(source, encoding="utf-8")
                partial = Path(work) / "step.so"
                done = subprocess.run([cc, *flags, "-o", str(partial), str(c_file), "-lm"],
                                      capture_output=True, text=True)
                if done.returncode == 0:
                    fd, temporary = tempfile.mkstemp(dir=library.parent, suffix=".so.part")
                    os.close(fd)
                    shutil.copyfile(partial, temporary)
                    os.replace(temporary, library)  # whole or not at all, even when racing
                    break
                errors = done.stderr
        else:
            raise BackendError(f"the C compiler {cc} failed on the generated step:\n{errors}")
    return ctypes.CDLL(str(library))


class NativeStep:
    """The generated C of one cell, batch size, width and dtype, and how to call it."""

    def __init__(self, schedule: Schedule, layout: Layout, kernels: Kernels, batch: int,
                 hidden: int, dtype: np.dtype):
        self.schedule, self.layout, self.kernels = schedule, layout, kernels
        self.batch, self.hidden, self.dtype = batch, hidden, dtype
        graph = schedule.graph
        self.weights = {f"W_{k}": source for k, source in enumerate(layout.groups)}
        self.names = [*kernels.bindings, *self.weights]  # argument k is pointer a[k]
        self.operand = {}  # group source -> the binding holding its value
        for source in layout.groups:
            node = graph.node(source)
            self.operand[source] = (f"old_{node.state}" if node.kind is NodeKind.OLD else
                                    next(n for n, b in kernels.bindings.items()
                                         if b == ("buffer", source)))
        self.source = self._source()

    def per_step(self, name: str) -> int:
        """Elements one step advances the array ``name`` by (0: the same every step)."""
        kind, key = self.kernels.bindings.get(name, ("weights", ""))
        if kind == "hoisted":
            return self.batch * len(self.layout.hoisted) * self.hidden
        if kind == "output" or (kind == "static" and self.schedule.sizes[key] != "1"):
            return self.batch * self.hidden
        return 0

    def _pointer(self, name: str, written: bool) -> str:
        index = self.names.index(name)
        const = "" if written else "const "
        step = self.per_step(name)
        offset = f" + t * {step}" if step else ""
        return f"    {const}T *restrict {name} = ({const}T *)a[{index}]{offset};"

    def _segment(self, k: int) -> list[str]:
        segment = self.kernels.segments[k]
        assert segment.body[0].startswith("const int b =") and \
            segment.body[1].startswith("const int j =")
        body = segment.body[2:]
        if self.dtype == np.float32:
            body = [re.sub(r"\b(exp|tanh)\(", lambda m: _FLOAT_FUNCTIONS[m[1]] + "(", line)
                    for line in body]
        lines = [f"static void segment_{k}(long t, int b0, int b1, void **a) {{"]
        lines += [self._pointer(n, False) for n in segment.inputs]
        lines += [self._pointer(n, True) for n in segment.outputs]
        lines += ["    (void)t;",
                  "    for (int b = b0; b < b1; b++) {",
                  "        #pragma GCC ivdep",
                  f"        for (int j = 0; j < {self.hidden}; j++) {{",
                  f"            const long i = (long)b * {self.hidden} + j;"]
        lines += [f"            {line}" for line in body]
        lines += ["        }", "    }", "}"]
        return lines

    def gemm_calls(self, k: int) -> list[tuple[str, str, str, int, int]]:
        """Segment ``k``'s GEMMs: (operand, weights, output binding, inner size, width)."""
        groups = list(self.layout.groups)
        calls = []
        for source in self.kernels.segments[k].gemms:
            g = groups.index(source)
            width = len(self.layout.groups[source].members) * self.hidden
            calls.append((self.operand[source], f"W_{g}", f"G_{g}", self.hidden, width))
        return calls

    def _source(self) -> str:
        name = re.sub(r"[^\w.-]", "_", self.schedule.graph.name)
        lines = [f"/* lstm-graph native step: cell {name}, batch "
                 f"{self.batch}, H {self.hidden}, {self.dtype.name} (generated) */",
                 "#include <math.h>", f"typedef {_C_TYPES[self.dtype]} T;"]
        if self.dtype == np.float32:
            lines.append(MATH_FLOAT)
        lines += ["/* out[rows, n] = x[rows, k] . w[k, n], summed over k in order */",
                  "static void gemm(int rows, int k, int n, const T *restrict x,",
                  "                 const T *restrict w, T *restrict out) {",
                  "    for (int b = 0; b < rows; b++) {",
                  "        T *restrict o = out + (long)b * n;",
                  "        for (int c = 0; c < n; c++) o[c] = 0;",
                  "        for (int q = 0; q < k; q++) {",
                  "            const T v = x[(long)b * k + q];",
                  "            const T *restrict row = w + (long)q * n;",
                  "            for (int c = 0; c < n; c++) o[c] += v * row[c];",
                  "        }", "    }", "}", ""]
        for k in range(len(self.kernels.segments)):
            lines += self._segment(k) + [""]
        lines += ["/* segment k of step t, for batch rows b0 <= b < b1 */",
                  "void lstm_graph_segment(long k, long t, long b0, long b1, void **a) {",
                  "    switch (k) {"]
        lines += [f"    case {k}: segment_{k}(t, (int)b0, (int)b1, a); break;"
                  for k in range(len(self.kernels.segments))]
        lines += ["    }", "}", "", "void lstm_graph_steps(long t0, long t1, void **a) {",
                  "    for (long t = t0; t < t1; t++) {"]
        for k in range(len(self.kernels.segments)):
            for operand, weights, out, inner, width in self.gemm_calls(k):
                i, w, o = (self.names.index(n) for n in (operand, weights, out))
                lines.append(f"        gemm({self.batch}, {inner}, {width}, (const T *)a[{i}], "
                             f"(const T *)a[{w}], (T *)a[{o}]);")
            lines.append(f"        segment_{k}(t, 0, {self.batch}, a);")
        lines += ["    }", "}", ""]
        return "\n".join(lines)


class NativePlan:
    """The native executor for one cell, batch size and dtype; the contract of
    :class:`lstm_graph.plan.Plan`. Needs a C compiler (:func:`compiler`).

    It keeps the hoisted ``S`` of its last run (``T·B`` rows of every dynamic linear's
    input part) to reuse on the next run of the same length: page-faulting a fresh
    buffer of that size costs as much as 2 % of a run.
    """

    kind = "native"

    def __init__(self, schedule: Schedule, xp: Any, params: Mapping[str, Array], batch: int,
                 input_size: int, hidden: int, dtype: np.dtype, whole_loop: bool | None = None,
                 threads: int | None = None):
        if xp is not np:
            raise BackendError("the native executor runs on the numpy backend only")
        self.schedule, self.params = schedule, params
        self.batch, self.input_size, self.hidden, self.dtype = batch, input_size, hidden, dtype
        self.layout = analyse(schedule)
        kernels = kernel_segments(schedule, self.layout, hidden)
        work = batch * hidden * sum(len(g.members) * hidden for g in self.layout.groups.values())
        self.whole_loop = work <= WHOLE_LOOP_LIMIT if whole_loop is None else whole_loop
        # One thread by default: two measured slower (OpenBLAS spins on the other core).
        self.threads = 1 if self.whole_loop else threads or 1
        bounds = np.linspace(0, batch, self.threads + 1).astype(int)
        self._rows = list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))
        if self.threads > 1:
            self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="lstm-graph")
        self.step = NativeStep(schedule, self.layout, kernels, batch, hidden, dtype)
        self.source = self.step.source
        library = build(self.source)
        self._steps = library.lstm_graph_steps
        self._segment = library.lstm_graph_segment
        self._steps.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p]
        self._segment.argtypes = [ctypes.c_long] * 4 + [ctypes.c_void_p]
        self._steps.restype = self._segment.restype = None
        bias, stacks = pack_hoisted(self.layout, params, hidden, dtype, unscaled)
        self.hoisted_bias, self.hoisted_weights = bias, stacks
        self.fixed: dict[str, np.ndarray] = {"S_bias": bias}
        self._hoisted = np.empty((0, 0), dtype=dtype)
        for name, (kind, key) in kernels.bindings.items():
            if kind == "param":
                self.fixed[name] = np.ascontiguousarray(params[key], dtype=dtype)
            elif kind == "buffer":
                self.fixed[name] = np.empty((batch, hidden), dtype=dtype)
            elif kind == "group":
                width = len(self.layout.groups[key].members) * hidden
                self.fixed[name] = np.empty((batch, width), dtype=dtype)
        for name, source in self.step.weights.items():
            self.fixed[name] = pack_group(self.layout, source, params, dtype, unscaled)

    def run(self, x: Array, state: Mapping[str, Array],
            progress: Callable[[int], None] | None = None) -> tuple[Array, dict[str, Array]]:
        """Run ``x`` ``(T, B, I)`` from ``state``; return ``y`` and the final states."""
        graph, step = self.schedule.graph, self.step
        steps, batch = x.shape[0], x.shape[1]
        static = static_values(self.schedule, self.layout, np, self.params, x, self.dtype)
        arrays = dict(self.fixed)
        rows, width = steps * batch, self.hoisted_bias.shape[0]
        if self._hoisted.shape != (rows, width):  # the last run's S, reused when T is the same
            self._hoisted = np.empty((rows, width), dtype=self.dtype)
        arrays["S"] = hoist(np, static, self.hoisted_weights, self.hoisted_bias, steps, batch,
                            add_bias=False, out=self._hoisted)
        arrays["y"] = np.empty((steps, batch, self.hidden), dtype=self.dtype)
        for name, (kind, key) in step.kernels.bindings.items():
            if kind == "state":
                arrays[name] = np.array(state[key], dtype=self.dtype, order="C", copy=True)
            elif kind == "static":
                value = np.broadcast_to(static[key], (steps, batch, self.hidden)) \
                    if self.schedule.sizes[key] != "1" else static[key].reshape(1)
                arrays[name] = np.ascontiguousarray(value, dtype=self.dtype)
        pointers = (ctypes.c_void_p * len(step.names))(
            *(arrays[name].ctypes.data for name in step.names))
        if self.whole_loop:
            for start in range(0, steps, CHUNK):
                stop = min(steps, start + CHUNK)
                self._steps(start, stop, pointers)
                if progress is not None:
                    progress(stop - start)
        else:
            self._segmented(steps, arrays, pointers, progress)
        final = {key: arrays[name] for name, (kind, key) in step.kernels.bindings.items()
                 if kind == "state"}
        return arrays["y"], {name: final[name] for name in graph.states}

    def _segmented(self, steps: int, arrays: dict[str, np.ndarray], pointers: Any,
                   progress: Callable[[int], None] | None) -> None:
        """Per step: each segment's GEMMs through BLAS (on BLAS's threads), then its fused
        C, its rows split over this plan's threads (the C call releases the GIL)."""
        dot, segment, submit = np.dot, self._segment, getattr(self, "_pool", None)
        (lo, hi), others = self._rows[0], self._rows[1:]
        plan = [(k, [(arrays[operand], arrays[weights], arrays[out])
                     for operand, weights, out, _, _ in self.step.gemm_calls(k)])
                for k in range(len(self.step.kernels.segments))]
        for t in range(steps):
            for k, gemms in plan:
                for operand, weights, out in gemms:
                    dot(operand, weights, out)
                if submit is None:
                    segment(k, t, lo, hi, pointers)
                else:
                    parts = [submit.submit(segment, k, t, b0, b1, pointers) for b0, b1 in others]
                    segment(k, t, lo, hi, pointers)
                    for part in parts:
                        part.result()
            if progress is not None:
                progress(1)
