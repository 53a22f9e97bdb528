"""Which of a module's parameters and buffers each weight of a converted cell holds.

The interpreter (:mod:`.torch_fx`) evaluates what depends only on the module's tensors
with PyTorch itself, and the tensors it gets become the cell's weights: copies, each
of which lstm-graph trains. Where one came from decides whether the cell trains what
the module trains, which the forward check cannot see (the numbers are the same):

- a parameter read through ``.detach()`` or ``.data`` gets no gradient through that
  use in the module, and one in the cell: the interpreter refuses it
  (:meth:`Provenance.learned`);
- a buffer, or a tensor the forward makes, is fixed in the module and trained in the
  cell; a parameter used in two places (tied) is one tensor in the module and two
  copies in the cell; a parameter of one number that acts on every unit
  (``h * self.s``, ``s`` of shape (1,)) is one number in the module and one per unit
  in the cell: training moves the copies apart. These are warned of
  (:meth:`Provenance.warnings`).

A tensor is known by its identity (the interpreter holds every value it made until the
walk ends, so an identity stays its tensor's); a piece cut from one (``W.chunk(4)``,
``W[:H]``) is its source with the cut, so the four gates of one matrix are four uses of
four pieces, not four uses of one. torch.fx evaluates what the forward does to a buffer
while tracing (``self.R.t()`` is a constant of the trace): a view of one is known by its
storage.
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
        names: dict[int, list[str]] = {}
        kinds: dict[int, str] = {}
        for name, p in module.named_parameters(remove_duplicate=False):
            names.setdefault(id(p), []).append(name.removeprefix(prefix))
            kinds[id(p)] = "parameter" if p.requires_grad else "frozen parameter"
        for name, b in module.named_buffers(remove_duplicate=False):
            names.setdefault(id(b), []).append(name.removeprefix(prefix))
            kinds[id(b)] = "buffer"
        self.storages: dict[int, Source] = {}
        for key, found in names.items():
            self.of[key] = {Source(tuple(found), kinds[key]): ()}
        for _, b in module.named_buffers():
            if b.numel():
                self.storages[b.untyped_storage().data_ptr()] = next(iter(self.of[id(b)]))
        self.uses: dict[Piece, dict[str, str]] = {}  # piece -> {node: where}
        self.made: dict[str, str] = {}  # weights of no source: node -> where
        self.spread: dict[Source, set[str]] = {}  # one number held by every unit: wheres

    def sources(self, item: Any) -> dict[Source, tuple[str, ...]]:
        """The sources of every tensor in ``item`` (nested in tuples, lists and dicts)."""
        found: dict[Source, tuple[str, ...]] = {}
        for tensor in _tensors(item):
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

    def use(self, tensor: Any, node: str, where: str, spread: int | None = None) -> None:
        """``tensor`` becomes a weight of the cell at fx node ``node`` (line ``where``);
        ``spread`` is given where its one number becomes that many weights, one per unit."""
        found = self.of.get(id(tensor))
        if not found and tensor.numel():
            view = self.storages.get(tensor.untyped_storage().data_ptr())
            found = {view: ("a view",)} if view is not None else None
        if not found:
            self.made[node] = where
        for source, cut in (found or {}).items():
            self.uses.setdefault((source, cut), {})[node] = where
            if spread is not None and source.kind == "parameter":
                self.spread.setdefault(source, set()).add(where)

    def learned(self, item: Any) -> list[Source]:
        """The parameters the module trains among ``item``'s sources."""
        return [s for s in self.sources(item) if s.kind == "parameter"]

    def warnings(self, class_name: str) -> list[str]:
        """What the cell would train otherwise than the module does (see the module
        docstring), said once per kind."""
        said = []
        tied: dict[Source, set[str]] = {}
        fixed: dict[Source, set[str]] = {}
        for (source, _), at in self.uses.items():
            if len(at) > 1 and source.kind == "parameter":
                tied.setdefault(source, set()).update(at.values())
            if source.kind == "buffer":
                fixed.setdefault(source, set()).update(at.values())
        if self.spread:
            said.append(f"{class_name}'s {_listed(self.spread)} {_verb(self.spread)} one "
                        "number acting on every unit: the cell holds it as a weight per "
                        "unit, and lstm-graph train moves those apart, where the module "
                        "trains the one number (give it the shape (H,) to train one per "
                        "unit in both)")
        if tied:
            said.append(f"{class_name}'s {_listed(tied)} {_verb(tied)} used in more than one "
                        f"place of the forward: the cell's weights hold "
                        f"{'it' if len(tied) == 1 else 'each'} once for each use "
                        "(summed, where the uses add), and lstm-graph train moves those "
                        "apart, where the module trains the one tensor")
        what = [f"buffer{'s' if len(fixed) > 1 else ''} {_listed(fixed)}"] if fixed else []
        if self.made:
            made = sorted(set(self.made.values()))
            what.append(f"{'a tensor' if len(made) == 1 else 'tensors'} of no parameter "
                        f"({', '.join(made)})")
        if what:
            one = len(fixed) + len(self.made) == 1
            said.append(f"{class_name}'s {' and '.join(what)} "
                        f"{'is a weight' if one else 'are weights'} of the cell, which the "
                        "module does not train: every weight of a cell is trained, so "
                        "lstm-graph train moves what the module keeps fixed")
        return said


def _listed(found: dict[Source, set[str]]) -> str:
    return ", ".join(f"{source} ({', '.join(sorted(at))})"
                     for source, at in sorted(found.items(), key=lambda i: i[0].names))


def _verb(found: dict[Source, set[str]]) -> str:
    return "is" if len(found) == 1 else "are"


def _tensors(item: Any) -> Iterator[Any]:
    if isinstance(item, (tuple, list)):
        for part in item:
            yield from _tensors(part)
    elif isinstance(item, dict):
        for part in item.values():
            yield from _tensors(part)
    elif hasattr(item, "shape") and hasattr(item, "requires_grad"):
        yield item
