"""The reference interpreter: the definition of what a cell computes.

It walks the schedule node by node with an environment dict (single
assignment: each node's value is written once per step), dispatching every op
through the op table, and carries the states from one step to the next. It
uses only the array namespace ``xp`` it is given, so the same code runs on
NumPy, CuPy and ``array_api_strict`` — the test that nothing leaves the
standard. Every compiled plan must agree with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lstm_graph.executors.contract import Array, Executor, Progress
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
            env[node_id] = node.operation.reference(xp, args, [params[p] for p in node.params])
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


class Reference(Executor):
    """The reference interpreter as an executor: no compilation, any array namespace."""

    name = "reference"

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
