"""One C code generator for a step's element-wise work; CUDA and native C are dialects.

A step of a compiled cell is GEMMs (the per-step linears, see
:mod:`~lstm_graph.executors.layout`) and element-wise work. This module writes
the element-wise work as C from the op table, **once**, for both back ends:
every value is a register, one pass over the step's ``(batch, hidden)``
elements computes every op. A step is cut into **segments**::

    GEMMs of the values there at its start → segment 0 → [GEMM of a value segment 0
    made → segment 1 → …]

so a segment ends only where a linear multiplies a matrix with a value computed
earlier in the same step (none of the built-in cells does).

The body of a segment (:class:`Segment.body`) is the same text in every
dialect: it reads and writes arrays through typed :class:`Binding` names
with the index variables ``b`` (the sequence), ``j`` (the hidden unit) and
``i = b·H + j``, all ``ptrdiff_t``. A :class:`Dialect` supplies what differs,
in the way tinygrad's renderers share one C-style renderer: the names of the
math functions (the op table's ``{exp}``, ``{tanh}`` and ``{log1p}`` placeholders), the
preamble, and how ``b``, ``j`` and ``i`` come to be (a CUDA thread per
element, or loops in a host function). No back end edits another's text.

**The interface is typed.** Every array a body names is a :class:`Binding`,
created here and nowhere else: its role, what it holds (``key``), its width per
sequence, its :class:`Lifetime` (made from the weights, kept from run to run, or
made for each run) and how its pointer moves from step to step. The back ends
never spell a binding's name: they ask :class:`StepKernels` (``kernels.output``,
``kernels.states[s]``, ``kernels.groups[source]``), make every array with
:func:`arrays` (the one place a role becomes an array), and declare a generated
function's arguments with :class:`Arguments`. The reverse mode
(:mod:`~lstm_graph.executors.reverse_c`) speaks the same vocabulary.

Sizes: every dynamic value (one that depends on a state) has the hidden size
H, because states do and the validator admits element-wise ops only between
equal sizes; so the element loop covers ``(batch, H)``. A static value (one
that reads only the input and constants) of another size is computed before
the loop (:func:`~lstm_graph.executors.prepare.static_values`), and a static
output (of size I, say) is copied into ``y`` there, not here.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from lstm_graph.executors.layout import Layout
from lstm_graph.ir import NodeKind, Size
from lstm_graph.ops import C_FUNCTIONS
from lstm_graph.schedule import Schedule

#: An array of a back end's namespace (NumPy or CuPy).
Array = Any


class Role(str, Enum):
    """What an array a kernel reads or writes holds."""

    HOISTED = "hoisted"  # S: the hoisted part of the linears at this step, (B, hoisted)
    BIAS = "bias"  # S_bias: the hoisted linears' biases, (hoisted,)
    GROUP = "group"  # G_k: the per-step GEMM output of group k, (B, members·H)
    PARAM = "param"  # a peephole's diagonal weight, (H,)
    STATIC = "static"  # a static value at this step, (B, H); a static number, (1,)
    BUFFER = "buffer"  # a dynamic value kept from one segment to a later one, (B, H)
    STATE = "state"  # a state: its old value on entry, its new value on exit, (B, H)
    OUTPUT = "output"  # y at this step, (B, H)
    TRACE = "trace"  # an assignment's value at this step, kept for a trace, (B, H)
    TAPE = "tape"  # what the backward pass reads, at this step (or the step before)
    GRAD_OUTPUT = "grad_output"  # ∂L/∂y at this step, (B, H)
    CARRY = "carry"  # ∂L/∂ a state's value at this step (or the step before), (B, H)
    DZ = "dz"  # ∂L/∂ every linear's sum at this step, (B, linears·H)
    GRAD_BUFFER = "grad_buffer"  # ∂L/∂ a value, from a later segment to an earlier one
    GRAD_STATIC = "grad_static"  # ∂L/∂ a static value at this step, (B, H)
    SUMS = "sums"  # one thread's running sums of the bias and peephole gradients


class Lifetime(str, Enum):
    """When the array of a binding is made."""

    WEIGHTS = "weights"  # from the parameters, when the executor is built: (width,)
    WORK = "work"  # batch rows of ``width``, when the executor is built; kept between runs
    RUN = "run"  # for each run (or given by it): ``(steps, batch, width)`` or a number


@dataclass(frozen=True)
class Binding:
    """One array name of the generated code: its role, what it holds, how it is laid out.

    ``key`` is the node, parameter, state or group source it holds (empty for
    ``S``, ``S_bias``, ``y`` and the whole-step arrays of the reverse mode). ``width``
    is how many numbers a sequence has in it at one step (a parameter's length).
    A ``per_step`` array holds every step, one after the other: a kernel's pointer
    to it is at step ``t + offset`` (a tape keeps the initial states in step 0, so
    step ``t`` is at ``t + 1``); with ``parity``, the array holds two steps and the
    pointer is at ``(t + offset) & 1``. A ``scalar`` static value is one number
    for every element. A binding ``alias`` of another names the other's array at another
    step (the step before's slot of a tape, the next step's ``dZ``): it has no array of
    its own.
    """

    name: str
    role: Role
    key: str = ""
    width: int = 0
    lifetime: Lifetime = Lifetime.WORK
    per_step: bool = False
    offset: int = 0
    parity: bool = False
    scalar: bool = False
    alias: str = ""

    def step_offset(self, rows: str = "batch") -> str:
        """C for how far step ``t``'s slice lies from the start of the array (``""``
        for arrays that do not move), with ``rows`` the C expression of the batch."""
        step = f"t + {self.offset}" if self.offset > 0 else \
            f"t - {-self.offset}" if self.offset < 0 else "t"
        if self.parity:
            return f" + (({step}) & 1) * {rows} * {self.width}"
        if self.per_step:
            return f" + ({step}) * {rows} * {self.width}"
        return ""

    def slots(self, steps: int) -> int:
        """How many steps the array holds (for a ``per_step`` or ``parity`` array)."""
        return 2 if self.parity else steps + self.offset


@dataclass
class Segment:
    """One fused pass over the step's elements and the GEMMs that run just before it."""

    index: int
    gemms: list[str] = field(default_factory=list)  # group sources
    nodes: list[str] = field(default_factory=list)  # dynamic op nodes it computes
    inputs: list[str] = field(default_factory=list)  # binding names it only reads
    outputs: list[str] = field(default_factory=list)  # binding names it writes
    body: list[str] = field(default_factory=list)  # dialect-neutral statements
    lines: list[Line] = field(default_factory=list)  # each statement's phase and locals

    @property
    def name(self) -> str:
        return f"lstm_graph_step_{self.index}"


@dataclass(frozen=True)
class Line:
    """What a statement of a segment's body computes from and in which **phase**.

    Phases cut the chains of dependent values so that none passes through two math
    functions (``exp``, ``tanh``, ``log``: tens of dependent instructions each) in one
    phase: a value that applies one to a value whose chain in its phase already passed
    one starts the next phase. A back end that loops over the elements may run each
    phase as a loop of its own over a few vectors of elements, keeping the locals a
    later phase reads (``defines`` here, in ``uses`` there) in between; one loop of a
    whole LSTM step, two such functions deep, measured latency-bound: the processor
    overlaps too few elements' chains (AMD EPYC Zen 4: 3.4 ns an element in one loop,
    2.6 in two, AVX2; 2.4 and 2.1, AVX-512). The statements and their order within a
    phase are those of the body, so the results are the same bits.
    """

    phase: int
    defines: str = ""  # the local it declares
    uses: frozenset[str] = frozenset()  # the locals it reads


@dataclass
class TapeLayout:
    """What the forward pass keeps for the backward pass, per step, in one array.

    ``columns`` maps each kept node (an op node, or a state's new value) to its block of
    ``H`` numbers; the array is ``(T + 1, B, width)``: step ``t`` is slot ``t + 1``, and
    slot 0 holds the initial states (so ``s[t-1]`` is the state's column one slot back).
    """

    columns: dict[str, int]
    hidden: int

    @property
    def width(self) -> int:
        return len(self.columns) * self.hidden

    def column(self, node_id: str) -> int:
        """Where ``node_id``'s block starts in a row of the tape."""
        return self.columns[node_id] * self.hidden


@dataclass
class StepKernels:
    """A step's segments and every array name their bodies use.

    The arrays the back ends fill or read by what they hold: ``hoisted`` (``S``, the
    hoisted linears' products; ``None`` where no body reads it) and ``bias``
    (``S_bias``), ``output`` (``y``; ``None`` for a static output), ``states`` (by
    state), ``groups`` (by source), ``tape`` (with a :class:`TapeLayout`).
    """

    segments: list[Segment]
    bindings: dict[str, Binding]
    hidden: int
    hoisted: Binding | None
    bias: Binding
    output: Binding | None
    states: dict[str, Binding]
    groups: dict[str, Binding]
    tape: Binding | None = None

    def binding_of(self, role: Role, key: str) -> Binding:
        """The binding of ``role`` holding ``key`` (the buffer of a node, say)."""
        return next(b for b in self.bindings.values() if b.role is role and b.key == key)

    def of_role(self, role: Role) -> list[Binding]:
        return [b for b in self.bindings.values() if b.role is role]


def _segments(schedule: Schedule, layout: Layout) -> tuple[list[Segment], dict[str, int]]:
    """Cut the dynamic ops into segments; a segment ends where a GEMM needs one of its values."""
    graph = schedule.graph
    dynamic = [n for n in schedule.order
               if graph.node(n).kind is NodeKind.OP and n not in layout.static]
    segments = [Segment(0)]
    segment_of: dict[str, int] = {}
    for source in layout.groups:
        if source in layout.static or graph.node(source).kind is not NodeKind.OP:
            segments[0].gemms.append(source)
    for node_id in dynamic:
        info = layout.linears.get(node_id)
        for source in dict.fromkeys(s for s, _ in (info.matrix if info else [])):
            if source in segment_of and not any(source in s.gemms for s in segments):
                if segment_of[source] == len(segments) - 1:
                    segments.append(Segment(len(segments)))
                segments[segment_of[source] + 1].gemms.append(source)
        segment_of[node_id] = len(segments) - 1
        segments[-1].nodes.append(node_id)
    return segments, segment_of


def segments_of(schedule: Schedule, layout: Layout) -> list[Segment]:
    """The segments of a step, without bodies (which nodes each computes, which GEMMs
    run before it): the reverse mode runs them backwards."""
    return _segments(schedule, layout)[0]


def step_kernels(schedule: Schedule, layout: Layout, hidden: int, trace: bool = False,
                 folded: Collection[str] = (), made_statics: Collection[str] = (),
                 hoisted_per_step: bool = True, tape: TapeLayout | None = None) -> StepKernels:
    """The segments of one step, their bodies and bindings, every shape baked in.

    With ``trace``, each segment also stores every assignment it computes into a
    per-step ``TRACE`` array (a separate build: the untraced step stores nothing); with
    a ``tape``, every value the backward pass reads (:class:`TapeLayout`). ``folded``
    linears have their hoisted product (not their bias) in their group's GEMM output
    already, so their body reads no ``S`` (the native executor's per-step GEMMs
    multiply ``[x_t, h_{t-1}]`` at once; the CUDA plan folds none).
    ``made_statics`` are static values the back end computes itself (the native step's
    static linears, rather than NumPy before the loop), and ``hoisted_per_step`` says
    whether ``S`` and those hold every step (computed over all ``T·B`` rows before the
    loop) or one step's rows (computed at each step).

    >>> from lstm_graph.library import load_cell
    >>> from lstm_graph.executors.layout import analyse
    >>> cell = load_cell("peephole_lstm")
    >>> kernels = step_kernels(cell.schedule, analyse(cell.schedule), hidden=8)
    >>> len(kernels.segments), kernels.segments[0].gemms
    (1, ['h[t-1]'])
    """
    graph = schedule.graph
    segments, segment_of = _segments(schedule, layout)
    last = len(segments) - 1
    hoisted_width = len(layout.hoisted) * hidden
    hoisted = Binding("S", Role.HOISTED, width=hoisted_width,
                      lifetime=Lifetime.RUN if hoisted_per_step else Lifetime.WORK,
                      per_step=hoisted_per_step)
    bias = Binding("S_bias", Role.BIAS, width=hoisted_width, lifetime=Lifetime.WEIGHTS)
    bindings: dict[str, Binding] = {"S_bias": bias}
    (output,) = graph.outputs
    y = None
    if output not in layout.static:
        y = bindings["y"] = Binding("y", Role.OUTPUT, width=hidden, lifetime=Lifetime.RUN,
                                    per_step=True)
    groups = {}
    for k, source in enumerate(layout.groups):
        width = len(layout.groups[source].members) * hidden
        groups[source] = bindings[f"G_{k}"] = Binding(f"G_{k}", Role.GROUP, source, width)
    states = {}
    for state in graph.states:
        states[state] = bindings[f"old_{state}"] = Binding(f"old_{state}", Role.STATE, state,
                                                           hidden)
    taped = None
    if tape is not None:
        taped = bindings["tape"] = Binding("tape", Role.TAPE, width=tape.width,
                                           lifetime=Lifetime.RUN, per_step=True, offset=1)
    generated: dict[tuple[Role, str], str] = {}

    def name_of(role: Role, key: str) -> str:
        if (role, key) not in generated:
            name = f"{role.value}_{len(generated)}"
            generated[role, key] = name
            if role is Role.STATIC:
                scalar = schedule.sizes[key] is Size.SCALAR
                stepwise = key in made_statics and not hoisted_per_step
                bindings[name] = Binding(name, role, key, 1 if scalar else hidden,
                                         Lifetime.WORK if stepwise else Lifetime.RUN,
                                         per_step=not scalar and not stepwise, scalar=scalar)
            elif role is Role.PARAM:
                bindings[name] = Binding(name, role, key, hidden, Lifetime.WEIGHTS)
            elif role is Role.TRACE:
                bindings[name] = Binding(name, role, key, hidden, Lifetime.RUN, per_step=True)
            else:
                bindings[name] = Binding(name, role, key, hidden)
        return generated[role, key]

    widths = {source: len(g.members) * hidden for source, g in layout.groups.items()}
    position = {n: k for k, n in enumerate(schedule.order)}
    state_names = list(graph.states)
    stored = {n for n in segment_of
              if any(segment_of.get(c, last) > segment_of[n] for c in graph.consumers(n))
              or any(n in s.gemms for s in segments)
              or (n in (*state_names, output) and segment_of[n] < last)}
    kept_here = {} if tape is None else \
        {n: segment_of.get(n, 0) for n in tape.columns if n not in graph.states}
    uses_s = False

    expensive = {n for n in graph.nodes if graph.node(n).kind is NodeKind.OP and any(
        "{" + f + "}" in (graph.node(n).operation.c or "") for f in C_FUNCTIONS)}
    for segment in segments:
        local: set[str] = set()
        reads: list[str] = []
        phase: dict[str, tuple[int, bool]] = {}  # local -> its phase, whether its chain
        # there passed a math function
        seen: set[str] = set()  # the locals the statement being written reads

        def emit(statement: str, at: int, body: list[str], defines: str = "",
                 segment: Segment = segment, seen: set[str] = seen) -> None:
            body.append(statement)
            segment.lines.append(Line(at, defines, frozenset(seen - {defines})))
            seen.clear()

        def use(array: str, reads: list[str] = reads) -> str:
            if array not in reads:
                reads.append(array)
            return array

        def value(node_id: str, local: set[str] = local, seen: set[str] = seen) -> str:
            node = graph.node(node_id)
            if node.kind is NodeKind.CONST:
                return f"((T){node.value!r})"
            if node.kind is NodeKind.OLD:
                return f"{use(states[str(node.state)].name)}[i]"
            if node_id in layout.static:
                name = name_of(Role.STATIC, node_id)
                return f"{use(name)}[{'0' if bindings[name].scalar else 'i'}]"
            if node_id in local:
                seen.add(f"v{position[node_id]}")
                return f"v{position[node_id]}"
            return f"{use(name_of(Role.BUFFER, node_id))}[i]"

        def keep(node_id: str, body: list[str], at: int, local_name: str = "",
                 segment: Segment = segment, seen: set[str] = seen) -> None:
            """Onto the tape, where it keeps ``node_id``: its value, or the local
            ``local_name`` holding it."""
            if tape is not None and taped is not None and node_id in tape.columns:
                if local_name:
                    seen.add(local_name)
                emit(f"{taped.name}[b * {tape.width} + {tape.column(node_id)} + j] = "
                     f"{local_name or value(node_id)};", at, body)
                if taped.name not in segment.outputs:
                    segment.outputs.append(taped.name)

        def phase_of(node_id: str, args: Iterable[str],
                     phase: dict[str, tuple[int, bool]] = phase) -> tuple[int, bool]:
            found = [phase[a] for a in args if a in phase]
            at = max((p for p, _ in found), default=0)
            passed = any(m for p, m in found if p == at)
            if node_id in expensive:
                return (at + 1, True) if passed else (at, True)
            return at, passed

        body: list[str] = []
        for node_id, at in kept_here.items():  # static values the tape keeps: at their first
            if at == segment.index and node_id in layout.static:  # segment
                keep(node_id, body, 0)
        for node_id in segment.nodes:
            node = graph.node(node_id)
            var = f"v{position[node_id]}"
            operands = [o for o, _ in layout.linears[node_id].peep] if node.is_linear \
                else list(node.args)
            phase[node_id] = phase_of(node_id, operands)
            at = phase[node_id][0]
            if node.is_linear:
                info = layout.linears[node_id]
                terms = []
                if node_id in layout.hoisted:
                    column = layout.hoisted_column(node_id) * hidden
                    product = ""
                    if node_id not in folded and info.static:  # else: no product, bias only
                        uses_s = True
                        product = f"{use(hoisted.name)}[b * {hoisted_width} + {column} + j] + "
                    terms.append(f"{product}{use(bias.name)}[{column} + j]")
                for source in dict.fromkeys(s for s, _ in info.matrix):
                    column = layout.groups[source].members.index(node_id) * hidden
                    terms.append(f"{use(groups[source].name)}"
                                 f"[b * {widths[source]} + {column} + j]")
                for operand, param in info.peep:
                    terms.append(f"{use(name_of(Role.PARAM, param))}[j] * {value(operand)}")
                expression = " + ".join(terms)
            else:
                expression = c_expression(node.operation.c or "", [value(a) for a in node.args],
                                          node.attrs)
            emit(f"T {var} = {expression};  // {node_id}", at, body, var)
            local.add(node_id)
            if node_id not in graph.states:  # a state is kept where its new value is
                keep(node_id, body, at)
            if trace and node_id == node.assignment:
                recorded = name_of(Role.TRACE, node_id)
                emit(f"{recorded}[i] = {value(node_id)};", at, body)
                segment.outputs.append(recorded)
            if node_id in stored:
                buffer = name_of(Role.BUFFER, node_id)
                emit(f"{buffer}[i] = {value(node_id)};", at, body)
                segment.outputs.append(buffer)
        if segment.index == last:  # in the last phase: every old value is read before any
            end = max((p for p, _ in phase.values()), default=0)  # is written
            for state in state_names:
                emit(f"const T new_{state} = {value(state)};", end, body, f"new_{state}")
            for state in state_names:
                emit(f"{states[state].name}[i] = new_{state};", end, body)
                keep(state, body, end, f"new_{state}")
            segment.outputs += [states[state].name for state in state_names]
            if y is not None:
                emit(f"{y.name}[i] = {value(output)};", end, body)
                segment.outputs.append(y.name)
        segment.inputs = [r for r in reads if r not in segment.outputs]
        segment.body = body
    if uses_s:
        bindings[hoisted.name] = hoisted
    return StepKernels(segments, bindings, hidden, hoisted if uses_s else None, bias, y,
                       states, groups, taped)


def c_expression(template: str, operands: list[str], attrs: Iterable[tuple[str, float]],
                 **more: str) -> str:
    """An op table C form with its operands and attributes filled in; the math
    functions' placeholders stay for a dialect to fill (:meth:`Dialect.body`)."""
    return template.format(*operands, **{f: "{" + f + "}" for f in C_FUNCTIONS},
                           **{k: repr(v) for k, v in attrs}, **more)


def arrays(bindings: Iterable[Binding], lifetime: Lifetime, xp: Any, dtype: np.dtype,
           batch: int, steps: int = 0, params: Mapping[str, Array] | None = None,
           weights: Mapping[str, Array] | None = None,
           static: Mapping[str, Array] | None = None,
           empty: Callable[[tuple[int, ...], np.dtype], Array] | None = None
           ) -> dict[str, Array]:
    """The arrays of the bindings of one ``lifetime``, by binding name: the one place a
    role becomes an array, for every back end.

    ``WEIGHTS``: a parameter from ``params`` (by key), or the array ``weights`` holds
    for the binding's name (``S_bias``). ``WORK``: zeros of ``batch`` rows. ``RUN``:
    a static value from ``static`` at every step (or its one number); every other (a
    static value not there among them: the back end computes it)
    per-step array uninitialised, ``(slots, batch, width)``, made by ``empty`` (a back
    end's allocator: the host aligns its arrays), which the run fills. An ``alias`` gets
    the array of the binding it names.
    """
    make = empty or (lambda shape, kind: xp.empty(shape, dtype=kind))
    found: dict[str, Array] = {}
    bindings = list(bindings)
    for binding in bindings:
        if binding.lifetime is not lifetime or binding.alias:
            continue
        if lifetime is Lifetime.WEIGHTS:
            source = params[binding.key] if binding.role is Role.PARAM and params is not None \
                else (weights or {})[binding.name]
            array = make((binding.width,), dtype)
            array[...] = source
        elif lifetime is Lifetime.WORK:
            array = make(((2,) if binding.parity else ()) + (batch, binding.width), dtype)
            array[...] = 0
        elif binding.role is Role.STATIC and static is not None and binding.key in static:
            value = static[binding.key]
            if binding.scalar:
                array = make((1,), dtype)
                array[...] = value.reshape(1)
            else:
                array = make((steps, batch, binding.width), dtype)
                array[...] = value
        else:
            array = make((binding.slots(steps), batch, binding.width), dtype)
        found[binding.name] = array
    for binding in bindings:
        if binding.lifetime is lifetime and binding.alias in found:
            found[binding.name] = found[binding.alias]
    return found


class Arguments:
    """The one parameter of every generated host function, ``void **a``: argument ``k``
    is the array ``names[k]``, looked up by name, never by counting."""

    def __init__(self, names: Iterable[str]):
        self.names = list(dict.fromkeys(names))
        self._index = {name: k for k, name in enumerate(self.names)}

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def index(self, name: str) -> int:
        return self._index[name]

    def slot(self, name: str) -> str:
        """C for the argument's pointer: ``a[k]``."""
        return f"a[{self._index[name]}]"

    def pointer(self, name: str, written: bool, offset: str = "", alias: str = "") -> str:
        """The declaration of ``T *restrict name`` (const where only read), ``offset``
        numbers into the argument."""
        const = "" if written else "const "
        return f"    {const}T *restrict {alias or name} = ({const}T *){self.slot(name)}{offset};"


@dataclass(frozen=True)
class Symbol:
    """A function a generated library exports: its C name and its ctypes signature,
    written once for the C text and for the lookup."""

    name: str
    argtypes: tuple[Any, ...]
    restype: Any = None

    def bind(self, library: ctypes.CDLL) -> Any:
        """The function in ``library``, its signature set."""
        function = getattr(library, self.name)
        function.argtypes = list(self.argtypes)
        function.restype = self.restype
        return function


# -- dialects ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Dialect:
    """What one C-style target needs besides the shared body: the names of the math
    functions for a dtype and the text that must come first. Each back end wraps
    :meth:`body` in its own launch or loop (``b``, ``j`` and ``i`` defined)."""

    name: str
    functions: Callable[[np.dtype], dict[str, str]]
    preamble: Callable[[np.dtype], str] = lambda dtype: ""

    def body(self, segment: Segment, dtype: np.dtype, indent: str = "") -> list[str]:
        """The segment's statements with this dialect's function names filled in."""
        return self.lines(segment.body, dtype, indent)

    def lines(self, body: Iterable[str], dtype: np.dtype, indent: str = "") -> list[str]:
        """Dialect-neutral statements with this dialect's function names filled in."""
        names = self.functions(dtype)
        return [indent + (line.format(**names) if "{" in line else line) for line in body]


#: CUDA C++ for CuPy's ``ElementwiseKernel``: ``T`` is CuPy's type parameter, and CUDA's
#: C++ math overloads ``exp``, ``tanh`` and ``log`` for float and double.
CUDA = Dialect("cuda", lambda dtype: {"exp": "exp", "tanh": "tanh", "log1p": "log1p"})

C_TYPES = {np.dtype("float32"): "float", np.dtype("float64"): "double"}
