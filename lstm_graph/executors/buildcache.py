"""A private, self-healing cache of compiled C libraries, and the compiler runs that fill it.

Where: ``$LSTM_GRAPH_CACHE``, else ``$XDG_CACHE_HOME/lstm-graph``, else
``~/.cache/lstm-graph`` (a relative path in either variable is ignored, as
the XDG specification asks).

- **Private.** The directory is made with mode 0700; before each use its owner
  must be this user and its mode must let nobody else write in it (a directory
  of ours that others can write in is narrowed to 0700). The cache touches only
  the files it names itself (records, libraries, ``tmp-`` work files), so a
  ``$LSTM_GRAPH_CACHE`` that holds other files keeps them. Where no such directory can be had (no
  home, a read-only home, a directory of another user), this process builds
  into a private directory of its own made with ``mkdtemp`` and removed at exit
  (with a one-line warning): never into a shared, world-writable one.
- **Self-healing.** An entry is a library plus a record of its SHA-256 digest
  taken when it was built. A library is loaded only if its bytes match that
  digest; a truncated, garbage or foreign file is removed and rebuilt, never
  ``dlopen``-ed. Files are written to a temporary name, fsynced and renamed
  into place, the library before its record, so a reader sees a whole pair.
- **Keyed** by the source, the compiler and its version, the flags and the CPU.
- **Bounded.** Past ``$LSTM_GRAPH_CACHE_MB`` (default 256) the least recently
  used entries are removed; ``lstm-graph cache info`` and ``lstm-graph cache
  clear`` show and empty it.
- **Compiler runs** have a time limit (``$LSTM_GRAPH_CC_TIMEOUT`` seconds, default 120),
  run in their own process group, and are killed with their children if this
  process is interrupted; a failure, a compiler that writes nothing, a timeout or
  a full disk is a :class:`~lstm_graph.errors.BackendError` and leaves no file.
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from lstm_graph.errors import BackendError, LstmGraphWarning

#: Says when a build is compiled (the command line shows it on a terminal).
log = logging.getLogger("lstm_graph")
#: Work directories older than this (left by a killed process) are removed.
STALE_SECONDS = 3600
#: The names the cache gives its files: a record, a library, a work file or directory.
_RECORD = re.compile(r"[0-9a-f]{32}\.json")
_LIBRARY = re.compile(r"[0-9a-f]{32}-[0-9a-f]{16}\.so")
_WORK = "tmp-"
_LIBRARY_MAGIC = (b"\x7fELF", b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe", b"MZ")


def _setting(variable: str, default: float) -> float:
    """A positive number from the environment, or ``default``."""
    try:
        value = float(os.environ.get(variable, default))
    except ValueError:
        return default
    return value if value > 0 else default


def max_bytes() -> int:
    """Largest total size of the cached libraries before the least recently used go."""
    return int(_setting("LSTM_GRAPH_CACHE_MB", 256) * 2**20)


def timeout() -> float:
    """Seconds one compiler run may take."""
    return _setting("LSTM_GRAPH_CC_TIMEOUT", 120)


def compiler() -> str | None:
    """The C compiler to use: ``$CC``, else the first of cc, gcc, clang; None if none."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name:
            found = shutil.which(name)
            if found:
                return found
    return None


def _run(command: list[str], seconds: float) -> tuple[int, bytes, bytes]:
    """Run a compiler in a process group of its own: ``(status, stdout, stderr)``.

    On a timeout, an interrupt or any other exception the whole group is killed
    (cc and the cc1, as and ld it started) before the exception goes on.
    """
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=seconds)
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
        status, stdout, _ = _run([cc, "--version"], min(10.0, timeout()))
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


def _configured_root() -> tuple[Path | None, str | None]:
    """The cache directory the environment asks for, or None and why there is none."""
    for variable, suffix in (("LSTM_GRAPH_CACHE", ""), ("XDG_CACHE_HOME", "lstm-graph")):
        value = os.environ.get(variable)
        if value and os.path.isabs(value):
            return (Path(value) / suffix if suffix else Path(value)), None
    try:
        home = Path.home()
    except RuntimeError:  # no HOME and no password entry
        return None, "there is no home directory"
    if not home.is_dir():  # a service account's: make nothing there
        return None, f"the home directory {home} does not exist"
    return home / ".cache" / "lstm-graph", None


def _private(path: Path) -> str | None:
    """Make ``path`` a private directory of this user; None if it is one, else why not."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(path)
        if not stat.S_ISDIR(info.st_mode):
            return "it is not a directory"
        if hasattr(os, "getuid") and info.st_uid != os.getuid():
            return "it belongs to another user"
        if info.st_mode & 0o022:  # others could plant a library: narrow it to ours only
            os.chmod(path, 0o700)
            if os.lstat(path).st_mode & 0o022:
                return "its mode lets other users write in it"
        if not os.access(path, os.W_OK | os.X_OK):
            return "it is not writable"
    except OSError as err:
        return err.strerror or str(err)
    return None


@cache
def _process_directory() -> Path:
    """A private directory for this process's builds, removed when it exits."""
    path = Path(tempfile.mkdtemp(prefix="lstm-graph-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@cache
def _warn_once(message: str) -> None:
    warnings.warn(message, LstmGraphWarning, stacklevel=2)


def cache_directory() -> Path:
    """The private directory builds go to (see the module docstring); BackendError if none."""
    root, reason = _configured_root()
    if root is not None:
        reason = _private(root)
        if reason is None:
            return root
    try:
        fallback = _process_directory()
    except OSError as err:
        raise BackendError(f"no private directory for compiled steps: {root or 'the cache'} "
                           f"({reason}) and the temporary directory ({err.strerror}) are not "
                           "usable; set LSTM_GRAPH_CACHE to a directory of yours") from None
    _warn_once(f"the build cache {root or '~/.cache/lstm-graph'} is not usable ({reason}); "
               "compiling into a private temporary directory for this run "
               "(set LSTM_GRAPH_CACHE to keep builds)")
    return fallback


@dataclass(frozen=True)
class Entry:
    """One cached build: its record and library, and when it was last used."""

    key: str
    record: Path
    library: Path
    bytes: int
    used: float


def _ours(path: Path) -> bool:
    """Whether ``path`` has a name the cache gives its files (a record, a library, a
    work file or directory): the cache touches nothing else, so a ``$LSTM_GRAPH_CACHE``
    that also holds other files keeps them."""
    return bool(_RECORD.fullmatch(path.name) or _LIBRARY.fullmatch(path.name)
                or path.name.startswith(_WORK))


def _record_library(directory: Path, record: Path) -> Path:
    """The library a record names: a library name of the cache, in ``directory``."""
    name = str(json.loads(record.read_text())["library"])
    if not _LIBRARY.fullmatch(name):
        raise ValueError(f"not a library of the cache: {name!r}")
    return directory / name


def _entries(directory: Path) -> list[Entry]:
    """Every whole entry, least recently used first; stray files of the cache are removed."""
    entries, referenced = [], set()
    for record in directory.iterdir():
        if not _RECORD.fullmatch(record.name):
            continue
        try:
            library = _record_library(directory, record)
            info = library.stat()
        except (OSError, ValueError, KeyError, TypeError):
            record.unlink(missing_ok=True)
            continue
        referenced.add(library.name)
        entries.append(Entry(record.stem, record, library, info.st_size, info.st_mtime))
    now = time.time()
    for path in directory.iterdir():
        try:
            age = now - path.lstat().st_mtime
        except OSError:
            continue
        if _LIBRARY.fullmatch(path.name) and path.name not in referenced and age > 60:
            path.unlink(missing_ok=True)  # an older build of a rebuilt entry
        elif path.name.startswith(_WORK) and age > STALE_SECONDS:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    return sorted(entries, key=lambda e: e.used)


@dataclass(frozen=True)
class CacheInfo:
    """What ``lstm-graph cache info`` shows."""

    directory: str
    entries: int
    bytes: int
    limit_bytes: int
    compiler: str | None
    compiler_version: str | None


def info() -> CacheInfo:
    """Where the cache is, how many builds it holds and their size."""
    directory = cache_directory()
    entries = _entries(directory)
    cc = compiler()
    return CacheInfo(str(directory), len(entries), sum(e.bytes for e in entries), max_bytes(),
                     cc, compiler_version(cc) if cc else None)


def clear() -> int:
    """Remove every build and work file of the cache (and nothing else that is in its
    directory); return how many builds went."""
    directory = cache_directory()
    count = 0
    for path in directory.iterdir():
        if not _ours(path):
            continue
        count += bool(_RECORD.fullmatch(path.name))
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return count


def _digest(path: Path) -> tuple[str, int] | None:
    """SHA-256 and size of a regular file of this user (None for anything else)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or (hasattr(os, "getuid")
                                              and info.st_uid != os.getuid()):
            return None
        digest = hashlib.sha256()
        with os.fdopen(os.dup(fd), "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest(), info.st_size
    finally:
        os.close(fd)


def _load(directory: Path, key: str) -> ctypes.CDLL | None:
    """The cached library of ``key`` if its bytes match its record; a bad entry is removed."""
    record = directory / f"{key}.json"
    try:
        library = _record_library(directory, record)
        meta = json.loads(record.read_text())
        expected = (str(meta["sha256"]), int(meta["bytes"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        record.unlink(missing_ok=True)
        return None
    if _digest(library) != expected:
        record.unlink(missing_ok=True)
        library.unlink(missing_ok=True)
        return None
    try:
        handle = ctypes.CDLL(str(library))
    except OSError:
        record.unlink(missing_ok=True)
        library.unlink(missing_ok=True)
        return None
    os.utime(library)  # most recently used
    return handle


def _write(path: Path, data: bytes) -> None:
    """``data`` into ``path`` whole: a temporary file beside it, fsynced, renamed."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_WORK, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _compile(cc: str, attempts: Sequence[Sequence[str]], source: str, work: Path) -> bytes:
    """The library ``cc`` makes of ``source`` with the first flags it accepts."""
    c_file, output = work / "step.c", work / "step.so"
    c_file.write_text(source, encoding="utf-8")
    errors = ""
    status = 0
    for flags in attempts:
        try:
            status, _, stderr = _run([cc, *flags, "-o", str(output), str(c_file), "-lm"],
                                     timeout())
        except subprocess.TimeoutExpired:
            raise BackendError(f"the C compiler {cc} took longer than {timeout():g} s on the "
                               "generated step (LSTM_GRAPH_CC_TIMEOUT sets the limit)") from None
        except OSError as err:
            raise BackendError(f"the C compiler {cc} could not be run ({err.strerror})") from None
        if status == 0:
            try:
                data = output.read_bytes()
            except OSError:
                data = b""
            if not data.startswith(_LIBRARY_MAGIC):
                raise BackendError(f"the C compiler {cc} reported success but produced no "
                                   "library")
            return data
        errors = stderr.decode(errors="replace").strip()
    first = next((line for line in errors.splitlines() if "error" in line),
                 errors.splitlines()[0] if errors else f"exit status {status}")
    raise BackendError(f"the C compiler {cc} failed on the generated step ({first.strip()})")


def library(source: str, attempts: Sequence[Sequence[str]], name: str) -> ctypes.CDLL:
    """Compile C ``source`` to a shared library (or reuse the cached build) and load it.

    ``attempts`` are flag sets tried in order until the compiler accepts one; the
    first is part of the key. ``name`` labels the build in its record and in the
    one INFO log line a compile writes (logger ``lstm_graph``). Raises
    :class:`BackendError` when there is no compiler, no private directory, or
    when compiling or writing fails.
    """
    cc = compiler()
    if cc is None:
        raise BackendError("no C compiler (cc, gcc or clang, or $CC) was found")
    directory = cache_directory()
    key = hashlib.sha256("\0".join([source, cc, compiler_version(cc), *attempts[0],
                                    cpu_signature()]).encode()).hexdigest()[:32]
    loaded = _load(directory, key)
    if loaded is not None:
        return loaded
    log.info("compiling %s once (cached in %s)", name, directory)
    try:
        work = Path(tempfile.mkdtemp(dir=directory, prefix=_WORK))
    except OSError as err:
        raise BackendError(f"cannot write in the build cache {directory} "
                           f"({err.strerror})") from None
    try:
        data = _compile(cc, attempts, source, work)
        digest = hashlib.sha256(data).hexdigest()
        library_path = directory / f"{key}-{digest[:16]}.so"
        _write(library_path, data)
        record = {"library": library_path.name, "sha256": digest, "bytes": len(data),
                  "what": name, "compiler": cc, "compiler_version": compiler_version(cc),
                  "flags": list(attempts[0])}
        _write(directory / f"{key}.json", json.dumps(record, indent=1).encode())
        _fsync_directory(directory)
    except OSError as err:
        raise BackendError(f"cannot write the compiled step to the build cache {directory} "
                           f"({err.strerror or err})") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _evict(directory, keep=key)
    loaded = _load(directory, key)
    if loaded is None:
        raise BackendError(f"the compiled step in {directory} could not be loaded")
    return loaded


def _fsync_directory(directory: Path) -> None:
    """Make the renames in ``directory`` durable (where the platform allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _evict(directory: Path, keep: str) -> None:
    """Remove the least recently used entries until the cache fits :func:`max_bytes`."""
    entries = _entries(directory)
    total, limit = sum(e.bytes for e in entries), max_bytes()
    for entry in entries:
        if total <= limit:
            break
        if entry.key == keep:
            continue
        entry.record.unlink(missing_ok=True)
        entry.library.unlink(missing_ok=True)
        total -= entry.bytes
