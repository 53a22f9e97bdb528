"""``from-torch``: PyTorch cells written the ways people write them become ``.cell`` files
whose ``run`` equals the module stepped over the sequence (1e-5), named as the code names
its values; what a cell cannot express is refused with the op, the line and what is
supported, exit 1, no traceback."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import invoke_cli, needs_dot

import lstm_graph
from lstm_graph.errors import LstmGraphWarning
from lstm_graph.frontends.from_torch import convert, step_module
from lstm_graph.frontends.torch_fx import load_class, make_module

CELLS = Path(__file__).with_name("torch_cells.py")
IN, HID = 3, 5

#: class -> its states, in the order its forward's state holds them.
CONVERTIBLE = {"FastLSTMCell": "h,c", "GateLinearLSTM": "h,c", "CatLSTM": "h,c",
               "FLinearLSTM": "c,h", "TutorialGRU": "h", "PeepholeLSTM": "h,c",
               "Activations": "h", "DerivedWeights": "h", "PeepholeSplit": "h",
               "NarrowGates": "h", "AddToState": "h", "GatedHalves": "h", "Regrouped": "h"}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Each convertible class converted by the command from a trained-looking state dict:
    class -> (folder, module with those weights, the command's result)."""
    folder = tmp_path_factory.mktemp("from_torch")
    out = {}
    for name, states in CONVERTIBLE.items():
        cls = load_class(CELLS, name)
        torch.manual_seed(1234)  # other weights than the class's own initialisation
        source = cls(IN, HID)
        with torch.no_grad():
            for parameter in source.parameters():
                parameter.copy_(torch.randn_like(parameter) * 0.5)
        torch.save(source.state_dict(), folder / f"{name}.pt")
        result = invoke_cli(  # the cli fixtures are per test; this is once for the module
            "from-torch", f"{CELLS}:{name}", "--input-size", IN, "--hidden-size", HID,
            "--states", states, "--state-dict", folder / f"{name}.pt",
            "--out", folder / f"{name}.cell", "--weights-out", folder / f"{name}.npz")
        module = make_module(cls, CELLS, IN, HID, folder / f"{name}.pt")
        out[name] = (folder, module, result)
    return out


@pytest.mark.parametrize("name", sorted(CONVERTIBLE))
def test_run_of_the_converted_cell_equals_the_module_stepped_over_the_sequence(converted,
                                                                               name, cli_run):
    folder, module, result = converted[name]
    assert result.exit_code == 0, (result.exit_code, result.stderr, result.exception)
    assert "checked: the cell equals the module" in result.stdout
    x = np.random.default_rng(9).standard_normal((12, 4, IN)).astype("float32")
    np.save(folder / "x.npy", x)
    cli_run("run", folder / f"{name}.cell", "--weights", folder / f"{name}.npz", "--input",
            folder / "x.npy", "--out", folder / "y.npz")
    states = CONVERTIBLE[name].split(",")
    want_y, want = step_module(module, x, states, HID)
    got = np.load(folder / "y.npz")
    np.testing.assert_allclose(got["y"], want_y, rtol=0, atol=1e-5)
    for state in states:
        np.testing.assert_allclose(got[state], want[state], rtol=0, atol=1e-5)


def test_the_state_dict_is_what_runs_not_the_classes_initialisation(converted, tmp_path,
                                                                    cli_run):
    folder = converted["FastLSTMCell"][0]
    cli_run("from-torch", f"{CELLS}:FastLSTMCell", "-I", IN, "-H", HID, "--states", "h,c",
            "--out", tmp_path / "fresh.cell", "--weights-out", tmp_path / "fresh.npz")
    trained, fresh = np.load(folder / "FastLSTMCell.npz"), np.load(tmp_path / "fresh.npz")
    assert set(trained) == set(fresh)
    assert not np.allclose(trained["forgetgate.W_x"], fresh["forgetgate.W_x"])
    sd = torch.load(folder / "FastLSTMCell.pt")
    np.testing.assert_array_equal(trained["forgetgate.W_x"], sd["weight_ih"][HID:2 * HID].numpy())


def cell_text(converted, name):
    return (converted[name][0] / f"{name}.cell").read_text()


def test_the_fastrnns_cell_reads_like_its_code(converted):
    text = cell_text(converted, "FastLSTMCell")
    for line in ("input x", "state h, c", "output h",
                 "ingate = sigmoid(linear(x, h[t-1]))", "forgetgate = sigmoid(linear(x, h[t-1]))",
                 "cellgate = tanh(linear(x, h[t-1]))", "outgate = sigmoid(linear(x, h[t-1]))",
                 "c = forgetgate * c[t-1] + ingate * cellgate", "h = outgate * tanh(c)"):
        assert re.search(rf"^{re.escape(line)}", text, re.MULTILINE), line
    assert re.search(r"^c = .*# cy, torch_cells\.py:\d+$", text, re.MULTILINE)
    cell = lstm_graph.load_cell(converted["FastLSTMCell"][0] / "FastLSTMCell.cell")
    assert cell.schedule.stages == (("ingate", "forgetgate", "cellgate", "outgate"), ("c",),
                                    ("h",))


def test_a_cat_into_one_linear_splits_into_each_operands_own_weights(converted):
    folder, module, _ = converted["CatLSTM"]
    weights = np.load(folder / "CatLSTM.npz")
    big = module.gates.weight.detach().numpy()  # (4H, I + H): the columns of x, then of h
    np.testing.assert_array_equal(weights["f.W_x"], big[HID:2 * HID, :IN])
    np.testing.assert_array_equal(weights["f.W_h"], big[HID:2 * HID, IN:])


def test_peepholes_are_element_wise_weights_and_the_output_valve_waits(converted, cli_run):
    text = cell_text(converted, "PeepholeLSTM")
    assert "o = sigmoid(linear(x, h[t-1], peep(c)))" in text
    assert "f = sigmoid(linear(x, h[t-1], peep(c[t-1])))" in text
    done = cli_run("schedule", converted["PeepholeLSTM"][0] / "PeepholeLSTM.cell")
    assert "stage 3: o   (waits for the new c)" in done.stdout


def test_a_gru_with_one_minus_z_and_its_split_candidate(converted):
    text = cell_text(converted, "TutorialGRU")
    assert "newgate = tanh(i_n + resetgate * h_n)" in text
    assert "h = (1 - inputgate) * newgate + inputgate * h[t-1]" in text


def test_sums_and_products_keep_their_grouping(converted):
    """Floating point's + and * are not associative: h + (g - g) written h + g - g ran
    0.76 off the module in float32 (the check, in float64, let it through)."""
    text = (converted["Regrouped"][0] / "Regrouped.cell").read_text()
    assert re.search(r"^o = h \+ \(g - g\)", text, re.M), text
    assert "o * (o * 0.5)" in text, text


def test_numbers_are_written_exactly(converted):
    text = cell_text(converted, "Activations")
    assert "hard_sigmoid(pre, 0.16666666666666666)" in text  # F.hardsigmoid's 1/6
    assert "leaky_relu(pre, 0.1)" in text and "elu(pre, 0.5)" in text


def test_a_call_that_computes_otherwise_at_nan_is_converted_with_a_warning(converted):
    """F.threshold keeps NaN, thresholded_relu (ONNX's) gives 0: said, not silent."""
    stderr = converted["Activations"][2].stderr
    assert "warning: F.threshold becomes thresholded_relu: PyTorch's threshold keeps a NaN, " \
        "where thresholded_relu (ONNX's ThresholdedRelu) gives 0" in stderr, stderr
    assert "F.threshold" not in converted["FastLSTMCell"][2].stderr


@needs_dot
@pytest.mark.parametrize("name", ["FastLSTMCell", "PeepholeLSTM", "TutorialGRU"])
def test_converted_cells_validate_and_draw_in_both_styles(converted, name, tmp_path, cli_run):
    path = converted[name][0] / f"{name}.cell"
    assert "ok" in cli_run("validate", path).stdout
    cli_run("render", path, "--out", tmp_path / "d")
    pipe = (tmp_path / "d.pipe.svg").read_text()
    assert "torch_cells.py:" in pipe  # the captions say which line made each value


REFUSALS = {
    "RefuseLayerNorm": ("h", "nn.LayerNorm (self.ln)", "normalisation",
                        "z = self.ln(self.lin(torch.cat([x, h], 1)))"),
    "RefuseSubAlpha": ("h", "torch.sub: alpha=3.0 scales the second operand",
                       "torch.sub as a - 3.0 * b",  # said 'a + 0.5 * b', whatever alpha was
                       "h = torch.tanh(torch.sub(self.a(x), torch.tanh(self.b(h)), "
                       "alpha=3.0))"),
    # "not one of the ops below", with no word of the state dict that runs as it is
    "RefuseWrappedCell": ("h,c", "nn.LSTMCell (self.cell)", "'lstm-graph run lstm --weights "
                          "sd.pt'", "h, c = self.cell(x, state)"),
    "RefuseSum": ("h", "Tensor.sum", "reduces over the units",
                  "scale = h.sum(dim=1, keepdim=True)"),
    "RefuseBranch": ("h", "RefuseBranch.forward cannot be traced", "branches on a tensor",
                     "if h.abs().max() > 1:"),
    "RefuseInPlace": ("h", "Tensor.sigmoid_ is in place",  # said torch.sigmoid(x) of mul_
                      "write its result as a new value (y = torch.sigmoid(…) of the same "
                      "operands)", "z.sigmoid_()"),
    # F.dropout trains by default: the module's eval mode does not reach it
    "RefuseDropoutDefault": ("h", "dropout while training", "F.dropout trains unless told: "
                             "pass training=self.training",
                             "h = F.dropout(torch.tanh(self.lin(torch.cat([x, h], 1))), 0.2)"),
    # was told to cut it into gates, with no line
    "RefuseProjection": ("h", "a linear of 2 units is used whole", "a projection to another "
                         "size is not a linear a cell can hold", "return self.proj(h), h"),
    # was PyTorch's 'only one element tensors can be converted to Python scalars'
    "RefuseClampPerUnit": ("h", "torch.clamp", "clip takes one number for every unit's "
                           "bounds", "h = torch.clamp(self.lin(torch.cat([x, h], 1)), -self.t, "
                           "self.t)"),
    # each was 'not one of the ops below', with no word of why
    "RefuseDetach": ("h", "Tensor.detach", "it stops gradients, which a cell's equations "
                     "cannot say", "h = torch.tanh(self.lin(torch.cat([x, h.detach()], 1)))"),
    "RefuseDtype": ("h", "Tensor.to", "it changes a tensor's dtype or device",
                    "h = torch.tanh(self.lin(torch.cat([x.to(h.dtype), h], 1)))"),
    "RefuseDivInPlace": ("h", "Tensor.div_ is in place", "write its result as a new value",
                         "z.div_(2.0)"),
    # each said only what it lacked or was
    "RefuseClampMin": ("h", "torch.clamp without max", "the op table's clip takes min and "
                       "max both, so a bound of one side is not one of its ops (torch.relu(z) "
                       "is clamp(z, min=0))",
                       "h = torch.clamp(self.lin(torch.cat([x, h], 1)), min=0.0)"),
    "RefuseDictState": ("h,c", "RefuseDictState.forward returns a dict as its new state",
                        "return its tensors as a tuple, in the order --states names them "
                        "(h, c)", 'return torch.tanh(c), {"h": torch.tanh(c), "c": c}'),
    "RefuseGradFlag": ("h", "Tensor.requires_grad_ cannot be part of a cell",  # said in place
                       "it stops gradients", "frozen = self.lin(torch.cat([x, h], 1))"
                       ".requires_grad_(False)"),
    "RefuseRankBranch": ("h", "RefuseRankBranch.forward cannot be traced", "or on what "
                         "torch.fx cannot know while it traces: x.dim()", "if x.dim() == 1:"),
    "RefuseWeightNormed": ("h", "nn.ParametrizedLinear (self.lin) cannot be part of a cell",
                           "fold them into plain weights first (torch.nn.utils.parametrize."
                           "remove_parametrizations(module, 'weight'))",
                           "normed = self.lin(torch.cat([x, h], 1))"),
}


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_what_a_cell_cannot_express_is_refused_with_op_line_and_what_is_supported(
        tmp_path, name, cli_fails):
    states, op, why, source_line = REFUSALS[name]
    stderr = cli_fails("from-torch", f"{CELLS}:{name}", "-I", "3", "-H", "4", "--states",
                       states, "--out", tmp_path / "c.cell", "--weights-out", tmp_path / "w.npz")
    line = next(k for k, text in enumerate(CELLS.read_text().splitlines(), 1)
                if text.strip() == source_line)
    assert f"torch_cells.py:{line}: error: " in stderr
    assert op in stderr and why in stderr and source_line in stderr
    assert "from-torch converts:" in stderr or name in ("RefuseBranch", "RefuseDictState")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name, change", [
    ("RefuseCounter", "attribute 'calls' (0 -> 1)"),
    ("RefuseSeen", "attribute 'seen' ({'calls': 0} -> {'calls': 1})"),
    ("RefuseBufferCounter", "buffer 'calls' ([0.0] -> [1.0])"),
    ("RefuseParameterCounter", "parameter 'k' ([0.0] -> [1.0])"),
])
def test_a_forward_that_changes_the_module_s_own_attributes_is_refused(tmp_path, name,
                                                                      change, cli_fails):
    stderr = cli_fails("from-torch", f"{CELLS}:{name}", "-I", "3", "-H", "4",
                       "--states", "h", "--out", tmp_path / "c.cell", "--weights-out",
                       tmp_path / "w.npz")
    assert f"{name}.forward changes the module's {change}" in stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name, message", [
    ("RefuseDivideByZero", "torch_cells.py:{line}: error: RefuseDivideByZero.forward: a "
     "division by 0: a cell multiplies by the divisor's inverse"),
    ("RefuseNoise", "RefuseNoise.forward gives other outputs for the same input and states "
     "from one call to the next"),
    ("RefuseAlias", "the forward has augmented assignments (torch_cells.py:{line}): "
     "torch.fx traces 'z += v' as 'z = z + v'"),
    ("RefuseLearnedSlope", "RefuseLearnedSlope.forward, called as itself to check the "
     "converted cell (in float64, from zero states), raised TypeError: leaky_relu(): "
     "argument 'negative_slope' (position 2) must be Number, not Parameter; torch.fx traced "
     "it, but the module does not run as traced; nothing was written"),
    ("RefuseSplitSizes", "RefuseSplitSizes.forward, called as itself to check the converted "
     "cell (in float64, from zero states), raised RuntimeError: split_with_sizes expects "
     "split_sizes to sum exactly to 12"),
])
def test_a_forward_that_is_not_one_function_of_its_input_and_states_is_refused_saying_why(
        tmp_path, name, message, cli_fails):
    """Each was a traceback (a division by a parameter that is 0) or a refusal blaming
    from-torch itself (random numbers, an in-place change that torch.fx traces as a new
    tensor)."""
    stderr = cli_fails("from-torch", f"{CELLS}:{name}", "-I", "3", "-H", "4", "--states",
                       "h", "--out", tmp_path / "c.cell", "--weights-out", tmp_path / "w.npz")
    source = CELLS.read_text().splitlines()
    start = source.index(f"class {name}(nn.Module):")
    line = next(k for k in range(start, len(source))
                if "/ self.temperature" in source[k] or source[k].strip() == "z += h") + 1
    assert message.format(line=line) in " ".join(stderr.split())
    assert "a bug in from-torch" not in stderr and not list(tmp_path.iterdir())


def test_the_input_where_the_hidden_size_belongs_is_refused_even_where_the_sizes_agree(
        tmp_path, cli_fails):
    """With I = H the sizes agree, but a cell keeps x's size apart: the written cell failed
    its own validation, reported as a bug in from-torch."""
    stderr = cli_fails("from-torch", f"{CELLS}:RefuseInputAsHidden", "-I", "4", "-H", "4",
                       "--states", "h", "--out", tmp_path / "c.cell", "--weights-out",
                       tmp_path / "w.npz")
    assert "RefuseInputAsHidden.forward: + of the input x (or a value of its size) and a " \
        "value of the states' size: in a cell the input x has a size of its own (I)" in stderr
    assert "h = torch.tanh(x + self.lin(h))" in stderr and "bug" not in stderr


@pytest.mark.parametrize("name, source_line, message", [
    ("RefuseArity", "def __init__(self, input_size, hidden_size, depth):",
     "RefuseArity(3, 4) failed: TypeError"),
    ("RefuseOneReturn", "return torch.tanh(self.lin(torch.cat([x, h], 1)))",
     "RefuseOneReturn.forward returns a value; a cell's forward returns (out, new_state)"),
    # "it must be a tensor computed from x and the states", which it is
    ("RefuseCatOutput", "return joined, joined", "RefuseCatOutput.forward returns a concatenation "
     "(torch.cat) as its output; a cell's output and states are values of H units"),
])
def test_a_module_of_the_wrong_form_is_refused_at_its_line(tmp_path, name, source_line,
                                                           message, cli_fails):
    stderr = cli_fails("from-torch", f"{CELLS}:{name}", "-I", "3", "-H", "4", "--states", "h",
                       "--out", tmp_path / "c.cell", "--weights-out", tmp_path / "w.npz")
    line = next(k for k, text in enumerate(CELLS.read_text().splitlines(), 1)
                if text.strip() == source_line)
    assert f"torch_cells.py:{line}: error: {message}" in stderr
    assert f"\n    {source_line}\n" in stderr  # the line, as every refusal shows it


@pytest.mark.parametrize("args, message", [
    (["nowhere.py:Cell"], "no such file"),
    ([f"{CELLS.parent}:Cell"], "is a directory, not a file"),  # was "no such file"
    ([f"{CELLS}"], "FILE.py:CLASS"),
    ([f"{CELLS}:Missing"], "no class 'Missing' (its nn.Module classes: Activations, AddToState"),
    ([f"{CELLS}:FastLSTMCell", "--states", "h"], "unpacked as a tuple, but --states names 1"),
    ([f"{CELLS}:TutorialGRU", "--states", "h,c"], "used as one tensor, but --states names 2"),
    ([f"{CELLS}:FastLSTMCell", "--states", "h,input"], "'input' cannot name a state"),
    # written, and then refused by run: y is the output's name there
    ([f"{CELLS}:DerivedWeights", "--states", "y"], "'y' cannot name a state: run writes"),

    # a TypeError from torch.cat, with no word of the states
    ([f"{CELLS}:DerivedWeights", "--states", "h,c"], "(--states named the state passed to "
     "forward as a tuple of 2 tensors (h, c): if the forward takes another number"),
    ([f"{CELLS}:FastLSTMCell", "--states", "None,c"], "'None' is a keyword"),  # no longer
    ([f"{CELLS}:FastLSTMCell", "--states", "\u210e,c"], "reads as 'h'"),  # "a bug"
    ([f"{CELLS}:FastLSTMCell", "--states", "h,,c"], "has an empty name"),  # was h,c
    # each said to give one name per tensor, which the user had done
    ([f"{CELLS}:RefuseOneTuple", "--states", "h"], "one state is passed as the tensor "
     "itself, not a tuple of one: take it so, forward(x, h)"),
    ([f"{CELLS}:RefuseNumberOfData", "--states", "h"], "(a tensor's value made a Python "
     "number (float(), int(), .item()) depends on the data, and a cell's equations cannot: "
     "keep it a tensor)"),
])
def test_wrong_sources_and_states_are_said_plainly(tmp_path, args, message, cli_fails):
    states = [] if "--states" in args else ["--states", "h,c"]
    # how SOURCE and --states are written is usage (exit 2); what the module does, data
    usage = message in ("FILE.py:CLASS", "'input' cannot name a state", "'y' cannot name a "
                        "state: run writes", "'None' is a keyword", "reads as 'h'",
                        "has an empty name")
    assert message in cli_fails("from-torch", *args, "-I", "3", "-H", "4", *states, "--out",
                                tmp_path / "c.cell", "--weights-out", tmp_path / "w.npz",
                                code=2 if usage else 1)
    assert not list(tmp_path.iterdir())


_PLANTED = "open({marker!r}, 'w').write('ran')\n"


def test_bytecode_beside_the_file_is_never_run_nor_written(tmp_path, cli_run, monkeypatch):
    """The module was imported: a ``__pycache__/*.pyc`` matching the file's time and size,
    which another user could plant in a shared directory, ran in its place, and a
    ``__pycache__`` was made beside the user's file."""
    folder = tmp_path / "mine"
    folder.mkdir()
    source = folder / "cells.py"
    shutil.copy(CELLS, source)
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # Python's default
    cli_run("from-torch", f"{source}:FastLSTMCell", "-I", IN, "-H", HID, "--states", "h,c",
            "--out", tmp_path / "a.cell", "--weights-out", tmp_path / "a.npz")
    assert sorted(p.name for p in folder.iterdir()) == ["cells.py"]
    marker = tmp_path / "ran"
    code = compile(_PLANTED.format(marker=str(marker)), str(source), "exec")
    status = source.stat()
    (folder / "__pycache__").mkdir()
    cached = importlib.util.cache_from_source(str(source))
    Path(cached).write_bytes(importlib._bootstrap_external._code_to_timestamp_pyc(
        code, int(status.st_mtime), status.st_size))
    cli_run("from-torch", f"{source}:FastLSTMCell", "-I", IN, "-H", HID, "--states", "h,c",
            "--out", tmp_path / "b.cell", "--weights-out", tmp_path / "b.npz")
    assert not marker.exists()
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


def test_code_another_user_may_have_written_is_not_run(tmp_path, cli_fails):
    """Nothing is loaded from a place another user can write: a file others can write, in
    a directory where they can replace it, or another user's."""
    shared = tmp_path / "shared"
    shared.mkdir()
    source = shared / "cells.py"
    shutil.copy(CELLS, source)
    args = ["-I", IN, "-H", HID, "--states", "h,c", "--out", tmp_path / "c.cell",
            "--weights-out", tmp_path / "w.npz"]
    source.chmod(0o666)
    assert "cells.py: other users can write it (mode 0666), so its code is not run" in \
        cli_fails("from-torch", f"{source}:FastLSTMCell", *args)
    source.chmod(0o644)
    shared.chmod(0o777)
    assert f"cells.py: other users can replace it in {shared}, so its code is not run" in \
        cli_fails("from-torch", f"{source}:FastLSTMCell", *args)
    shared.chmod(0o700)
    if os.geteuid() == 0:
        os.chown(source, 65534, -1)
        assert "cells.py: it belongs to another user (uid 65534), so its code is not run" in \
            cli_fails("from-torch", f"{source}:FastLSTMCell", *args)
    assert not (tmp_path / "c.cell").exists()


def test_a_conversion_too_large_for_memory_is_refused_before_it_is_traced(tmp_path,
                                                                         cli_fails):
    """A hidden size of 40,000 was killed after two minutes at 23 GB, without a word: the
    module's parameters, once made, size the conversion before any of it."""
    said = cli_fails("from-torch", f"{CELLS}:FastLSTMCell", "-I", IN, "-H", "600",
                     "--states", "h,c", "--out", tmp_path / "c.cell", "--weights-out",
                     tmp_path / "w.npz", env={"LSTM_GRAPH_MAX_BYTES": "50M"})
    assert "FastLSTMCell's parameters and buffers, the 7 float64 copies a conversion holds " \
        "of shape (7, " in said and "more than the limit of 52.4 MB set by " \
        "LSTM_GRAPH_MAX_BYTES" in said, said
    assert not list(tmp_path.iterdir())


def test_a_module_beside_the_file_is_imported_only_where_no_other_user_can_put_it(
        tmp_path, cli_fails, cli_run):
    """FILE.py's own folder is where its imports are found first, as `python FILE.py` has
    it; in a folder others can write in (/tmp: its sticky bit keeps FILE.py theirs, not
    what is put beside it), a module there is not imported."""
    folder = tmp_path / "sticky"
    folder.mkdir()
    (folder / "lg_sibling_cells.py").write_text(CELLS.read_text())
    (folder / "wrap.py").write_text("from lg_sibling_cells import FastLSTMCell as Cell\n")
    args = ["-I", IN, "-H", HID, "--states", "h,c", "--out", tmp_path / "c.cell",
            "--weights-out", tmp_path / "w.npz"]
    folder.chmod(0o1777)
    assert f"No module named 'lg_sibling_cells' ({folder} is not searched for modules: " \
        "other users can write in it)" in cli_fails(
            "from-torch", f"{folder / 'wrap.py'}:Cell", *args)
    folder.chmod(0o755)
    cli_run("from-torch", f"{folder / 'wrap.py'}:Cell", *args)
    assert (tmp_path / "c.cell").exists()
    assert "lg_sibling_cells" not in sys.modules  # a later file's sibling of that name: its own


@pytest.mark.parametrize("made", ["lg_open_helper.py", "lg_open_pkg/__init__.py"])
def test_a_module_beside_the_file_that_others_can_write_is_not_run(tmp_path, cli_fails, made):
    """FILE.py's own folder is the user's, but a module in it that others can write (mode
    0666), or a package folder there that they can write in (0777), was imported and run
    (its marker file appeared); FILE.py itself was refused so."""
    ran = tmp_path / "ran.txt"
    module = tmp_path / "cells" / made
    module.parent.mkdir(parents=True, exist_ok=True)
    module.write_text(f"open({str(ran)!r}, 'w').write('ran')\nfrom torch import tanh as act\n")
    open_one = module if made.endswith("helper.py") else module.parent
    open_one.chmod(0o666 if open_one.is_file() else 0o777)
    name = made.split("/")[0].removesuffix(".py")
    (tmp_path / "cells" / "wrap.py").write_text(
        f"import torch\nfrom torch import nn\nfrom {name} import act\n\n\n"
        "class Cell(nn.Module):\n    def __init__(self, i, h):\n        super().__init__()\n"
        "        self.l = nn.Linear(i + h, h)\n\n    def forward(self, x, h):\n"
        "        h = act(self.l(torch.cat([x, h], 1)))\n        return h, h\n")
    err = cli_fails("from-torch", f"{tmp_path / 'cells' / 'wrap.py'}:Cell", "-I", IN, "-H",
                    HID, "--states", "h", "--out", tmp_path / "c.cell", "--weights-out",
                    tmp_path / "w.npz")
    assert re.search(r"wrap\.py:3: error: importing .*wrap\.py failed: ImportError: .*"
                     + re.escape(made if open_one.is_file() else made.split("/")[0])
                     + r".*other users can write", err), err
    assert "so its code is not run" in err
    assert not ran.exists() and not (tmp_path / "c.cell").exists()
    assert not list(tmp_path.rglob("__pycache__"))  # nothing written beside them either


def test_modules_of_one_s_own_beside_the_file_are_imported_linked_or_in_packages(tmp_path,
                                                                                  monkeypatch):
    """What the check of modules beside FILE.py must let through: a package importing a
    sibling relatively, and a module that is a link to the user's file elsewhere."""
    cells, shared = tmp_path / "cells", tmp_path / "shared"
    (cells / "lg_acts").mkdir(parents=True)
    shared.mkdir()
    (cells / "lg_acts" / "__init__.py").write_text("from .chosen import act\n")
    (cells / "lg_acts" / "chosen.py").write_text("from torch import tanh as act\n")
    (shared / "lg_linked.py").write_text("from torch import sigmoid as gate\n")
    (cells / "lg_linked.py").symlink_to(shared / "lg_linked.py")
    (cells / "cells.py").write_text(
        "import torch\nfrom torch import nn\nfrom lg_acts import act\nfrom lg_linked import gate"
        "\n\n\nclass Cell(nn.Module):\n    def __init__(self, i, h):\n        super().__init__()\n"
        "        self.l = nn.Linear(i + h, h)\n\n    def forward(self, x, h):\n"
        "        h = act(self.l(torch.cat([x, h], 1))) * gate(h)\n        return h, h\n")
    text = convert(cells / "cells.py", "Cell", 3, 4, ["h"]).text
    # a module below the folder found through another entry of sys.path (a .venv there):
    # Python's to import, as any; it was refused as one of FILE.py's own
    site = cells / ".venv" / "site"
    site.mkdir(parents=True)
    (site / "lg_from_site.py").write_text("from torch import tanh as act\n")
    (site / "lg_from_site.py").chmod(0o666)
    (cells / "site_user.py").write_text((cells / "cells.py").read_text().replace(
        "from lg_acts import act", "from lg_from_site import act"))
    monkeypatch.syspath_prepend(str(site))
    assert convert(cells / "site_user.py", "Cell", 3, 4, ["h"]).text.count("tanh") >= 1
    assert re.search(r"(\w+) = tanh\(linear\(x, h\[t-1\]\)\).*\nh = \1 \* sigmoid\(h\[t-1\]\)",
                     text), text
    assert not list(tmp_path.rglob("__pycache__"))


def test_two_files_with_siblings_of_one_name_each_get_their_own(tmp_path):
    """Both folders' cells.py import helper: the second conversion in one process took the
    first folder's helper (kept in sys.modules), and its check passed, run with it too."""
    for folder, act in (("a", "tanh"), ("b", "sigmoid")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "lg_helper.py").write_text(f"from torch import {act} as act\n")
        (tmp_path / folder / "cells.py").write_text(
            "import torch\nfrom torch import nn\nfrom lg_helper import act\n\n\n"
            "class Cell(nn.Module):\n    def __init__(self, i, h):\n        super().__init__()\n"
            "        self.l = nn.Linear(i + h, h)\n\n    def forward(self, x, h):\n"
            "        h = act(self.l(torch.cat([x, h], 1)))\n        return h, h\n")
    texts = [convert(tmp_path / folder / "cells.py", "Cell", 3, 4, ["h"]).text
             for folder in "ab"]
    assert "h = tanh(linear(x, h[t-1]))" in texts[0]
    assert "h = sigmoid(linear(x, h[t-1]))" in texts[1]


_HOOKED = """
import threading
import torch
from torch import nn


class Hooked(nn.Module):
    def __init__(self, i, h):
        super().__init__()
        self.l = nn.Linear(i + h, h)
        self.l.register_forward_hook(lambda module, given, out: out * 2)

    def forward(self, x, h):
        h = torch.tanh(self.l(torch.cat([x, h], 1)))
        return h, h


class Normed(Hooked):
    def __init__(self, i, h):
        nn.Module.__init__(self)
        self.l = torch.nn.utils.spectral_norm(nn.Linear(i + h, h))


class Locked(Hooked):
    def __init__(self, i, h):
        nn.Module.__init__(self)
        self.l = nn.Linear(i + h, h)
        self.lock = threading.Lock()
"""


_GRADIENTS_CHANGED = """
import torch
from torch import nn


class Halved(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z):
        return z.clone()

    @staticmethod
    def backward(ctx, g):
        return g * 0.5


class Base(nn.Module):
    def __init__(self, i, h):
        super().__init__()
        self.l = nn.Linear(i + h, 2 * h)

    def forward(self, x, h):
        a, b = self.l(torch.cat([x, h], 1)).chunk(2, 1)
        h = torch.tanh(a) * self.gate(b)
        return h, h

    def gate(self, b):
        return torch.sigmoid(b)


class NoGrad(Base):
    def gate(self, b):
        with torch.no_grad():
            return torch.sigmoid(b)


class GradOff(Base):
    def gate(self, b):
        with torch.set_grad_enabled(False):
            return torch.sigmoid(b)


class Inference(Base):
    def gate(self, b):
        with torch.inference_mode():
            return torch.sigmoid(b)


class OwnBackward(Base):
    def gate(self, b):
        return torch.sigmoid(Halved.apply(b))


class ModuleHook(Base):
    def __init__(self, i, h):
        super().__init__(i, h)
        self.l.register_full_backward_hook(lambda module, given, out: (given[0] * 0.5,))


class WeightHook(Base):
    def __init__(self, i, h):
        super().__init__(i, h)
        self.l.weight.register_hook(lambda gradient: gradient * 0.5)


class Checkpointed(Base):
    def gate(self, b):
        return torch.utils.checkpoint.checkpoint(torch.sigmoid, b, use_reentrant=True)


torch.set_grad_enabled(False)  # as inference scripts do: the forwards are traced with them on
"""


@pytest.mark.parametrize("name, words", [
    ("NoGrad", r"gradients\.py:33: error: NoGrad\.forward computes with gradients off "
               r"\(torch\.no_grad\(\), set_grad_enabled\(False\) or inference_mode\(\)\)"),
    ("GradOff", r"gradients\.py:39: error: GradOff\.forward computes with gradients off"),
    ("Inference", r"gradients\.py:45: error: Inference\.forward computes with gradients off"),
    ("OwnBackward", r"gradients\.py:50: error: OwnBackward\.forward calls Halved\.apply, a "
                    r"torch\.autograd\.Function with a backward of its own"),
    ("ModuleHook", r"ModuleHook\.l has a backward hook, which changes the gradients it "
                   "passes back"),
    ("WeightHook", r"WeightHook\.l\.weight has a gradient hook \(register_hook\), which "
                   "changes its gradient"),
])
def test_a_forward_whose_gradients_are_not_its_equations_is_refused(tmp_path, name, words,
                                                                    cli_fails):
    """Each computes what Base does, so the check of the forward passed, and the cell's
    gradients were not the module's (0.07 to 1.2 off): refused, as detach() is."""
    (tmp_path / "gradients.py").write_text(_GRADIENTS_CHANGED)
    err = cli_fails("from-torch", f"{tmp_path / 'gradients.py'}:{name}", "-I", IN, "-H", HID,
                    "--states", "h", "--out", tmp_path / "c.cell", "--weights-out",
                    tmp_path / "w.npz")
    assert re.search(words, err), err
    assert "a cell's equations cannot say so (lstm-graph differentiates every value" in err
    assert not (tmp_path / "c.cell").exists()
    converted = convert(tmp_path / "gradients.py", "Checkpointed", IN, HID, ["h"])
    assert converted.error < 1e-12  # torch's own Functions compute the gradients they say
    assert torch.is_grad_enabled()
    with torch.no_grad():  # the caller's mode is not the forward's
        assert convert(tmp_path / "gradients.py", "Base", IN, HID, ["h"]).error < 1e-12
        assert not torch.is_grad_enabled()


def test_the_check_compares_gradients_too_so_a_change_it_cannot_see_is_refused(tmp_path,
                                                                              monkeypatch):
    """Past the refusals by name, the check before writing takes the gradients of x and of
    the initial states through the module (autograd, float64) and through the cell: a
    backward hook let through (here, the refusal of hooks turned off) is caught there."""
    from lstm_graph.frontends import from_torch
    from lstm_graph.frontends.torch_fx import ConvertError

    (tmp_path / "gradients.py").write_text(_GRADIENTS_CHANGED)
    assert convert(tmp_path / "gradients.py", "Base", IN, HID, ["h"]).error < 1e-12
    monkeypatch.setattr(from_torch, "_refuse_hooks", lambda module, name: None)
    with pytest.raises(ConvertError, match=r"the converted cell computes what ModuleHook "
                       r"does, but its gradients differ from autograd's through the module "
                       r"by 0\.\d+ over 5 steps"):
        convert(tmp_path / "gradients.py", "ModuleHook", IN, HID, ["h"])


def test_the_check_runs_on_a_module_made_in_inference_mode(tmp_path, monkeypatch):
    """A module made under the caller's torch.inference_mode() has inference tensors,
    which autograd cannot take back: the gradient check was skipped, and a backward hook
    let through converted. And a FILE.py that enters inference mode and never leaves it
    left the caller in it."""
    from lstm_graph.frontends import from_torch
    from lstm_graph.frontends.torch_fx import ConvertError

    (tmp_path / "gradients.py").write_text(_GRADIENTS_CHANGED)
    monkeypatch.setattr(from_torch, "_refuse_hooks", lambda module, name: None)
    with torch.inference_mode(), pytest.raises(ConvertError, match=r"gradients differ"):
        convert(tmp_path / "gradients.py", "ModuleHook", IN, HID, ["h"])
    (tmp_path / "entered.py").write_text(
        _GRADIENTS_CHANGED + "\n_mode = torch.inference_mode()\n_mode.__enter__()\n")
    with pytest.raises(ConvertError, match=r"gradients differ"):
        convert(tmp_path / "entered.py", "ModuleHook", IN, HID, ["h"])
    assert not torch.is_inference_mode_enabled() and torch.is_grad_enabled()


_STOPPED = """
import torch
from torch import nn


class Base(nn.Module):
    def __init__(self, i, h):
        super().__init__()
        self.l = nn.Linear(i + h, h)
        self.u = nn.Linear(h, h)

    def forward(self, x, h):
        return self.step(torch.cat([x, h], 1), h)


class Detached(Base):
    def step(self, v, h):
        h = torch.tanh(nn.functional.linear(v, self.l.weight.detach(), self.l.bias))
        return h, h


class Data(Base):
    def step(self, v, h):
        h = torch.tanh(nn.functional.linear(v, self.l.weight.data, self.l.bias))
        return h, h


class Half(Base):
    def step(self, v, h):
        h = torch.tanh(self.l(v) + h @ self.u.weight.detach().t() + self.u(h))
        return h, h


class Derived(Base):
    def step(self, v, h):
        w = (self.l.weight * 0.5).detach()
        h = torch.tanh(nn.functional.linear(v, w, self.l.bias))
        return h, h


class Frozen(Base):
    def __init__(self, i, h):
        super().__init__(i, h)
        self.l.weight.requires_grad_(False)

    def step(self, v, h):
        h = torch.tanh(nn.functional.linear(v, self.l.weight.detach(), self.l.bias))
        return h, h


def _stop(w):
    return w.detach()


torch.fx.wrap("_stop")


class Wrapped(Base):
    def step(self, v, h):
        h = torch.tanh(nn.functional.linear(v, _stop(self.l.weight), self.l.bias))
        return h, h


class Aten(Base):
    def step(self, v, h):
        w = torch.ops.aten.detach.default(self.l.weight)
        h = torch.tanh(nn.functional.linear(v, w, self.l.bias))
        return h, h


class AfterDivision(Base):
    def __init__(self, i, h):
        super().__init__(i, h)
        self.register_buffer("r", torch.full((h,), 2.0))

    def step(self, v, h):
        a = self.l(v) / self.r
        h = torch.tanh(a + h @ (self.u.weight + 0.0).detach().t())
        return h, h


class OnesDetached(Base):
    def step(self, v, h):
        h = torch.tanh(self.l(v) * torch.ones(h.shape[1]).detach())
        return h, h
"""


@pytest.mark.parametrize("name, line, said", [
    ("Detached", 18, "self.l.weight is read through Tensor.detach"),
    ("Data", 24, "self.l.weight is read through its .data"),
    ("Half", 30, "self.u.weight is read through Tensor.detach"),  # used twice, once so
    ("Derived", 36, "self.l.weight is read through Tensor.detach"),
    # a helper fx does not trace into, and aten's own detach: no name to refuse
    ("Wrapped", 60, r"self.l.weight is read through stopped\._stop, which gives "
                    "it no gradient"),
    ("Aten", 66, r"self.l.weight is read through torch\._ops\.aten\.detach\.default, which "
                 "gives it no gradient"),
    # the inverse of a divisor was not held, and a tensor of W took its place in the records
    ("AfterDivision", 78, "self.u.weight is read through Tensor.detach"),
])
def test_a_parameter_read_without_its_gradient_is_refused_at_its_line(tmp_path, name, line,
                                                                       said, cli_fails):
    """The module gives such a weight no gradient through that use, and the cell, which
    trains every weight, one: the forward check cannot see it, and the gradients' check
    saw it only by a finite difference that also refused exact large cells."""
    (tmp_path / "stopped.py").write_text(_STOPPED)
    err = cli_fails("from-torch", f"{tmp_path / 'stopped.py'}:{name}", "-I", IN, "-H", HID,
                    "--states", "h", "--out", tmp_path / "c.cell", "--weights-out",
                    tmp_path / "w.npz")
    assert re.search(f"stopped\\.py:{line}: error: {name}\\.forward: the parameter {said}: it "
                     "stops gradients, which a cell's equations cannot say \\(lstm-graph "
                     "differentiates every value", err), err
    assert not (tmp_path / "c.cell").exists()
    with pytest.warns(LstmGraphWarning, match="frozen"):  # no gradient in the module either
        assert convert(tmp_path / "stopped.py", "Frozen", IN, HID, ["h"]).error < 1e-12
    # a tensor the forward makes, detached: not a parameter's (it was refused as W's)
    assert convert(tmp_path / "stopped.py", "OnesDetached", IN, HID, ["h"]).error < 1e-12


_EXACT_BUT_REFUSED = """
import torch
from torch import nn


class Offset(nn.Module):
    def __init__(self, i, h):
        super().__init__()
        self.l = nn.Linear(i + h, h)

    def forward(self, x, h):
        h = torch.tanh(self.l(torch.cat([x, h], 1)))
        return h + 10000.0, h


class ZeroGate(nn.Module):
    def __init__(self, i, h):
        super().__init__()
        self.l = nn.Linear(i + h, h)
        self.gate = nn.Linear(h, h)
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)

    def forward(self, x, h):
        h = torch.tanh(self.l(torch.cat([x, h], 1))) + torch.relu(self.gate(h))
        return h, h
"""


@pytest.mark.parametrize("name, inputs, units", [("Offset", 8, 64), ("ZeroGate", IN, HID)])
def test_exact_cells_with_large_outputs_or_kinks_convert(tmp_path, name, inputs, units):
    """A central difference of the module's loss over its parameters was the check of
    their gradients: rounding noise with an output of h + 10000, and the kink of a relu
    fed by zero weights (ReZero style), refused these exact cells (false refusals)."""
    (tmp_path / "exact.py").write_text(_EXACT_BUT_REFUSED)
    assert convert(tmp_path / "exact.py", name, inputs, units, ["h"]).error < 1e-12


_TRAINED_OTHERWISE = """
import torch
from torch import nn


class Tied(nn.Module):
    def __init__(self, i, h):
        super().__init__()
        self.inp = nn.Linear(i, h)
        self.rec = nn.Linear(h, h)
        self.rec2 = nn.Linear(h, h)
        self.rec2.weight = self.rec.weight

    def forward(self, x, h):
        a = torch.tanh(self.inp(x) + self.rec(h))
        h = torch.tanh(self.rec2(a) + x @ self.inp.weight.t())
        return h, h


class Fixed(nn.Module):
    def __init__(self, i, h):
        super().__init__()
        self.l = nn.Linear(i, h)
        self.register_buffer("r", torch.eye(h) * 0.5)

    def forward(self, x, h):
        h = torch.tanh(self.l(x) + h @ self.r.t() + torch.ones(h.shape[1]) * 0.1)
        return h, h


class Frozen(nn.Module):
    def __init__(self, i, h):
        super().__init__()
        self.l = nn.Linear(i + h, h)
        self.l.weight.requires_grad_(False)

    def forward(self, x, h):
        h = torch.tanh(self.l(torch.cat([x, h], 1)))
        return h, h


class NoBias(nn.Module):
    def __init__(self, i, h):
        super().__init__()
        self.l = nn.Linear(i + h, h, bias=False)

    def forward(self, x, h):
        h = torch.tanh(self.l(torch.cat([x, h], 1)))
        return h, h


class Saturated(nn.Module):
    def __init__(self, i, h):
        super().__init__()
        self.l = nn.Linear(i + h, 2 * h)
        with torch.no_grad():
            self.l.bias[h:] = 8.0  # the forget gate saturated: its gradients are small
        self.register_buffer("p", torch.full((h,), 0.5))

    def forward(self, x, h):
        g, f = self.l(torch.cat([x, h], 1)).chunk(2, 1)
        h = torch.sigmoid(f + self.p * h) * h + torch.tanh(g)
        return h, h


class TypeAs(nn.Module):
    def __init__(self, i, h):
        super().__init__()
        self.l = nn.Linear(i + h, h)
        self.register_buffer("m", (torch.arange(h) % 2).float())

    def forward(self, x, h):
        h = torch.tanh(self.l(torch.cat([x, h], 1))) * self.m.type_as(self.l.weight)
        return h, h


class Large(nn.Module):
    def __init__(self, i, h):
        super().__init__()
        self.a = nn.Linear(i, h)
        self.b = nn.Linear(h, h)

    def forward(self, x, h):
        h = torch.tanh(self.a(x) + self.b(h))
        return h, h * 1e-9 + 1e9


class Fused(nn.Module):
    def __init__(self, i, h):
        super().__init__()
        self.l = nn.Linear(i + h, 4 * h)

    def forward(self, x, state):
        h, c = state
        i, f, g, o = self.l(torch.cat([x, h], 1)).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


class Spread(nn.Module):
    def __init__(self, i, h):
        super().__init__()
        self.l = nn.Linear(i + h, 4 * h)
        self.s = nn.Parameter(torch.full((1,), 0.5))

    def forward(self, x, h):
        a, b, c, d = self.l(torch.cat([x, h], 1)).chunk(4, 1)  # four pieces, each used once
        h = torch.tanh(a + b * c) * torch.sigmoid(d) * self.s
        return h, h
"""


_APART = (r"training the cell is not training {}: Adam's first step from these weights "
          r"\(rate 0\.001\), the same for both, leaves their outputs [0-9.e-]+ apart "
          r"\(the step moved the module's by [0-9.e-]+\)\. The cell trains each of its "
          r"weights on its own, and some are not a piece of one parameter, used once")


@pytest.mark.parametrize("name, said", [
    ("Tied", r"; here: inp\.weight \(trained\.py:15, trained\.py:16\), rec\.weight "
             r"\(also rec2\.weight\) \(trained\.py:15, trained\.py:16\), used in more than one "
             r"place \(one tensor in the module, a weight for each use in the cell\)\. Its "
             r"forward and gradients are the module's"),
    ("Fixed", r"; here: the buffer r \(trained\.py:27\), which the module keeps "
              r"fixed; tensors of no parameter \(trained\.py:27\), which the module keeps fixed"),
    ("Frozen", r"; here: the frozen parameter l\.weight \(trained\.py:\d+\), "
               r"which the module keeps fixed"),
    ("NoBias", r"; here: a bias of zeros, which the cell's linears have and the module's do "
               r"not \(trained\.py:\d+\)"),
    # one step of plain gradient descent moved the peephole 1e-7 as far as the rest
    ("Saturated", r"; here: the buffer p \(trained\.py:\d+\), which the module keeps fixed"),
    # the weight gives the buffer its dtype only: it was refused as read without gradient
    ("TypeAs", r"; here: the buffer m \(trained\.py:\d+\), which the module keeps fixed"),
    # outputs of 1e9 and steps of 1e-9 (a floor of 1e-12, relative to 1 + |y|, hid it)
    ("Large", r" \(two biases added into one"),
    ("Spread", r"; here: s \(trained\.py:\d+\), one number acting on every unit "
               r"\(a weight per unit in the cell; give it the shape \(H,\) to have one per unit "
               r"in both\)"),
])
def test_a_cell_that_would_train_otherwise_than_the_module_is_said(tmp_path, name, said):
    """A buffer (or a tensor the forward makes) or a frozen parameter the module keeps
    fixed, a parameter used twice (tied: one tensor in the module) and one number acting
    on every unit became weights the cell trains apart, without a word: the numbers and
    the gradients of x and the states agree, and training parts them. One step of
    gradient descent of each tells, and the trace names why."""
    (tmp_path / "trained.py").write_text(_TRAINED_OTHERWISE)
    with pytest.warns(LstmGraphWarning, match=_APART.format(name) + said) as caught:
        assert convert(tmp_path / "trained.py", name, IN, HID, ["h"]).error < 1e-12
    assert len([w for w in caught if issubclass(w.category, LstmGraphWarning)]) == 1


def test_a_module_of_no_parameters_converts(tmp_path):
    """Its cell has no weights to show the hidden size: the check compiled it without
    one and said 'give hidden_size (-H on the command line)', which had been given."""
    (tmp_path / "plain.py").write_text(
        "import torch\nfrom torch import nn\n\n\nclass Cell(nn.Module):\n"
        "    def __init__(self, i, h):\n        super().__init__()\n\n"
        "    def forward(self, x, h):\n        h = torch.tanh(h) * 0.5\n        return h, h\n")
    assert convert(tmp_path / "plain.py", "Cell", IN, HID, ["h"]).error == 0


def test_a_cell_whose_weights_are_the_modules_trains_without_a_word(tmp_path):
    """One fused Linear cut into four gates: each weight of the cell is a piece of one
    parameter, used once; the fastrnns cell adds two biases into one (the trace cannot
    name it: the step of gradient descent tells)."""
    (tmp_path / "trained.py").write_text(_TRAINED_OTHERWISE)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LstmGraphWarning)
        convert(tmp_path / "trained.py", "Fused", IN, HID, ["h", "c"])
    with pytest.warns(LstmGraphWarning, match=_APART.format("FastLSTMCell") + r" \(two biases "
                      r"added into one, b_ih \+ b_hh, a weight computed from parameters"):
        convert(CELLS, "FastLSTMCell", IN, HID, ["h", "c"])


def test_code_that_exits_or_parses_the_command_line_or_prints_is_kept_in_its_place(
        tmp_path, cli_fails, cli_run):
    """sys.exit() in a forward ended the command with status 0 and no word; a module-level
    argparse read lstm-graph's options and failed with its own usage; prints went into
    --json's stdout."""
    cell = ("import argparse, sys\nimport torch\nfrom torch import nn\n"
            "args = argparse.ArgumentParser().parse_args()\nprint('imported')\n\n\n"
            "class Cell(nn.Module):\n    def __init__(self, i, h):\n        super().__init__()\n"
            "        self.l = nn.Linear(i + h, h)\n\n    def forward(self, x, h):\n"
            "        print('stepped')\n        h = torch.tanh(self.l(torch.cat([x, h], 1)))\n"
            "        return h, h\n\n\nclass Exits(Cell):\n    def forward(self, x, h):\n"
            "        sys.exit(0)\n")
    (tmp_path / "script.py").write_text(cell)
    args = ["-I", IN, "-H", HID, "--states", "h", "--out", tmp_path / "c.cell",
            "--weights-out", tmp_path / "w.npz"]
    err = cli_fails("from-torch", f"{tmp_path / 'script.py'}:Exits", *args)
    assert "script.py:21: error: running script.py's code failed: SystemExit: 0 (it would " \
        "have ended the command: nothing was written)\n    sys.exit(0)" in err
    assert not (tmp_path / "c.cell").exists()
    result = cli_run("from-torch", f"{tmp_path / 'script.py'}:Cell", *args, "--json")
    assert json.loads(result.stdout)["cell"] == "c"
    assert "imported" in result.stderr and "stepped" in result.stderr


@pytest.mark.parametrize("name, words", [
    ("Hooked", "Hooked.l has a forward hook (<lambda>), which torch.fx does not trace, so the "
               "cell would not compute what the module does"),
    ("Normed", "Normed.l has the weights of torch.nn.utils.spectral_norm, recomputed by a "
               "forward pre-hook that torch.fx does not trace; fold them into plain weights "
               "first (torch.nn.utils.remove_spectral_norm)"),
    ("Locked", "Locked cannot be copied to check the cell against it in float64 "
               "(copy.deepcopy: cannot pickle '_thread.lock' object)"),
])
def test_hooks_and_modules_that_cannot_be_copied_are_refused_saying_why(tmp_path, name, words,
                                                                       cli_fails):
    """A hook's work was missed and the check blamed it on from-torch ("a bug … please
    report it"); a module deepcopy refuses (a lock, the old weight_norm) was a traceback."""
    (tmp_path / "hooked.py").write_text(_HOOKED)
    assert words in cli_fails("from-torch", f"{tmp_path / 'hooked.py'}:{name}", "-I", IN,
                              "-H", HID, "--states", "h", "--out", tmp_path / "c.cell",
                              "--weights-out", tmp_path / "w.npz")
    assert not (tmp_path / "c.cell").exists()


def test_a_state_named_as_the_forward_s_input_is_a_state(tmp_path, cli_run):
    """``--states x`` for ``forward(self, x, h)`` read the state as the input ('a linear of
    7 inputs reads a value of width 6'); the cell's input is named x_t instead."""
    cli_run("from-torch", f"{CELLS}:DerivedWeights", "-I", IN, "-H", HID, "--states", "x",
            "--out", tmp_path / "c.cell", "--weights-out", tmp_path / "w.npz")
    cell = lstm_graph.load_cell(tmp_path / "c.cell")
    assert list(cell.graph.states) == ["x"] and list(cell.graph.inputs) == ["x_t"]
    x = np.random.default_rng(3).standard_normal((6, 2, IN)).astype("float32")
    module = make_module(load_class(CELLS, "DerivedWeights"), CELLS, IN, HID, None)  # seed 0
    want_y, _ = step_module(module, x, ["x"], HID)
    y, _ = cell.compile(weights=tmp_path / "w.npz")(x)
    np.testing.assert_allclose(y, want_y, rtol=0, atol=1e-5)


def test_states_named_x_and_x_t_leave_the_input_another_name(tmp_path, cli_run):
    """The input fell back to x_t, a state's name too: 'a bug in from-torch'."""
    cli_run("from-torch", f"{CELLS}:FastLSTMCell", "-I", IN, "-H", HID, "--states", "x,x_t",
            "--out", tmp_path / "c.cell", "--weights-out", tmp_path / "w.npz")
    graph = lstm_graph.load_cell(tmp_path / "c.cell").graph
    assert list(graph.states) == ["x", "x_t"] and list(graph.inputs) == ["x_0"]


def test_a_seed_past_what_pytorch_takes_is_wrong_usage(tmp_path, cli_fails):
    """It was blamed on the class: 'FastLSTMCell(3, 4) failed: ValueError: Overflow when
    unpacking long long'."""
    assert "is not in the range 0<=x<=18446744073709551615" in cli_fails(
        "from-torch", f"{CELLS}:FastLSTMCell", "-I", IN, "-H", HID, "--states", "h,c",
        "--seed", 2**64, "--out", tmp_path / "c.cell", "--weights-out", tmp_path / "w.npz",
        code=2)
    with pytest.raises(lstm_graph.LstmGraphError, match="seed -1 is not a whole number"):
        convert(CELLS, "FastLSTMCell", IN, HID, ["h", "c"], seed=-1)
    torch.save(load_class(CELLS, "FastLSTMCell")(IN, HID).state_dict(), tmp_path / "sd.pt")
    assert "--seed draws the class's own initialisation, and --state-dict replaces it" in \
        cli_fails("from-torch", f"{CELLS}:FastLSTMCell", "-I", IN, "-H", HID, "--states",
                  "h,c", "--seed", 3, "--state-dict", tmp_path / "sd.pt", "--out",
                  tmp_path / "c.cell", "--weights-out", tmp_path / "w.npz", code=2)


def test_the_class_s_own_initialisation_is_seeded(tmp_path, cli_run):
    """Without --state-dict two runs of one command wrote other weights (torch's global
    generator, unseeded); --seed chooses them."""
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        cli_run("from-torch", f"{CELLS}:FastLSTMCell", "-I", IN, "-H", HID, "--states", "h,c",
                "--seed", seed, "--out", tmp_path / f"{name}.cell", "--weights-out",
                tmp_path / f"{name}.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    assert (tmp_path / "a.npz").read_bytes() != (tmp_path / "c.npz").read_bytes()
    assert "own initialisation, seed 1" in (tmp_path / "c.cell").read_text()


def test_a_cell_file_named_as_a_python_keyword_is_written_and_valid(tmp_path, cli_run):
    """The cell line takes the file's stem: 'cell class' was refused as a keyword."""
    cli_run("from-torch", f"{CELLS}:FastLSTMCell", "-I", "3", "-H", "4", "--states", "h,c",
            "--out", tmp_path / "class.cell", "--weights-out", tmp_path / "w.npz")
    assert lstm_graph.load_cell(tmp_path / "class.cell").name == "class"


@pytest.mark.parametrize("name, states, words", [
    ("RefuseItemAssignment", "h", "(an assignment into a tensor, z[…] = v, changes it in "
     "place: compute a new value instead, e.g. torch.cat of its parts)"),
    ("RefuseSeparateStates", "h,c", "(from-torch calls forward(x, state), the state a tuple "
     "of 2 tensors (h, c): a forward that takes each state tensor as an argument of its own, "
     "forward(x, h, c), cannot be called so; take them as one tuple"),
])
def test_a_forward_that_fails_as_traced_is_told_what_to_change_not_to_rename_states(
        tmp_path, name, states, words, cli_fails):
    """Both were told to give --states one name per tensor, which they had done."""
    stderr = cli_fails("from-torch", f"{CELLS}:{name}", "-I", "3", "-H", "4", "--states",
                       states, "--out", tmp_path / "c.cell", "--weights-out", tmp_path / "w.npz")
    assert words in stderr and "--states named" not in stderr
    assert not list(tmp_path.iterdir())


def test_a_forward_that_reads_self_training_is_said_to_be_converted_in_eval_mode(
        tmp_path, cli_run):
    """An 'if self.training:' branch was left out of the cell without a word."""
    done = cli_run("from-torch", f"{CELLS}:TrainingBranch", "-I", IN, "-H", HID, "--states",
                   "h", "--out", tmp_path / "c.cell", "--weights-out", tmp_path / "w.npz")
    line = next(k for k, text in enumerate(CELLS.read_text().splitlines(), 1)
                if text.strip() == "if self.training:")
    assert f"warning: TrainingBranch.forward (torch_cells.py:{line}) reads self.training: " \
        "TrainingBranch is converted in eval mode, as it runs for inference; what it does " \
        "while training is not in the cell" in done.stderr
    assert "h = tanh(linear(x, h[t-1]))" in (tmp_path / "c.cell").read_text()
    # PyTorch's own module is named where the user's code has it, not at its own file
    dropped = cli_run("from-torch", f"{CELLS}:Activations", "-I", IN, "-H", HID, "--states",
                      "h", "--out", tmp_path / "a.cell", "--weights-out", tmp_path / "a.npz")
    assert "warning: nn.Dropout.forward (self.drop) reads self.training: Activations is " \
        "converted in eval mode" in dropped.stderr and "dropout.py" not in dropped.stderr


def test_a_line_the_code_did_not_name_is_not_given_one_of_the_code_s_names(tmp_path,
                                                                           cli_run):
    """The linear inside a cut half of a scaled linear had no name of its own, and was
    called 'v' (the fallback), beside the code's own v: 'v = linear(x, h[t-1])' held u's
    pre-activation. It keeps the name of what it was cut from (the layer's)."""
    cli_run("from-torch", f"{CELLS}:ChunkOfScaled", "-I", IN, "-H", HID, "--states", "h",
            "--out", tmp_path / "c.cell", "--weights-out", tmp_path / "w.npz")
    lines = [line for line in (tmp_path / "c.cell").read_text().splitlines()
             if " = " in line and not line.startswith("#")]
    for line in lines:
        name = line.split(" = ")[0]
        if re.fullmatch(r"[uv](_\d+)?", name):  # the code's names: only on its values
            assert f"# {name[0]}, torch_cells.py:" in line, lines
    assert sum("linear(x, h[t-1])" in line for line in lines) == 2


def test_a_function_s_operand_given_by_its_keyword_is_converted(tmp_path, cli_run):
    """``torch.tanh(input=z)`` was refused: 'argument input= is not converted'."""
    cli_run("from-torch", f"{CELLS}:InputKeyword", "-I", IN, "-H", HID, "--states", "h",
            "--out", tmp_path / "c.cell", "--weights-out", tmp_path / "w.npz")
    assert "h = tanh(linear(x, h[t-1]))" in (tmp_path / "c.cell").read_text()


def test_a_learned_number_written_as_a_constant_is_said(tmp_path, cli_run):
    """A parameter of one element became a constant of the cell without a word: the
    forward is the module's, but training the cell would not learn it."""
    done = cli_run("from-torch", f"{CELLS}:LearnedScale", "-I", IN, "-H", HID, "--states",
                   "h", "--out", tmp_path / "c.cell", "--weights-out", tmp_path / "w.npz")
    line = next(k for k, text in enumerate(CELLS.read_text().splitlines(), 1)
                if "* self.scale" in text)
    assert f"warning: torch_cells.py:{line}: a number the module learns (a parameter of one " \
        "element) is written as the constant 0.75: the cell computes what the module does, " \
        "but training the cell would not learn it" in done.stderr
    assert "* 0.75" in (tmp_path / "c.cell").read_text()
    # a learned bound of a clamp: said as well (it was not, and PyTorch's own warning about
    # a tensor that requires grad made a scalar leaked, at a line of ops.py)
    done = cli_run("from-torch", f"{CELLS}:LearnedClamp", "-I", IN, "-H", HID, "--states",
                   "h", "--out", tmp_path / "c.cell", "--weights-out", tmp_path / "w.npz")
    assert "a number the module learns (a parameter of one element) is written as the " \
        "constant 0.5" in done.stderr and "requires_grad" not in done.stderr
    assert "clip(linear(x, h[t-1]), 0.5)" in (tmp_path / "c.cell").read_text()


def test_a_float64_state_dict_is_converted_in_float64_not_rounded(tmp_path, cli_run):
    """A float32 class loaded a float64 state dict by rounding it: the cell, checked
    against the rounded module, was written in float32 without a word."""
    state = load_class(CELLS, "FastLSTMCell")(IN, HID).double().state_dict()
    torch.save(state, tmp_path / "sd.pt")
    done = cli_run("from-torch", f"{CELLS}:FastLSTMCell", "-I", IN, "-H", HID, "--states",
                   "h,c", "--state-dict", tmp_path / "sd.pt", "--out", tmp_path / "c.cell",
                   "--weights-out", tmp_path / "w.npz")
    assert "warning: sd.pt holds float64 weights, and FastLSTMCell makes float32 parameters: " \
        "the module is loaded, checked and written in float64" in done.stderr
    written = np.load(tmp_path / "w.npz")
    assert {a.dtype for a in written.values()} == {np.dtype("float64")}
    mine = next(k for k in written if k.endswith(".W_x"))  # a weight written as it was given
    assert any(np.array_equal(written[mine], part.numpy()) for whole in state.values()
               if whole.ndim == 2 for part in whole.split(HID))


def test_a_state_dict_of_other_sizes_is_refused_naming_the_mismatch(tmp_path, cli_fails):
    torch.save(load_class(CELLS, "FastLSTMCell")(3, 6).state_dict(), tmp_path / "sd.pt")
    stderr = cli_fails("from-torch", f"{CELLS}:FastLSTMCell", "-I", "3", "-H", "4", "--states",
                       "h,c", "--state-dict", tmp_path / "sd.pt", "--out", tmp_path / "c.cell",
                       "--weights-out", tmp_path / "w.npz")
    assert "does not fit FastLSTMCell(3, 4)" in stderr and "weight_ih" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sd.pt"]
    # NaN in it: named by the file and its own key (it said 'the weights dict does not fit
    # cell …: ingate.b holds NaN or infinity', in the cell's names)
    state = load_class(CELLS, "FastLSTMCell")(3, 4).state_dict()
    first = next(iter(state))
    state[first].view(-1)[1] = float("nan")
    torch.save(state, tmp_path / "sd.pt")
    stderr = cli_fails("from-torch", f"{CELLS}:FastLSTMCell", "-I", "3", "-H", "4", "--states",
                       "h,c", "--state-dict", tmp_path / "sd.pt", "--out", tmp_path / "c.cell",
                       "--weights-out", tmp_path / "w.npz")
    assert stderr == f"{tmp_path / 'sd.pt'}: {first} holds NaN or infinity; a cell's weights " \
        "are finite numbers\n"


def test_the_readme_shows_what_from_torch_writes_for_the_fastrnns_cell(tmp_path, cli_run):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    source = re.search(r"saved as `custom_lstms.py`:\n\n```python\n(.*?)```", readme, re.S)
    shown = re.search(r"each caption saying which line made it:\n\n```\n(.*?)```", readme, re.S)
    (tmp_path / "custom_lstms.py").write_text(source.group(1))
    cli_run("from-torch", f"{tmp_path / 'custom_lstms.py'}:LSTMCell", "--input-size", "8",
            "--hidden-size", "16", "--states", "h,c", "--out", tmp_path / "lstm_cell.cell",
            "--weights-out", tmp_path / "lstm_cell.npz")
    written = (tmp_path / "lstm_cell.cell").read_text().split("output h\n\n")[1]
    assert written == shown.group(1)


def test_an_output_that_is_an_input_is_refused_and_the_input_kept(tmp_path, cli_fails):
    source = tmp_path / "cells.py"
    source.write_text(CELLS.read_text())
    assert "is the FILE.py" in cli_fails("from-torch", f"{source}:TutorialGRU", "-I", "3", "-H",
                                         "4", "--states", "h", "--out", source, "--weights-out",
                                         tmp_path / "w.npz")
    assert source.read_text() == CELLS.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["cells.py"]


class _Runs:
    """A pickle that would run code (touch a file) if it were unpickled fully."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_state_dict_that_would_run_code_or_is_a_fifo_is_refused_in_our_words(tmp_path,
                                                                               cli_fails):
    marker = tmp_path / "ran"
    torch.save({"weight": _Runs(str(marker))}, tmp_path / "evil.pt")
    os.mkfifo(tmp_path / "fifo.pt")
    args = [f"{CELLS}:FastLSTMCell", "-I", "3", "-H", "4", "--states", "h,c", "--out",
            tmp_path / "c.cell", "--weights-out", tmp_path / "w.npz", "--state-dict"]
    said = cli_fails("from-torch", *args, tmp_path / "evil.pt")
    assert "nothing in it was run" in said or "never runs code from a file" in said
    assert "weights_only` set to `False`" not in said and not marker.exists()
    assert "fifo.pt" in cli_fails("from-torch", *args, tmp_path / "fifo.pt")


def test_a_refusal_names_the_module_as_the_user_did(tmp_path, monkeypatch, cli_fails):
    """The finding: a refusal named the user's custom.py by its absolute path, where
    `validate` names a file as given."""
    shutil.copy(CELLS, tmp_path / "cells.py")
    monkeypatch.chdir(tmp_path)
    stderr = cli_fails("from-torch", "cells.py:RefuseLayerNorm", "-I", "3", "-H", "4",
                       "--states", "h", "--out", "c.cell", "--weights-out", "w.npz")
    assert stderr.startswith("cells.py:") and str(tmp_path) not in stderr


def test_a_cell_written_to_stdout_is_not_followed_by_the_summary(tmp_path, cli_process):
    """The three summary lines followed the .cell's text on stdout."""
    done = cli_process("from-torch", f"{CELLS}:FastLSTMCell", "-I", IN, "-H", HID, "--states",
                       "h,c", "--out", "/dev/stdout", "--weights-out", tmp_path / "w.npz",
                       cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "checked:" not in done.stdout and "stages:" not in done.stdout
    assert "checked: the cell equals the module" in done.stderr
    lstm_graph.compile_source(done.stdout, "stdout.cell")  # the cell, whole and alone
