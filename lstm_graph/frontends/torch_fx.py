"""A PyTorch cell module, traced with ``torch.fx``, as the values of one step.

``trace_cell`` loads ``FILE.py``, makes ``CLASS(input_size, hidden_size)`` (with a
state dict, if given), and traces its ``forward(x_t, state) -> (out, new_state)``
through a small wrapper whose ``forward(x, s1, s2, …)`` passes the states as the tuple
the cell unpacks (fx cannot unpack a traced tuple itself). Every fx node records the
line of the user's code that made it. :class:`_Interpreter` then gives each node its
value (:mod:`.values`): concrete where it depends only on parameters (evaluated with
PyTorch itself), symbolic where it depends on the step's input or states.

What it understands is listed in :data:`SUPPORTED`; anything else — a layer norm, a
reduction, a branch on a tensor's value, an op the op table lacks — is a
:class:`ConvertError` naming the op, the file and line of the forward, and what is
supported. Element-wise functions are recognised by the op table's ``torch_calls``
(``torch.sigmoid``, ``F.sigmoid``, ``Tensor.sigmoid``, ``nn.Sigmoid``, …), so a function
the table gains is converted without a change here.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.abc
import importlib.machinery
import inspect
import linecache
import operator
import os
import stat
import sys
import textwrap
import traceback
import types
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from lstm_graph.errors import LstmGraphError, LstmGraphWarning, install_hint, printable
from lstm_graph.formats import torch_layers
from lstm_graph.formats.files import others_may_replace
from lstm_graph.formats.memory import file_size
from lstm_graph.frontends.provenance import Provenance
from lstm_graph.frontends.provenance import tensors as provenance_tensors
from lstm_graph.frontends.values import (
    Affine,
    Apply,
    Cat,
    Input,
    Old,
    Value,
    Where,
    add_affine,
    affine,
    cut,
    of_input_size,
    scale_affine,
    with_bias,
)
from lstm_graph.ops import OPS, Op, OpKind, TorchCall

#: The meta key under which each traced node keeps where the user's code made it.
WHERE = "lstm_graph_where"

SUPPORTED = textwrap.fill(
    "from-torch converts: nn.Linear, F.linear, torch.mm / matmul / addmm / @ with a weight "
    "(x @ W.t()); torch.cat([x, h], 1) into a linear; chunk, split, narrow and [:, a:b] "
    "slices of a value's units; view(-1, W) and squeeze(); +, -, * with numbers, values and "
    "element-wise parameters (self.w * c), / by a number; dropout (eval mode) and "
    "identities; and the functions of the op table in their torch., F., method and nn. spellings: "
    + ", ".join(op.spelling for op in OPS.values() if op.torch_calls and op.function)
    + " (and clamp(v, -t, t) as clip).", 100)

#: Why the input cannot meet the states' values element-wise.
_WHY_INPUT_SIZE = ("in a cell the input x has a size of its own (I), even where it equals "
                   "the hidden size; give x to a linear first (self.lin(x))")

#: Why some common ops cannot be converted, by name.
_WHY = {
    **dict.fromkeys(("sum", "mean", "max", "min", "amax", "amin", "prod", "std", "var",
                     "norm", "logsumexp", "softmax", "log_softmax", "cumsum"),
                    "it reduces over the units of a value, and a cell's values are "
                    "element-wise across units"),
    **dict.fromkeys(("layer_norm", "LayerNorm", "batch_norm", "BatchNorm1d", "group_norm",
                     "GroupNorm", "normalize"),
                    "a normalisation reduces over the units of a value, which a cell's "
                    "element-wise equations cannot express"),
    **dict.fromkeys(("zeros", "ones", "zeros_like", "ones_like", "full", "empty", "randn",
                     "rand", "new_zeros", "new_ones", "new_full", "randn_like", "rand_like"),
                    "it makes a tensor from a shape; a cell's values come from x, the "
                    "states, parameters and numbers"),
    **dict.fromkeys(("view", "reshape", "flatten", "unsqueeze", "squeeze", "permute",
                     "transpose", "t", "T", "mT", "expand", "repeat", "stack", "unbind"),
                    "it changes a value's shape; a cell's values are (batch, units)"),
    **dict.fromkeys(("exp", "log", "sqrt", "pow", "abs", "sin", "cos", "reciprocal",
                     "rsqrt", "log1p", "expm1", "sign", "floor", "round"),
                    "the op table has no such element-wise function (it has the "
                    "activations of ONNX's recurrent operators)"),
    **dict.fromkeys(("LSTMCell", "GRUCell", "RNNCell", "LSTM", "GRU", "RNN"),
                    "a PyTorch recurrent module is a layer, not a cell's code: its state "
                    "dict runs as it is ('lstm-graph run lstm --weights sd.pt'; gru, rnn, "
                    "lstm_proj alike)"),
    **dict.fromkeys(("detach", "detach_", "requires_grad_"),
                    "it stops gradients, which a cell's equations cannot say (lstm-graph "
                    "differentiates every value, as a training step would): without it the "
                    "forward computes the same"),
    **dict.fromkeys(("to", "type", "float", "double", "half", "bfloat16", "cpu", "cuda"),
                    "it changes a tensor's dtype or device, and a cell computes in the one "
                    "dtype it runs in: drop it (x.to(h.dtype) included)"),
}


class ConvertError(LstmGraphError):
    """A PyTorch cell that cannot become a ``.cell``, said with where and why."""


def _torch() -> Any:
    try:
        import torch
        import torch.fx  # noqa: F401  (fx is a submodule)
    except ImportError as err:
        raise ConvertError(f"from-torch needs torch, which is not installed ({err}): "
                           f"{install_hint('import')}") from None
    return torch


# -- loading the user's class ---------------------------------------------------------------


def shown_file(file: str) -> str:
    """A source file as a message names it: relative to the working directory where it
    lies there (``custom.py``, as the user named it), else as Python found it (absolute
    paths of the user's own file in every message were another name for the same file)."""
    try:
        relative = os.path.relpath(file)
    except ValueError:  # another drive
        return file
    return file if relative.startswith(os.pardir) else relative


def _user_frame(tb: Any, files: set[str]) -> tuple[str, int] | None:
    """The innermost frame of a traceback in one of the user's ``files``."""
    found = None
    for frame, line in traceback.walk_tb(tb):
        if str(Path(frame.f_code.co_filename).resolve()) in files:
            found = (frame.f_code.co_filename, line)
    return found


def _located(files: set[str], err: BaseException, what: str, called: Any = None
             ) -> ConvertError:
    """``what`` failed with ``err``, said at the user's line where there is one, else at
    the definition of the function ``called`` (a constructor given the wrong arguments
    fails before its first line)."""
    where = _user_frame(err.__traceback__, files)
    detail = printable(f"{type(err).__name__}: {err}")
    if where is None and called is not None:
        try:
            file = str(Path(inspect.getfile(called)).resolve())
            if file in files:  # the user's code (an inherited constructor too), not torch's
                where = (file, inspect.getsourcelines(called)[1])
        except (OSError, TypeError):
            pass
    if where is None:
        return ConvertError(f"{what} failed: {detail}")
    file, line = where
    text = linecache.getline(file, line).strip()
    return ConvertError(f"{shown_file(file)}:{line}: error: {what} failed: {detail}\n"
                        f"    {text}")


#: The start of the module name FILE.py is loaded as (its path's hash follows).
USER_MODULE = "lstm_graph_user_"


def load_class(path: Path, class_name: str) -> type:
    """``class_name`` from the Python file ``path`` (run as a module: it is code)."""
    torch = _torch()
    file_size(path, ConvertError)  # no such file, a directory, a FIFO: said as such
    if path.suffix != ".py":
        raise ConvertError(f"{path}: not a Python file (.py)")
    resolved = str(path.resolve())
    name = USER_MODULE + hashlib.sha256(resolved.encode()).hexdigest()[:12]
    source = _trusted_source(path, resolved)
    module = types.ModuleType(name)
    module.__file__ = resolved
    sys.modules[name] = module  # where dataclasses and pickling look for it
    # its imports from its own folder, as `python FILE.py` has them (an installed console
    # script puts its own folder first, not the working directory), where no other user
    # can write in it (/tmp's sticky bit keeps FILE.py safe, not a module put beside it)
    folder = str(Path(resolved).parent)
    own = _own_folder(folder)
    added = folder not in sys.path and own
    if added:
        sys.path.insert(0, folder)
    loaded = set(sys.modules)
    finder = _OwnModules(folder)
    sys.meta_path.insert(0, finder)
    try:  # compiled from the source read here: no bytecode cache is read or written
        exec(compile(source, resolved, "exec", dont_inherit=True), module.__dict__)
    except SyntaxError as err:
        raise ConvertError(f"{path}:{err.lineno}:{err.offset}: error: {err.msg}") from None
    except Exception as err:  # the user's module failed: said at its line
        failed = _located({resolved}, err, f"importing {path}")
        if isinstance(err, ModuleNotFoundError) and not own:
            head, cut, tail = str(failed).partition("\n")
            failed = ConvertError(f"{head} ({folder} is not searched for modules: other "
                                  f"users can write in it){cut}{tail}")
        raise failed from None
    finally:
        sys.meta_path.remove(finder)
        if added and folder in sys.path:
            sys.path.remove(folder)
        for key in set(sys.modules) - loaded:  # its siblings, not another file's next time
            if str(getattr(sys.modules[key], "__file__", None) or "").startswith(
                    folder + os.sep):
                del sys.modules[key]
    found = getattr(module, class_name, None)
    if found is None:
        classes = sorted(n for n, v in vars(module).items()
                         if isinstance(v, type) and issubclass(v, torch.nn.Module)
                         and v.__module__ == name)
        raise ConvertError(f"{path}: no class '{class_name}' (its nn.Module classes: "
                           f"{', '.join(classes) or 'none'})")
    if not (isinstance(found, type) and issubclass(found, torch.nn.Module)):
        raise ConvertError(f"{path}: {class_name} is not an nn.Module class")
    if issubclass(found, torch.jit.ScriptModule):
        raise ConvertError(f"{path}: {class_name} is a torch.jit.ScriptModule, which torch.fx "
                           "cannot trace; make it an nn.Module (drop jit.ScriptModule and "
                           "@jit.script_method: the equations stay the same)")
    return found


class _SourceOnly(importlib.machinery.SourceFileLoader):
    """A module of the user's folder, compiled from the source read from the file checked
    (:func:`_trusted_source`), as FILE.py is: no bytecode cache is read (one another user
    planted would run) or written (nothing is touched that lstm-graph did not make)."""

    def get_code(self, fullname: str) -> types.CodeType:
        try:  # a link there is followed: its target is checked where it lies
            source = _trusted_source(Path(shown_file(self.path)), os.path.realpath(self.path))
        except ConvertError as err:
            raise ImportError(str(err)) from None
        return compile(source, self.path, "exec", dont_inherit=True)


class _OwnModules(importlib.abc.MetaPathFinder):
    """While FILE.py is imported: a module it imports from its own folder (or a package
    there; not one found below it through another entry of ``sys.path``, a ``.venv`` kept
    beside FILE.py) is run only where FILE.py would be: every directory below the folder
    is one no other user can write in, and the module's file is checked and read as
    FILE.py's is (:class:`_SourceOnly`); a compiled extension there is loaded as ever
    where it is the user's (or root's) and no one else may write it."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: types.ModuleType | None = None) -> Any:
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        origin = getattr(spec, "origin", None)
        if spec is None or origin is None or not origin.startswith(self.folder + os.sep):
            return None  # not the user's: found as ever
        top = os.path.relpath(origin, self.folder).split(os.sep)[0]
        if top not in (fullname.split(".")[0], fullname.split(".")[0] + ".py"):
            return None  # found through another entry of sys.path (a .venv kept there)
        directory = os.path.dirname(origin)
        while directory != self.folder:
            if not _own_folder(directory):
                raise ImportError(f"{shown_file(origin)}: other users can write in "
                                  f"{shown_file(directory)}, so its code is not run; copy "
                                  "it to a directory of your own")
            directory = os.path.dirname(directory)
        if origin.endswith(".py"):
            spec.loader = _SourceOnly(fullname, origin)
            return spec
        status = os.stat(origin)  # a compiled module: loaded as ever, where it is trusted
        if status.st_uid not in (os.geteuid(), 0) or status.st_mode & (stat.S_IWOTH
                                                                        | stat.S_IWGRP):
            raise ImportError(f"{shown_file(origin)}: another user may have written it "
                              f"(uid {status.st_uid}, mode {stat.S_IMODE(status.st_mode):04o}), "
                              "so its code is not run; copy it to a directory of your own")
        return spec


def _own_folder(folder: str) -> bool:
    """Whether only this user (or root) can write in ``folder``."""
    status = os.stat(folder)
    writers = stat.S_IWOTH | (stat.S_IWGRP if status.st_gid != os.getegid() else 0)
    return status.st_uid in (os.geteuid(), 0) and not status.st_mode & writers


def _trusted_source(path: Path, resolved: str) -> bytes:
    """The bytes of the Python file ``path`` (``resolved``: its real path), refused where
    another user may have written them: a file of another user (root's are trusted) or
    writable by others, or in a directory where others may replace it (the rule an
    output's link is followed by, :func:`~lstm_graph.formats.files.others_may_replace`).
    Read from one descriptor, the one checked."""
    try:
        fd = os.open(resolved, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as err:
        raise ConvertError(f"{path}: cannot be read ({err.strerror or err})") from None
    with os.fdopen(fd, "rb") as stream:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise ConvertError(f"{path}: not a regular file")
        me = os.geteuid()
        writers = stat.S_IWOTH | (stat.S_IWGRP if status.st_gid != os.getegid() else 0)
        reason = None
        if status.st_uid not in (me, 0):
            reason = f"it belongs to another user (uid {status.st_uid})"
        elif status.st_mode & writers:
            reason = f"other users can write it (mode {stat.S_IMODE(status.st_mode):04o})"
        else:
            directory = os.path.dirname(resolved)
            if others_may_replace(os.stat(directory), status):
                reason = f"other users can replace it in {directory}"
        if reason is not None:
            raise ConvertError(f"{path}: {reason}, so its code is not run (another user "
                               "could have written it); copy it to a directory of your own")
        return stream.read()


def make_module(cls: type, path: Path, input_size: int, hidden_size: int,
                state_dict: Path | None, seed: int = 0) -> Any:
    """``cls(input_size, hidden_size)`` in eval mode, with the state dict's weights
    (read with ``weights_only``: a weights file never runs code), else its own
    initialisation drawn from PyTorch's generator seeded with ``seed`` (the caller's
    generator is left as it was): the same arguments give the same weights."""
    torch = _torch()
    files = {str(path.resolve())}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            module = cls(input_size, hidden_size)
        except Exception as err:  # the user's constructor: said at its line
            raise _located(files, err, f"{cls.__name__}({input_size}, {hidden_size})",
                           cast(Any, cls).__init__) from None
    if state_dict is not None:
        weights = torch_layers.read(state_dict)  # a regular file, weights only, our words
        if not isinstance(weights, Mapping) or not all(
                isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()):
            raise ConvertError(f"{state_dict}: holds a {type(weights).__name__}, not a state "
                               "dict (names to tensors, as module.state_dict() gives)")
        broken = next((key for key, value in weights.items() if value.is_floating_point()
                       and not bool(torch.isfinite(value).all())), None)
        if broken is not None:  # named here, in the file's own names
            raise ConvertError(f"{state_dict}: {broken} holds NaN or infinity; a cell's "
                               "weights are finite numbers")
        module = _in_dtype_of(module, weights, state_dict, cls.__name__)
        try:
            module.load_state_dict(weights)
        except RuntimeError as err:
            lines = printable(str(err)).splitlines()
            detail = " ".join(line.strip() for line in lines[1:4]) or lines[0]
            raise ConvertError(f"{state_dict}: does not fit {cls.__name__}({input_size}, "
                               f"{hidden_size}): {detail}") from None
    return module.eval()


def _in_dtype_of(module: Any, weights: Mapping[str, Any], state_dict: Path, name: str) -> Any:
    """``module`` in the dtype of the state dict's floating-point tensors, where they all
    have one and the module's parameters another: ``load_state_dict`` would round float64
    weights to a float32 class's parameters, and the cell, checked against that rounded
    module, would be written in float32 without a word (a warning says the change)."""
    loaded = {v.dtype for v in weights.values() if v.is_floating_point()}
    made = {p.dtype for p in module.parameters() if p.is_floating_point()}
    if len(loaded) != 1 or not made or made == loaded:
        return module
    (dtype,) = loaded
    shown = str(dtype).removeprefix("torch.")
    warnings.warn(LstmGraphWarning(
        f"{state_dict.name} holds {shown} weights, and {name} makes "
        f"{' and '.join(sorted(str(d).removeprefix('torch.') for d in made))} parameters: the "
        f"module is loaded, checked and written in {shown}, as its weights are"), stacklevel=2)
    return module.to(dtype)


def forward_input_name(cls: Any) -> str | None:
    """The name ``forward`` gives its input (``input``, ``x_t``), if it can be read."""
    try:
        parameters = list(inspect.signature(cls.forward).parameters)
    except (TypeError, ValueError):
        return None
    return parameters[1] if len(parameters) > 1 else None


# -- tracing --------------------------------------------------------------------------------


@dataclass
class Traced:
    """A module's forward as an fx graph, with what the interpreter needs."""

    graph: Any  # torch.fx.Graph
    root: Any  # the wrapper module (its ``cell`` is the user's)
    files: set[str]  # the user's source files, resolved
    class_name: str


def trace(module: Any, path: Path, states: Sequence[str]) -> Traced:
    """Trace ``module.forward(x, state)``; ``state`` is one tensor for one state, else the
    tuple of ``states`` in order."""
    torch = _torch()
    files = {str(path.resolve())}
    try:
        files.add(str(Path(inspect.getfile(type(module))).resolve()))
    except (TypeError, OSError):
        pass
    skip = (str(Path(torch.__file__).parent), str(Path(__file__).resolve().parents[1]))
    name = type(module).__name__

    def caller() -> tuple[str, int] | None:
        """The innermost frame of the user's code (not torch's, not ours) calling now."""
        frame: Any = sys._getframe(2)
        while frame is not None:
            file = frame.f_code.co_filename
            if not file.startswith(skip) and not file.startswith("<"):
                return file, frame.f_lineno
            frame = frame.f_back
        return None

    def stopped(what: str, advice: str) -> ConvertError:
        """A forward whose gradients are not those of what it computes (``what`` does it),
        refused where it does it: lstm-graph differentiates the cell's equations."""
        where = caller()
        head = f"{shown_file(where[0])}:{where[1]}: error: " if where else ""
        text = f"\n    {linecache.getline(*where).strip()}" if where else ""
        return ConvertError(f"{head}{name}.forward {what}, so its gradients are not those of "
                            "what it computes, and a cell's equations cannot say so "
                            "(lstm-graph differentiates every value, as a training step "
                            f"would): {advice}{text}")

    class Tracer(torch.fx.Tracer):  # type: ignore[name-defined]
        def create_node(self, *args: Any, **kwargs: Any) -> Any:
            if not within_torch and (not torch.is_grad_enabled()
                                     or torch.is_inference_mode_enabled()):
                raise stopped("computes with gradients off (torch.no_grad(), "
                              "set_grad_enabled(False) or inference_mode())",
                              "compute it with gradients on; the forward computes the same")
            node = super().create_node(*args, **kwargs)
            where = caller()
            if where is not None:
                node.meta[WHERE] = where
            return node

    function = torch.autograd.function.Function
    own_apply = function.__dict__["apply"]
    # how many of torch's own Functions are being applied: their forwards may run with
    # gradients off (utils.checkpoint's), which is not the user's forward switching them off
    within_torch = 0

    def apply(cls: Any, *args: Any, **kwargs: Any) -> Any:
        """``Function.apply`` while tracing: a Function of the user's has a backward of
        its own, which the trace of its forward does not hold (torch's own compute the
        gradients of what they compute, as utils.checkpoint's does)."""
        nonlocal within_torch
        if not cls.__module__.startswith("torch."):
            raise stopped(f"calls {printable(cls.__name__)}.apply, a torch.autograd.Function "
                          "with a backward of its own", "write what its forward computes "
                          "in the cell's forward, whose gradients autograd then takes")
        within_torch += 1
        try:
            return own_apply.__func__(cls, *args, **kwargs)
        finally:
            within_torch -= 1

    names = [f"s{k}" for k in range(len(states))]
    packed = names[0] if len(names) == 1 else f"({', '.join(names)},)"
    namespace: dict[str, Any] = {}
    exec(compile(f"def forward(self, x, {', '.join(names)}):\n"  # our own two lines
                 f"    return self.cell(x, {packed})\n", "<lstm-graph wrapper>", "exec"),
         namespace)
    wrapper_type = type("Wrapper", (torch.nn.Module,), {"forward": namespace["forward"]})
    wrapper = wrapper_type()
    wrapper.cell = module
    try:
        function.apply = classmethod(apply)
        # traced with gradients on, whatever the caller's mode (torch.no_grad() around the
        # conversion, torch.set_grad_enabled(False) at FILE.py's top): only the forward's own
        # switching them off is its
        with torch.inference_mode(False), torch.enable_grad():
            graph = Tracer().trace(wrapper)
    except ConvertError:
        raise
    except torch.fx.proxy.TraceError as err:
        where = _user_frame(err.__traceback__, files)
        head = f"{shown_file(where[0])}:{where[1]}: error: " if where else ""
        text = f"\n    {linecache.getline(*where).strip()}" if where else ""
        why = ("it branches on a tensor (an if, while or bool() on its values, or on what "
               "torch.fx cannot know while it traces: x.dim(), x.requires_grad), and a cell "
               "runs the same equations at every step" if "control flow" in str(err)
               else printable(str(err)))
        raise ConvertError(f"{head}{type(module).__name__}.forward cannot be traced: "
                           f"{why}{text}\n{SUPPORTED}") from None
    except Exception as err:  # the user's forward failed while traced
        found = _located(files, err, f"tracing {type(module).__name__}.forward")
        given = (f"one tensor, '{states[0]}'" if len(states) == 1 else
                 f"a tuple of {len(states)} tensors ({', '.join(states)})")
        text = str(err)
        if "does not support item assignment" in text:
            hint = ("(an assignment into a tensor, z[…] = v, changes it in place: compute a "
                    "new value instead, e.g. torch.cat of its parts)")
        elif isinstance(err, TypeError) and "positional argument" in text:
            hint = (f"(from-torch calls forward(x, state), the state {given}: a forward that "
                    "takes each state tensor as an argument of its own, forward(x, h, c), "
                    "cannot be called so; take them as one tuple, forward(x, state) with "
                    "h, c = state)")
        elif "Proxy" in text:  # float(h[0, 0]), int(…), a tensor made a Python number
            hint = ("(a tensor's value made a Python number (float(), int(), .item()) "
                    "depends on the data, and a cell's equations cannot: keep it a tensor)")
        else:
            hint = (f"(--states named the state passed to forward as {given}: if the "
                    "forward takes another number, give one name per tensor its state holds, "
                    "in order)")
        raise ConvertError(f"{found}\n{hint}\n{SUPPORTED}") from None
    finally:
        function.apply = own_apply
    return Traced(graph, wrapper, files, type(module).__name__)


# -- names of the user's variables ----------------------------------------------------------


class _Statements:
    """The simple statements of the user's files, to name values by what they assign."""

    def __init__(self) -> None:
        self.trees: dict[str, list[ast.stmt]] = {}

    def at(self, file: str, line: int) -> ast.stmt | None:
        """The innermost simple statement spanning ``line`` of ``file``."""
        if file not in self.trees:
            try:
                tree = ast.parse(Path(file).read_text(encoding="utf-8"))
            except (OSError, SyntaxError, ValueError):
                tree = ast.Module(body=[], type_ignores=[])
            self.trees[file] = [node for node in ast.walk(tree)
                                if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign,
                                                     ast.Return, ast.Expr))]
        best = None
        for stmt in self.trees[file]:
            end = stmt.end_lineno or stmt.lineno
            if stmt.lineno <= line <= end and (best is None or stmt.lineno >= best.lineno):
                best = stmt
        return best


def _targets(stmt: ast.stmt) -> list[str | None] | str | None:
    """A plain name assigned, or the names a tuple target unpacks into (None for any that
    is not a plain name)."""
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
        target = stmt.targets[0]
    elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
        target = stmt.target
    else:
        return None
    if isinstance(target, ast.Name):
        return target.id
    if isinstance(target, (ast.Tuple, ast.List)):
        return [e.id if isinstance(e, ast.Name) else None for e in target.elts]
    return None


# -- the interpreter ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Shape:
    """A symbolic value's ``.shape``: its width is known, its batch size is not."""

    width: int


@dataclass(frozen=True)
class Step:
    """What one step of the traced cell computes: its output and each state's new value."""

    output: Value
    states: tuple[Value, ...]
    causes: tuple[str, ...] = ()  # why training the cell may not train the module


def _call_names() -> dict[str, tuple[Op, TorchCall]]:
    return {call.name: (op, call) for op in OPS.values() for call in op.torch_calls}


class _Interpreter:
    """Gives every fx node its value (see the module docstring); refuses what it cannot."""

    def __init__(self, traced: Traced, states: Sequence[str], input_size: int,
                 hidden_size: int):
        self.torch = _torch()
        self.traced, self.states = traced, list(states)
        self.input_size, self.hidden_size = input_size, hidden_size
        self.calls = _call_names()
        self.names = self._resolve()
        self.statements = _Statements()
        self.provenance = Provenance(traced.root, prefix="cell.")

    def _resolve(self) -> dict[int, str]:
        """Every callable the importer knows, by identity: its ``torch.``/``F.`` name."""
        torch = self.torch
        roots = {"torch": torch, "F": torch.nn.functional, "operator": operator,
                 "nn": torch.nn, "Tensor": torch.Tensor}
        known = [*self.calls, "torch.mm", "torch.matmul", "operator.matmul", "torch.addmm",
                 "F.linear", "nn.Linear", "torch.cat", "torch.concat", "torch.concatenate",
                 "torch.chunk", "torch.split", "torch.narrow", "torch.reshape", "torch.squeeze",
                 "operator.getitem",
                 "operator.truediv", "torch.div", "torch.true_divide", "nn.Module"]
        found = {}
        for name in known:
            head, _, rest = name.partition(".")
            value: Any = roots[head]
            for part in rest.split("."):
                value = getattr(value, part, None)
            if value is not None:
                found[id(value)] = name
        found[id(getattr)] = "builtins.getattr"
        return found

    # -- the walk --

    def run(self) -> Step:
        env: dict[Any, Any] = {}
        placeholders = iter([None, *self.states])  # x first (a state may be named x)
        made: list[tuple[Any, Value]] = []
        result: Any = None
        torch = self.torch
        for node in self.traced.graph.nodes:
            if node.op == "placeholder":
                role = next(placeholders)
                env[node] = Input(self.input_size, label="x") if role is None else \
                    Old(self.hidden_size, state=role, label=role)
                continue
            if node.op == "get_attr":
                env[node] = _attribute(self.traced.root, node.target)
                continue
            args = torch.fx.node.map_arg(node.args, lambda n: env[n])
            kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: env[n])
            if node.op == "output":
                result = args[0]
                continue
            if not _symbolic((args, kwargs)):
                came = self.provenance.sources((args, kwargs))
                self._refuse_stopped(node, args, kwargs)
                env[node] = self._concrete(node, args, kwargs)
                self.provenance.record(env[node], came, self._cut(node, args))
                continue
            value = self._symbolic(node, args, kwargs)
            for item in _values(value):
                if item.where is None:
                    item.where = self._where(node)
                    item.label = node.name
            env[node] = value
            if isinstance(value, Value):
                made.append((node, value))
        self._name(made)
        step = self._step(result)
        return Step(step.output, step.states, self.provenance.causes())

    def _where(self, node: Any) -> Where | None:
        found = node.meta.get(WHERE)
        return None if found is None else Where(found[0], found[1])

    def _name(self, made: list[tuple[Any, Value]]) -> None:
        """Name values after the variables the code assigns them to: the last value a
        statement makes gets its name (``cy = f * cx + i * g``), and each item of a tuple
        unpacking its own (``i, f, g, o = gates.chunk(4, 1)``); a later name wins."""
        last: dict[tuple[str, int], Any] = {}
        for node, _ in made:
            found = node.meta.get(WHERE)
            stmt = self.statements.at(*found) if found else None
            if stmt is not None:
                last[(found[0], stmt.lineno)] = node
        for node, value in made:
            found = node.meta.get(WHERE)
            stmt = self.statements.at(*found) if found else None
            targets = _targets(stmt) if stmt is not None else None
            if isinstance(targets, str) and stmt is not None and \
                    last.get((found[0], stmt.lineno)) is node:
                _rename(value, targets)
            elif isinstance(targets, list) and node.target is operator.getitem \
                    and isinstance(node.args[1], int) and node.args[1] < len(targets) \
                    and targets[node.args[1]] is not None:
                _rename(value, str(targets[node.args[1]]))

    def _returned(self, message: str) -> ConvertError:
        """``message`` at the forward's last ``return`` (``file:line: error:``, and the
        line), where it can be read, as every other refusal is said."""
        forward = type(self.traced.root.cell).forward
        try:
            lines, start = inspect.getsourcelines(forward)
            file = str(Path(inspect.getfile(forward)).resolve())
            tree = ast.parse(textwrap.dedent("".join(lines)))
        except (OSError, TypeError, SyntaxError):
            return ConvertError(message)
        returns = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Return)]
        if not returns:
            return ConvertError(message)
        line = start + max(returns) - 1
        return ConvertError(f"{shown_file(file)}:{line}: error: {message}\n"
                            f"    {linecache.getline(file, line).strip()}")

    def _step(self, result: Any) -> Step:
        name = self.traced.class_name
        if not (isinstance(result, (tuple, list)) and len(result) == 2):
            raise self._returned(f"{name}.forward returns {_kind(result)}; a cell's forward "
                                 "returns (out, new_state)")
        out, new = result
        if isinstance(new, dict):
            raise self._returned(f"{name}.forward returns a dict as its new state; return its "
                                 f"tensors as a tuple, in the order --states names them "
                                 f"({', '.join(self.states)})")
        new = list(new) if isinstance(new, (tuple, list)) else [new]
        if len(new) != len(self.states):
            raise self._returned(f"{name}.forward returns {len(new)} new state"
                                 f"{'s' if len(new) != 1 else ''}, but --states names "
                                 f"{len(self.states)} ({', '.join(self.states)})")
        for what, value in [("its output", out),
                            *((f"state '{s}'", v) for s, v in zip(self.states, new))]:
            if isinstance(value, Cat):
                raise self._returned(f"{name}.forward returns a concatenation (torch.cat) as "
                                     f"{what}; a cell's output and states are values of H "
                                     "units, and only a linear may read a concatenation: "
                                     "return the value the pieces came from, or keep them as "
                                     "states of their own")
            if not isinstance(value, Value):
                raise self._returned(f"{name}.forward returns {_kind(value)} as {what}; it "
                                     "must be a tensor computed from x and the states")
        for state, value in zip(self.states, new):
            if of_input_size(value):
                raise ConvertError(f"{self._at(value)}{name}.forward's new state '{state}' "
                                   f"is the input x, or a value of its size: {_WHY_INPUT_SIZE}")
            if value.width != self.hidden_size:
                raise ConvertError(f"{self._at(value)}{name}.forward's new state '{state}' "
                                   f"has {value.width} units, but the hidden size is "
                                   f"{self.hidden_size}")
        return Step(out, tuple(new))

    def _at(self, value: Value) -> str:
        where = value.where
        return "" if where is None or not where.file else \
            f"{shown_file(where.file)}:{where.line}: error: "

    # -- concrete values --

    def _refuse_stopped(self, node: Any, args: Any, kwargs: Any) -> None:
        """Refuse a parameter read without its gradient (``self.l.weight.detach()``,
        ``.data``): the module gives it none through that use, and the cell, whose weight
        it becomes, would train it (the same ops on a value are refused as ops)."""
        name = self._call_name(node)
        short = name.rpartition(".")[2]
        if node.op == "call_function" and name == "builtins.getattr":
            stops, said = len(args) > 1 and args[1] == "data", "its .data"
        elif short == "requires_grad_":
            flag = args[1] if len(args) > 1 else kwargs.get("requires_grad", True)
            stops, said = not flag, f"{name}(False)"
        else:
            stops, said = short in ("detach", "detach_", "new_tensor"), name
        learned = self.provenance.learned((args, kwargs)) if stops else []
        if learned:
            raise self._refuse(node, f"the parameter self.{learned[0]} is read through {said}",
                               _WHY["detach"])

    def _cut(self, node: Any, args: Any) -> str | None:
        """How a concrete node cuts its operand into pieces (``Tensor.chunk(4, 0)``), or
        None where its result is the operand's values as a whole."""
        name = self._call_name(node)
        if name.rpartition(".")[2] not in _CUTS or \
                (name == "operator.getitem" and not hasattr(args[0], "shape")):
            return None
        return f"{name}{tuple(args[1:])!r}{dict(node.kwargs)!r}"

    def _weight(self, node: Any, tensor: Any, spread: int | None = None) -> None:
        """``tensor`` becomes a weight of the cell here (see :mod:`.provenance`), as
        ``spread`` copies of its one number where given."""
        found = node.meta.get(WHERE)
        where = f"{Path(found[0]).name}:{found[1]}" if found else f"self.{node.target}"
        self.provenance.use(tensor, node.name, where, spread)

    def _concrete(self, node: Any, args: Any, kwargs: Any) -> Any:
        """A node whose operands are all concrete, run by PyTorch itself: with gradients
        on, so that a result made of a parameter the module trains, but without its
        gradient (a helper that detaches it, under no_grad, or wrapped from fx), is
        refused as ``.detach()`` is; where autograd refuses the op (in place on a
        parameter: refused after, as a changed parameter), with gradients off."""
        torch = self.torch

        def run() -> Any:
            if node.op == "call_function":
                return node.target(*args, **kwargs)
            if node.op == "call_method":
                return getattr(args[0], node.target)(*args[1:], **kwargs)
            return self.traced.root.get_submodule(node.target)(*args, **kwargs)

        try:
            with torch.enable_grad():
                result = run()
        except Exception:  # noqa: BLE001  (run again with gradients off: its error is said)
            try:
                with torch.no_grad():
                    return run()
            except Exception as err:  # noqa: BLE001  (PyTorch's own error, at the line)
                raise self._refuse(node, f"{self._describe(node)} failed on the parameters: "
                                   f"{printable(str(err)).splitlines()[0]}") from None
        short = self._call_name(node).rpartition(".")[2]
        if short.endswith("_like") or short.startswith("new_"):
            return result  # a tensor shaped after its operand, not made of its values
        read = (args[:1], {}) if short in _TEMPLATES else (args, kwargs)
        learned = self.provenance.learned(read)
        given = [t for t in provenance_tensors(read) if t.requires_grad]
        if learned and given and not any(t.is_inference() for t in given) and any(
                t.is_floating_point() and not t.requires_grad
                for t in provenance_tensors(result)):
            raise self._refuse(node, f"the parameter self.{learned[0]} is read through "
                               f"{self._describe(node)}, which gives it no gradient",
                               _WHY["detach"])
        return result

    # -- symbolic values --

    def _call_name(self, node: Any) -> str:
        if node.op == "call_method":
            return f"Tensor.{node.target}"
        if node.op == "call_module":
            module = self.traced.root.get_submodule(node.target)
            return self.names.get(id(type(module)), f"nn.{type(module).__name__}"
                                  if type(module).__module__.startswith("torch.nn")
                                  else type(module).__name__)
        found = self.names.get(id(node.target))
        if found is not None:
            return found
        module = getattr(node.target, "__module__", None) or "torch"
        if module.startswith(USER_MODULE):  # a function of FILE.py's: by its file's name
            module = Path(getattr(sys.modules.get(module), "__file__", "") or "FILE").stem
        short = {"torch.nn.functional": "F", "_operator": "operator"}.get(module, module)
        return f"{short}.{getattr(node.target, '__name__', node.target)}"

    def _describe(self, node: Any) -> str:
        name = self._call_name(node)
        if node.op == "call_module":
            return f"{name} (self.{node.target.removeprefix('cell.')})"
        return name

    def _refuse(self, node: Any, message: str, why: str | None = None) -> ConvertError:
        found = node.meta.get(WHERE)
        head = f"{shown_file(found[0])}:{found[1]}: error: " if found else ""
        text = f"\n    {linecache.getline(found[0], found[1]).strip()}" if found else ""
        reason = f": {why}" if why else ""
        return ConvertError(f"{head}{self.traced.class_name}.forward: {message}{reason}{text}"
                            f"\n{SUPPORTED}")

    def _symbolic(self, node: Any, args: Any, kwargs: Any) -> Any:
        name = self._call_name(node)
        short = name.rpartition(".")[2]
        handler = _HANDLERS.get(name)
        if handler is not None:
            return handler(self, node, list(args), dict(kwargs))
        if name in self.calls:
            return self._op_call(node, name, list(args), dict(kwargs))
        if short.endswith("_") and not short.startswith("_") and short not in _WHY:
            known = short[:-1] in {c.rpartition(".")[2] for c in self.calls}
            raise self._refuse(node, f"{name} is in place", "it changes a tensor the trace "
                               "has already read; write its result as a new value (" + (
                                   f"y = torch.{short[:-1]}(…) of the same operands)" if known
                                   else "z = z / 2 for z.div_(2))"))
        why = _WHY.get(short, "it is not one of the ops below")
        if short.startswith("Parametrized"):  # torch.nn.utils.parametrize made the class
            why = ("its weights are recomputed from others at every call (torch.nn.utils."
                   "parametrizations.weight_norm, spectral_norm, orthogonal…); fold them into "
                   "plain weights first (torch.nn.utils.parametrize.remove_parametrizations("
                   "module, 'weight')), then save the state dict")
        raise self._refuse(node, f"{self._describe(node)} cannot be part of a cell", why)

    def _op_call(self, node: Any, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """An op of the op table, in one of its PyTorch spellings."""
        op, call = self.calls[name]
        arity = 1 if op.kind in (OpKind.FUNCTION, OpKind.COPY) else op.arity
        module = self.traced.root.get_submodule(node.target) if node.op == "call_module" \
            else None
        if arity == 1 and not args and "input" in kwargs:  # torch.tanh(input=z)
            args = [kwargs.pop("input")]
        operands, extra = args[:arity], args[arity:]
        numbers = {n: getattr(module, n, d) if module is not None else d
                   for n, d in call.numbers}
        names = [n for n, _ in call.numbers]
        if len(extra) > len(names):
            raise self._refuse(node, f"{name} is given {len(args)} arguments")
        numbers.update(zip(names, extra))
        for key, value in kwargs.items():
            if key not in numbers:
                raise self._refuse(node, f"{name}'s argument {key}= is not converted")
            numbers[key] = value
        if any(isinstance(v, (Value, _Shape)) for v in numbers.values()):
            raise self._refuse(node, f"{name} takes a value where a number belongs")
        for key, value in numbers.items():  # a 0-d tensor (a learned bound, self.t)
            if isinstance(value, self.torch.Tensor) and value.ndim == 0:
                numbers[key] = self._constant(node, value)
        if numbers.get("inplace"):
            raise self._refuse(node, f"{name}(inplace=True) changes a tensor the trace has "
                               "already read; drop inplace")
        missing = [n for n, v in numbers.items() if v is None]
        if missing:
            given = [n for n, v in numbers.items() if v is not None]
            takes = " and ".join(names) + (" both" if len(names) == 2 else "")
            raise self._refuse(node, f"{name} without {missing[0]}", (
                f"the op table's {op.name} takes {takes}" + (
                    ", so a bound of one side is not one of its ops (torch.relu(z) is "
                    "clamp(z, min=0))" if given and op.name == "clip" else "")))
        try:
            attrs = (call.attrs or (lambda given: {}))(numbers)
        except ValueError as err:
            raise self._refuse(node, f"{name}: {err}") from None
        if len(operands) != arity:
            raise self._refuse(node, f"{name} is given {len(operands)} operand(s)")
        if call.swapped:
            operands.reverse()
        if call.differs:
            warnings.warn(f"{name} becomes {op.spelling}: {call.differs}", LstmGraphWarning,
                          stacklevel=2)
        if op.kind is OpKind.COPY:
            return operands[0]
        return self._apply(node, op, operands, attrs)

    def _apply(self, node: Any, op: Op, operands: list[Any], attrs: Mapping[str, float]
               ) -> Value:
        """``op`` over values, numbers and parameter vectors: an affine form where the
        result is one (a bias, an element-wise weight, a sum of linears), else an Apply."""
        values = [o for o in operands if isinstance(o, Value)]
        width = values[0].width
        if any(v.width != width for v in values):
            raise self._refuse(node, f"{op.spelling} of values of widths "
                               f"{', '.join(str(v.width) for v in values)}",
                               "element-wise ops need values of one width")
        if len({of_input_size(v) for v in values}) > 1:
            raise self._refuse(node, f"{op.spelling} of the input x (or a value of its size) "
                               "and a value of the states' size", _WHY_INPUT_SIZE)
        items: list[Value | float | np.ndarray] = []
        for operand in operands:
            if isinstance(operand, Value):
                if isinstance(operand, Cat):
                    raise self._refuse(node, f"{op.spelling} of a torch.cat",
                                       "only a linear may read a concatenation")
                items.append(operand)
            else:
                items.append(self._number_or_vector(node, operand, width))
        if op.name in ("add", "sub"):
            a, b = items
            sign = 1.0 if op.name == "add" else -1.0
            if isinstance(a, (np.ndarray, float)) and isinstance(b, Affine) or \
                    isinstance(b, (np.ndarray, float)) and isinstance(a, Affine) or \
                    isinstance(a, np.ndarray) or isinstance(b, np.ndarray) or \
                    isinstance(a, Affine) and isinstance(b, Affine):
                # a number or vector added to a linear is its bias (the forget bias, + 1)
                return self._affine_sum(a, b, sign, width)
        if op.name == "mul":
            vector = next((i for i in items if isinstance(i, np.ndarray)), None)
            if vector is not None:
                other = items[1] if items[0] is vector else items[0]
                assert isinstance(other, Value)
                if isinstance(other, Affine):
                    return scale_affine(other, vector)
                return Affine(width, peeps=((other, vector),))
        if op.kind is OpKind.FUNCTION or op.name == "neg":
            if not isinstance(items[0], Value):
                raise self._refuse(node, f"{op.spelling} of a parameter")
        if any(isinstance(i, np.ndarray) for i in items):
            raise self._refuse(node, f"{op.spelling} with a parameter vector",
                               "a parameter may be added to a value or multiply it")
        args = tuple(i if isinstance(i, Value) else float(i) for i in items
                     if not isinstance(i, np.ndarray))
        return Apply(width, op=op.name, args=args, attrs=tuple(attrs.items()))

    def _affine_sum(self, a: Any, b: Any, sign: float, width: int) -> Affine:
        """``a + sign·b`` where the result stays affine (a bias, or two linears)."""
        def form(item: Any) -> Affine | np.ndarray | float:
            if isinstance(item, Affine) or not isinstance(item, Value):
                return item
            return Affine(width, peeps=((item, np.ones(width)),))

        fa, fb = form(a), form(b)
        if not isinstance(fa, Affine):  # a bias first: sign · (b - a)… as a form
            assert isinstance(fb, Affine)
            flipped = add_affine(Affine(width), fb, sign)
            return with_bias(flipped, np.broadcast_to(np.asarray(fa, float), (width,)))
        if not isinstance(fb, Affine):
            return with_bias(fa, sign * np.broadcast_to(np.asarray(fb, float), (width,)))
        return add_affine(fa, fb, sign)

    def _constant(self, node: Any, number: Any) -> float:
        """A 0-d tensor as the number the cell writes; one the module learns (a parameter,
        or made of parameters) is said to be written as a constant."""
        value = float(number.detach().item())
        if number.requires_grad or self.provenance.learned(number):
            found = node.meta.get(WHERE)
            where = f"{Path(found[0]).name}:{found[1]}: " if found else ""
            self.provenance.constants.add(where.rstrip(": ") or f"self.{node.target}")
            warnings.warn(f"{where}a number the module learns (a parameter of one element) "
                          f"is written as the constant {value!r}: the cell computes what the "
                          "module does, but training the cell would not learn it",
                          LstmGraphWarning, stacklevel=3)
        return value

    def _number_or_vector(self, node: Any, operand: Any, width: int) -> float | np.ndarray:
        """A concrete operand: a number (Python's, or a 0-d tensor) or a vector over the
        units (shape (W,), (1, W), or one element broadcast)."""
        torch = self.torch
        if isinstance(operand, bool) or not isinstance(operand, (int, float, torch.Tensor)):
            raise self._refuse(node, f"an operand of type {type(operand).__name__}")
        if not isinstance(operand, torch.Tensor):
            return float(operand)
        if operand.ndim == 0:
            return self._constant(node, operand)
        array = operand.detach().to(torch.float64).cpu().numpy()
        shape = array.shape
        if array.ndim == 2 and shape[0] == 1:
            array = array[0]
        if array.ndim != 1 or array.shape[0] not in (1, width):
            raise self._refuse(node, f"a tensor of shape {tuple(shape)} meets a value of "
                               f"width {width}", "parameters act on a value as a vector over "
                               "its units (W,) or as a weight matrix in a linear")
        self._weight(node, operand, spread=width if array.shape[0] < width else None)
        vector: np.ndarray = np.broadcast_to(array, (width,)).copy()
        return vector

    def _matrix(self, node: Any, operand: Any, what: str) -> np.ndarray:
        torch = self.torch
        if not isinstance(operand, torch.Tensor) or operand.ndim != 2:
            kind = "a value" if isinstance(operand, Value) else _kind(operand)
            raise self._refuse(node, f"{what} is {kind}, not a weight matrix",
                               "a linear multiplies values by parameters (x @ W.t())")
        self._weight(node, operand)
        return np.asarray(operand.detach().to(torch.float64).cpu().numpy())

    def _vector(self, node: Any, operand: Any, width: int) -> np.ndarray | None:
        if operand is None:
            return None
        found = self._number_or_vector(node, operand, width)
        return np.full(width, found) if isinstance(found, float) else found

    def _value(self, node: Any, operand: Any, what: str) -> Value:
        if isinstance(operand, tuple) and operand and all(isinstance(o, Old) for o in operand):
            raise self._refuse(node, f"the state is used as one tensor, but --states names "
                               f"{len(operand)} ({', '.join(self.states)}), passed as a "
                               "tuple", "give one name per tensor the forward's state holds "
                               "(--states h for a GRU's one tensor)")
        if not isinstance(operand, Value):
            raise self._refuse(node, f"{what} must be a value of the step, not "
                               f"{_kind(operand)}")
        return operand

    # structural handlers (see _HANDLERS)

    def matmul(self, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Value:
        left, right = (args + [kwargs.get("other", kwargs.get("mat2"))])[:2]
        if not isinstance(left, Value):
            raise self._refuse(node, "a weight times a value (W @ x)", "write the value "
                               "first, batch by units: x @ W.t()")
        weight = self._matrix(node, right, "the right operand")
        if weight.shape[0] != left.width:
            raise self._refuse(node, f"a value of width {left.width} times a matrix of "
                               f"shape {weight.shape}")
        return affine(left, weight.T, None)

    def addmm(self, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Value:
        bias, left, right = args[:3]
        beta, alpha = float(kwargs.get("beta", 1)), float(kwargs.get("alpha", 1))
        form = self.matmul(node, [left, right], {})
        assert isinstance(form, Affine)
        vector = self._vector(node, bias, form.width)
        return with_bias(scale_affine(form, np.full(form.width, alpha)),
                         None if vector is None else beta * vector)

    def linear(self, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Value:
        if node.op == "call_module":
            module = self.traced.root.get_submodule(node.target)
            weight, bias = module.weight, module.bias
        else:
            weight = args[1] if len(args) > 1 else kwargs.get("weight")
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
        value = self._value(node, args[0] if args else kwargs.get("input"), "its input")
        matrix = self._matrix(node, weight, "its weight")
        if matrix.shape[1] != value.width:
            raise self._refuse(node, f"a linear of {matrix.shape[1]} inputs reads a value of "
                               f"width {value.width}")
        return affine(value, matrix, self._vector(node, bias, matrix.shape[0]))

    def cat(self, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Value:
        parts = args[0] if args else kwargs.get("tensors")
        dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
        if dim not in (1, -1):
            raise self._refuse(node, f"torch.cat along dimension {dim}",
                               "values are joined along their units (dim=1)")
        flat: list[Value] = []
        for part in parts or ():
            value = self._value(node, part, "each part of torch.cat")
            flat += list(value.parts) if isinstance(value, Cat) else [value]
        return Cat(sum(p.width for p in flat), parts=tuple(flat))

    def _pieces(self, node: Any, value: Value, sizes: list[int]) -> tuple[Value, ...]:
        out: list[Value] = []
        start = 0
        for size in sizes:
            piece = cut(value, start, start + size)
            if piece is None:
                raise self._refuse(node, f"a slice of {self._what(value)}",
                                   "only linears (and element-wise ops of them) are cut "
                                   "into gates")
            out.append(piece)
            start += size
        return tuple(out)

    def _what(self, value: Value) -> str:
        if isinstance(value, Input):
            return "the input x"
        if isinstance(value, Old):
            return f"the state '{value.state}'"
        return "this value"

    def _dim(self, node: Any, dim: Any, what: str) -> None:
        if dim not in (1, -1):
            raise self._refuse(node, f"{what} along dimension {dim}",
                               "values are cut along their units (dim=1)")

    def chunk(self, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
        value = self._value(node, args[0], "what is chunked")
        chunks = int(args[1] if len(args) > 1 else kwargs["chunks"])
        self._dim(node, args[2] if len(args) > 2 else kwargs.get("dim", 0), "chunk")
        size = -(-value.width // chunks)
        sizes = [min(size, value.width - k) for k in range(0, value.width, size)]
        return self._pieces(node, value, sizes)

    def split(self, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
        value = self._value(node, args[0], "what is split")
        spec = args[1] if len(args) > 1 else kwargs.get("split_size_or_sections",
                                                         kwargs.get("split_size"))
        self._dim(node, args[2] if len(args) > 2 else kwargs.get("dim", 0), "split")
        if isinstance(spec, int):
            sizes = [min(spec, value.width - k) for k in range(0, value.width, spec)]
        else:
            sizes = [int(s) for s in spec or ()]
        return self._pieces(node, value, sizes)

    def narrow(self, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
        value = self._value(node, args[0], "what is narrowed")
        given = {**dict(zip(("dim", "start", "length"), args[1:])), **kwargs}
        dim, start, length = given["dim"], int(given["start"]), int(given["length"])
        self._dim(node, dim, "narrow")
        start += value.width if start < 0 else 0  # as torch.narrow counts from the end
        if not (0 <= start and 0 <= length and start + length <= value.width):
            raise self._refuse(node, f"narrow of units {given['start']}, length {length}, of "
                               f"a value of width {value.width}")
        return self._pieces(node, value, [start, length, value.width - start - length])[1]

    def getitem(self, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
        holder, index = args
        if isinstance(holder, (tuple, list)):
            return holder[index]
        if isinstance(holder, _Shape):
            if index in (1, -1):
                return holder.width
            raise self._refuse(node, "the batch size (x.shape[0])",
                               "a cell's equations do not depend on it")
        value = self._value(node, holder, "what is indexed")
        if isinstance(value, Old) and isinstance(index, int):
            raise self._refuse(node, f"the state '{value.state}' is indexed or unpacked as a "
                               f"tuple, but --states names {len(self.states)} state"
                               f"{'s' if len(self.states) != 1 else ''} "
                               f"({', '.join(self.states)})", "give one name per tensor the "
                               "forward's state holds, in order (--states h,c)" + (
                                   "; one state is passed as the tensor itself, not a tuple "
                                   "of one: take it so, forward(x, h)"
                                   if len(self.states) == 1 else ""))
        index = index if isinstance(index, tuple) else (index,)
        if index and index[0] is Ellipsis:
            index = (slice(None), *index[1:])
        rows = index[0]
        if not (isinstance(rows, slice) and rows == slice(None)) or len(index) > 2 or \
                (len(index) == 2 and not isinstance(index[1], slice)):
            raise self._refuse(node, f"indexing with {index}", "a value is cut along its "
                               "units only, as value[:, a:b]")
        if len(index) == 1:
            return value
        start, stop, step = index[1].indices(value.width)
        if step != 1:
            raise self._refuse(node, "a slice with a step", "gates are contiguous units")
        return self._pieces(node, value, [start, stop - start, value.width - stop])[1]

    def size(self, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
        value = self._value(node, args[0], "what is sized")
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        if dim is None:
            return _Shape(value.width)
        return self.getitem(node, [_Shape(value.width), dim], {})

    def attribute(self, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
        holder, name = args[:2]
        value = self._value(node, holder, "whose attribute is read")
        if name == "shape":
            return _Shape(value.width)
        if name == "dtype":
            return next(self.traced.root.parameters(), self.torch.empty(0)).dtype
        if name == "device":
            return self.torch.device("cpu")
        raise self._refuse(node, f"the attribute .{name} of a value",
                           _WHY.get(name, "it is not one of the ops below"))

    def reshape(self, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """``v.view(-1, W)`` (tutorials flatten x so) is the value itself; other shapes are
        refused."""
        value = self._value(node, args[0], "what is reshaped")
        shape = args[1:] if len(args) > 1 else [kwargs.get("shape", kwargs.get("size"))]
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = list(shape[0])
        if list(shape) != [-1, value.width]:
            raise self._refuse(node, f"{self._call_name(node)} to the shape {tuple(shape)}",
                               _WHY["view"])
        return value

    def squeeze(self, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """``v.squeeze()`` drops axes of size one: only the batch of a single sequence can
        be one (a value of one unit is refused), so for a cell it is the value itself."""
        value = self._value(node, args[0], "what is squeezed")
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        if value.width == 1 or dim not in (None, 0):
            raise self._refuse(node, "squeeze of a value's units", _WHY["squeeze"])
        return value

    def divide(self, node: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
        left, right = args[:2]
        if kwargs.get("rounding_mode") is not None:
            raise self._refuse(node, f"a division with rounding_mode={kwargs['rounding_mode']!r}",
                               "a cell's values are not rounded")
        if not isinstance(left, Value) or isinstance(right, Value):
            raise self._refuse(node, "a division by a value",
                               "a cell divides by numbers only (v / 2)")
        divisor = self._number_or_vector(node, right, left.width)
        if np.any(np.asarray(divisor) == 0):
            raise self._refuse(node, "a division by 0" + (
                "" if isinstance(divisor, float) else " in some units"),
                               "a cell multiplies by the divisor's inverse; give the module "
                               "weights in which it is not 0 (--state-dict)")
        if isinstance(divisor, float):
            return self._apply(node, OPS["mul"], [left, 1 / divisor], {})
        inverse = self.torch.from_numpy(1 / divisor)
        self.provenance.record(inverse, self.provenance.sources(right), None)
        return self._apply(node, OPS["mul"], [left, inverse], {})


_HANDLERS: dict[str, Callable[[_Interpreter, Any, list[Any], dict[str, Any]], Any]] = {
    **dict.fromkeys(("torch.mm", "Tensor.mm", "torch.matmul", "Tensor.matmul",
                     "operator.matmul"), _Interpreter.matmul),
    **dict.fromkeys(("torch.addmm", "Tensor.addmm"), _Interpreter.addmm),
    **dict.fromkeys(("F.linear", "nn.Linear"), _Interpreter.linear),
    **dict.fromkeys(("torch.cat", "torch.concat", "torch.concatenate"), _Interpreter.cat),
    **dict.fromkeys(("torch.chunk", "Tensor.chunk"), _Interpreter.chunk),
    **dict.fromkeys(("torch.split", "Tensor.split"), _Interpreter.split),
    **dict.fromkeys(("torch.narrow", "Tensor.narrow"), _Interpreter.narrow),
    **dict.fromkeys(("Tensor.view", "Tensor.reshape", "torch.reshape"), _Interpreter.reshape),
    **dict.fromkeys(("Tensor.squeeze", "torch.squeeze"), _Interpreter.squeeze),
    "operator.getitem": _Interpreter.getitem,
    "Tensor.size": _Interpreter.size,
    "builtins.getattr": _Interpreter.attribute,
    **dict.fromkeys(("operator.truediv", "torch.div", "Tensor.div", "torch.true_divide"),
                    _Interpreter.divide),
}


#: Methods whose other operands give only a dtype, device or shape (``m.type_as(W)``):
#: only the first is read, for a parameter read without its gradient (``_concrete``).
_TEMPLATES = frozenset(("type_as", "to", "expand_as", "view_as", "reshape_as"))
#: The concrete ops whose result is a piece of their operand (``_Interpreter._cut``).
_CUTS = frozenset(("chunk", "split", "tensor_split", "narrow", "unbind", "select", "getitem"))


def _attribute(root: Any, target: str) -> Any:
    value = root
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _symbolic(item: Any) -> bool:
    if isinstance(item, (Value, _Shape)):
        return True
    if isinstance(item, (tuple, list)):
        return any(_symbolic(i) for i in item)
    if isinstance(item, dict):
        return any(_symbolic(i) for i in item.values())
    if isinstance(item, slice):
        return any(_symbolic(i) for i in (item.start, item.stop, item.step))
    return False


def _values(item: Any) -> list[Value]:
    if isinstance(item, Value):
        return [item]
    if isinstance(item, (tuple, list)):
        return [v for i in item for v in _values(i)]
    return []


def _rename(value: Value, name: str) -> None:
    where = value.where
    value.where = Where(where.file, where.line, name) if where is not None else \
        Where("", 0, name)


def _kind(item: Any) -> str:
    if isinstance(item, Value):
        return "a concatenation (torch.cat)" if isinstance(item, Cat) else "a value"
    if isinstance(item, (tuple, list)):
        return f"a {type(item).__name__} of {len(item)}"
    return f"a {type(item).__name__}"


def interpret(traced: Traced, states: Sequence[str], input_size: int, hidden_size: int
              ) -> Step:
    """The values of one step of a traced cell (see :class:`_Interpreter`)."""
    return _Interpreter(traced, states, input_size, hidden_size).run()
