"""Front end: ``.cell`` text → :class:`~lstm_graph.ir.CellGraph`.

The language (README, "The .cell language")::

    cell peephole_lstm
    input x
    state c, h
    output h
    f = sigmoid(linear(x, h[t-1], peep(c[t-1])))   # forget valve
    ...

Reading takes two passes. The first splits the file into header lines and
assignments; each assignment is parsed with Python's :mod:`ast` (never
evaluated). The second lowers every expression into graph nodes, once all
assigned names are known, so the order of lines does not matter. Every problem
becomes a :class:`~lstm_graph.errors.Diagnostic` at ``file:line:col``; the
parser reports all it finds, not just the first.
"""

from __future__ import annotations

import ast
import bisect
import difflib
import math
import re
import unicodedata
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from keyword import iskeyword

from lstm_graph.errors import MAX_ERRORS, STOPPED, Diagnostic
from lstm_graph.ir import Assignment, CellGraph, GateMap, Loc, Node, NodeKind, Preset, old_id
from lstm_graph.language import directives
from lstm_graph.ops import BINARY, CALLABLE_NAMES, FUNCTIONS, LINEAR, UNARY

HEADERS = ("cell", "input", "state", "output", *directives.KEYWORDS)
#: Names a cell may not use for its own values.
RESERVED = frozenset({"t", *CALLABLE_NAMES, *HEADERS})
#: Python's spelling of the operators the language has.
_AST_OPERATORS: dict[type, str] = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.USub: "-"}
_PYTHON_OPERATORS: dict[type, str] = {
    ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**", ast.MatMult: "@",
    ast.LShift: "<<", ast.RShift: ">>", ast.BitOr: "|", ast.BitAnd: "&", ast.BitXor: "^",
    ast.Invert: "~", ast.Not: "not", ast.UAdd: "+",
}
_HEADER_LINE = re.compile(rf"({'|'.join(HEADERS)})(?=\s|$)(?!\s*=)")
#: A header written with a colon (``state: c, h``), as in some other languages.
_HEADER_COLON = re.compile(rf"({'|'.join(HEADERS)})\s*:(?!=)")
#: A header keyword in any case (``Input x``, ``STATE c, h``): said once, then read.
_HEADER_CASE = re.compile(rf"({'|'.join(HEADERS)})(?=\s|:|$)(?!\s*=)", re.IGNORECASE)
_NAME_TOKEN = re.compile(r"[^\s,]+")
#: In a header's names (after its keyword), a comma with no name before it
#: (``state c,, h``, ``state ,c``): the start or a comma, then spaces only up to a comma.
#: A comma after the last name is Python's trailing comma, and allowed.
_EMPTY_ITEM = re.compile(r"(?:^|,)\s*(?=,)")


def _not_finite(func: str) -> str:
    """The error for a function's number that is not finite, said at the number."""
    return f"{func}()'s numbers must be finite (at most about 1.8e308)"


@dataclass
class _Statement:
    """One assignment's source: where it starts, its text and its caption."""

    line: int  # first physical line
    indent: int  # columns before the statement on its first line
    lines: list[str]  # the physical lines it spans, comments removed, first one stripped
    caption: str | None
    offset: int = 0  # rows before it in the text its ast came from


#: Statements parsed together (see :meth:`_Parser._trees`).
_RUN = 512


#: The most a cell may hold: its text, its assignments, and the operations and values
#: (graph nodes) they make. Far beyond any cell written by hand (the LSTM has 6
#: assignments), and what a validation does in a few seconds and a few hundred MB: each
#: assignment and node costs memory (a few kB in the syntax trees and the graph) and time
#: in the checks. Larger input is refused before it is parsed (the text, the assignments,
#: the operators, calls and numbers counted in it) or, should the count have missed some,
#: as it is lowered (the nodes).
MAX_CELL_BYTES = 2 * 2**20
MAX_ASSIGNMENTS = 20_000
MAX_NODES = 100_000
#: The deepest an assignment's expression may nest (operations within operations: a sum
#: of 300 terms in one line nests 299 deep). Every part of the tool that walks an
#: expression (the lowering here, the text of a schedule, an exported PyTorch module's
#: line, the module's own compilation) handles this depth; deeper was a RecursionError
#: in some of them and not in others. Far beyond a cell written by hand (the LSTM: 4).
MAX_DEPTH = 256
#: The start of an assignment, of any name (``α = …`` too): a line that starts one ends
#: the statement before it, closed or not; it names what a line that fails assigns.
_ASSIGNMENT = re.compile(r"([^\W\d]\w*)\s*=(?!=)")
#: What makes a node when a statement is lowered: an operator, a call, a number.
_OPERATION = re.compile(r"[-+*(]|(?<![\w.])\.?\d")
_INDEX = re.compile(r"\[[^\]]*\]")  # [t-1] reads a value, it makes none
#: Characters a cell's text (and a cell's name) may not hold: control characters (but the
#: tab and the line end), line and paragraph separators (Python would split lines where
#: an editor does not), bidirectional overrides (they reorder what a reader sees),
#: surrogates and Unicode's noncharacters. Each would reach a terminal, a DOT file or an
#: SVG raw (``schedule`` printing escape sequences, XML that no reader accepts).
_UNPRINTABLE = re.compile(
    "[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
    "\ud800-\udfff\ufdd0-\ufdef"
    + "".join(chr(plane << 16 | 0xFFFE) + chr(plane << 16 | 0xFFFF) for plane in range(17))
    + "]|\r(?!\n)")
#: What a text past :data:`MAX_CELL_BYTES` is told.
TOO_LARGE = (f"larger than {MAX_CELL_BYTES // 2**20} MB: too large for a .cell file (a cell "
             f"holds at most {MAX_ASSIGNMENTS:,} assignments)")


class _Report:
    """Collects diagnostics for one file (at most :data:`MAX_ERRORS` errors)."""

    def __init__(self, file: str):
        self.file = file
        self.items: list[Diagnostic] = []
        self.errors = 0

    def error(self, loc: Loc, message: str) -> None:
        self.errors += 1
        if self.errors <= MAX_ERRORS:
            self.items.append(Diagnostic(self.file, loc.line, loc.col, "error", message))

    @property
    def full(self) -> bool:
        return self.errors >= MAX_ERRORS

    def summarize(self, last_line: int) -> None:
        if self.full:
            self.items.append(Diagnostic(
                self.file, last_line, 1, "error",
                STOPPED))


#: Up to this many choices, a suggestion compares the name with every one of them.
_SCAN_ALL = 200
#: Past this many choices, nothing is suggested (see :class:`NameIndex`).
_INDEX_AT_MOST = 20_000
#: The longest name a suggestion is made for or of (Python's own stop at 40 characters):
#: the index of a name's deletions grows with the square of its length, and difflib's
#: ranking too (a 30,000-character name took 909 MB to index; one of 300,000, minutes
#: to rank).
_LONGEST = 64


class NameIndex:
    """Close matches for names among many choices, at a cost that does not grow with them.

    With few choices (:data:`_SCAN_ALL`), :mod:`difflib` ranks them all. With
    more, it ranks only the candidates that spell the same as the name once at
    most one character is deleted from each (a typo: a character wrong, missing,
    added, or two swapped), found through an index of those deletions built once.
    Past :data:`_INDEX_AT_MOST` choices (a generated file, not a typo) nothing is
    suggested, as Python suggests nothing past 750 names. Names longer than
    :data:`_LONGEST` are neither suggested nor given suggestions.
    """

    def __init__(self, choices: Iterable[str]):
        self.choices = [c for c in dict.fromkeys(choices) if len(c) <= _LONGEST]
        self.index: dict[str, list[str]] = {}
        if _SCAN_ALL < len(self.choices) <= _INDEX_AT_MOST:
            for choice in self.choices:
                for key in _deletions(choice):
                    self.index.setdefault(key, []).append(choice)

    def closest(self, name: str) -> str | None:
        """The closest choice, or None when none is close."""
        if len(name) > _LONGEST:
            return None
        if len(self.choices) <= _SCAN_ALL:
            candidates = self.choices
        elif len(self.choices) > _INDEX_AT_MOST:
            return None
        else:
            candidates = list(dict.fromkeys(
                c for key in _deletions(name) for c in self.index.get(key, ())))
        close = difflib.get_close_matches(name, candidates, n=1)
        return close[0] if close else None


def _deletions(name: str) -> set[str]:
    """``name`` and every spelling of it with one character deleted."""
    return {name, *(name[:k] + name[k + 1:] for k in range(len(name)))}


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """``" (did you mean 'sigmoid'?)"`` when a close match exists, else ``""``."""
    return _suggestion(NameIndex(choices).closest(name))


def _suggestion(close: str | None) -> str:
    return f" (did you mean '{close}'?)" if close else ""


class Suggestions:
    """:func:`did_you_mean` for a whole file: one :class:`NameIndex` per list of choices,
    and suggestions for the first :data:`MAX_ERRORS` names only, so that a file full of
    unknown names costs time in proportion to its length."""

    def __init__(self) -> None:
        self.indexes: dict[tuple[str, ...], NameIndex] = {}
        self.left = MAX_ERRORS

    def __call__(self, name: str, choices: Iterable[str]) -> str:
        if self.left <= 0:
            return ""
        self.left -= 1
        key = tuple(choices)
        if key not in self.indexes:
            self.indexes[key] = NameIndex(key)
        return _suggestion(self.indexes[key].closest(name))


def name_problem(name: str, read: bool = True) -> str | None:
    """Why ``name`` cannot name a value (``read``: one expressions read; a cell's own name
    is never read), or None: it must read in an expression as it is written in the header.
    Python's parser, which reads the expressions, takes no keyword as a name and reads
    every name in Unicode's NFKC form (``ℎ`` as ``h``), so a header naming ``ℎ`` declared
    a name no expression could use."""
    if not name.isidentifier():
        return f"'{name}' is not a valid name (letters, digits, _)"
    if not read:
        return None
    if iskeyword(name):
        return f"'{name}' is a keyword of the expressions' syntax; choose another name"
    plain = unicodedata.normalize("NFKC", name)
    if plain != name:
        def spelled(text: str) -> str:  # the forms may look alike: their code points
            return " ".join(c if c.isascii() else f"U+{ord(c):04X}" for c in text)

        return (f"'{name}' ({spelled(name)}) reads as '{plain}' ({spelled(plain)}) in an "
                "expression (names are compared in Unicode's NFKC form); write it so")
    return None


def _nesting(expr: ast.expr) -> int:
    """How deep ``expr``'s operations nest (a name or number: 0), found without recursion."""
    deepest, pending = 0, [(expr, 0)]
    while pending:
        node, depth = pending.pop()
        deepest = max(deepest, depth)
        pending += [(child, depth + 1) for child in ast.iter_child_nodes(node)
                    if isinstance(child, ast.expr)]
    return deepest


def _parse(text: str) -> ast.Module:
    """``ast.parse`` without Python's SyntaxWarnings (about Python, not about cells).

    The text is named ``<cell>``, not by its file: given a file's name, CPython's parser
    reads the error's line from that file (its line of the same number, not the
    statement's) to place the column, so a syntax error's column was wrong."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        return ast.parse(text, filename="<cell>", mode="exec")


_DIGIT_LIMIT = re.compile(r"Exceeds the limit \((\d+) digits\) for integer string conversion"
                          r"(?:: value has (\d+) digits)?")


def _syntax_message(python_message: str, first_line: int = 1) -> str:
    """Python's syntax error in the language's words; a line it names ("'(' on line 1"),
    which Python counts from the statement's first line, ``first_line`` of the file, as
    the file's.

    >>> _syntax_message("'(' was never closed on line 2", 7)
    "syntax error: '(' was never closed on line 8; close it on this line or a following one"
    """
    python_message = _LINE_NAMED.sub(
        lambda found: f"{found.group(1)} line {int(found.group(2)) + first_line - 1}",
        python_message)
    digits = _DIGIT_LIMIT.search(python_message)
    if digits:  # Python's own advice (sys.set_int_max_str_digits) is no help in a cell
        count = f" ({digits.group(2)} digits)" if digits.group(2) else ""
        return (f"number too large{count}: a constant must be finite (at most about "
                "1.8e308)")
    if "never closed" in python_message:
        return f"syntax error: {python_message}; close it on this line or a following one"
    return f"syntax error: {python_message}"


#: A line Python's syntax error names: "… on line 3", "(detected at line 3)".
_LINE_NAMED = re.compile(r"\b(on|at) line (\d+)\b")
_WORD = re.compile(r"[^\W\d]\w*")


#: Python's keywords that stand between values in an expression (``a and b``, ``a if c
#: else b``): written so, they are operators the language lacks, not names.
_OPERATOR_WORDS = frozenset({"and", "or", "not", "if", "else", "is", "in", "None", "True",
                             "False"})


def _syntax_hint(stmt: _Statement, err: SyntaxError) -> tuple[Loc, str] | None:
    """Where and why, for three of Python's bare "invalid syntax" errors that a cell's
    author meets: an operator with nothing after it (``a +`` at a line's end, ``(1 -)``,
    over lines too), a character no expression holds (``a + $``), and a keyword of
    Python's written as a name (``lambda``)."""
    row = (err.lineno or 1) - 1
    if not 0 <= row < len(stmt.lines):
        return None
    stop = max((err.offset or 1) - 1, 0)  # where Python stopped, on line ``row``
    lines = [*stmt.lines[:row], stmt.lines[row][:stop]]
    last = next(((k, text.rstrip()) for k, text in reversed(list(enumerate(lines)))
                 if text.strip()), None)
    # what stands there: nothing (or a bracket's end) is an operand missing; anything else
    # ('$', 'lambda') is what to say (below, or in Python's words)
    rest = stmt.lines[row][stop:].lstrip()
    if last is not None:
        at, before = last
        operator = "//" if before.endswith("//") else before[-1]
        if operator in ("+", "-", "*", "/", "//") and not before.endswith("**") and \
                (not rest or rest[0] in ")],"):
            col = len(before) - len(operator) + 1 + (stmt.indent if at == 0 else 0)
            return (Loc(stmt.line + at, col), f"'{operator}' has no value after it; give its "
                    "right operand (an expression goes on over lines inside parentheses)")
    if rest and not (rest[0].isalnum() or rest[0] in "_()[],.+-*/=:"):
        col = len(stmt.lines[row]) - len(rest) + 1 + (stmt.indent if row == 0 else 0)
        return (Loc(stmt.line + row, col), f"'{rest[0]}' cannot be in an expression (a cell "
                "computes with names, numbers, + - * and its functions)")
    for at, text in enumerate(stmt.lines):
        for word in _WORD.finditer(text):
            if iskeyword(word.group()) and word.group() not in _OPERATOR_WORDS:
                col = word.start() + 1 + (stmt.indent if at == 0 else 0)
                return (Loc(stmt.line + at, col), f"'{word.group()}' is a keyword of the "
                        "expressions' syntax, not a name; choose another name")
    return None


def _long_number(stmt: _Statement, python_message: str) -> Loc | None:
    """Where the integer too long for Python to read starts, if that is the error."""
    limit = _DIGIT_LIMIT.search(python_message)
    if not limit:
        return None
    too_long = re.compile(rf"\d{{{int(limit.group(1)) + 1},}}")
    for row, text in enumerate(stmt.lines):
        found = too_long.search(text)
        if found:
            return Loc(stmt.line + row, found.start() + 1 + (stmt.indent if row == 0 else 0))
    return None


def _split_comment(line: str) -> tuple[str, str | None]:
    """Code and trailing comment of a line (the language has no strings)."""
    code, hash_, comment = line.partition("#")
    return code, (comment.strip() or None) if hash_ else None


def _depth(code: str) -> int:
    return code.count("(") + code.count("[") - code.count(")") - code.count("]")


class _Parser:
    def __init__(self, text: str, file: str, default_name: str):
        self.report = _Report(file)
        self.file = file
        self.default_name = default_name
        self.physical = text.splitlines()
        self.name: tuple[str, Loc] | None = None
        self.decls: dict[str, dict[str, Loc]] = {"input": {}, "state": {}, "output": {}}
        self.decl_lines: dict[str, int] = {}
        self.statements: list[_Statement] = []
        self.broken_targets: set[str] = set()  # assigned by lines that did not parse
        self.presets: dict[str, Preset] = {}
        self.gates: dict[str, GateMap] = {}

    # -- pass 1: lines -------------------------------------------------------

    def split(self) -> None:
        line_no = 0
        while line_no < len(self.physical):
            code, caption = _split_comment(self.physical[line_no])
            line_no += 1
            if not code.strip():
                continue
            indent = len(code) - len(code.lstrip())
            cased = _HEADER_CASE.match(code.lstrip())
            if cased and cased.group(1) not in HEADERS:  # said once, then read in lower case
                word = cased.group(1).lower()
                self.report.error(Loc(line_no, indent + 1),
                                  f"'{cased.group(1)}': a header keyword is written in lower "
                                  f"case: '{word}'")
                code = code[:indent] + word + code[indent + len(word):]
            colon = _HEADER_COLON.match(code.lstrip())
            if colon:  # said once, then read as the header it is meant to be
                word = colon.group(1)
                if word not in directives.KEYWORDS:  # those say their own form (NAME: …)
                    names = "NAME" if word == "cell" else "NAMES"
                    self.report.error(Loc(line_no, indent + colon.end()),
                                      f"a header line has no colon: write '{word} {names}'")
                end = indent + colon.end()
                code = code[:end - 1] + " " + code[end:]  # the names keep their columns
            if _HEADER_LINE.match(code.lstrip()):
                self.header(line_no, indent, code.lstrip())
                continue
            start, lines = line_no, [code]
            depth = _depth(code)
            while depth > 0 and line_no < len(self.physical):
                more, more_caption = _split_comment(self.physical[line_no])
                # a new statement at the line's start: a bracket left open; but after a
                # comma or an open bracket, NAME= is a function's number given by name
                after = lines[-1].rstrip().endswith((",", "("))
                if (_ASSIGNMENT.match(more.lstrip()) and not after) or \
                        _HEADER_LINE.match(more.lstrip()):
                    break
                line_no += 1
                lines.append(more)
                caption = caption or more_caption
                depth += _depth(more)
            while lines[-1].rstrip().endswith("\\") and line_no < len(self.physical):
                self.report.error(Loc(line_no, len(lines[-1].rstrip())),
                                  "a backslash does not join lines; write the expression in "
                                  "parentheses to take it over several lines")
                more, more_caption = _split_comment(self.physical[line_no])
                line_no += 1  # read with it: the next line is not a statement of its own
                lines.append(more)
                caption = caption or more_caption
            lines[0] = lines[0].strip()
            self.statements.append(_Statement(start, indent, lines, caption))

    def header(self, line: int, indent: int, code: str) -> None:
        keyword = code.split()[0]
        if keyword in directives.KEYWORDS:
            self.directive(line, indent, code)
            return
        names = [
            (m.group(), Loc(line, indent + m.start() + 1))
            for m in _NAME_TOKEN.finditer(code, len(keyword))
        ]
        where = Loc(line, indent + 1)
        if keyword in self.decl_lines or (keyword == "cell" and self.name):
            first = self.decl_lines.get(keyword) or (self.name[1].line if self.name else line)
            fix = {"cell": "a cell has one name", "output": "a cell has one output",
                   "input": "a cell has one input"}.get(
                keyword, f"list all names on one line: {keyword} a, b")
            self.report.error(where, f"a second '{keyword}' line (the first is line {first}); "
                              f"{fix}")
            return
        if not names:
            self.report.error(where, f"'{keyword}' needs a name: {keyword} NAME")
            if keyword != "cell":
                self.decl_lines[keyword] = line  # said here: not also "no 'state' line"
            return
        listed = code[len(keyword):]
        if "," in listed:
            for m in _EMPTY_ITEM.finditer(listed):
                comma = len(keyword) + (m.start() if listed[m.start()] == "," else m.end())
                self.report.error(Loc(line, indent + comma + 1),
                                  f"a name is missing beside this comma: {keyword} a, b")
        valid = []
        for name, loc in names:
            problem = name_problem(name, read=keyword != "cell")
            if problem:
                self.report.error(loc, problem)
                # declared as the expressions read it, so that their uses raise no more
                name = unicodedata.normalize("NFKC", name)
                if name_problem(name):
                    continue
            if keyword != "cell" and name in RESERVED:
                self.report.error(loc, f"'{name}' is reserved (a function, 't' or a header "
                                  "keyword); choose another name")
            else:
                valid.append((name, loc))
        if keyword == "cell":
            if len(names) > 1:
                self.report.error(names[1][1], "a cell has one name: cell NAME")
            if valid:
                self.name = valid[0]
            return
        self.decl_lines[keyword] = line
        if keyword in ("input", "output") and len(valid) > 1:
            self.report.error(
                valid[1][1], f"a cell has exactly one {keyword}; '{valid[1][0]}' is a second "
                f"(compute what you need from '{valid[0][0]}' inside the cell)"
            )
            valid = valid[:1]
        for name, loc in valid:
            for other, names_of in self.decls.items():
                if name in names_of:
                    if other == keyword:
                        self.report.error(loc, f"'{name}' is listed twice")
                    elif {other, keyword} == {"input", "state"}:
                        self.report.error(loc, f"'{name}' is declared both as input and state")
            self.decls[keyword].setdefault(name, loc)

    def directive(self, line: int, indent: int, code: str) -> None:
        found = directives.parse_line(code, line, indent, self.report.error)
        if found is None:
            return
        table: dict = self.presets if isinstance(found, Preset) else self.gates
        key = found.name if isinstance(found, Preset) else found.family
        if key in table:
            self.report.error(found.loc, f"a second '{code.split()[0]} {key}' line (the first "
                              f"is line {table[key].loc.line})")
            return
        table[key] = found

    # -- pass 2: assignments -------------------------------------------------

    def parse_statements(self) -> list[tuple[str, Loc, ast.expr, _Statement]]:
        parsed = []
        trees = self._trees()
        for stmt, body in zip(self.statements, trees):
            if body is None:  # could not be read, or not read past the error cap
                self._broken(stmt)
                continue
            if len(body) != 1:
                self._target(stmt, body[0])
                for other in body[1:]:  # theirs too: no "never assigned" follows for them
                    self.broken_targets.update(t.id for t in getattr(other, "targets", ())
                                               if isinstance(t, ast.Name))
                self.report.error(self.loc(stmt, body[1]), "one assignment per line")
                continue
            node = body[0]
            self._respelled(stmt, node)
            target = self._target(stmt, node)
            if target is not None and isinstance(node, ast.Assign):
                parsed.append((target[0], target[1], node.value, stmt))
        return parsed

    def _trees(self) -> list[list[ast.stmt] | None]:
        """Each statement's trees; None for one that cannot be read (reported).

        Runs of up to :data:`_RUN` statements are parsed together, which is fast
        for big files and bounds what an error costs. A syntax error splits its
        run at the statement it is in, which is then parsed alone for its
        message; a run too large or too deep to read is halved. A statement
        with a line continued by a backslash is parsed alone (joined to the
        next one it would run into it).
        """
        trees: list[list[ast.stmt] | None] = [None] * len(self.statements)
        start = 0
        for k, stmt in enumerate(self.statements):
            alone = any(line.rstrip().endswith("\\") for line in stmt.lines)
            if alone or k - start == _RUN:
                self._read_run(start, k, trees)
                start = k
            if alone:
                trees[k] = self._ast(stmt)
                start = k + 1
        self._read_run(start, len(self.statements), trees)
        return trees

    def _read_run(self, lo: int, hi: int, trees: list[list[ast.stmt] | None]) -> None:
        """Parse statements ``lo`` to ``hi - 1`` into ``trees``, reporting what fails."""
        while lo < hi and not self.report.full:
            if hi - lo == 1:
                trees[lo] = self._ast(self.statements[lo])
                return
            starts: list[int] = []
            lines: list[str] = []
            for stmt in self.statements[lo:hi]:
                starts.append(len(lines) + 1)
                lines += stmt.lines
            try:
                module = _parse("\n".join(lines))
            except SyntaxError as err:
                bad = lo + max(bisect.bisect_right(starts, err.lineno or 1) - 1, 0)
                if bad > lo:
                    self._read_run(lo, bad, trees)
                trees[bad] = self._ast(self.statements[bad])
                lo = bad + 1
                continue
            except (RecursionError, MemoryError, ValueError):
                middle = (lo + hi) // 2
                self._read_run(lo, middle, trees)
                lo = middle
                continue
            bodies: list[list[ast.stmt]] = [[] for _ in starts]
            for node in module.body:
                first = bisect.bisect_right(starts, node.lineno) - 1
                if first != bisect.bisect_right(starts, node.end_lineno or node.lineno) - 1:
                    # read across statements (a '(' left open up to a header line, whose
                    # next statement closes it): each alone says what is wrong with it
                    for k in range(lo, hi):
                        trees[k] = self._ast(self.statements[k])
                    return
                bodies[first].append(node)
            for k, (begin, body) in enumerate(zip(starts, bodies), start=lo):
                self.statements[k].offset = begin - 1
                trees[k] = body
            return

    def _ast(self, stmt: _Statement) -> list[ast.stmt] | None:
        stmt.offset = 0
        try:
            return _parse("\n".join(stmt.lines)).body
        except SyntaxError as err:
            self._broken(stmt)
            line = stmt.line + (err.lineno or 1) - 1
            col = (err.offset or 1) + (stmt.indent if (err.lineno or 1) == 1 else 0)
            where = _long_number(stmt, err.msg) or Loc(line, max(col, 1))
            hint = _syntax_hint(stmt, err) if err.msg == "invalid syntax" else None
            if hint:
                where, message = hint
                self.report.error(where, f"syntax error: {message}")
            else:
                self.report.error(where, _syntax_message(err.msg, stmt.line))
        except (RecursionError, MemoryError, ValueError) as err:
            self._broken(stmt)
            self.report.error(Loc(stmt.line, 1), f"expression too large or too deeply nested "
                              f"to read ({type(err).__name__}); split it over several lines")
        return None

    def _broken(self, stmt: _Statement) -> None:
        """Note the name a line that cannot be read assigns, so that no "never assigned"
        or "does not exist" error follows from it."""
        visible = "".join(c for c in stmt.lines[0] if unicodedata.category(c) != "Cf")
        target = _ASSIGNMENT.match(visible)  # h⁠ = … (a joiner refused) still assigns h
        if target:
            self.broken_targets.add(target.group(1))

    def _target(self, stmt: _Statement, node: ast.stmt) -> tuple[str, Loc] | None:
        """The assigned name and where it is; None (reported) for anything else."""
        compared = node.value if isinstance(node, ast.Expr) and \
            isinstance(node.value, ast.Compare) and len(node.value.ops) == 1 and \
            isinstance(node.value.ops[0], ast.Eq) else None  # h == …: meant as h = …
        targets = [compared.left] if compared is not None else (
            getattr(node, "targets", None) or [getattr(node, "target", None)])
        for target in targets:
            names = target.elts if isinstance(target, ast.Tuple) else [target]  # h, k = …
            for one in names:
                base = one.value if isinstance(one, ast.Subscript) else one
                if isinstance(base, ast.Name):
                    self.broken_targets.add(base.id)  # so no "never assigned" error follows
        if compared is not None:
            self.report.error(self.loc(stmt, node), "'==' compares two values; an assignment "
                              "is written with one '=': name = expression")
            return None
        if isinstance(node, ast.AugAssign):
            self.report.error(self.loc(stmt, node), "each name is assigned once; instead of "
                              "'a += b' write a new name: a2 = a + b")
            return None
        if not isinstance(node, ast.Assign):
            self.report.error(self.loc(stmt, node), "expected an assignment 'name = expression' "
                              "or a header line (cell, input, state, output)")
            return None
        if len(node.targets) != 1:
            self.report.error(self.loc(stmt, node.targets[1]), "one name per assignment")
            return None
        target = node.targets[0]
        loc = self.loc(stmt, target)
        if isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name):
            name = target.value.id
            self.report.error(loc, f"assign the new value '{name}', not an indexed one; "
                              f"'{name}[t-1]' is the previous step's value and is only read")
            return None
        if not isinstance(target, ast.Name):
            self.report.error(loc, "the left side must be one name")
            return None
        return target.id, loc

    def _respelled(self, stmt: _Statement, tree: ast.stmt) -> None:
        """Report each name ``tree`` reads other than as written: Python's parser reads
        names in Unicode's NFKC form, so ``ℎ[t-1]`` would silently read ``h[t-1]``."""
        if all(line.isascii() for line in stmt.lines):
            return
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Name, ast.keyword)) or node.end_col_offset is None:
                continue
            read = node.id if isinstance(node, ast.Name) else node.arg
            if read is None:  # **values: refused where calls are read
                continue
            row = node.lineno - 1 - stmt.offset
            if not 0 <= row < len(stmt.lines):
                continue
            written = stmt.lines[row].encode()[node.col_offset:node.end_col_offset].decode(
                errors="replace")
            if isinstance(node, ast.keyword):  # name=value: the name as written
                written = written.partition("=")[0].strip()
            problem = name_problem(written) if written != read else None
            if problem:
                self.report.error(self.loc(stmt, node), problem)

    def operator_loc(self, stmt: _Statement, node: ast.BinOp, spelling: str) -> Loc:
        """File position of ``node``'s operator (written ``spelling``), which Python's ast
        does not record: the first ``spelling`` after its left operand (past a closing
        parenthesis or a line break), before its right one; the expression's start where
        it is not found."""
        start = (node.left.end_lineno or node.left.lineno, node.left.end_col_offset or 0)
        stop = (node.right.lineno, node.right.col_offset)
        for lineno in range(start[0], stop[0] + 1):
            row = lineno - 1 - stmt.offset
            if not 0 <= row < len(stmt.lines):
                break
            text = stmt.lines[row].encode()
            low = start[1] if lineno == start[0] else 0
            high = stop[1] if lineno == stop[0] else len(text)
            found = text.find(spelling.encode(), low, high)
            if found >= 0:
                return self.loc(stmt, ast.Constant(0, lineno=lineno, col_offset=found))
        return self.loc(stmt, node)

    def loc(self, stmt: _Statement, node: ast.AST) -> Loc:
        """File position of an ast node of ``stmt`` (ast columns are UTF-8 byte offsets)."""
        row = getattr(node, "lineno", 1) - 1 - stmt.offset
        col = getattr(node, "col_offset", 0)
        if row == 0:
            text, col = stmt.lines[0], col + stmt.indent
        else:
            text = stmt.lines[row] if 0 <= row < len(stmt.lines) else ""
        if not text.isascii():
            indent = stmt.indent if row == 0 else 0
            col = len(text.encode()[:col - indent].decode(errors="ignore")) + indent
        return Loc(stmt.line + row, col + 1)


class _Lowering:
    """Turns checked assignments into graph nodes and edges.

    ``assigned`` holds every name some line assigns, lines that could not be
    read included: reading one of those is not reported again.
    """

    def __init__(self, parser: _Parser, assigned: set[str]):
        self.report = parser.report
        self.parser = parser
        self.assigned = assigned
        self.nodes: dict[str, Node] = {
            name: Node(name, NodeKind.INPUT, loc) for name, loc in parser.decls["input"].items()}
        self.assignments: dict[str, Assignment] = {}
        self.broken: dict[str, Assignment] = {}  # lines with errors: what they read
        self.known: NameIndex | None = None  # built at the first undefined name

    def assignment(self, name: str, loc: Loc, expr: ast.expr, stmt: _Statement,
                   index: int) -> None:
        self.name, self.stmt = name, stmt
        self.assignment_nodes: list[str] = []
        self.reads: list[tuple[str, Loc]] = []
        self.linear_loc: Loc | None = None
        self.counts: dict[str, int] = {}
        depth = _nesting(expr)
        if depth > MAX_DEPTH:
            self.report.error(loc, f"expression nested {depth} operations deep; at most "
                              f"{MAX_DEPTH}: split it over several assignments")
            root = None
        else:
            root = self.expr(expr, root=True, in_linear=False)
        if root is None:  # its reads still tell the validator of loops through it
            self.broken[name] = Assignment(name, loc, index, (), tuple(self.reads))
            return
        self.assignments[name] = Assignment(
            name, loc, index, tuple(self.assignment_nodes), tuple(self.reads), stmt.caption
        )

    def fresh(self, op: str, root: bool) -> str:
        if root:
            return self.name
        self.counts[op] = self.counts.get(op, 0) + 1
        count = self.counts[op]
        return f"{self.name}.{op}" if count == 1 else f"{self.name}.{op}{count}"

    def add_op(self, op: str, args: list[str], node: ast.AST, root: bool,
               peep: tuple[bool, ...] = (), params: tuple[str, ...] = (),
               attrs: tuple[tuple[str, float], ...] = ()) -> str:
        node_id = self.fresh(op, root)
        self.nodes[node_id] = Node(node_id, NodeKind.OP, self.parser.loc(self.stmt, node), op,
                                   tuple(args), peep or (False,) * len(args), params,
                                   assignment=self.name, attrs=attrs)
        self.assignment_nodes.append(node_id)
        return node_id

    def expr(self, node: ast.expr, root: bool, in_linear: bool) -> str | None:
        """Lower ``node``; return its node id, or None after reporting an error."""
        if isinstance(node, (ast.Name, ast.Subscript, ast.Constant)):
            value = self.leaf(node, self.parser.loc(self.stmt, node))
            if value is None or not root:
                return value
            return self.add_op("copy", [value], node, root)
        if isinstance(node, ast.BinOp) and type(node.op) in _AST_OPERATORS:
            left = self.expr(node.left, False, in_linear)
            right = self.expr(node.right, False, in_linear)
            if left is None or right is None:
                return None
            return self.add_op(BINARY[_AST_OPERATORS[type(node.op)]].name, [left, right],
                               node, root)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            operand = self.expr(node.operand, False, in_linear)
            return None if operand is None else self.add_op(UNARY["-"].name, [operand], node,
                                                            root)
        loc = self.parser.loc(self.stmt, node)  # only an error or a call needs it
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd):
            self.report.error(loc, "a '+' before a value does nothing; write the value "
                              "without it (the language has + and - between values, and -"
                              " before one)")
            return None
        if isinstance(node, (ast.BinOp, ast.UnaryOp)):
            spelling = _PYTHON_OPERATORS.get(type(node.op), type(node.op).__name__)
            if isinstance(node, ast.BinOp):  # at the operator, not the expression's start
                loc = self.parser.operator_loc(self.stmt, node, spelling)
            self.report.error(loc, f"unsupported operator '{spelling}'; the language has "
                              "element-wise +, - and *")
            return None
        if isinstance(node, ast.Call):
            return self.call(node, loc, root, in_linear)
        kind = type(node).__name__
        self.report.error(loc, f"unsupported expression ({kind}); use names, numbers, "
                          "+ - *, parentheses and the functions " + ", ".join(CALLABLE_NAMES))
        return None

    def leaf(self, node: ast.Name | ast.Subscript | ast.Constant, loc: Loc) -> str | None:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                self.report.error(loc, f"unsupported constant {node.value!r}; only numbers")
                return None
            try:
                value = float(node.value)
            except OverflowError:
                value = math.inf
            if not math.isfinite(value):
                self.report.error(loc, "number too large: a constant must be finite "
                                  "(at most about 1.8e308)")
                return None
            node_id = self.fresh("const", False)
            self.nodes[node_id] = Node(node_id, NodeKind.CONST, loc, value=value,
                                       assignment=self.name)
            self.assignment_nodes.append(node_id)
            return node_id
        if isinstance(node, ast.Subscript):
            return self.old_read(node, loc)
        return self.name_read(node.id, loc)

    def name_read(self, name: str, loc: Loc) -> str | None:
        decls = self.parser.decls
        if name in decls["input"]:
            self.reads.append((name, loc))
            return name
        if name in self.assigned:
            self.reads.append((name, loc))
            return name
        if name in decls["state"]:
            self.report.error(loc, f"'{name}' is read as this step's new value, but no line "
                              f"assigns it; assign it ({name} = ...) or read the previous "
                              f"step's value with {name}[t-1]")
        elif name == "t":
            self.report.error(loc, "'t' is only used in [t-1], after a state's name")
        elif name in CALLABLE_NAMES:
            self.report.error(loc, f"'{name}' is a function; call it: {name}(...)")
        elif not self.report.full:  # past the cap a suggestion would be thrown away
            if self.known is None:
                self.known = NameIndex([*decls["input"], *decls["state"], *self.assigned])
            self.report.error(loc, f"undefined name '{name}'"
                              f"{_suggestion(self.known.closest(name))}; "
                              "declare it (input/state) or assign it")
        return None

    def old_read(self, node: ast.Subscript, loc: Loc) -> str | None:
        index = node.slice
        is_t_minus_1 = (
            isinstance(index, ast.BinOp) and isinstance(index.op, ast.Sub)
            and isinstance(index.left, ast.Name) and index.left.id == "t"
            and isinstance(index.right, ast.Constant) and type(index.right.value) is int
            and index.right.value == 1
        )
        if not isinstance(node.value, ast.Name):
            self.report.error(loc, "only a state's name may be indexed: c[t-1]")
            return None
        name = node.value.id
        if name in RESERVED:
            self.report.error(loc, f"'{name}' is reserved (a function, 't' or a header "
                              "keyword), not a value: only a state may be indexed, c[t-1]")
            return None
        if not is_t_minus_1 and name in self.parser.decls["state"]:
            index_loc = self.parser.loc(self.stmt, index)
            self.report.error(index_loc, f"only [t-1] is supported (the previous step); "
                              f"write {name}[t-1], or {name} for this step's value")
            return None
        if not is_t_minus_1:
            self.report.error(loc, f"only a state may be indexed, and only with [t-1] (the "
                              f"previous step); write {name} for this step's value")
            return None
        if name not in self.parser.decls["state"]:
            what = ("an input" if name in self.parser.decls["input"]
                    else "a value computed in this step" if name in self.assigned
                    else "not declared")
            if name in self.parser.decls["input"]:
                fix = (f"an input is read at its own step only; to carry what it brings to the "
                       f"next step, keep it in a state (state m, m = linear({name}), then "
                       "read m[t-1])")
            else:
                close = NameIndex(self.parser.decls["state"]).closest(name) \
                    if what == "not declared" and not self.report.full else None
                fix = f"to carry it to the next step declare it: state {name}" if close is None \
                    else f"did you mean {close}[t-1]? (to carry '{name}' to the next step " \
                    f"declare it: state {name})"
            self.report.error(loc, f"[t-1] is only allowed on states, and '{name}' is {what}; "
                              f"{fix}")
            return None
        node_id = old_id(name)
        if node_id not in self.nodes:
            self.nodes[node_id] = Node(node_id, NodeKind.OLD, loc, state=name)
        self.reads.append((node_id, loc))
        return node_id

    def call(self, node: ast.Call, loc: Loc, root: bool, in_linear: bool) -> str | None:
        if not isinstance(node.func, ast.Name):
            self.report.error(loc, "only the functions " + ", ".join(CALLABLE_NAMES)
                              + " may be called")
            return None
        func = node.func.id
        if any(isinstance(arg, ast.Starred) for arg in node.args) or \
                any(kw.arg is None for kw in node.keywords):
            self.report.error(loc, f"{func}() takes no *arguments or **arguments")
            return None
        if node.keywords and func not in FUNCTIONS:
            self.report.error(self.parser.loc(self.stmt, node.keywords[0]),
                              f"{func}() takes no keyword arguments")
            return None
        if func == LINEAR.spelling:
            return self.linear(node, loc, root, in_linear)
        if func == "peep":
            self.report.error(loc, "peep(...) is only allowed as an operand of linear(...): "
                              "linear(x, peep(c[t-1]))")
            return None
        if func not in FUNCTIONS:
            self.report.error(loc, f"unknown function '{func}'{did_you_mean(func, CALLABLE_NAMES)}"
                              f"; known functions: {', '.join(CALLABLE_NAMES)}")
            return None
        op = FUNCTIONS[func]
        for keyword in node.keywords:
            unknown = op.unknown(str(keyword.arg))
            if unknown:
                self.report.error(self.parser.loc(self.stmt, keyword), unknown)
                return None
        if not node.args:
            self.report.error(loc, f"{func}() takes a value: {op.usage}")
            return None
        numbers = []
        for extra in node.args[1:]:  # the attributes: numbers written in the call
            number = _number(extra)
            if number is None:
                self.report.error(self.parser.loc(self.stmt, extra),
                                  f"{func}() takes one value and then numbers only: {op.usage}")
                return None
            if not math.isfinite(number):
                self.report.error(self.parser.loc(self.stmt, extra), _not_finite(func))
                return None
            numbers.append(number)
        named: dict[str, float] = {}
        for keyword in node.keywords:  # numbers by name, as the usage writes them
            if keyword.arg in named:  # Python's parser lets it through; its compiler not
                self.report.error(self.parser.loc(self.stmt, keyword),
                                  f"{func}()'s {keyword.arg} is given twice: {op.usage}")
                return None
            number = _number(keyword.value)
            if number is None:
                self.report.error(self.parser.loc(self.stmt, keyword.value),
                                  f"{func}()'s {keyword.arg} is a number: {op.usage}")
                return None
            if not math.isfinite(number):
                self.report.error(self.parser.loc(self.stmt, keyword.value), _not_finite(func))
                return None
            named[str(keyword.arg)] = number
        try:
            attrs = op.attrs(numbers, named)
        except ValueError as err:
            self.report.error(loc, str(err))
            return None
        value = self.expr(node.args[0], False, in_linear)
        if value is None:
            return None
        return self.add_op(op.name, [value], node, root, attrs=tuple(attrs.items()))

    def linear(self, node: ast.Call, loc: Loc, root: bool, in_linear: bool) -> str | None:
        if in_linear:
            self.report.error(loc, "linear(...) cannot be nested inside another linear(...)")
            return None
        if self.linear_loc is not None:
            self.report.error(loc, f"at most one linear(...) per assignment (the first is at "
                              f"column {self.linear_loc.col}); give the second its own line, "
                              "so its parameters get their own name")
            return None
        self.linear_loc = loc
        if not node.args:
            self.report.error(loc, "linear() needs at least one operand: linear(x, h[t-1])")
            return None
        args, peeps, params = [], [], []
        placed: set[str] = set()  # parameters named by an operand's place (an expression's)
        ok = True
        for position, arg in enumerate(node.args, start=1):
            peep = isinstance(arg, ast.Call) and isinstance(arg.func, ast.Name) \
                and arg.func.id == "peep"
            if isinstance(arg, ast.Call) and peep:
                if len(arg.args) != 1 or arg.keywords:
                    self.report.error(self.parser.loc(self.stmt, arg),
                                      "peep() takes one value: peep(c[t-1])")
                    ok = False
                    continue
                arg = arg.args[0]
            value = self.expr(arg, False, True)
            suffix = _operand_suffix(arg, position)
            param = f"{self.name}.{'p' if peep else 'W'}_{suffix}"
            if value is None:
                ok = False
                continue
            by_place = not isinstance(arg, (ast.Name, ast.Subscript))
            if param in params:
                kind = "peepholes" if peep else "operands"
                named = f"are both named '{suffix}'" if not by_place and param not in placed \
                    else (f"are both named '{suffix}' (an expression is named by its place: "
                          f"operand {suffix.removeprefix('arg')} is '{suffix}')")
                self.report.error(self.parser.loc(self.stmt, arg),
                                  f"two {kind} of this linear(...) {named} and would share "
                                  f"the parameter {param}; combine them or give one its own "
                                  "assignment")
                ok = False
                continue
            if by_place:
                placed.add(param)
            args.append(value)
            peeps.append(peep)
            params.append(param)
        if not ok:
            return None
        return self.add_op(LINEAR.name, args, node, root, peep=tuple(peeps),
                           params=(*params, f"{self.name}.b"))


def _number(node: ast.expr) -> float | None:
    """The number a function's attribute is written as (``0.1``, ``-2``, ``1e-3``), or None
    for anything else (a name, an expression)."""
    sign = 1.0
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        sign = -1.0 if isinstance(node.op, ast.USub) else 1.0
        node = node.operand
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) \
            and not isinstance(node.value, bool):
        try:
            return sign * float(node.value)
        except OverflowError:
            return math.inf
    return None


def _operand_suffix(arg: ast.expr, position: int) -> str:
    """Parameter suffix of a linear operand: ``x`` → ``x``, ``c[t-1]`` → ``c``, else ``arg2``."""
    if isinstance(arg, ast.Name):
        return arg.id
    if isinstance(arg, ast.Subscript) and isinstance(arg.value, ast.Name):
        return arg.value.id
    return f"arg{position}"


@dataclass
class ParseResult:
    """What the parser found: the graph, its diagnostics, every name some line assigns
    (even a line with errors, so the validator does not also call it never assigned), and
    the lines with errors that were read as far as their names (so the validator still
    finds the loops through them)."""

    graph: CellGraph
    diagnostics: list[Diagnostic]
    assigned: set[str]
    broken: dict[str, Assignment] = field(default_factory=dict)
    refused: bool = False  # the text was refused whole (empty, too large): nothing to check
    #: The header lines present (``input``, ``state``, ``output``), whose names were
    #: refused or not: none is then said to be missing.
    headers: frozenset[str] = frozenset()


def _too_large(file: str, default_name: str, message: str) -> ParseResult:
    """The result for a text refused whole (see :data:`MAX_CELL_BYTES`; or a cell named
    with a character it cannot hold): one error at its start, nothing parsed further."""
    return ParseResult(CellGraph(default_name, file, {}, {}, {}, {}, {}),
                       [Diagnostic(file, 1, 1, "error", message)], set(), refused=True)


def character_name(char: str) -> str:
    """A character that must not be shown raw, as a message names it.

    >>> character_name("\\x1b"), character_name("\\ufffe")
    ('U+001B (a control character)', 'U+FFFE (a noncharacter)')
    """
    code = ord(char)
    if code < 0x20 or 0x7F <= code <= 0x9F or char == "\r":
        kind = "a control character"
    elif char in "\u2028\u2029":
        kind = "a line or paragraph separator"
    elif 0x202A <= code <= 0x202E or 0x2066 <= code <= 0x2069:
        kind = "a bidirectional override"
    elif 0xD800 <= code <= 0xDFFF:
        kind = "a lone surrogate"
    else:
        kind = "a noncharacter"
    return f"U+{code:04X} ({kind})"


def _unprintable(text: str, file: str) -> list[Diagnostic]:
    """An error at the ``file:line:col`` of each character :data:`_UNPRINTABLE` finds
    (lines end at newlines, as an editor counts them), the first :data:`MAX_ERRORS`."""
    found: list[Diagnostic] = []
    for match in _UNPRINTABLE.finditer(text):
        if len(found) == MAX_ERRORS:
            break
        start = match.start()
        line = text.count("\n", 0, start) + 1
        col = start - (text.rfind("\n", 0, start) + 1) + 1
        found.append(Diagnostic(file, line, col, "error", f"the character "
                                f"{character_name(match.group()[0])} cannot be in a .cell "
                                "file; a cell's text is printable characters, tabs and line "
                                "ends"))
    return found


def parse(text: str, file: str = "<string>", default_name: str = "cell") -> ParseResult:
    """Parse ``.cell`` text into a graph and the diagnostics found on the way.

    The graph holds every assignment that lowered cleanly; when the
    diagnostics contain errors it is incomplete and must not be executed.

    >>> found = parse("input x\\nstate h\\noutput h\\nh = tanh(linear(x, h[t-1]))")
    >>> list(found.graph.nodes), found.diagnostics
    (['x', 'h[t-1]', 'h.linear', 'h'], [])
    """
    if len(text) > MAX_CELL_BYTES:
        return _too_large(file, default_name, TOO_LARGE)
    unprintable = _unprintable(text, file)
    if unprintable:
        return ParseResult(CellGraph(default_name, file, {}, {}, {}, {}, {}), unprintable, set(),
                           refused=True)
    parser = _Parser(text, file, default_name)
    if not text.strip():
        parser.report.error(Loc(1, 1), "empty cell file; a cell needs the header lines "
                            "'input', 'state' and 'output' and at least one assignment")
        return ParseResult(CellGraph(default_name, file, {}, {}, {}, {}, {}),
                           parser.report.items, set(), refused=True)
    parser.split()
    # a name is one line: neither the tab nor the line end a text may hold
    bad_name = None if parser.name else _UNPRINTABLE.search(default_name) or \
        re.search(r"[\t\n\r]", default_name)
    if bad_name:
        return _too_large(file, default_name, f"the cell's name, from the file's name, holds "
                          f"the character {character_name(bad_name.group()[0])}; rename the "
                          "file, or name the cell with a header line: cell NAME")
    assignments = [stmt for stmt in parser.statements if _ASSIGNMENT.match(stmt.lines[0])]
    if len(assignments) > MAX_ASSIGNMENTS:
        return _too_large(file, default_name, f"{len(assignments):,} assignments: more than "
                          f"the {MAX_ASSIGNMENTS:,} a cell may hold; split it into smaller "
                          "cells")
    operations = sum(len(_OPERATION.findall(_INDEX.sub("", line)))
                     for stmt in assignments for line in stmt.lines)
    if operations > MAX_NODES:
        return _too_large(file, default_name, f"{operations:,} operations (operators, calls "
                          f"and numbers): more than the {MAX_NODES:,} a cell may hold; split "
                          "it into smaller cells")
    operands = sum(line.count(",") for stmt in assignments for line in stmt.lines)
    if operands > MAX_NODES:  # 600,000 of one linear(...) took 12 s and 742 MB to refuse
        return _too_large(file, default_name, f"{operands:,} operands after the first of "
                          f"calls: more than the {MAX_NODES:,} a cell may hold; split it "
                          "into smaller cells")
    statements = parser.parse_statements()
    decls = parser.decls
    assigned: dict[str, Loc] = {}
    for target, loc, _expr, _stmt in statements:
        if target in assigned:
            parser.report.error(loc, f"'{target}' is assigned twice (first on line "
                                f"{assigned[target].line}); each name is assigned once")
        elif target in decls["input"]:
            parser.report.error(loc, f"'{target}' is an input and cannot be assigned")
        elif target in RESERVED:
            parser.report.error(loc, f"'{target}' is reserved (a function, 't' or a header "
                                "keyword); choose another name")
        else:
            assigned[target] = loc
    lowering = _Lowering(parser, set(assigned) | parser.broken_targets)
    for index, (target, loc, expr, stmt) in enumerate(statements):
        if parser.report.full:
            break
        if len(lowering.nodes) > MAX_NODES:
            parser.report.error(Loc(1, 1), f"more than {MAX_NODES:,} operations and values "
                                f"(reached on line {loc.line}): more than a cell may hold; "
                                "split it into smaller cells")
            break
        if assigned.get(target) == loc:
            lowering.assignment(target, loc, expr, stmt, index)
    parser.report.summarize(len(parser.physical))
    name = parser.name[0] if parser.name else default_name
    graph = CellGraph(name, file, decls["input"], decls["state"], decls["output"],
                      lowering.assignments, lowering.nodes, parser.presets, parser.gates)
    return ParseResult(graph, parser.report.items, parser.broken_targets | set(assigned),
                       lowering.broken, headers=frozenset(parser.decl_lines))
