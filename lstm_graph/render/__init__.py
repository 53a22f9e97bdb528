"""Diagrams of a cell, in two styles, from the same schedule.

>>> import lstm_graph
>>> dot = render(lstm_graph.load_cell("peephole_lstm"), "cell")
>>> dot.source.count("style=dashed") > 0
True

``render`` returns a ``graphviz.Digraph`` (a notebook shows it inline) and
never runs Graphviz; :func:`save` writes DOT text itself, and runs ``dot`` only
for SVG, PNG and PDF (a PDF without the date cairo writes in it: the same diagram gives
the same bytes in every format). :func:`unrolled` draws several steps side by side; value
strips from a trace come from :mod:`lstm_graph.render.values`.

``dot`` is bounded: a diagram larger than its style lays out in reasonable time
(:data:`MAX_NODES`) is refused before it starts, a large one is laid out with
Graphviz's cheaper settings (:data:`FAST_FLAGS`), and the program runs
in a process group of its own under a memory limit (:func:`dot_memory`) and a time
limit (``$LSTM_GRAPH_DOT_TIMEOUT``, default :data:`DOT_TIMEOUT` seconds), killed with
its group when the time is up or the command is interrupted.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path

import graphviz

from lstm_graph.cell import Cell
from lstm_graph.errors import RenderError
from lstm_graph.formats.files import write_atomic
from lstm_graph.formats.memory import ENV as MEMORY_ENV
from lstm_graph.formats.memory import size_text
from lstm_graph.render import classic, pipe
from lstm_graph.render.draw import Look
from lstm_graph.render.scene import build_scene, highlighted, path_words
from lstm_graph.render.values import Strip

STYLES = {"pipe": pipe.draw, "cell": classic.draw}
#: The most steps an unrolled drawing shows.
MAX_UNROLL = 8
FORMATS = ("svg", "png", "pdf", "dot")
#: The most nodes a diagram of each style may have to be laid out by ``dot``: past them
#: Graphviz's layout takes minutes and gigabytes (the pipe style, and an unrolled chain,
#: ties every value to the memory pipe above it, which grows as the square of the nodes).
#: Measured with :data:`FAST_FLAGS` on the worst cells found (one long chain for the pipe
#: style, random dependencies for the cell style), diagrams at these sizes took 10–13 s
#: on a 2-core AMD EPYC, well within :data:`DOT_TIMEOUT`.
MAX_NODES = {"pipe": 200, "cell": 1200}
#: From this many nodes, or this many captions (each a cluster, costly to route edges
#: around), ``dot`` runs with :data:`FAST_FLAGS`.
FAST_FROM, FAST_FROM_CAPTIONS = 120, 16
#: Graphviz's cheaper layout: fewer network-simplex and crossing-minimisation rounds,
#: straight edges. Only large diagrams get it: smaller ones keep their usual look.
FAST_FLAGS = ("-Gnslimit=0.2", "-Gnslimit1=0.2", "-Gmclimit=0.1", "-Gremincross=false",
              "-Gsplines=line")
#: The most characters Graphviz's reader takes in one quoted string or HTML label (it
#: fails with a syntax error past them: "longer than 16384?").
LONGEST_STRING = 16384
#: Seconds ``dot`` may take on one diagram (``$LSTM_GRAPH_DOT_TIMEOUT`` changes it).
DOT_TIMEOUT = 60.0
#: The longest time ``$LSTM_GRAPH_DOT_TIMEOUT`` gives (a day; a longer one, ``inf`` too,
#: is this: the wait for ``dot`` takes at most about 24 days, its milliseconds an int32).
LONGEST_DOT_TIMEOUT = 86400.0
TIMEOUT_ENV = "LSTM_GRAPH_DOT_TIMEOUT"
#: The memory ``dot`` may map without ``$LSTM_GRAPH_MAX_BYTES``, and the least it gets
#: with it (the program, its libraries and threads take about 100 MB before any layout).
DOT_MEMORY, DOT_MEMORY_FLOOR = 2 * 2**30, 256 * 2**20


def dot_missing(advice: str = "use --format dot") -> str:
    """That Graphviz's ``dot`` is not installed, how to install it, and ``advice``: what
    the command can write instead without it (an option it has)."""
    return ("Graphviz's 'dot' program is not installed. Install it (Debian/Ubuntu: apt-get "
            "install graphviz; macOS: brew install graphviz; see "
            f"https://graphviz.org/download/), or {advice}, which needs no program.")


def render(cell: Cell, style: str = "pipe", highlight: str | None = None,
           stages: bool = False, strips: Mapping[str, Strip] | None = None,
           values: str | None = None, marks: bool = False,
           gradients: Mapping[tuple[str, str], float] | None = None,
           gradient_note: str | None = None) -> graphviz.Digraph:
    """The diagram of ``cell`` in ``style`` ("pipe" or "cell").

    ``highlight`` names a node, an assignment or one of the cell's presets whose
    path is drawn in colour while the rest fades;
    ``stages`` writes each node's stage number on it; ``strips`` (see
    :mod:`lstm_graph.render.values`) draws values on the value nodes, and
    ``values`` says in the legend what they are ("step 3, sequence 0"); ``marks``
    names each edge ``"A → B"`` by the two nodes whose highlight lights it (for the
    explorer page, which highlights paths in the browser); ``gradients`` maps IR
    edges to the size of the gradient they carried (from ``runner.grad(...,
    record=True)``), drawn as edge widths and labels, ``gradient_note`` saying which
    step in the legend.
    """
    if style not in STYLES:
        raise RenderError(f"unknown style '{style}'; choose one of {', '.join(STYLES)}")
    scene = build_scene(cell.schedule)
    lit = frozenset(highlighted(scene, highlight)) if highlight else None
    reach = path_words(scene.graph, highlight) if highlight else None
    return STYLES[style](scene, Look(highlight, lit, stages, strips, values, marks, gradients,
                                     gradient_note, reach))


def unrolled(cell: Cell, steps: int) -> graphviz.Digraph:
    """``steps`` consecutive steps of ``cell`` side by side (pipe style): the memory pipe
    and the other states' line run straight through, labelled ``c_{t-1}, c_t, c_{t+1}…``.
    """
    if not 1 <= steps <= MAX_UNROLL:
        raise RenderError(f"cannot unroll {steps} steps; draw 1 to {MAX_UNROLL}")
    return pipe.draw_unrolled(build_scene(cell.schedule), steps)


def to_bytes(dot: graphviz.Digraph, fmt: str) -> bytes:
    """The diagram as ``fmt`` bytes; DOT without running anything, else by ``dot`` within
    its bounds (see the module's docstring)."""
    if fmt == "dot":
        return str(dot.source).encode("utf-8")
    if fmt not in FORMATS:
        raise RenderError(f"unknown format '{fmt}'; choose one of {', '.join(FORMATS)}")
    source = str(dot.source)
    style = check_size(dot)
    captions = len(re.findall(r'^\s*subgraph "?cluster', source, re.MULTILINE))
    drawn = run_dot(source, fmt, node_count(source) >= FAST_FROM
                    or captions >= FAST_FROM_CAPTIONS,
                    "draw it in the cell style (--style cell), or write --format dot"
                    if style == "pipe" else "write --format dot")
    return undated(drawn) if fmt == "pdf" else drawn


_PDF_DATE = re.compile(rb"/CreationDate \(D:[0-9]{14}[-+Z0-9']*\)")


def undated(pdf: bytes) -> bytes:
    """``pdf`` without the date cairo writes into its information dictionary (the second
    ``dot`` ran), so that the same diagram gives the same bytes, as its SVG and PNG do: the
    entry becomes as many spaces, which keeps every byte offset the file's cross-reference
    table holds.

    >>> undated(b"<< /Producer (cairo) /CreationDate (D:20261208001800Z) >>")
    b'<< /Producer (cairo)                                   >>'
    """
    return _PDF_DATE.sub(lambda found: b" " * len(found.group()), pdf)


def check_size(dot: graphviz.Digraph, advice: str | None = None) -> str:
    """Refuse a diagram with more nodes than its style (``pipe``, also for an unrolled
    chain, or ``cell``) lays out in reasonable time (:data:`MAX_NODES`), or with a label,
    name or tooltip longer than Graphviz reads (:data:`LONGEST_STRING`), before ``dot``
    runs; return the style. ``advice`` ends the message (default: what ``render`` can
    do instead)."""
    nodes = node_count(str(dot.source))
    style = "cell" if str(dot.name).endswith("_cell") else "pipe"
    length, start = longest_string(str(dot.source))
    if length > LONGEST_STRING:
        raise RenderError(f"this diagram has a label, name or tooltip of {length:,} "
                          f"characters (it starts {start[:40]!r}), made of the cell's names "
                          f"and captions; Graphviz reads at most {LONGEST_STRING:,}: shorten "
                          "the longest names or captions" + (
                              ", or write --format dot" if advice is None else advice))
    if nodes > MAX_NODES[style]:
        if advice is None:
            other = "" if style == "cell" else " (the cell style, --style cell, draws up " \
                f"to {MAX_NODES['cell']})"
            advice = f"{other}; write --format dot to lay it out yourself"
        raise RenderError(f"this {style}-style diagram has {nodes} nodes; Graphviz lays out "
                          f"at most {MAX_NODES[style]} in this style in reasonable time"
                          f"{advice}")
    return style


def longest_string(source: str) -> tuple[int, str]:
    """The length and the text of the longest quoted string or HTML label (``<…>``,
    nested brackets included) of a DOT text: what Graphviz's reader takes at most
    :data:`LONGEST_STRING` characters of.

    >>> longest_string('a [label=<<B>x</B>> tooltip="a \\"b\\""]')
    (10, '<<B>x</B>>')
    """
    longest, text = 0, ""
    found = _STRING_START.search(source)
    while found:
        if found.group() == '"':
            closed = _QUOTED_REST.match(source, found.end())
            end = closed.end() if closed else len(source)
            string = source[found.end():end - 1]
        else:
            depth, end = 0, len(source)
            for bracket in _BRACKET.finditer(source, found.end() - 1):
                depth += 1 if bracket.group() == "<" else -1
                if depth == 0:
                    end = bracket.end()
                    break
            string = source[found.end() - 1:end]
        if len(string) > longest:
            longest, text = len(string), string
        found = _STRING_START.search(source, end)
    return longest, text


_STRING_START, _QUOTED_REST, _BRACKET = (re.compile('"|=<'), re.compile(r'(?:[^"\\]|\\.)*"'),
                                         re.compile("[<>]"))


_NODE_STATEMENT = re.compile(r'\s*("(?:[^"\\]|\\.)*"|[^\s"\[\]{}=;-]+)\s*\[')


def node_count(source: str) -> int:
    """The nodes a DOT text (as the ``graphviz`` package writes it: one statement a line)
    declares: ``name [attributes]`` lines; edges and the ``graph``/``node``/``edge``
    defaults are not nodes.

    >>> node_count('digraph {\\n\\tnode [shape=box]\\n\\ta [label=x]\\n\\t"b c" [label=y]\\n'
    ...            '\\ta -> "b c" [style=dashed]\\n}')
    2
    """
    count = 0
    for line in source.splitlines():
        found = _NODE_STATEMENT.match(line)
        if found and found.group(1) not in ("graph", "node", "edge") and \
                not line[found.end():].startswith("->") and "->" not in line[:found.end()]:
            count += 1
    return count


def dot_timeout() -> float:
    """Seconds ``dot`` may take: ``$LSTM_GRAPH_DOT_TIMEOUT`` (at most
    :data:`LONGEST_DOT_TIMEOUT`), else :data:`DOT_TIMEOUT`."""
    given = os.environ.get(TIMEOUT_ENV)
    if not given:
        return DOT_TIMEOUT
    try:
        seconds = float(given)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:  # NaN too
        raise RenderError(f"{TIMEOUT_ENV}={given!r} is not a number of seconds above 0")
    return min(seconds, LONGEST_DOT_TIMEOUT)


def dot_memory() -> int:
    """The bytes of memory ``dot`` may map: ``$LSTM_GRAPH_MAX_BYTES`` when set (at least
    :data:`DOT_MEMORY_FLOOR`), else :data:`DOT_MEMORY`."""
    from lstm_graph.formats.memory import parse_size

    given = os.environ.get(MEMORY_ENV)
    return max(parse_size(given), DOT_MEMORY_FLOOR) if given else DOT_MEMORY


def dot_program() -> str | None:
    """Graphviz's ``dot``, where one is found on ``PATH`` in a place no other user can
    write (the build cache's rule for the programs it runs:
    :func:`~lstm_graph.executors.buildcache.trusted_program`); None where none is."""
    from lstm_graph.executors.buildcache import trusted_program

    return trusted_program("dot")


def run_dot(source: str, fmt: str, fast: bool = False, advice: str = "write --format dot"
            ) -> bytes:
    """``dot -T fmt`` on ``source`` (with :data:`FAST_FLAGS` when ``fast``), in its own
    process group, its memory and time bounded; killed with its group when the time is up
    or this process is interrupted. Whatever stops it is said as a :class:`RenderError`,
    ending with ``advice``."""
    program = dot_program()
    if program is None:
        raise RenderError(dot_missing())
    memory, seconds = dot_memory(), dot_timeout()
    try:
        process = subprocess.Popen([program, f"-T{fmt}", *(FAST_FLAGS if fast else ())],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, start_new_session=True,
                                   preexec_fn=lambda: _limit_memory(memory))
    except OSError as err:
        raise RenderError(f"cannot start Graphviz's dot ({err.strerror or err})") from None
    try:
        output, errors = process.communicate(source.encode("utf-8"), timeout=seconds)
    except subprocess.TimeoutExpired:
        _kill(process)
        raise RenderError(f"Graphviz's dot took longer than {seconds:g} s on this diagram "
                          f"({node_count(source)} nodes) and was stopped ({TIMEOUT_ENV} sets "
                          f"the limit); {advice}") from None
    except BaseException:
        _kill(process)
        raise
    words = errors.decode("utf-8", errors="replace").strip()
    out_of_memory = any(sign in words.lower() for sign in ("out of memory", "cannot allocate",
                                                            "bad_alloc", "error creating"))
    if process.returncode != 0 or out_of_memory or not output:
        if process.returncode < 0 or out_of_memory:
            how = f"was killed by {_signal_name(-process.returncode)}" \
                if process.returncode < 0 else "ran out of memory"
            raise RenderError(f"Graphviz's dot {how} on this diagram ({node_count(source)} "
                              f"nodes), within the {size_text(memory)} of memory it may take "
                              f"({MEMORY_ENV} sets the limit); {advice}")
        raise RenderError(f"Graphviz's dot failed (exit status {process.returncode}): "
                          f"{words or 'it printed nothing'}")
    return output


def _limit_memory(memory: int) -> None:
    """In the child, before ``dot`` starts: at most ``memory`` bytes of address space (less
    where this process's own limit, ``ulimit -v``, is lower), and no core file."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    bound = memory if soft == resource.RLIM_INFINITY else min(memory, soft)
    resource.setrlimit(resource.RLIMIT_AS, (bound, hard))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _kill(process: subprocess.Popen[bytes]) -> None:
    """Stop ``dot`` and anything it started, and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.communicate(timeout=5)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def save(dot: graphviz.Digraph, path: str | Path, fmt: str) -> Path:
    """Write the diagram to ``path`` whole or not at all."""
    return write_atomic(path, to_bytes(dot, fmt))


def gallery() -> dict[str, tuple[str, str, str | None]]:
    """The files of ``diagrams/`` without extension: name -> (cell, style, highlight).

    Every built-in cell in both styles, and the article's figure sequence (the
    peephole LSTM's presets, one highlight each).
    """
    from lstm_graph.library import builtin_names, load_cell

    entries: dict[str, tuple[str, str, str | None]] = {}
    for name in builtin_names():
        for style in STYLES:
            entries[f"{name}.{style}"] = (name, style, None)
    for preset in load_cell("peephole_lstm").graph.presets:
        for style in STYLES:
            entries[f"peephole_lstm.{preset}.{style}"] = ("peephole_lstm", style, preset)
    return entries
