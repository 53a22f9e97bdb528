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
from lstm_graph.executors.codegen_c import (
    C_TYPES,
    CUDA,
    Lifetime,
    Role,
    Segment,
    StepKernels,
    arrays,
    step_kernels,
)
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
                                     "the CUDA kernels, for the host")
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
    backends = ("cupy",)

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
        self.launcher = launcher or Launcher()
        self.compiled = self.launcher.compile(self.kernels, dtype, xp)
        self._traced: tuple[StepKernels, list[Kernel]] | None = None
        self._kept: dict[int, dict[str, Array]] = {}  # by kernels: arrays kept between runs

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
        _, _, static, made = self._execute(kernels, compiled, x, state, progress)
        found = static_trace(spec.schedule, self.layout, static, spec.xp, x.shape[0],
                             x.shape[1], spec.width, spec.dtype)
        found.update({b.key: made[b.name] for b in kernels.of_role(Role.TRACE)})
        return {name: found[name] for name in spec.schedule.graph.assignments}

    def kept(self, kernels: StepKernels) -> dict[str, Array]:
        """The arrays of ``kernels`` made once and kept between runs (weights, buffers)."""
        if id(kernels) not in self._kept:
            spec = self.spec
            bindings = kernels.bindings.values()
            fixed = arrays(bindings, Lifetime.WEIGHTS, spec.xp, spec.dtype, spec.batch,
                           params=spec.params, weights={kernels.bias.name: self.hoisting.bias})
            fixed.update(arrays(bindings, Lifetime.WORK, spec.xp, spec.dtype, spec.batch))
            self._kept[id(kernels)] = fixed
        return self._kept[id(kernels)]

    def _execute(self, kernels: StepKernels, compiled: list[Kernel], x: Array,
                 state: Mapping[str, Array], progress: Progress | None
                 ) -> tuple[Array, dict[str, Array], dict[str, Array], dict[str, Array]]:
        """Run ``kernels``; return ``y``, the final states, the static values and the
        arrays made for the run (a trace's among them)."""
        spec, layout = self.spec, self.layout
        xp, graph = spec.xp, spec.schedule.graph
        steps, batch = x.shape[0], x.shape[1]
        static = static_values(spec.schedule, layout, xp, spec.params, x, spec.dtype)
        kept = {name: array[..., :batch, :] if array.ndim > 1 else array
                for name, array in self.kept(kernels).items()}  # the run's first rows
        made = arrays(kernels.bindings.values(), Lifetime.RUN, xp, spec.dtype, batch, steps,
                      static=static)
        if kernels.hoisted is not None:
            made[kernels.hoisted.name] = hoist(xp, static, self.hoisting, steps, batch,
                                               add_bias=False)
        y = made[kernels.output.name] if kernels.output is not None else \
            static_output(spec.schedule, static, xp, steps, batch, spec.output_width,
                          spec.dtype)
        for name, binding in kernels.states.items():
            kept[binding.name][...] = state[name]
        # Every array as one flat, contiguous run of elements: a kernel indexes it with i.
        flat = {name: xp.ascontiguousarray(array).reshape(-1) for name, array in kept.items()}
        per_step = {name: array.reshape(array.shape[0], -1) for name, array in made.items()
                    if kernels.bindings[name].per_step}
        flat.update({name: array.reshape(-1) for name, array in made.items()
                     if not kernels.bindings[name].per_step})
        operand = {s: kept[kernels.states[str(graph.node(s).state)].name]
                   if graph.node(s).kind is NodeKind.OLD
                   else kept[kernels.binding_of(Role.BUFFER, s).name]
                   for s in layout.groups}
        size = batch * spec.hidden
        for t in range(steps):
            at = {**flat, **{name: array[t + kernels.bindings[name].offset]
                             for name, array in per_step.items()}}
            for segment, kernel in zip(kernels.segments, compiled):
                for source in segment.gemms:
                    xp.matmul(operand[source], self.group_weights[source],
                              out=kept[kernels.groups[source].name])
                kernel(*(at[a] for a in (*segment.inputs, *segment.outputs)), size=size)
            if progress is not None:
                progress(1)
        final = {name: kept[binding.name].copy() for name, binding in kernels.states.items()}
        return y, final, static, made
