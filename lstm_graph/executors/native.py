"""The native executor: a cell's time loop as generated C, compiled once, run without Python.

The NumPy plan pays about a microsecond of Python and NumPy overhead per
call, a dozen or more calls per step, and NumPy's scalar ``exp``/``tanh``.
The native executor removes both. It takes a step's fused element-wise work
from the shared C generator (:mod:`~lstm_graph.executors.codegen_c`, in its
host dialect: :data:`HOST`) and wraps each segment in plain C loops, which the
system C compiler vectorises:

- **whole-loop mode** (small steps): the whole time loop is one C call,
  the per-step GEMMs included as simple loops;
- **segment mode** (large steps): each step's GEMMs go through NumPy's BLAS,
  and each fused segment is one C call.

Everything before the loop (static values, the hoisted GEMM over ``T·B``
rows) is :mod:`~lstm_graph.executors.prepare`'s. For float32, ``exp`` and
``tanh`` are our own branch-free versions (Cody–Waite reduction and Cephes'
polynomials, within 2 ulp of the true value), so the compiler can vectorise
them; float64 uses the C library's. The compiler runs with
``-ffp-contract=off``: no fused multiply-adds, each operation rounds as
NumPy's does.

The batch size is an argument of the generated functions, not a constant, so
one build serves every batch size. Builds live in the private, self-healing
cache of :mod:`~lstm_graph.executors.buildcache`. The source is ours,
generated from the validated graph: numbers and generated names only.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lstm_graph.errors import BackendError
from lstm_graph.executors import buildcache
from lstm_graph.executors.backward import CompiledBackward
from lstm_graph.executors.codegen_c import (
    C_TYPES,
    Binding,
    Dialect,
    Role,
    StepKernels,
    step_kernels,
)
from lstm_graph.executors.contract import Array, Executor, Gradients, Progress, Spec
from lstm_graph.executors.layout import Layout, analyse
from lstm_graph.executors.prepare import (
    hoist,
    pack_group,
    pack_hoisted,
    static_output,
    static_trace,
    static_values,
    unscaled,
)
from lstm_graph.ir import NodeKind
from lstm_graph.schedule import Schedule

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
ATTEMPTS = tuple((*FLAGS, *tuning) for tuning in TUNINGS)

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
    n = n == n ? n : 0.0f;  /* NaN (r carries it to the result): a defined conversion */
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


def _host_functions(dtype: np.dtype) -> dict[str, str]:
    if dtype == np.float32:
        return {"exp": "lg_expf", "tanh": "lg_tanhf"}
    return {"exp": "exp", "tanh": "tanh"}


def _host_preamble(dtype: np.dtype) -> str:
    lines = ["#include <math.h>", "#include <stddef.h>", f"typedef {C_TYPES[dtype]} T;"]
    return "\n".join(lines) + ("\n" + MATH_FLOAT if dtype == np.float32 else "")


#: The host dialect: plain C99 compiled by the system compiler; float32 math is ours.
HOST = Dialect("c99", _host_functions, _host_preamble)


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


class NativeStep:
    """The generated C of one cell, width and dtype, and how its arguments are laid out.

    Every generated function takes ``void **a``: argument *k* is the array named
    ``names[k]`` (the kernels' bindings, then the packed group weights ``W_k``).
    """

    def __init__(self, schedule: Schedule, layout: Layout, kernels: StepKernels,
                 dtype: np.dtype):
        self.schedule, self.layout, self.kernels, self.dtype = schedule, layout, kernels, dtype
        self.hidden = kernels.hidden
        self.weights = {f"W_{k}": source for k, source in enumerate(layout.groups)}
        self.names = [*kernels.bindings, *self.weights]
        self.operand = {}  # group source -> the binding holding its value
        for source in layout.groups:
            node = schedule.graph.node(source)
            self.operand[source] = f"old_{node.state}" if node.kind is NodeKind.OLD else \
                kernels.binding_of(Role.BUFFER, source).name
        self.source = self._source()

    def step_elements(self, binding: Binding) -> int:
        """Elements per sequence that one step advances the array by (0: not per step)."""
        if not binding.per_step:
            return 0
        if binding.role is Role.HOISTED:
            return len(self.layout.hoisted) * self.hidden
        return self.hidden

    def _pointer(self, name: str, written: bool) -> str:
        index = self.names.index(name)
        const = "" if written else "const "
        step = self.step_elements(self.kernels.bindings[name])
        offset = f" + t * batch * {step}" if step else ""
        return f"    {const}T *restrict {name} = ({const}T *)a[{index}]{offset};"

    def _segment(self, k: int) -> list[str]:
        segment = self.kernels.segments[k]
        lines = [f"static void segment_{k}(ptrdiff_t t, ptrdiff_t batch, ptrdiff_t b0, "
                 "ptrdiff_t b1, void **a) {"]
        lines += [self._pointer(n, False) for n in segment.inputs]
        lines += [self._pointer(n, True) for n in segment.outputs]
        lines += ["    (void)t; (void)batch;",
                  "    for (ptrdiff_t b = b0; b < b1; b++) {",
                  "        #pragma GCC ivdep",
                  f"        for (ptrdiff_t j = 0; j < {self.hidden}; j++) {{",
                  f"            const ptrdiff_t i = b * {self.hidden} + j;"]
        lines += HOST.body(segment, self.dtype, indent="            ")
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
        segments = range(len(self.kernels.segments))
        lines = [f"/* lstm-graph native step: cell {name}, H {self.hidden}, "
                 f"{self.dtype.name} (generated) */", HOST.preamble(self.dtype),
                 "/* out[rows, n] = x[rows, k] . w[k, n], summed over k in order */",
                 "static void gemm(ptrdiff_t rows, ptrdiff_t k, ptrdiff_t n, const T *restrict x,",
                 "                 const T *restrict w, T *restrict out) {",
                 "    for (ptrdiff_t b = 0; b < rows; b++) {",
                 "        T *restrict o = out + b * n;",
                 "        for (ptrdiff_t c = 0; c < n; c++) o[c] = 0;",
                 "        for (ptrdiff_t q = 0; q < k; q++) {",
                 "            const T v = x[b * k + q];",
                 "            const T *restrict row = w + q * n;",
                 "            for (ptrdiff_t c = 0; c < n; c++) o[c] += v * row[c];",
                 "        }", "    }", "}", ""]
        for k in segments:
            lines += self._segment(k) + [""]
        lines += ["/* segment k of step t, for batch rows b0 <= b < b1 */",
                  "void lstm_graph_segment(ptrdiff_t k, ptrdiff_t t, ptrdiff_t batch, "
                  "ptrdiff_t b0, ptrdiff_t b1, void **a) {",
                  "    switch (k) {"]
        lines += [f"    case {k}: segment_{k}(t, batch, b0, b1, a); break;" for k in segments]
        lines += ["    }", "}", "",
                  "/* steps t0 <= t < t1, GEMMs included */",
                  "void lstm_graph_steps(ptrdiff_t t0, ptrdiff_t t1, ptrdiff_t batch, void **a) {",
                  "    for (ptrdiff_t t = t0; t < t1; t++) {"]
        for k in segments:
            for operand, weights, out, inner, width in self.gemm_calls(k):
                i, w, o = (self.names.index(n) for n in (operand, weights, out))
                lines.append(f"        gemm(batch, {inner}, {width}, (const T *)a[{i}], "
                             f"(const T *)a[{w}], (T *)a[{o}]);")
            lines.append(f"        segment_{k}(t, batch, 0, batch, a);")
        lines += ["    }", "}", ""]
        return "\n".join(lines)


@dataclass
class _Build:
    """One compiled variant of the step (plain, or recording every assignment)."""

    kernels: StepKernels
    step: NativeStep
    steps: Any  # lstm_graph_steps(t0, t1, batch, a)
    segment: Any  # lstm_graph_segment(k, t, batch, b0, b1, a)
    fixed: dict[str, np.ndarray]  # the arrays that stay from run to run


class NativePlan(Executor):
    """The native executor for one cell, batch size and dtype (NumPy arrays only).

    It keeps the hoisted ``S`` of its last run (``T·B`` rows of every dynamic linear's
    input part) to reuse on the next run of the same length: page-faulting a fresh
    buffer of that size costs as much as 2 % of a run. ``whole_loop`` forces a mode.
    """

    name = "native"

    def __init__(self, spec: Spec, whole_loop: bool | None = None):
        super().__init__(spec)
        if spec.xp is not np:
            raise BackendError("the native executor runs on the numpy backend only")
        require_compiler()
        self.layout = analyse(spec.schedule)
        work = spec.batch * spec.hidden * sum(len(g.members) * spec.hidden
                                              for g in self.layout.groups.values())
        self.whole_loop = work <= WHOLE_LOOP_LIMIT if whole_loop is None else whole_loop
        self.hoisting = pack_hoisted(self.layout, spec.params, spec.hidden, spec.dtype, unscaled)
        self._hoisted = np.empty((0, 0), dtype=spec.dtype)
        self._plain = self._build(trace=False)
        self._traced: _Build | None = None
        self._backward: CompiledBackward | None = None
        self.kernels, self.step = self._plain.kernels, self._plain.step

    def _build(self, trace: bool) -> _Build:
        spec, layout = self.spec, self.layout
        batch, hidden, dtype = spec.batch, spec.hidden, spec.dtype
        kernels = step_kernels(spec.schedule, layout, hidden, trace=trace)
        step = NativeStep(spec.schedule, layout, kernels, dtype)
        library = buildcache.library(step.source, ATTEMPTS,
                                     f"the native step of cell '{spec.schedule.graph.name}'")
        steps, segment = library.lstm_graph_steps, library.lstm_graph_segment
        steps.argtypes = [ctypes.c_ssize_t] * 3 + [ctypes.c_void_p]
        segment.argtypes = [ctypes.c_ssize_t] * 5 + [ctypes.c_void_p]
        steps.restype = segment.restype = None
        fixed: dict[str, np.ndarray] = {"S_bias": self.hoisting.bias}
        for binding in kernels.bindings.values():
            if binding.role is Role.PARAM:
                fixed[binding.name] = np.ascontiguousarray(spec.params[binding.key], dtype=dtype)
            elif binding.role is Role.BUFFER:
                fixed[binding.name] = np.empty((batch, hidden), dtype=dtype)
            elif binding.role is Role.GROUP:
                width = len(layout.groups[binding.key].members) * hidden
                fixed[binding.name] = np.empty((batch, width), dtype=dtype)
        for name, source in step.weights.items():
            fixed[name] = pack_group(layout, source, spec.params, dtype, unscaled)
        return _Build(kernels, step, steps, segment, fixed)

    @property
    def source(self) -> str:
        return self.step.source

    def run(self, x: Array, state: Mapping[str, Array], progress: Progress | None = None
            ) -> tuple[Array, dict[str, Array]]:
        y, final, _, _ = self._execute(self._plain, x, state, progress)
        return y, final

    def trace(self, x: Array, state: Mapping[str, Array], progress: Progress | None = None
              ) -> dict[str, Array]:
        spec = self.spec
        if self._traced is None:
            self._traced = self._build(trace=True)
        _, _, static, arrays = self._execute(self._traced, x, state, progress)
        found = static_trace(spec.schedule, self.layout, static, np, x.shape[0], x.shape[1],
                             spec.width, spec.dtype)
        found.update({b.key: arrays[b.name] for b in self._traced.kernels.of_role(Role.TRACE)})
        return {name: found[name] for name in spec.schedule.graph.assignments}

    def grad(self, x: Array, state: Mapping[str, Array], grad_y: Array,
             grad_final: Mapping[str, Array]) -> Gradients:
        if self._backward is None:
            self._backward = CompiledBackward(self.spec, self.layout)
        return self._backward(x, state, grad_y, grad_final)

    def _execute(self, build: _Build, x: Array, state: Mapping[str, Array],
                 progress: Progress | None
                 ) -> tuple[Array, dict[str, Array], dict[str, Array], dict[str, np.ndarray]]:
        """Run ``build``; return ``y``, the final states, the static values and the arrays."""
        spec, kernels = self.spec, build.kernels
        steps, batch = x.shape[0], x.shape[1]
        static = static_values(spec.schedule, self.layout, np, spec.params, x, spec.dtype)
        arrays = dict(build.fixed)
        rows, width = steps * batch, self.hoisting.width
        if self._hoisted.shape != (rows, width):  # the last run's S, reused when T is the same
            self._hoisted = np.empty((rows, width), dtype=spec.dtype)
        arrays["S"] = hoist(np, static, self.hoisting, steps, batch, add_bias=False,
                            out=self._hoisted)
        if "y" in kernels.bindings:
            arrays["y"] = np.empty((steps, batch, spec.hidden), dtype=spec.dtype)
            y = arrays["y"]
        else:
            y = static_output(spec.schedule, static, np, steps, batch, spec.output_width,
                              spec.dtype)
        for binding in kernels.bindings.values():
            if binding.role is Role.STATE:
                arrays[binding.name] = np.array(state[binding.key], dtype=spec.dtype,
                                                order="C", copy=True)
            elif binding.role is Role.STATIC:
                value = static[binding.key].reshape(1) if binding.scalar else \
                    np.broadcast_to(static[binding.key], (steps, batch, spec.hidden))
                arrays[binding.name] = np.ascontiguousarray(value, dtype=spec.dtype)
            elif binding.role is Role.TRACE:
                arrays[binding.name] = np.empty((steps, batch, spec.hidden), dtype=spec.dtype)
        pointers = (ctypes.c_void_p * len(build.step.names))(
            *(arrays[name].ctypes.data for name in build.step.names))
        if self.whole_loop:
            for start in range(0, steps, CHUNK):
                stop = min(steps, start + CHUNK)
                build.steps(start, stop, batch, pointers)
                if progress is not None:
                    progress(stop - start)
        else:
            self._segmented(build, steps, batch, arrays, pointers, progress)
        final = {b.key: arrays[b.name] for b in kernels.of_role(Role.STATE)}
        return y, {name: final[name] for name in spec.schedule.graph.states}, static, arrays

    def _segmented(self, build: _Build, steps: int, batch: int, arrays: dict[str, np.ndarray],
                   pointers: Any, progress: Progress | None) -> None:
        """Per step: each segment's GEMMs through BLAS, then its fused C in one call."""
        dot, segment = np.dot, build.segment
        plan = [(k, [(arrays[operand], arrays[weights], arrays[out])
                     for operand, weights, out, _, _ in build.step.gemm_calls(k)])
                for k in range(len(build.kernels.segments))]
        for t in range(steps):
            for k, gemms in plan:
                for operand, weights, out in gemms:
                    dot(operand, weights, out)
                segment(k, t, batch, 0, batch, pointers)
            if progress is not None:
                progress(1)
