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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from lstm_graph.executors import buildcache
from lstm_graph.executors.backward import finish, hoisted_allocations
from lstm_graph.executors.codegen_c import (
    C_TYPES,
    CUDA,
    Binding,
    Lifetime,
    Role,
    StepKernels,
    arrays,
    step_kernels,
)
from lstm_graph.executors.contract import Array, Executor, Gradients, Progress, Spec, Tape
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
from lstm_graph.executors.reverse_c import (
    BackwardKernels,
    Product,
    backward_kernels,
    stacked,
    static_products,
    step_products,
    weight_products,
)
from lstm_graph.formats.memory import Allocation
from lstm_graph.ir import NodeKind
from lstm_graph.schedule import Schedule

#: A compiled kernel: called with its arrays (inputs, then outputs) and ``size=``.
Kernel = Callable[..., Any]


class Fused(Protocol):
    """What a kernel is made from: a forward :class:`~.codegen_c.Segment` or a
    :class:`~.reverse_c.BackwardSegment`."""

    @property
    def name(self) -> str: ...

    inputs: list[str]
    outputs: list[str]
    body: list[str]


def kernel_body(segment: Fused, hidden: int, dtype: np.dtype) -> str:
    """The ``ElementwiseKernel`` body of ``segment``: ``b`` and ``j`` from CuPy's ``i``."""
    lines = [f"const ptrdiff_t b = i / {hidden};", f"const ptrdiff_t j = i % {hidden};"]
    return "\n".join(lines + CUDA.lines(segment.body, dtype))


class Launcher:
    """Compiles a step's kernels for one backend (the seam described above)."""

    def compile(self, segments: Sequence[Fused], hidden: int, dtype: np.dtype, xp: Any
                ) -> list[Kernel]:
        """One callable per segment, ``kernel(*arrays, size=n)``."""
        return [xp.ElementwiseKernel(", ".join(f"raw T {a}" for a in s.inputs),
                                     ", ".join(f"raw T {a}" for a in s.outputs),
                                     kernel_body(s, hidden, dtype), s.name)
                for s in segments]


def host_source(segments: Sequence[Fused], hidden: int, dtype: np.dtype) -> str:
    """The kernels' exact CUDA bodies, each inside a host C loop over ``i`` (one function per
    segment, its arrays as parameters in the kernel's order): C that the system compiler
    builds, so the tests run the GPU's element-wise code on the CPU."""
    lines = ["#include <stddef.h>", "#include <tgmath.h>", f"typedef {C_TYPES[dtype]} T;", ""]
    for segment in segments:
        params = [f"const T *{a}" for a in segment.inputs] + [f"T *{a}" for a in segment.outputs]
        lines += [f"void {segment.name}(ptrdiff_t size, {', '.join(params)}) {{",
                  "    for (ptrdiff_t i = 0; i < size; i++) {"]
        lines += [f"        {line}" for line in kernel_body(segment, hidden, dtype).splitlines()]
        lines += ["    }", "}", ""]
    return "\n".join(lines)


class HostLauncher(Launcher):
    """Runs the CUDA kernels' text on the CPU (see :func:`host_source`); for tests."""

    def compile(self, segments: Sequence[Fused], hidden: int, dtype: np.dtype, xp: Any
                ) -> list[Kernel]:
        library = buildcache.library(host_source(segments, hidden, dtype),
                                     [("-O1", "-fPIC", "-shared")],
                                     "the CUDA kernels, for the host",
                                     symbols=[segment.name for segment in segments])
        compiled = []
        for segment in segments:
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


@dataclass
class CudaTape(Tape):
    """The CUDA plan's forward pass: its tape (what the backward kernels read) and the
    run's static values."""

    static: dict[str, Array] = field(default_factory=dict)
    tape: Array = None


@dataclass
class _Reverse:
    """The CUDA plan's backward pass: the generated kernels (forward with a tape, each
    segment backwards), the GEMMs between and after them, their weights on the device."""

    kernels: BackwardKernels
    forward: StepKernels
    forward_compiled: list[Kernel]
    compiled: list[Kernel]
    steps: list[list[Product]]
    weights: list[Product]
    statics: list[Product]
    stacked: dict[int, Array]  # by id of a product: its weights, (linears·H, size)
    kept: dict[str, Array]  # the backward bindings' weights and buffers


class CudaPlan(Executor):
    """The compiled executor for CuPy arrays (or NumPy ones, with :class:`HostLauncher`)."""

    name = "cuda"
    backends = ("cupy",)
    weight_copies = 1  # each group's weights on the host, on their way to the device

    def __init__(self, spec: Spec, launcher: Launcher | None = None):
        super().__init__(spec)
        xp, schedule, hidden, dtype = spec.xp, spec.schedule, spec.hidden, spec.dtype
        self.layout = analyse(schedule)
        self.kernels = step_kernels(schedule, self.layout, hidden)
        self._source = "\n\n".join(
            f"// {s.name}: after the GEMMs of {', '.join(s.gemms) or 'none'}\n"
            + kernel_body(s, hidden, dtype) for s in self.kernels.segments)
        self.hoisting = pack_hoisted(self.layout, spec.params, hidden, dtype, unscaled, xp)
        self.group_weights = {s: xp.asarray(pack_group(self.layout, s, spec.params, dtype,
                                                       unscaled))
                              for s in self.layout.groups}
        self.launcher = launcher or Launcher()
        self.compiled = self.launcher.compile(self.kernels.segments, hidden, dtype, xp)
        self._traced: tuple[StepKernels, list[Kernel]] | None = None
        self._reverse: _Reverse | None = None
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
            self._traced = kernels, self.launcher.compile(kernels.segments, spec.hidden,
                                                          spec.dtype, spec.xp)
        kernels, compiled = self._traced
        _, _, static, made = self._execute(kernels, compiled, x, state, progress)
        found = static_trace(spec.schedule, self.layout, static, spec.xp, x.shape[0],
                             x.shape[1], spec.width, spec.dtype)
        found.update({b.key: made[b.name] for b in kernels.of_role(Role.TRACE)})
        return {name: found[name] for name in spec.schedule.graph.assignments}

    def update(self, params: Mapping[str, Array]) -> None:
        """New weights: the packed GEMM weights and the kernels' parameters anew (the
        kernels, which hold no weights, stay compiled)."""
        super().update(params)
        spec, xp = self.spec, self.spec.xp
        self.hoisting = pack_hoisted(self.layout, spec.params, spec.hidden, spec.dtype, unscaled,
                                     xp)
        self.group_weights = {s: xp.asarray(pack_group(self.layout, s, spec.params, spec.dtype,
                                                       unscaled))
                              for s in self.layout.groups}
        self._kept.clear()
        if self._reverse is not None:
            reverse = self._reverse
            products = [*(p for mine in reverse.steps for p in mine), *reverse.statics]
            reverse.stacked = {id(p): xp.asarray(stacked(spec.schedule, spec.params, p,
                                                         spec.dtype)) for p in products}
            reverse.kept.update(arrays(reverse.kernels.bindings.values(), Lifetime.WEIGHTS, xp,
                                       spec.dtype, spec.batch, params=spec.params))

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
                 state: Mapping[str, Array], progress: Progress | None,
                 given: Mapping[str, Array] | None = None
                 ) -> tuple[Array, dict[str, Array], dict[str, Array], dict[str, Array]]:
        """Run ``kernels``; return ``y``, the final states, the static values and the
        arrays made for the run (a trace's among them; those ``given`` are used)."""
        spec, layout = self.spec, self.layout
        xp, graph = spec.xp, spec.schedule.graph
        steps, batch = x.shape[0], x.shape[1]
        static = static_values(spec.schedule, layout, xp, spec.params, x, spec.dtype)
        kept = {name: array[..., :batch, :] if array.ndim > 1 else array
                for name, array in self.kept(kernels).items()}  # the run's first rows
        given = given or {}
        made = arrays([b for b in kernels.bindings.values() if b.name not in given],
                      Lifetime.RUN, xp, spec.dtype, batch, steps, static=static)
        made.update(given)
        if kernels.hoisted is not None:
            made[kernels.hoisted.name] = hoist(xp, static, self.hoisting, steps, batch,
                                               add_bias=False)
        y = made[kernels.output.name] if kernels.output is not None else \
            static_output(spec.schedule, static, xp, steps, batch, spec.output_width,
                          spec.dtype)
        for name, binding in kernels.states.items():
            kept[binding.name][...] = state[name]
        operand = {s: kept[kernels.states[str(graph.node(s).state)].name]
                   if graph.node(s).kind is NodeKind.OLD
                   else kept[kernels.binding_of(Role.BUFFER, s).name]
                   for s in layout.groups}
        group_out = {s: kept[kernels.groups[s].name] for s in layout.groups}
        size = batch * spec.hidden
        for t in range(steps):
            at = _at_step(kernels.bindings, {**kept, **made}, t)
            for segment, kernel in zip(kernels.segments, compiled):
                for source in segment.gemms:
                    xp.matmul(operand[source], self.group_weights[source],
                              out=group_out[source])
                kernel(*(at[a].reshape(-1) for a in (*segment.inputs, *segment.outputs)),
                       size=size)
            if progress is not None:
                progress(1)
        final = {name: kept[binding.name].copy() for name, binding in kernels.states.items()}
        return y, final, static, made

    # -- gradients ---------------------------------------------------------------------------

    def reverse(self) -> _Reverse:
        """The backward pass's kernels and GEMMs, built on the first gradient asked for."""
        if self._reverse is None:
            spec, layout, xp = self.spec, self.layout, self.spec.xp
            schedule, hidden, dtype = spec.schedule, spec.hidden, spec.dtype
            kernels = backward_kernels(schedule, layout, hidden)
            forward = step_kernels(schedule, layout, hidden, tape=kernels.tape)
            steps = step_products(kernels, schedule)
            weights = weight_products(kernels, schedule, spec.input_size)
            statics = static_products(kernels, schedule, layout, spec.input_size)
            stacked_weights = {id(p): xp.asarray(stacked(schedule, spec.params, p, dtype))
                               for p in [*(p for mine in steps for p in mine), *statics]}
            bindings = kernels.bindings.values()
            kept = arrays(bindings, Lifetime.WEIGHTS, xp, dtype, spec.batch, params=spec.params)
            kept.update(arrays(bindings, Lifetime.WORK, xp, dtype, spec.batch))
            self._reverse = _Reverse(
                kernels, forward, self.launcher.compile(forward.segments, hidden, dtype, xp),
                self.launcher.compile(kernels.segments, hidden, dtype, xp), steps, weights,
                statics, stacked_weights, kept)
        return self._reverse

    def forward(self, x: Array, state: Mapping[str, Array]) -> CudaTape:
        reverse, xp = self.reverse(), self.spec.xp
        steps, batch = x.shape[0], x.shape[1]
        layout = reverse.kernels.tape
        tape = xp.empty((steps + 1, batch, layout.width), dtype=self.spec.dtype)
        for name, column in layout.columns.items():
            if name in state:  # slot 0: the initial states
                tape[0, :, column * layout.hidden:(column + 1) * layout.hidden] = state[name]
        assert reverse.forward.tape is not None
        y, final, static, _ = self._execute(reverse.forward, reverse.forward_compiled, x, state,
                                            None, {reverse.forward.tape.name: tape})
        return CudaTape(x, state, y, final, static, tape)

    def backward(self, tape: Tape, grad_y: Array, grad_final: Mapping[str, Array],
                 record: bool = False) -> Gradients:
        self.refuse_record(record)
        if not isinstance(tape, CudaTape):
            raise TypeError("a tape is read by the executor that made it")
        spec, reverse, xp = self.spec, self.reverse(), self.spec.xp
        kernels, hidden, dtype = reverse.kernels, spec.hidden, spec.dtype
        steps, batch = tape.x.shape[0], tape.x.shape[1]
        rows, width = steps * batch, kernels.dz_width
        kept = {name: array[..., :batch, :] if array.ndim > 1 else array
                for name, array in reverse.kept.items()}
        made = arrays([b for b in kernels.bindings.values() if b.role is not Role.TAPE],
                      Lifetime.RUN, xp, dtype, batch, steps, static=tape.static)
        made[kernels.tape_now.name] = made[kernels.tape_old.name] = tape.tape
        dz = made[kernels.dz.name]
        if kernels.grad_output is not None:
            made[kernels.grad_output.name] = xp.ascontiguousarray(grad_y, dtype=dtype)
        for state, binding in kernels.carry.items():
            made[binding.name][(steps - 1) & 1] = grad_final[state] if state in grad_final \
                else 0
        arrays_now = {**kept, **made}
        size = batch * hidden
        for t in range(steps - 1, -2, -1):
            at = _at_step(kernels.bindings, arrays_now, t)
            for segment, kernel, mine in zip(kernels.segments, reverse.compiled, reverse.steps):
                for product in mine:
                    step = t + 1 if product.dz == kernels.dz_next.name else t
                    if 0 <= step < steps:
                        self._multiply(product, dz[step], at[product.out],
                                       reverse.stacked[id(product)])
                if t >= 0:
                    kernel(*(at[a].reshape(-1) for a in (*segment.inputs, *segment.outputs)),
                           size=size)
        flat = dz.reshape(rows, width)
        products = {p.out: self._operand_rows(p.operand, tape).T @ flat[:, _columns(p, hidden)]
                    for p in reverse.weights}
        d_static = {b.key: made[b.name] for b in kernels.grad_statics.values()}
        for product in reverse.statics:
            found = self._multiply(product, flat, None, reverse.stacked[id(product)])
            found = found.reshape(steps, batch, product.size)
            d_static[product.operand] = d_static[product.operand] + found \
                if product.operand in d_static else found
        graph = spec.schedule.graph
        sums = {}
        for linear in kernels.columns:
            node = graph.node(linear)
            block = flat[:, kernels.columns[linear] * hidden:(kernels.columns[linear] + 1) * hidden]
            sums[linear, node.params[-1]] = xp.sum(block, axis=0)
            for arg, peep, param in zip(node.args, node.peep, node.params):
                if peep:
                    sums[linear, param] = xp.sum(block * self._operand_rows(arg, tape), axis=0)
        before = [n for n in spec.schedule.order if graph.node(n).kind is NodeKind.OP
                  and n in self.layout.static]
        grads, grad_x = finish(spec, self.layout, kernels, reverse.weights, products, sums,
                               d_static, tape.static, grad_y, before, tape.x)
        carried = {s: made[b.name][(-1) & 1].copy() for s, b in kernels.carry.items()}
        return Gradients(grad_x, grads, carried, tape.y, tape.final)

    def _multiply(self, product: Product, dz: Array, out: Array | None, weights: Array
                  ) -> Array:
        """``out (+)= dZ[:, runs] · W`` (a new array without ``out``)."""
        hidden, offset, total = self.spec.hidden, 0, None
        for run in product.runs:
            part = dz[:, run.first * hidden:(run.first + run.count) * hidden] @ \
                weights[offset:offset + run.count * hidden]
            offset += run.count * hidden
            total = part if total is None else total + part
        if out is None:
            return total
        if product.add:
            out += total
        else:
            out[...] = total
        return out

    def _operand_rows(self, operand: str, tape: CudaTape) -> Array:
        """A matrix or peephole operand at every step, ``(T·B, size)``: from the tape (an old
        value from the slot before), or a static value."""
        graph, layout = self.spec.schedule.graph, self.reverse().kernels.tape
        steps, batch = tape.x.shape[0], tape.x.shape[1]
        node = graph.node(operand)
        if node.kind is NodeKind.OLD:
            start = layout.column(str(node.state))
            return tape.tape[:steps, :, start:start + layout.hidden].reshape(steps * batch, -1)
        if operand in layout.columns:
            start = layout.column(operand)
            return tape.tape[1:, :, start:start + layout.hidden].reshape(steps * batch, -1)
        value = tape.static[operand]
        return self.spec.xp.broadcast_to(value, (steps, batch, self.spec.width(operand))) \
            .reshape(steps * batch, -1)

    @classmethod
    def allocations(cls, schedule: Schedule, work: str, steps: int, batch: int,
                    input_size: int, hidden: int, dtype: np.dtype) -> list[Allocation]:
        """As the NumPy plan's (:func:`~.backward.hoisted_allocations`): it hoists the static
        parts of the linears over all ``T·B`` rows too (on the device)."""
        return hoisted_allocations(schedule, work, steps, batch, input_size, hidden, dtype)


def _columns(product: Product, hidden: int) -> slice:
    """The columns of ``dZ`` of a weight gradient's one run."""
    (run,) = product.runs
    return slice(run.first * hidden, (run.first + run.count) * hidden)


def _at_step(bindings: Mapping[str, Binding], found: Mapping[str, Array], t: int
             ) -> dict[str, Array]:
    """Every array a kernel of step ``t`` names: a per-step array's slice of step ``t``
    (``t + offset``; by parity, for a two-slot one; none where the array holds no such
    step, which no kernel of step ``t`` then reads)."""
    at = {}
    for name, array in found.items():
        binding = bindings.get(name)
        if binding is not None and binding.parity:
            array = array[(t + binding.offset) % 2]
        elif binding is not None and binding.per_step:
            if not 0 <= t + binding.offset < array.shape[0]:
                continue
            array = array[t + binding.offset]
        at[name] = array
    return at
