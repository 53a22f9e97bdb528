"""The CUDA plan: cuBLAS GEMMs and one generated, fused element-wise kernel per segment.

The layout (hoisting, gate fusion) is the other compiled plans'
(:mod:`~lstm_graph.executors.layout`); the element-wise work of a step comes
from the shared C generator (:mod:`~lstm_graph.executors.codegen_c`) in its
CUDA dialect, for ``cupy.ElementwiseKernel``: one GPU thread per
``(batch, hidden)`` element, every value a register. Nothing in the time loop
waits for the GPU: no host copies, no synchronisation.

How the kernels are compiled and launched is a seam (:class:`Launcher`): on a
GPU, CuPy's ``ElementwiseKernel``; in the test suite, :class:`HostLauncher`,
which compiles the **same kernel text** inside a host C loop over ``i`` with
the system C compiler and runs the whole plan on NumPy arrays. That checks
bindings, index arithmetic and math without a GPU.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from lstm_graph.executors import buildcache
from lstm_graph.executors.backward import CompiledGrad
from lstm_graph.executors.codegen_c import C_TYPES, CUDA, Role, Segment, StepKernels, step_kernels
from lstm_graph.executors.contract import Array, Progress, Spec
from lstm_graph.executors.layout import analyse
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

#: A compiled kernel: called with its arrays (inputs, then outputs) and ``size=``.
Kernel = Callable[..., Any]


def kernel_body(segment: Segment, kernels: StepKernels, dtype: np.dtype) -> str:
    """The ``ElementwiseKernel`` body of ``segment``: ``b`` and ``j`` from CuPy's ``i``."""
    lines = [f"const ptrdiff_t b = i / {kernels.hidden};",
             f"const ptrdiff_t j = i % {kernels.hidden};"]
    return "\n".join(lines + CUDA.body(segment, dtype))


class Launcher:
    """Compiles a step's kernels for one backend (the seam described above)."""

    def compile(self, kernels: StepKernels, dtype: np.dtype, xp: Any) -> list[Kernel]:
        """One callable per segment, ``kernel(*arrays, size=n)``."""
        return [xp.ElementwiseKernel(", ".join(f"raw T {a}" for a in s.inputs),
                                     ", ".join(f"raw T {a}" for a in s.outputs),
                                     kernel_body(s, kernels, dtype), s.name)
                for s in kernels.segments]


def host_source(kernels: StepKernels, dtype: np.dtype) -> str:
    """The kernels' exact CUDA bodies, each inside a host C loop over ``i`` (one function per
    segment, its arrays as parameters in the kernel's order): C that the system compiler
    builds, so the tests run the GPU's element-wise code on the CPU."""
    lines = ["#include <stddef.h>", "#include <tgmath.h>", f"typedef {C_TYPES[dtype]} T;", ""]
    for segment in kernels.segments:
        params = [f"const T *{a}" for a in segment.inputs] + [f"T *{a}" for a in segment.outputs]
        lines += [f"void {segment.name}(ptrdiff_t size, {', '.join(params)}) {{",
                  "    for (ptrdiff_t i = 0; i < size; i++) {"]
        lines += [f"        {line}" for line in kernel_body(segment, kernels, dtype).splitlines()]
        lines += ["    }", "}", ""]
    return "\n".join(lines)


class HostLauncher(Launcher):
    """Runs the CUDA kernels' text on the CPU (see :func:`host_source`); for tests."""

    def compile(self, kernels: StepKernels, dtype: np.dtype, xp: Any) -> list[Kernel]:
        library = buildcache.library(host_source(kernels, dtype), [("-O1", "-fPIC", "-shared")],
                                     "the CUDA kernels, for the host",
                                     symbols=[segment.name for segment in kernels.segments])
        compiled = []
        for segment in kernels.segments:
            function = getattr(library, segment.name)
            count = len(segment.inputs) + len(segment.outputs)
            function.argtypes = [ctypes.c_ssize_t] + [ctypes.c_void_p] * count
            function.restype = None

            def call(*arrays: np.ndarray, size: int, function: Any = function) -> None:
                for array in arrays:
                    if not array.flags.c_contiguous:
                        raise ValueError("a kernel array is not contiguous")
                function(size, *(array.ctypes.data for array in arrays))

            compiled.append(call)
        return compiled


class CudaPlan(CompiledGrad):
    """The compiled executor for CuPy arrays (or NumPy ones, with :class:`HostLauncher`)."""

    name = "cuda"

    def __init__(self, spec: Spec, launcher: Launcher | None = None):
        super().__init__(spec)
        xp, schedule, hidden, dtype = spec.xp, spec.schedule, spec.hidden, spec.dtype
        self.layout = analyse(schedule)
        self.kernels = step_kernels(schedule, self.layout, hidden)
        self._source = "\n\n".join(
            f"// {s.name}: after the GEMMs of {', '.join(s.gemms) or 'none'}\n"
            + kernel_body(s, self.kernels, dtype) for s in self.kernels.segments)
        self.hoisting = pack_hoisted(self.layout, spec.params, hidden, dtype, unscaled, xp)
        self.group_weights = {s: xp.asarray(pack_group(self.layout, s, spec.params, dtype,
                                                       unscaled))
                              for s in self.layout.groups}
        self.buffers = {b.key: xp.empty((spec.batch, hidden), dtype=dtype)  # by node
                        for b in self.kernels.of_role(Role.BUFFER)}
        self.launcher = launcher or Launcher()
        self.compiled = self.launcher.compile(self.kernels, dtype, xp)
        self._traced: tuple[StepKernels, list[Kernel]] | None = None

    @property
    def source(self) -> str:
        return self._source

    def run(self, x: Array, state: Mapping[str, Array], progress: Progress | None = None
            ) -> tuple[Array, dict[str, Array]]:
        y, final, _, _ = self._execute(self.kernels, self.compiled, x, state, progress)
        return y, final

    def trace(self, x: Array, state: Mapping[str, Array], progress: Progress | None = None
              ) -> dict[str, Array]:
        spec = self.spec
        if self._traced is None:
            kernels = step_kernels(spec.schedule, self.layout, spec.hidden, trace=True)
            self._traced = kernels, self.launcher.compile(kernels, spec.dtype, spec.xp)
        kernels, compiled = self._traced
        _, _, static, recorded = self._execute(kernels, compiled, x, state, progress)
        found = static_trace(spec.schedule, self.layout, static, spec.xp, x.shape[0],
                             x.shape[1], spec.width, spec.dtype)
        found.update(recorded)
        return {name: found[name] for name in spec.schedule.graph.assignments}

    def _execute(self, kernels: StepKernels, compiled: list[Kernel], x: Array,
                 state: Mapping[str, Array], progress: Progress | None
                 ) -> tuple[Array, dict[str, Array], dict[str, Array], dict[str, Array]]:
        """Run ``kernels``; return ``y``, the final states, the static values and what the
        kernels recorded (``{assignment: (T, B, H)}``, for a trace)."""
        spec, layout = self.spec, self.layout
        xp, graph = spec.xp, spec.schedule.graph
        steps, batch = x.shape[0], x.shape[1]
        static = static_values(spec.schedule, layout, xp, spec.params, x, spec.dtype)
        hoisted = hoist(xp, static, self.hoisting, steps, batch, add_bias=False)
        old = {s: xp.array(state[s], dtype=spec.dtype, copy=True) for s in graph.states}
        group_out = {s: xp.empty((batch, len(g.members) * spec.hidden), dtype=spec.dtype)
                     for s, g in layout.groups.items()}
        # Every array as one flat, contiguous run of elements: a kernel indexes it with i.
        fixed: dict[str, Array] = {"S_bias": self.hoisting.bias}
        per_step: dict[str, Array] = {"S": hoisted.reshape(steps, -1)}
        if "y" in kernels.bindings:
            y = xp.empty((steps, batch, spec.hidden), dtype=spec.dtype)
            per_step["y"] = y.reshape(steps, -1)
        else:
            y = static_output(spec.schedule, static, xp, steps, batch, spec.output_width,
                              spec.dtype)
        recorded: dict[str, Array] = {}
        for binding in kernels.bindings.values():
            if binding.role is Role.TRACE:
                recorded[binding.key] = xp.empty((steps, batch, spec.hidden), dtype=spec.dtype)
                per_step[binding.name] = recorded[binding.key].reshape(steps, -1)
            elif binding.role is Role.PARAM:
                fixed[binding.name] = xp.ascontiguousarray(spec.params[binding.key])
            elif binding.role is Role.STATE:
                fixed[binding.name] = old[binding.key].reshape(-1)
            elif binding.role is Role.GROUP:
                fixed[binding.name] = group_out[binding.key].reshape(-1)
            elif binding.role is Role.BUFFER:
                fixed[binding.name] = self.buffers[binding.key][:batch].reshape(-1)
            elif binding.role is Role.STATIC and binding.scalar:
                fixed[binding.name] = static[binding.key].reshape(1)
            elif binding.role is Role.STATIC:
                per_step[binding.name] = xp.ascontiguousarray(xp.broadcast_to(
                    static[binding.key], (steps, batch, spec.hidden))).reshape(steps, -1)
        operand = {s: old[str(graph.node(s).state)] if graph.node(s).kind is NodeKind.OLD
                   else self.buffers[s][:batch]
                   for s in layout.groups}
        size = batch * spec.hidden
        for t in range(steps):
            arrays = {**fixed, **{name: array[t] for name, array in per_step.items()}}
            for segment, kernel in zip(kernels.segments, compiled):
                for source in segment.gemms:
                    xp.matmul(operand[source], self.group_weights[source],
                              out=group_out[source])
                kernel(*(arrays[a] for a in (*segment.inputs, *segment.outputs)), size=size)
            if progress is not None:
                progress(1)
        return y, old, static, recorded
