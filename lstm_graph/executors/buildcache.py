"""A private, self-healing cache of compiled C libraries, and the compiler runs that fill it.

Where: a directory ``lstm-graph-v1`` that this tool makes itself inside a base:
``$LSTM_GRAPH_CACHE``, else ``$XDG_CACHE_HOME``, else ``~/.cache`` (a relative
path in either variable is ignored, as the XDG specification asks; a warning says so
for ``$LSTM_GRAPH_CACHE``).

- **Only its own directory.** The tool creates ``lstm-graph-v1`` with mode 0700
  and a ``CACHEDIR.TAG`` (https://bford.info/cachedir/, which also tells backup
  tools to skip it), under a temporary name renamed into place, so it never
  exists half made. An ``lstm-graph-v1`` without that tag, that is not a
  directory, that belongs to another user or that others can write in is not
  ours: it is never changed, and this process builds into a private ``mkdtemp``
  directory of its own, removed at exit (with a one-line warning). The base is
  created if missing, but never changed, swept or cleared.
- **Nothing loaded from a place another user can write.** A symbolic link in the
  path is followed only where no other user can have put it or change it (the rule
  an output's link is followed by); then every component of the real path, from
  ``/``, is opened with ``O_NOFOLLOW`` relative to its parent and must belong to
  root or to this user and be writable by nobody else unless it has the sticky
  bit (OpenSSH's rule for safe paths; ``/tmp`` passes). The compiler is run only
  from such a place too: one that is not is passed over with a warning; and with a
  ``PATH`` of only the directories nobody else can write in (where it finds the
  assembler and the linker), the others left out with a warning. The
  directory is then used only through that one descriptor (``dir_fd``), and a
  library is hashed and loaded from the same open file (``/proc/self/fd/N``), so
  a rename between the check and the load cannot change what is loaded.
- **Self-healing.** An entry is a library plus a record of its SHA-256 digest
  taken when it was built. A library is loaded only if its bytes match that
  digest and it has the symbols its caller needs; anything else is removed and
  rebuilt, never used. A build is written into its own ``tmp-`` work directory,
  fsynced and renamed into place, the library before its record.
- **Running builds are left alone.** Each work directory is locked (``flock``)
  while its build runs; clearing and tidying remove a work directory only when
  they can take its lock, that is, when the process that made it is gone, and only
  one that holds the mark every work directory gets as it is made (a directory of
  the same kind of name that lstm-graph did not make is left alone). A lock
  on the cache directory itself keeps tidying out of the moment a work
  directory is made and the moment a build is published.
- **Keyed** by the source, the compiler and its version, the flags and the CPU.
- **Bounded.** Past ``$LSTM_GRAPH_CACHE_MB`` (default 256, at most 1 TiB) the least
  recently used entries are removed; ``lstm-graph cache info`` and ``lstm-graph
  cache clear`` show and empty it.
- **Compiler runs** have a time limit (``$LSTM_GRAPH_CC_TIMEOUT`` seconds, default
  120, at most a day), run in their own process group with ``TMPDIR`` in their
  work directory, and are killed with their children if this process is
  interrupted; a failure, a compiler that writes nothing or a library without the
  needed symbols, a timeout or a full disk is a
  :class:`~lstm_graph.errors.BackendError` and leaves no file.
"""

from __future__ import annotations

import atexit
import ctypes
import errno
import hashlib
import json
import logging
import math
import os
import platform
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from lstm_graph import interrupts
from lstm_graph.errors import BackendError, LstmGraphWarning
from lstm_graph.formats.files import others_may_replace

if sys.platform != "win32":
    import fcntl

#: Says when a build is compiled (the command line shows it on a terminal).
log = logging.getLogger("lstm_graph")
#: The directory the tool makes in the base and the only one it ever changes.
NAME = "lstm-graph-v1"
#: The file that marks :data:`NAME` as made by this tool (and as a cache, for backup tools).
MARKER = "CACHEDIR.TAG"
_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"
_MARKER_TEXT = (_SIGNATURE + b"\n# This file is a cache directory tag created by lstm-graph.\n"
                b"# For information about cache directory tags, see:\n"
                b"#\thttps://bford.info/cachedir/\n")
#: The names the cache gives its files: a record, a library, a work directory.
_RECORD = re.compile(r"[0-9a-f]{32}\.json")
_LIBRARY = re.compile(r"[0-9a-f]{32}-[0-9a-f]{16}\.so")
_WORK = re.compile(r"tmp-[0-9a-f]{16}")
#: The file a work directory holds from its making (under the lock a sweep takes): a
#: sweep or ``clear`` removes only the ``tmp-`` directories that hold it, never one of
#: the same kind of name that lstm-graph did not make.
WORK_MARK = ".lstm-graph-work"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_LIBRARY_MAGIC = (b"\x7fELF", b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe", b"MZ")
#: Defaults and largest values of the two settings (a larger one, ``inf`` too, is clamped).
DEFAULT_MB, LARGEST_MB = 256.0, float(2**20)  # 1 TiB
DEFAULT_TIMEOUT, LARGEST_TIMEOUT = 120.0, 86400.0  # a day
#: How long a build waits for another process's tidying of the cache before giving up.
LOCK_SECONDS = 60.0
#: Below this much free space (MiB) a failed compile is put down to a full disk.
_ROOM_MIB = 1.0
_RECORD_BYTES = 1 << 16

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW
#: A component that is only passed through: ``O_PATH`` needs only search permission.
_PASS = (os.O_PATH | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW) if hasattr(os, "O_PATH") \
    else _DIR
_READ = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | _NOFOLLOW  # a FIFO never blocks us
_NEW = os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW
_PROC_FD = Path("/proc/self/fd")


class _Refused(Exception):
    """A directory the cache may not use; the message says why, naming the component."""


def _setting(variable: str, default: float, largest: float) -> float:
    """A positive number from the environment, clamped to ``largest``; ``default`` (with a
    one-line warning) for a value that is not a positive number."""
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0:  # NaN, zero, negative, not a number
        _warn_once(f"{variable}={text!r} is not a positive number; using the default "
                   f"{default:g}")
        return default
    return min(value, largest)


def max_bytes() -> int:
    """Largest total size of the cached libraries before the least recently used go."""
    return int(_setting("LSTM_GRAPH_CACHE_MB", DEFAULT_MB, LARGEST_MB) * 2**20)


def timeout() -> float:
    """Seconds one compiler run may take."""
    return _setting("LSTM_GRAPH_CC_TIMEOUT", DEFAULT_TIMEOUT, LARGEST_TIMEOUT)


def compiler() -> str | None:
    """The C compiler to use: ``$CC``, else the first of cc, gcc, clang found in the
    directories of ``PATH`` no other user can write in (:func:`_search_path`); None if
    none. One that another user could have put there or could change
    (:func:`_unsafe_program`) is passed over with a warning, as is a ``$CC`` that names
    no program."""
    return _compiler(os.environ.get("CC") or "", os.environ.get("PATH") or "")


@cache
def _compiler(cc: str, path: str) -> str | None:
    for name in (cc, "cc", "gcc", "clang"):
        if not name:
            continue
        # $CC as the user gives it; the others from the PATH directories no other user can
        # write in, so one put in such a directory before /usr/bin does not hide the rest
        found = shutil.which(name, path=(path or None) if name == cc
                             else _search_path(path or os.defpath))
        found = None if found is None else os.path.abspath(found)  # what is checked is run
        if found is None:
            if name == cc:
                _warn_once(f"CC={cc!r} names no program found (give one program, without "
                           "arguments); looking for cc, gcc and clang instead")
            continue
        reason = _unsafe_program(Path(found))
        if reason is None:
            return found
        _warn_once(f"the C compiler {found} is not used: {_why_unused(reason)}")
    return None


def _why_unused(reason: str) -> str:
    """:func:`_unsafe_program`'s ``reason`` with what it means for running the program
    (a link's reason says that already)."""
    return reason if "another user may have put" in reason else \
        f"{reason}, so another user could have put it there or could change it"


def trusted_program(name: str) -> str | None:
    """The program ``name`` (Graphviz's ``dot``, say) found on ``PATH``'s directories that
    no other user can write in (:func:`_search_path`), and itself passing
    :func:`_unsafe_program`; None where there is none (one passed over is warned of)."""
    found = shutil.which(name, path=_search_path(os.environ.get("PATH") or ""))
    if found is None:
        return None
    reason = _unsafe_program(Path(found))
    if reason is not None:
        _warn_once(f"the program {found} is not used: {_why_unused(reason)}")
        return None
    return found


def compiler_environment(**extra: str) -> dict[str, str]:
    """This process's environment for a compiler run, with ``extra`` and a ``PATH`` of only
    the directories no other user can put a program in (:func:`_search_path`): the
    compiler driver looks up the assembler and the linker there. GCC's variables that
    name directories (:data:`COMPILER_DIRECTORIES`) keep only such directories too, and
    those that make it write files elsewhere (:data:`COMPILER_WRITES`) are left out."""
    environment = {key: value for key, value in os.environ.items()
                   if key not in COMPILER_WRITES}
    environment["PATH"] = _search_path(os.environ.get("PATH") or "")
    for variable, searched in COMPILER_DIRECTORIES.items():
        if variable in environment:
            environment[variable] = _search_path(environment[variable], variable, searched)
    return {**environment, **extra}


#: The programs found on :func:`_search_path`, in its warnings' words.
SEARCHED = "the programs lstm-graph runs (the C compiler's assembler and linker, Graphviz's dot)"
#: GCC's and the linker's variables naming directories it takes programs, headers or
#: libraries from: what each is searched for, in :func:`_search_path`'s warnings.
COMPILER_DIRECTORIES = {"COMPILER_PATH": "the C compiler's programs",
                        "GCC_EXEC_PREFIX": "the C compiler's programs",
                        "LIBRARY_PATH": "the libraries a build links",
                        "CPATH": "the headers a build includes",
                        "C_INCLUDE_PATH": "the headers a build includes",
                        "LD_RUN_PATH": "the libraries a built library loads (its rpath)"}
#: GCC's variables that make it write a file the tool did not ask for (make's list of
#: dependencies): left out of the compiler's environment.
COMPILER_WRITES = ("DEPENDENCIES_OUTPUT", "SUNPRO_DEPENDENCIES")


@cache
def _search_path(path: str, variable: str = "PATH", searched: str = SEARCHED) -> str:
    """``path`` (a ``PATH``, or another list of directories in ``variable``) without the
    directories another user could have put a program in, or could change
    (:func:`_unsafe_program`'s rule, which a directory must pass as a program does: no
    writing by others, sticky bit or not), nor relative ones (the working directory): a
    warning names each left out; those that do not exist go silently."""
    kept = []
    for entry in path.split(os.pathsep):
        if not os.path.isabs(entry):
            _warn_once(f"the {variable} entry {entry or '(empty: the working directory)'!r} "
                       f"is not searched for {searched}: it is relative, so the directory a "
                       "command runs in would provide them")
            continue
        if not os.path.isdir(entry):
            continue
        reason = _unsafe_program(Path(entry))
        if reason is None:
            kept.append(entry)
        else:
            _warn_once(f"the {variable} entry {entry} is not searched for {searched}: "
                       f"{reason}, so another user could put one there")
    return os.pathsep.join(kept)


def _unsafe_program(program: Path) -> str | None:
    """Why running ``program`` (or a program in the directory ``program``) would run what
    another user may have written, or None: its links must be ones no other user can have
    put in place (:func:`_resolve`), and the program and every directory above it must
    pass :func:`_unsafe`'s rule."""
    try:
        real = _resolve(program.absolute())
        info = os.stat(real)
    except _Refused as refused:
        return str(refused)
    except OSError as err:
        return _open_error(err, str(program))
    if info.st_uid not in (0, os.geteuid()):
        return f"{real} belongs to another user (uid {info.st_uid})"
    if info.st_mode & 0o022:
        return f"other users can write {real} (mode {stat.S_IMODE(info.st_mode):04o})"
    for directory in reversed(real.parents):
        try:
            reason = _unsafe(os.stat(directory), str(directory))
        except OSError as err:
            return _open_error(err, str(directory))
        if reason:
            return reason
    return None


def _run(command: list[str], seconds: float,
         env: dict[str, str] | None = None) -> tuple[int, bytes, bytes]:
    """Run a compiler in a process group of its own: ``(status, stdout, stderr)``.

    On a timeout, an interrupt or any other exception the whole group is killed
    (cc and the cc1, as and ld it started) before the exception goes on. It waits in
    short slices: a signal the kernel hands to another thread (OpenBLAS's, say) only
    sets a flag that the main thread acts on when it next runs Python, so one long
    wait would sit through a Ctrl-C until the compiler's time limit. A Ctrl-C or SIGTERM
    while the compiler starts is held until the process is known, then acted on (it left
    the compiler running when it came between its start and the ``try``).
    """
    held: list[int] = []
    previous = interrupts.hold(held)
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   stdin=subprocess.DEVNULL, start_new_session=True, env=env)
    except BaseException:
        interrupts.restore(previous, held)
        raise
    deadline = time.monotonic() + seconds
    try:
        interrupts.restore(previous, held)
        while True:
            try:  # retrying loses no output (subprocess's documented contract)
                stdout, stderr = process.communicate(
                    timeout=max(0.0, min(0.2, deadline - time.monotonic())))
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    raise subprocess.TimeoutExpired(command, seconds) from None
    except BaseException:
        _kill(process)
        raise
    return process.returncode, stdout, stderr


def _kill(process: subprocess.Popen[bytes]) -> None:
    """Kill a compiler run and everything it started."""
    try:
        if hasattr(os, "killpg"):
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
    except OSError:
        pass
    process.wait()


@cache
def compiler_version(cc: str) -> str:
    """The first line ``cc --version`` prints ("unknown" if it prints nothing or fails)."""
    try:
        status, stdout, _ = _run([cc, "--version"], min(10.0, timeout()),
                                 compiler_environment())
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    lines = stdout.decode(errors="replace").strip().splitlines()
    return lines[0] if status == 0 and lines else "unknown"


@cache
def cpu_signature() -> str:
    """What a build tuned with ``-march=native`` depends on: the CPU's model and features."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(sorted({ln for ln in lines if ln.startswith(("model name", "flags"))}))
    except OSError:
        return f"{platform.machine()} {platform.processor()}"


@cache
def _warn_once(message: str) -> None:
    warnings.warn(message, LstmGraphWarning, stacklevel=2)


# -- where the cache is, and whether it may be used ---------------------------------------

def configured() -> tuple[Path | None, str | None]:
    """The cache directory the environment asks for (``BASE/lstm-graph-v1``), or None and
    why there is none. Nothing is looked at on disk but the home directory."""
    for variable in ("LSTM_GRAPH_CACHE", "XDG_CACHE_HOME"):
        value = os.environ.get(variable)
        if value and os.path.isabs(value):
            return Path(value) / NAME, None
        if value and variable == "LSTM_GRAPH_CACHE":  # ours: say so (XDG's: ignore quietly)
            _warn_once(f"LSTM_GRAPH_CACHE is the relative path {value!r}, which is ignored: "
                       "give an absolute one")
    given = os.environ.get("HOME")
    if given is not None and not given:  # HOME= (unset in a script): Path.home() says /
        return None, "there is no home directory ($HOME is empty)"
    try:
        home = Path.home()
    except RuntimeError:  # no HOME and no password entry
        return None, "there is no home directory"
    if not home.is_absolute():  # HOME=relhome or .: it would be read from the root down
        return None, f"the home directory {str(home)!r} is a relative path"
    if not home.is_dir():  # a service account's: make nothing there
        return None, f"the home directory {home} does not exist"
    return home / ".cache" / NAME, None


def _unsafe(info: os.stat_result, shown: str) -> str | None:
    """Why a component of the path is unsafe (another user could rename what is in it), or
    None: it must be a directory of root or of this user that nobody else can write in,
    unless its sticky bit stops others renaming what is not theirs."""
    if not stat.S_ISDIR(info.st_mode):
        return f"{shown} is not a directory"
    if info.st_uid not in (0, os.geteuid()):
        return f"{shown} belongs to another user (uid {info.st_uid})"
    if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
        return (f"other users can write in {shown} (mode {stat.S_IMODE(info.st_mode):04o}, "
                "no sticky bit)")
    return None


def _open_error(err: OSError, shown: str) -> str:
    if err.errno == errno.ELOOP:
        return f"{shown} is a symbolic link"
    if err.errno == errno.ENOTDIR:
        return f"{shown} is not a directory"
    return f"{shown} cannot be opened ({err.strerror})"


def _resolve(path: Path) -> Path:
    """Absolute ``path`` with its symbolic links followed, where no other user can have put
    a link or can change it (:func:`~lstm_graph.formats.files.others_may_replace`, the rule
    an output's link is followed by); any other link is :class:`_Refused`. What does not
    exist yet is taken as the directory it will be made as, when the cache is created
    (``missing/../c`` is ``c``, as ``realpath`` reads it)."""
    real, parts, links = Path("/"), list(path.parts[1:]), 0
    while parts:
        part = parts.pop(0)
        if part in ("", "."):
            continue
        if part == "..":  # of the directory reached, links followed: as the kernel reads it
            real = real.parent
            continue
        try:
            link = os.lstat(real / part)
        except FileNotFoundError:  # made later, as a directory: '..' after it is real
            real = real / part
            continue
        except NotADirectoryError:
            raise _Refused(f"{real} is not a directory") from None
        except OSError as err:
            raise _Refused(_open_error(err, str(real / part))) from None
        if not stat.S_ISLNK(link.st_mode):
            if parts and not stat.S_ISDIR(link.st_mode):  # 'file/..' is no path to the kernel
                raise _Refused(f"{real / part} is not a directory")
            real = real / part
            continue
        links += 1
        try:
            mayreplace = others_may_replace(os.stat(real), link)
            target = "" if links > 40 or mayreplace else os.readlink(real / part)
        except OSError as err:  # a link that cannot be read (/proc/1/cwd): not followed
            raise _Refused(_open_error(err, str(real / part))) from None
        if links > 40 or mayreplace:
            raise _Refused(f"{real / part} is a symbolic link " + (
                "chain too long to follow" if links > 40 else "that another user may have "
                "put there or may change, so it is not followed"))
        if os.path.isabs(target):
            real = Path("/")
        parts = [*Path(target).parts[1 if os.path.isabs(target) else 0:], *parts]
    return real


def _open_path(real: Path, create: bool) -> int | None:
    """A descriptor of directory ``real`` (a path without symbolic links) after each
    component, from ``/``, passed :func:`_unsafe`; missing components are made (mode 0700)
    when ``create``, else None."""
    if os.name != "posix":
        raise _Refused("the build cache needs a POSIX system")
    fd, shown = -1, Path("/")
    try:
        fd = os.open("/", _PASS)
        for part in ("", *real.parts[1:]):
            if part:
                shown = shown / part
                try:
                    child = os.open(part, _PASS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        return None
                    try:
                        os.mkdir(part, 0o700, dir_fd=fd)
                    except FileExistsError:
                        pass
                    except OSError as err:
                        raise _Refused(f"{shown} cannot be created ({err.strerror})") from None
                    child = os.open(part, _PASS, dir_fd=fd)
                os.close(fd)
                fd = child
            reason = _unsafe(os.fstat(fd), str(shown))
            if reason:
                raise _Refused(reason)
        opened, fd = fd, -1
        return opened
    except OSError as err:
        raise _Refused(_open_error(err, str(shown))) from None
    finally:
        if fd >= 0:
            os.close(fd)


def _not_ours(info: os.stat_result) -> str | None:
    """Why an existing :data:`NAME` is not the tool's own directory (its tag aside)."""
    if stat.S_ISLNK(info.st_mode):
        return "it is a symbolic link"
    if not stat.S_ISDIR(info.st_mode):
        return "it is not a directory"
    if info.st_uid != os.geteuid():
        return f"it belongs to another user (uid {info.st_uid})"
    if info.st_mode & 0o022:
        return f"its mode {stat.S_IMODE(info.st_mode):04o} lets other users write in it"
    return None


def _marked(fd: int) -> bool:
    """Whether the directory ``fd`` holds this tool's :data:`MARKER`."""
    try:
        marker = os.open(MARKER, _READ, dir_fd=fd)
    except OSError:
        return False
    try:
        info = os.fstat(marker)
        return (stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid()
                and os.read(marker, len(_MARKER_TEXT)) == _MARKER_TEXT)
    finally:
        os.close(marker)


def _claim(base: int) -> int:
    """A descriptor of :data:`NAME` in ``base`` if it is the tool's own directory and
    can be written in; ``FileNotFoundError`` if there is none, :class:`_Refused` if it
    is not ours or not writable."""
    reason = _not_ours(os.stat(NAME, dir_fd=base, follow_symlinks=False))
    if reason:
        raise _Refused(reason)
    try:
        fd = os.open(NAME, _DIR, dir_fd=base)
    except OSError as err:
        raise _Refused(_open_error(err, "it")) from None
    try:
        reason = _not_ours(os.fstat(fd))
        if reason is None and not _marked(fd):
            reason = f"it has no {MARKER} of lstm-graph, so lstm-graph did not make it"
        if reason is None and not os.access(".", os.W_OK | os.X_OK, dir_fd=fd):
            reason = "it is not writable"
        if reason:
            raise _Refused(reason)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _create(base: int) -> None:
    """Make :data:`NAME` in ``base``: a directory of mode 0700 holding :data:`MARKER`, made
    under a temporary name and renamed into place only if the name is still free."""
    temporary = f"{NAME}.new-{secrets.token_hex(8)}"
    try:
        os.mkdir(temporary, 0o700, dir_fd=base)
    except OSError as err:
        raise _Refused(f"it cannot be created ({err.strerror})") from None
    try:
        fd = os.open(temporary, _DIR, dir_fd=base)
        try:
            os.fchmod(fd, 0o700)  # ours, just made: whatever the umask
            os.close(_write_new(fd, MARKER, _MARKER_TEXT))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.stat(NAME, dir_fd=base, follow_symlinks=False)
        except FileNotFoundError:
            os.rename(temporary, NAME, src_dir_fd=base, dst_dir_fd=base)
            _fsync_directory(base)
    except OSError as err:
        if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):  # another process was first
            raise _Refused(f"it cannot be created ({err.strerror})") from None
    finally:
        _remove(base, temporary)


@dataclass(frozen=True)
class _Place:
    """An open directory builds go to: the cache, or this process's private one. ``path``
    is how messages name it; ``real`` (checked, no symbolic links) is what the compiler is
    given and, where there is no ``/proc/self/fd``, what a library is loaded by."""

    path: Path
    real: Path
    fd: int
    kept: bool = True  # builds here stay for later processes (not a private directory's)


def _open_cache(path: Path, create: bool) -> _Place | None:
    """The cache at ``path`` (``BASE/lstm-graph-v1``), made if missing when ``create``;
    None if it does not exist and ``create`` is false; :class:`_Refused` if unusable (one
    that cannot be written in, on a read-only disk say, included)."""
    real = _resolve(path.parent)
    base = _open_path(real, create)
    if base is None:
        return None
    try:
        try:
            return _Place(path, real / NAME, _claim(base))
        except FileNotFoundError:
            if not create:
                return None
        _create(base)
        return _Place(path, real / NAME, _claim(base))
    except OSError as err:
        raise _Refused(_open_error(err, "it")) from None
    finally:
        os.close(base)


@cache
def _private_directory() -> tuple[Path, int]:
    """A private directory for this process's builds in the temporary directory (which
    must pass the same checks), removed when the process exits."""
    parent = _resolve(Path(tempfile.gettempdir()).absolute())
    base = _open_path(parent, create=False)
    if base is None:
        raise _Refused(f"{parent} does not exist")
    name = f"lstm-graph-{secrets.token_hex(8)}"
    try:
        os.mkdir(name, 0o700, dir_fd=base)
        fd = os.open(name, _DIR, dir_fd=base)
    except OSError as err:
        os.close(base)
        raise _Refused(f"{parent} is not writable ({err.strerror})") from None
    atexit.register(_remove_private, base, name, fd)
    return parent / name, fd


def private_directory() -> Path:
    """A private directory in the temporary directory (which must pass the cache's
    checks), removed when the process exits: for files a child process is given by path
    (the benchmark's preloaded library). BackendError where there is none."""
    try:
        path, _ = _private_directory()
    except _Refused as refused:
        raise BackendError(f"no private temporary directory: {refused}") from None
    return path


def _remove_private(base: int, name: str, fd: int) -> None:
    try:
        _empty(fd)
        os.rmdir(name, dir_fd=base)
    except OSError:
        pass
    finally:
        os.close(fd)
        os.close(base)


def _build_place() -> _Place:
    """Where this process builds: the cache, else (with a one-line warning) a private
    temporary directory; BackendError if neither can be had."""
    path, reason = configured()
    if path is not None:
        try:
            place = _open_cache(path, create=True)
            if place is not None:
                return place
        except _Refused as refused:
            reason = str(refused)
    shown = path or f"~/.cache/{NAME}"
    try:
        private, fd = _private_directory()
    except _Refused as refused:
        raise BackendError(f"no private directory for compiled steps: the build cache {shown} "
                           f"is not usable ({reason}) and neither is the temporary directory "
                           f"({refused}); set LSTM_GRAPH_CACHE to a directory of yours"
                           ) from None
    _warn_once(f"the build cache {shown} is not usable ({reason}); compiling into a private "
               "temporary directory for this run (set LSTM_GRAPH_CACHE to keep builds)")
    return _Place(private, private, os.dup(fd), kept=False)


# -- files and directories, always relative to an open directory --------------------------

def _write_new(dir_fd: int, name: str, data: bytes) -> int:
    """A new file ``name`` (mode 0600) holding ``data``, fsynced; its descriptor, open for
    reading and writing. Nothing is left on a failure."""
    fd = os.open(name, _NEW, 0o600, dir_fd=dir_fd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _remove(dir_fd, name)
        raise
    return fd


def _empty(fd: int) -> None:
    """Remove everything in the open directory ``fd`` (the cache's work directories are
    flat; a compiler's own subdirectory is emptied the same way)."""
    for entry in list(os.scandir(fd)):
        _remove(fd, entry.name)


def _remove(dir_fd: int, name: str) -> None:
    """Remove ``name`` in ``dir_fd`` (a directory with what it holds); gone already is fine."""
    try:
        if stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            sub = os.open(name, _DIR, dir_fd=dir_fd)
            try:
                _empty(sub)
            finally:
                os.close(sub)
            os.rmdir(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def _discard(dir_fd: int, name: str) -> bool:
    """Remove the file ``name`` (never a directory); whether it went."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:  # gone already, or a directory the cache did not make
        return False
    return True


def _identity(dir_fd: int, name: str) -> tuple[int, int] | None:
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _unlink_if(dir_fd: int, name: str, identity: tuple[int, int] | None) -> None:
    """Remove ``name`` only if it is still the file we looked at (callers hold the
    exclusive lock, so nothing is published between the look and the removal)."""
    if identity is not None and _identity(dir_fd, name) == identity:
        try:
            os.unlink(name, dir_fd=dir_fd)
        except OSError:
            pass


def _fsync_directory(fd: int) -> None:
    """Make the renames in the directory ``fd`` durable (where the platform allows it)."""
    try:
        readable = os.open(".", _DIR, dir_fd=fd)
    except OSError:
        return
    try:
        os.fsync(readable)
    except OSError:
        pass
    finally:
        os.close(readable)


@contextmanager
def _locked(place: _Place, exclusive: bool) -> Iterator[None]:
    """Hold the cache directory's lock: shared while a build makes its work directory or
    publishes, exclusive while work directories, libraries and records are removed."""
    fd = os.open(".", _DIR, dir_fd=place.fd)  # a description of our own: threads differ
    try:
        operation = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        deadline = time.monotonic() + LOCK_SECONDS
        while True:
            try:
                fcntl.flock(fd, operation | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise BackendError(f"the build cache {place.path} stayed locked by another "
                                       f"process for {LOCK_SECONDS:g} s") from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)


@dataclass(frozen=True)
class _Work:
    """A build's work directory, locked by this process until it is removed."""

    path: Path
    fd: int


@contextmanager
def _work(place: _Place) -> Iterator[_Work]:
    """A new ``tmp-`` work directory in ``place``, locked for the build and removed after."""
    with _locked(place, exclusive=False):  # no tidying between the mkdir and the lock
        name = f"tmp-{secrets.token_hex(8)}"
        os.mkdir(name, 0o700, dir_fd=place.fd)
        fd = os.open(name, _DIR, dir_fd=place.fd)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(os.open(WORK_MARK, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600, dir_fd=fd))
    try:
        yield _Work(place.real / name, fd)
    finally:
        try:
            _empty(fd)
            os.rmdir(name, dir_fd=place.fd)
        except OSError:
            pass
        finally:
            os.close(fd)


def _remove_dead_work(place: _Place) -> int:
    """Remove the work directories (those holding :data:`WORK_MARK`) whose lock can be
    taken (their builders are gone); return how many running builds were left alone. Call
    with the exclusive lock held."""
    running = 0
    for entry in list(os.scandir(place.fd)):
        if not _WORK.fullmatch(entry.name) or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            fd = os.open(entry.name, _DIR, dir_fd=place.fd)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            running += 1
            os.close(fd)
            continue
        try:
            if not stat.S_ISREG(os.stat(WORK_MARK, dir_fd=fd, follow_symlinks=False).st_mode):
                continue  # not a work directory of ours (the finally closes it)
            _empty(fd)
            os.rmdir(entry.name, dir_fd=place.fd)
        except OSError:
            pass
        finally:
            os.close(fd)
    return running


# -- entries: a record and its library ----------------------------------------------------

@dataclass(frozen=True)
class _Record:
    """What a record says of its library, and which file the record was."""

    library: str
    sha256: str
    bytes: int
    identity: tuple[int, int]


def _read_record(dir_fd: int, name: str) -> tuple[_Record | None, tuple[int, int] | None]:
    """A record of the cache and its identity; ``(None, identity)`` for a broken one,
    ``(None, None)`` for none."""
    try:
        fd = os.open(name, _READ, dir_fd=dir_fd)
    except FileNotFoundError:
        return None, None
    except OSError:
        return None, _identity(dir_fd, name)
    try:
        info = os.fstat(fd)
        identity = info.st_dev, info.st_ino
        if not stat.S_ISREG(info.st_mode) or info.st_size > _RECORD_BYTES:
            return None, identity
        meta = json.loads(os.read(fd, _RECORD_BYTES))
        library, sha256, size = meta["library"], meta["sha256"], meta["bytes"]
        if (isinstance(library, str) and _LIBRARY.fullmatch(library)
                and library.startswith(name[:32]) and isinstance(sha256, str)
                and _SHA256.fullmatch(sha256) and type(size) is int):
            return _Record(library, sha256, size, identity), identity
        return None, identity
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None, identity
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Entry:
    """One cached build: its record and library names, size, and when it was last used."""

    key: str
    record: _Record
    bytes: int
    used: float


def _scan(place: _Place) -> tuple[list[Entry], list[tuple[str, tuple[int, int] | None]], set[str]]:
    """Every whole entry (least recently used first), the broken records, and the names of
    the libraries in the directory."""
    entries, broken, libraries = [], [], set()
    for item in os.scandir(place.fd):
        if _LIBRARY.fullmatch(item.name):
            libraries.add(item.name)
        if not _RECORD.fullmatch(item.name):
            continue
        record, identity = _read_record(place.fd, item.name)
        try:
            info = os.stat(record.library, dir_fd=place.fd, follow_symlinks=False) \
                if record else None
        except OSError:
            info = None
        if record is None or info is None or not stat.S_ISREG(info.st_mode):
            broken.append((item.name, identity))
            continue
        entries.append(Entry(item.name[:32], record, info.st_size, info.st_mtime))
    return sorted(entries, key=lambda e: e.used), broken, libraries


def _tidy(place: _Place, keep: str) -> None:
    """After a build: remove dead work directories, broken records, libraries no record
    names, and the least recently used entries past :func:`max_bytes`."""
    with _locked(place, exclusive=True):
        _remove_dead_work(place)
        entries, broken, libraries = _scan(place)
        for name, identity in broken:
            _unlink_if(place.fd, name, identity)
        for name in libraries - {e.record.library for e in entries}:
            _discard(place.fd, name)  # an older build of a rebuilt entry
        total, limit = sum(e.bytes for e in entries), max_bytes()
        for entry in entries:
            if total <= limit:
                break
            if entry.key != keep:
                _unlink_if(place.fd, f"{entry.key}.json", entry.record.identity)
                _discard(place.fd, entry.record.library)
                total -= entry.bytes


# -- info and clear -------------------------------------------------------------------------

@dataclass(frozen=True)
class CacheInfo:
    """What ``lstm-graph cache info`` shows."""

    directory: str
    usable: bool
    problem: str | None
    entries: int
    bytes: int
    limit_bytes: int
    compiler: str | None
    compiler_version: str | None
    made: bool = True  # False: not there yet (the first native build makes it)


def info() -> CacheInfo:
    """Where the cache is, whether it can be used (and why not), how many builds it holds
    and their size. Nothing on disk is made or changed."""
    path, problem = configured()
    entries: list[Entry] = []
    made = False
    if path is not None:
        try:
            place = _open_cache(path, create=False)
        except _Refused as refused:
            place, problem = None, str(refused)
        made = place is not None
        if place is not None:
            try:
                entries = _scan(place)[0]
            finally:
                os.close(place.fd)
        elif problem is None:  # not made yet: can the first build make it?
            problem = _cannot_make(path)
    cc = compiler()
    return CacheInfo(str(path or f"~/.cache/{NAME}"), problem is None, problem, len(entries),
                     sum(e.bytes for e in entries), max_bytes(), cc,
                     compiler_version(cc) if cc else None, made)


def _cannot_make(path: Path) -> str | None:
    """Why the cache directory ``path``, not there yet, could not be made (its nearest
    directory that is there cannot be written in: a read-only file system), or None."""
    nearest = path.parent
    while not nearest.exists() and nearest != nearest.parent:
        nearest = nearest.parent
    if os.access(nearest, os.W_OK | os.X_OK):
        return None
    return f"it cannot be created: {nearest} cannot be written in"


@dataclass(frozen=True)
class Cleared:
    """What ``lstm-graph cache clear`` did."""

    directory: Path
    builds: int  # entries removed
    running: int  # work directories of running builds, left alone
    made: bool = True  # False: there was no cache there (nothing to remove)


def clear() -> Cleared:
    """Remove every build and dead work directory of the cache (and nothing else, in it or
    around it); BackendError if the configured directory is not the tool's own."""
    relative = os.environ.get("LSTM_GRAPH_CACHE")
    if relative and not os.path.isabs(relative):  # the cache it falls back to is not asked for
        raise BackendError(f"LSTM_GRAPH_CACHE is the relative path {relative!r}, which is "
                           "ignored: give an absolute one; nothing was removed")
    path, problem = configured()
    if path is None:
        raise BackendError(f"there is no build cache to clear ({problem})")
    try:
        place = _open_cache(path, create=False)
    except _Refused as refused:
        raise BackendError(f"the build cache {path} is not usable ({refused}); nothing was "
                           "removed") from None
    if place is None:
        return Cleared(path, 0, 0, made=False)
    try:
        with _locked(place, exclusive=True):
            running = _remove_dead_work(place)
            builds = len(_scan(place)[0])  # whole builds, as info counts them
            for item in list(os.scandir(place.fd)):
                if _RECORD.fullmatch(item.name) or _LIBRARY.fullmatch(item.name):
                    _discard(place.fd, item.name)  # broken records, orphans: removed too
        return Cleared(path, builds, running)
    except OSError as err:
        raise BackendError(f"cannot clear the build cache {path} ({err.strerror})") from None
    finally:
        os.close(place.fd)


# -- loading and building -------------------------------------------------------------------

#: Every loaded library's descriptor stays open for the life of the process: glibc's
#: ``dlopen`` matches a name it has loaded before, so ``/proc/self/fd/N`` must never name
#: another file later (and the inode must not be reused while it is mapped).
_KEPT: list[int] = []
#: The libraries this process loaded, by (cache directory, key): each is opened once.
_LOADED: dict[tuple[int, int, str], ctypes.CDLL] = {}
_KEY_LOCKS: dict[tuple[int, int, str], threading.Lock] = {}
_GUARD = threading.Lock()
_BUILDING = [0.0, 0.0, 0.0]  # building() in seconds: all builds, not kept, failed


@dataclass(frozen=True)
class Building:
    """Seconds this process has spent compiling libraries the cache did not hold (what a
    first run at a new size holds that the next runs do not: ``run`` says so); of them the
    seconds of builds not kept for later runs (those made in a private temporary
    directory, where the cache is not usable, and those that failed); and of those, the
    failed ones'."""

    seconds: float
    unkept: float
    failed: float

    def __sub__(self, before: Building) -> Building:
        """What was spent since ``before``."""
        return Building(self.seconds - before.seconds, self.unkept - before.unkept,
                        self.failed - before.failed)


def building() -> Building:
    """This process's :class:`Building` so far."""
    with _GUARD:
        return Building(*_BUILDING)


def _dlopen(fd: int, path: Path) -> ctypes.CDLL:
    """Load the library open as ``fd`` (the very file that was checked); by its checked path
    where there is no ``/proc/self/fd``."""
    handle = ctypes.CDLL(str(_PROC_FD / str(fd)) if _PROC_FD.is_dir() else str(path))
    _KEPT.append(fd)
    return handle


def _sha256(fd: int) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    os.lseek(fd, 0, os.SEEK_SET)
    while block := os.read(fd, 1 << 20):
        digest.update(block)
        size += len(block)
    return digest.hexdigest(), size


def _missing(handle: ctypes.CDLL, symbols: Sequence[str]) -> str | None:
    return next((s for s in symbols if not hasattr(handle, s)), None)


def _lacks(cc: str, symbol: str) -> BackendError:
    return BackendError(f"the C compiler {cc} built a library that lacks {symbol} (not a "
                        "usable step)")


def _drop(place: _Place, record: tuple[int, int] | None, key: str, library: str | None,
          library_identity: tuple[int, int] | None) -> None:
    """Remove a bad entry, only if its files are still the ones found bad."""
    with _locked(place, exclusive=True):
        _unlink_if(place.fd, f"{key}.json", record)
        if library is not None:
            _unlink_if(place.fd, library, library_identity)


def _load(place: _Place, key: str, symbols: Sequence[str], cc: str) -> ctypes.CDLL | None:
    """The cached library of ``key`` if its bytes match its record; a bad entry is removed
    (BackendError if it loads but lacks one of ``symbols``)."""
    record, identity = _read_record(place.fd, f"{key}.json")
    if record is None:
        if identity is not None:
            _drop(place, identity, key, None, None)
        return None
    try:
        fd = os.open(record.library, _READ, dir_fd=place.fd)
    except OSError:
        _drop(place, identity, key, None, None)
        return None
    try:
        info = os.fstat(fd)
        library_identity = info.st_dev, info.st_ino
        good = (stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid()
                and not info.st_mode & 0o022
                and _sha256(fd) == (record.sha256, record.bytes))
        handle = _dlopen(fd, place.real / record.library) if good else None
    except OSError:
        handle = None
    if handle is None:
        os.close(fd)
        _drop(place, identity, key, record.library, library_identity)
        return None
    missing = _missing(handle, symbols)
    if missing:
        _drop(place, identity, key, record.library, library_identity)
        raise _lacks(cc, missing)
    try:
        os.utime(fd)  # most recently used
    except OSError:
        pass
    return handle


def _free_mib(place: _Place) -> float:
    try:
        info = os.fstatvfs(place.fd)
    except OSError:
        return math.nan
    return info.f_bavail * info.f_frsize / 2**20


def _full(place: _Place) -> BackendError:
    return BackendError(f"the disk holding the build cache {place.path} is full "
                        f"({_free_mib(place):.1f} MiB free)")


def _compile(cc: str, attempts: Sequence[Sequence[str]], source: str, work: _Work,
             place: _Place) -> tuple[bytes, Sequence[str]]:
    """The library ``cc`` makes of ``source`` with the first flags it accepts, and those."""
    os.close(_write_new(work.fd, "step.c", source.encode()))
    # its temporary files die with it
    environment = compiler_environment(TMPDIR=str(work.path))
    errors = ""
    status = 0
    for flags in attempts:
        command = [cc, *flags, "-o", str(work.path / "step.so"), str(work.path / "step.c"), "-lm"]
        try:
            status, _, stderr = _run(command, timeout(), environment)
        except subprocess.TimeoutExpired:
            raise BackendError(f"the C compiler {cc} took longer than {timeout():g} s on the "
                               "generated step (LSTM_GRAPH_CC_TIMEOUT sets the limit)") from None
        except OSError as err:
            raise BackendError(f"the C compiler {cc} could not be run ({err.strerror})") from None
        if status == 0:
            return _output(cc, work), flags
        errors = stderr.decode(errors="replace").strip()
    if os.strerror(errno.ENOSPC) in errors or _free_mib(place) < _ROOM_MIB:
        raise _full(place)
    first = next((line for line in errors.splitlines() if "error" in line),
                 errors.splitlines()[0] if errors else f"exit status {status}")
    raise BackendError(f"the C compiler {cc} failed on the generated step ({first.strip()})")


def _output(cc: str, work: _Work) -> bytes:
    """What the compiler wrote: a regular file that starts as a library does."""
    blocks = []
    try:
        fd = os.open("step.so", _READ, dir_fd=work.fd)
    except OSError:
        pass
    else:
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                while block := os.read(fd, 1 << 20):
                    blocks.append(block)
        finally:
            os.close(fd)
    data = b"".join(blocks)
    if not data.startswith(_LIBRARY_MAGIC):
        raise BackendError(f"the C compiler {cc} reported success but produced no library")
    return data


def _build(place: _Place, cc: str, attempts: Sequence[Sequence[str]], source: str, key: str,
           what: str, symbols: Sequence[str]) -> ctypes.CDLL:
    """Compile, load and check, then publish the entry (the library before its record)."""
    log.info("compiling %s once (cached in %s)", what, place.path)
    try:
        with _work(place) as work:
            data, flags = _compile(cc, attempts, source, work, place)
            digest = hashlib.sha256(data).hexdigest()
            name = f"{key}-{digest[:16]}.so"
            fd = _write_new(work.fd, "library.part", data)
            try:
                handle = _dlopen(fd, work.path / "library.part")
            except OSError as err:
                os.close(fd)
                raise BackendError(f"the library the C compiler {cc} built cannot be loaded "
                                   f"({err})") from None
            missing = _missing(handle, symbols)
            if missing:
                raise _lacks(cc, missing)
            record = {"library": name, "sha256": digest, "bytes": len(data), "what": what,
                      "compiler": cc, "compiler_version": compiler_version(cc),
                      "flags": list(flags)}
            os.close(_write_new(work.fd, "record.part", json.dumps(record, indent=1).encode()))
            with _locked(place, exclusive=False):
                os.rename("library.part", name, src_dir_fd=work.fd, dst_dir_fd=place.fd)
                os.rename("record.part", f"{key}.json", src_dir_fd=work.fd,
                          dst_dir_fd=place.fd)
            _fsync_directory(place.fd)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise _full(place) from None
        raise BackendError(f"cannot write the compiled step to the build cache {place.path} "
                           f"({err.strerror or err})") from None
    try:
        _tidy(place, keep=key)
    except (OSError, BackendError):  # the build is done; tidying waits for the next one
        pass
    return handle


def library(source: str, attempts: Sequence[Sequence[str]], name: str,
            symbols: Sequence[str] = ()) -> ctypes.CDLL:
    """Compile C ``source`` to a shared library (or reuse the cached build) and load it.

    ``attempts`` are flag sets tried in order until the compiler accepts one; the
    first is part of the key. ``name`` labels the build in its record and in the
    one INFO log line a compile writes (logger ``lstm_graph``). ``symbols`` are
    the functions the caller will look up: a library without one is removed and
    is an error. Raises :class:`BackendError` when there is no compiler, no
    private directory, or when compiling, writing or loading fails.
    """
    cc = compiler()
    if cc is None:
        raise BackendError("no C compiler (cc, gcc or clang, or $CC) was found")
    key = hashlib.sha256("\0".join([source, cc, compiler_version(cc), *attempts[0],
                                    cpu_signature()]).encode()).hexdigest()[:32]
    place = _build_place()
    try:
        info = os.fstat(place.fd)
        memo = (info.st_dev, info.st_ino, key)
        with _GUARD:
            lock = _KEY_LOCKS.setdefault(memo, threading.Lock())
        with lock:
            handle = _LOADED.get(memo)
            if handle is None:
                handle = _load(place, key, symbols, cc)
                if handle is None:
                    began, built, kept = time.perf_counter(), False, False
                    try:
                        handle = _build(place, cc, attempts, source, key, name, symbols)
                        built, kept = True, place.kept
                    finally:
                        spent = time.perf_counter() - began
                        with _GUARD:
                            _BUILDING[0] += spent
                            _BUILDING[1] += 0.0 if kept else spent
                            _BUILDING[2] += 0.0 if built else spent
                _LOADED[memo] = handle
            missing = _missing(handle, symbols)
            if missing:
                raise _lacks(cc, missing)
            return handle
    finally:
        os.close(place.fd)
