"""The reference interpreter: the definition of what a cell computes, and its gradients.

It walks the schedule node by node with an environment dict (single
assignment: each node's value is written once per step), dispatching every op
through the op table, and carries the states from one step to the next. It
uses only the array namespace ``xp`` it is given, so the same code runs on
NumPy, CuPy and ``array_api_strict`` — the test that nothing leaves the
standard. Every compiled plan must agree with it.

:func:`backward` is its reverse mode, backpropagation through time generated
from the schedule: within a step, the nodes in reverse order, each passing its
gradient to its operands through the op table's ``vjp``; across steps, what
reaches a state's old value ``s[t-1]`` is carried into ``s`` of the step before
(the memory pipe's "constant error carousel" is exactly this carry).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lstm_graph.executors.backends import mean_sequence_norm
from lstm_graph.executors.contract import Array, Executor, Gradients, Progress, Tape
from lstm_graph.formats.memory import Allocation, allocation
from lstm_graph.ir import NodeKind, old_id
from lstm_graph.schedule import Schedule


def step(schedule: Schedule, xp: Any, params: Mapping[str, Array], consts: Mapping[str, Array],
         x_t: Array, state: Mapping[str, Array]) -> dict[str, Array]:
    """One time step: the environment holding every node's value.

    ``x_t`` is ``(B, I)``; ``state`` maps each state name to its ``(B, H)`` old value.
    """
    graph = schedule.graph
    (input_name,) = graph.inputs
    env: dict[str, Array] = {input_name: x_t, **consts}
    env.update({old_id(name): value for name, value in state.items()})
    for node_id in schedule.order:
        node = graph.node(node_id)
        if node.kind is NodeKind.OP:
            args = [env[a] for a in node.args]
            env[node_id] = node.operation.reference(xp, args, [params[p] for p in node.params],
                                                    node.attributes)
    return env


def constants(schedule: Schedule, xp: Any, dtype: Any) -> dict[str, Array]:
    """Every constant node as a 0-d array of ``dtype``."""
    return {n.id: xp.asarray(n.value, dtype=dtype)
            for n in schedule.graph.nodes.values() if n.kind is NodeKind.CONST}


def run(schedule: Schedule, xp: Any, params: Mapping[str, Array], x: Array,
        state: Mapping[str, Array], progress: Progress | None = None
        ) -> tuple[Array, dict[str, Array]]:
    """Run a whole sequence ``x`` of shape ``(T, B, I)``.

    Returns ``y`` (the declared output at every step, ``(T, B, size)``) and the
    final value of every state.
    """
    graph = schedule.graph
    (output,) = graph.outputs
    consts = constants(schedule, xp, x.dtype)
    ys = []
    current = dict(state)
    for t in range(x.shape[0]):
        env = step(schedule, xp, params, consts, x[t, ...], current)
        ys.append(env[output])
        current = {name: env[name] for name in graph.states}
        if progress is not None:
            progress(1)
    return xp.stack(ys), current


def needs_gradient(schedule: Schedule) -> set[str]:
    """Nodes whose value depends on the input, a state or a parameter (not on numbers alone)."""
    graph = schedule.graph
    fixed = {n.id for n in graph.nodes.values() if n.kind is NodeKind.CONST}
    for node_id in schedule.order:
        node = graph.node(node_id)
        if not node.is_linear and node.args and all(a in fixed for a in node.args):
            fixed.add(node_id)
    return {n for n in graph.nodes if n not in fixed}


def accumulate(grads: dict[str, Array], node_id: str, gradient: Array) -> None:
    """Add ``gradient`` to what ``node_id`` has received so far."""
    grads[node_id] = grads[node_id] + gradient if node_id in grads else gradient


def environments(schedule: Schedule, xp: Any, params: Mapping[str, Array], x: Array,
                 state: Mapping[str, Array]) -> tuple[list[dict[str, Array]], dict[str, Array]]:
    """Every node's value at every step of the run of ``x`` from ``state``, and the final
    states: what the backward pass reads."""
    graph = schedule.graph
    consts = constants(schedule, xp, x.dtype)
    envs, current = [], dict(state)
    for t in range(x.shape[0]):
        envs.append(step(schedule, xp, params, consts, x[t, ...], current))
        current = {name: envs[-1][name] for name in graph.states}
    return envs, current


def backward(schedule: Schedule, xp: Any, params: Mapping[str, Array], x: Array,
             state: Mapping[str, Array], grad_y: Array, grad_final: Mapping[str, Array],
             record: bool = False,
             forward: tuple[list[dict[str, Array]], dict[str, Array]] | None = None
             ) -> Gradients:
    """Gradients of ``sum(grad_y · y) + Σ sum(grad_final[s] · final[s])`` for the run of
    ``x`` (``(T, B, I)``) from ``state``; with ``record``, also ``∂L/∂value`` of every
    assignment at every step (:attr:`Gradients.values`). ``forward``: the run's
    :func:`environments`, when already made."""
    graph = schedule.graph
    (output,) = graph.outputs
    (input_name,) = graph.inputs
    steps, batch = x.shape[0], x.shape[1]
    envs, current = forward or environments(schedule, xp, params, x, state)
    needs = needs_gradient(schedule)
    grad_params = {name: xp.zeros_like(value) for name, value in params.items()}
    carry = {s: grad_final[s] if s in grad_final else xp.zeros_like(state[s])
             for s in graph.states}
    grad_x: list[Array] = []
    # recorded into arrays made once (T, B, width): lists of steps stacked at the end held
    # them twice at once (gradflow's peak was 1.4 times what it was allowed)
    values: dict[str, Array] = {}
    edges: dict[tuple[str, str], list[Array]] = {}
    zero_norm = xp.asarray(0.0, dtype=xp.float64)
    for t in reversed(range(steps)):
        env = envs[t]
        grads: dict[str, Array] = {}
        accumulate(grads, output, grad_y[t, ...])
        for name in graph.states:
            accumulate(grads, name, carry[name])
        for node_id in reversed(schedule.order):
            node = graph.node(node_id)
            if node.kind is not NodeKind.OP or node_id not in grads:
                continue
            weights = [params[p] for p in node.params]
            grad_args, grad_weights = node.operation.vjp(
                xp, [env[a] for a in node.args], weights, node.attributes, env[node_id],
                grads[node_id])
            for arg, gradient in zip(node.args, grad_args):
                if arg in needs:
                    accumulate(grads, arg, gradient)
                    if record:
                        carried = edges.setdefault((arg, node_id), [zero_norm] * steps)
                        carried[t] = mean_sequence_norm(  # as gradflow's states
                            xp, gradient if gradient.ndim == 2 else xp.reshape(gradient,
                                                                              (1, -1)))
            for param, gradient in zip(node.params, grad_weights):
                grad_params[param] = grad_params[param] + gradient
        for name in graph.assignments if record else ():
            found = grads.get(name)
            if found is None:
                found = xp.zeros(env[name].shape if env[name].ndim == 2 else (batch, 1),
                                 dtype=x.dtype)
            if name not in values:
                values[name] = xp.empty((steps, *found.shape), dtype=found.dtype)
            values[name][t] = found
        grad_x.append(grads.get(input_name, xp.zeros_like(x[t, ...])))
        carry = {s: grads.get(old_id(s), xp.zeros_like(state[s])) for s in graph.states}
    y = xp.stack([env[output] for env in envs])
    return Gradients(xp.stack(grad_x[::-1]), grad_params, carry, y, current,
                     values,
                     {edge: xp.stack(norms) for edge, norms in edges.items()})


@dataclass
class ReferenceTape(Tape):
    """The reference's forward pass: every node's value at every step."""

    envs: list[dict[str, Array]]


class Reference(Executor):
    """The reference interpreter as an executor: no compilation, any array namespace."""

    name = "reference"
    backends = ("numpy", "cupy")
    records = True

    @property
    def source(self) -> str:
        """What it walks: the schedule with every node (it generates no code)."""
        return self.spec.schedule.to_text(nodes=True)

    def run(self, x: Array, state: Mapping[str, Array], progress: Progress | None = None
            ) -> tuple[Array, dict[str, Array]]:
        spec = self.spec
        return run(spec.schedule, spec.xp, spec.params, x, state, progress)

    def trace(self, x: Array, state: Mapping[str, Array], progress: Progress | None = None
              ) -> dict[str, Array]:
        spec, xp = self.spec, self.spec.xp
        graph = spec.schedule.graph
        consts = constants(spec.schedule, xp, x.dtype)
        values: dict[str, list[Array]] = {name: [] for name in graph.assignments}
        current = dict(state)
        for t in range(x.shape[0]):
            env = step(spec.schedule, xp, spec.params, consts, x[t, ...], current)
            for name, recorded in values.items():
                recorded.append(xp.broadcast_to(env[name], (x.shape[1], spec.width(name))))
            current = {name: env[name] for name in graph.states}
            if progress is not None:
                progress(1)
        return {name: xp.stack(recorded) for name, recorded in values.items()}

    def forward(self, x: Array, state: Mapping[str, Array]) -> ReferenceTape:
        spec = self.spec
        envs, final = environments(spec.schedule, spec.xp, spec.params, x, state)
        (output,) = spec.schedule.graph.outputs
        y = spec.xp.stack([env[output] for env in envs])
        return ReferenceTape(x, state, y, final, envs)

    def backward(self, tape: Tape, grad_y: Array, grad_final: Mapping[str, Array],
                 record: bool = False) -> Gradients:
        spec = self.spec
        if not isinstance(tape, ReferenceTape):
            raise TypeError("a tape is read by the executor that made it")
        return backward(spec.schedule, spec.xp, spec.params, tape.x, tape.state, grad_y,
                        grad_final, record, (tape.envs, tape.final))

    @classmethod
    def allocations(cls, schedule: Schedule, work: str, steps: int, batch: int,
                    input_size: int, hidden: int, dtype: np.dtype) -> list[Allocation]:
        """``y`` and the states; a trace's every assignment; for a gradient, every node's
        value at every step, and the input's gradient and the values' (recorded)."""
        graph = schedule.graph
        (output,) = graph.outputs
        rows = steps * batch

        def width(nodes: Any) -> int:
            return sum(schedule.width(n, input_size, hidden) for n in nodes)

        found = [allocation("y", (steps, batch, width([output])), dtype),
                 allocation("the states", (2 * len(graph.states), batch, hidden), dtype)]
        if work == "trace":
            found.append(allocation("the trace (every assignment, T·B rows)",
                                    (rows, width(graph.assignments)), dtype))
        elif work == "grad":
            ops = [n for n in schedule.order if graph.node(n).kind is NodeKind.OP]
            found += [allocation("every value of every step (T·B rows)", (rows, width(ops)),
                                 dtype),
                      allocation("the gradient of x", (steps, batch, input_size), dtype),
                      allocation("every assignment's gradient (T·B rows)",
                                 (rows, width(graph.assignments)), dtype)]
        return found
