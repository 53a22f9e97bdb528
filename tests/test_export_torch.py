"""``export --format torch``: a readable module that imports only torch, whose ``load()`` gives
the cell with its weights; PyTorch's autograd on it equals ``grad`` (x and every weight) to
1e-4 in float32 and 1e-10 in float64; it runs under torch.jit.script and torch.compile."""

from __future__ import annotations

import ast
import importlib.util
import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_export_onnx import EVERYTHING

import lstm_graph
from lstm_graph.export.torch_module import torch_names
from lstm_graph.language.parser import MAX_DEPTH

_COUNT = itertools.count()


def import_module(path):
    """The generated file as a fresh module (a unique name: each test's is another)."""
    spec = importlib.util.spec_from_file_location(f"exported_{next(_COUNT)}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def exported(tmp_path, runner, name="cell"):
    py, pt = runner.export_torch(tmp_path / f"{name}.py")
    assert py == tmp_path / f"{name}.py" and pt == tmp_path / f"{name}.pt"
    return import_module(py)


def module_key(runner, name):
    """Our parameter name -> the module's state-dict key."""
    return torch_names(list(runner.weights))[name]


def assert_gradients_equal(runner, model, dtype, tolerance):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((6, 3, runner.input_size)).astype(dtype)
    y, _ = runner(x)
    grad_y = rng.standard_normal(y.shape).astype(dtype)
    want = runner.grad(x, grad_y)
    xt = torch.from_numpy(x).requires_grad_()
    yt, final = model(xt)
    np.testing.assert_allclose(yt.detach().numpy(), y, rtol=0, atol=tolerance)
    (yt * torch.from_numpy(grad_y)).sum().backward()
    np.testing.assert_allclose(xt.grad.numpy(), want.x, rtol=0, atol=tolerance)
    parameters = dict(model.named_parameters())
    assert len(parameters) == len(want.weights)
    for name, value in want.weights.items():
        got = parameters[module_key(runner, name)].grad.numpy()
        np.testing.assert_allclose(got, value, rtol=0, atol=tolerance, err_msg=name)


CELLS = [*lstm_graph.builtin_names(), "everything"]


def cell_of(name):
    if name == "everything":
        return lstm_graph.compile_source(EVERYTHING, "everything.cell")
    return lstm_graph.load_cell(name)


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("dtype, tolerance", [("float32", 1e-4), ("float64", 1e-10)])
def test_the_modules_gradients_equal_grad_for_x_and_every_weight(tmp_path, name, dtype,
                                                                  tolerance):
    runner = cell_of(name).compile(input_size=3, hidden_size=4, seed=3, dtype=dtype,
                                   executor="numpy")
    model = exported(tmp_path, runner).load()
    assert next(model.parameters()).dtype == getattr(torch, dtype)
    assert_gradients_equal(runner, model, dtype, tolerance)


@pytest.mark.parametrize("name, layers, direction", [
    ("peephole_lstm", 2, "bidirectional"), ("gru", 1, "reverse"), ("rnn", 3, "forward")])
def test_stacks_export_as_a_module_of_cell_modules(tmp_path, name, layers, direction):
    runner = lstm_graph.load_cell(name).compile(input_size=3, hidden_size=4, seed=3,
                                                layers=layers, direction=direction,
                                                executor="numpy")
    module = exported(tmp_path, runner)
    model = module.load()
    assert_gradients_equal(runner, model, "float32", 1e-4)
    x = torch.randn(5, 2, 3)
    _, final = model(x)
    units = layers * (2 if direction == "bidirectional" else 1)
    assert final["h"].shape == ((units, 2, 4) if units > 1 else (2, 4))
    if units > 1:  # a stack continues from its states, (L·D, B, H) each
        y, _ = runner(x.numpy(), {k: v.detach().numpy() for k, v in final.items()})
        np.testing.assert_allclose(model(x, final)[0].detach().numpy(), y, atol=1e-5)


def test_the_module_reads_like_the_cell_and_imports_only_torch(tmp_path):
    runner = lstm_graph.load_cell("peephole_lstm").compile(input_size=3, hidden_size=4)
    runner.export_torch(tmp_path / "peephole.py")
    source = (tmp_path / "peephole.py").read_text()
    tree = ast.parse(source)
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in (node.names if isinstance(node, ast.Import) else
                              [ast.alias(node.module or "")])}
    assert imported == {"math", "os", "typing", "torch"}
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    assert classes == ["PeepholeLstm"]
    step = source[source.index("def step"):source.index("def forward")]
    order = [step.index(text) for text in (
        "# stage 1: f, i, g", "# forget valve", "f = torch.sigmoid(F.linear(x, self.f_W_x",
        "# stage 2: c", "c = f * c_prev + i * g", "# stage 3: o (waits for the new c)",
        "# output valve: reads the NEW memory", "self.o_p_c * c)", "# stage 4: h",
        "h = o * torch.tanh(c)", "return c, h")]
    assert order == sorted(order)
    assert "    f.W_x  f_W_x  (4, 3)" in source  # the docstring maps every parameter
    assert max(len(line) for line in source.splitlines()) <= 100


def test_long_equations_break_at_their_outermost_operators(tmp_path):
    """A break inside the deepest call left the rest 130 columns wide, aligned at 100."""
    text = ("cell fnconst\ninput x\nstate h\noutput h\nk = sigmoid(2) - softplus(-1)\n"
            "h = tanh(linear(x, h[t-1])) * k + leaky_relu(-3, 0.5)\n")
    runner = lstm_graph.compile_source(text, "fnconst.cell").compile(input_size=3,
                                                                     hidden_size=4)
    module = exported(tmp_path, runner)
    source = (tmp_path / "cell.py").read_text()
    assert max(len(line) for line in source.splitlines()) <= 99
    assert "        h = (torch.tanh(F.linear(x, self.h_W_x, self.h_b) + F.linear(h_prev, " \
        "self.h_W_h)) * k\n             + F.leaky_relu(x.new_full((), -3.0), 0.5))\n" in source
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype("float32")
    np.testing.assert_allclose(module.load()(torch.from_numpy(x))[0].detach().numpy(),
                               runner(x)[0], rtol=1e-5, atol=1e-6)


def test_the_module_runs_where_lstm_graph_is_not_installed(tmp_path):
    runner = lstm_graph.load_cell("gru").compile(input_size=3, hidden_size=4, seed=1)
    runner.export_torch(tmp_path / "gru_cell.py")
    # the docstring's example imports the module by the name it was written to
    assert "    import gru_cell\n    model = gru_cell.load()" in \
        (tmp_path / "gru_cell.py").read_text()
    x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    script = ("import sys, numpy, torch\n"
              "sys.modules['lstm_graph'] = None  # importing lstm_graph now fails\n"
              "import gru_cell\n"
              "y, final = gru_cell.load()(torch.from_numpy(numpy.load('x.npy')))\n"
              "numpy.save('y.npy', y.detach().numpy())\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), runner(x)[0], atol=1e-6)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("cell", [
    lstm_graph.load_cell("peephole_lstm"),
    # a function of a number: x.new_tensor(2.0), which TorchScript does not know
    lstm_graph.compile_source("cell k\ninput x\nstate h\noutput h\n"
                              "h = tanh(linear(x, h[t-1])) * sigmoid(2) + softplus(-1)\n",
                              "k.cell")], ids=["peephole_lstm", "numbers"])
def test_the_module_scripts_with_torch_jit_and_compiles_with_torch_compile(tmp_path, cell):
    runner = cell.compile(input_size=3, hidden_size=4, layers=2, direction="bidirectional")
    model = exported(tmp_path, runner).load()
    x = torch.randn(5, 2, 3)
    want = runner(x.numpy())[0]
    scripted = torch.jit.script(model)
    np.testing.assert_allclose(scripted(x)[0].detach().numpy(), want, atol=1e-5)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="eager", fullgraph=True)  # no graph break
    np.testing.assert_allclose(compiled(x)[0].detach().numpy(), want, atol=1e-5)


def test_the_export_command_writes_the_module_and_state_dict_grad_agrees(tmp_path,
                                                                         monkeypatch, cli_run):
    """The harness's way: params, export --format torch, load(), x.grad against grad."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.cell").write_text(EVERYTHING)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((7, 2, 4)).astype("float32")
    np.save("x.npy", x)
    for k, spec in enumerate(("lstm", "mine.cell")):
        cli_run("params", spec, "-I", "4", "-H", "3", "--out", "w.npz")
        done = cli_run("export", spec, "--weights", "w.npz", "--format", "torch", "--out",
                       f"d{k}/cell.py")
        assert (tmp_path / f"d{k}" / "cell.pt").is_file()
        assert "f.W_x" in done.stdout or "k.W_x" in done.stdout  # the parameter mapping
        gy = rng.standard_normal((7, 2, 3)).astype("float32")
        np.save("gy.npy", gy)
        cli_run("grad", spec, "--weights", "w.npz", "--input", "x.npy", "--grad-output",
                "gy.npy", "--out", "g.npz")
        cli_run("run", spec, "--weights", "w.npz", "--input", "x.npy", "--out", "y.npz")
        model = import_module(tmp_path / f"d{k}" / "cell.py").load()
        xt = torch.from_numpy(x).requires_grad_()
        y, _ = model(xt)
        np.testing.assert_allclose(y.detach().numpy(), np.load("y.npz")["y"], atol=1e-5)
        (y * torch.from_numpy(gy)).sum().backward()
        np.testing.assert_allclose(xt.grad.numpy(), np.load("g.npz")["x"], atol=1e-4)


def test_a_module_name_python_cannot_import_is_refused(tmp_path, cli_fails):
    """Wrong usage, as a suffix other than .py is (it was exit 1)."""
    for name in ("my-cell", "class"):
        assert f"{name}.py: '{name}' cannot be imported as a Python module" in cli_fails(
            "export", "lstm", "-I", "2", "-H", "2", "--format", "torch", "--out",
            tmp_path / f"{name}.py", code=2)
    with pytest.raises(lstm_graph.OutputError, match="'my-cell' cannot be imported"):
        lstm_graph.load_cell("lstm").compile(2, 2).export_torch(tmp_path / "my-cell.py")
    # an identifier Python reads otherwise: `import ℌ` looked for H.py (exit 0 before)
    for name, read in (("ℌ", "H"), ("ﬁlter", "filter"), ("ｃｅｌｌ", "cell")):
        assert f"'import {name}' looks for {read}.py (Python reads a name in its NFKC " \
            f"form); name the file {read}.py" in cli_fails(
                "export", "lstm", "-I", "2", "-H", "2", "--format", "torch", "--out",
                tmp_path / f"{name}.py", code=2)
    assert "'ｉｆ' cannot be imported" in cli_fails(
        "export", "lstm", "-I", "2", "-H", "2", "--format", "torch", "--out",
        tmp_path / "ｉｆ.py", code=2)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name, whose", [("torch", "PyTorch"), ("math", "the module"),
                                         ("numpy", "the module"), ("onnx", "the module"),
                                         ("sympy", "the module")])
def test_a_module_name_that_would_hide_another_module_is_refused(tmp_path, cli_fails, name,
                                                                 whose):
    """torch.py was written and checked, and then no script beside it could import torch
    (with numpy.py, import torch crashed); onnx.py and sympy.py, installed but not loaded
    while exporting, were written, and then lstm-graph run beside onnx.py failed with a
    traceback, and torch.compile beside sympy.py."""
    assert f"{name}.py: a module named '{name}' would hide {whose}" in cli_fails(
        "export", "lstm", "-I", "2", "-H", "2", "--format", "torch", "--out",
        tmp_path / f"{name}.py")
    assert not list(tmp_path.iterdir())


def test_a_state_dict_linked_to_the_module_is_refused(tmp_path, cli_fails):
    """The weights were written through the link and then replaced by the module."""
    (tmp_path / "s.pt").symlink_to("s.py")
    assert "--out and the state dict beside --out name the same file" in cli_fails(
        "export", "lstm", "-I", "2", "-H", "2", "--format", "torch", "--out",
        tmp_path / "s.py", code=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.pt"]


def test_a_state_dict_place_holding_what_no_earlier_export_wrote_is_left_alone(
        tmp_path, cli_run, cli_fails):
    """The .pt beside --out, a name the user never gave, was written over whatever it
    held (their own checkpoint; a link's target); an earlier export's is replaced (h84)."""
    args = ["export", "lstm", "-I", "2", "-H", "3", "--format", "torch", "--out",
            tmp_path / "model.py"]
    (tmp_path / "model.pt").write_bytes(b"a checkpoint of the user's")
    said = cli_fails(*args)
    assert said.startswith(f"{tmp_path / 'model.pt'}: the state dict's place beside model.py "
                           "holds a file lstm-graph did not write there"), said
    assert (tmp_path / "model.pt").read_bytes() == b"a checkpoint of the user's"
    (tmp_path / "model.pt").unlink()
    (tmp_path / "theirs.txt").write_bytes(b"theirs")
    (tmp_path / "model.pt").symlink_to(tmp_path / "theirs.txt")
    assert "holds a link lstm-graph did not write there" in cli_fails(*args)
    assert (tmp_path / "theirs.txt").read_bytes() == b"theirs"
    (tmp_path / "model.pt").unlink()
    cli_run(*args)
    first = (tmp_path / "model.pt").read_bytes()
    cli_run(args[0], "gru", *args[2:])  # an earlier export's pair: replaced
    assert (tmp_path / "model.pt").read_bytes() != first
    runner = lstm_graph.load_cell("gru").compile(input_size=2, hidden_size=3, seed=0)
    (tmp_path / "other.pt").write_bytes(b"x")
    with pytest.raises(lstm_graph.OutputError, match="holds a file lstm-graph did not"):
        runner.export_torch(tmp_path / "other.py")


def test_names_from_files_never_become_code_in_the_module(tmp_path):
    """A cell file's name (or a model's path) is text in the module's docstring: one whose
    name holds a docstring's quotes and code stays text, on export and on import."""
    ran = tmp_path / "ran"
    payload = f'x"""+str(__import__("pathlib").Path({str(ran)!r}).touch())+"""\\y'
    text = (Path(lstm_graph.__file__).parent / "cells" / "rnn.cell").read_text()
    cell = lstm_graph.compile_source(text, f"{payload}.cell", "rnn")
    module = exported(tmp_path, cell.compile(input_size=2, hidden_size=3, seed=0))
    assert not ran.exists()
    assert f"from {payload}.cell" in module.__doc__
    ast.parse((tmp_path / "cell.py").read_text())  # and nothing else broke


def test_a_module_that_cannot_be_written_leaves_the_earlier_state_dict(tmp_path, cli_run,
                                                                      cli_fails):
    """Both files or neither: where the .py cannot be written (a FIFO no one reads), the
    .pt of the earlier export stays as it was, not the new weights beside the old code."""
    cli_run("export", "rnn", "-I", "3", "-H", "4", "--format", "torch", "--out",
            tmp_path / "m.py")
    before = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "m.py").unlink()
    os.mkfifo(tmp_path / "m.py")
    assert "FIFO" in cli_fails("export", "lstm", "-I", "3", "-H", "4", "--format", "torch",
                               "--out", tmp_path / "m.py")
    assert (tmp_path / "m.pt").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "m.py"]
    (tmp_path / "m.pt").unlink()  # none there: nothing written
    assert "FIFO" in cli_fails("export", "lstm", "-I", "3", "-H", "4", "--format", "torch",
                               "--out", tmp_path / "m.py")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.py"]
    (tmp_path / "m.pt").symlink_to(os.devnull)  # a link of the user's: never removed
    cli_fails("export", "lstm", "-I", "3", "-H", "4", "--format", "torch", "--out",
              tmp_path / "m.py")
    assert (tmp_path / "m.pt").is_symlink()


@pytest.mark.parametrize("text", [
    "h = tanh(linear(x, h[t-1])) * sigmoid(2) + leaky_relu(-0.5 * 3, 0.1)",  # floats in calls
    "h = clip(h[t-1] + 1, 0.5)",  # no parameters
    "k = 2\nj = k * 3\nh = tanh(linear(x, h[t-1])) * sigmoid(-k) * softsign(j)",  # held
    # grouped on the right: h + g - g is 0 where g is near 3e8 (the export refused it)
    "a = tanh(linear(x, h[t-1]))\ng = a * 1e8 + 3e8\nj = a + (g - g)\nh = j * (j * 0.5)",
])
def test_functions_of_numbers_and_cells_without_parameters_export(tmp_path, text):
    cell = lstm_graph.compile_source(f"cell c\ninput x\nstate h\noutput h\n{text}\n", "c.cell")
    runner = cell.compile(input_size=3, hidden_size=3, seed=0)
    model = exported(tmp_path, runner).load()  # checked against the cell as it was written
    x = np.random.default_rng(2).standard_normal((4, 2, 3)).astype("float32")
    np.testing.assert_allclose(model(torch.from_numpy(x))[0].detach().numpy(), runner(x)[0],
                               atol=1e-6)


@pytest.mark.parametrize("header", ["input u\nstate h\noutput x\n",  # an output x
                                    "input u\nstate x, h\noutput h\n"])  # a state x
def test_a_value_named_x_beside_an_input_of_another_name_keeps_forward_s_x(tmp_path, header):
    """forward's parameter is x: a state or output the loop assigns takes another name (the
    output's assignment had overwritten the sequence from the first step on)."""
    body = "h = tanh(linear(u, h[t-1]))\nx = h * 2\n" if "output x" in header else \
        "h = tanh(linear(u, h[t-1], x[t-1]))\nx = h * 2\n"
    runner = lstm_graph.compile_source(f"cell c\n{header}{body}", "c.cell").compile(
        input_size=3, hidden_size=3, seed=0)
    model = exported(tmp_path, runner).load()
    x = np.random.default_rng(2).standard_normal((4, 2, 3)).astype("float32")
    np.testing.assert_allclose(model(torch.from_numpy(x))[0].detach().numpy(), runner(x)[0],
                               atol=1e-6)


def test_a_parameter_named_with_two_leading_underscores_keeps_its_key(tmp_path):
    """``self.__a_W_x`` in the class is Python's ``self._U__a_W_x``: the state dict's
    '__a_W_x' did not load, and the export failed its check as 'a bug'."""
    runner = lstm_graph.compile_source(
        "cell u\ninput x\nstate h\noutput h\n__a = linear(x)\nh = tanh(__a + h[t-1])\n",
        "u.cell").compile(input_size=3, hidden_size=4, seed=0)
    assert torch_names(list(runner.weights)) == {"__a.W_x": "p__a_W_x", "__a.b": "p__a_b"}
    model = exported(tmp_path, runner).load()
    x = np.random.default_rng(2).standard_normal((4, 2, 3)).astype("float32")
    np.testing.assert_allclose(model(torch.from_numpy(x))[0].detach().numpy(), runner(x)[0],
                               atol=1e-6)


def test_a_module_that_fails_its_check_is_a_bug_said_as_one_and_not_written(tmp_path,
                                                                          monkeypatch):
    def broken(text, name="m"):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr("lstm_graph.export.torch_module.load_source", broken)
    runner = lstm_graph.load_cell("rnn").compile(input_size=2, hidden_size=3)
    with pytest.raises(lstm_graph.DataError, match=re.escape(
            "the exported module failed its check (RuntimeError: mat1 and mat2 shapes cannot "
            "be multiplied); nothing was written (a bug in lstm-graph's export")):
        runner.export_torch(tmp_path / "m.py")
    assert not list(tmp_path.iterdir())


def test_an_expression_as_deep_as_the_language_allows_exports_and_prints(tmp_path):
    """Every part that walks an expression handles parser.MAX_DEPTH (the module's line was
    built by recursion: a RecursionError at 500 deep, which the language then accepted)."""
    terms = MAX_DEPTH - 4  # tanh, linear, h[...] and t-1 nest 4 more
    text = "h = tanh(linear(x, h[t-1]))" + " + h[t-1] * 0.001" * terms
    cell = lstm_graph.compile_source(f"cell deep\ninput x\nstate h\noutput h\n{text}\n",
                                     "deep.cell")
    assert cell.schedule.expression("h").count("h[t-1] * 0.001") == terms
    runner = cell.compile(input_size=3, hidden_size=3, seed=0)
    model = exported(tmp_path, runner).load()
    x = np.random.default_rng(2).standard_normal((4, 2, 3)).astype("float32")
    np.testing.assert_allclose(model(torch.from_numpy(x))[0].detach().numpy(), runner(x)[0],
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["WEIGHTS", "DTYPE"])
def test_a_cell_named_as_a_global_of_the_module_loads(tmp_path, name):
    """The finding: class WEIGHTS replaced the file name, and load() failed after a check
    that never calls it."""
    text = f"cell {name}\ninput x\nstate h\noutput h\nh = tanh(linear(x, h[t-1]))\n"
    runner = lstm_graph.compile_source(text, f"{name}.cell").compile(input_size=3,
                                                                    hidden_size=4, seed=1)
    module = exported(tmp_path, runner)
    x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype("float32")
    with torch.no_grad():
        np.testing.assert_allclose(module.load()(torch.from_numpy(x))[0].numpy(),
                                   runner(x)[0], rtol=0, atol=1e-6)


def test_captions_states_and_negative_numbers_read_as_written_within_the_width(tmp_path):
    """A caption longer than a line, broken inside its parentheses, made a line of code of
    its words (the module failed its check); the step's signature, the loop and the
    return ran past 99 columns with three states; a negative number was added (``+
    -0.25``)."""
    text = ("cell three\ninput x\nstate alpha_state, beta_state, gamma_state\n"
            "output gamma_state\n"
            "alpha_state = affine(tanh(linear(x, gamma_state[t-1])), 2, -0.25)  # the first "
            "(a caption, with parentheses, commas, and + signs - and more) longer than a line\n"
            "beta_state = alpha_state * beta_state[t-1] + -1.5\n"
            "gamma_state = tanh(linear(beta_state, alpha_state)) * hard_sigmoid(beta_state, "
            "0.2, -0.5)\n")
    runner = lstm_graph.compile_source(text, "three.cell").compile(
        input_size=3, hidden_size=4, seed=1, layers=2, direction="bidirectional")
    module = exported(tmp_path, runner)
    source = (tmp_path / "cell.py").read_text()
    assert max(len(line) for line in source.splitlines()) <= 99
    assert "        # the first (a caption, with parentheses, commas, and + signs - and more)" \
        " longer than a\n        # line\n" in source
    assert "beta_state = alpha_state * beta_state_prev - 1.5\n" in source
    assert ") - 0.25)\n" in source and "+ -" not in source
    assert "                       * torch.clamp(0.2 * beta_state - 0.5, 0.0, 1.0))\n" in source
    x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype("float32")
    with torch.no_grad():
        np.testing.assert_allclose(module.load()(torch.from_numpy(x))[0].numpy(),
                                   runner(x)[0], rtol=0, atol=1e-6)


def test_a_state_python_cannot_assign_is_renamed_in_the_module(tmp_path):
    """The finding: state __debug__ validated and ran, and its export failed as a bug
    (SyntaxError: cannot assign to __debug__)."""
    text = "input x\nstate __debug__\noutput __debug__\n" \
           "__debug__ = tanh(linear(x, __debug__[t-1]))\n"
    runner = lstm_graph.compile_source(text, "dbg.cell").compile(input_size=3, hidden_size=4,
                                                                  seed=1)
    module = exported(tmp_path, runner)
    x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype("float32")
    with torch.no_grad():
        y, final = module.load()(torch.from_numpy(x))
    np.testing.assert_allclose(y.numpy(), runner(x)[0], rtol=0, atol=1e-6)
    assert set(final) == {"__debug__"}


def test_the_module_comes_back_through_from_torch_by_its_step(tmp_path, cli_process):
    """What docs/export.md says: a subclass whose forward calls step converts back to the
    cell, checked against the module."""
    runner = lstm_graph.load_cell("peephole_lstm").compile(input_size=3, hidden_size=4, seed=2)
    runner.export_torch(tmp_path / "plmod.py")
    (tmp_path / "wrap.py").write_text(
        "from plmod import PeepholeLstm\n\n\nclass Step(PeepholeLstm):\n"
        "    def forward(self, x, state):\n        c, h = self.step(x, *state)\n"
        "        return h, (c, h)\n")
    done = cli_process("from-torch", "wrap.py:Step", "--input-size", "3", "--hidden-size", "4",
                       "--states", "c,h", "--state-dict", "plmod.pt", "--out", "back.cell",
                       "--weights-out", "back.npz", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "checked: the cell equals the module" in done.stdout
    back = lstm_graph.load_cell(str(tmp_path / "back.cell")).compile(
        weights=str(tmp_path / "back.npz"))
    x = np.random.default_rng(0).standard_normal((6, 2, 3)).astype("float32")
    np.testing.assert_allclose(back(x)[0], runner(x)[0], atol=1e-6)
    # the installed command, whose sys.path starts at its own folder, not the working
    # directory, from elsewhere: wrap.py's import of plmod is found beside it
    script = Path(sys.executable).parent / "lstm-graph"
    if not script.exists():
        pytest.skip(f"no console script at {script}")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    again = subprocess.run([str(script), "from-torch", "../wrap.py:Step", "-I", "3", "-H", "4",
                            "--states", "c,h", "--state-dict", "../plmod.pt", "--out",
                            "back.cell", "--weights-out", "back.npz"], cwd=elsewhere,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert (elsewhere / "back.cell").read_text() == (tmp_path / "back.cell").read_text()


def test_a_module_written_through_a_link_finds_its_weights_by_either_name(tmp_path,
                                                                         cli_run):
    """``--out here/lnk.py`` linking to ``there/victim.py``: the module went to the link's
    target and its state dict beside the link (``here/lnk.pt``), so importing victim
    could not load its weights. Both are beside the target now, found through the link."""
    (tmp_path / "here").mkdir()
    (tmp_path / "there").mkdir()
    (tmp_path / "there" / "victim.py").write_text("# an earlier module\n")
    (tmp_path / "here" / "lnk.py").symlink_to(tmp_path / "there" / "victim.py")
    cli_run("export", "gru", "-I", "3", "-H", "4", "--seed", "5", "--format", "torch",
            "--out", tmp_path / "here" / "lnk.py")
    assert sorted(p.name for p in (tmp_path / "there").iterdir()) == ["victim.pt", "victim.py"]
    assert sorted(p.name for p in (tmp_path / "here").iterdir()) == ["lnk.py"]
    runner = lstm_graph.load_cell("gru").compile(input_size=3, hidden_size=4, seed=5)
    x = np.random.default_rng(1).standard_normal((5, 2, 3)).astype("float32")
    for path in (tmp_path / "there" / "victim.py", tmp_path / "here" / "lnk.py"):
        with torch.no_grad():
            y, _ = import_module(path).load()(torch.from_numpy(x))
        np.testing.assert_allclose(y.numpy(), runner(x)[0], rtol=0, atol=1e-6)
