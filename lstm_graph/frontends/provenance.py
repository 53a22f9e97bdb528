"""Which of a module's parameters and buffers each weight of a converted cell holds.

The interpreter (:mod:`.torch_fx`) evaluates what depends only on the module's tensors
with PyTorch itself, and the tensors it gets become the cell's weights: copies, each
of which lstm-graph trains on its own. Where one came from decides whether training
the cell trains what the module trains, which the forward check cannot see (the
numbers are the same):

- a parameter read without its gradient (``.detach()``, ``.data``) gets none through
  that use in the module, and its copy, a weight of the cell, would be trained: the
  interpreter refuses it (``torch_fx._Interpreter._concrete``, from these sources);
- a buffer, a frozen parameter, a tensor of no parameter or one computed from
  parameters without their gradient (``(v > 0).float()``) is fixed in the module and
  trained in the cell, and a number the module learns is a constant of the cell; a
  parameter used in two places (tied) is one tensor in the module and two copies in
  the cell; a parameter of one number acting on every unit (``h * self.s``,
  ``s`` of shape (1,)) is one number in the module and one per unit in the cell.
  :meth:`Provenance.causes` names these, for the check that trains both one step
  (``from_torch.check``), which finds such differences, named here or not (two biases
  added into one, ``b_ih + b_hh``, happen in the values, not here).

A tensor is known by its identity (every tensor recorded is held until the walk ends,
so an identity stays its tensor's); a piece cut from one (``W.chunk(4)``, ``W[:H]``)
is its source with the cut, so the four gates of one matrix are four uses of four
pieces, not four uses of one. torch.fx evaluates what the forward does to a buffer
while tracing (``self.R.t()`` is a constant of the trace): a view of one is known by
its storage.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Source:
    """One tensor of the module, by the names it has there (``rec.weight``; a tied one
    has more than one)."""

    names: tuple[str, ...]
    kind: str  # "parameter", "frozen parameter" or "buffer"

    def __str__(self) -> str:
        also = f" (also {', '.join(self.names[1:])})" if len(self.names) > 1 else ""
        return f"{self.names[0]}{also}"


#: A source and the cuts that made a piece of it (empty: the whole tensor).
Piece = tuple[Source, tuple[str, ...]]


class Provenance:
    """The sources of every tensor the interpreter evaluates, and where each becomes a
    weight of the cell."""

    def __init__(self, module: Any, prefix: str = ""):
        self.of: dict[int, dict[Source, tuple[str, ...]]] = {}
        self.kept: list[Any] = []  # every tensor recorded, so that no other takes its id
        names: dict[int, list[str]] = {}
        kinds: dict[int, str] = {}
        for name, p in module.named_parameters(remove_duplicate=False):
            names.setdefault(id(p), []).append(name.removeprefix(prefix))
            kinds[id(p)] = "parameter" if p.requires_grad else "frozen parameter"
        for name, b in module.named_buffers(remove_duplicate=False):
            names.setdefault(id(b), []).append(name.removeprefix(prefix))
            kinds[id(b)] = "buffer"
        for key, found in names.items():
            self.of[key] = {Source(tuple(found), kinds[key]): ()}
        self.storages = {b.untyped_storage().data_ptr(): next(iter(self.of[id(b)]))
                         for b in module.buffers() if b.numel()}
        self.uses: dict[Piece, dict[str, str]] = {}  # piece -> {node: where}
        self.made: set[str] = set()  # where weights of no source are used
        self.spread: dict[Source, set[str]] = {}  # one number held by every unit: wheres
        self.gradless: set[str] = set()  # weights made of parameters, without their gradient
        self.constants: set[str] = set()  # numbers the module learns, written as constants

    def sources(self, item: Any) -> dict[Source, tuple[str, ...]]:
        """The sources of every tensor in ``item`` (nested in tuples, lists and dicts)."""
        found: dict[Source, tuple[str, ...]] = {}
        for tensor in tensors(item):
            for source, cut in self.of.get(id(tensor), {}).items():
                found.setdefault(source, cut)
        return found

    def record(self, result: Any, came: dict[Source, tuple[str, ...]], cut: str | None
               ) -> None:
        """``result`` was computed from tensors of sources ``came``; ``cut`` says how, where
        it is a piece of them (each item of a tuple its own piece)."""
        if not came:
            return
        items = list(result) if isinstance(result, (tuple, list)) else [result]
        for k, tensor in enumerate(items):
            if not hasattr(tensor, "shape") or id(tensor) in self.of:
                continue  # an item of a tuple, picked out: it is already known
            piece = (cut, str(k)) if cut is not None and len(items) > 1 else \
                (cut,) if cut is not None else ()
            self.of[id(tensor)] = {s: c + piece for s, c in came.items()}
            self.kept.append(tensor)

    def use(self, tensor: Any, node: str, where: str, spread: int | None = None) -> None:
        """``tensor`` becomes a weight of the cell at fx node ``node`` (line ``where``);
        ``spread`` is given where its one number becomes that many weights, one per unit."""
        found = self.of.get(id(tensor))
        if not found and tensor.numel():
            view = self.storages.get(tensor.untyped_storage().data_ptr())
            found = {view: ("a view",)} if view is not None else None
        if not found:
            self.made.add(where)
        elif not tensor.requires_grad and any(s.kind == "parameter" for s in found):
            self.gradless.add(where)  # (v > 0).float(): the module trains nothing through it
        for source, cut in (found or {}).items():
            self.uses.setdefault((source, cut), {})[node] = where
            if spread is not None and source.kind == "parameter":
                self.spread.setdefault(source, set()).add(where)

    def learned(self, item: Any) -> list[Source]:
        """The parameters the module trains among ``item``'s sources."""
        return [s for s in self.sources(item) if s.kind == "parameter"]

    def causes(self) -> tuple[str, ...]:
        """What makes the cell train otherwise than the module (see the module
        docstring), each said once, with its lines."""
        tied: dict[Source, set[str]] = {}
        fixed: dict[Source, set[str]] = {}
        for (source, _), at in self.uses.items():
            if len(at) > 1 and source.kind == "parameter":
                tied.setdefault(source, set()).update(at.values())
            if source.kind != "parameter":  # a buffer, a frozen parameter
                fixed.setdefault(source, set()).update(at.values())
        said = []
        if fixed:
            said.append(f"{_listed(fixed, kinds=True)}, which the module keeps fixed")
        if self.made:
            said.append(f"tensors of no parameter ({', '.join(sorted(self.made))}), which "
                        "the module keeps fixed")
        if self.gradless:
            said.append(f"weights computed from parameters without their gradient "
                        f"({', '.join(sorted(self.gradless))}: a comparison, a sign), which "
                        "the module does not train")
        if self.constants:
            said.append(f"numbers the module learns, written as constants "
                        f"({', '.join(sorted(self.constants))}), which the cell does not train")
        if tied:
            said.append(f"{_listed(tied)}, used in more than one place (one tensor in the "
                        "module, a weight for each use in the cell)")
        if self.spread:
            said.append(f"{_listed(self.spread)}, one number acting on every unit (a weight "
                        "per unit in the cell; give it the shape (H,) to have one per unit "
                        "in both)")
        return tuple(said)


def _listed(found: dict[Source, set[str]], kinds: bool = False) -> str:
    return ", ".join(f"{f'the {source.kind} ' if kinds else ''}{source} ({', '.join(sorted(at))})"
                     for source, at in sorted(found.items(), key=lambda i: i[0].names))


def tensors(item: Any) -> Iterator[Any]:
    """The tensors in ``item``, nested in tuples, lists and dicts."""
    if isinstance(item, (tuple, list)):
        for part in item:
            yield from tensors(part)
    elif isinstance(item, dict):
        for part in item.values():
            yield from tensors(part)
    elif hasattr(item, "shape") and hasattr(item, "requires_grad"):
        yield item
