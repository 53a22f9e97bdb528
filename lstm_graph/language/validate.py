"""The validator: checks a parsed cell before anything orders or runs it.

It reports, each at ``file:line:col``: a declared state never assigned, a
declared output that does not exist, missing header lines, algebraic loops
(with the cycle path and the ``[t-1]`` that would break it), size mismatches,
the directive lines (``preset``, ``gates``), and, as warnings, values that
reach no state or output. Sizes are symbolic (:class:`~lstm_graph.ir.Size`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import networkx as nx
import numpy as np

from lstm_graph.errors import Diagnostic
from lstm_graph.ir import Assignment, CellGraph, Loc, NodeKind, Size
from lstm_graph.language import directives
from lstm_graph.language.parser import Suggestions

#: At most this many values and inputs are warned of as never used, then one warning
#: counts the rest: a generated cell's thousands would bury its errors.
MAX_UNUSED = 100


def _diag(graph: CellGraph, loc: Loc, message: str, severity: str = "error") -> Diagnostic:
    return Diagnostic(graph.file, loc.line, loc.col, severity, message)


def check_declarations(graph: CellGraph, assigned: set[str],
                       headers: Collection[str] = ()) -> list[Diagnostic]:
    """Header lines present; every state assigned; every output defined.

    ``assigned`` holds every name some line assigns, broken lines included; ``headers``
    the header lines the text has, whose names may all have been refused (said there).
    """
    found = []
    for keyword, names in (("input", graph.inputs), ("state", graph.states),
                           ("output", graph.outputs)):
        if not names and keyword not in headers:
            found.append(_diag(graph, Loc(1, 1), f"no '{keyword}' line; a cell declares its "
                               f"{keyword} with a header line such as '{keyword} "
                               f"{ {'input': 'x', 'state': 'c, h', 'output': 'h'}[keyword] }'"))
    for state, loc in graph.states.items():
        if state not in assigned:
            found.append(_diag(graph, loc, f"state '{state}' is declared but never assigned; "
                               f"add a line '{state} = ...' computing its new value"))
    if "y" in graph.states:
        found.append(_diag(graph, graph.states["y"], "state 'y' has the name under which "
                           "'run' writes the output sequence, so run refuses this cell "
                           "(trace writes the state as final.y); rename the state", "warning"))
    for output, loc in graph.outputs.items():
        if output in graph.inputs:
            found.append(_diag(graph, loc, f"output '{output}' is the cell's input, which the "
                               "cell would hand on unchanged; name a state or computed value"))
        elif output not in assigned:
            found.append(_diag(graph, loc, f"output '{output}' does not exist; assign it or "
                               "name a state or computed value"))
    return found


def dependencies(assignments: Mapping[str, Assignment]) -> nx.DiGraph:
    """Assignment-level graph: an edge ``a → b`` when ``a`` reads this step's ``b``."""
    deps = nx.DiGraph()
    for name, assignment in assignments.items():
        deps.add_node(name)
        for read, _loc in assignment.reads:
            if read in assignments:
                deps.add_edge(name, read)
    return deps


def check_loops(graph: CellGraph, broken: Mapping[str, Assignment] | None = None
                ) -> list[Diagnostic]:
    """One error per algebraic loop: values that need each other within one step.
    ``broken``: lines with other errors, with what they read (a loop through one is
    still a loop)."""
    assignments = {**graph.assignments, **(broken or {})}
    deps = dependencies(assignments)
    found = []
    order = {name: a.index for name, a in assignments.items()}
    for component in nx.strongly_connected_components(deps):
        members = sorted(component, key=order.__getitem__)
        first = members[0]
        if len(members) == 1 and not deps.has_edge(first, first):
            continue
        # The read to change: prefer one of a state's new value, in file order.
        reads = [
            (reader, read, loc)
            for reader in members
            for read, loc in assignments[reader].reads
            if read in component
        ]
        reader, read, loc = min(reads, key=lambda r: (r[1] not in graph.states, order[r[0]]))
        path = [reader, *nx.shortest_path(deps, read, reader)] if read != reader else [reader,
                                                                                        reader]
        if read in graph.states:
            fix = f"to use the previous step's value write {read}[t-1]"
        elif read == reader:
            fix = (f"declare it as a state ('state {read}') and read its previous value with "
                   f"{read}[t-1]")
        else:
            fix = ("declare one of them as a state ('state NAME') and read its previous value "
                   "with NAME[t-1]")
        if read == reader:
            what = f"'{reader}' reads its own value of this same step, which it is computing"
        else:
            what = f"'{reader}' needs '{read}' of this same step, which needs '{reader}'"
        found.append(_diag(graph, loc, f"algebraic loop {' -> '.join(path)}: {what}; {fix}"))
    return found


def infer_sizes(graph: CellGraph) -> tuple[dict[str, Size], list[Diagnostic]]:
    """Symbolic size of every node, and the size mismatches found.

    Only ``linear`` changes sizes (its output has the hidden size H); element-wise
    ops need equal sizes, a number (size 1) fitting any. After parse errors the graph
    lacks the lines that had them: what reads one of those has no size and is skipped.
    """
    sizes: dict[str, Size] = {}
    found = []
    for node_id in nx.topological_sort(graph.dataflow):
        node = graph.nodes.get(node_id)
        if node is None or any(arg not in sizes for arg in node.args):
            continue
        if node.kind is NodeKind.INPUT:
            sizes[node_id] = Size.INPUT
        elif node.kind is NodeKind.OLD:
            sizes[node_id] = Size.HIDDEN
        elif node.kind is NodeKind.CONST:
            sizes[node_id] = Size.SCALAR
        elif node.is_linear:
            sizes[node_id] = Size.HIDDEN
            for arg, peep in zip(node.args, node.peep):
                if sizes[arg] is Size.SCALAR:
                    found.append(_diag(graph, node.loc, f"linear(...) operand "
                                       f"{graph.describe(arg)} is a single number; operands "
                                       "are vectors"))
                elif peep and sizes[arg] is not Size.HIDDEN:
                    found.append(_diag(graph, node.loc, f"peep({graph.describe(arg)}) needs "
                                       f"the hidden size H, but it has {sizes[arg].words}"
                                       "; peepholes are element-wise, use a plain operand"))
        else:
            vectors = {sizes[a] for a in node.args} - {Size.SCALAR}
            if len(vectors) > 1:
                parts = ", ".join(f"{graph.describe(a)} has {sizes[a].words}" for a in node.args)
                spelling = node.operation.spelling
                found.append(_diag(graph, node.loc, f"size mismatch in '{spelling}': {parts}; "
                                   "pass the input through linear(...) to get size H"))
                sizes[node_id] = Size.HIDDEN
            else:
                sizes[node_id] = vectors.pop() if vectors else Size.SCALAR
    for state in graph.states:
        if state in graph.assignments and sizes.get(state, Size.HIDDEN) is not Size.HIDDEN:
            found.append(_diag(graph, graph.assignments[state].loc, f"state '{state}' must have "
                               f"the hidden size H, but its value has {sizes[state].words}"))
    for output, loc in graph.outputs.items():
        if sizes.get(output) is Size.SCALAR:
            found.append(_diag(graph, loc, f"output '{output}' is a single number; an output "
                               "is a vector"))
    return sizes, found


def check_constants(graph: CellGraph, dtype: np.dtype) -> list[Diagnostic]:
    """Errors for the numbers in the cell that do not fit ``dtype`` (``1e39`` would be
    infinity in float32). :meth:`~lstm_graph.cell.Cell.compile` runs this check, when the
    run's dtype is known."""
    largest = float(np.finfo(dtype).max)
    found = []
    for node in graph.nodes.values():
        numbers = [("the constant", node.value)] if node.kind is NodeKind.CONST else \
            [(f"the {name} of {node.operation.spelling}()", value) for name, value in node.attrs]
        found += [_diag(graph, node.loc, f"{what} {value:g} is too large for {dtype} (the "
                        f"largest is about {largest:.2g}); run in float64 (--dtype float64) or "
                        "use a smaller number")
                  for what, value in numbers if value is not None and abs(value) > largest]
    return found


def unused(graph: CellGraph) -> list[Diagnostic]:
    """Warnings for values and inputs that reach no state and no output."""
    roots = [n for n in (*graph.states, *graph.outputs) if n in graph.nodes]
    used, frontier = set(roots), list(roots)  # one search back from all of them: a search
    while frontier:  # from each root took time and memory as the square of a chain of states
        for source in graph.dataflow.predecessors(frontier.pop()):
            if source not in used:
                used.add(source)
                frontier.append(source)
    found = [
        _diag(graph, a.loc, f"'{a.name}' is never used: it reaches no state and no output",
              "warning")
        for a in graph.assignments.values() if a.name not in used
    ]
    found += [
        _diag(graph, loc, f"input '{name}' is never used", "warning")
        for name, loc in graph.inputs.items() if name not in used
    ]
    if len(found) > MAX_UNUSED:
        more = found[MAX_UNUSED]
        found = found[:MAX_UNUSED] + [Diagnostic(
            more.file, more.line, more.col, "warning",
            f"and {len(found) - MAX_UNUSED:,} more values from here that reach no state and "
            f"no output (the first {MAX_UNUSED} are listed)")]
    return found


def validate(graph: CellGraph, assigned: set[str], parse_errors: bool = False,
             broken: Mapping[str, Assignment] | None = None, headers: Collection[str] = ()
             ) -> tuple[dict[str, Size], list[Diagnostic]]:
    """Run every check; return the node sizes and all diagnostics.

    After parse errors the graph lacks the assignments that had them, so only
    the checks that stay true of the rest run: declarations, loops (``broken`` holds
    what the lines with errors read), the directives (the names those lines assign
    count as assigned) and the sizes of what does not depend on those lines.
    """
    found = check_declarations(graph, assigned, headers)
    loops = check_loops(graph, broken)
    found += directives.check(graph, Suggestions(), assigned - set(graph.assignments))
    if parse_errors:
        return {}, found + loops + (infer_sizes(graph)[1] if not loops else [])
    if loops:
        return {}, found + loops
    sizes, size_errors = infer_sizes(graph)
    return sizes, found + size_errors + unused(graph)
