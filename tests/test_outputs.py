"""Outputs: written whole or not at all, never over a special file, with the user's
permissions; SIGTERM leaves nothing behind. Every path is inside ``tmp_path``, apart
from ``/dev/null`` (written through, never replaced) and the test's own pipes and
terminal."""

from __future__ import annotations

import io
import os
import pty
import signal
import socket
import stat
import subprocess
import sys
import threading
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from lstm_graph.cli import main
from lstm_graph.formats.files import open_output, write_atomic

RUN = ["run", "rnn", "--sample", "-H", "2"]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_a_fifo_nobody_reads_is_refused_and_kept(tmp_path):
    fifo = tmp_path / "y.npz"
    os.mkfifo(fifo)
    result = cli(*RUN, "--out", fifo)
    assert result.exit_code == 1
    assert f"{fifo}: is a FIFO that no process is reading" in result.stderr
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["y.npz"]


def test_a_fifo_with_a_reader_gets_the_npz_and_is_kept(tmp_path):
    fifo = tmp_path / "y.npz"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # the npz fits in the pipe's buffer
    try:
        result = cli(*RUN, "--out", fifo)
        received = os.read(reader, 1 << 16)
    finally:
        os.close(reader)
    assert result.exit_code == 0, result.output
    assert zipfile.ZipFile(io.BytesIO(received)).namelist() == ["y.npy", "h.npy"]
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


def test_dev_null_is_written_through_never_replaced():
    before = os.stat("/dev/null")
    result = cli(*RUN, "--out", "/dev/null")
    assert result.exit_code == 0, result.output
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev
    assert after.st_ino == before.st_ino


def test_dev_stdout_in_a_pipe_carries_the_npz(tmp_path):
    result = subprocess.run([sys.executable, "-m", "lstm_graph.cli", *RUN, "--out",
                             "/dev/stdout"], capture_output=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    with np.load(io.BytesIO(result.stdout)) as arrays:
        assert arrays["y"].shape == (20, 2, 2)
    assert list(tmp_path.iterdir()) == []


def test_binary_output_to_a_terminal_is_refused(tmp_path):
    master, slave = pty.openpty()
    try:
        terminal = os.ttyname(slave)
        result = cli(*RUN, "--out", terminal)
        assert result.exit_code == 1
        assert f"{terminal}: is a terminal, and this output is binary (.npz)" in result.stderr
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


def test_a_directory_or_a_socket_is_refused(tmp_path):
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(tmp_path / "s.npz"))
        result = cli(*RUN, "--out", tmp_path / "s.npz")
        assert result.exit_code == 1
        assert "s.npz: is a socket, not a regular file" in result.stderr
        assert stat.S_ISSOCK((tmp_path / "s.npz").lstat().st_mode)
    finally:
        server.close()
    with pytest.raises(Exception, match="is a directory, not a regular file"):
        write_atomic(tmp_path, b"x")


def test_an_empty_output_path_is_a_usage_error():
    for command in (RUN, ["params", "rnn", "-I", "2", "-H", "2"]):
        result = cli(*command, "--out", "")
        assert result.exit_code == 2
        assert "the output path is empty" in result.stderr


def test_a_new_file_gets_the_user_s_umask(tmp_path):
    previous = os.umask(0o077)
    try:
        assert cli(*RUN, "--out", tmp_path / "y.npz").exit_code == 0
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "y.npz").stat().st_mode) == 0o600


def test_a_file_written_over_keeps_its_mode(tmp_path):
    out = tmp_path / "y.npz"
    out.write_bytes(b"old")
    out.chmod(0o640)
    assert cli(*RUN, "--out", out).exit_code == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o640 and out.read_bytes() != b"old"


def test_a_symbolic_link_is_followed_and_kept(tmp_path):
    (tmp_path / "real.npz").write_bytes(b"old")
    (tmp_path / "link.npz").symlink_to("real.npz")
    assert cli(*RUN, "--out", tmp_path / "link.npz").exit_code == 0
    assert (tmp_path / "link.npz").is_symlink()
    assert zipfile.is_zipfile(tmp_path / "real.npz")


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
        [sys.executable, "-m", "lstm_graph.cli", "run", "lstm", "--input", "x.npy", "-H", "8",
         "--executor", "reference", "--out", "y.npz"],
        cwd=tmp_path, stderr=subprocess.PIPE, text=True)
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
