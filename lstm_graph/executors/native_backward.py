"""The native executor's backward pass: backpropagation through time compiled to C.

One library per cell, width and dtype holds three functions on the forward
step's thread pool (:mod:`~lstm_graph.executors.gemm_c`):

- :data:`~lstm_graph.executors.native.RUN`, the **forward** step of
  :mod:`~lstm_graph.executors.native`, which also stores the values the backward
  pass reads into one array, the tape (:func:`~.reverse_c.plan_tape`);
- :data:`BACKWARD`, the **steps in reverse**: per tile (``MR`` rows × one tile of
  ``WIDEST·LANES`` hidden units), the GEMMs that carry ``dZ_{t+1}·Wᵀ`` into the
  states' gradients (``dh_{t-1}`` of an LSTM: ``(B × 4H)·(4H × H)``, on the packed
  micro-kernels the forward uses, the weights packed transposed; a partial last
  tile multiplies only the vectors its units need), then the step's
  element-wise VJPs (:func:`~.reverse_c.backward_kernels`, host dialect) on the same
  tile while it is in the L1 cache, storing ``dZ_t`` and adding the bias and
  peephole gradients into each thread's running sums. Every sequence is its own
  recurrence backwards too: the rows are split between the threads, which never
  wait for each other;
- :data:`WEIGHTS`, after the loop, the **weight gradients** as GEMMs over every
  step's rows at once: ``Σ_t operand_tᵀ · dZ_t`` for every matrix (the operands
  ``x``, ``h_{t-1}`` from the tape, static values), by outer-product micro-kernels
  on tiles of ``MR`` rows of the weight gradient × ``WIDEST`` vectors, the rows
  taken :data:`ROW_CHUNKS` at a time so that the tiles of ``dZ`` stay in the cache;
  and the static operands' gradients ``dZ · W`` (``∂L/∂x``), on the forward kernels,
  the rows split between the threads.

The static part of the cell (values computed from ``x`` before the loop, but the
linears the step computes) goes backwards in NumPy, over all ``T·B`` rows at once
(:func:`~lstm_graph.executors.backward.static_back`). The reference interpreter's
backward pass is the definition; the tests hold this one to it, NaN pattern
included, and to PyTorch's autograd.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lstm_graph.executors import buildcache, gemm_c
from lstm_graph.executors.backward import finish
from lstm_graph.executors.codegen_c import Arguments, Lifetime, Role, Symbol, arrays
from lstm_graph.executors.contract import Array, Gradients, Spec, Tape
from lstm_graph.executors.gemm_c import POOLED, aligned_empty
from lstm_graph.executors.layout import analyse
from lstm_graph.executors.native import (
    BLOCK_ROWS,
    HOST,
    NativePlan,
    NativeStep,
    _address,
    _Build,
    attempts,
    element_loops,
    hoists,
    step_statics,
    weight_arrays,
)
from lstm_graph.executors.reverse_c import (
    Product,
    backward_kernels,
    plan,
    plan_tape,
    stacked,
    static_products,
    step_products,
    weight_products,
)
from lstm_graph.formats.memory import Allocation, allocation
from lstm_graph.ir import NodeKind
from lstm_graph.schedule import Schedule

#: Runs the steps ``t1 - 1`` down to ``t0`` backwards (and the GEMMs of step ``t0 - 1``).
BACKWARD = Symbol("lstm_graph_backward", POOLED)
#: The weight gradients and the static operands' gradients, over every step's rows.
WEIGHTS = Symbol("lstm_graph_weights", POOLED)
#: Rows of every step the weight gradients' GEMMs take at a time (``ROW_CHUNK`` in the
#: C), by the target's vector registers. With 32 (AVX-512) a tile of ``dZ`` (256 rows ×
#: 64 floats: 64 KiB) stays in the L2 cache while every row block of the weight gradient
#: passes over it. With 16 (AVX2: tiles of 16 floats, so four times the passes over the
#: operand's rows) fewer rows, so that a chunk's operand rows and ``dZ`` rows stay in
#: the L2 cache. PTB medium's gradient (T = 35, B = 20, I = H = 650), AMD EPYC Zen 4,
#: 2 threads: AVX2 build 78-82 ms at 32 rows, 84 at 64, 92-93 at 256; AVX-512 70.3 ms
#: at 256, 70.9 at 64, 72.7 at 32.
ROW_CHUNKS = {32: 256, 16: 32}


def loop_threads(threads: int, batch: int) -> int:
    """The threads of ``threads`` that the loop back over the steps runs on: one for each
    row block of :data:`gemm_c.MAX_ROWS` sequences (a block is not split between threads),
    so a run of at most that many sequences goes back on one."""
    return max(1, min(threads, -(-batch // gemm_c.MAX_ROWS)))


def by_unit(product: Product, hidden: int, dz_bytes: int) -> bool:
    """Whether ``product``'s weight gradient is made unit by unit: ``(units, size)``, the
    layout of the weights (``dZᵀ · operand``: rows of ``MR`` units, vectors of the
    operand), which the caller then takes as it is; else ``(size, units)`` (``operandᵀ ·
    dZ``: rows of the operand, vectors of units), which must be transposed into the
    weights' layout (at T = 35, B = 20, I = H = 650, that transposed add took 3.2 ms of a
    77 ms gradient). Unit by unit where its rows and vectors (of 16 lanes) pad the work
    by at most 10 % more than the other way's (not for an operand narrower than a
    vector, as the adding problem's ``x``, I = 2), and where the ``MR`` numbers it reads
    from each of a chunk's rows of ``dZ`` (``dz_bytes`` apart) fall in enough sets of a
    64-set L1 cache: rows 4 KiB apart (an LSTM's 4·256 floats) all fall in one, and
    the medium LSTM's weight gradients took 7 % longer."""
    (run,) = product.runs
    units, size, rows, lanes = run.count * hidden, product.size, gemm_c.MAX_ROWS, 16

    def padded(n: int, multiple: int) -> int:
        return -(-n // multiple) * multiple

    lines = dz_bytes // 64
    return (dz_bytes % 64 != 0 or math.gcd(lines, 64) <= 2) and \
        padded(units, rows) * padded(size, lanes) <= \
        1.1 * padded(size, rows) * padded(units, lanes)


@dataclass
class NativeTape(Tape):
    """The native forward pass: the tape array, and the static values and GEMM operands of
    the run (the backward pass reads them)."""

    static: dict[str, Array] = field(default_factory=dict)
    tape: np.ndarray = field(default_factory=lambda: np.empty(0))
    operands: dict[str, np.ndarray] = field(default_factory=dict)
    spent: bool = False


class NativeGrad:
    """The compiled backward pass of a :class:`~lstm_graph.executors.native.NativePlan`."""

    def __init__(self, plan: NativePlan):
        self.plan, spec, layout = plan, plan.spec, plan.layout
        self.layout = layout
        schedule, hidden, dtype = spec.schedule, spec.hidden, spec.dtype
        self.kernels = backward_kernels(schedule, layout, hidden, plan.statics, sums=True)
        kernels = self.kernels
        self.step = NativeStep(spec, layout, plan.step_kernels(tape=kernels.tape), plan.statics,
                               plan.hoisted)
        self.by_segment = step_products(kernels, schedule)
        self.gemms = [p for mine in self.by_segment for p in mine]
        self.outers = weight_products(kernels, schedule, spec.input_size)
        self.by_unit = {o.out for o in self.outers
                        if by_unit(o, hidden, kernels.dz_width * dtype.itemsize)}
        self.inner = static_products(kernels, schedule, layout, spec.input_size)
        self.panels = {id(p): f"{prefix}_{k}" for prefix, products in (("Q", self.gemms),
                                                                       ("R", self.inner))
                       for k, p in enumerate(products)}
        names = [*self.step.names, *kernels.bindings, *self.panels.values(),
                 *(o.out for o in self.outers), *dict.fromkeys(g.out for g in self.inner)]
        self.args = Arguments(names)
        self.source = "\n".join([*self.step.header(outer=True),
                                 *self.step.functions(self.args), *self._backward_source(),
                                 *self._weights_source()])
        library = buildcache.library(self.source, attempts(),
                                     f"the native backward of cell '{schedule.graph.name}'",
                                     symbols=(BACKWARD.name, WEIGHTS.name,
                                              gemm_c.LANES_SYMBOL.name, gemm_c.PLACE.name))
        self.build: _Build = plan._prepared(self.step, library, self.args)
        self.backward_run = BACKWARD.bind(library)
        self.weights_run = WEIGHTS.bind(library)
        lanes = int(gemm_c.LANES_SYMBOL.bind(library)())
        self.lanes, self.widest = lanes, 4 if lanes * dtype.itemsize == 64 else 2
        fixed = self.build.fixed
        fixed.update(self.weights(spec.params, dtype))
        fixed.update(arrays(kernels.bindings.values(), Lifetime.WORK, np, dtype, spec.batch,
                            empty=aligned_empty))
        self.build.placement = gemm_c.Placement(library, list(spec.params), fixed,
                                                lambda: self._tagged(plan, lanes))
        for name, array in fixed.items():
            self.build.pointers[self.args.index(name)] = array.ctypes.data
        graph = schedule.graph
        self.python_statics = [n for n in schedule.order if graph.node(n).kind is NodeKind.OP
                               and n in layout.static and n not in plan.statics]
        self._spare: dict[str, np.ndarray] = {}  # tape and dZ arrays, reused run to run

    @property
    def spec(self) -> Spec:
        """The plan's spec: its weights are the latest :meth:`NativePlan.update` gave (a
        copy kept here differentiated the values before the loop with the weights the
        executor was built with: ∂L/∂x 0.997 off where a linear reads ``x`` alone)."""
        return self.plan.spec

    def _operand_rows(self, operand: str) -> tuple[str, int]:
        """Where every step's rows of a matrix operand start (C, with ``@name@`` for an
        argument), and their stride: a value or state on the tape (slot ``t`` holds step
        ``t - 1``: an old value's rows start at slot 0, a value's at slot 1), or a static
        value's array."""
        graph, tape = self.spec.schedule.graph, self.kernels.tape
        node = graph.node(operand)
        rows = "(const T *)@tape@"
        if node.kind is NodeKind.OLD:
            return f"{rows} + {tape.column(str(node.state))}", tape.width
        if operand in tape.columns:
            return f"{rows} + batch * {tape.width} + {tape.column(operand)}", tape.width
        return f"(const T *)@{self._static_operand(operand)}@", self.spec.width(operand)

    def _weight_shape(self, outer: Product) -> tuple[int, int]:
        """The shape in which ``outer``'s weight gradient is made: its micro-kernels' rows
        by their vectors, ``(units, size)`` by unit (:func:`by_unit`), else ``(size,
        units)``."""
        units = outer.runs[0].count * self.spec.hidden
        return (units, outer.size) if outer.out in self.by_unit else (outer.size, units)

    def _static_operand(self, operand: str) -> str | None:
        """The name of the array in which the forward step read ``operand`` where the
        backward pass reads it there too (not from the tape: see :meth:`_operand_rows`)."""
        node = self.spec.schedule.graph.node(operand)
        if node.kind is NodeKind.OLD or operand in self.kernels.tape.columns:
            return None
        return self.step.operands[operand]

    def weights(self, params: Mapping[str, Array], dtype: np.dtype) -> dict[str, np.ndarray]:
        """The backward pass's own arrays that hold weights: the peepholes its VJPs read,
        and :meth:`packed`."""
        found = arrays(self.kernels.bindings.values(), Lifetime.WEIGHTS, np, dtype,
                       self.spec.batch, params=params, empty=aligned_empty)
        found.update(self.packed(params, dtype))
        return found

    def _tagged(self, plan: NativePlan, lanes: int) -> dict[str, np.ndarray]:
        """Every array of this build that holds weights, packed from :func:`~.gemm_c.tags`
        (for :class:`~.gemm_c.Placement`)."""
        tagged = weight_arrays(plan.tagged_step(self.step), lanes)
        tagged.update(self.weights(gemm_c.tags(self.spec.params), np.dtype(np.float64)))
        return tagged

    def packed(self, params: Mapping[str, Array], dtype: np.dtype) -> dict[str, np.ndarray]:
        """The backward GEMMs' weights, transposed and packed into panels: a tile of
        ``WIDEST·LANES`` units for the steps', as many vectors as the operand needs (at most
        ``WIDEST``) for the static operands'; the last, partial tile only as many vectors
        wide as its units need (C's ``TILE_VECTORS``: at H = 200, 1 vector, not 4)."""
        schedule, lanes = self.spec.schedule, self.lanes
        found = {}
        for product in self.gemms:
            found[self.panels[id(product)]] = gemm_c.pack_panels(
                stacked(schedule, params, product, dtype), 1, product.size, self.widest * lanes,
                dense_tail=True, vector=lanes)
        for product in self.inner:
            vectors = min(self.widest, -(-product.size // lanes))
            found[self.panels[id(product)]] = gemm_c.pack_panels(
                stacked(schedule, params, product, dtype), 1, product.size, vectors * lanes,
                dense_tail=True, vector=lanes)
        return found

    # -- the C source ----------------------------------------------------------------------

    def _resolve(self, text: str) -> str:
        """``@name@`` (an argument, by name) as ``a[k]``."""
        for name in self.args:
            text = text.replace(f"@{name}@", self.args.slot(name))
        return text

    def _pointer(self, name: str, written: bool) -> str:
        binding = self.kernels.bindings.get(name)
        if binding is not None and binding.role is Role.SUMS:
            return self.args.pointer(name, written, f" + part * {binding.width}")
        return self.args.pointer(name, written, binding.step_offset() if binding else "")

    def _elements(self, k: int) -> list[str]:
        """Backward segment ``k``'s element-wise work on rows b0 <= b < b1, units j0 <= j < j1."""
        segment = self.kernels.segments[k]
        declarations = [self._pointer(n, False) for n in segment.inputs]
        declarations += [self._pointer(n, True) for n in segment.outputs]
        return element_loops(f"back_elements_{k}", f"forward segment {segment.index} "
                             "backwards, element by element", declarations,
                             HOST.lines([*segment.body, *segment.sums], self.spec.dtype,
                                        "            "), self.spec.hidden, part=True)

    def _gemm_calls(self, gemms: list[Product], indent: str) -> list[str]:
        """The calls of ``gemms`` on the tile of rows ``r`` (``m`` of them) and unit tile
        ``u`` (``UNITS`` units)."""
        width = self.kernels.dz_width
        hidden = self.spec.hidden
        lines = []
        for gemm in gemms:
            first, *rest = gemm.runs
            k1 = first.count * hidden
            a2 = f"{rest[0].count * hidden}, {gemm.dz} + r * {width} + {rest[0].first * hidden}" \
                f", {width}" if rest else "0, NULL, 0"
            k = sum(run.count for run in gemm.runs) * hidden
            lines.append(f"{indent}kernel_c(TILE_VECTORS({gemm.size} - u * UNITS, WIDEST), m, "
                         f"{k1}, {gemm.dz} + r * {width} + "
                         f"{first.first * hidden}, {width}, {a2}, {self.panels[id(gemm)]} + u * "
                         f"{k} * UNITS, NULL, {gemm.out} + r * {gemm.size} + u * UNITS, "
                         f"{gemm.size}, LANES, {gemm.size} - u * UNITS, LANES, "
                         f"{int(gemm.add)});")
        return lines

    def _backward_source(self) -> list[str]:
        kernels = self.kernels
        lines = ["#define UNITS (WIDEST * LANES)  /* hidden units of a tile backwards */",
                 f"#define ROW_CHUNK (VB == 64 ? {ROW_CHUNKS[32]} : {ROW_CHUNKS[16]})"
                 "  /* rows the weight gradients take at a time */",
                 "#define BTILES ((HIDDEN + UNITS - 1) / UNITS)", ""]
        for k in range(len(kernels.segments)):
            lines += self._elements(k) + [""]
        by_segment = self.by_segment
        outs = {gemm.out for gemm in self.gemms}
        declared = [self._pointer(n, n in outs) for n in sorted(
            {name for gemm in self.gemms for name in (gemm.out, gemm.dz)})]
        declared += [self.args.pointer(self.panels[id(gemm)], False) for gemm in self.gemms]
        tile = ["const ptrdiff_t j0 = u * UNITS;",
                "const ptrdiff_t n = HIDDEN - j0 < UNITS ? HIDDEN - j0 : UNITS;"]
        rows = list(BLOCK_ROWS)
        lines += ["/* the steps t1 - 1 down to t0 backwards on part `part` of the rows (each row",
                  "   is its own recurrence: no thread waits for another), then the GEMMs of",
                  "   step t0 - 1: what reaches the initial states */",
                  "static void backward_part(ptrdiff_t part, ptrdiff_t parts, ptrdiff_t t0, "
                  "ptrdiff_t t1, ptrdiff_t batch, void **a) {",
                  "    const ptrdiff_t blocks = (batch + MR - 1) / MR;",
                  "    const ptrdiff_t k0 = blocks * part / parts, k1 = blocks * (part + 1) / "
                  "parts;",
                  "    /* block_row pairs blocks within each part's, where they are even */",
                  "    const ptrdiff_t group = blocks % parts ? 1 : blocks / parts;",
                  "    for (ptrdiff_t t = t1 - 1; t >= t0 - 1; t--) {",
                  *(f"    {line}" for line in declared)]
        if len(kernels.segments) == 1:  # a tile's panel serves every row block in turn
            calls = self._gemm_calls(by_segment[0], "                    ")
            lines += ["        for (ptrdiff_t u = 0; u < BTILES; u++) {",
                      *(f"            {line}" for line in tile),
                      "            for (ptrdiff_t block = k0; block < k1; block++) {",
                      *(f"                {line}" for line in rows),
                      "                if (t + 1 < t1) {", *calls, "                }",
                      "                if (t >= t0) back_elements_0(t, batch, r, r + m, j0, "
                      "j0 + n, a, part);",
                      "            }", "        }"]
        else:  # a block's rows through every segment: a later segment's dZ feeds a GEMM
            lines += ["        for (ptrdiff_t block = k0; block < k1; block++) {",
                      *(f"            {line}" for line in rows)]
            for k, mine in enumerate(by_segment):
                olds = [g for g in mine if g.dz == kernels.dz_next.name]
                values = [g for g in mine if g.dz != kernels.dz_next.name]
                lines += ["            for (ptrdiff_t u = 0; u < BTILES; u++) {",
                          *(f"                {line}" for line in tile)]
                if olds:
                    lines += ["                if (t + 1 < t1) {",
                              *self._gemm_calls(olds, "                    "),
                              "                }"]
                lines += ["                if (t >= t0) {",
                          *self._gemm_calls(values, "                    "),
                          f"                    back_elements_{k}(t, batch, r, r + m, j0, "
                          "j0 + n, a, part);", "                }", "            }"]
            lines.append("        }")
        lines += ["    }", "}", "", gemm_c.entry(BACKWARD, "backward_part",
                                                   "the steps backwards on `parts` threads"), ""]
        return [self._resolve(line) for line in lines]

    def _weights_source(self) -> list[str]:
        hidden, width = self.spec.hidden, self.kernels.dz_width
        dz = self.args.pointer(self.kernels.dz.name, False, alias="dz")
        lines = ["/* every weight gradient (out += operand^T . dZ, or dZ^T . operand by unit,",
                 "   over all rows, ROW_CHUNK rows at a time, the tiles split between the",
                 "   threads), then the static operands'",
                 "   gradients (dZ . W, the rows split) */",
                 "static void weights_part(ptrdiff_t part, ptrdiff_t parts, ptrdiff_t t0, "
                 "ptrdiff_t t1, ptrdiff_t batch, void **a) {",
                 "    const ptrdiff_t rows = (t1 - t0) * batch;", dz]
        counts = []
        for k, outer in enumerate(self.outers):
            start, stride = self._operand_rows(outer.operand)
            rows, vectors = self._weight_shape(outer)
            lines += [f"    T *restrict W_{k} = (T *){self.args.slot(outer.out)};",
                      f"    const T *restrict A_{k} = {self._resolve(start)};",
                      f"    const ptrdiff_t kt_{k} = ({rows} + MR - 1) / MR, "
                      f"nt_{k} = ({vectors} + UNITS - 1) / UNITS;"]
            counts.append(f"kt_{k} * nt_{k}")
        lines += [f"    const ptrdiff_t items = {' + '.join(counts) or '0'};",
                  "    const ptrdiff_t lo = items * part / parts, hi = items * (part + 1) / "
                  "parts;",
                  "    for (ptrdiff_t q0 = 0; q0 < rows; q0 += ROW_CHUNK) {",
                  "        const ptrdiff_t q = rows - q0 < ROW_CHUNK ? rows - q0 : ROW_CHUNK;",
                  "        ptrdiff_t base = 0;"]
        for k, outer in enumerate(self.outers):
            (run,) = outer.runs
            _, stride = self._operand_rows(outer.operand)
            # rows of MR (a: one number of each per row q) by vectors (b: UNITS a row q)
            operand = (f"A_{k} + q0 * {stride}", stride)
            units = (f"dz + q0 * {width} + {run.first * hidden}", width)
            (a, lda), (b, ldb) = (units, operand) if outer.out in self.by_unit \
                else (operand, units)
            rows, vectors = self._weight_shape(outer)
            # consecutive items share the b panel of the chunk's rows (their a numbers
            # change): dZ's vectors, or by unit the operand's (at I = H = 650 the other
            # order, a's numbers shared, measured the same)
            order = f"kb = item / nt_{k}, nb = item % nt_{k}" if outer.out in self.by_unit \
                else f"kb = item % kt_{k}, nb = item / kt_{k}"
            lines += [f"        for (ptrdiff_t item = lo > base ? lo - base : 0; item < "
                      f"kt_{k} * nt_{k} && base + item < hi; item++) {{",
                      f"            const ptrdiff_t {order};",
                      f"            const ptrdiff_t m = {rows} - kb * MR < MR ? "
                      f"{rows} - kb * MR : MR;",
                      f"            const ptrdiff_t left = {vectors} - nb * UNITS;",
                      "            const ptrdiff_t c = (left + LANES - 1) / LANES < WIDEST ? "
                      "(left + LANES - 1) / LANES : WIDEST;",
                      f"            outer(m, c, q, {a} + kb * MR, {lda}, {b} + nb * UNITS, "
                      f"{ldb}, W_{k} + kb * MR * {vectors} + nb * UNITS, {vectors}, left);",
                      "        }",
                      f"        base += kt_{k} * nt_{k};"]
        lines += ["    }"]
        if self.inner:
            lines += ["    const ptrdiff_t blocks = (rows + MR - 1) / MR;",
                      "    const ptrdiff_t k0 = blocks * part / parts, k1 = blocks * (part + 1) "
                      "/ parts;"]
        for gemm in self.inner:
            first, *rest = gemm.runs
            k_total = sum(run.count for run in gemm.runs) * hidden
            a2 = f"{rest[0].count * hidden}, dz + r * {width} + {rest[0].first * hidden}, " \
                f"{width}" if rest else "0, NULL, 0"
            lines += ["    {",
                      f"    T *restrict out = (T *){self.args.slot(gemm.out)};",
                      f"    const T *restrict panel = (const T *)"
                      f"{self.args.slot(self.panels[id(gemm)])};",
                      f"    const ptrdiff_t c = ({gemm.size} + LANES - 1) / LANES < WIDEST ? "
                      f"({gemm.size} + LANES - 1) / LANES : WIDEST;",
                      f"    const ptrdiff_t tiles = ({gemm.size} + c * LANES - 1) / (c * LANES);",
                      "    for (ptrdiff_t u = 0; u < tiles; u++) {",
                      "        for (ptrdiff_t block = k0; block < k1; block++) {",
                      "            const ptrdiff_t r = block * MR;",
                      "            const ptrdiff_t m = rows - r < MR ? rows - r : MR;",
                      f"            kernel_c(TILE_VECTORS({gemm.size} - u * c * LANES, c), m, "
                      f"{first.count * hidden}, dz + r * {width} + "
                      f"{first.first * hidden}, {width}, {a2}, panel + u * {k_total} * c * "
                      f"LANES, NULL, out + r * {gemm.size} + u * c * LANES, {gemm.size}, "
                      f"LANES, {gemm.size} - u * c * LANES, LANES, {int(gemm.add)});",
                      "        }", "    }", "    }"]
        lines += ["}", "", gemm_c.entry(WEIGHTS, "weights_part", "the weight gradients on "
                                         "`parts` threads"), ""]
        return lines

    # -- running it ---------------------------------------------------------------------------

    def _buffer(self, name: str, size: int) -> np.ndarray:
        """A flat array of at least ``size`` numbers (and a tile of padding, which the
        kernels may read past a row's end), kept for the next run."""
        spare = self._spare.get(name)
        pad = gemm_c.ALIGNMENT
        if spare is None or spare.size < size + pad:
            spare = aligned_empty((size + pad,), self.spec.dtype)
        self._spare.pop(name, None)
        return spare

    def _padded(self, name: str, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A copy of ``value`` (a static operand such as ``x``: the caller's array) with a
        tile of padding after it, where the weight gradients read its rows in vectors
        (the last row's last vector may reach past its end); and its buffer, to keep."""
        buffer = self._buffer(f"padded {name}", value.size)
        copy = buffer[:value.size].reshape(value.shape)
        copy[...] = value
        return buffer, copy

    def forward(self, x: Array, state: Mapping[str, Array]) -> NativeTape:
        """The forward pass, keeping the tape."""
        self.plan.refresh(self.build)
        steps, batch = x.shape[0], x.shape[1]
        tape_layout = self.kernels.tape
        tape = self._buffer("tape", (steps + 1) * batch * tape_layout.width)
        shaped = tape[:(steps + 1) * batch * tape_layout.width].reshape(
            steps + 1, batch, tape_layout.width)
        for name, column in tape_layout.columns.items():
            if name in state:  # slot 0: the initial states (s[t-1] at t = 0)
                start = column * tape_layout.hidden
                shaped[0, :, start:start + tape_layout.hidden] = state[name]
        assert self.step.kernels.tape is not None
        y, final, static, made = self.plan._execute(
            self.build, x, state, None, given={self.step.kernels.tape.name: shaped})
        operands = {name: made[name] for name in self.step.operands.values()}
        return NativeTape(x, state, y, final, static, tape, operands)

    def backward(self, tape: Tape, grad_y: Array, grad_final: Mapping[str, Array]
                 ) -> Gradients:
        """The backward pass from :meth:`forward`'s tape."""
        if not isinstance(tape, NativeTape) or tape.spent:
            raise TypeError("a native tape is read once, by the executor that made it")
        spec, kernels, args = self.spec, self.kernels, self.args
        dtype, hidden = spec.dtype, spec.hidden
        x, static = tape.x, tape.static
        steps, batch = x.shape[0], x.shape[1]
        graph = spec.schedule.graph
        (output,) = graph.outputs
        pointers = self.build.pointers
        dz = self._buffer("dz", steps * batch * kernels.dz_width)
        run = {kernels.tape_now.name: tape.tape, kernels.tape_old.name: tape.tape,
               kernels.dz.name: dz, kernels.dz_next.name: dz, **tape.operands}
        made = arrays([b for b in kernels.bindings.values() if b.name not in run], Lifetime.RUN,
                      np, dtype, batch, steps, static=static, empty=aligned_empty)
        if kernels.grad_output is not None:
            made[kernels.grad_output.name] = np.ascontiguousarray(grad_y, dtype=dtype)
        for state, binding in kernels.carry.items():  # slot of step T - 1: grad_final
            slot = made[binding.name][(steps - 1) & 1]
            slot[...] = grad_final[state] if state in grad_final else 0
        parts = loop_threads(self.plan.threads, batch)
        if kernels.sums is not None:
            made[kernels.sums.name] = gemm_c.aligned(np.zeros((parts, kernels.sums.width),
                                                              dtype))
        d_static: dict[str, np.ndarray] = {b.key: made[b.name]
                                           for b in kernels.grad_statics.values()}
        for gemm in self.inner:
            if gemm.out not in made:
                made[gemm.out] = d_static[gemm.operand] = aligned_empty(
                    (steps, batch, gemm.size), dtype)
        outs, padded = {}, {}
        for outer in self.outers:
            if outer.out in self.by_unit:
                name = self._static_operand(outer.operand)
                if name is not None and outer.size % self.lanes:  # read in vectors past a row
                    padded[name], run[name] = self._padded(name, run[name])
            outs[outer.out] = gemm_c.aligned(np.zeros(self._weight_shape(outer), dtype))
        made.update(outs)
        run.update(made)
        index = args.index
        for name, array in run.items():
            pointers[index(name)] = _address(array)
        self.backward_run(0, steps, batch, pointers, parts)
        self.weights_run(0, steps, batch, pointers, self.plan.threads)
        tape.spent = True
        self._spare.setdefault("tape", tape.tape)
        self._spare["dz"] = dz
        self._spare.update({f"padded {name}": buffer for name, buffer in padded.items()})
        sums = {}
        if kernels.sums is not None:
            total = made[kernels.sums.name].sum(axis=0)
            sums = {key: total[column * hidden:(column + 1) * hidden]
                    for key, column in kernels.sum_columns.items()}
        outs = {out: value.T if out in self.by_unit else value for out, value in outs.items()}
        grads, grad_x = finish(spec, self.layout, kernels, self.outers, outs, sums, d_static,
                               static, grad_y, self.python_statics, x)
        carried = {s: made[b.name][(-1) & 1][:batch].copy() for s, b in kernels.carry.items()}
        return Gradients(grad_x, grads, carried, tape.y, tape.final)


def grad_allocations(schedule: Schedule, work: str, steps: int, batch: int, input_size: int,
                     hidden: int, dtype: np.dtype) -> list[Allocation]:
    """The native executor's memory (see :meth:`NativePlan.allocations`)."""
    graph = schedule.graph
    layout = analyse(schedule)
    statics = step_statics(schedule, layout)
    (output,) = graph.outputs
    rows = steps * batch

    def width(nodes: Any) -> int:
        return sum(schedule.width(n, input_size, hidden) for n in nodes)

    before = [n for n in schedule.order if graph.node(n).kind is NodeKind.OP
              and n in layout.static and n not in statics]
    found = [allocation("y", (steps, batch, width([output])), dtype)]
    if before:
        found.append(allocation("the static values (T·B rows)", (rows, width(before)), dtype))
    if hoists(schedule, layout, batch, input_size, hidden, dtype):
        found.append(allocation("the hoisted products (T·B rows)",
                                (rows, len(layout.hoisted) * hidden), dtype))
    found.append(allocation("the states", (4 * len(graph.states), batch, hidden), dtype))
    if work == "trace":
        found.append(allocation("the trace (every assignment, T·B rows)",
                                (rows, width(graph.assignments)), dtype))
    elif work == "grad":
        chosen = plan(schedule, layout, statics)
        tape = plan_tape(schedule, layout, chosen, hidden)
        found += [allocation("the tape (what backward reads, T·B rows)",
                             (steps + 1, batch, tape.width), dtype),
                  allocation("every linear's dZ (T·B rows)",
                             (rows, len(chosen.linears) * hidden), dtype),
                  allocation("the gradient of x", (steps, batch, input_size), dtype),
                  allocation("a padded copy of x (where the weight gradients read it in "
                             "vectors)", (steps, batch, input_size), dtype)]
        if before:
            found.append(allocation("the static values' gradients (T·B rows)",
                                    (rows, width(before)), dtype))
    return found
