"""A PyTorch cell module as a ``.cell`` file and its weights (``lstm-graph from-torch``).

``convert(Path("fast.py"), "LSTMCell", 3, 4, ["h", "c"], state_dict=Path("sd.pt"))``
loads and traces the module (:mod:`.torch_fx`), writes what one step computes as a cell
(:mod:`.cell_writer`), and checks the result: the cell, run by lstm-graph over a seeded
sequence, must give what the module gives stepped over the same sequence from zero
states (in float64, to 1e-9 relative; for a module of another dtype, to 16 of its
epsilons, the rounding of weights it computes from its parameters), or nothing is
written. A module that cannot become a cell is refused with the op, the line of its
forward, and what is supported (:class:`~lstm_graph.frontends.torch_fx.ConvertError`).
"""

from __future__ import annotations

import ast
import contextlib
import copy
import inspect
import re
import sys
import textwrap
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lstm_graph.errors import LstmGraphWarning, inert, printable
from lstm_graph.formats.memory import Allocation, require
from lstm_graph.frontends import cell_writer, torch_fx
from lstm_graph.frontends.torch_fx import ConvertError
from lstm_graph.language.parser import RESERVED, name_problem

#: Steps and sequences of the check against the module.
CHECK_STEPS, CHECK_BATCH = 5, 3
#: The check's tolerance, relative to 1 + |value|, for a float64 module: float64 on
#: both sides. A module of another dtype computes the weights it derives from its
#: parameters (``torch.exp(self.log_scale)``) in that dtype, as the cell then holds them:
#: :data:`ROUNDINGS` of its epsilon.
TOLERANCE = 1e-9
ROUNDINGS = 16
#: The check's tolerance for the gradients of a float64 module: PyTorch takes some back in
#: float32 numbers (hardsigmoid's 1/6: 5e-9 off at T = 7); what changes a gradient that a
#: cell cannot say is off by far more (a hook halving one: 0.07 to 1.2).
GRADIENT_TOLERANCE = 1e-6
#: The gradient check's training step (Adam's first, at this rate: each weight moved by
#: the rate against its gradient's sign), and how far apart the module's outputs and the
#: cell's may end, relative to how far the step moved them, for the cell to train as the
#: module does: rounding leaves them 1e-16 apart, two biases added into one a quarter of
#: it (:func:`_gradient_check`) ...
TRAINING_STEP = 1e-3
TRAINING_TOLERANCE = 1e-6
#: ... and apart by more than this, relative to the outputs' size (a step that barely
#: moves them leaves both rounding apart).
TRAINING_ROUNDING = 1e-12
#: Adam's epsilon, relative to the largest gradient: a gradient this much smaller (a
#: rounding of zero) moves its weight by almost nothing, as in Adam.
TRAINING_EPSILON = 1e-8


@dataclass
class Converted:
    """A converted cell: its ``.cell`` text, weights in its names, and what was checked."""

    text: str
    weights: dict[str, np.ndarray]
    cell: Any  # lstm_graph.cell.Cell
    error: float  # the check's largest difference from the module


def parse_source(spec: str) -> tuple[Path, str]:
    """``FILE.py:CLASS`` split (a ConvertError saying how to write it otherwise)."""
    path, colon, name = spec.rpartition(":")
    if not colon or not path or not name.isidentifier():
        raise ConvertError(f"'{spec}': give the module as FILE.py:CLASS (e.g. "
                           "cells.py:LSTMCell)")
    return Path(path), name


def check_states(states: Sequence[str]) -> list[str]:
    """State names for the cell: identifiers, distinct, not the language's own words."""
    names = [s.strip() for s in states]
    if not any(names):
        raise ConvertError("--states names no state; give the states the forward's state "
                           "holds, in order (e.g. h,c)")
    if not all(names):  # "h,,c": a name left out (an unset shell variable?)
        raise ConvertError(f"--states {','.join(states)!r} has an empty name; give the "
                           "states the forward's state holds, in order (e.g. h,c)")
    for name in names:
        problem = name_problem(name)
        if problem:
            raise ConvertError(f"--states: {problem}")
        if name in RESERVED:
            raise ConvertError(f"--states: '{name}' cannot name a state (a keyword of the "
                               ".cell language)")
        if name == "y":
            raise ConvertError("--states: 'y' cannot name a state: run writes the output "
                               "sequence as y (give the state another name, as h)")
    if len(set(names)) != len(names):
        raise ConvertError(f"--states names a state twice: {', '.join(names)}")
    return names


def cell_name(out: Path | None, class_name: str) -> str:
    """The ``cell`` line's name: the output file's stem, else the class in snake case."""
    if out is not None and out.stem.isidentifier() and out.stem not in RESERVED:
        return out.stem
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", class_name).lower()


def convert(path: Path, class_name: str, input_size: int, hidden_size: int,
            states: Sequence[str], state_dict: Path | None = None, out: Path | None = None,
            seed: int = 0) -> Converted:
    """The cell ``CLASS(input_size, hidden_size)`` of ``path`` computes (see the module
    docstring); without ``state_dict``, with the class's own initialisation drawn with
    ``seed``."""
    states = check_states(states)
    if not 0 <= seed < 2**64:  # what torch.manual_seed takes
        raise ConvertError(f"seed {seed} is not a whole number from 0 to 2**64 - 1")
    with _running_user_code(path):
        return _convert(path, class_name, input_size, hidden_size, states, state_dict, out,
                        seed)


@contextlib.contextmanager
def _running_user_code(path: Path) -> Iterator[None]:
    """While FILE.py's code runs (its import, its constructor, its forward): ``sys.argv``
    as ``python FILE.py`` has it (a module-level argparse read lstm-graph's options and
    ended the command with its own usage error), the code's prints on stderr (stdout
    holds what lstm-graph writes, ``--json``), ``sys.exit()`` a refusal at its line
    (the command ended with its status and without a word), and the caller's gradient
    and inference modes as they were after it (a ``torch.set_grad_enabled(False)`` at its
    top held on). It runs out of inference mode, the caller's included: a module made in
    it has parameters autograd cannot take back, and the gradient check was skipped."""
    import torch

    argv, grad = sys.argv, torch.is_grad_enabled()
    sys.argv = [str(path)]
    try:  # the guard's exit restores both modes as they were (an entered one inside too)
        with contextlib.redirect_stdout(sys.stderr), torch.inference_mode(False):
            yield
    except SystemExit as err:
        found = torch_fx._located({str(path.resolve())}, err, f"running {path.name}'s code")
        head, cut, tail = str(found).partition("\n")
        raise ConvertError(f"{head} (it would have ended the command: nothing was written)"
                           f"{cut}{tail}") from None
    finally:
        sys.argv = argv
        torch.set_grad_enabled(grad)  # FILE.py's torch.set_grad_enabled(False) stays its own


def _convert(path: Path, class_name: str, input_size: int, hidden_size: int,
             states: list[str], state_dict: Path | None, out: Path | None, seed: int
             ) -> Converted:
    """:func:`convert`, its arguments checked, FILE.py's code run as
    :func:`_running_user_code` says."""
    import torch

    cls = torch_fx.load_class(path, class_name)
    module = torch_fx.make_module(cls, path, input_size, hidden_size, state_dict, seed)
    _require_room(module, class_name)
    training = _reads_training(module)
    if training:
        warnings.warn(f"{', '.join(training)} reads self.training: {class_name} is "
                      "converted in eval mode, as it runs for inference; what it does while "
                      "training is not in the cell", LstmGraphWarning, stacklevel=3)
    _refuse_hooks(module, class_name)
    before, tensors = _attributes(module), _tensors(module)
    traced = torch_fx.trace(module, path, states)
    _refuse_changed_attributes(before, _attributes(module), class_name)
    step = torch_fx.interpret(traced, states, input_size, hidden_size)
    # after the interpreter too: it runs what the trace saw as proxies (self.k.add_(1))
    _refuse_changed_tensors(tensors, _tensors(module), class_name)
    given = torch_fx.forward_input_name(cls)
    input_name = given if given and given.isidentifier() and given not in RESERVED \
        and given not in states else next(name for name in ("x", "x_t", *(
            f"x_{k}" for k in range(len(states) + 1))) if name not in states)
    dtype = _module_dtype(module)
    weights_from = f"the state dict {state_dict.name}" if state_dict is not None else \
        f"{class_name}'s own initialisation, seed {seed}"
    header = textwrap.wrap(inert(
        f"{class_name} of {path.name}, converted by lstm-graph from-torch (torch.fx) with "
        f"input size {input_size} and hidden size {hidden_size}. Its weights ({weights_from}) "
        "are in lstm-graph's names; each caption says which line of the forward made the "
        "value."), 88, break_on_hyphens=False)
    name = cell_name(out, class_name)
    written = cell_writer.write(step, name, input_name, states, hidden_size, header,
                                str(out) if out is not None else f"{name}.cell", dtype)
    with torch.inference_mode(False):  # FILE.py's code may have entered it
        error = check(written, module, states, input_size, hidden_size, step.causes)
    return Converted(written.text, written.weights, written.cell, error)


#: The most memory a conversion takes beside the module, in float64 copies of its
#: parameters and buffers (the snapshot that tells a changed tensor, the interpreter's
#: weights, the weights written, the float64 module and the runner it is checked
#: against): 5.8 and 6.7 measured, an nn.Linear(I + H, H) at H = 3,000 and 1,500.
COPIES = 7


def _require_room(module: Any, class_name: str) -> None:
    """Refuse, before tracing, a module whose conversion would not fit in memory (a
    hidden size of 40,000 was killed after two minutes, at 23 GB)."""
    numbers = sum(int(tensor.numel()) for tensor in (*module.parameters(), *module.buffers()))
    require([Allocation(f"{class_name}'s parameters and buffers, the {COPIES} float64 "
                        "copies a conversion holds", (COPIES, numbers), 8)], "this conversion")


#: Why a hook on the gradients is refused (the end of its message).
_NOT_SAID = (", and a cell's equations cannot say so (lstm-graph differentiates every value, "
             "as a training step would): remove it, or convert the module without it")


def _refuse_hooks(module: Any, class_name: str) -> None:
    """Refuse a module with forward hooks: torch.fx traces ``forward`` alone, so what a
    hook changes (an output doubled, the weights recomputed by the old
    ``torch.nn.utils.weight_norm`` and ``spectral_norm``) is not in the cell; the check
    against the module then failed as a bug of ours. Refuse backward hooks, of a module or
    of a parameter's gradient, too: the forward is the same, the check passes, and the
    cell's gradients would not be the module's."""
    import torch

    for name, sub in module.named_modules():
        for kind, hooks in (("forward pre-hook", sub._forward_pre_hooks),
                            ("forward hook", sub._forward_hooks)):
            for hook in hooks.values():
                what = type(hook).__name__
                where = f"{class_name}.{name}" if name else class_name
                if what in ("WeightNorm", "SpectralNorm"):
                    norm = "weight_norm" if what == "WeightNorm" else "spectral_norm"
                    raise ConvertError(
                        f"{where} has the weights of torch.nn.utils.{norm}, recomputed by a "
                        f"{kind} that torch.fx does not trace; fold them into plain weights "
                        f"first (torch.nn.utils.remove_{norm}), then save the state dict")
                raise ConvertError(
                    f"{where} has a {kind} ({printable(getattr(hook, '__name__', what))}), "
                    "which torch.fx does not trace, so the cell would not compute what the "
                    "module does; remove it, or write what it does in forward")
        for kind, hooks in (("backward pre-hook", sub._backward_pre_hooks),
                            ("backward hook", sub._backward_hooks)):
            if hooks:
                where = f"{class_name}.{name}" if name else class_name
                raise ConvertError(f"{where} has a {kind}, which changes the gradients it "
                                   f"passes back{_NOT_SAID}")
    for name, tensor in (*module.named_parameters(), *module.named_buffers()):
        if tensor._backward_hooks or getattr(tensor, "_post_accumulate_grad_hooks", None):
            raise ConvertError(f"{class_name}.{name} has a gradient hook (register_hook), "
                               f"which changes its gradient{_NOT_SAID}")
    module_hooks = torch.nn.modules.module
    global_hooks = [(kind, way) for kind, way, hooks in (
        ("forward pre-hook", "forward_pre", module_hooks._global_forward_pre_hooks),
        ("forward hook", "forward", module_hooks._global_forward_hooks),
        ("backward pre-hook", "full_backward_pre", module_hooks._global_backward_pre_hooks),
        ("backward hook", "full_backward", module_hooks._global_backward_hooks)) if hooks]
    if global_hooks:
        kind, way = global_hooks[0]
        raise ConvertError(f"a global {kind} is registered (torch.nn.modules.module."
                           f"register_module_{way}_hook), which torch.fx does not trace; "
                           "remove it before converting")


def _attributes(module: Any) -> dict[str, str]:
    """What a module and its submodules keep besides their parameters, buffers and
    submodules (which torch.nn.Module holds in attributes of its own), each as its repr:
    a changed number, flag, list, dict or NumPy value reads differently."""
    import torch

    internal = set(vars(torch.nn.Module()))
    return {f"{name}.{key}" if name else key: _shown(value)
            for name, sub in module.named_modules() for key, value in vars(sub).items()
            if key not in internal and not isinstance(value, (torch.Tensor, torch.nn.Module))}


def _shown(value: Any) -> str:
    """``repr(value)``, or its type's name where its repr fails (the user's class)."""
    try:
        return repr(value)
    except Exception:  # noqa: BLE001  (any error of the user's __repr__)
        return f"<{type(value).__name__}>"


def _refuse_changed_attributes(before: dict[str, str], after: dict[str, str],
                               class_name: str) -> None:
    """Refuse a forward that changed the module's own attributes when it was traced (a
    call counter): each step would then compute another thing, which no cell does."""
    for key in sorted(before.keys() | after.keys()):
        if before.get(key) != after.get(key):
            raise ConvertError(f"{class_name}.forward changes the module's attribute '{key}' "
                               f"({before.get(key, '(none)')} -> {after.get(key, '(none)')}): "
                               "a cell's step reads only its input and its states, so a "
                               "module that keeps anything else between steps cannot be one")


def _tensors(module: Any) -> dict[str, tuple[str, Any]]:
    """A copy of each parameter and buffer of the module, with its kind."""
    return {**{name: ("parameter", p.detach().clone()) for name, p in module.named_parameters()},
            **{name: ("buffer", b.detach().clone()) for name, b in module.named_buffers()}}


def _refuse_changed_tensors(before: dict[str, tuple[str, Any]],
                            after: dict[str, tuple[str, Any]], class_name: str) -> None:
    """Refuse a forward that changed a parameter or buffer when it was traced (a step
    counter in a buffer, ``self.calls.add_(1)``): as for any other attribute, each step
    would compute another thing."""
    for name in sorted(before.keys() | after.keys()):
        kind = (before.get(name) or after[name])[0]
        old, new = before.get(name, (kind, None))[1], after.get(name, (kind, None))[1]
        if old is not None and new is not None and old.shape == new.shape and \
                old.dtype == new.dtype and bool(((old == new) | (old != old) & (new != new))
                                                .all()):
            continue
        shown = f" ({_shown_tensor(old)} -> {_shown_tensor(new)})"
        raise ConvertError(f"{class_name}.forward changes the module's {kind} '{name}'"
                           f"{shown}: a cell's step reads only its input and its states, "
                           "so a module that keeps anything else between steps cannot be one")


def _shown_tensor(value: Any) -> str:
    """A tensor's values where it has few, else its shape."""
    if value is None:
        return "(none)"
    if value.numel() <= 4:
        return str(value.flatten().tolist())
    return f"a tensor of shape {tuple(value.shape)}"


def _augmented_assignments(module: Any) -> list[str]:
    """``file:line`` of each augmented assignment (``z += v``) in the ``forward`` of the
    module's classes and its submodules' (where their source can be read)."""
    return [place for _, place in _in_forwards(
        module, lambda node: isinstance(node, ast.AugAssign))]


def _reads_training(module: Any) -> list[str]:
    """``Class.forward (file:line)`` of each ``self.training`` the forwards read: what
    they do while training is not in a cell converted in eval mode."""
    return [f"{name}.forward ({place})" for name, place in _in_forwards(
        module, lambda node: isinstance(node, ast.Attribute) and node.attr == "training"
        and isinstance(node.value, ast.Name) and node.value.id == "self")]


def _in_forwards(module: Any, wanted: Callable[[ast.AST], bool]) -> list[tuple[str, str]]:
    """The class and place of each syntax node ``wanted`` picks in the ``forward`` of the
    module's classes and its submodules' (where their source can be read): ``file:line``
    in the user's code; a class of PyTorch's own is named ``nn.Dropout`` at the submodule
    that is one (``self.drop``), not at a line of PyTorch's files."""
    found: set[tuple[int, str, str]] = set()  # the line first: file order
    for cls in dict.fromkeys(type(sub) for sub in module.modules()):
        forward = cls.__dict__.get("forward")
        if forward is None:
            continue
        try:
            lines, first = inspect.getsourcelines(forward)
            path = Path(inspect.getfile(forward))
            tree = ast.parse(path.read_text(encoding="utf-8"))  # the whole file: it parses
        except (TypeError, OSError, SyntaxError, ValueError):
            continue
        at = [getattr(node, "lineno", 0) for node in ast.walk(tree)
              if wanted(node) and first <= getattr(node, "lineno", 0) < first + len(lines)]
        if at and cls.__module__.startswith("torch."):
            name = next(n for n, sub in module.named_modules() if type(sub) is cls)
            found.add((0, f"nn.{cls.__name__}", f"self.{name}" if name else "self"))
        else:
            found.update((line, cls.__name__, f"{path.name}:{line}") for line in at)
    return [(name, place) for _, name, place in sorted(found)]


def _module_dtype(module: Any) -> np.dtype:
    parameter = next(module.parameters(), None)
    if parameter is None or not parameter.is_floating_point():
        return np.dtype(np.float32)
    name = str(parameter.dtype).removeprefix("torch.")
    try:
        return np.dtype(name)
    except TypeError:
        raise ConvertError(f"{type(module).__name__}'s parameters are {name}, which NumPy has "
                           "no type for; convert the module first (module.float())") from None


def step_module(module: Any, x: np.ndarray, states: Sequence[str], hidden_size: int
                ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The module stepped over ``x`` (T, B, I) from zero states: ``y`` and the final
    states, as lstm-graph's ``run`` gives them."""
    import torch

    dtype = next(module.parameters(), torch.empty(0, dtype=torch.float64)).dtype
    batch = x.shape[1]
    values = [torch.zeros(batch, hidden_size, dtype=dtype) for _ in states]
    outs = []
    with torch.no_grad():
        for t in range(x.shape[0]):
            state: Any = values[0] if len(values) == 1 else tuple(values)
            out, new = module(torch.from_numpy(x[t].copy()).to(dtype), state)
            values = list(new) if isinstance(new, (tuple, list)) else [new]
            # a copy: the next step may change this tensor in place (h += ...)
            outs.append(out.detach().cpu().numpy().copy())
    return np.stack(outs), {s: v.detach().cpu().numpy().copy() for s, v in zip(states, values)}


def _float64_copy(module: Any) -> Any:
    """A float64 copy of ``module``, to check the cell against; an error naming why where
    it cannot be copied (a tensor made from a parameter kept as an attribute, a lock)."""
    try:
        return copy.deepcopy(module).double()
    except Exception as err:  # noqa: BLE001  (whatever the user's attributes raise)
        raise ConvertError(
            f"{type(module).__name__} cannot be copied to check the cell against it in "
            f"float64 (copy.deepcopy: {printable(str(err)).splitlines()[0]}): keep no "
            "tensor computed from a parameter (self.k = self.p * 2: compute it in forward), "
            "lock or open file as an attribute") from None


#: What PyTorch says where tensors of two dtypes meet (float32 made in forward, float64
#: parameters): "expected m1 and m2 to have the same dtype …", "expected scalar type
#: Double but found Float", "Found dtype Double but expected Float", "heaviside is not yet
#: implemented for tensors with different dtypes".
DTYPE_CLASH = re.compile(r"same dtype|scalar type|Found dtype|different dtypes")


def check(written: cell_writer.Written, module: Any, states: Sequence[str], input_size: int,
          hidden_size: int, causes: Sequence[str] = ()) -> float:
    """The largest difference (relative to 1 + |value|) between the converted cell and
    the module, stepped over a seeded sequence in float64; a ConvertError past the
    tolerance of the module's dtype (:data:`TOLERANCE`, :data:`ROUNDINGS`: a bug of ours,
    nothing is written)."""
    x = np.random.default_rng(0).standard_normal((CHECK_STEPS, CHECK_BATCH, input_size))
    double = _float64_copy(module)
    try:
        want_y, want = step_module(double, x, states, hidden_size)
    except Exception as err:  # noqa: BLE001  (whatever the user's forward raises)
        said = printable(str(err)).splitlines()[0] if str(err).strip() else ""
        if isinstance(err, RuntimeError) and DTYPE_CLASH.search(said):
            raise ConvertError(  # a tensor the forward makes in float32 meets float64 ones
                f"{type(module).__name__} cannot be checked in float64 ({said}): a tensor "
                "its forward makes without a dtype (torch.eye(H)) stays float32; give it "
                "dtype=x.dtype") from None
        raise ConvertError(
            f"{type(module).__name__}.forward, called as itself to check the converted cell "
            f"(in float64, from zero states), raised {type(err).__name__}"
            f"{': ' + said if said else ''}; torch.fx traced it, but the module does not "
            "run as traced; nothing was written") from None
    runner = written.cell.compile(weights=written.exact, dtype="float64", hidden_size=hidden_size,
                                  input_size=input_size, executor="reference")
    got_y, got = runner(x)
    error = 0.0
    for what, a, b in [("the output", got_y, want_y),
                       *((f"state '{s}'", got[s], want[s]) for s in states)]:
        if a.shape != b.shape:
            raise ConvertError(f"the converted cell's {what} has shape {a.shape}, the "
                               f"module's {b.shape}; nothing was written (a bug in "
                               "from-torch: please report it)")
        error = max(error, float(np.max(np.abs(a - b) / (1 + np.abs(b)), initial=0.0)))
    dtype = _module_dtype(module)
    tolerance = TOLERANCE if dtype == np.float64 else ROUNDINGS * float(np.finfo(dtype).eps)
    if not error <= tolerance:
        again_y, _ = step_module(_float64_copy(module), x, states, hidden_size)
        if not np.array_equal(again_y, want_y, equal_nan=True):
            raise ConvertError(
                f"{type(module).__name__}.forward gives other outputs for the same input and "
                f"states from one call to the next (up to "
                f"{float(np.nanmax(np.abs(again_y - want_y))):.3g} apart over {CHECK_STEPS} "
                "steps): random numbers (torch.randn, dropout in training mode), or a global "
                "it reads and changes; a cell's step is a function of its input and states")
        augmented = _augmented_assignments(module)
        if augmented:
            raise ConvertError(
                f"the converted cell differs from the module by {error:.3g} over "
                f"{CHECK_STEPS} steps, and the forward has augmented assignments "
                f"({', '.join(augmented)}): torch.fx traces 'z += v' as 'z = z + v', but on a "
                "tensor the module changes the tensor itself, and with it every other name "
                "that holds it (a = z); where that is the difference, write 'z = z + v'; "
                "nothing was written")
        raise ConvertError(f"the converted cell differs from the module by {error:.3g} over "
                           f"{CHECK_STEPS} steps; nothing was written (a bug in from-torch: "
                           f"please report it, with the module)\n--- the cell ---\n"
                           f"{written.text}")
    gradients = _gradient_check(double, written, runner, x, states, input_size, hidden_size)
    if gradients is not None and not gradients.error <= max(tolerance, GRADIENT_TOLERANCE):
        raise ConvertError(
            f"the converted cell computes what {type(module).__name__} does, but its "
            f"gradients differ from autograd's through the module by {gradients.error:.3g} "
            f"over {CHECK_STEPS} steps: the module's backward is not the derivative of its "
            "forward (a hook or a function that changes gradients, which the trace does not "
            "show), and a cell's equations cannot say so (lstm-graph differentiates every "
            "value, as a training step would); nothing was written")
    if gradients is not None and gradients.apart > max(
            TRAINING_TOLERANCE * gradients.moved, TRAINING_ROUNDING * (1 + gradients.size)):
        if written.zero_biases:
            causes = (*causes, f"a bias of zeros, which the cell's linears have and the "
                      f"module's do not ({', '.join(dict.fromkeys(written.zero_biases))})")
        said = f"; here: {'; '.join(causes)}" if causes else (
            " (two biases added into one, b_ih + b_hh, a weight computed from parameters, "
            "W + W.t() or exp(v), a tied weight, or one the module keeps fixed, a buffer)")
        warnings.warn(
            f"training the cell is not training {type(module).__name__}: Adam's first step "
            f"from these weights (rate {TRAINING_STEP:g}), the same for both, leaves their "
            f"outputs {gradients.apart:.2g} apart (the step moved the module's by "
            f"{gradients.moved:.2g})."
            " The cell trains each of its weights on its own, and some are not a piece of "
            f"one parameter, used once{said}. Its forward and gradients are the module's",
            LstmGraphWarning, stacklevel=4)
    return error


@dataclass
class _Gradients:
    """What the gradient check measured."""

    error: float  # the gradients of x and of the initial states, module against cell
    apart: float  # the outputs after one training step of each (absolute)
    moved: float  # how far that step moved the module's outputs (absolute)
    size: float  # the largest output before it


def _gradient_check(double: Any, written: cell_writer.Written, runner: Any, x: np.ndarray,
                    states: Sequence[str], input_size: int, hidden_size: int
                    ) -> _Gradients | None:
    """The module's gradients against the cell's, for seeded gradients of ``y`` and
    non-zero initial states, in float64; None where autograd cannot differentiate the
    module (its backward raised): nothing to compare.

    Those of ``x`` and of the initial states are compared with the cell's backward.
    Those of the parameters cannot be compared one by one (the cell's weights are not
    the module's tensors: two biases become one, a tied weight two), and a central
    difference of the module's loss, the one independent measure of them, had rounding
    noise of 1e-5 at large sizes and refused exact cells (an LSTM at H = 1024, an output
    of ``h + 10000``). What they decide is compared instead: one training step, the same
    for both, of the module by autograd and of the cell's weights by its backward, then
    the outputs of each over the same sequence. The step is Adam's first (``train``'s
    optimiser): each weight moves by :data:`TRAINING_STEP` against its gradient's sign,
    however small the gradient, so a weight the module keeps fixed and the cell trains
    is seen where its gradient is small too (a peephole on a saturated gate: one step of
    plain gradient descent moved it 1e-7 as far as the rest)."""
    import torch

    rng = np.random.default_rng(1)
    start = {s: rng.standard_normal((x.shape[1], hidden_size)) * 0.5 for s in states}
    grad_y = torch.from_numpy(rng.standard_normal(runner(x, start)[0].shape))
    ours = runner.grad(x, grad_y.numpy(), state=start)
    given = torch.from_numpy(x).requires_grad_()
    initial = [torch.from_numpy(start[s]).requires_grad_() for s in states]

    def outputs(inputs: Any, first: list[Any]) -> Any:
        values: list[Any] = list(first)
        outs = []
        for t in range(x.shape[0]):
            out, new = double(inputs[t], values[0] if len(values) == 1 else tuple(values))
            values = list(new) if isinstance(new, (tuple, list)) else [new]
            outs.append(out)
        return torch.stack(outs)

    try:
        with torch.inference_mode(False), torch.enable_grad():
            (outputs(given, initial) * grad_y).sum().backward()
    except Exception:  # noqa: BLE001  (the user's module: autograd cannot take it back)
        return None
    pairs = [(ours.x, given.grad), *((ours.state[s], v.grad) for s, v in zip(states, initial))]
    error = max(float(np.max(np.abs(a - b.numpy()) / (1 + np.abs(b.numpy())), initial=0.0))
                if b is not None else float(np.max(np.abs(a), initial=0.0)) for a, b in pairs)
    trained = [p for p in double.parameters() if p.requires_grad and p.grad is not None]
    largest = max([float(p.grad.abs().max()) for p in trained] +
                  [float(np.max(np.abs(g), initial=0.0)) for g in ours.weights.values()],
                  default=0.0)  # a cell of no weights, a module of no parameters
    epsilon = TRAINING_EPSILON * largest or 1.0

    def step(gradient: np.ndarray) -> np.ndarray:
        moved: np.ndarray = np.asarray(TRAINING_STEP * gradient / (np.abs(gradient) + epsilon))
        return moved  # an array for a parameter of shape () too

    with torch.no_grad():
        before = outputs(given.detach(), [v.detach() for v in initial]).numpy()
        for p in trained:
            p.sub_(torch.from_numpy(step(p.grad.numpy())))
        module = outputs(given.detach(), [v.detach() for v in initial]).numpy()
    stepped = {name: w - step(ours.weights[name]) if name in ours.weights else w
               for name, w in written.exact.items()}
    cell = written.cell.compile(weights=stepped, dtype="float64", hidden_size=hidden_size,
                                input_size=input_size, executor="reference")(x, start)[0]
    return _Gradients(error, float(np.max(np.abs(cell - module), initial=0.0)),
                      float(np.max(np.abs(module - before), initial=0.0)),
                      float(np.max(np.abs(before), initial=0.0)))
