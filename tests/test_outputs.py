"""Outputs: written whole or not at all, never over a special file, with the user's
permissions; SIGTERM leaves nothing behind. Every path is inside ``tmp_path``, apart
from ``/dev/null`` (written through, never replaced) and the test's own pipes and
terminal."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pty
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import CLI_COMMAND, interrupt_after

from lstm_graph.errors import OutputError
from lstm_graph.formats import files as files_module
from lstm_graph.formats.files import check_output, open_output, sweep_leftovers, write_atomic

RUN = ["run", "rnn", "--sample", "-H", "2"]


def test_a_fifo_nobody_reads_is_refused_and_kept(tmp_path, cli_fails):
    fifo = tmp_path / "y.npz"
    os.mkfifo(fifo)
    assert f"{fifo}: is a FIFO that no process is reading" in cli_fails(*RUN, "--out", fifo)
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["y.npz"]


def test_a_fifo_with_a_reader_gets_the_npz_and_is_kept(tmp_path, cli_run):
    fifo = tmp_path / "y.npz"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # the npz fits in the pipe's buffer
    try:
        cli_run(*RUN, "--out", fifo)
        received = os.read(reader, 1 << 16)
    finally:
        os.close(reader)
    assert zipfile.ZipFile(io.BytesIO(received)).namelist() == ["y.npy", "h.npy"]
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


def test_a_fifo_nobody_reads_is_refused_before_any_work(tmp_path, monkeypatch, cli_fails):
    """Checked with the other outputs: no chart written, no training done, before the
    FIFO is found unread at the end."""
    monkeypatch.chdir(tmp_path)
    os.mkfifo("d.svg")
    assert "d.svg: is a FIFO that no process is reading" in cli_fails(
        "gradflow", "lstm", "--length", "5", "--out", "g.png", "--diagram", "d.svg")
    os.mkfifo("loss.png")
    assert "loss.png: is a FIFO that no process is reading" in cli_fails(
        "train", "lstm", "--task", "adding", "--length", "5", "-H", "4", "--batch", "4",
        "--steps", "3", "--out", "w.npz", "--plot", "loss.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.svg", "loss.png"]


def test_a_checked_fifo_s_reader_waits_for_the_output_rather_than_an_end(tmp_path):
    """The check opens a FIFO that has a reader, and holds it open: closed at once, the
    reader would read the end of its input before the output came."""
    fifo = tmp_path / "y.txt"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        check_output(fifo)
        check_output(fifo)  # checked twice, held once
        with pytest.raises(BlockingIOError):  # a writer is there: no end, no data yet
            os.read(reader, 100)
        with open_output(fifo) as stream:
            stream.write(b"whole")
        assert os.read(reader, 100) == b"whole" and os.read(reader, 100) == b""  # then ends
    finally:
        os.close(reader)


def test_dev_null_is_written_through_never_replaced(cli_run):
    before = os.stat("/dev/null")
    cli_run(*RUN, "--out", "/dev/null")
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev
    assert after.st_ino == before.st_ino


def test_every_writing_command_takes_dev_null_whatever_its_own_suffix(cli_run, cli_fails,
                                                                      tmp_path):
    """An explorer page must be named .html, but /dev/null is no name: it is written into,
    as every other command writes it."""
    before = os.stat("/dev/null")
    cli_run("explore", "lstm", "-H", "4", "--sample", "--out", "/dev/null")
    assert os.stat("/dev/null").st_ino == before.st_ino
    assert "the page is HTML; name it .html" in cli_fails(
        "explore", "lstm", "-H", "4", "--sample", "--out", tmp_path / "page.txt", code=2)
    # two outputs into /dev/null were refused as "the same file"
    pytest.importorskip("torch")
    cells = Path(__file__).with_name("torch_cells.py")
    cli_run("from-torch", f"{cells}:FastLSTMCell", "-I", "3", "-H", "4", "--states", "h,c",
            "--out", "/dev/null", "--weights-out", "/dev/null")
    pytest.importorskip("matplotlib")  # a chart: a PNG, where the name has no suffix
    cli_run("train", "rnn", "--task", "adding", "--length", "4", "-H", "2", "--steps", "2",
            "--batch", "2", "--out", "/dev/null", "--plot", "/dev/null", "--checkpoint",
            tmp_path / "c.npz")


def test_dev_stdout_in_a_pipe_carries_the_npz(tmp_path, cli_process):
    result = cli_process(*RUN, "--out", "/dev/stdout", cwd=tmp_path, text=False)
    assert result.returncode == 0, result.stderr
    with np.load(io.BytesIO(result.stdout)) as arrays:
        assert arrays["y"].shape == (20, 2, 2)
    assert list(tmp_path.iterdir()) == []


def test_an_onnx_model_goes_through_a_pipe_and_its_summary_to_stderr(tmp_path, cli_process,
                                                                     cli_fails):
    onnx = pytest.importorskip("onnx")
    result = cli_process("export", "lstm", "-I", "3", "-H", "4", "--format", "onnx", "--out",
                         "/dev/stdout", cwd=tmp_path, text=False)
    assert result.returncode == 0, result.stderr
    model = onnx.load_model_from_string(result.stdout)  # the model's bytes, and only them
    assert [i.name for i in model.graph.input][0] == "x"
    assert b"ONNX opset" in result.stderr and list(tmp_path.iterdir()) == []
    assert "is a device, and --format torch writes two files" in cli_fails(
        "export", "lstm", "-I", "3", "-H", "4", "--format", "torch", "--out", "/dev/null",
        code=2)


def test_binary_output_to_a_terminal_is_refused(cli_fails):
    master, slave = pty.openpty()
    try:
        terminal = os.ttyname(slave)
        assert f"{terminal}: is a terminal, and this output is binary (.npz)" in cli_fails(
            *RUN, "--out", terminal)
        assert stat.S_ISCHR(os.stat(terminal).st_mode)
    finally:
        os.close(master)
        os.close(slave)


def test_text_output_to_a_terminal_is_written_through():
    master, slave = pty.openpty()
    try:
        write_atomic(os.ttyname(slave), b"digraph {}\n")
        assert os.read(master, 100).startswith(b"digraph {}")
    finally:
        os.close(master)
        os.close(slave)


def test_a_directory_or_a_socket_is_refused(tmp_path, cli_fails):
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(tmp_path / "s.npz"))
        assert "s.npz: is a socket, not a regular file" in cli_fails(*RUN, "--out",
                                                                     tmp_path / "s.npz")
        assert stat.S_ISSOCK((tmp_path / "s.npz").lstat().st_mode)
    finally:
        server.close()
    with pytest.raises(Exception, match="is a directory, not a regular file"):
        write_atomic(tmp_path, b"x")


def test_an_empty_output_path_is_a_usage_error(cli_fails):
    for command in (RUN, ["params", "rnn", "-I", "2", "-H", "2"]):
        assert "the output path is empty" in cli_fails(*command, "--out", "", code=2)


def test_a_new_file_gets_the_user_s_umask(tmp_path, cli_run):
    previous = os.umask(0o077)
    try:
        cli_run(*RUN, "--out", tmp_path / "y.npz")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "y.npz").stat().st_mode) == 0o600


def test_a_file_written_over_keeps_its_mode(tmp_path, cli_run):
    out = tmp_path / "y.npz"
    out.write_bytes(b"old")
    out.chmod(0o640)
    cli_run(*RUN, "--out", out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o640 and out.read_bytes() != b"old"


def test_a_symbolic_link_is_followed_and_kept(tmp_path, cli_run):
    (tmp_path / "real.npz").write_bytes(b"old")
    (tmp_path / "link.npz").symlink_to("real.npz")
    cli_run(*RUN, "--out", tmp_path / "link.npz")
    assert (tmp_path / "link.npz").is_symlink()
    assert zipfile.is_zipfile(tmp_path / "real.npz")


def test_render_s_two_diagrams_into_one_file_through_a_link_are_refused(tmp_path, cli_fails):
    """``x.pipe.svg`` a link to ``x.cell.svg``: both were written, the cell style last, and
    the pipe diagram was lost without a word."""
    (tmp_path / "x.cell.svg").write_text("kept")
    (tmp_path / "x.pipe.svg").symlink_to("x.cell.svg")
    said = cli_fails("render", "lstm", "--out", tmp_path / "x", code=2)
    assert f"{tmp_path / 'x.pipe.svg'} and {tmp_path / 'x.cell.svg'} name the same file " \
        f"({tmp_path / 'x.cell.svg'}); a symbolic link joins them: remove it, or give --out " \
        "another name" in said
    assert (tmp_path / "x.cell.svg").read_text() == "kept"


@pytest.mark.parametrize("during", ["write", "check"])
def test_ctrl_c_just_as_the_temporary_file_is_made_leaves_none(tmp_path, monkeypatch, during):
    """Ctrl-C between the temporary file's creation and the ``try`` that removes it (in
    the write, or in the check before any work) left ``.y.npz.lstm-graph-….tmp`` behind:
    2 interrupts in 30, sent as the file appeared. It is held until the file is looked
    after, then acted on."""
    interrupt_after(monkeypatch, files_module, "create_locked")
    (tmp_path / "y.npz").write_bytes(b"earlier")
    with pytest.raises(KeyboardInterrupt):
        if during == "write":
            write_atomic(tmp_path / "y.npz", b"new")
        else:
            check_output(tmp_path / "y.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["y.npz"]
    assert (tmp_path / "y.npz").read_bytes() == b"earlier"


def test_an_interrupted_stream_leaves_no_partial_file(tmp_path):
    target = tmp_path / "y.npz"
    target.write_bytes(b"earlier")
    with pytest.raises(KeyboardInterrupt), open_output(target) as stream:
        stream.write(b"half of it")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"earlier"
    assert [p.name for p in tmp_path.iterdir()] == ["y.npz"]


def test_sigterm_during_a_long_run_leaves_no_output_and_no_temporary_file(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((300_000, 1, 3)))  # float64: a note, then the run
    process = subprocess.Popen(
        [*CLI_COMMAND, "run", "lstm", "--input", "x.npy", "-H", "8", "--executor", "reference",
         "--out", "y.npz"], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    try:
        note = process.stderr.readline()  # printed once the command runs, SIGTERM handled
        assert note.startswith("note: x is float64"), note
        threading.Event().wait(0.5)
        process.send_signal(signal.SIGTERM)
        rest = process.stderr.read()
        assert process.wait(timeout=60) == 143
    finally:
        process.kill()
    assert rest.strip() == "terminated; no output was written"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


@pytest.mark.parametrize("signal_error, code, words", [
    (KeyboardInterrupt, 130, "interrupted"), (None, 143, "terminated")])
def test_a_signal_after_an_output_is_in_place_says_it_was_written(tmp_path, monkeypatch, cli,
                                                                  signal_error, code, words):
    """A Ctrl-C or SIGTERM after ``--out`` is renamed into place (as a sharded run closes
    its cluster) said "no output was written", while the new file was there, whole."""
    from lstm_graph.cli import app, run

    def interrupted(message: str, err: bool = False) -> None:
        if message.startswith("wrote"):
            raise signal_error() if signal_error else app._Terminated()

    monkeypatch.setattr(run, "say", interrupted)
    distributed = logging.getLogger("distributed")  # quietened on an interrupt
    monkeypatch.setattr(distributed, "level", distributed.level)
    result = cli("run", "lstm", "--sample", "-I", "3", "-H", "4", "--out", tmp_path / "y.npz")
    assert result.exit_code == code
    assert result.stderr.strip() == f"{words}; {tmp_path / 'y.npz'} had been written whole " \
        "before it; nothing else was written"
    with np.load(tmp_path / "y.npz") as written:
        assert written["y"].shape == (20, 2, 4)


def test_a_recording_lists_each_output_once_and_forgets_one_put_back(tmp_path):
    """A training run's checkpoint written again and again is one output; an export that
    put its earlier .pt back was said to have written it; nothing records outside."""
    from lstm_graph.formats.files import recording, undone

    write_atomic(tmp_path / "before.npz", b"x")
    with recording() as written:
        for _ in range(3):
            write_atomic(tmp_path / "w.ckpt.npz", b"step")
        write_atomic(tmp_path / "m.pt", b"new")
        undone(tmp_path / "m.pt")
        with recording() as inner:
            write_atomic(tmp_path / "y.npz", b"y")
    write_atomic(tmp_path / "after.npz", b"x")
    assert written == [str(tmp_path / "w.ckpt.npz"), str(tmp_path / "y.npz")]
    assert inner == [str(tmp_path / "y.npz")]


# -- links another user may swap in, leftovers, outputs checked up front --------------------

def _swap_links(folder: str, victim: str, seconds: float, user: int | None) -> int:
    """Fork a process (as ``user``, when given) that, for ``seconds``, swaps ``r.npz`` in
    ``folder`` between a symbolic link to ``victim`` and a regular file, as fast as it can."""
    child = os.fork()
    if child:
        return child
    try:
        if user is not None:
            os.setgid(user)
            os.setuid(user)
        link, plain, out = (os.path.join(folder, n) for n in ("s.lnk", "s.reg", "r.npz"))
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for make, name in ((lambda: os.symlink(victim, link), link),
                               (lambda: open(plain, "wb").close(), plain)):
                try:
                    make()
                    os.replace(name, out)
                except OSError:
                    pass
    finally:
        os._exit(0)


def _write_while_swapped(folder: str, victim: str, user: int | None) -> tuple[int, int]:
    """Write ``folder/r.npz`` over and over for a second while it is swapped; return how many
    writes landed and how many were refused."""
    swapper = _swap_links(folder, victim, 1.0, user)
    landed = refused = 0
    try:
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            try:
                write_atomic(os.path.join(folder, "r.npz"), b"ours")
                landed += 1
            except OutputError:
                refused += 1
            with contextlib.suppress(OSError):  # so the other user can swap again
                os.unlink(os.path.join(folder, "r.npz"))
    finally:
        os.waitpid(swapper, 0)
    return landed, refused


def test_a_link_swapped_in_by_someone_who_can_write_the_directory_is_never_followed(tmp_path):
    """In a directory everybody may write, a link to a 0600 file swapped in and out of the
    output's name while it is written a thousand times: the file is never written, its mode
    never changed (writing the resolved target of the link, as realpath did, lost this race
    within a second)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    victim.chmod(0o600)
    before = victim.stat()
    landed, refused = _write_while_swapped(str(shared), str(victim), None)
    after = victim.stat()
    assert victim.read_bytes() == b"precious"
    assert (after.st_ino, after.st_mode, after.st_mtime_ns) == \
        (before.st_ino, before.st_mode, before.st_mtime_ns)
    assert landed > 0, (landed, refused)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to swap links as another user")
def test_root_writing_in_a_sticky_directory_never_follows_another_user_s_link():
    """The reported race: root writes r.npz in a sticky world-writable directory (/tmp)
    while user nobody swaps it for a link to a root-owned 0600 file."""
    shared = tempfile.mkdtemp(prefix="lstm-graph-test-sticky-")  # nobody must reach it
    private = tempfile.mkdtemp(prefix="lstm-graph-test-victim-")
    try:
        os.chmod(shared, 0o1777)
        victim = os.path.join(private, "victim")
        with open(victim, "wb") as stream:
            stream.write(b"root's")
        os.chmod(victim, 0o600)
        before = os.stat(victim)
        landed, refused = _write_while_swapped(shared, victim, 65534)
        after = os.stat(victim)
        with open(victim, "rb") as stream:
            assert stream.read() == b"root's"
        assert (after.st_ino, after.st_mode, after.st_uid) == \
            (before.st_ino, before.st_mode, 0)
        assert landed + refused > 0
    finally:
        shutil.rmtree(shared, ignore_errors=True)
        shutil.rmtree(private, ignore_errors=True)


def test_a_link_in_a_directory_others_can_write_is_refused_and_kept(tmp_path, cli_fails):
    shared = tmp_path / "shared"
    shared.mkdir()
    (tmp_path / "real.npz").write_bytes(b"old")
    (shared / "y.npz").symlink_to(tmp_path / "real.npz")
    shared.chmod(0o777)  # not sticky: anybody may have put the link there
    assert (f"{shared / 'y.npz'}: y.npz is a symbolic link in a directory other users can "
            "write, so it is not followed") in cli_fails(*RUN, "--out", shared / "y.npz")
    assert (shared / "y.npz").is_symlink() and (tmp_path / "real.npz").read_bytes() == b"old"


def test_a_link_to_a_directory_on_the_way_is_followed_only_where_no_one_else_can_put_it(
        tmp_path, cli_run, cli_fails):
    """Only the last part of the path was checked: a directory's link that another user
    put in a shared directory (``/tmp/shared/d -> /home/you``) sent the output, and the
    directories made for it, where that user chose."""
    shared, victim, mine = tmp_path / "shared", tmp_path / "victim", tmp_path / "mine"
    for folder in (shared, victim, mine):
        folder.mkdir()
    (victim / "y.npz").write_bytes(b"old")
    (shared / "d").symlink_to(victim)
    (mine / "d").symlink_to(victim)
    (mine / "gone").symlink_to(tmp_path / "nowhere" / "deeper")
    shared.chmod(0o777)  # not sticky: anybody may have put the link there
    for out in (shared / "d" / "y.npz", shared / "d" / "new" / "z.npz"):
        assert (f"{out}: {shared / 'd'} is a symbolic link in a directory other users can "
                "write, so it is not followed") in cli_fails(*RUN, "--out", out)
    assert sorted(p.name for p in victim.iterdir()) == ["y.npz"]
    assert (victim / "y.npz").read_bytes() == b"old"
    cli_run(*RUN, "--out", mine / "d" / "new" / "z.npz")  # your own link: followed
    assert zipfile.is_zipfile(victim / "new" / "z.npz")
    assert (f"{tmp_path / 'nowhere'} does not exist (the symbolic link {mine / 'gone'} "
            "points there)") in cli_fails(*RUN, "--out", mine / "gone" / "y.npz")
    assert not (tmp_path / "nowhere").exists()  # nothing made where a link points


def test_a_path_too_long_or_a_loop_of_links_is_refused_without_a_traceback(tmp_path,
                                                                          cli_fails):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    assert "Too many levels of symbolic links" in cli_fails(*RUN, "--out", tmp_path / "a")
    assert "too many symbolic links" in cli_fails(*RUN, "--out", tmp_path / "a" / "y.npz")
    assert "File name too long" in cli_fails(*RUN, "--out", tmp_path / ("y" * 300 + ".npz"))
    assert "File name too long" in cli_fails("validate", tmp_path / ("c" * 300 + ".cell"))
    # read as inputs: the loop named ("not a built-in cell", "unknown weights format ''")
    assert f"{tmp_path / 'a'}: cannot read (Too many levels of symbolic links)" in \
        cli_fails("validate", tmp_path / "a")
    assert f"{tmp_path / 'a'}: cannot read (Too many levels of symbolic links)" in \
        cli_fails(*RUN, "--weights", tmp_path / "a", "--out", tmp_path / "y.npz")


_FULL = """
import resource, signal, sys
from lstm_graph.cli import main
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))
sys.argv = ["lstm-graph", *sys.argv[1:]]
main()
"""


def test_a_disk_too_full_for_the_output_is_said_and_the_old_file_kept(tmp_path):
    """Closing the temporary file flushed its bytes again and raised a second error over
    the first: a traceback (the old file was kept)."""
    out = tmp_path / "y.npz"
    out.write_bytes(b"old")
    done = subprocess.run([sys.executable, "-c", _FULL, *RUN, "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert f"{out}: cannot write (File too large)" in done.stderr
    assert out.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [out]


def test_your_own_link_in_a_sticky_directory_is_followed(tmp_path, cli_run):
    """The kernel's protected_symlinks rule: in a sticky directory, a link of your own (or
    of the directory's owner) is followed."""
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    (tmp_path / "real.npz").write_bytes(b"old")
    (sticky / "y.npz").symlink_to(tmp_path / "real.npz")
    sticky.chmod(0o1777)
    cli_run(*RUN, "--out", sticky / "y.npz")
    assert (sticky / "y.npz").is_symlink() and zipfile.is_zipfile(tmp_path / "real.npz")


_KILLED_WHILE_WRITING = """
import os, signal, sys
from lstm_graph.formats.files import open_output
with open_output(sys.argv[1]) as stream:
    stream.write(b"half")
    sys.stdout.write("writing\\n"); sys.stdout.flush()
    if sys.argv[2] == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    sys.stdin.read()
"""


def test_the_temporary_file_of_a_killed_write_is_swept_by_the_next_and_a_live_one_kept(
        tmp_path):
    def start(mode):
        process = subprocess.Popen([sys.executable, "-c", _KILLED_WHILE_WRITING,
                                    str(tmp_path / "y.npz"), mode], text=True,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert process.stdout.readline() == "writing\n"
        return process

    assert start("die").wait(timeout=30) == -signal.SIGKILL
    (dead,) = [p.name for p in tmp_path.iterdir()]
    assert re.fullmatch(r"\.y\.npz\.lstm-graph-[0-9a-f]{8}\.tmp", dead)
    alive = start("live")
    try:
        (live,) = {p.name for p in tmp_path.iterdir()} - {dead}
        others = [".y.npz.mine.tmp", ".z.npz.lstm-graph-0123abcd.tmp"]
        for name in others:  # not named for y.npz by lstm-graph: never touched
            (tmp_path / name).write_bytes(b"keep")
        write_atomic(tmp_path / "y.npz", b"whole")
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*others, live, "y.npz"])
    finally:
        alive.stdin.close()
        assert alive.wait(timeout=30) == 0
    assert (tmp_path / "y.npz").read_bytes() == b"half"  # the live write ended last
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*others, "y.npz"])


def test_a_file_or_folder_named_as_a_leftover_but_not_made_so_is_left_whole(tmp_path):
    """A folder named as a killed write's parts lost the files in it (its folders kept it
    from being removed), and a file named as a temporary one was removed, whatever their
    modes and contents: only what lstm-graph makes so (private; a folder holding only the
    parts 0.npy, 1.npy …) is swept; anything else is left as it was."""
    tag = "lstm-graph-0badf00d"
    kept = {f".e.npz.{tag}.parts": ["notes.txt", "sub/deep.txt"],
            f".e.npz.{tag[:-1]}e.parts": ["0.npy"],  # shared with the group
            f".e.npz.{tag[:-1]}1.parts": ["0.npy", "1.npy.bak"]}
    for folder, files in kept.items():
        for name in files:
            (tmp_path / folder / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / folder / name).write_bytes(b"precious")
            (tmp_path / folder / name).chmod(0o600)
        (tmp_path / folder).chmod(0o750 if folder.endswith("e.parts") else 0o700)
    shared = tmp_path / f".e.npz.{tag}.tmp"
    shared.write_bytes(b"a user's")
    shared.chmod(0o644)
    swept = tmp_path / f".e.npz.{tag[:-1]}2.parts"  # as a killed write of ours leaves it
    swept.mkdir(mode=0o700)
    for name in ("0.npy", "1.npy"):
        (swept / name).write_bytes(b"part")
        (swept / name).chmod(0o600)
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p != swept
                    and swept not in p.parents)
    directory = os.open(tmp_path, os.O_RDONLY)
    try:
        for kind in ("parts", "tmp"):
            sweep_leftovers(directory, "e.npz", kind)
    finally:
        os.close(directory)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before
    assert shared.read_bytes() == b"a user's"


def test_check_output_refuses_what_the_write_would_and_leaves_nothing(tmp_path):
    check_output(tmp_path / "new" / "dirs" / "y.npz")
    assert list(tmp_path.iterdir()) == []  # the directories it made for the probe: removed
    check_output("/dev/null")
    with pytest.raises(OutputError, match="is a directory, not a regular file"):
        check_output(tmp_path)
    if os.geteuid() != 0:  # root writes in a read-only directory
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(OutputError, match="cannot write in .*locked .Permission denied"):
            check_output(locked / "y.npz")


def test_an_output_path_ending_in_a_slash_names_a_directory_and_is_refused(tmp_path,
                                                                          cli_fails):
    assert f"--out {tmp_path}/newdir/ names a directory; give a file name such as " \
        f"{tmp_path}/newdir/y.npz" in cli_fails(*RUN, "--out", f"{tmp_path}/newdir/", code=2)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OutputError, match="names a directory"):
        write_atomic(f"{tmp_path}/newdir/", b"x")
    assert list(tmp_path.iterdir()) == []


CELL = "input x\nstate h\noutput h\nh = tanh(linear(x, h[t-1]))\n"


@pytest.mark.parametrize("args, out, given", [
    (["run", "my.cell", "--sample", "-H", "2"], "my.cell", "the SPEC"),
    (["run", "rnn", "--input", "x.npz", "-H", "2"], "x.npz", "the --input"),
    (["run", "rnn", "--sample", "--weights", "w.npz"], "link.npz",
     "the same file as the --weights w.npz"),
    (["trace", "rnn", "--sample", "-H", "2", "--state", "s.npz"], "hard.npz",
     "the same file as the --state s.npz"),
    (["grad", "rnn", "--input", "x.npy", "-H", "2", "--grad-output", "gy.npz"], "gy.npz",
     "the --grad-output"),
    (["explore", "rnn", "--sample", "-H", "2", "--weights", "page.html"], "page.html",
     "the --weights"),
    (["params", "my.cell", "-I", "2", "-H", "2"], "my.cell", "the SPEC"),
    (["train", "rnn", "--task", "t.npz", "--steps", "1"], "t.npz", "the --task"),
    (["train", "rnn", "--task", "adding", "--steps", "1", "--checkpoint", "s.npz", "--resume"],
     "hard.npz", "the same file as the --checkpoint s.npz"),
    (["gradflow", "rnn=w.svg"], "w.svg", "the CELL rnn=w.svg"),
    (["sweep", "my.cell", "--steps", "1"], "cell.json",  # the name once, not twice
     "the same file as the CELL my.cell"),
    (["render", "c.dot", "--style", "cell"], "c.dot", "the SPEC"),
])
def test_an_output_that_is_one_of_the_command_s_inputs_is_refused_and_the_input_kept(
        tmp_path, monkeypatch, args, out, given, cli_fails):
    """Through a symbolic or a hard link too: the same file on the disk."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my.cell").write_text(CELL)
    (tmp_path / "c.dot").write_text(CELL)  # a cell file, whatever its name says
    np.save(tmp_path / "x.npy", np.ones((3, 1, 2), "float32"))
    np.savez(tmp_path / "x.npz", x=np.ones((3, 1, 2), "float32"))
    np.savez(tmp_path / "gy.npz", grad_output=np.ones((3, 1, 2), "float32"))
    np.savez(tmp_path / "t.npz", x=np.ones((3, 4, 2)), y=np.arange(4.0)[:, None])
    np.savez(tmp_path / "w.npz", **main_weights())
    np.savez(tmp_path / "s.npz", h=np.zeros((2, 2), "float32"))
    for name in ("page.html", "w.svg"):  # weights, whatever their names say
        (tmp_path / name).write_bytes((tmp_path / "w.npz").read_bytes())
    (tmp_path / "link.npz").symlink_to("w.npz")
    (tmp_path / "cell.json").symlink_to("my.cell")
    os.link(tmp_path / "s.npz", tmp_path / "hard.npz")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert f"--out {out} is {given}: writing it would replace that input; give --out " \
        "another file" in cli_fails(*args, "--out", out)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def main_weights():
    from lstm_graph import load_cell

    return load_cell("rnn").random_weights(2, 2, seed=0)


@pytest.mark.parametrize("command", ["run", "grad", "trace", "explore"])
def test_a_place_the_output_cannot_go_is_said_before_the_cell_runs(tmp_path, command,
                                                                    cli_fails):
    """A file where the output's directory should be: said first, not after the run (the
    input here is refused too, but later: the message is the output's)."""
    (tmp_path / "a_file").write_text("")
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 5)))  # lstm with -I 4: the wrong width
    name = "page.html" if command == "explore" else "y.npz"
    stderr = cli_fails(command, "lstm", "--input", tmp_path / "x.npy", "-I", "4", "-H", "3",
                       "--out", tmp_path / "a_file" / name)
    assert "a_file" in stderr and "x.npy" not in stderr, stderr
