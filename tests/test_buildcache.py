"""The build cache: private, self-healing, bounded; compiler failures never hurt a run.

Most tests run the command line in a subprocess with an environment of their own
(a cache directory, a temporary directory, a compiler), as a user would, and look
at what is left on disk afterwards.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import needs_compiler

import lstm_graph
from lstm_graph.errors import BackendError, LstmGraphWarning
from lstm_graph.executors import buildcache

pytestmark = needs_compiler
ROOT = Path(__file__).resolve().parents[1]
RUN = ["run", "lstm", "--sample", "-H", "4", "--json"]


def cli(args: list[str], tmp_path: Path, cache: Path | str | None, timeout: float = 120,
        **env: str) -> subprocess.CompletedProcess[str]:
    """The command line in a fresh process; its temporary directory is ``tmp_path/tmp``."""
    (tmp_path / "tmp").mkdir(exist_ok=True)
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("LSTM_GRAPH_CACHE", "XDG_CACHE_HOME", "CC")}
    environment.update(TMPDIR=str(tmp_path / "tmp"), **env)
    if cache is not None:
        environment["LSTM_GRAPH_CACHE"] = str(cache)
    return subprocess.run([sys.executable, "-m", "lstm_graph.cli", *args], capture_output=True,
                          text=True, env=environment, cwd=tmp_path, timeout=timeout)


def out(tmp_path: Path) -> list[str]:
    return ["--out", str(tmp_path / "y.npz")]


def test_the_cache_is_a_private_directory(tmp_path):
    cache = tmp_path / "cache"
    done = cli([*RUN, *out(tmp_path), "--executor", "native"], tmp_path, cache)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert len(list(cache.glob("*.so"))) == 1 and len(list(cache.glob("*.json"))) == 1


def test_a_cache_directory_open_to_others_is_narrowed_to_ours_only(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o777)
    done = cli([*RUN, *out(tmp_path), "--executor", "native"], tmp_path, cache)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700


@pytest.mark.parametrize("where", ["a file", "another user's directory", "no home"])
def test_an_unusable_cache_builds_privately_and_leaves_nothing_behind(tmp_path, where):
    env: dict[str, str] = {}
    cache: Path | None = tmp_path / "cache"
    if where == "a file":
        (tmp_path / "file").write_text("")
        cache = tmp_path / "file" / "cache"
    elif where == "another user's directory":
        if not hasattr(os, "geteuid") or os.geteuid() != 0:
            pytest.skip("needs root to make a directory of another user")
        assert cache is not None
        cache.mkdir(mode=0o777)
        os.chown(cache, 65534, 65534)
    else:
        cache = None
        env["HOME"] = str(tmp_path / "nonexistent" / "home")
    done = cli([*RUN, *out(tmp_path), "--executor", "native"], tmp_path, cache, **env)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    (warning,) = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert "is not usable" in warning and "private temporary directory" in warning
    assert list((tmp_path / "tmp").iterdir()) == []  # the private directory went at exit
    if where == "another user's directory":
        assert cache is not None and list(cache.iterdir()) == []


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "record"])
def test_a_damaged_cache_is_rebuilt_never_loaded(tmp_path, damage):
    cache = tmp_path / "cache"
    first = cli([*RUN, *out(tmp_path), "--executor", "native"], tmp_path, cache)
    assert first.returncode == 0, first.stderr
    expected = np.load(tmp_path / "y.npz")["y"]
    for path in cache.iterdir():
        data = path.read_bytes()
        if damage == "truncate":
            path.write_bytes(data[: len(data) // 3])
        elif damage == "garbage":
            path.write_bytes(os.urandom(len(data)))
        elif damage == "empty":
            path.write_bytes(b"")
        elif path.suffix == ".json":
            path.write_text(path.read_text().replace('"sha256": "', '"sha256": "0'))
    again = cli([*RUN, *out(tmp_path), "--executor", "native"], tmp_path, cache)
    assert again.returncode == 0, (again.returncode, again.stderr)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npz")["y"], expected)
    assert len(list(cache.glob("*.json"))) == 1


@pytest.mark.parametrize("compiler, words", [
    ("/bin/false", "the C compiler /bin/false failed on the generated step"),
    ("/bin/true", "the C compiler /bin/true reported success but produced no library"),
])
def test_a_broken_compiler_is_an_error_for_native_and_a_warning_for_plan(tmp_path, compiler,
                                                                         words):
    cache = tmp_path / "cache"
    native = cli([*RUN, *out(tmp_path), "--executor", "native"], tmp_path, cache, CC=compiler)
    assert native.returncode == 1 and words in native.stderr
    assert "Traceback" not in native.stderr and not (tmp_path / "y.npz").exists()
    plan = cli([*RUN, *out(tmp_path)], tmp_path, cache, CC=compiler)
    assert plan.returncode == 0, plan.stderr
    (warning,) = plan.stderr.splitlines()
    assert warning.startswith(f"warning: {words}") and warning.endswith("running the NumPy "
                                                                      "plan instead")
    assert '"ran_with": "numpy"' in plan.stdout
    assert list(cache.iterdir()) == [] and list((tmp_path / "tmp").iterdir()) == []


def _slow_compiler(tmp_path: Path) -> Path:
    """A 'compiler' that starts a child (as cc starts cc1) and waits, noting both pids."""
    script = tmp_path / "slow-cc"
    script.write_text(f"#!/bin/sh\necho $$ > {tmp_path}/cc.pid\n"
                      f"sleep 60 &\necho $! > {tmp_path}/cc1.pid\nwait\n")
    script.chmod(0o755)
    return script


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _wait_for(path: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() or not path.read_text().strip():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_compiler_that_takes_too_long_is_killed_with_its_children(tmp_path):
    compiler = _slow_compiler(tmp_path)
    done = cli([*RUN, *out(tmp_path), "--executor", "native"], tmp_path, tmp_path / "cache",
               CC=str(compiler), LSTM_GRAPH_CC_TIMEOUT="1")
    assert done.returncode == 1
    assert f"the C compiler {compiler} took longer than 1 s" in done.stderr
    for name in ("cc.pid", "cc1.pid"):
        assert not _alive(int((tmp_path / name).read_text()))
    assert list((tmp_path / "cache").iterdir()) == []


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
@pytest.mark.parametrize("signum, code, words", [
    (signal.SIGTERM, 143, "terminated; no output was written"),
    (signal.SIGINT, 130, "interrupted; no output was written"),
])
def test_an_interrupted_compile_kills_the_compiler_and_leaves_nothing(tmp_path, signum, code,
                                                                      words):
    compiler = _slow_compiler(tmp_path)
    (tmp_path / "tmp").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("LSTM_GRAPH_CACHE", "CC")}
    env.update(LSTM_GRAPH_CACHE=str(tmp_path / "cache"), CC=str(compiler),
               TMPDIR=str(tmp_path / "tmp"))
    process = subprocess.Popen([sys.executable, "-m", "lstm_graph.cli", *RUN, *out(tmp_path),
                                "--executor", "native"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    _wait_for(tmp_path / "cc1.pid")
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    assert words in stderr and "Traceback" not in stderr
    for name in ("cc.pid", "cc1.pid"):
        assert not _alive(int((tmp_path / name).read_text()))
    assert list((tmp_path / "cache").iterdir()) == []
    assert not (tmp_path / "y.npz").exists()


def test_a_full_disk_is_an_error_for_native_a_fallback_for_plan_and_leaves_nothing(
        tmp_path, monkeypatch):
    monkeypatch.setenv("LSTM_GRAPH_CACHE", str(tmp_path / "cache"))
    real_write = buildcache._write

    def full(path: Path, data: bytes) -> None:
        real_write(path, data[:10])  # some bytes made it, then the disk filled up
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(buildcache, "_write", full)
    cell = lstm_graph.load_cell("gru")
    with pytest.raises(BackendError, match="No space left on device"):
        cell.compile(input_size=2, hidden_size=3, executor="native")(np.zeros((2, 1, 2), "f4"))
    run = cell.compile(input_size=2, hidden_size=3)
    with pytest.warns(LstmGraphWarning, match="No space left on device"):
        run(np.zeros((2, 1, 2), "float32"))
    assert run.ran_with == "numpy"
    leftovers = [p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith("tmp")]
    assert leftovers == []


def test_the_least_recently_used_builds_go_when_the_cache_is_full(tmp_path, monkeypatch):
    monkeypatch.setenv("LSTM_GRAPH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LSTM_GRAPH_CACHE_MB", "0.000001")  # room for less than one build
    x = np.zeros((2, 1, 2), "float32")
    for name in ("rnn", "gru", "lstm"):
        lstm_graph.load_cell(name).compile(input_size=2, hidden_size=3, executor="native")(x)
    records = list((tmp_path / "cache").glob("*.json"))
    assert len(records) == 1 and "cell 'lstm'" in records[0].read_text()


def test_a_relative_xdg_cache_home_is_ignored(tmp_path, monkeypatch):
    monkeypatch.delenv("LSTM_GRAPH_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert buildcache.cache_directory() == tmp_path / ".cache" / "lstm-graph"


def test_the_test_suite_never_uses_the_users_cache():
    directory = buildcache.cache_directory()
    assert "lstm-graph-test-cache-" in str(directory)


def test_cache_info_and_clear(tmp_path):
    cache = tmp_path / "cache"
    assert cli([*RUN, *out(tmp_path), "--executor", "native"], tmp_path, cache).returncode == 0
    info = cli(["cache", "info"], tmp_path, cache)
    assert info.returncode == 0
    assert f"directory  {cache}" in info.stdout and "builds     1 (" in info.stdout
    cleared = cli(["cache", "clear"], tmp_path, cache)
    assert cleared.returncode == 0 and f"removed 1 build from {cache}" in cleared.stderr
    assert list(cache.iterdir()) == []
    assert '"entries": 0' in cli(["cache", "info", "--json"], tmp_path, cache).stdout


def test_a_compile_says_so_once_in_the_log(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("LSTM_GRAPH_CACHE", str(tmp_path / "cache"))
    x = np.zeros((2, 1, 2), "float32")
    with caplog.at_level("INFO", logger="lstm_graph"):
        for _ in range(2):
            lstm_graph.load_cell("rnn").compile(input_size=2, hidden_size=3, executor="native")(x)
    notes = [r.getMessage() for r in caplog.records if r.name == "lstm_graph"]
    assert notes == [f"compiling the native step of cell 'rnn' once (cached in {tmp_path}/cache)"]


def test_the_cache_touches_only_its_own_files_in_a_shared_directory(tmp_path):
    cache = tmp_path / "shared"
    (cache / "pip" / "sub").mkdir(parents=True)
    cache.chmod(0o755)
    theirs = [cache / "pip" / "sub" / "file", cache / "notes.json", cache / "lib.so",
              cache / "tmpfile"]
    for path in theirs:
        path.write_text("not the cache's")
    done = cli([*RUN, *out(tmp_path), "--executor", "native"], tmp_path, cache)
    assert done.returncode == 0, done.stderr
    assert len(list(cache.glob("*-*.so"))) == 1
    (cache / "0123456789abcdef0123456789abcdef.json").write_text('{"library": "../lib.so"}')
    cleared = cli(["cache", "clear"], tmp_path, cache)
    assert cleared.returncode == 0, cleared.stderr
    assert sorted(p.name for p in cache.rglob("*")) == ["file", "lib.so", "notes.json", "pip",
                                                         "sub", "tmpfile"]
    assert all(path.read_text() == "not the cache's" for path in theirs)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o755  # nobody else can write: left as it is
