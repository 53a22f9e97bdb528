"""The ``export`` command: a cell as an ONNX model or a PyTorch module, to run elsewhere."""

from __future__ import annotations

import math
from pathlib import Path

import click

from lstm_graph.cli.app import (
    SPEC_HELP,
    InputPath,
    OutputPath,
    emit_json,
    given,
    is_stdout,
    load,
    main,
    refuse_same_outputs,
    say,
)
from lstm_graph.cli.inputs import compile_spec
from lstm_graph.executors.backends import DTYPES
from lstm_graph.export import onnx_model, refuse_stored, torch_module
from lstm_graph.formats.files import refuse_inputs, written_through
from lstm_graph.layers import DIRECTIONS, MAX_LAYERS, Stack
from lstm_graph.models import is_model

FORMATS = ("onnx", "torch")


@main.command(epilog=SPEC_HELP + " --format onnx writes one model (opset 17) that "
              "onnxruntime runs: input x (T, B, I), outputs y and final_STATE, states from "
              "zero; ONNX's own LSTM/GRU/RNN operator where the cell is exactly one, else a "
              "Scan over the cell's step. --format torch writes a PyTorch module (.py, "
              "importing only torch) and its state dict beside it (.pt): load() gives the "
              "module with these weights. Either is run against the cell before it is "
              "written.")
@click.argument("spec")
@click.option("--weights", type=InputPath(),
              help=".npz in our names (see 'params'), PyTorch .pt/.pth state dict, or .onnx.")
@click.option("--input-size", "-I", type=click.IntRange(min=1),
              help="Input size I (needed without --weights).")
@click.option("--hidden-size", "-H", type=click.IntRange(min=1),
              help="Hidden size H (needed without --weights).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed for random weights (without --weights).")
@click.option("--layers", type=click.IntRange(1, MAX_LAYERS),
              help="Layers of a stack  [default: what the weights hold, else 1]")
@click.option("--direction", type=click.Choice(DIRECTIONS),
              help="forward, reverse or bidirectional  [default: what the weights hold, else "
                   "forward]")
@click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True,
              help="The exported weights' and computation's dtype (float64: a Scan in ONNX, "
                   "as onnxruntime's recurrent operators are float32 only).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True,
              help="onnx: a .onnx model; torch: a .py module and its .pt state dict.")
@click.option("--out", type=OutputPath(), required=True,
              help="The model (.onnx) or module (.py; the state dict goes beside it, .pt).")
@click.option("--no-check", is_flag=True,
              help="Write without running the export against the cell first.")
@click.option("--scan", is_flag=True,
              help="ONNX: a Scan over the cell's step even where the cell is ONNX's LSTM, GRU "
                   "or RNN operator (onnxruntime's kernels of those turn NaN and infinity in "
                   "x into numbers; its Scan keeps them).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def export(spec: str, weights: Path | None, input_size: int | None, hidden_size: int | None,
           seed: int, layers: int | None, direction: str | None, dtype: str, fmt: str,
           out: Path, no_check: bool, scan: bool, as_json: bool) -> None:
    """Export a cell to run without lstm-graph: ONNX or PyTorch."""
    model = is_model(spec)
    seeded = given("seed")
    if model and (weights is not None or input_size is not None or hidden_size is not None
                  or seeded):
        raise click.UsageError(f"{spec} holds its weights and sizes: drop --weights, -I, -H "
                               "and --seed")
    if weights is not None and seeded:
        raise click.UsageError("--seed draws random weights, and --weights gives them: not "
                               "both")
    if not model and weights is None and (input_size is None or hidden_size is None):
        raise click.UsageError("give --weights FILE, or both --input-size and --hidden-size "
                               "(with --seed) for random weights")
    if scan and fmt != "onnx":
        raise click.UsageError("--scan chooses how an ONNX model runs the cell; --format torch "
                               "writes the cell's own equations")
    suffix = {"onnx": ".onnx", "torch": ".py"}[fmt]
    if fmt == "torch" and written_through(out) and not out.is_fifo():
        raise click.UsageError(f"--out {out} is a device, and --format torch writes two files, "
                               "a module and its state dict beside it (.py, .pt): give a file "
                               "name such as model.py")
    # Python imports a module from a .py file only: .PY is refused, .ONNX is a model (which a
    # device or pipe takes whatever its name)
    if (out.suffix if fmt == "torch" else out.suffix.lower()) != suffix and \
            not (fmt == "onnx" and written_through(out)):
        raise click.UsageError(f"--out {out}: --format {fmt} writes a {suffix} file; name it "
                               f"{out.with_suffix(suffix).name}")
    problem = torch_module.unimportable(out) if fmt == "torch" else None
    if problem:  # a name, as the suffix is: wrong usage
        raise click.UsageError(f"--out {out}: {problem}")
    written = {"--out": out, "the state dict beside --out": torch_module.weights_beside(out)} \
        if fmt == "torch" else {"--out": out}
    refuse_inputs(written, {"SPEC": spec, "--weights": weights},
                  {"the state dict beside --out": "name --out otherwise (the state dict takes "
                   "its name, with .pt)"})
    refuse_same_outputs(written)  # a .pt that links to the .py: the module replaced the weights
    check = not no_check
    if not model and weights is None:  # refused before the weights are drawn, not after
        assert input_size is not None and hidden_size is not None
        shapes = load(spec).stack_params(input_size, hidden_size,
                                         Stack(layers or 1, direction or "forward"))
        onnx_model.weights_fit(sum(math.prod(shape) for shape in shapes.values()), dtype,
                               (onnx_model.ONNX_COPIES if fmt == "onnx" else
                                torch_module.TORCH_COPIES)[check],
                               "the ONNX export" if fmt == "onnx" else "the PyTorch export")
    bound = compile_spec(spec, None, input_size, weights, hidden_size, seed, "numpy", dtype,
                         "numpy", layers, direction, False)
    runner, cell = bound.runner, bound.runner.cell
    if runner.batch_first:
        say(f"note: {spec} is batch-major (x of shape (B, T, I)); the exported model "
            "is time-major: x of shape (T, B, I)", err=True)
        runner = runner.time_major()
    refuse_stored(spec, bound.state, bound.lengths,
                  f"'run {spec}' runs them; to export the layers alone, write their weights "
                  f"with 'params {spec} --out w.npz' and export the cell with --weights w.npz")
    summary: dict[str, object] = {
        "cell": cell.name, "format": fmt, "dtype": dtype, "layers": runner.stack.layers,
        "direction": runner.stack.direction, "input_size": runner.input_size,
        "hidden_size": runner.hidden_size}
    if fmt == "onnx":
        checked = onnx_model.export(runner, out, check, scan)
        fused = onnx_model.fused_operator(runner, scan)
        how = f"ONNX's {fused.op_type} operator" if fused else "a Scan over the cell's step"
        states = list(cell.graph.states)
        shape = f"(B, {runner.hidden_size})" if runner.stack.single else \
            f"({len(runner.units)}, B, {runner.hidden_size})"
        summary.update({"out": str(out), "opset": onnx_model.OPSET, "runs_as":
                        fused.op_type if fused else "Scan", "checked": check,
                        "checked_in": checked.removeprefix("checked in ") if check else None,
                        "outputs": ["y", *(f"final_{s}" for s in states)]})
        lines = [f"{cell.name}: ONNX opset {onnx_model.OPSET}, {how} "
                 f"({runner.stack.describe()}); input x (T, B, {runner.input_size}); outputs "
                 f"y (T, B, {runner.output_width}), "
                 + ", ".join(f"final_{s} {shape}" for s in states),
                 f"weights: initializers named as the cell's parameters ({checked})"]
        paths = [str(out)]
    else:
        module, state = torch_module.export(runner, out, check)
        top = torch_module.class_name(cell.name) + ("" if runner.stack.single else "Stack")
        mapping = torch_module.torch_names(list(runner.weights))
        summary.update({"out": str(module), "state_dict": str(state), "module": top,
                        "checked": check, "parameters": mapping})
        width = max(map(len, mapping), default=0)
        lines = [f"{cell.name}: PyTorch module {top} ({runner.stack.describe()}), "
                 f"{module.stem}.load() gives it with these weights"
                 + ("; checked against the cell" if check else ""),
                 "parameters (lstm-graph's name, the module's):" if mapping else
                 "parameters: none",
                 *(f"  {ours:<{width}}  {theirs}" for ours, theirs in mapping.items())]
        paths = [str(module), str(state)]
    aside = is_stdout(out)  # the model went to stdout: the summary must not follow it there
    if as_json:
        emit_json(summary, err=aside)
        return
    say(f"wrote {' and '.join(paths)}", err=True)
    for line in lines:
        say(line, err=aside)
