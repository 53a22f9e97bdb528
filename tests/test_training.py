"""Training: tasks, Adam against PyTorch's, checkpoints that resume exactly, the commands."""

from __future__ import annotations

import io
import json
import os
import re
import warnings

import numpy as np
import pytest
import torch

import lstm_graph
from lstm_graph.errors import LstmGraphWarning
from lstm_graph.notebook import state_gradients
from lstm_graph.training import adding, copy, from_file, train
from lstm_graph.training.gradflow import flow
from lstm_graph.training.trainer import Adam, loss_and_gradient


def test_the_adding_problem_sums_the_two_marked_values_and_its_baseline_is_one_sixth():
    task = adding(30)
    x, target = task.sample(np.random.default_rng(0), 20000)
    assert x.shape == (30, 20000, 2) and target.shape == (20000, 1)
    assert np.all(x[:, :, 1].sum(axis=0) == 2)
    assert np.all(x[:15, :, 1].sum(axis=0) == 1)  # one marker in each half
    marked = (x[:, :, 0] * x[:, :, 1]).sum(axis=0)
    np.testing.assert_allclose(target[:, 0], marked)
    assert abs(np.mean((target - 1) ** 2) - task.baseline) < 0.005


def test_the_copy_task_repeats_its_symbols_after_the_delimiter():
    task = copy(5)
    x, target = task.sample(np.random.default_rng(1), 3)
    assert x.shape == (25, 3, 10) and target.shape == (25, 3)
    symbols = x[:10].argmax(axis=-1)
    np.testing.assert_array_equal(target[-10:], symbols)
    assert np.all(target[:-10] == 0) and np.all(x[14].argmax(axis=-1) == 9)


def test_a_task_file_says_what_it_must_hold(tmp_path):
    np.savez(tmp_path / "t.npz", x=np.zeros((4, 6, 2)), y=np.arange(18.0).reshape(6, 3))
    task = from_file(tmp_path / "t.npz")
    assert (task.input_size, task.output_size, task.loss) == (2, 3, "mse_last")
    np.savez(tmp_path / "bad.npz", x=np.zeros((4, 6, 2)), y=np.ones((5, 3)))
    with pytest.raises(lstm_graph.DataError, match=r"y has shape \(5, 3\); with x of shape "
                                                   r"\(4, 6, 2\) expected \(6, O\)"):
        from_file(tmp_path / "bad.npz")


def test_adam_takes_the_steps_pytorchs_adam_takes():
    rng = np.random.default_rng(0)
    start = {"w": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)}
    tensors = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in start.items()}
    reference = torch.optim.Adam(tensors.values(), lr=0.01)
    ours, params = Adam(lr=0.01), {k: v.copy() for k, v in start.items()}
    for _ in range(5):
        grads = {k: rng.standard_normal(v.shape) for k, v in start.items()}
        for name, tensor in tensors.items():
            tensor.grad = torch.tensor(grads[name])
        reference.step()
        ours.update(params, grads)
    for name, tensor in tensors.items():
        np.testing.assert_allclose(params[name], tensor.detach().numpy(), rtol=1e-12)


def test_training_steps_are_pytorchs_lstm_linear_clipping_and_adam_with_one_bias():
    """Ten whole steps of ``train`` (forward, backward through time, the readout, clipping
    that bites, Adam) against ``nn.LSTM`` + ``nn.Linear`` + ``clip_grad_norm_`` +
    ``torch.optim.Adam`` from the same weights and batches, in float64. The cell has one
    bias a gate: PyTorch's second (``bias_hh``) is held at zero, else Adam moves the two
    and their sum parts from ours (docs/training.md)."""
    from lstm_graph.training.trainer import Trainer

    hidden, batch, lr, clip, seed = 5, 4, 0.02, 0.05, 0
    task = adding(6)
    ours = Trainer(lstm_graph.load_cell("lstm"), task, hidden, batch, lr, clip, seed,
                   "float64")
    start = {k: torch.tensor(v.astype(np.float64)) for k, v in ours.params.items()}
    lstm = torch.nn.LSTM(task.input_size, hidden).double()
    readout = torch.nn.Linear(hidden, task.output_size).double()
    with torch.no_grad():
        for mine, theirs in (("W_x", lstm.weight_ih_l0), ("W_h", lstm.weight_hh_l0),
                             ("b", lstm.bias_ih_l0)):
            theirs.copy_(torch.cat([start[f"{gate}.{mine}"] for gate in "ifgo"]))
        lstm.bias_hh_l0.zero_()
        readout.weight.copy_(start["readout.W"])
        readout.bias.copy_(start["readout.b"])
    lstm.bias_hh_l0.requires_grad_(False)
    params = [p for p in (*lstm.parameters(), *readout.parameters()) if p.requires_grad]
    adam = torch.optim.Adam(params, lr=lr)
    clipped = 0
    for step in range(1, 11):
        x, target = task.sample(np.random.default_rng([seed, step]), batch)
        loss = ours.train_step()
        adam.zero_grad()
        y, _ = lstm(torch.tensor(x))
        expected = torch.nn.functional.mse_loss(readout(y[-1]), torch.tensor(target))
        expected.backward()
        clipped += float(torch.nn.utils.clip_grad_norm_(params, clip)) > clip
        adam.step()
        assert loss == pytest.approx(expected.item(), rel=1e-12)
    assert clipped == 10
    for gate, k in zip("ifgo", range(4)):
        rows = slice(k * hidden, (k + 1) * hidden)
        for mine, theirs in (("W_x", lstm.weight_ih_l0), ("W_h", lstm.weight_hh_l0),
                             ("b", lstm.bias_ih_l0)):
            np.testing.assert_allclose(ours.params[f"{gate}.{mine}"],
                                       theirs[rows].detach().numpy(), rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(ours.params["readout.W"], readout.weight.detach().numpy(),
                               rtol=1e-11, atol=1e-14)


def test_the_cross_entropy_gradient_is_pytorchs():
    task = copy(3)
    out = np.random.default_rng(2).standard_normal((16, 4, 9))
    target = np.random.default_rng(3).integers(0, 9, size=(16, 4))
    loss, grad = loss_and_gradient(task, out, target)
    tensor = torch.tensor(out, requires_grad=True)
    expected = torch.nn.functional.cross_entropy(tensor.reshape(-1, 9),
                                                 torch.tensor(target).reshape(-1))
    expected.backward()
    assert loss == pytest.approx(float(expected.detach()))
    np.testing.assert_allclose(grad, tensor.grad.numpy(), atol=1e-12)


def test_training_learns_a_short_adding_problem():
    done = train(lstm_graph.load_cell("lstm"), adding(6), hidden_size=16, steps=400, batch=32,
                 lr=5e-3, eval_every=100)
    assert done.evals[-1][1] < 0.2 * done.baseline  # well under guessing 1


def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does(tmp_path):
    cell, task = lstm_graph.load_cell("gru"), adding(5)
    straight = train(cell, task, hidden_size=6, steps=30, batch=8, eval_every=10)
    checkpoint = tmp_path / "ckpt.npz"
    train(cell, task, hidden_size=6, steps=12, batch=8, eval_every=10, checkpoint=checkpoint,
          checkpoint_every=4)
    resumed = train(cell, task, hidden_size=6, steps=30, batch=8, eval_every=10,
                    checkpoint=checkpoint, resume=True)
    assert resumed.steps == 30 and np.array_equal(resumed.losses, straight.losses)
    for name, value in straight.weights.items():
        np.testing.assert_array_equal(resumed.weights[name], value)


def test_weights_an_update_overflowed_are_refused_and_the_last_checkpoint_stays(tmp_path):
    """At lr 1000 without clipping, step 2's loss is finite and Adam's update makes h.W_x
    NaN: refused before the next checkpoint or evaluation, with advice that can be taken
    (no clip to lower), and the step-1 checkpoint still resumes."""
    cell, task, checkpoint = lstm_graph.load_cell("rnn_relu"), adding(6), tmp_path / "c.npz"
    settings = dict(hidden_size=4, batch=4, lr=1000.0, max_norm=0.0, checkpoint=checkpoint)
    train(cell, task, steps=1, **settings)
    kept = checkpoint.read_bytes()
    for eval_every, every in ((100, 2), (2, 100)):
        with pytest.raises(lstm_graph.DataError, match=re.escape(
                "the weights became NaN or infinite at step 2 (h.W_x first); lower the "
                "learning rate (--lr), or clip the gradient (--clip, e.g. 1)")):
            train(cell, task, steps=5, resume=True, eval_every=eval_every,
                  checkpoint_every=every, **settings)
        assert checkpoint.read_bytes() == kept
    assert train(cell, task, steps=1, resume=True, **settings).steps == 1  # it loads


def test_a_failed_train_command_names_the_checkpoint_it_had_written(tmp_path, monkeypatch,
                                                                     cli_fails):
    monkeypatch.chdir(tmp_path)
    message = cli_fails("train", "rnn_relu", "--task", "adding", "--length", "6", "-H", "4",
                        "--batch", "4", "--steps", "5", "--lr", "1000", "--clip", "0",
                        "--checkpoint-every", "1", "--out", "w.npz")
    assert message.rstrip().endswith("the weights became NaN or infinite at step 2 (h.W_x "
                                      "first); lower the learning rate (--lr), or clip the "
                                      "gradient (--clip, e.g. 1) (w.ckpt.npz had been written "
                                      "whole before it; nothing else was written)"), message


def test_a_loss_not_finite_before_any_update_is_not_blamed_on_the_learning_rate(tmp_path):
    """At step 1 no update has run: the advice to lower --lr or --clip could not help."""
    boom = lstm_graph.compile_source("input x\nstate h\noutput h\n"
                                     "h = relu(linear(x, h[t-1])) * 1e30 + h[t-1] * 1e30\n",
                                     "boom.cell")
    with pytest.raises(lstm_graph.DataError) as refused:
        train(boom, adding(6), 4, steps=3, batch=4)
    assert str(refused.value) == (
        "the training loss is nan at step 1, before any update: the cell's output with its "
        "initial weights is not finite (its values grow past what the dtype holds): train in "
        "float64 (--dtype float64), or bound the cell's values")


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    checkpoint = tmp_path / "ckpt.npz"
    train(lstm_graph.load_cell("rnn"), adding(5), 4, steps=2, batch=4, checkpoint=checkpoint)
    with pytest.raises(lstm_graph.DataError, match="a checkpoint of another run: hidden_size 4"):
        train(lstm_graph.load_cell("rnn"), adding(5), 5, steps=4, batch=4,
              checkpoint=checkpoint, resume=True)



def test_a_checkpoint_of_another_cell_or_task_length_says_so_not_that_it_is_damaged(
        tmp_path):
    """Another cell's parameters, or the copy task's steps made of another length, were
    compared first: 'a damaged checkpoint (no array adam.m/f.W_h …)', 'length 30 (now 32)'."""
    checkpoint = tmp_path / "ckpt.npz"
    train(lstm_graph.load_cell("rnn"), adding(5), 4, steps=2, batch=4, checkpoint=checkpoint)
    with pytest.raises(lstm_graph.DataError) as info:
        train(lstm_graph.load_cell("lstm"), adding(5), 4, steps=4, batch=4,
              checkpoint=checkpoint, resume=True)
    assert "a checkpoint of another run: cell 'rnn' (now 'lstm'); cell.sha256" in \
        str(info.value) and "damaged" not in str(info.value), info.value
    train(lstm_graph.load_cell("rnn"), copy(10), 4, steps=2, batch=4, checkpoint=checkpoint)
    with pytest.raises(lstm_graph.DataError) as info:
        train(lstm_graph.load_cell("rnn"), copy(12), 4, steps=4, batch=4,
              checkpoint=checkpoint, resume=True)
    assert "task 'copy10' (now 'copy12');" in str(info.value)
    assert "length" not in str(info.value), info.value
    with pytest.raises(lstm_graph.DataError, match="no checkpoint path was given"):
        train(lstm_graph.load_cell("rnn"), adding(5), 4, steps=4, batch=4, resume=True)


def test_the_default_checkpoint_place_is_replaced_only_where_train_wrote_it(tmp_path, cli,
                                                                            cli_run):
    """The checkpoint's place beside --out, a name the user never gave, was written over
    whatever it held (a file of theirs; a link's target); an earlier run's checkpoint is
    replaced with a note. --out /dev/stdout into a pipe made a place in /proc/PID/fd."""
    settings = ["train", "rnn", "--task", "adding", "--length", "5", "-H", "3", "--batch",
                "4", "--out"]
    common = [*settings, tmp_path / "w.npz", "--steps", "2"]
    kept = tmp_path / "w.ckpt.npz"
    kept.write_bytes(b"precious")
    refused = cli(*common)
    assert refused.exit_code == 2 and "holds something train did not write; it is left " \
        "alone: give --checkpoint FILE, or move it" in refused.stderr, refused.stderr
    kept.unlink()
    (tmp_path / "mine.txt").write_bytes(b"precious")
    kept.symlink_to(tmp_path / "mine.txt")
    assert "holds a link train did not write" in cli(*common).stderr
    assert (tmp_path / "mine.txt").read_bytes() == b"precious" and kept.is_symlink()
    assert not (tmp_path / "w.npz").exists()
    kept.unlink()
    assert "replacing" not in cli_run(*common).stderr
    refused = cli(*settings, tmp_path / "w.npz", "--steps", "2", "--task", "nosuch")
    assert refused.exit_code != 0 and "replacing" not in refused.stderr  # nothing replaced
    again = cli_run(*common).stderr
    assert f"replacing {kept}, the checkpoint of an earlier run at step 2 (--resume would " \
        "go on from it)" in again, again
    assert "replacing" not in cli_run(*common[:-1], "3", "--resume").stderr
    kept.write_bytes(b"precious")
    cli_run(*common, "--checkpoint", kept)  # named: written as every output is
    assert kept.read_bytes().startswith(b"PK")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    refused = cli(*settings, fifo, "--steps", "2")
    assert refused.exit_code == 2 and "is not a regular file, so there is no place beside " \
        "it for the checkpoint" in refused.stderr, refused.stderr



def test_a_refused_checkpoint_shows_no_progress_and_a_resumed_run_starts_at_its_step(
        tmp_path, cli, cli_run):
    """``train --resume`` printed 'training rnn on adding' before saying the checkpoint was
    refused; the bar now begins once it is read, at the step it holds."""
    (tmp_path / "bad.ckpt.npz").write_bytes(b"garbage")
    common = ["train", "rnn", "--task", "adding", "-H", "3", "--batch", "4", "--out",
              tmp_path / "w.npz", "--eval-every", "2"]
    refused = cli(*common, "--steps", "4", "--checkpoint", tmp_path / "bad.ckpt.npz",
                  "--resume")
    assert refused.exit_code == 1 and refused.stderr == (
        f"{tmp_path / 'bad.ckpt.npz'}: not a readable .npz file (File is not a zip file)\n")
    cli_run(*common, "--steps", "2")
    resumed = cli_run(*common, "--steps", "4", "--resume").stderr
    assert resumed.startswith("training rnn on adding\nstep 4: loss "), resumed


def test_a_checkpoint_of_other_equations_data_or_settings_is_refused(tmp_path):
    """Only the cell's and the file's names were compared: a cell whose equations changed,
    another task file of the same name, or another learning rate resumed without a word."""
    text = "cell mine\ninput x\nstate h\noutput h\nh = tanh(linear(x, h[t-1])) * {k}\n"
    rng = np.random.default_rng(0)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        np.savez(tmp_path / folder / "t.npz", x=rng.standard_normal((4, 10, 2)),
                 y=rng.standard_normal((10, 1)))
    checkpoint = tmp_path / "ckpt.npz"
    first = lstm_graph.compile_source(text.format(k=0.5), "mine.cell")
    task = from_file(tmp_path / "a" / "t.npz")
    train(first, task, 4, steps=2, batch=4, checkpoint=checkpoint)
    for cell, other_task, lr, words in [
            (lstm_graph.compile_source(text.format(k=0.9), "mine.cell"), task, 2e-3,
             "cell.sha256 '"),
            (first, from_file(tmp_path / "b" / "t.npz"), 2e-3, "task.sha256 '"),
            (first, task, 1e-2, "lr 0.002 (now 0.01)")]:
        with pytest.raises(lstm_graph.DataError, match="a checkpoint of another run") as info:
            train(cell, other_task, 4, steps=4, batch=4, lr=lr, checkpoint=checkpoint,
                  resume=True)
        assert words in str(info.value) and str(info.value).count(";") == 1, info.value
    assert train(first, task, 4, steps=4, batch=4, checkpoint=checkpoint,
                 resume=True).resumed_from == 2


def test_an_out_that_is_a_link_has_its_checkpoint_beside_the_file_it_leads_to(tmp_path,
                                                                              cli_run):
    """``--out lnk.npz`` (a link to a file) was refused: 'not a regular file, so there is no
    place beside it for the checkpoint', though run and params follow such a link."""
    (tmp_path / "there").mkdir()
    (tmp_path / "there" / "w.npz").write_bytes(b"earlier")
    (tmp_path / "lnk.npz").symlink_to(tmp_path / "there" / "w.npz")
    cli_run("train", "rnn", "--task", "adding", "--length", "5", "-H", "3", "--batch", "4",
            "--steps", "3", "--out", tmp_path / "lnk.npz")
    assert (tmp_path / "lnk.npz").is_symlink()
    assert sorted(p.name for p in (tmp_path / "there").iterdir()) == ["w.ckpt.npz", "w.npz"]
    assert "f.W_x" not in np.load(tmp_path / "there" / "w.npz").files  # an rnn's weights
    assert "h.W_x" in np.load(tmp_path / "there" / "w.npz").files


def test_train_command_writes_weights_that_run_a_checkpoint_and_a_plot(tmp_path, cli_run):
    out = tmp_path / "w.npz"
    args = ["train", "peephole_lstm", "--task", "adding", "--length", "5", "-H", "4",
            "--batch", "4", "--steps", "20", "--eval-every", "10", "--out", out,
            "--plot", tmp_path / "loss.svg"]
    first = cli_run(*args)
    assert "held-out loss" in first.stdout and (tmp_path / "w.ckpt.npz").exists()
    svg = (tmp_path / "loss.svg").read_bytes()
    assert svg.startswith(b"<?xml") and b"<svg" in svg
    cli_run(*args)
    assert (tmp_path / "loss.svg").read_bytes() == svg  # deterministic
    np.save(tmp_path / "x.npy", np.zeros((5, 3, 2), "float32"))
    cli_run("run", "peephole_lstm", "--weights", out, "--input", tmp_path / "x.npy", "--out",
            tmp_path / "y.npz")
    resumed = cli_run(*args[:-2], "--steps", "30", "--resume")
    assert "after 30 steps, resumed at step 20" in resumed.stdout


def test_the_memory_pipe_carries_gradient_back_where_a_plain_rnn_loses_it():
    x, _ = adding(40).sample(np.random.default_rng(0), 8)
    lstm = lstm_graph.load_cell("lstm")
    weights = lstm.random_weights(2, 16, seed=1, dtype="float64")
    weights["f.b"] = weights["f.b"] + 6.0  # a forget valve held open: the carousel
    carousel = flow(lstm.compile(weights=weights, dtype="float64"), x)
    plain = flow(lstm_graph.load_cell("rnn").compile(input_size=2, hidden_size=16,
                                                     dtype="float64"), x)
    kept = carousel.states["c"][0] / carousel.states["c"][-1]
    lost = plain.states["h"][0] / plain.states["h"][-1]
    assert kept > 0.1 and lost < 1e-6
    assert ("c[t-1]", "c.mul") in carousel.edges  # f * c[t-1]: the pipe's own edge
    assert carousel.edges["c[t-1]", "c.mul"].shape == (40,)


def test_gradflow_command_draws_several_cells_on_one_chart(tmp_path, cli_run):
    result = cli_run("gradflow", "lstm", "rnn", "--length", "12", "-H", "8", "--out",
                     tmp_path / "flow.png")
    assert (tmp_path / "flow.png").read_bytes()[:4] == b"\x89PNG"
    assert "lstm" in result.stdout and "‖∂L/∂c_t‖" in result.stdout and "rnn" in result.stdout


def test_gradflow_draws_the_gradient_each_edge_carried_on_the_diagram(tmp_path, cli_run,
                                                                      cli_fails):
    cli_run("gradflow", "lstm", "--length", "6", "-H", "4", "--out", tmp_path / "flow.svg",
            "--diagram", tmp_path / "d.dot", "--step", "4")
    dot = (tmp_path / "d.dot").read_text()
    assert "the gradient the edge carried back (step 4 of 6" in dot
    assert dot.count("e-0") + dot.count("e+0") >= 10  # sizes written on the edges
    assert "--diagram draws one cell" in cli_fails(
        "gradflow", "lstm", "rnn", "--out", tmp_path / "f.svg", "--diagram", tmp_path / "d.svg",
        code=2)


@pytest.mark.parametrize("style, into", [("cell", '"[cell]"'), ("pipe", '"c[t]"')])
def test_the_memory_pipe_into_the_cell_carries_its_gradient_too(tmp_path, cli_run, style,
                                                                into):
    """The finding: every edge of the gradient diagram had its size but the memory pipe,
    the one the article's story runs along: it is ‖∂L/∂c_t‖, what all its readers take."""
    from lstm_graph.training.tasks import named

    cli_run("gradflow", "lstm", "--length", "6", "-H", "4", "--out", tmp_path / "flow.svg",
            "--diagram", tmp_path / "d.dot", "--step", "4", "--style", style)
    pipe = next(line for line in (tmp_path / "d.dot").read_text().splitlines()
                if line.strip().startswith(f"c -> {into}"))
    task = named("adding", 6)
    runner = lstm_graph.load_cell("lstm").compile(input_size=task.input_size, hidden_size=4,
                                                  seed=0, dtype="float64")
    x, _ = task.sample(np.random.default_rng([0, 3]), 16)  # gradflow's, --batch 16
    size = flow(runner, x).states["c"][3]
    assert f">{size:.1e}</FONT>" in pipe
    assert "memory pipe" in pipe  # its caption stays beside the size


def test_gradflow_without_dot_says_so_first_with_an_option_it_has(tmp_path, cli_process):
    """The finding: the advice was `use --format dot`, which gradflow does not have, and it
    came after the gradients were computed and the chart written."""
    result = cli_process("gradflow", "lstm", "--length", "4", "-H", "2", "--out",
                         tmp_path / "g.svg", "--diagram", tmp_path / "d.svg",
                         cwd=tmp_path, env={"PATH": str(tmp_path)})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "apt-get install graphviz" in result.stderr
    assert f"or write the diagram as DOT text (--diagram {tmp_path / 'd.dot'}), which needs " \
        "no program" in result.stderr and "--format" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written, the chart neither
    ran = cli_process("gradflow", "lstm", "--length", "4", "-H", "2", "--out",
                      tmp_path / "g.svg", "--diagram", tmp_path / "d.dot",
                      cwd=tmp_path, env={"PATH": str(tmp_path)})
    assert ran.returncode == 0, ran.stderr
    assert (tmp_path / "d.dot").read_text().startswith("digraph")


def test_a_line_the_pipe_style_merges_into_several_layers_shows_no_one_layers_share(
        tmp_path, cli_run):
    """The finding: the pipe style's one line from h[t-1] into the four layers was
    labelled (and sized) with the forget valve's share alone, 5.1e-04 where the four sent
    back 5.6e-03 together. It shows no size; its tooltip gives each layer's share, the
    sizes the cell style draws on the four edges apart."""
    dots = {}
    for style in ("pipe", "cell"):
        cli_run("gradflow", "peephole_lstm", "--length", "6", "-H", "4", "--out",
                tmp_path / "flow.svg", "--diagram", tmp_path / f"{style}.dot", "--step", "4",
                "--style", style)
        dots[style] = (tmp_path / f"{style}.dot").read_text()
    shares = {}
    for line in dots["cell"].splitlines():
        found = re.search(r'label=<<FONT POINT-SIZE="8" COLOR="#\w+">([-+.e\d]+)</FONT>>.*'
                          r'tooltip="(h\[t-1\]|x) → (\w)\.linear [-+.e\d]+"', line)
        if found:
            shares[found[2], found[3]] = found[1]
    assert len(shares) == 8  # x and h[t-1] into each of the four layers
    for source in ("x", "h[t-1]"):
        (line,) = [line for line in dots["pipe"].splitlines()
                   if line.strip().startswith(f'{json.dumps(source)} -> "[bus')
                   or line.strip().startswith(f"{source} -> \"[bus")]
        assert "label=" not in line and "penwidth=1.3" in line
        assert "; ".join(f"{source} → {gate}.linear {shares[source, gate]}"
                         for gate in "figo") in line
    assert "one line into several layers: no size of its own" in dots["pipe"]
    assert "one line into several layers" not in dots["cell"]


@pytest.mark.parametrize("args, code, message", [
    (["train", "lstm", "--task", "adding", "--steps", "5", "--plot", "p.txt"], 2,
     "--plot p.txt: a chart is written as .png or .svg (by its suffix), not .txt"),
    (["train", "lstm", "--task", "t.npz", "--length", "9", "--steps", "5"], 2,
     "the task file t.npz holds sequences of their own length: drop --length"),
    (["train", "lstm", "--task", "adding", "--steps", "5", "--checkpoint", "w.npz"], 2,
     "--out and --checkpoint name the same file (w.npz)"),
    (["train", "lstm", "--task", "adding", "--steps", "5", "--checkpoint", "c.png", "--plot",
      "./c.png"], 2, "--checkpoint and --plot name the same file (c.png)"),
    (["gradflow", "lstm", "--diagram", "g.png"], 2,
     "--out and --diagram name the same file (g.png)"),
    (["train", "lstm", "--task", "adding", "--steps", "5", "--plot", ""], 2,
     "the output path is empty"),
    (["gradflow", "lstm", "--diagram", "d.txt"], 2, "a diagram is written as svg"),
    (["gradflow", "lstm", "--diagram", "d.svg", "--step", "51"], 2, "have 50 steps"),
    (["train", "lstm", "--task", "addng", "--length", "50", "--steps", "5"], 1,
     "unknown task 'addng' (did you mean 'adding'?): use adding, copy, or the path of an .npz"),
    (["train", "lstm", "--task", "a\x1b[31m", "--length", "6", "--steps", "5"], 1,
     "unknown task 'a\\x1b[31m'"),
    (["train", "lstm", "--task", "adding", "--steps", "5", "--checkpoint", "/dev/null"], 2,
     "--checkpoint /dev/null is a device or pipe, which keeps nothing for --resume to read "
     "back: give a file"),
    (["gradflow", "lstm="], 2, "lstm=: no weights file after '='; give lstm=FILE, or lstm "
     "alone for random weights"),
])
def test_train_and_gradflow_refuse_bad_outputs_before_any_work(tmp_path, monkeypatch, args,
                                                               code, message, cli_fails):
    monkeypatch.chdir(tmp_path)
    out = ["--out", "w.npz"] if args[0] == "train" else ["--out", "g.png"]
    assert message in cli_fails(*args, *out, code=code)
    assert not list(tmp_path.iterdir())  # nothing trained, nothing written


@pytest.mark.parametrize("args, message", [
    (["train", "lstm", "--task", "adding", "--steps", "5", "--out", "w.npz", "--seed", "-1"],
     "-1 is not in the range x>=0"),
    (["gradflow", "lstm", "--out", "g.png", "--seed", "-1"], "-1 is not in the range x>=0"),
    (["train", "lstm", "--task", "adding", "--steps", "5", "--out", "w.npz", "--lr", "nan"],
     "nan is not a finite number"),
    (["train", "lstm", "--task", "adding", "--steps", "5", "--out", "w.npz", "--clip", "inf"],
     "inf is not a finite number"),
    (["train", "lstm", "--task", "adding", "--steps", "5", "--out", "/dev/null"],
     "give --checkpoint FILE"),
    (["gradflow", "lstm", "lstm", "--out", "g.png"], "a CELL is given twice"),
    (["gradflow", "lstm", "--out", "g.npy"], "--out g.npy: a chart is written as"),
    (["gradflow", "=w.npz", "--out", "g.png"], "a CELL is empty before its '='"),
    (["train", "lstm", "--task", "adding", "--length", "1", "--steps", "5", "--out", "w.npz"],
     "--length 1: the adding problem needs sequences of at least 2 steps, not 1"),
])
def test_train_and_gradflow_usage_errors(tmp_path, monkeypatch, args, message, cli_fails):
    monkeypatch.chdir(tmp_path)
    assert message in cli_fails(*args, code=2)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("y, message", [
    (np.ones((6, 1)), "y is the same in every sequence"),
    (np.ones((6, 0)), "no outputs to learn"),
])
def test_a_task_file_with_nothing_to_learn_is_refused(tmp_path, y, message):
    np.savez(tmp_path / "t.npz", x=np.ones((4, 6, 2)), y=y)
    with pytest.raises(lstm_graph.DataError, match=message):
        from_file(tmp_path / "t.npz")


def test_a_task_too_large_for_float32_or_not_an_npz_says_so_naming_its_array(tmp_path,
                                                                            cli_refused):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "t.npz", x=rng.standard_normal((4, 6, 2)) * 1e39,
             y=rng.standard_normal((6, 1)))
    assert f"{tmp_path / 't.npz'}: x holds " in cli_refused(
        "train", "lstm", "--task", tmp_path / "t.npz", "--steps", "2")  # the array named
    torch.save(torch.nn.LSTM(2, 3).state_dict(), tmp_path / "m.pt")
    assert "m.pt: not an .npz that numpy.savez wrote: it holds 'm/data.pkl' (a PyTorch " \
        "file's pickle), which is not an .npy array" in cli_refused(
            "train", "lstm", "--task", tmp_path / "m.pt", "--steps", "2")


@pytest.mark.parametrize("damage", ["meta a list", "no step", "a parameter of another shape",
                                    "a parameter of integers", "a parameter in float64",
                                    "an infinite loss", "a negative loss", "a NaN evaluation"])
def test_a_damaged_checkpoint_is_refused_with_a_message(tmp_path, damage):
    checkpoint = tmp_path / "c.npz"
    train(lstm_graph.load_cell("lstm"), adding(5), 4, 2, batch=4, checkpoint=checkpoint)
    arrays = dict(np.load(checkpoint))
    meta = json.loads(bytes(arrays["meta"]).decode())
    if damage == "meta a list":
        meta = [meta]
    elif damage == "no step":
        del meta["step"]
    elif damage == "a parameter of another shape":
        arrays["param/f.W_h"] = np.zeros((3, 3), "float32")
    elif damage.startswith("a parameter"):  # truncated to 0, or rounded, without a word
        arrays["param/f.b"] = arrays["param/f.b"].astype(
            "int32" if damage.endswith("integers") else "float64")
    else:
        column = "evals" if damage.endswith("evaluation") else "losses"
        arrays[column] = arrays[column].copy()
        arrays[column][-1, 1] = {"an infinite loss": np.inf, "a negative loss": -5.0,
                                 "a NaN evaluation": np.nan}[damage]
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(checkpoint, **arrays)
    with pytest.raises(lstm_graph.DataError, match="checkpoint"):
        train(lstm_graph.load_cell("lstm"), adding(5), 4, 4, batch=4, checkpoint=checkpoint,
              resume=True)


def test_gradflow_tells_two_weights_of_one_cell_apart(tmp_path, cli_run):
    for seed in (1, 2):
        weights = lstm_graph.load_cell("rnn").random_weights(2, 4, seed=seed)
        np.savez(tmp_path / f"w{seed}.npz", **weights)
    a, b = f"rnn={tmp_path / 'w1.npz'}", f"rnn={tmp_path / 'w2.npz'}"
    result = cli_run("gradflow", a, b, "--length", "6", "--json", "--out", tmp_path / "g.svg")
    assert sorted(json.loads(result.stdout)["flows"]) == sorted([a, b])


def test_gradflow_says_the_input_size_of_weights_is_the_task_s_that_differs(tmp_path,
                                                                             cli_fails):
    np.savez(tmp_path / "w.npz", **lstm_graph.load_cell("rnn").random_weights(2, 4, seed=0))
    message = cli_fails("gradflow", f"rnn={tmp_path / 'w.npz'}", "--task", "copy", "--out",
                        tmp_path / "g.svg")
    assert "has input size 2, but input size 10 was asked for (the input size of --task " \
        "copy, whose x has 10 channels)" in message


def test_a_model_file_is_its_cell_with_its_weights_in_gradflow_and_refused_by_train(
        tmp_path, cli_run, cli_fails):
    """gradflow m.pt charted random weights at -H (its cell alone); train m.pt trained a
    fresh cell at -H without a word about the model's weights."""
    torch.manual_seed(0)
    torch.save(torch.nn.LSTM(2, 4).state_dict(), tmp_path / "m.pt")
    torch.save(torch.nn.LSTM(2, 4, num_layers=2).state_dict(), tmp_path / "two.pt")
    charts = [json.loads(cli_run("gradflow", entry, "--length", "5", "--batch", "2", "--json",
                                 "--out", tmp_path / f"{k}.svg").stdout)["flows"]
              for k, entry in enumerate([str(tmp_path / "m.pt"), f"lstm={tmp_path / 'm.pt'}"])]
    assert list(charts[0].values()) == list(charts[1].values())
    assert len(charts[0]["lstm"]["h"]) == 5 and charts[0]["lstm"]["h"][-1] == 2.0  # √H: H ones
    assert "these weights are 2 layers, forward" in cli_fails(
        "gradflow", tmp_path / "two.pt", "--out", tmp_path / "t.svg")
    assert "cannot go on from a model's" in cli_fails(
        "train", tmp_path / "m.pt", "--task", "adding", "--steps", "2", "--out",
        tmp_path / "w.npz", code=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.svg", "1.svg", "m.pt", "two.pt"]


def test_a_task_file_holds_out_a_tenth_that_training_never_draws(tmp_path):
    """The loss a file task reports was measured on the very sequences training drew (a
    cell that learned noise by heart scored 5.6e-07 against a baseline of 0.71)."""
    x = np.zeros((3, 40, 2))
    x[:, :, 0] = np.arange(40)  # each sequence tells its number
    np.savez(tmp_path / "t.npz", x=x, y=np.arange(40.0)[:, None])
    task = from_file(tmp_path / "t.npz")
    assert from_file(str(tmp_path / "t.npz")).digest == task.digest  # a str path too
    drawn = {int(n) for seed in range(20)
             for n in task.sample(np.random.default_rng(seed), 64)[0][0, :, 0]}
    held_x, held_y = task.held_out(np.random.default_rng(0), 512)
    held = {int(n) for n in held_x[0, :, 0]}
    assert len(held) == 4 and not held & drawn and held | drawn == set(range(40))
    assert sorted(held) == sorted(int(v) for v in held_y[:, 0])
    assert held == {int(n) for n in from_file(tmp_path / "t.npz").held_out(
        np.random.default_rng(9), 512)[0][0, :, 0]}  # the same split every time
    np.savez(tmp_path / "one.npz", x=x[:, :1], y=np.ones((1, 1)))
    with pytest.raises(lstm_graph.DataError, match="a task file needs at least 2"):
        from_file(tmp_path / "one.npz")


@pytest.mark.parametrize("settings, words", [
    ({"eval_every": 0}, "eval_every is 0; it must be a whole number, 1 or more"),
    ({"checkpoint_every": 2.5}, "checkpoint_every is 2.5, of type float; it must be a whole "
                                "number, 1 or more"),
    ({"lr": -1.0}, "the learning rate must be a finite number above 0"),
    ({"max_norm": float("nan")}, "the clip a finite number"),
    ({"lr": "0.1"}, "lr is '0.1', of type str; it must be a number"),
    ({"max_norm": None}, "max_norm is None, of type NoneType; it must be a number"),
    ({"seed": -1}, "seed is -1; it must be a whole number, 0 or more"),
    ({"dtype": "float16"}, "dtype is 'float16'; train in one of float32, float64"),
])
def test_train_from_python_refuses_settings_the_command_line_would(settings, words):
    """A ZeroDivisionError, a ValueError and a KeyError before; -1 ran as given."""
    with pytest.raises(lstm_graph.DataError, match=re.escape(words)):
        train(lstm_graph.load_cell("rnn"), adding(4), 2, 2, batch=2, **settings)


@pytest.mark.parametrize("make, words", [
    (lambda: adding(5.5), "the adding problem's length is 5.5, of type float; it must be a "
                          "whole number"),
    (lambda: copy(2.5), "the copy task's delay is 2.5, of type float; it must be a whole "
                        "number"),
    (lambda: adding(1), "the adding problem needs sequences of at least 2 steps, not 1"),
])
def test_the_tasks_refuse_lengths_that_are_not_whole_numbers(make, words):
    """A float length made a task whose first batch raised NumPy's TypeError."""
    with pytest.raises(lstm_graph.DataError, match=re.escape(words)):
        make()


def test_resuming_past_the_steps_asked_for_is_refused_and_a_cell_without_weights_trains(
        tmp_path):
    checkpoint = tmp_path / "c.npz"
    train(lstm_graph.load_cell("rnn"), adding(4), 2, 4, batch=2, checkpoint=checkpoint)
    with pytest.raises(lstm_graph.DataError, match="is at step 4, past the 3 steps asked"):
        train(lstm_graph.load_cell("rnn"), adding(4), 2, 3, batch=2, checkpoint=checkpoint,
              resume=True)
    fixed = lstm_graph.compile_source("input x\nstate h\noutput h\nh = h[t-1] * 0.5 + 1\n",
                                      "fixed.cell")  # only the readout learns
    assert train(fixed, adding(4), 2, 3, batch=2).weights == {}


def test_an_earlier_checkpoint_resumes_with_a_warning_and_numpy_settings_are_recorded(
        tmp_path):
    """Checkpoints before the cell's and task's digests, lr and clip were recorded resume,
    unchecked on those, with a warning; NumPy numbers as settings are saved as JSON's."""
    checkpoint = tmp_path / "c.npz"
    train(lstm_graph.load_cell("rnn"), adding(4), 2, 2, batch=2, lr=np.float32(2e-3),
          max_norm=np.float64(1.0), seed=np.int64(0), checkpoint=checkpoint)
    arrays = dict(np.load(checkpoint))
    meta = json.loads(bytes(arrays["meta"]).decode())
    assert meta["lr"] == pytest.approx(2e-3) and meta["seed"] == 0
    for key in ("cell.sha256", "task.sha256", "lr", "clip"):
        del meta[key]
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(checkpoint, **arrays)
    with pytest.warns(LstmGraphWarning, match="written before checkpoints recorded "
                      "cell.sha256, task.sha256, lr, clip; it is resumed without checking"):
        done = train(lstm_graph.load_cell("rnn"), adding(4), 2, 4, batch=2,
                     checkpoint=checkpoint, resume=True)
    assert done.resumed_from == 2 and done.steps == 4


def test_a_task_file_whose_squared_deviations_overflow_is_refused(tmp_path):
    """Each squared error below float64's largest, their mean not (y = ±6e153, 20 rows)."""
    y = np.where(np.arange(20) % 2, 6e153, -6e153)[:, None]
    np.savez(tmp_path / "t.npz", x=np.ones((3, 20, 2)), y=y)
    with pytest.raises(lstm_graph.DataError, match="the mean of its squared deviations "
                       "overflows float64"):
        from_file(tmp_path / "t.npz")


def test_the_api_takes_a_checkpoint_as_text_and_a_dtype_as_numpy_names_it(tmp_path):
    cell, task = lstm_graph.load_cell("lstm"), adding(5)
    first = train(cell, task, 4, 2, batch=4, checkpoint=str(tmp_path / "c.npz"),
                  dtype=np.float64)
    resumed = train(cell, task, 4, 3, batch=4, checkpoint=str(tmp_path / "c.npz"),
                    resume=True, dtype=np.dtype("float64"))
    assert first.steps == 2 and resumed.steps == 3 and resumed.resumed_from == 2
    assert resumed.readout["readout.W"].dtype == np.float64


def test_the_api_refuses_a_checkpoint_it_cannot_write_before_the_first_step(tmp_path):
    steps = []
    (tmp_path / "a_file").write_text("")
    with pytest.raises(lstm_graph.OutputError, match="a_file"):
        train(lstm_graph.load_cell("lstm"), adding(5), 4, 3, batch=4,
              checkpoint=tmp_path / "a_file" / "c.npz", report=lambda *a: steps.append(a))
    assert steps == []


@pytest.mark.parametrize("command", ["train", "grad", "run"])
def test_an_npz_output_named_npy_is_wrong_usage(tmp_path, cli_fails, command):
    """The finding: train --out w.npy wrote a zip that --weights w.npy then refused."""
    args = {"train": ["--task", "adding", "--steps", "2"], "grad": ["--sample", "-H", "4"],
            "run": ["--sample", "-H", "4"]}[command]
    assert "w.npy: this writes an .npz (arrays by name), not one .npy array; name it " \
        "w.npz" in cli_fails(command, "lstm", *args, "--out", tmp_path / "w.npy", code=2)
    assert list(tmp_path.iterdir()) == []


def test_summaries_stay_off_a_standard_output_that_takes_the_file(tmp_path, cli_process):
    """The finding: with --out /dev/stdout (train) or --diagram /dev/stdout (gradflow) the
    summary followed the file's bytes in the pipe."""
    done = cli_process("train", "lstm", "--task", "adding", "--length", "5", "--steps", "2",
                       "--out", "/dev/stdout", "--checkpoint", "c.npz", "--json", cwd=tmp_path,
                       text=False)
    assert done.returncode == 0 and done.stdout.startswith(b"PK")
    assert np.load(io.BytesIO(done.stdout))["f.W_x"].shape == (64, 2)  # H = 64 by default
    assert b'"held_out_loss"' in done.stderr
    drawn = cli_process("gradflow", "lstm", "--length", "5", "--out", "g.png", "--diagram",
                        "/dev/stdout", cwd=tmp_path)
    assert drawn.returncode == 0 and drawn.stdout.rstrip().endswith("</svg>")
    assert "‖∂L/∂c_t‖" in drawn.stderr


def test_a_task_file_that_is_an_npy_says_what_a_task_file_holds(tmp_path, cli_fails):
    np.save(tmp_path / "t.npy", np.zeros((3, 2, 2)))
    (tmp_path / "t.npy").rename(tmp_path / "t.npz")
    assert "t.npz: is an .npy file, one array; this takes an .npz of x and y " \
        "(numpy.savez(path, x=…, y=…))" in cli_fails("train", "lstm", "--task",
                                                     tmp_path / "t.npz", "--steps", "2",
                                                     "--out", tmp_path / "w.npz")


def test_an_out_named_in_capitals_gets_its_checkpoint_beside_it(tmp_path, cli_run):
    cli_run("train", "lstm", "--task", "adding", "--length", "5", "--steps", "2", "--out",
            tmp_path / "w.NPZ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.NPZ", "w.ckpt.npz"]


def test_options_that_would_draw_nothing_are_wrong_usage(tmp_path, cli_run, cli_fails):
    """--seed beside --weights and --input, and gradflow's -H where every cell has its
    weights, were taken and not used."""
    cli_run("params", "lstm", "-I", "2", "-H", "4", "--out", tmp_path / "w.npz")
    np.save(tmp_path / "x.npy", np.zeros((5, 2, 2), "float32"))
    assert "--seed draws random weights and --sample's x; here --weights gives the weights " \
        "and --input the x: drop --seed" in cli_fails(
            "run", "lstm", "--weights", tmp_path / "w.npz", "--input", tmp_path / "x.npy",
            "--seed", "5", "--out", tmp_path / "y.npz", code=2)
    assert "-H sets the hidden size of cells given without weights" in cli_fails(
        "gradflow", f"lstm={tmp_path / 'w.npz'}", "-H", "64", "--out", tmp_path / "g.png",
        code=2)
    cli_run("run", "lstm", "--weights", tmp_path / "w.npz", "--sample", "--seed", "5",
            "--out", tmp_path / "y.npz")  # --sample's x is drawn with it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.npz", "x.npy", "y.npz"]


def test_a_cell_value_named_readout_is_refused_not_taken_for_the_trainer_s(tmp_path, cli_fails):
    """The trainer keeps its readout as readout.W and readout.b beside the cell's weights:
    a value named readout lost its bias to the readout's and failed with a KeyError."""
    cell = tmp_path / "ro.cell"
    cell.write_text("cell ro\ninput x\nstate h\noutput h\nreadout = linear(x, h[t-1])\n"
                    "h = tanh(readout)\n")
    said = cli_fails("train", cell, "--task", "adding", "--length", "5", "-H", "4", "--steps",
                     "3", "--out", tmp_path / "w.npz")
    assert "cell 'ro' has a value named readout, whose parameters (readout.W_x, readout.W_h, " \
        "readout.b) would be taken for the trainer's readout (readout.W, readout.b)" in said
    with pytest.raises(lstm_graph.DataError, match="a value named readout"):
        train(lstm_graph.load_cell(str(cell)), adding(5), 4, steps=1)


def test_gradient_sizes_past_1e154_are_finite_and_every_view_measures_alike(tmp_path, cli_run):
    """‖∂L/∂h_t‖ of a linear RNN with W_h = 50·I is 2·50^(T-t): sqrt(sum(v²)) overflowed
    past 1e154, so gradflow drew finite sizes as missing (the explorer as infinite), with
    NumPy's warning; and the diagram measured over the whole batch (√B times the chart's
    each-sequence average, which docs/training.md says both show)."""
    cell = lstm_graph.compile_source("input x\nstate h\noutput h\nh = linear(x, h[t-1])\n",
                                     "lin.cell")
    runner = cell.compile(weights={"h.W_x": np.zeros((4, 2)), "h.W_h": np.eye(4) * 50,
                                   "h.b": np.zeros(4)}, dtype="float64")
    x = np.ones((100, 3, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = flow(runner, x)
        page = state_gradients(runner, x, None, False)
    np.testing.assert_allclose(found.states["h"][0], 2 * 50.0 ** 99, rtol=1e-12)
    np.testing.assert_allclose(page["h"][0], 2 * 50.0 ** 99, rtol=1e-12)
    shown = cli_run("gradflow", "lstm", "--length", "8", "-H", "4", "--batch", "5", "--out",
                    tmp_path / "g.svg", "--diagram", tmp_path / "d.dot", "--step", "8",
                    "--json")
    charted = json.loads(shown.stdout)["flows"]["lstm"]
    dot = (tmp_path / "d.dot").read_text()
    for state, sink in (("c", '"[cell]"'), ("h", '"h[t]"')):
        edge = next(line for line in dot.splitlines()
                    if line.strip().startswith(f"{state} -> {sink}"))
        assert f">{charted[state][7]:.1e}</FONT>" in edge, (state, edge)


def test_gradflow_of_an_overflowing_cell_says_so_and_leaves_gaps(tmp_path, cli_run):
    """grad's new warning advised --allow-nonfinite, which gradflow has not; NumPy's and
    matplotlib's overflow warnings leaked from the sizes and the log axis."""
    cell = tmp_path / "ovf.cell"
    cell.write_text("input x\nstate h\noutput h\nh = h[t-1] * 1e60 + tanh(linear(x))\n")
    done = cli_run("gradflow", cell, "--length", "8", "-H", "3", "--batch", "2", "--out",
                   tmp_path / "g.png")
    assert "note: ovf: ‖∂L/∂h_t‖ is not finite at 2 of 8 steps" in done.stderr
    assert "allow-nonfinite" not in done.stderr and "RuntimeWarning" not in done.stderr
