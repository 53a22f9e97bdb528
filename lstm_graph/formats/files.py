"""Writing output files whole or not at all, never over a special file, never where
another user points.

An output goes to a temporary file in the target's directory and is renamed
into place only once complete, so a failed or interrupted run leaves an
earlier file untouched and no partial file behind. Missing parent directories
are created (and removed again if the write fails). A new file gets the mode
the user's umask allows; a file written over keeps its mode.

Every step works on an open descriptor of the target's directory and never lets
the kernel follow the last component behind our back: the temporary file is made
with ``O_EXCL | O_NOFOLLOW`` and renamed onto the directory entry itself, so a
symbolic link that another user swaps in meanwhile (in ``/tmp``, say) is replaced,
never written through. A symbolic link named as the output is followed (its target
written, the link kept, no directories made for it) only where no other user can
have put it there or change it: its directory is yours or root's and writable by no
one else (its group only if that is your own group), or, as the kernel's
``protected_symlinks`` rule has it, the directory is sticky and the link is yours
or the directory owner's. Any other link is refused, and so is any link to a directory
on the way there by the same rule: the path is walked one directory at a time, each
opened relative to the last (``O_NOFOLLOW``), and missing directories are made only
where no link points.

Only a regular file is ever replaced. A character device (``/dev/null``, a
terminal) or a FIFO (``/dev/stdout`` in a pipe) is written through, so
``--out /dev/stdout`` works; a FIFO that no process reads is refused rather
than waited on. Any other kind of file (a directory, a socket, a block device)
is refused, and so is a path that ends in ``/`` (it names a directory).

The temporary file is named ``.NAME.lstm-graph-XXXXXXXX.tmp`` and locked
(``flock``) while it is written. A write killed where it cannot clean up
(``SIGKILL``, a power cut) leaves it behind; the next write of the same output
removes such leftovers of its name that belong to the user and that no live
process holds (their lock is free), and nothing else.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import math
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from lstm_graph import interrupts
from lstm_graph.errors import OutputError

#: The lists that :func:`recording` is filling now.
_RECORDING: list[list[str]] = []


@contextlib.contextmanager
def recording() -> Iterator[list[str]]:
    """The outputs written whole while it lasts (renamed into place, or written through to
    their device or FIFO), each once, in order: what an interrupted command had written.
    Nothing is kept where nothing records (the Python API)."""
    written: list[str] = []
    _RECORDING.append(written)
    try:
        yield written
    finally:
        _RECORDING.remove(written)


def _record(path: str, whole: bool = True) -> None:
    """``path`` written whole (or, with ``whole=False``, undone: put back as it was)."""
    for written in _RECORDING:
        if path in written:
            written.remove(path)
        if whole:
            written.append(path)


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` (see the module's docstring); return the path."""
    with open_output(path) as stream:
        stream.write(data)
    return Path(path)


def finite(value: object) -> object:
    """``value`` with every float that is NaN or infinite (a diverged run's losses) as
    ``None``: JSON has no such numbers (``null`` then).

    >>> finite({"evals": [[1, 0.5], [2, float("nan")]], "loss": float("inf")})
    {'evals': [[1, 0.5], [2, None]], 'loss': None}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def json_text(data: object) -> str:
    """``data`` as the JSON every command prints or writes: keys sorted, indented, a number
    that is not finite as ``null`` (so the same data gives the same bytes, always valid)."""
    return json.dumps(finite(data), indent=2, sort_keys=True, allow_nan=False)


def write_section(path: Path, start: str, end: str, text: str) -> Path:
    """Put ``text`` (which begins with ``start`` and ends with ``end``) in place of the part
    of the file ``path`` between those markers, keeping the rest; a file without them gets
    it at its end, a new file holds only it, and a file with one marker without the other
    is refused (all after a start marker with no end was lost). How the benchmarks update
    their tables in ``docs/`` without touching the prose."""
    page = path.read_text(encoding="utf-8") if path.exists() else f"{start}\n{end}\n"
    if start not in page and end not in page:  # a page without the section: at its end
        return write_atomic(path, (page + text).encode("utf-8"))
    before, found, rest = page.partition(start)
    if not found or end not in rest:  # the rest of the page would be lost
        raise OutputError(f"{path}: holds {end if not found else start} without "
                          f"{start if not found else end} after it; mend the markers, so "
                          "that the section is replaced and nothing else")
    _, _, after = rest.partition(end)
    return write_atomic(path, (before + text + after).encode("utf-8"))


def undone(path: str | Path) -> None:
    """Say that an output written whole was put back as it was (or removed) since."""
    _record(str(path), whole=False)


def write_npz(path: str | Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Save arrays as an ``.npz`` file, streamed into place (no copy in memory). A
    terminal is refused: an ``.npz`` is binary."""
    save: Callable[..., None] = np.savez  # its stubs mistake the arrays for its flags
    with open_output(path, binary=True) as stream:
        save(stream, allow_pickle=False,
             **{name: np.asarray(value) for name, value in arrays.items()})
    return Path(path)



@contextlib.contextmanager
def open_output(path: str | Path, binary: bool = False) -> Iterator[BinaryIO]:
    """A stream for ``path``, written as the module's docstring says; ``binary`` output
    is refused on a terminal."""
    with _placed(path) as place:
        if place.status is not None and _written_through(place.status.st_mode):
            with _write_through(place, place.status.st_mode, binary) as stream:
                yield stream
            return
        with _replacing(place) as stream:
            yield stream


#: FIFOs :func:`check_output` found a reader on, by (device, inode): the descriptor it
#: opened each with, held until the output is written into it (closing it sooner would
#: end the reader's input; held, the reader waits for the output).
_HELD: dict[tuple[int, int], int] = {}


def release_held() -> None:
    """Close the FIFOs :func:`check_output` holds (their readers' input ends): for work
    that failed before writing into them."""
    while _HELD:
        os.close(_HELD.popitem()[1])


def check_output(path: str | Path) -> None:
    """Refuse now, before any work, what :func:`open_output` would refuse at the end (a
    directory it cannot write in, a socket, a link another user may have put there, a
    FIFO no process is reading), without writing anything: a temporary file is made and
    removed again, and so are the directories made for it. A device is not opened; a
    FIFO with a reader is opened and held open until the output is written into it."""
    with _placed(path, probe=True) as place:
        if place.status is not None and _written_through(place.status.st_mode):
            key = (place.status.st_dev, place.status.st_ino)
            if stat.S_ISFIFO(place.status.st_mode) and key not in _HELD:
                _HELD[key] = _open_through(place)
            return
        with interrupts.held():  # made and removed, Ctrl-C or not
            fd, entry = create_locked(place.directory, place.name, "tmp", place.shown,
                                      place.where)
            os.unlink(entry, dir_fd=place.directory)
            os.close(fd)


def refuse_inputs(outputs: Mapping[str, str | Path | None],
                  inputs: Mapping[str, str | Path | None],
                  advice: Mapping[str, str] | None = None) -> None:
    """Refuse an output (``{"--out": path}``) that is the same file as one of ``inputs``
    (``{"--input": path}``): the same file on the disk, whatever name or link leads to
    it, so that writing it would replace what the command reads. ``None`` is no file.
    ``advice`` says what to do for an output the user does not name (``{"the state dict
    beside --out": "name --out otherwise"}``); else "give LABEL another file"."""
    read: dict[tuple[int, int], tuple[str, str | Path]] = {}
    for label, value in inputs.items():
        key = None if value is None else _identity(value)
        if key is not None and value is not None:
            read.setdefault(key, (label, value))
    for label, value in outputs.items():
        key = None if value is None else _identity(value)
        if key is not None and key in read:
            source, name = read[key]
            named = "" if source.endswith(f" {name}") else f" {name}"  # CELL mine.cell
            what = f"the {source}" if str(name) == str(value) else \
                f"the same file as the {source}{named}"
            todo = (advice or {}).get(label, f"give {label} another file")
            raise OutputError(f"{label} {value} is {what}: writing it would replace that "
                              f"input; {todo}")


def _identity(path: str | Path) -> tuple[int, int] | None:
    """The device and inode of the regular file ``path`` leads to, or None."""
    try:
        status = os.stat(path)
    except (OSError, ValueError):
        return None
    return (status.st_dev, status.st_ino) if stat.S_ISREG(status.st_mode) else None


#: The longest part of an output's name that its temporary files repeat (a name's limit
#: is 255 bytes, and ``.``, the tag and the suffix take the rest).
_NAME_KEPT = 200
#: What every temporary file or directory lstm-graph makes beside an output is tagged.
_TAG = "lstm-graph"
#: The most symbolic links followed from one output path.
_MAX_LINKS = 40
#: How a directory on an output's path is opened.
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def leftover_name(name: str, kind: str) -> str:
    """A new name for a temporary ``kind`` (``tmp``: a file, ``parts``: a directory)
    made while the output ``name`` is written: ``.NAME.lstm-graph-XXXXXXXX.KIND``."""
    return f".{name[:_NAME_KEPT]}.{_TAG}-{secrets.token_hex(4)}.{kind}"


def create_locked(directory: int, name: str, kind: str, shown: str, where: str
                  ) -> tuple[int, str]:
    """Make a temporary ``kind`` for the output ``name`` in ``directory`` (a descriptor of
    the directory ``where``): a file (``tmp``, mode 0600) or a directory (``parts``, mode
    0700), named by :func:`leftover_name`, never through a link, and locked (``flock``)
    for as long as the returned descriptor is open, so that :func:`sweep_leftovers` knows
    it is alive. Returns the descriptor and the entry's name; ``shown`` names the output
    in errors. Leftovers of earlier writes of ``name`` are swept first."""
    sweep_leftovers(directory, name, kind)
    for _ in range(100):
        entry = leftover_name(name, kind)
        try:
            if kind == "tmp":
                fd = os.open(entry, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o600, dir_fd=directory)
            else:
                os.mkdir(entry, 0o700, dir_fd=directory)
        except FileExistsError:  # taken: another name
            continue
        except OSError as err:
            raise OutputError(f"{shown}: cannot write in {where} ({err.strerror or err})") \
                from None
        if kind != "tmp":
            try:
                fd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                             | os.O_CLOEXEC, dir_fd=directory)
            except OSError:  # swept (or replaced) before it was opened: another name
                continue
        fcntl.flock(fd, fcntl.LOCK_EX)  # waits only while a sweep looks at it
        if _is_entry(directory, entry, os.fstat(fd)):
            return fd, entry
        os.close(fd)  # removed by a sweep before it was locked: another name
    raise OutputError(f"{shown}: cannot make a temporary file in {where} (every name tried "
                      "was taken)")


def sweep_leftovers(directory: int, name: str, kind: str) -> None:
    """Remove, from ``directory`` (a descriptor), what writes of the output ``name`` killed
    on the way left behind: entries named as :func:`leftover_name` names them for
    ``name`` and ``kind``, that belong to this user, are as :func:`create_locked` makes
    them (a file no one else may read or write; a directory as private, holding only the
    parts ``chunked`` writes in it, ``0.npy``, ``1.npy`` …) and that no live process holds
    locked. Anything else is left whole (a user's directory of that name once lost the
    files in it, a user's file of that name once went)."""
    pattern = re.compile(rf"\.{re.escape(name[:_NAME_KEPT])}\.{_TAG}-[0-9a-f]{{8}}\."
                         rf"{re.escape(kind)}")
    try:
        entries = [entry for entry in os.listdir(directory) if pattern.fullmatch(entry)]
    except OSError:
        return
    for entry in entries:
        with contextlib.suppress(OSError):
            _remove_if_dead(directory, entry, kind == "parts")


def _remove_if_dead(directory: int, entry: str, folder: bool) -> None:
    """Remove ``entry`` (see :func:`sweep_leftovers`) if it is ours and unlocked."""
    status = os.stat(entry, dir_fd=directory, follow_symlinks=False)
    kind_ok = stat.S_ISDIR(status.st_mode) if folder else stat.S_ISREG(status.st_mode)
    if not kind_ok or status.st_uid != os.geteuid() or status.st_mode & 0o077:
        return
    fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
                 | (os.O_DIRECTORY if folder else 0), dir_fd=directory)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # its writer is alive
        if not _is_entry(directory, entry, os.fstat(fd)):
            return
        if folder:
            inside = os.listdir(fd)
            for inner in inside:
                part = os.stat(inner, dir_fd=fd, follow_symlinks=False)
                if not _PART.fullmatch(inner) or not stat.S_ISREG(part.st_mode) or \
                        part.st_uid != os.geteuid() or part.st_mode & 0o077:
                    return  # not only what a write of ours puts there: left whole
            for inner in inside:
                os.unlink(inner, dir_fd=fd)
            os.rmdir(entry, dir_fd=directory)
        else:
            os.unlink(entry, dir_fd=directory)
    finally:
        os.close(fd)


#: The name of a part a write in parts puts in its directory (``chunked``'s arrays).
_PART = re.compile(r"[0-9]+\.npy")


def _is_entry(directory: int, entry: str, status: os.stat_result) -> bool:
    """Whether ``entry`` of ``directory`` is still the file ``status`` describes, and ours."""
    try:
        now = os.stat(entry, dir_fd=directory, follow_symlinks=False)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (status.st_dev, status.st_ino) and \
        status.st_uid == os.geteuid()


@dataclass
class _Place:
    """Where an output goes: an entry ``name`` of the open ``directory``, with what is
    there now (``status``, None: nothing); ``through``: a device or FIFO reached through
    a trusted link, opened by following it; ``shown``: the path as the user gave it;
    ``where``: the directory's path, for messages."""

    directory: int
    name: str
    status: os.stat_result | None
    through: bool
    shown: str
    where: str


@contextlib.contextmanager
def _placed(path: str | Path, probe: bool = False) -> Iterator[_Place]:
    """The :class:`_Place` of ``path``, its missing directories made (and removed again
    if what follows fails, or in any case for a ``probe``); the directory's descriptor
    closed on the way out."""
    text = os.fspath(path)
    if not text:
        raise OutputError("the output path is empty; give a file name")
    parent, name = os.path.split(text)
    if name in ("", ".", ".."):
        raise OutputError(f"{text} names a directory; give the path of a file (in it, "
                          "such as " + os.path.join(text, "out") + ")")
    created: list[Path] = []
    try:
        directory = _walk(parent or ".", text, created)
        place = _find(text, directory, parent or ".", name)
    except BaseException:
        _remove(created)
        raise
    try:
        yield place
    except BaseException:
        _remove(created)
        raise
    finally:
        os.close(place.directory)
    if probe:
        _remove(created)


def _walk(path: str, shown: str, created: list[Path] | None,
          start: int | None = None) -> int:
    """An open descriptor of the directory ``path`` (relative to ``start``, else to the
    working directory), reached one component at a time, through trusted symbolic links
    only (see the module's docstring: a link another user may have put in any directory
    on the way, not only beside the output, would send the output where that user
    chose). With ``created``, missing directories are made, and listed there (their
    paths as given), but never where a link points."""
    where = os.path.join("/" if os.path.isabs(path) else ".", "")
    try:
        directory = os.open(where, _DIRECTORY, dir_fd=start)
    except OSError as err:
        raise OutputError(f"{shown}: cannot write in {where} ({err.strerror or err})") \
            from None
    parts = [p for p in path.split("/") if p not in ("", ".")]
    # made: the path walked, for messages; linked: how many of the parts a link gave
    made, links, linked, via = "/" if os.path.isabs(path) else "", 0, 0, ""
    try:
        while parts:
            part = parts.pop(0)
            from_link, linked = linked > 0, max(0, linked - 1)
            made = os.path.join(made, part)
            try:
                status = os.stat(part, dir_fd=directory, follow_symlinks=False)
            except FileNotFoundError:
                if created is None or from_link:
                    raise OutputError(f"{shown}: {made} does not exist" + (
                        f" (the symbolic link {via} points there)" if from_link else "")) \
                        from None
                with contextlib.suppress(FileExistsError):  # made meanwhile: walked as found
                    os.mkdir(part, dir_fd=directory)
                    created.append(Path(made))
                status = os.stat(part, dir_fd=directory, follow_symlinks=False)
            if stat.S_ISLNK(status.st_mode):
                if others_may_replace(os.fstat(directory), status):
                    raise OutputError(
                        f"{shown}: {made} is a symbolic link in a directory other users can "
                        "write, so it is not followed (another user may have put it there); "
                        "give a path through directories only you can change")
                links += 1
                if links > _MAX_LINKS:
                    raise OutputError(f"{shown}: too many symbolic links to follow")
                target, via = os.readlink(part, dir_fd=directory), made
                inner = [p for p in target.split("/") if p not in ("", ".")]
                parts, linked = inner + parts, len(inner) + linked
                made = os.path.dirname(made)
                if os.path.isabs(target):
                    os.close(directory)
                    directory = os.open("/", _DIRECTORY)
                    made = "/"
                continue
            if not stat.S_ISDIR(status.st_mode):
                raise OutputError(f"{shown}: {made} is not a directory")
            inner_fd = os.open(part, _DIRECTORY | os.O_NOFOLLOW, dir_fd=directory)
            os.close(directory)
            directory = inner_fd
    except OutputError:
        os.close(directory)
        raise
    except OSError as err:  # made unreadable, replaced meanwhile, a name too long
        os.close(directory)
        raise OutputError(f"{shown}: cannot write in {made} ({err.strerror or err})") \
            from None
    except BaseException:
        os.close(directory)
        raise
    return directory


def _find(shown: str, directory: int, parent: str, name: str) -> _Place:
    """Follow ``parent``/``name`` (``directory``: ``parent`` open) to the place to write,
    through trusted links only (see the module's docstring)."""
    try:
        for _ in range(_MAX_LINKS):
            try:
                status: os.stat_result | None = os.stat(name, dir_fd=directory,
                                                        follow_symlinks=False)
            except FileNotFoundError:
                status = None
            if status is None or not stat.S_ISLNK(status.st_mode):
                if status is not None and not stat.S_ISREG(status.st_mode) and \
                        not _written_through(status.st_mode):
                    raise OutputError(f"{shown}: is {_kind(status.st_mode)}, not a regular "
                                      "file; give the path of a file to write")
                return _Place(directory, name, status, False, shown, parent)
            where = os.fstat(directory)
            if others_may_replace(where, status):
                raise OutputError(f"{shown}: {name} is a symbolic link in a directory other "
                                  "users can write, so it is not followed (another user may "
                                  "have put it there); give the path of the file to write")
            try:
                followed: os.stat_result | None = os.stat(name, dir_fd=directory)
            except FileNotFoundError:
                followed = None
            if followed is not None and _written_through(followed.st_mode):
                return _Place(directory, name, followed, True, shown, parent)
            if followed is not None and not stat.S_ISREG(followed.st_mode):
                raise OutputError(f"{shown}: is {_kind(followed.st_mode)}, not a regular "
                                  "file; give the path of a file to write")
            target = os.readlink(name, dir_fd=directory)
            within, name = os.path.split(target)
            if name in ("", ".", ".."):
                raise OutputError(f"{shown}: is a symbolic link to a directory; give the "
                                  "path of a file to write")
            inner = _walk(within or ".", shown, None, directory)
            parent = within if os.path.isabs(within) else os.path.join(parent, within)
            os.close(directory)
            directory = inner
    except OSError as err:  # a name too long, a loop of links
        os.close(directory)
        raise OutputError(f"{shown}: cannot write ({err.strerror or err})") from None
    except BaseException:
        os.close(directory)
        raise
    os.close(directory)
    raise OutputError(f"{shown}: too many symbolic links to follow")


def others_may_replace(directory: os.stat_result, link: os.stat_result) -> bool:
    """Whether a user other than this one (and root) may have put the link ``link`` in
    ``directory``, or may change it: the module's docstring says when."""
    me = os.geteuid()
    if directory.st_uid not in (me, 0):
        return True
    writers = stat.S_IWOTH | (stat.S_IWGRP if directory.st_gid != os.getegid() else 0)
    if not directory.st_mode & writers:
        return False
    sticky = bool(directory.st_mode & stat.S_ISVTX)
    return not (sticky and link.st_uid in (me, directory.st_uid))


def written_through(path: str | Path) -> bool:
    """Whether ``path`` is a character device or FIFO (``/dev/null``, ``/dev/stdout`` in a
    pipe), which an output is written into whatever its name says."""
    try:
        return _written_through(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def _written_through(mode: int) -> bool:
    """A character device or FIFO: written into, never replaced."""
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


@contextlib.contextmanager
def _replacing(place: _Place) -> Iterator[BinaryIO]:
    """A temporary file beside the output, renamed onto its entry when complete."""
    directory, name, shown = place.directory, place.name, place.shown
    mode = stat.S_IMODE(place.status.st_mode) if place.status is not None else \
        _new_file_mode()
    noted: list[int] = []  # Ctrl-C held until the try that removes the file is entered
    previous = interrupts.hold(noted)
    try:
        fd, entry = create_locked(directory, name, "tmp", shown, place.where)
        stream = os.fdopen(fd, "wb")
    except BaseException:
        interrupts.restore(previous, noted)
        raise
    try:
        interrupts.restore(previous, noted)  # one that came meanwhile is raised here
        yield stream
        stream.flush()
        os.fsync(fd)
        os.fchmod(fd, mode)
        _check_still_replaceable(directory, name, shown)
        os.replace(entry, name, src_dir_fd=directory, dst_dir_fd=directory)
        _record(shown)
    except BaseException as err:
        if _is_entry(directory, entry, os.fstat(fd)):
            os.unlink(entry, dir_fd=directory)
        if isinstance(err, OSError):
            raise OutputError(f"{shown}: cannot write ({err.strerror or err})") from None
        raise
    finally:  # the lock goes with it; where a write failed (a full disk), closing flushes
        with contextlib.suppress(OSError):  # what it holds again, and fails again: said
            stream.close()


@contextlib.contextmanager
def _write_through(place: _Place, mode: int, binary: bool) -> Iterator[BinaryIO]:
    """Write into the character device or FIFO (``mode``) at ``place``: it is never
    replaced."""
    path = place.shown
    fd = _open_through(place)
    held = _HELD.pop((place.status.st_dev, place.status.st_ino), None) \
        if place.status is not None and stat.S_ISFIFO(mode) else None
    if held is not None:  # the reader's input ends once this output's descriptor closes
        os.close(held)
    if not _written_through(os.fstat(fd).st_mode):  # something else was put there meanwhile
        os.close(fd)
        raise OutputError(f"{path}: changed while it was opened; nothing was written")
    # opened without waiting; write with the usual blocking semantics
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    if binary and os.isatty(fd):
        os.close(fd)
        raise OutputError(f"{path}: is a terminal, and this output is binary (.npz); give a "
                          "file, or redirect it: --out /dev/stdout > y.npz")
    try:
        with io.BufferedWriter(_Unseekable(fd)) as stream:
            yield stream
        _record(path)
    except OSError as err:
        raise OutputError(f"{path}: cannot write ({err.strerror or err})") from None


class _Unseekable(io.RawIOBase):
    """A device or FIFO as a stream that cannot seek, whatever the device says (``/dev/null``
    claims it can, and a zip written there would be laid out for a file)."""

    def __init__(self, fd: int):
        self.fd = fd

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return os.write(self.fd, data)

    def close(self) -> None:
        if not self.closed:
            os.close(self.fd)
        super().close()


def _open_through(place: _Place) -> int:
    """A descriptor of the device or FIFO at ``place``, opened for writing without waiting
    (a FIFO no process is reading is refused)."""
    flags = os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC | \
        (0 if place.through else os.O_NOFOLLOW)
    try:
        return os.open(place.name, flags, dir_fd=place.directory)
    except OSError as err:
        if err.errno == errno.ENXIO and place.status is not None and \
                stat.S_ISFIFO(place.status.st_mode):
            raise OutputError(f"{place.shown}: is a FIFO that no process is reading; start "
                              "the reader first, or give a file") from None
        if err.errno == errno.ELOOP:
            raise OutputError(f"{place.shown}: became a symbolic link while it was opened; "
                              "nothing was written") from None
        raise OutputError(f"{place.shown}: cannot write ({err.strerror or err})") from None


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISBLK, "a block device"))
    return next((words for test, words in kinds if test(mode)), "a special file")


def _remove(created: list[Path]) -> None:
    """Remove directories this write created, deepest first, if still empty."""
    for folder in reversed(created):
        with contextlib.suppress(OSError):
            folder.rmdir()


def _new_file_mode() -> int:
    """0666 less the user's umask: what the file would get from ``open``."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _check_still_replaceable(directory: int, name: str, shown: str) -> None:
    """Just before the rename: what is at the entry now must still be a regular file or
    nothing (something else may have been put there meanwhile; the rename would replace
    even a link, never follow it, but a link is somebody's and is left alone)."""
    try:
        mode = os.stat(name, dir_fd=directory, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        kind = "a symbolic link" if stat.S_ISLNK(mode) else _kind(mode)
        raise OutputError(f"{shown}: became {kind} while it was written; nothing was "
                          "replaced")
