"""The build cache: its own directory only, safe paths, self-healing, bounded; compiler
failures never hurt a run.

Most tests run the command line in a subprocess with an environment of their own
(a cache base, a temporary directory, a compiler), as a user would, and look at
what is left on disk afterwards: the cache's directory is ``BASE/lstm-graph-v1``,
and nothing else under the base may change.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import needs_compiler

import lstm_graph
from lstm_graph.errors import BackendError, LstmGraphWarning
from lstm_graph.executors import buildcache

pytestmark = needs_compiler
RUN = ["run", "lstm", "--sample", "-H", "4", "--json"]
NATIVE = [*RUN, "--executor", "native"]
TAG = b"Signature: 8a477f597d28d172789f06886806bc55"
needs_root = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                                reason="needs root to make files of another user")
needs_proc = pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc")


def cli(args: list[str], tmp_path: Path, cache: Path | str | None, timeout: float = 120,
        **env: str) -> subprocess.CompletedProcess[str]:
    """The command line in a fresh process; its temporary directory is ``tmp_path/tmp``."""
    (tmp_path / "tmp").mkdir(exist_ok=True)
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("LSTM_GRAPH_CACHE", "XDG_CACHE_HOME", "CC")}
    environment["TMPDIR"] = str(tmp_path / "tmp")
    environment.update(env)
    if cache is not None:
        environment["LSTM_GRAPH_CACHE"] = str(cache)
    return subprocess.run([sys.executable, "-m", "lstm_graph.cli", *args], capture_output=True,
                          text=True, env=environment, cwd=tmp_path, timeout=timeout)


def out(tmp_path: Path) -> list[str]:
    return ["--out", str(tmp_path / "y.npz")]


def v1(base: Path) -> Path:
    """The cache's own directory in ``base``."""
    return base / "lstm-graph-v1"


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def snapshot(root: Path) -> dict[str, tuple[int, int, int, bytes | str | None]]:
    """Every entry under ``root`` (symbolic links not followed): mode, owner, modification
    time and contents, to show that nothing there changed."""
    found: dict[str, tuple[int, int, int, bytes | str | None]] = {}
    for folder, dirs, files in os.walk(root):
        for name in ["", *dirs, *files]:
            path = Path(folder, name)
            info = path.lstat()
            content: bytes | str | None = None
            if stat.S_ISLNK(info.st_mode):
                content = os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                content = path.read_bytes()
            found[str(path.relative_to(root))] = (info.st_mode, info.st_uid,
                                                   info.st_mtime_ns, content)
    return found


def warning_of(stderr: str) -> str:
    (warning,) = [line for line in stderr.splitlines() if line.startswith("warning:")]
    return warning


def planted(shared: Path, log: Path, programs: tuple[str, ...], real: str = "/usr/bin/",
            mode: int = 0o777) -> Path:
    """``shared``, a new directory of ``mode`` (anyone may write in it), holding for each
    of ``programs`` a script that notes its name in ``log`` and runs the real one: what
    another user could put there."""
    shared.mkdir()
    shared.chmod(mode)
    for name in programs:
        (shared / name).write_text(f"#!/bin/sh\necho {name} >> {log}\n"
                                   f"exec {real}{name} \"$@\"\n")
        (shared / name).chmod(0o755)
    return shared


# -- only its own directory ---------------------------------------------------------------

def test_the_cache_is_a_tagged_private_directory_of_its_own(tmp_path):
    base = tmp_path / "base" / "missing"
    done = cli(NATIVE + out(tmp_path), tmp_path, base)
    assert done.returncode == 0, done.stderr
    assert names(base) == ["lstm-graph-v1"]
    assert stat.S_IMODE(v1(base).stat().st_mode) == 0o700
    assert (v1(base) / "CACHEDIR.TAG").read_bytes().startswith(TAG)
    assert len(list(v1(base).glob("*.so"))) == 1 and len(list(v1(base).glob("*.json"))) == 1
    assert '"ran_with": "native"' in done.stdout


def test_a_build_and_a_clear_touch_nothing_beside_the_cache(tmp_path):
    """The issue's first reproduction: an old ``tmp-important/`` (and other files with
    the cache's kind of names) beside the cache survive a build and ``cache clear``."""
    base = tmp_path / "shared"
    (base / "tmp-important").mkdir(parents=True)
    (base / "tmp-important" / "thesis.tex").write_text("data\n")
    for name in ("tmp-file", "0123456789abcdef0123456789abcdef.json", "notes.json", "lib.so",
                 "0123456789abcdef0123456789abcdef-0123456789abcdef.so"):
        (base / name).write_text("not the cache's")
    two_hours_ago = time.time() - 7200
    for path in base.rglob("*"):
        os.utime(path, (two_hours_ago, two_hours_ago))
    os.utime(base, (two_hours_ago, two_hours_ago))
    before = snapshot(base)
    done = cli(NATIVE + out(tmp_path), tmp_path, base)
    assert done.returncode == 0, done.stderr
    cleared = cli(["cache", "clear"], tmp_path, base)
    assert cleared.returncode == 0, cleared.stderr
    assert cleared.stderr == f"removed 1 build from {v1(base)}\n"
    after = snapshot(base)
    def beside(found: dict[str, tuple[int, int, int, bytes | str | None]]) -> dict[str, object]:
        return {k: v for k, v in found.items() if k != "." and not k.startswith("lstm-graph")}

    assert beside(after) == beside(before) and len(beside(before)) == 7
    assert after["."][:2] == before["."][:2]  # the base's mode and owner
    assert names(v1(base)) == ["CACHEDIR.TAG"]


def test_cache_info_changes_nothing_not_even_a_shared_directorys_mode(tmp_path):
    """The issue's second reproduction: ``cache info`` on a 1777 directory left it 0700."""
    base = tmp_path / "fake_tmp"
    base.mkdir()
    base.chmod(0o1777)
    before = snapshot(base)
    info = cli(["cache", "info"], tmp_path, base)
    assert info.returncode == 0, info.stderr
    assert info.stdout.startswith(f"directory  {v1(base)} (not made yet: the first native "
                                  "build makes it)\nbuilds     0 (0.0 MiB")
    assert cli(["cache", "clear"], tmp_path, base).returncode == 0
    assert snapshot(base) == before and stat.S_IMODE(base.stat().st_mode) == 0o1777


def test_a_sticky_shared_base_like_tmp_is_used_and_left_as_it_is(tmp_path):
    base = tmp_path / "tmp-like"
    base.mkdir()
    base.chmod(0o1777)
    (base / "someone-elses").write_text("kept")
    done = cli(NATIVE + out(tmp_path), tmp_path, base)
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr
    assert stat.S_IMODE(base.stat().st_mode) == 0o1777
    assert names(base) == ["lstm-graph-v1", "someone-elses"]
    assert len(list(v1(base).glob("*.so"))) == 1


def _make_not_ours(base: Path, shape: str) -> str:
    """An ``lstm-graph-v1`` in ``base`` that the tool did not make; the reason it says."""
    theirs = v1(base)
    if shape == "a file":
        theirs.write_text("a file of the user's")
        return "it is not a directory"
    if shape == "a symbolic link":
        (base / "elsewhere").mkdir()
        (base / "elsewhere" / "tmp-dir").mkdir()
        theirs.symlink_to(base / "elsewhere")
        return "it is a symbolic link"
    theirs.mkdir()
    (theirs / "tmp-0123456789abcdef").mkdir()
    (theirs / "tmp-0123456789abcdef" / "work").write_text("theirs")
    (theirs / "0123456789abcdef0123456789abcdef.json").write_text("not a record")
    theirs.chmod(0o700)
    if shape == "no tag":
        return "it has no CACHEDIR.TAG of lstm-graph, so lstm-graph did not make it"
    (theirs / "CACHEDIR.TAG").write_bytes(TAG + b"\n")
    if shape == "a tag of another tool":
        return "it has no CACHEDIR.TAG of lstm-graph, so lstm-graph did not make it"
    if shape == "open to others":
        theirs.chmod(0o777)
        return "its mode 0777 lets other users write in it"
    for path in (theirs, *theirs.rglob("*")):
        os.chown(path, 65534, 65534, follow_symlinks=False)
    return "it belongs to another user (uid 65534)"


@pytest.mark.parametrize("shape", [
    "a file", "a symbolic link", "no tag", "a tag of another tool", "open to others",
    pytest.param("another user's", marks=needs_root)])
def test_an_lstm_graph_v1_the_tool_did_not_make_is_refused_and_left_as_it_is(tmp_path, shape):
    base = tmp_path / "base"
    base.mkdir()
    reason = _make_not_ours(base, shape)
    before = snapshot(base)
    done = cli(NATIVE + out(tmp_path), tmp_path, base)
    assert done.returncode == 0, done.stderr
    assert warning_of(done.stderr) == (
        f"warning: the build cache {v1(base)} is not usable ({reason}); compiling into a "
        "private temporary directory for this run (set LSTM_GRAPH_CACHE to keep builds)")
    assert '"ran_with": "native"' in done.stdout
    cleared = cli(["cache", "clear"], tmp_path, base)
    assert cleared.returncode == 1 and "Traceback" not in cleared.stderr
    assert cleared.stderr == (f"the build cache {v1(base)} is not usable ({reason}); nothing "
                              "was removed\n")
    info = cli(["cache", "info", "--json"], tmp_path, base)
    assert info.returncode == 0, info.stderr
    shown = json.loads(info.stdout)
    assert (shown["usable"], shown["problem"], shown["entries"]) == (False, reason, 0)
    assert snapshot(base) == before
    assert list((tmp_path / "tmp").iterdir()) == []  # the private directory went at exit


@pytest.mark.parametrize("mode", [0o777, 0o775])
def test_a_path_other_users_can_write_in_is_refused(tmp_path, mode):
    """Another user could swap what is in such a directory between a check and a load."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    base = shared / "mine"
    before = snapshot(shared)
    done = cli(NATIVE + out(tmp_path), tmp_path, base)
    assert done.returncode == 0, done.stderr
    assert warning_of(done.stderr) == (
        f"warning: the build cache {v1(base)} is not usable (other users can write in "
        f"{shared} (mode {mode:04o}, no sticky bit)); compiling into a private temporary "
        "directory for this run (set LSTM_GRAPH_CACHE to keep builds)")
    assert snapshot(shared) == before  # not even the missing base was made


@pytest.mark.parametrize("owner", [pytest.param("another user", marks=needs_root), "mine"])
def test_a_link_in_a_sticky_directory_is_followed_only_if_no_other_user_put_it(tmp_path,
                                                                              owner):
    """``LSTM_GRAPH_CACHE=/tmp/cache`` where /tmp/cache is another user's link to a
    directory of the user's: it was followed (the path's real form was checked) and
    directories made at its target. Only a link of the user's (or root's) is followed."""
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    victim = tmp_path / "victim"
    victim.mkdir()
    link = sticky / "cache"
    link.symlink_to(victim / "new" / "deeper")
    if owner == "another user":
        os.chown(link, 65534, 65534, follow_symlinks=False)
    done = cli(NATIVE + out(tmp_path), tmp_path, link)
    assert done.returncode == 0, done.stderr
    if owner == "mine":
        assert "warning" not in done.stderr
        made = v1(victim / "new" / "deeper")
        assert (made / "CACHEDIR.TAG").is_file() and len(list(made.glob("*.so"))) == 1
        return
    assert warning_of(done.stderr) == (
        f"warning: the build cache {v1(link)} is not usable ({link} is a symbolic link that "
        "another user may have put there or may change, so it is not followed); compiling "
        "into a private temporary directory for this run (set LSTM_GRAPH_CACHE to keep "
        "builds)")
    assert names(victim) == []


def test_a_path_s_links_dots_and_missing_parts_resolve_as_the_kernel_reads_them(tmp_path):
    """``_resolve`` follows the user's links (relative, chained, then '..' from where they
    lead), takes a missing directory as the one that will be made ('missing/../c' is 'c':
    it once made 'missing'), and refuses a loop."""
    real = tmp_path / "real"
    (real / "deep" / "er").mkdir(parents=True)
    (tmp_path / "a").symlink_to("real/deep")  # relative
    (tmp_path / "b").symlink_to(tmp_path / "a")  # a chain, absolute
    resolve = buildcache._resolve
    assert resolve(tmp_path / "b" / "er") == real / "deep" / "er"
    assert resolve(tmp_path / "b" / ".." / "x") == real / "x"  # '..' of the link's target
    assert resolve(tmp_path / "missing" / ".." / "c") == tmp_path / "c"
    assert resolve(tmp_path / "b" / "new" / "newer") == real / "deep" / "new" / "newer"
    (tmp_path / "loop").symlink_to("loop")
    with pytest.raises(buildcache._Refused, match="symbolic link chain too long to follow"):
        resolve(tmp_path / "loop" / "x")
    done = cli(NATIVE + out(tmp_path), tmp_path, tmp_path / "missing" / ".." / "c")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c", "loop", "real", "tmp",
                                                          "y.npz"]


def test_a_link_that_cannot_be_read_or_a_path_through_a_file_is_an_unusable_cache(
        tmp_path, monkeypatch):
    """``os.readlink`` of a link the user may not read (``/proc/1/cwd``) escaped as 'no
    output was written' for run, ``cache info`` and ``clear``; 'file/../c' was taken as 'c',
    a path the kernel refuses (h85)."""
    (tmp_path / "a").symlink_to(tmp_path)
    refused = OSError(errno.EACCES, os.strerror(errno.EACCES))
    monkeypatch.setattr(buildcache.os, "readlink", lambda *args: (_ for _ in ()).throw(refused))
    with pytest.raises(buildcache._Refused, match="Permission denied"):
        buildcache._resolve(tmp_path / "a" / "c")
    monkeypatch.undo()
    (tmp_path / "afile").write_text("")
    with pytest.raises(buildcache._Refused, match="afile is not a directory"):
        buildcache._resolve(tmp_path / "afile" / ".." / "c")
    if os.geteuid() != 0 or not os.access("/proc/1/cwd", os.F_OK):
        return
    try:
        os.readlink("/proc/1/cwd")
        return  # readable here: the case above stands for it
    except PermissionError:
        pass
    done = cli(RUN + out(tmp_path), tmp_path, "/proc/1/cwd")
    assert done.returncode == 0 and "is not usable" in done.stderr, done.stderr


def test_a_compiler_reached_by_a_link_others_may_change_is_said_so_once(tmp_path):
    """The warning said 'so it is not followed, so another user could have put it there
    or could change it': the link's reason and the compiler's (h85)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    (shared / "cc").symlink_to(shutil.which("cc") or "/usr/bin/cc")
    done = cli(RUN + out(tmp_path), tmp_path, tmp_path / "cache", CC=str(shared / "cc"))
    assert done.returncode == 0, done.stderr
    assert warning_of(done.stderr) == (
        f"warning: the C compiler {shared / 'cc'} is not used: {shared / 'cc'} is a symbolic "
        "link that another user may have put there or may change, so it is not followed")


def test_compiler_flags_naming_files_and_gcc_variables_naming_unsafe_places_are_refused(
        tmp_path):
    """``LSTM_GRAPH_CFLAGS=-B/shared/`` ran the ``as`` planted there, as did
    ``COMPILER_PATH``; headers, libraries, rpaths, response files and plugins came from
    such places too (h85, h86). ``$LSTM_GRAPH_CFLAGS`` takes flags that tune the code
    alone (any other is refused: the NumPy plan runs, as for any bad flag); GCC's
    variables keep only safe directories; its dependency-file variables are left out."""
    shared = planted(tmp_path / "shared", tmp_path / "ran.log", ("as",))
    (shared / "resp").write_text(f"{shared}/evil.o\n")
    for flag in (f"-B{shared}/", f"-I{shared}", f"-isystem{shared}", f"-L{shared}",
                 f"-Wl,-rpath,/usr/lib:{shared}", f"-Wl,@{shared}/resp", f"-Wp,-I{shared}",
                 f"-Wl,-R{shared}", "-Xlinker", f"-iplugindir={shared}",
                 f"-fplugin={shared}/p.so", f"-MF{tmp_path}/deps.d", "-save-temps",
                 f"-T{shared}/script"):
        done = cli(RUN + out(tmp_path), tmp_path, tmp_path / "cache", LSTM_GRAPH_CFLAGS=flag)
        assert done.returncode == 0, done.stderr
        assert warning_of(done.stderr).startswith(
            f"warning: $LSTM_GRAPH_CFLAGS holds '{flag}', which lstm-graph does not give the "
            "compiler: it takes flags that tune the code"), done.stderr
        assert json.loads(done.stdout)["ran_with"] == "numpy"
    done = cli(RUN + out(tmp_path), tmp_path, tmp_path / "cache",
               LSTM_GRAPH_CFLAGS="-O2 -march=native -DLG_X=1 -funroll-loops -Wno-unused")
    assert json.loads(done.stdout)["ran_with"] == "native", done.stderr
    done = cli(RUN + ["-H", "5"] + out(tmp_path), tmp_path, tmp_path / "cache",
               COMPILER_PATH=str(shared), CPATH=f"{shared}{os.pathsep}/usr/include",
               LD_RUN_PATH=str(shared),
               DEPENDENCIES_OUTPUT=str(tmp_path / "deps.d"))
    assert done.returncode == 0 and json.loads(done.stdout)["ran_with"] == "native"
    assert f"warning: the COMPILER_PATH entry {shared} is not searched for the C " \
        "compiler's programs: other users can write" in done.stderr
    assert f"warning: the CPATH entry {shared} is not searched for the headers" in done.stderr
    assert f"warning: the LD_RUN_PATH entry {shared} is not searched" in done.stderr
    assert not (tmp_path / "ran.log").exists() and not (tmp_path / "deps.d").exists()


@pytest.mark.parametrize("how", ["CC", "PATH"])
def test_a_compiler_other_users_can_write_is_passed_over(tmp_path, how):
    """``$CC`` (or the first cc on PATH) in a directory anyone can write in was run, and
    the library it made loaded; it is passed over with a warning for the next compiler.
    On PATH, such a directory is not searched: cc, gcc and clang all planted there hid
    /usr/bin's ('none was found')."""
    shared = planted(tmp_path / "shared", tmp_path / "ran.log", ("cc", "gcc", "clang"))
    env = {"CC": str(shared / "cc")} if how == "CC" else {
        "PATH": f"{shared}{os.pathsep}{os.environ['PATH']}"}
    done = cli(NATIVE + out(tmp_path), tmp_path, tmp_path / "cache", **env)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == ([
        f"warning: the C compiler {shared / 'cc'} is not used: other users can write in "
        f"{shared} (mode 0777, no sticky bit), so another user could have put it there or "
        "could change it"] if how == "CC" else [
        f"warning: the PATH entry {shared} is not searched for {buildcache.SEARCHED}: other "
        f"users can write {shared} (mode 0777), so another user could put one there"])
    assert not (tmp_path / "ran.log").exists()
    info = json.loads(cli(["cache", "info", "--json"], tmp_path, tmp_path / "cache",
                          **env).stdout)
    assert info["compiler"] != str(shared / "cc") and not (tmp_path / "ran.log").exists()


def test_the_assembler_and_linker_are_not_run_from_a_directory_others_can_write(tmp_path):
    """gcc looks up ``as`` and ``ld`` on PATH: a directory anyone can write in (even with
    the sticky bit, which stops renaming, not adding) ran the ones planted there, and the
    library they made was cached and loaded. The compiler's PATH leaves it out."""
    for mode in (0o777, 0o1777):
        shared = planted(tmp_path / f"shared-{mode:o}", tmp_path / "ran.log", ("as", "ld"),
                         mode=mode)
        done = cli(NATIVE + out(tmp_path), tmp_path, tmp_path / f"cache-{mode:o}",
                   PATH=f"{shared}{os.pathsep}{os.environ['PATH']}")
        assert done.returncode == 0, done.stderr
        assert warning_of(done.stderr).startswith(
            f"warning: the PATH entry {shared} is not searched for {buildcache.SEARCHED}: "
            f"other users can write {shared} (mode {mode:04o})")
        assert not (tmp_path / "ran.log").exists()


def test_graphviz_dot_is_not_run_from_a_directory_others_can_write(tmp_path):
    """``render`` ran the first ``dot`` on PATH, wherever it was."""
    shared = planted(tmp_path / "shared", tmp_path / "ran.log", ("dot",), real="")
    done = cli(["render", "lstm", "--style", "pipe", "--out", tmp_path / "d.svg"], tmp_path,
               tmp_path / "cache", PATH=f"{shared}{os.pathsep}{os.environ['PATH']}")
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "ran.log").exists() and (tmp_path / "d.svg").read_bytes()
    assert f"warning: the PATH entry {shared} is not searched" in done.stderr


def test_a_compiler_is_not_looked_for_through_a_relative_path_entry(tmp_path, monkeypatch):
    """``PATH=bin:…`` gave 'bin/cc', run from wherever the process stands later; a
    relative entry names the directory a command runs in, and is not searched."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "cc").write_text("#!/bin/sh\nexec cc \"$@\"\n")
    (tmp_path / "bin" / "cc").chmod(0o755)
    monkeypatch.chdir(tmp_path)
    with pytest.warns(LstmGraphWarning, match="the PATH entry 'bin' is not searched"):
        found = buildcache._compiler("", f"bin{os.pathsep}/usr/bin")
    assert found is not None and Path(found).parent == Path("/usr/bin")


def test_a_cc_that_names_no_program_says_so_and_the_next_compiler_builds(tmp_path):
    done = cli(NATIVE + out(tmp_path), tmp_path, tmp_path / "cache", CC="gcc -O0")
    assert done.returncode == 0, done.stderr
    assert warning_of(done.stderr) == (
        "warning: CC='gcc -O0' names no program found (give one program, without "
        "arguments); looking for cc, gcc and clang instead")


def test_no_private_directory_at_all_is_an_error_for_native_and_a_warning_for_plan(tmp_path):
    shared = tmp_path / "shared"
    (shared / "tmp").mkdir(parents=True)
    shared.chmod(0o777)
    words = (f"no private directory for compiled steps: the build cache {v1(shared)} is not "
             f"usable (other users can write in {shared} (mode 0777, no sticky bit)) and "
             f"neither is the temporary directory (other users can write in {shared} (mode "
             "0777, no sticky bit)); set LSTM_GRAPH_CACHE to a directory of yours")
    native = cli(NATIVE + out(tmp_path), tmp_path, shared, TMPDIR=str(shared / "tmp"))
    assert native.returncode == 1 and native.stderr == words + "\n"
    plan = cli(RUN + out(tmp_path), tmp_path, shared, TMPDIR=str(shared / "tmp"))
    assert plan.returncode == 0, plan.stderr
    assert warning_of(plan.stderr) == f"warning: {words}; running the NumPy plan instead"
    assert names(shared) == ["tmp"] and names(shared / "tmp") == []


def test_a_relative_home_is_no_place_for_the_cache(tmp_path, monkeypatch):
    """HOME=relhome put the cache at /.cache/lstm-graph-v1 (HOME=. at /lstm-graph-v1): a
    relative path is ignored, as $LSTM_GRAPH_CACHE's and $XDG_CACHE_HOME's are."""
    monkeypatch.delenv("LSTM_GRAPH_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "relhome").mkdir()
    for home in ("relhome", "."):
        monkeypatch.setenv("HOME", home)
        assert buildcache.configured() == (
            None, f"the home directory {home!r} is a relative path")
    monkeypatch.setenv("HOME", "")  # Path.home() makes it /: /.cache/lstm-graph-v1 again
    assert buildcache.configured() == (None, "there is no home directory ($HOME is empty)")


@pytest.mark.parametrize("where", ["a file", "another user's directory", "no home",
                                   "a relative home"])
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
        cache.mkdir(mode=0o755)
        os.chown(cache, 65534, 65534)
    elif where == "no home":
        cache = None
        env["HOME"] = str(tmp_path / "nonexistent" / "home")
    else:
        cache = None
        (tmp_path / "relhome").mkdir()
        env["HOME"] = "relhome"  # the command runs in tmp_path
    done = cli(NATIVE + out(tmp_path), tmp_path, cache, **env)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    warning = warning_of(done.stderr)
    assert "is not usable" in warning and "private temporary directory" in warning
    assert {"a file": f"({tmp_path / 'file'} is not a directory)",
            "another user's directory": f"({cache} belongs to another user (uid 65534))",
            "no home": f"(the home directory {tmp_path}/nonexistent/home does not exist)",
            "a relative home": "(the home directory 'relhome' is a relative path)",
            }[where] in warning
    assert list((tmp_path / "tmp").iterdir()) == []  # the private directory went at exit
    if where == "another user's directory":
        assert cache is not None and list(cache.iterdir()) == []
    if where == "a relative home":
        assert list((tmp_path / "relhome").iterdir()) == []


# -- self-healing ---------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "record"])
def test_a_damaged_cache_is_rebuilt_never_loaded(tmp_path, damage):
    cache = tmp_path / "cache"
    first = cli(NATIVE + out(tmp_path), tmp_path, cache)
    assert first.returncode == 0, first.stderr
    expected = np.load(tmp_path / "y.npz")["y"]
    for path in v1(cache).glob("[0-9a-f]*"):
        data = path.read_bytes()
        if damage == "truncate":
            path.write_bytes(data[: len(data) // 3])
        elif damage == "garbage":
            path.write_bytes(os.urandom(len(data)))
        elif damage == "empty":
            path.write_bytes(b"")
        elif path.suffix == ".json":
            path.write_text(path.read_text().replace('"sha256": "', '"sha256": "0'))
    again = cli(NATIVE + out(tmp_path), tmp_path, cache)
    assert again.returncode == 0, (again.returncode, again.stderr)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npz")["y"], expected)
    assert len(list(v1(cache).glob("*.json"))) == 1 and len(list(v1(cache).glob("*.so"))) == 1


def _maps_line(path: Path) -> str:
    """How ``/proc/PID/maps`` names a mapping of ``path``'s inode: ``dev inode``."""
    info = path.stat()
    return f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x} {info.st_ino} "


_MAPPED = textwrap.dedent("""\
    import ctypes, sys
    from lstm_graph.cli.commands import group
    if sys.argv[2] == "load":
        ctypes.CDLL(sys.argv[3])
    else:
        group(sys.argv[3:], standalone_mode=False)
    print("FOREIGN" if sys.argv[1] in open("/proc/self/maps").read() else "clean")
""")


@needs_proc
def test_another_builds_library_under_a_valid_record_is_rebuilt_never_loaded(tmp_path):
    """The record is left whole, so only comparing the library's digest with it can notice
    that the file is another build's (a GRU step where an LSTM step should be)."""
    cache = tmp_path / "cache"
    for cell in ("lstm", "gru"):
        built = cli(["run", cell, "--sample", "-H", "4", "--executor", "native", "--out",
                     str(tmp_path / f"{cell}.npz")], tmp_path, cache)
        assert built.returncode == 0, built.stderr
    records = {json.loads(p.read_text())["what"]: p for p in v1(cache).glob("*.json")}
    lstm = json.loads(records["the native step of cell 'lstm'"].read_text())
    gru = json.loads(records["the native step of cell 'gru'"].read_text())
    foreign = tmp_path / "foreign.so"
    os.link(v1(cache) / gru["library"], foreign)  # keeps its inode from being reused
    os.replace(v1(cache) / gru["library"], v1(cache) / lstm["library"])
    assert hashlib.sha256((v1(cache) / lstm["library"]).read_bytes()).hexdigest() == \
        gru["sha256"] != lstm["sha256"]
    expected = np.load(tmp_path / "lstm.npz")["y"]
    mapping = _maps_line(foreign)

    def mapped(*args: str) -> subprocess.CompletedProcess[str]:
        environment = {**os.environ, "LSTM_GRAPH_CACHE": str(cache)}
        return subprocess.run([sys.executable, "-c", _MAPPED, mapping, *args], text=True,
                              capture_output=True, env=environment, cwd=tmp_path, timeout=120)

    control = mapped("load", str(foreign))  # the check does see a library that is loaded
    assert control.stdout.splitlines()[-1] == "FOREIGN", control.stderr
    run = mapped("run", "run", "lstm", "--sample", "-H", "4", "--executor", "native", "--out",
                 str(tmp_path / "again.npz"))
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "clean"
    np.testing.assert_array_equal(np.load(tmp_path / "again.npz")["y"], expected)
    rebuilt = json.loads(records["the native step of cell 'lstm'"].read_text())
    assert hashlib.sha256((v1(cache) / rebuilt["library"]).read_bytes()).hexdigest() == \
        rebuilt["sha256"]


def _no_step_compiler(tmp_path: Path) -> Path:
    """A 'compiler' that builds a real library, but not of the step it was given."""
    script = tmp_path / "no-step-cc"
    real = buildcache.compiler()
    script.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        [ "$1" = --version ] && exec {real} --version
        while [ $# -gt 0 ]; do [ "$1" = -o ] && out="$2"; shift; done
        echo 'int unrelated(void) {{ return 1; }}' > "$out.c"
        exec {real} -shared -fPIC -o "$out" "$out.c"
        """))
    script.chmod(0o755)
    return script


def test_a_library_without_the_step_is_a_fallback_for_plan_and_an_error_for_native(tmp_path):
    cache, compiler = tmp_path / "cache", _no_step_compiler(tmp_path)
    words = (f"the C compiler {compiler} built a library that lacks lstm_graph_run (not a "
             "usable step)")
    plan = cli(RUN + out(tmp_path), tmp_path, cache, CC=str(compiler))
    assert plan.returncode == 0, plan.stderr
    assert plan.stderr == f"warning: {words}; running the NumPy plan instead\n"
    assert '"ran_with": "numpy"' in plan.stdout
    native = cli(NATIVE + out(tmp_path), tmp_path, cache, CC=str(compiler))
    assert native.returncode == 1 and native.stderr == words + "\n"
    assert names(v1(cache)) == ["CACHEDIR.TAG"]  # never cached


def test_a_cached_library_without_the_step_is_removed_and_rebuilt(tmp_path):
    """An entry whose digest matches but that lacks the step's functions (made by an older
    version, say) is an error once and is gone, so the next run builds it again."""
    cache = tmp_path / "cache"
    assert cli(NATIVE + out(tmp_path), tmp_path, cache).returncode == 0
    (record,) = v1(cache).glob("*.json")
    meta = json.loads(record.read_text())
    source = tmp_path / "other.c"
    source.write_text("int unrelated(void) { return 1; }\n")
    subprocess.run([str(buildcache.compiler()), "-shared", "-fPIC", "-o",
                    str(v1(cache) / meta["library"]), str(source)], check=True)
    data = (v1(cache) / meta["library"]).read_bytes()
    meta.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    record.write_text(json.dumps(meta))
    plan = cli(RUN + out(tmp_path), tmp_path, cache)
    assert plan.returncode == 0 and "lacks lstm_graph_run" in warning_of(plan.stderr)
    assert names(v1(cache)) == ["CACHEDIR.TAG"]
    again = cli(NATIVE + out(tmp_path), tmp_path, cache)
    assert again.returncode == 0 and again.stderr == "", again.stderr
    assert len(list(v1(cache).glob("*.so"))) == 1


# -- the compiler ---------------------------------------------------------------------------

@pytest.mark.parametrize("compiler, words", [
    ("/bin/false", "the C compiler /bin/false failed on the generated step"),
    ("/bin/true", "the C compiler /bin/true reported success but produced no library"),
])
def test_a_broken_compiler_is_an_error_for_native_and_a_warning_for_plan(tmp_path, compiler,
                                                                         words):
    cache = tmp_path / "cache"
    native = cli(NATIVE + out(tmp_path), tmp_path, cache, CC=compiler)
    assert native.returncode == 1 and words in native.stderr
    assert "Traceback" not in native.stderr and not (tmp_path / "y.npz").exists()
    plan = cli(RUN + out(tmp_path), tmp_path, cache, CC=compiler)
    assert plan.returncode == 0, plan.stderr
    (warning,) = plan.stderr.splitlines()
    assert warning.startswith(f"warning: {words}") and warning.endswith("running the NumPy "
                                                                      "plan instead")
    assert '"ran_with": "numpy"' in plan.stdout
    assert names(v1(cache)) == ["CACHEDIR.TAG"] and list((tmp_path / "tmp").iterdir()) == []


def _slow_compiler(tmp_path: Path) -> Path:
    """A 'compiler' that starts a child (as cc starts cc1) and waits, noting both pids
    (it answers ``--version`` at once, so the wait is the build's)."""
    script = tmp_path / "slow-cc"
    script.write_text("#!/bin/sh\n[ \"$1\" = --version ] && echo 'slow-cc 1.0' && exit 0\n"
                      f"echo $$ > {tmp_path}/cc.pid\n"
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


def _start_slow_build(tmp_path: Path, cache: Path) -> subprocess.Popen[str]:
    """A native run whose compiler waits; returns once the compiler runs."""
    compiler = _slow_compiler(tmp_path)
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("LSTM_GRAPH_CACHE", "CC")}
    env.update(LSTM_GRAPH_CACHE=str(cache), CC=str(compiler), TMPDIR=str(tmp_path / "tmp"))
    process = subprocess.Popen([sys.executable, "-m", "lstm_graph.cli", *NATIVE,
                                *out(tmp_path)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    _wait_for(tmp_path / "cc1.pid")
    return process


def _kill_compiler(tmp_path: Path) -> None:
    for name in ("cc.pid", "cc1.pid"):
        try:
            os.kill(int((tmp_path / name).read_text()), signal.SIGKILL)
        except (OSError, ValueError):
            pass


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_compiler_that_takes_too_long_is_killed_with_its_children(tmp_path):
    compiler = _slow_compiler(tmp_path)
    done = cli(NATIVE + out(tmp_path), tmp_path, tmp_path / "cache", CC=str(compiler),
               LSTM_GRAPH_CC_TIMEOUT="1")
    assert done.returncode == 1
    assert f"the C compiler {compiler} took longer than 1 s" in done.stderr
    for name in ("cc.pid", "cc1.pid"):
        assert not _alive(int((tmp_path / name).read_text()))
    assert names(v1(tmp_path / "cache")) == ["CACHEDIR.TAG"]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
@pytest.mark.parametrize("signum, code, words", [
    (signal.SIGTERM, 143, "terminated; no output was written"),
    (signal.SIGINT, 130, "interrupted; no output was written"),
])
def test_an_interrupted_compile_kills_the_compiler_and_leaves_nothing(tmp_path, signum, code,
                                                                      words):
    process = _start_slow_build(tmp_path, tmp_path / "cache")
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    assert words in stderr and "Traceback" not in stderr
    for name in ("cc.pid", "cc1.pid"):
        assert not _alive(int((tmp_path / name).read_text()))
    assert names(v1(tmp_path / "cache")) == ["CACHEDIR.TAG"]
    assert not (tmp_path / "y.npz").exists()


class _Stop(BaseException):
    """What the test's SIGTERM handler raises (the command line's raises its own)."""


def _stop(signum, frame):
    raise _Stop


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_signal_as_the_compiler_starts_is_held_until_it_can_be_killed(monkeypatch):
    """SIGTERM between the compiler's start and the wait that kills it on an exception (as
    a loaded machine once timed the interrupted-compile test above) left the compiler
    running; now the signal is held, then acted on: the compiler is gone, the handler is
    the one there before."""
    started = []

    class Signalled(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self.pid)
            os.kill(os.getpid(), signal.SIGTERM)  # before _run's own code runs again

    monkeypatch.setattr(subprocess, "Popen", Signalled)
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        with pytest.raises(_Stop):
            buildcache._run(["sleep", "30"], 60)
        assert signal.getsignal(signal.SIGTERM) is _stop
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert not _alive(started[0])


def test_only_python_handlers_are_held_and_only_in_the_main_thread(monkeypatch):
    """An ignored SIGINT stays ignored while the compiler starts (its start once reset it
    to Python's handler), SIGTERM left to the kernel stays so, and a build in another
    thread touches no handler."""
    seen = []

    class Watched(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            seen.append((signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", Watched)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN), \
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        assert buildcache._run(["true"], 60)[0] == 0
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])
    assert seen == [(signal.SIG_IGN, signal.SIG_DFL)]
    seen.clear()
    thread = threading.Thread(target=buildcache._run, args=(["true"], 60))
    thread.start()
    thread.join()
    assert seen == [(signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))]


# -- work directories: a running build's is never removed, a dead one's is ----------------

@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_cache_clear_leaves_a_running_builds_work_alone(tmp_path):
    cache = tmp_path / "cache"
    process = _start_slow_build(tmp_path, cache)
    try:
        (work,) = v1(cache).glob("tmp-*")
        cleared = cli(["cache", "clear"], tmp_path, cache)
        assert cleared.returncode == 0, cleared.stderr
        assert cleared.stderr == (f"removed 0 builds from {v1(cache)} (1 build in progress "
                                  "left alone)\n")
        assert (work / "step.c").is_file()
    finally:
        process.terminate()
        process.communicate(timeout=60)
        _kill_compiler(tmp_path)
    assert process.returncode == 143


def test_a_directory_named_as_a_work_directory_that_the_tool_did_not_make_is_kept(tmp_path):
    """A user's ``tmp-0123456789abcdef/`` inside the cache, named as a build's work
    directory, was removed with what it held by ``cache clear``."""
    cache = tmp_path / "cache"
    done = cli(NATIVE + out(tmp_path), tmp_path, cache)
    assert done.returncode == 0, done.stderr
    mine = v1(cache) / "tmp-0123456789abcdef"
    (mine / "sub").mkdir(parents=True)
    (mine / "sub" / "data").write_text("mine")
    cleared = cli(["cache", "clear"], tmp_path, cache)
    assert cleared.returncode == 0, cleared.stderr
    assert (mine / "sub" / "data").read_text() == "mine"
    assert names(v1(cache)) == ["CACHEDIR.TAG", "tmp-0123456789abcdef"]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_killed_builders_work_is_removed_by_the_next_build(tmp_path):
    cache = tmp_path / "cache"
    process = _start_slow_build(tmp_path, cache)
    process.kill()  # no clean-up of its own can run
    process.communicate(timeout=60)
    _kill_compiler(tmp_path)
    (work,) = v1(cache).glob("tmp-*")
    done = cli(NATIVE + out(tmp_path), tmp_path, cache)
    assert done.returncode == 0, done.stderr
    assert not work.exists() and not list(v1(cache).glob("tmp-*"))


# -- a full disk ----------------------------------------------------------------------------

def mount_tmpfs(disk: Path, size: str) -> None:
    """A tmpfs of ``size`` at ``disk``, where this process may mount one; else skipped."""
    disk.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                              str(disk)], capture_output=True, timeout=30)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")


@pytest.fixture
def small_disk(tmp_path: Path):
    """A file system of 128 KiB (tmpfs), where this process may mount one; else skipped."""
    mount_tmpfs(tmp_path / "disk", "128k")
    try:
        yield tmp_path / "disk"
    finally:
        subprocess.run(["umount", "-l", str(tmp_path / "disk")], capture_output=True, timeout=30)


def test_a_cache_on_a_read_only_disk_is_shown_unusable_and_clear_removes_nothing(tmp_path):
    """``cache info`` called it usable and ``cache clear`` said 'removed 0 builds', exit 0,
    while its build stayed: the unlink's error was swallowed."""
    disk = tmp_path / "disk"
    mount_tmpfs(disk, "8m")
    try:
        assert cli(NATIVE + out(tmp_path), tmp_path, disk).returncode == 0
        before = snapshot(disk)
        remounted = subprocess.run(["mount", "-o", "remount,ro", str(disk)],
                                   capture_output=True, timeout=30)
        assert remounted.returncode == 0, remounted.stderr
        shown = json.loads(cli(["cache", "info", "--json"], tmp_path, disk).stdout)
        assert (shown["usable"], shown["problem"]) == (False, "it is not writable")
        cleared = cli(["cache", "clear"], tmp_path, disk)
        assert (cleared.returncode, cleared.stderr) == (1, (
            f"the build cache {v1(disk)} is not usable (it is not writable); nothing was "
            "removed\n"))
        assert snapshot(disk) == before
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=30)


def test_a_disk_that_fills_while_compiling_says_so_and_leaves_nothing(tmp_path, small_disk):
    native = cli(NATIVE + out(tmp_path), tmp_path, small_disk)
    assert native.returncode == 1 and "Traceback" not in native.stderr
    assert native.stderr.startswith(f"the disk holding the build cache {v1(small_disk)} is "
                                    "full (")
    assert native.stderr.endswith(" MiB free)\n")
    plan = cli(RUN + out(tmp_path), tmp_path, small_disk)
    assert plan.returncode == 0 and "is full" in warning_of(plan.stderr)
    assert names(v1(small_disk)) == ["CACHEDIR.TAG"]


def test_a_linker_out_of_space_is_named_as_a_full_disk(tmp_path):
    """What ld says when the disk fills during linking ('collect2: … ld returned 1')."""
    linker = tmp_path / "full-cc"
    linker.write_text("#!/bin/sh\n[ \"$1\" = --version ] && exit 1\n"
                      "echo '/usr/bin/ld: final link failed: No space left on device' >&2\n"
                      "echo 'collect2: error: ld returned 1 exit status' >&2\nexit 1\n")
    linker.chmod(0o755)
    done = cli(NATIVE + out(tmp_path), tmp_path, tmp_path / "cache", CC=str(linker))
    assert done.returncode == 1
    assert done.stderr.startswith(f"the disk holding the build cache {v1(tmp_path / 'cache')} "
                                  "is full (")


def test_a_full_disk_while_caching_is_an_error_for_native_a_fallback_for_plan(
        tmp_path, monkeypatch):
    monkeypatch.setenv("LSTM_GRAPH_CACHE", str(tmp_path / "cache"))
    real_write = buildcache._write_new

    def full(dir_fd: int, name: str, data: bytes) -> int:
        if name != "library.part":
            return real_write(dir_fd, name, data)
        os.close(real_write(dir_fd, name, data[:10]))  # some bytes made it, then no room
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(buildcache, "_write_new", full)
    cell = lstm_graph.load_cell("gru")
    with pytest.raises(BackendError, match=r"the disk holding the build cache .* is full \("):
        cell.compile(input_size=2, hidden_size=3, executor="native")(np.zeros((2, 1, 2), "f4"))
    run = cell.compile(input_size=2, hidden_size=3)
    with pytest.warns(LstmGraphWarning, match="is full"):
        run(np.zeros((2, 1, 2), "float32"))
    assert run.ran_with == "numpy"
    assert names(v1(tmp_path / "cache")) == ["CACHEDIR.TAG"]


# -- settings ---------------------------------------------------------------------------------

@pytest.mark.parametrize("value, mb, seconds", [
    ("inf", 2**20, 86400), ("1e300", 2**20, 86400), ("0.5", 0.5, 0.5), ("1e-300", 1e-300,
                                                                        1e-300)])
def test_huge_settings_are_clamped(monkeypatch, value, mb, seconds):
    monkeypatch.setenv("LSTM_GRAPH_CACHE_MB", value)
    monkeypatch.setenv("LSTM_GRAPH_CC_TIMEOUT", value)
    assert buildcache.max_bytes() == int(mb * 2**20) and buildcache.timeout() == seconds


@pytest.mark.parametrize("value", ["nan", "abc", "0", "-3", "-inf"])
@pytest.mark.parametrize("variable, default", [("LSTM_GRAPH_CACHE_MB", 256),
                                               ("LSTM_GRAPH_CC_TIMEOUT", 120)])
def test_a_setting_that_is_not_a_positive_number_warns_and_uses_the_default(
        monkeypatch, variable, default, value):
    monkeypatch.setenv(variable, value)
    buildcache._warn_once.cache_clear()
    with pytest.warns(LstmGraphWarning) as caught:
        got = buildcache.max_bytes() / 2**20 if variable.endswith("MB") else buildcache.timeout()
    assert got == default
    assert [str(w.message) for w in caught] == [
        f"{variable}='{value}' is not a positive number; using the default {default}"]


def test_infinite_settings_run_and_show_without_a_traceback(tmp_path):
    settings = {"LSTM_GRAPH_CACHE_MB": "inf", "LSTM_GRAPH_CC_TIMEOUT": "1e300"}
    done = cli(NATIVE + out(tmp_path), tmp_path, tmp_path / "cache", **settings)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert '"ran_with": "native"' in done.stdout
    info = cli(["cache", "info"], tmp_path, tmp_path / "cache", **settings)
    assert info.returncode == 0 and info.stderr == "", info.stderr
    assert "builds     1 (" in info.stdout and " MiB of at most 1048576 MiB)" in info.stdout
    nan = cli(["cache", "info"], tmp_path, tmp_path / "cache", LSTM_GRAPH_CACHE_MB="nan")
    assert nan.returncode == 0 and nan.stderr == (
        "warning: LSTM_GRAPH_CACHE_MB='nan' is not a positive number; using the default 256\n")


# -- bounded, shown, cleared ------------------------------------------------------------------

def test_the_least_recently_used_builds_go_when_the_cache_is_full(tmp_path, monkeypatch):
    monkeypatch.setenv("LSTM_GRAPH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LSTM_GRAPH_CACHE_MB", "0.000001")  # room for less than one build
    x = np.zeros((2, 1, 2), "float32")
    for name in ("rnn", "gru", "lstm"):
        lstm_graph.load_cell(name).compile(input_size=2, hidden_size=3, executor="native")(x)
    records = list(v1(tmp_path / "cache").glob("*.json"))
    assert len(records) == 1 and "cell 'lstm'" in records[0].read_text()
    assert len(list(v1(tmp_path / "cache").glob("*.so"))) == 1


def test_a_relative_xdg_cache_home_is_ignored(tmp_path, monkeypatch):
    monkeypatch.delenv("LSTM_GRAPH_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert buildcache.configured() == (tmp_path / ".cache" / "lstm-graph-v1", None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert buildcache.configured() == (tmp_path / "xdg" / "lstm-graph-v1", None)


def test_a_relative_lstm_graph_cache_is_ignored_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("LSTM_GRAPH_CACHE", "relcache")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.warns(LstmGraphWarning, match="LSTM_GRAPH_CACHE is the relative "
                      "path 'relcache', which is ignored: give an absolute one"):
        assert buildcache.configured() == (tmp_path / ".cache" / "lstm-graph-v1", None)


def test_cache_clear_with_a_relative_lstm_graph_cache_clears_no_other_cache(tmp_path):
    """It warned, then cleared the cache in ~/.cache, which it was not asked to."""
    home = {"HOME": str(tmp_path), "XDG_CACHE_HOME": ""}
    assert cli(NATIVE + out(tmp_path), tmp_path, None, **home).returncode == 0
    before = snapshot(tmp_path / ".cache")
    cleared = cli(["cache", "clear"], tmp_path, "relcache", **home)
    assert (cleared.returncode, cleared.stderr) == (1, (
        "LSTM_GRAPH_CACHE is the relative path 'relcache', which is ignored: give an "
        "absolute one; nothing was removed\n"))
    assert snapshot(tmp_path / ".cache") == before and len(before) > 2


def test_the_test_suite_never_uses_the_users_cache():
    directory, _ = buildcache.configured()
    assert "lstm-graph-test-cache-" in str(directory)


def test_cache_info_and_clear(tmp_path):
    cache = tmp_path / "cache"
    # none yet: said ("removed 0 builds from" a directory that was not there)
    assert "(not made yet: the first native build makes it)" in \
        cli(["cache", "info"], tmp_path, cache).stdout
    assert cli(["cache", "clear"], tmp_path, cache).stderr == \
        f"there is no build cache at {v1(cache)} yet; nothing was removed\n"
    assert not cache.exists()
    assert cli(NATIVE + out(tmp_path), tmp_path, cache).returncode == 0
    info = cli(["cache", "info"], tmp_path, cache)
    assert info.returncode == 0
    assert f"directory  {v1(cache)}\n" in info.stdout and "builds     1 (" in info.stdout
    (v1(cache) / f"{'f' * 32}.json").write_text("not a record")  # counted by clear (h85)
    cleared = cli(["cache", "clear"], tmp_path, cache)
    assert cleared.returncode == 0 and cleared.stderr == f"removed 1 build from {v1(cache)}\n"
    assert names(v1(cache)) == ["CACHEDIR.TAG"]
    shown = json.loads(cli(["cache", "info", "--json"], tmp_path, cache).stdout)
    assert (shown["entries"], shown["usable"], shown["problem"], shown["made"]) == \
        (0, True, None, True)


def test_a_compile_says_so_once_in_the_log(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("LSTM_GRAPH_CACHE", str(tmp_path / "cache"))
    x = np.zeros((2, 1, 2), "float32")
    with caplog.at_level("INFO", logger="lstm_graph"):
        for _ in range(2):
            lstm_graph.load_cell("rnn").compile(input_size=2, hidden_size=3, executor="native")(x)
    notes = [r.getMessage() for r in caplog.records if r.name == "lstm_graph"]
    assert notes == ["compiling the native step of cell 'rnn' once (cached in "
                     f"{tmp_path}/cache/lstm-graph-v1)"]


# -- the race of the issue: another user swapping directories while root loads ---------------

_SWAPPER = textwrap.dedent("""\
    #define _GNU_SOURCE
    #include <fcntl.h>
    #include <stdio.h>
    #include <stdlib.h>
    #include <sys/syscall.h>
    #include <time.h>
    #include <unistd.h>
    int main(int argc, char **argv) {  /* swapper A B SECONDS: exchange A and B, count */
        long swaps = 0, tries = 0;
        time_t end = time(NULL) + atoi(argv[3]);
        while (time(NULL) < end) {
            tries++;
            if (syscall(SYS_renameat2, AT_FDCWD, argv[1], AT_FDCWD, argv[2], 2) == 0)
                swaps++;  /* 2: RENAME_EXCHANGE */
        }
        printf("%ld %ld\\n", swaps, tries);
        return 0;
    }
""")
_EVIL = textwrap.dedent("""\
    #include <fcntl.h>
    #include <stddef.h>
    #include <unistd.h>
    __attribute__((constructor)) static void planted(void) {
        close(open("PWNED", O_CREAT | O_WRONLY, 0666));
    }
    void lstm_graph_run(ptrdiff_t a, ptrdiff_t b, ptrdiff_t c, void *d, ptrdiff_t e) {}
    ptrdiff_t lstm_graph_lanes(void) { return 1; }
""")


@needs_root
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux's")
@pytest.mark.parametrize("mode", [0o777, 0o1777])
def test_another_user_swapping_directories_never_gets_a_library_loaded(tmp_path, mode):
    """User 65534 keeps exchanging the cache with a planted copy (a tag, a record for the
    very key root will build, a library with the matching digest that creates PWNED when
    loaded) while root runs: under a directory others can write in (the cache is refused
    there), and under a sticky one (where the kernel refuses the exchange)."""
    cc = str(buildcache.compiler())
    legit = tmp_path / "legit"
    assert cli(["run", "gru", "--sample", "-H", "5", "--executor", "native", "--out",
                str(tmp_path / "y.npz")], tmp_path, legit).returncode == 0
    (record,) = v1(legit).glob("*.json")
    arena = Path(tempfile.mkdtemp(prefix="lstm-graph-race-"))  # user 65534 must reach it
    try:
        arena.chmod(0o711)
        shared = arena / "shared"
        shared.mkdir(mode=0o700)
        shutil.copytree(v1(legit), v1(shared))  # root's own cache, made earlier
        shared.chmod(mode)
        (arena / "evil.c").write_text(_EVIL)
        (arena / "swapper.c").write_text(_SWAPPER)
        subprocess.run([cc, "-shared", "-fPIC", "-o", str(arena / "evil.so"),
                        str(arena / "evil.c")], check=True)
        subprocess.run([cc, "-o", str(arena / "swapper"), str(arena / "swapper.c")], check=True)
        decoy = shared / "decoy"
        decoy.mkdir()
        evil = (arena / "evil.so").read_bytes()
        digest = hashlib.sha256(evil).hexdigest()
        library = f"{record.stem}-{digest[:16]}.so"
        (decoy / library).write_bytes(evil)
        (decoy / "CACHEDIR.TAG").write_bytes((v1(legit) / "CACHEDIR.TAG").read_bytes())
        (decoy / record.name).write_text(json.dumps({"library": library, "sha256": digest,
                                                     "bytes": len(evil)}))
        for path in (decoy, *decoy.iterdir()):
            os.chown(path, 65534, 65534)
        decoy.chmod(0o700)
        (arena / "swapper").chmod(0o755)
        swapper = subprocess.Popen([str(arena / "swapper"), str(v1(shared)), str(decoy), "2"],
                                   stdout=subprocess.PIPE, text=True, user=65534, group=65534)
        runs = []
        while swapper.poll() is None:
            runs.append(cli(["run", "gru", "--sample", "-H", "5", "--executor", "native",
                             "--out", str(tmp_path / "y.npz")], arena, shared))
        swaps, tries = map(int, swapper.communicate(timeout=60)[0].split())
        assert tries > 1000 and runs
        assert all(r.returncode == 0 and "Traceback" not in r.stderr for r in runs)
        assert not (arena / "PWNED").exists()
        if mode == 0o1777:
            assert swaps == 0  # the sticky bit: nobody else may rename root's directory
            assert all("warning" not in r.stderr for r in runs)
        else:
            assert swaps > 0  # the attack ran, and the cache there was refused
            assert all("other users can write in" in warning_of(r.stderr) for r in runs)
    finally:
        shutil.rmtree(arena, ignore_errors=True)


def test_cache_info_says_a_cache_that_cannot_be_made_is_not_usable(tmp_path):
    """On a read-only file system, info promised 'not made yet: the first native build
    makes it', and the next run then warned that it cannot be created."""
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a read-only tmpfs needs root and mount(8)")
    read_only = tmp_path / "ro"
    read_only.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(read_only)],
                      capture_output=True).returncode != 0:
        pytest.skip("this machine cannot mount a tmpfs here")
    try:
        done = cli(["cache", "info"], tmp_path, read_only / "c")
    finally:
        subprocess.run(["umount", str(read_only)], capture_output=True)
    assert done.returncode == 0, done.stderr
    assert f"(not usable: it cannot be created: {read_only} cannot be written in; each run " \
        "compiles into a private temporary directory)" in done.stdout
