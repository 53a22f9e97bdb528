"""The compiled plans' backward pass: backpropagation through time, laid out like the forward.

The reference interpreter's reverse mode (:func:`~lstm_graph.executors.interpreter.backward`)
is the definition: it walks every node of every step and multiplies every
weight on its own. This is the same mathematics arranged as the compiled
forward is (:mod:`~lstm_graph.executors.layout`), so that the work per step is
small and the big products happen once:

- **forward**, recording every value: the hoisted part of every dynamic linear
  for all steps at once (one GEMM per static operand), then per step one GEMM
  per group (the linears that multiply the same value) and the element-wise
  ops;
- **per step, backwards**: the element-wise ops' vector–Jacobian products in
  reverse order, the pre-activation gradients ``dZ`` of the linears, and one
  GEMM per group, ``d(source) = [dZ of its members] · Wᵀ`` — for an LSTM, one
  ``(B × 4H) · (4H × H)`` product per step;
- **after the loop**, over all ``T·B`` rows at once: each group's weight
  gradient ``sourceᵀ · dZ``, the hoisted weights' ``xᵀ · dZ`` and the input's
  ``dZ · W``, the biases and peepholes as sums, and the static part of the cell
  (``a = linear(x)``, or an output of the input's size) in reverse.

It runs on the array namespace ``xp`` (NumPy or CuPy); the NumPy, native and
CUDA executors all answer :meth:`~lstm_graph.executors.contract.Executor.grad`
with it. The tests hold it to the reference and to PyTorch's autograd.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lstm_graph.executors.contract import Array, Executor, Gradients, Spec, Tape
from lstm_graph.executors.interpreter import needs_gradient
from lstm_graph.executors.layout import Layout
from lstm_graph.executors.prepare import hoist, pack_group, pack_hoisted, static_values, unscaled
from lstm_graph.executors.reverse_c import BackwardKernels, Product, weight_of
from lstm_graph.formats.memory import Allocation, allocation
from lstm_graph.ir import NodeKind, old_id
from lstm_graph.schedule import Schedule


@dataclass
class CompiledTape(Tape):
    """What :meth:`CompiledBackward.forward` keeps for the backward pass."""

    static: dict[str, Array]  # every static value, for all steps
    envs: list[dict[str, Array]]  # every value of every step


class CompiledBackward:
    """Gradients of a cell's runs for one :class:`Spec`, laid out by ``layout``.

    ``backward(forward(x, state), grad_y, grad_final)`` (or a call) gives the
    :class:`Gradients`; a trainer computes its loss on ``tape.y`` in between.
    """

    def __init__(self, spec: Spec, layout: Layout):
        self.spec, self.layout = spec, layout
        xp, schedule = spec.xp, spec.schedule
        self.hoisting = pack_hoisted(layout, spec.params, spec.hidden, spec.dtype, unscaled, xp)
        self.weights = {source: xp.asarray(pack_group(layout, source, spec.params, spec.dtype,
                                                      unscaled))
                        for source in layout.groups}
        self.needs = needs_gradient(schedule)
        graph = schedule.graph
        ops = [n for n in schedule.order if graph.node(n).kind is NodeKind.OP]
        self.dynamic = [n for n in ops if n not in layout.static]
        self.static = [n for n in ops if n in layout.static]

    def __call__(self, x: Array, state: Mapping[str, Array], grad_y: Array,
                 grad_final: Mapping[str, Array]) -> Gradients:
        return self.backward(self.forward(x, state), grad_y, grad_final)

    def forward(self, x: Array, state: Mapping[str, Array]) -> CompiledTape:
        """Run ``x`` from ``state``, keeping every value the backward pass needs."""
        spec, layout, xp = self.spec, self.layout, self.spec.xp
        graph = spec.schedule.graph
        static = static_values(spec.schedule, layout, xp, spec.params, x, spec.dtype)
        envs = self._forward(x, state, static)
        (output,) = graph.outputs
        y = static[output] if output in layout.static else \
            xp.stack([env[output] for env in envs])
        final = {s: envs[-1][s] if s not in layout.static else static[s][-1]
                 for s in graph.states}
        return CompiledTape(x, state, y, final, static, envs)

    def backward(self, tape: CompiledTape, grad_y: Array, grad_final: Mapping[str, Array]
                 ) -> Gradients:
        """The gradients of ``sum(grad_y · y) + Σ sum(grad_final[s] · final[s])``."""
        spec, layout, xp = self.spec, self.layout, self.spec.xp
        graph, hidden = spec.schedule.graph, spec.hidden
        x, state, static, envs = tape.x, tape.state, tape.static, tape.envs
        steps, batch = x.shape[0], x.shape[1]
        (output,) = graph.outputs

        # Gradients of static values, for all steps at once; of the linears' sums, per step.
        d_static = {n: xp.zeros_like(static[n]) for n in layout.static
                    if n in self.needs and getattr(static[n], "ndim", 0) == 3}
        linears = [n for n in self.dynamic if graph.node(n).is_linear]
        d_z = {n: xp.zeros((steps, batch, hidden), dtype=spec.dtype) for n in linears}
        if output in layout.static:
            d_static[output] = d_static[output] + grad_y
        carry = {s: grad_final[s] if s in grad_final else xp.zeros_like(state[s])
                 for s in graph.states}
        for t in reversed(range(steps)):
            carry = self._step_back(t, envs[t], grad_y, carry, d_static, d_z)
        grads = {name: xp.zeros_like(value) for name, value in spec.params.items()}
        self._weights_back(envs, static, d_static, d_z, grads)
        static_back(spec, self.static, static, d_static, grads)
        (input_name,) = graph.inputs
        grad_x = d_static.get(input_name, xp.zeros_like(x))
        return Gradients(grad_x, grads, carry, tape.y, tape.final)

    def _env_at(self, static: Mapping[str, Array], t: int) -> dict[str, Array]:
        """The static values a step reads: row ``t`` of each, or the number itself."""
        return {n: v[t] if getattr(v, "ndim", 0) == 3 else v for n, v in static.items()}

    def _forward(self, x: Array, state: Mapping[str, Array], static: Mapping[str, Array]
                 ) -> list[dict[str, Array]]:
        """Every value of every step: the hoisted sums, one GEMM per group, the ops."""
        spec, layout, xp = self.spec, self.layout, self.spec.xp
        graph, hidden = spec.schedule.graph, spec.hidden
        hoisted = hoist(xp, static, self.hoisting, x.shape[0], x.shape[1])
        envs, current = [], dict(state)
        for t in range(x.shape[0]):
            env = self._env_at(static, t)
            env.update({old_id(s): current[s] for s in graph.states})
            products: dict[str, Array] = {}
            for node_id in self.dynamic:
                node = graph.node(node_id)
                if not node.is_linear:
                    env[node_id] = node.operation.reference(xp, [env[a] for a in node.args], [],
                                                            node.attributes)
                    continue
                info = layout.linears[node_id]
                column = layout.hoisted_column(node_id) * hidden
                total = hoisted[t, :, column:column + hidden]
                for source in dict.fromkeys(s for s, _ in info.matrix):
                    if source not in products:
                        products[source] = env[source] @ self.weights[source]
                    k = layout.groups[source].members.index(node_id)
                    total = total + products[source][:, k * hidden:(k + 1) * hidden]
                for operand, param in info.peep:
                    total = total + env[operand] * spec.params[param]
                env[node_id] = total
            envs.append(env)
            current = {s: env[s] for s in graph.states}
        return envs

    def _step_back(self, t: int, env: Mapping[str, Array], grad_y: Array,
                   carry: Mapping[str, Array], d_static: dict[str, Array],
                   d_z: dict[str, Array]) -> dict[str, Array]:
        """Step ``t`` backwards; returns what reaches each state's old value (the carry)."""
        spec, layout, xp = self.spec, self.layout, self.spec.xp
        graph, hidden = spec.schedule.graph, spec.hidden
        grads: dict[str, Array] = {}

        def add(node_id: str, gradient: Array) -> None:
            if node_id not in self.needs:
                return
            if node_id in layout.static:
                d_static[node_id][t] = d_static[node_id][t] + gradient
            else:
                grads[node_id] = grads[node_id] + gradient if node_id in grads else gradient

        def flush(source: str) -> None:
            """The group GEMM backwards: ``d(source) = [dZ of its members] · Wᵀ``."""
            members = layout.groups[source].members
            d_group = xp.concatenate([d_z[m][t] for m in members], axis=1)
            add(source, d_group @ self.weights[source].T)

        (output,) = graph.outputs
        if output not in layout.static:
            add(output, grad_y[t])
        for name in graph.states:
            add(name, carry[name])
        for node_id in reversed(self.dynamic):
            if node_id in layout.groups:
                flush(node_id)
            if node_id not in grads:
                continue
            node, gradient = graph.node(node_id), grads[node_id]
            if node.is_linear:
                d_z[node_id][t] = gradient
                for operand, param in layout.linears[node_id].peep:
                    add(operand, gradient * spec.params[param])
                continue
            grad_args, _ = node.operation.vjp(xp, [env[a] for a in node.args], [], node.attributes,
                                              env[node_id], gradient)
            for arg, grad_arg in zip(node.args, grad_args):
                add(arg, grad_arg)
        for source in layout.groups:
            if graph.node(source).kind is NodeKind.OLD:
                flush(source)
        zeros = xp.zeros((grad_y.shape[1], hidden), dtype=spec.dtype)
        return {s: grads.get(old_id(s), zeros) for s in graph.states}

    def _weights_back(self, envs: list[dict[str, Array]], static: Mapping[str, Array],
                      d_static: dict[str, Array], d_z: Mapping[str, Array],
                      grads: dict[str, Array]) -> None:
        """The weight gradients (and the static operands' share) over all ``T·B`` rows."""
        spec, layout, xp = self.spec, self.layout, self.spec.xp
        hidden = spec.hidden
        steps, batch = next(iter(d_z.values())).shape[:2] if d_z else (0, 0)
        rows = steps * batch
        flat = {n: v.reshape(rows, hidden) for n, v in d_z.items()}
        for name, info in layout.linears.items():
            if name in flat:
                grads[info.bias] = grads[info.bias] + xp.sum(flat[name], axis=0)
                for operand, param in info.peep:
                    values = self._over_steps(envs, static, operand, rows)
                    grads[param] = grads[param] + xp.sum(flat[name] * values, axis=0)
        if layout.hoisted:
            d_hoisted = xp.concatenate([flat[n] for n in layout.hoisted], axis=1)
            for term in self.hoisting.terms:
                d_part = d_hoisted[:, term.start:term.stop]
                operand = static[term.operand].reshape(rows, -1)
                if term.operand in d_static:
                    d_operand = d_part @ term.weights.T
                    d_static[term.operand] = d_static[term.operand] + \
                        d_operand.reshape(steps, batch, -1)
                d_weights = operand.T @ d_part
                for k in range(term.start // hidden, term.stop // hidden):
                    linear = layout.linears[layout.hoisted[k]]
                    (param,) = [p for o, p in linear.static if o == term.operand]
                    block = d_weights[:, k * hidden - term.start:(k + 1) * hidden - term.start]
                    grads[param] = grads[param] + block.T
        for source, group in layout.groups.items():
            values = self._over_steps(envs, static, source, rows)
            d_group = xp.concatenate([flat[m] for m in group.members], axis=1)
            d_weights = values.T @ d_group
            for k, member in enumerate(group.members):
                (param,) = [p for s, p in layout.linears[member].matrix if s == source]
                grads[param] = grads[param] + d_weights[:, k * hidden:(k + 1) * hidden].T

    def _over_steps(self, envs: list[dict[str, Array]], static: Mapping[str, Array],
                    node_id: str, rows: int) -> Array:
        """A value at every step, ``(T·B, size)``."""
        if node_id in static and getattr(static[node_id], "ndim", 0) == 3:
            return static[node_id].reshape(rows, -1)
        return self.spec.xp.concatenate([env[node_id] for env in envs], axis=0)


def static_back(spec: Spec, nodes: Sequence[str], static: Mapping[str, Array],
                d_static: dict[str, Array], grads: dict[str, Array]) -> None:
    """The static part of the cell backwards (``nodes``, its op nodes in schedule order),
    every step at once: each node's ``vjp`` over all ``T·B`` rows, from ``d_static`` (the
    gradients of static values, ``(T, B, width)``) into its operands' and ``grads``."""
    xp, graph = spec.xp, spec.schedule.graph
    for node_id in reversed(nodes):
        if node_id not in d_static:
            continue
        node = graph.node(node_id)
        shape = d_static[node_id].shape
        rows = shape[0] * shape[1]
        args = [static[a].reshape(rows, -1) if getattr(static[a], "ndim", 0) == 3
                else static[a] for a in node.args]
        weights = [spec.params[p] for p in node.params]
        value = static[node_id].reshape(rows, -1)
        grad_args, grad_weights = node.operation.vjp(
            xp, args, weights, node.attributes, value, d_static[node_id].reshape(rows, -1))
        for arg, grad_arg in zip(node.args, grad_args):
            if arg in d_static:
                d_static[arg] = d_static[arg] + grad_arg.reshape(d_static[arg].shape)
        for param, grad_param in zip(node.params, grad_weights):
            grads[param] = grads[param] + grad_param


def finish(spec: Spec, layout: Layout, kernels: BackwardKernels, weights: list[Product],
           products: Mapping[str, Array], sums: Mapping[tuple[str, str], Array],
           d_static: dict[str, Array], static: Mapping[str, Array], grad_y: Array,
           before: Sequence[str], x: Array) -> tuple[dict[str, Array], Array]:
    """Every parameter's gradient and ``x``'s, from what a compiled backward pass left:
    the weight gradients ``products`` (``(size, count·H)`` by :class:`Product` ``out``;
    arrays of this call alone, of which the gradients may be views),
    the bias and peephole gradients ``sums`` (by linear and parameter), the gradients of
    the static values (``d_static``, ``(T, B, width)``); then the static part of the
    cell backwards (``before``: its op nodes made before the loop, in schedule order)."""
    xp, graph, hidden = spec.xp, spec.schedule.graph, spec.hidden
    found_grads: dict[str, Array] = {}
    for product in weights:
        found = products[product.out]
        for k, linear in enumerate(product.linears):
            param = weight_of(spec.schedule, linear, product.operand)
            value = found[:, k * hidden:(k + 1) * hidden].T
            # a weight's first gradient as it is, where it lies in the weights' layout (a
            # view of this call's product), else copied into it: no zeros to add it to
            found_grads[param] = found_grads[param] + value if param in found_grads \
                else xp.ascontiguousarray(value)
    grads = {name: found_grads[name] if name in found_grads else xp.zeros_like(value)
             for name, value in spec.params.items()}
    for (_, param), total in sums.items():
        grads[param] += total
    (output,) = graph.outputs
    (input_name,) = graph.inputs
    if output in layout.static:
        d_static[output] = d_static[output] + grad_y if output in d_static else grad_y
    for node_id in [input_name, *before]:
        value = static.get(node_id)
        if value is not None and node_id in kernels.plan.got and node_id not in d_static \
                and getattr(value, "ndim", 0) == 3:
            d_static[node_id] = xp.zeros(value.shape, dtype=spec.dtype)
    static_back(spec, before, static, d_static, grads)
    return grads, d_static[input_name] if input_name in d_static else xp.zeros_like(x)


class CompiledGrad(Executor):
    """``forward`` and ``backward`` as the NumPy and CUDA plans answer them: their spec and
    layout's :class:`CompiledBackward`, built on the first call and kept."""

    layout: Layout
    _compiled_backward: CompiledBackward | None = None

    def update(self, params: Mapping[str, Array]) -> None:
        super().update(params)
        self._compiled_backward = None

    def _engine(self) -> CompiledBackward:
        if self._compiled_backward is None:
            self._compiled_backward = CompiledBackward(self.spec, self.layout)
        return self._compiled_backward

    def forward(self, x: Array, state: Mapping[str, Array]) -> CompiledTape:
        return self._engine().forward(x, state)

    def backward(self, tape: Tape, grad_y: Array, grad_final: Mapping[str, Array],
                 record: bool = False) -> Gradients:
        self.refuse_record(record)
        if not isinstance(tape, CompiledTape):
            raise TypeError("a tape is read by the executor that made it")
        return self._engine().backward(tape, grad_y, grad_final)

    @classmethod
    def allocations(cls, schedule: Schedule, work: str, steps: int, batch: int,
                    input_size: int, hidden: int, dtype: np.dtype) -> list[Allocation]:
        """``y``, the hoisted products and static values over all ``T·B`` rows, the
        states; a trace's every assignment; for a gradient, every value of every step and
        as many gradients."""
        return hoisted_allocations(schedule, work, steps, batch, input_size, hidden, dtype)


def hoisted_allocations(schedule: Schedule, work: str, steps: int, batch: int,
                        input_size: int, hidden: int, dtype: np.dtype) -> list[Allocation]:
    """The memory of a plan that hoists every linear's static part over all ``T·B`` rows
    (the NumPy and CUDA plans): see :meth:`CompiledGrad.allocations`."""
    graph = schedule.graph
    (output,) = graph.outputs
    rows = steps * batch

    def width(nodes: Any) -> int:
        return sum(schedule.width(n, input_size, hidden) for n in nodes)

    found = [allocation("y", (steps, batch, width([output])), dtype)]
    static = set(graph.inputs)
    columns = 0
    for node_id in schedule.order:
        node = graph.node(node_id)
        if node.kind is NodeKind.CONST or (node.kind is NodeKind.OP
                                           and all(a in static for a in node.args)):
            static.add(node_id)
            if node.kind is NodeKind.OP:
                columns += schedule.width(node_id, input_size, hidden)
        elif node.is_linear:
            columns += hidden  # its static operands' share of the hoisted product
    if columns:
        found.append(allocation("the hoisted products (T·B rows)", (rows, columns), dtype))
    found.append(allocation("the states", (2 * len(graph.states), batch, hidden), dtype))
    if work == "trace":
        found.append(allocation("the trace (every assignment, T·B rows)",
                                (rows, width(graph.assignments)), dtype))
    elif work == "grad":
        ops = [n for n in schedule.order if graph.node(n).kind is NodeKind.OP]
        found += [allocation("every value of every step (T·B rows)", (rows, width(ops)), dtype),
                  allocation("their gradients (T·B rows)", (rows, width(ops)), dtype)]
    return found
