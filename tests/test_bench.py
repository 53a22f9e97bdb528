"""The benchmark script: it runs, reports every contender, and rewrites only its table.

It asserts nothing about speed (no test does): only that the report is whole.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lstm_graph import bench, isa

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _quick_warm_up(monkeypatch):
    """A toy run of microseconds on a loaded machine may not settle within the warm-up's
    30 s (a test of the stacks took two minutes so): these tests check the machinery, not
    the time, and the tables say the warm-up was cut."""
    monkeypatch.setenv(bench.WARM_UP_ENV, "0.2")


def test_a_block_times_its_runs_and_measures_the_memory_it_grew_by(tmp_path):
    result = bench.time_block("ours", "gru", "small", 3, 2, tmp_path / "y.npz")
    assert len(result["times"]) == 3 and all(t > 0 for t in result["times"])
    assert result["peak_mib"] >= 0
    with np.load(tmp_path / "y.npz") as saved:  # what the last timed run computed
        assert list(saved) == ["y"] and saved["y"].shape == (100, 1, 32)


def test_a_blocks_memory_leaves_out_what_its_check_needs_afterwards(tmp_path):
    """Our gradients go to the check in PyTorch's names, through PyTorch: its import,
    after the timed runs, grew the measured peak by some 180 MiB (193 MiB at the
    adding problem's size, where the runs need 11)."""
    job = bench.Job("ours", "lstm", "4x4x3x5", "grad")
    found = bench._in_subprocess(job, 1, 1, tmp_path / "g.npz")
    assert found["peak_mib"] < 50
    with np.load(tmp_path / "g.npz") as saved:
        assert "weight_hh_l0" in saved  # the check's names were written


def test_a_warm_up_waits_for_a_contender_to_settle(monkeypatch):
    """Three runs and half a second let PyTorch's first training steps (2 s each, a
    settled one 5 ms) into the timed runs: the warm-up goes on until the last runs are
    near the fastest, and stops at its limit."""
    clock = [0.0]
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])
    slow = iter([2.0] * 8)
    calls = []

    def run() -> None:
        calls.append(1)
        clock[0] += next(slow, 0.005)

    monkeypatch.delenv(bench.WARM_UP_ENV)  # the rule itself, uncut
    bench.warm_up(run)
    assert len(calls) == 8 + bench.SETTLED  # every slow run, then the settled ones
    calls.clear()
    monkeypatch.setattr(bench, "WARMUP_LIMIT", 5.0)
    slow = iter([0.005, *[2.0] * 100])
    bench.warm_up(run)  # never settles: stops at the limit
    assert 1 < len(calls) <= 5 / 2 + 2


def test_a_warm_up_cut_by_the_environment_stops_there_and_a_bad_cut_is_wrong_usage(
        monkeypatch, capsys):
    clock = [0.0]
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])
    calls = []

    def run() -> None:  # never settles: 2 s, then 5 ms, in turn
        calls.append(1)
        clock[0] += 2.0 if len(calls) % 2 else 0.005

    monkeypatch.setenv(bench.WARM_UP_ENV, "5")
    bench.warm_up(run)
    assert len(calls) == 5 and 5 <= clock[0] < 30  # the fifth run passed 5 s: cut there
    assert bench.warmed() == "a warm-up cut to at most 5 s ($LSTM_GRAPH_BENCH_WARM_UP)"
    for bad in ("-1", "soon", "nan", "inf"):
        monkeypatch.setenv(bench.WARM_UP_ENV, bad)
        with pytest.raises(SystemExit) as exit_:
            bench.main(["--sizes", "small"])
        assert exit_.value.code == 2
        assert f"$LSTM_GRAPH_BENCH_WARM_UP takes seconds (0 or more), not '{bad}'" in \
            capsys.readouterr().err


def test_a_row_compares_with_the_best_peer_and_reports_the_spread():
    timing = {name: bench.Timing([[t, t], [2 * t, 2 * t]], peak)
              for name, t, peak in (("ours", 1.0, 1.0), ("numpy", 3.0, 2.0),
                                    ("torch", 2.0, 5.0), ("onnxruntime", 4.0, 3.0))}
    row = bench.Row("lstm", "medium", timing, 1e-7)
    assert row.best_peer == "torch" and row.ratio("ours") == 0.5
    assert timing["ours"].spread == (1.0, 2.0)
    line = bench.table([row]).splitlines()[-1]
    assert "| lstm | medium (100, 64, 128, 256) | 1500.00 (1000.00–2000.00) |" in line
    assert "**0.50×**" in line and "1.50× (≤ 2.0×)" in line and "| 1.0 / 5.0 |" in line
    assert "**0.50×** | 0.50× |" in line  # the quietest blocks: 1.0 against 2.0


def test_bench_writes_its_table_between_the_markers_and_keeps_the_rest(tmp_path, capsys):
    page = tmp_path / "benchmarks.md"
    page.write_text(f"# Title\n\n{bench.START}\nold table\n{bench.END}\n\nNotes stay.\n")
    assert bench.main(["--cells", "lstm", "--sizes", "small", "--repeat", "1", "--blocks",
                       "1", "--no-reference", "--markdown", str(page)]) == 0
    text = page.read_text()
    assert text.startswith("# Title\n\n") and text.endswith("\n\nNotes stay.\n")
    assert "old table" not in text
    rows = [line for line in text.splitlines() if line.startswith("| lstm")]
    assert len(rows) == 1 and "small (100, 1, 32, 32)" in rows[0]
    model, _ = isa.cpu()
    assert f"Machine: {model}" in text and "threads for every contender" in text
    assert "each peer is timed on 1 thread too" in text  # one sequence: ours may take one
    assert "after a warm-up cut to at most 0.2 s ($LSTM_GRAPH_BENCH_WARM_UP)" in text
    assert "1 block of " in text and "Command: `python -m lstm_graph.bench --cells lstm " \
        f"--sizes small --repeat 1 --blocks 1 --no-reference --markdown {page}`" in text
    assert "ours/best" in capsys.readouterr().out


def test_contenders_get_no_more_threads_than_the_cpus_the_process_may_use(monkeypatch,
                                                                          capsys):
    """Ours never takes more threads than CPUs; the peers get the same number, and the
    table's header says it (a run on a 1-CPU container with the default --threads 2)."""
    monkeypatch.setattr(bench, "usable_cpus", lambda: 1)
    assert bench.contender_threads(2) == 1
    assert "--threads 2: this process may use 1 CPU (its affinity and CPU quota), so " \
        "every contender gets 1" in capsys.readouterr().err
    assert bench.contender_threads(1) == 1 and capsys.readouterr().err == ""
    monkeypatch.setattr(bench, "usable_cpus", lambda: 4)
    assert bench.contender_threads(2) == 2
    assert "4 cores" in bench.machine(2)


def test_waiting_for_idle_cpus_gives_up_at_its_limit():
    began = bench.time.monotonic()
    assert bench.wait_idle(0.0) is False
    assert bench.time.monotonic() - began < 1.0


# T x B x I x H: every mode end to end in seconds; 4 sequences, where ours keeps its
# threads, so the peers run once each (fewer: on one thread too, as the forward test's)
TOY = "4x4x3x5"


def _page(tmp_path):
    """A benchmarks page with a forward table and every further mode's empty section."""
    page = tmp_path / "benchmarks.md"
    sections = "".join(f"\n\nProse of {mode}.\n{start}\n{end}"
                       for mode, (start, end) in bench.SECTIONS.items())
    page.write_text(f"# Title\n\n{bench.START}\nthe forward table\n{bench.END}{sections}\n")
    return page


def _section(text, mode):
    start, end = bench.SECTIONS[mode]
    return text[text.index(start):text.index(end) + len(end)]


def _kept(before, after, mode):
    """Everything but ``mode``'s section is as it was."""
    section = _section(after, mode)
    start, end = bench.SECTIONS[mode]
    return after.replace(section, f"{start}\n{end}") == before


def test_grad_mode_times_backpropagation_against_pytorch_and_checks_the_gradients(tmp_path):
    page = _page(tmp_path)
    before = page.read_text()
    assert bench.main(["--work", "grad", "--cells", "lstm,peephole_lstm,gru", "--sizes", TOY,
                       "--repeat", "1", "--blocks", "1", "--markdown", str(page)]) == 0
    text = page.read_text()
    assert _kept(before, text, "grad") and "the forward table" in text
    section = _section(text, "grad")
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| ")][1:]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("| lstm", "(4, 4, 3, 5)", "nn.LSTM"),
        ("| peephole_lstm", "(4, 4, 3, 5)", "nn.LSTM, no peepholes"),
        ("| gru", "(4, 4, 3, 5)", "nn.GRU")]  # both biases' gradients compared: within
    difference, relative = re.fullmatch(r"(\S+) \((\S+) of the largest\) \|",
                                        rows[0][-1]).groups()
    assert float(difference) < 1e-5 and float(relative) < 1e-5  # as autograd's
    assert rows[1][-1] == "— |"  # another function: no difference to give
    assert "y.backward(grad_y)" in section and "Command: `python -m lstm_graph.bench " \
        "--work grad" in section


def _off_by(monkeypatch, amount, key):
    """``bench.take_turns`` with ``amount`` added to ours' ``key`` (its last numbers: of a
    GRU's bias_hh, the new gate's own b_hn)."""
    take_turns = bench.take_turns

    def turns(*args, **kwargs):
        timings, outputs = take_turns(*args, **kwargs)
        outputs["ours"][key].flat[-3:] += amount
        return timings, outputs

    monkeypatch.setattr(bench, "take_turns", turns)


@pytest.mark.parametrize("mode, key", [
    (["--cells", "lstm", "--no-reference"], "y"),
    (["--work", "grad", "--cells", "gru"], "bias_hh_l0"),  # the new gate's own b_hn too
    (["--sweep", "--sweep-hidden", "5", "--sweep-batch", "4", "--sweep-steps", "4"], "y")],
    ids=["forward", "gradient", "sweep"])
def test_a_result_off_the_peers_is_refused_and_nothing_written(tmp_path, monkeypatch, capsys,
                                                              mode, key):
    page = _page(tmp_path)
    before = page.read_text()
    _off_by(monkeypatch, 0.01, key)
    assert bench.main([*mode, "--sizes", TOY, "--repeat", "1", "--blocks", "1",
                       "--markdown", str(page)]) == 1
    err = capsys.readouterr().err
    assert re.search(r"(lstm|gru) at \(T, B, I, H\) = \(4, (4|4), (3|5), 5\): our "
                     r"(outputs|gradients) differ from the peers' by up to 0\.01", err), err
    assert "a wrong result is not timed against a peer; nothing was written" in err
    assert page.read_text() == before


def test_stacks_mode_times_a_two_layer_and_a_bidirectional_lstm_and_their_overhead(tmp_path):
    page = _page(tmp_path)
    before = page.read_text()
    assert bench.main(["--stacks", "--sizes", TOY, "--repeat", "1", "--blocks", "1",
                       "--markdown", str(page)]) == 0
    text = page.read_text()
    assert _kept(before, text, "stacks")
    rows = [line.split(" | ") for line in _section(text, "stacks").splitlines()
            if line.startswith("| lstm")]
    assert [(r[1], r[3]) for r in rows] == [("2-layer", "nn.LSTM(num_layers=2)"),
                                            ("bidirectional", "nn.LSTM(bidirectional=True)")]
    for row in rows:
        assert row[9].count(" + ") == 1  # each of the two units alone
        assert row[10].startswith("**") and row[10].endswith("×**")
        assert float(row[-1].rstrip(" |")) < 1e-5  # against PyTorch and onnxruntime


def test_sweep_mode_writes_a_ratio_per_hidden_and_batch_size(tmp_path, capsys):
    page = _page(tmp_path)
    before = page.read_text()
    assert bench.main(["--sweep", "--sweep-hidden", "5", "--sweep-batch", "4",
                       "--sweep-steps", "3", "--repeat", "1", "--blocks", "1",
                       "--markdown", str(page)]) == 0
    text = page.read_text()
    assert _kept(before, text, "sweep")
    section = _section(text, "sweep")
    assert "| H \\ B | 4 |" in section and "T = 3, I = H" in section
    (row,) = [line for line in section.splitlines() if line.startswith("| 5 |")]
    assert row.count("×") == 1
    assert "sweep 1/1: H=5 B=4 ours/best" in capsys.readouterr().err


def test_the_sweeps_estimate_of_the_time_left_counts_a_fixed_part_per_size():
    # the smallest size took 9 s, nearly all of it processes starting: the rest, 31 sizes
    # of up to a thousand times its work, is minutes, not the 1.8 million s once printed
    first = bench.time_left([(10**6, 9.0)], [10**6] * 15 + [10**9] * 16)
    assert first == 9.0 * 31
    # sizes of 1 and 101 MFLOP taking 10 s and 20 s: 9.9 s a size and 0.1 s a MFLOP
    fitted = bench.time_left([(10**6, 10.0), (101 * 10**6, 20.0)], [10**6, 201 * 10**6])
    assert abs(fitted - (10.0 + 30.0)) < 1e-6
    # a fit that would give a negative fixed part keeps both parts at least 0
    assert bench.time_left([(10**6, 30.0), (10**9, 20.0)], [10**6]) >= 0


def test_the_sweep_marks_ratios_over_the_target_and_a_stack_its_overhead():
    def row(size, ours, layout="single", units=()):
        timings = {"ours": bench.Timing([[ours]]), "torch": bench.Timing([[1.0]]),
                   "onnxruntime": bench.Timing([[2.0]])}
        timings.update({key: bench.Timing([[0.5]]) for key in units})
        return bench.Row("lstm", size, timings, 1e-7, "run", layout, list(units))

    cells = [bench.SweepCell(64, 1, row("50x1x64x64", 0.9)),
             bench.SweepCell(64, 20, row("50x20x64x64", 1.2))]
    assert bench.sweep_table(cells).splitlines()[-1] == "| 64 | 0.90× | **1.20×** |"
    stack = row("medium", 1.05, "2-layer", ["unit a", "unit b"])
    assert stack.overhead == 1.05  # 1.05 ÷ (0.5 + 0.5)
    line = bench.stack_table([stack]).splitlines()[-1]
    assert "| nn.LSTM(num_layers=2) |" in line and "| **1.05×** |" in line


@pytest.mark.parametrize("args, message", [
    (["--sizes", "huge"], "unknown size 'huge'"),
    (["--sweep", "--sweep-batch", "1,0"], "--sweep-batch takes positive integers"),
    (["--stacks", "--cells", "peephole_lstm"], "no peer for cell 'peephole_lstm'"),
    (["--sweep", "--work", "grad"], "--work grad is a mode of its own"),
    (["--sweep", "--isa", "avx2"], "--isa avx2 times the forward table and --work grad"),
])
def test_a_bad_benchmark_option_is_a_usage_error_naming_it(args, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.main(args)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


HIDING = isa.hiding_unavailable()


def test_isa_avx2_is_refused_with_its_reason_where_it_cannot_run(capsys, monkeypatch):
    monkeypatch.setattr(isa, "cpu", lambda: ("a CPU", ["sse4_2", "avx", "avx2", "fma"]))
    if HIDING is None or "x86-64" not in HIDING:  # on x86-64 Linux: no AVX-512 to hide
        assert "no AVX-512 to hide" in (isa.hiding_unavailable() or "")
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--isa", "avx2", "--sizes", "small", "--cells", "lstm"])
    assert exit_.value.code == 2 and "--isa avx2: " in capsys.readouterr().err


@pytest.mark.skipif(HIDING is not None, reason=f"--isa avx2 cannot run here: {HIDING}")
def test_isa_avx2_hides_avx512_from_every_contender_and_writes_its_own_section(tmp_path):
    probe = ("from numpy._core._multiarray_umath import __cpu_features__ as f; "
             "print(f['AVX512F'], f['AVX2'])")
    with isa.avx512_hidden():
        seen = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                              check=True, env=bench.thread_environment(1)).stdout.split()
        assert seen == ["False", "True"]  # NumPy's own CPUID dispatch: no AVX-512, AVX2
        assert "-mno-avx512f" in os.environ["LSTM_GRAPH_CFLAGS"]
    assert "LSTM_GRAPH_BENCH_HIDE_AVX512" not in os.environ  # as it was after
    page = tmp_path / "benchmarks.md"
    page.write_text(f"{bench.START}\nthis CPU's table\n{bench.END}\n")
    assert bench.main(["--isa", "avx2", "--cells", "lstm", "--sizes", "small", "--repeat",
                       "1", "--blocks", "1", "--no-reference", "--markdown", str(page)]) == 0
    text = page.read_text()
    start, end = bench.SECTIONS["avx2"]
    assert "this CPU's table" in text and start in text and end in text
    assert "AVX-512 hidden from every contender" in text and "avx512f," not in text


@pytest.mark.skipif(HIDING is not None, reason=f"--isa avx2 cannot run here: {HIDING}")
def test_the_library_isa_avx2_preloads_is_built_only_where_no_other_user_can_change_it(
        tmp_path):
    """It was built in a plain temporary directory under $TMPDIR, whatever its mode: in
    one anyone can write in, another user could swap it before a contender loaded it.
    (A process makes its private directory once: each case is a fresh process.)"""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    code = ("import os, sys; from lstm_graph import bench, isa\n"
            "if sys.argv[1] == 'bench':\n"
            "    sys.exit(bench.main(['--isa', 'avx2', '--cells', 'lstm', '--sizes', 'small']))\n"
            "with isa.avx512_hidden():\n"
            "    print(os.environ['LD_PRELOAD'].split()[0])\n")
    for where, case in ((shared, "bench"), (tmp_path, "hidden")):
        done = subprocess.run([sys.executable, "-c", code, case], capture_output=True,
                              text=True, timeout=120, env={**os.environ, "TMPDIR": str(where)})
        if case == "bench":
            assert done.returncode == 1 and f"--isa avx2: no private temporary directory: " \
                f"other users can write in {shared}" in done.stderr, done.stderr
            assert os.listdir(shared) == []
        else:
            library = Path(done.stdout.strip())
            assert done.returncode == 0 and library.name == "hide_avx512.so", done.stderr
            assert library.parent.parent == tmp_path and not library.parent.exists()


@pytest.mark.parametrize("markers, kept", [("start", False), ("end", False), ("none", True)])
def test_a_page_with_one_marker_is_refused_not_cut(tmp_path, markers, kept):
    """A start marker without its end lost everything after it."""
    from lstm_graph.errors import OutputError
    from lstm_graph.formats.files import write_section

    page = tmp_path / "page.md"
    body = {"start": f"# A\n{bench.START}\nold\n\n## B, kept\n",
            "end": f"# A\nold\n{bench.END}\n## B, kept\n", "none": "# A\n\n## B, kept\n"}
    page.write_text(body[markers])
    table = f"{bench.START}\nnew\n{bench.END}\n"
    if kept:
        write_section(page, bench.START, bench.END, table)
        assert page.read_text() == body["none"] + table
        return
    with pytest.raises(OutputError, match="mend the markers"):
        write_section(page, bench.START, bench.END, table)
    assert page.read_text() == body[markers]


def test_where_ours_may_take_one_thread_each_peer_is_timed_on_one_too(monkeypatch):
    """Runs of a few sequences time themselves and may take one of their two threads;
    held at two there, a peer would be held to a count ours is free to leave."""
    jobs = {c: bench.Job(c, "lstm", "small") for c in ("ours", "numpy", "torch",
                                                        "onnxruntime")}
    medium = {key: bench.replace(job, size="medium") for key, job in jobs.items()}
    added = bench.with_one_thread(jobs, 2)
    assert added.keys() - jobs.keys() == {"torch on 1 thread", "onnxruntime on 1 thread"}
    assert added["torch on 1 thread"] == bench.Job("torch", "lstm", "small", threads=1)
    assert bench.with_one_thread(medium, 2) == medium  # 64 sequences: two threads
    assert bench.with_one_thread(jobs, 1) == jobs  # one thread is all there is
    assert bench.may_take_fewer("50x3x64x64", 2) and not bench.may_take_fewer("50x4x64x64", 2)
    # a step under THREAD_WORK multiply-adds runs on one thread whatever its batch
    assert bench.may_take_fewer("50x4x8x8", 2) and bench.may_take_fewer("20x8x8x8", 2, "gru")
    # a gradient's loop back over the steps takes a thread for each block of 6 sequences
    assert bench.may_take_fewer("50x6x256x256", 2, "gru", "grad")
    assert not bench.may_take_fewer("50x6x256x256", 2, "gru")
    assert not bench.may_take_fewer("50x7x256x256", 2, "lstm", "grad")
    grads = {c: bench.Job(c, "lstm", "50x5x64x64", "grad") for c in ("ours", "torch")}
    assert "torch on 1 thread" in bench.with_one_thread(grads, 2)
    seen = []

    def run(command, env, **_):
        seen.append((command[command.index("--threads") + 1], env["LSTM_GRAPH_THREADS"],
                     env["OMP_NUM_THREADS"]))
        return bench.subprocess.CompletedProcess(command, 0, '{"times": [1]}\n', "")

    monkeypatch.setattr(bench.subprocess, "run", run)
    bench._in_subprocess(added["torch on 1 thread"], 1, 2, None)
    bench._in_subprocess(added["torch"], 1, 2, None)
    assert seen == [("1", "1", "1"), ("2", "2", "2")]


def test_a_peer_faster_on_one_thread_is_compared_on_one_thread_and_marked():
    def timing(t):
        return bench.Timing([[t], [t]], 1.0)

    timings = {"ours": timing(1.0), "torch": timing(4.0), "torch on 1 thread": timing(2.0),
               "onnxruntime": timing(3.0), "onnxruntime on 1 thread": timing(5.0)}
    row = bench.Row("lstm", "small", timings, 1e-7)
    assert row.best_peer == "torch" and row.ratio("ours") == 0.5
    assert row.peer_key("onnxruntime") == "onnxruntime"  # slower on one thread
    line = bench.table([row]).splitlines()[-1]
    assert "| 2000.00 (2000.00–2000.00), 1 thread | 3000.00 (3000.00–3000.00) |" in line
    assert bench.sweep_table([bench.SweepCell(32, 1, row)]).endswith("| 32 | 0.50×† |")
    assert "faster count is its figure" in bench._one_thread(2)
    assert bench._one_thread(1) == ""


def test_the_method_names_the_run_counts_of_the_sizes_measured_alone():
    def row(size):
        timing = bench.Timing([[1.0]], 1.0)
        return bench.Row("lstm", size, {"ours": timing, "torch": timing}, 1e-7)

    def method(sizes):
        text = bench.report([row(s) for s in sizes], 2, 10, 3, 100, 0.5, 0, "cmd")
        return text.split("\n")[3]

    assert "of 10 timed runs after " in method([TOY]) and "small:" not in method([TOY])
    assert "of 10 timed runs (small: 200, large: 5) after " in method(["small", "medium",
                                                                     "large"])
    assert "at the benchmark's named sizes (small, medium, large)" in method([TOY])
