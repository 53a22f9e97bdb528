"""``--dask ADDRESS``: where shards and training runs go.

``local`` starts an in-process :class:`distributed.LocalCluster` (a scheduler in this
process and one single-threaded worker process per CPU core), closed when the command
ends; anything else is the address of a running scheduler (``tcp://host:port``, or
``host:port``). Either way the workers are asked, before any work, whether they can
import lstm-graph, and the command refuses to start where one cannot (a shard sent there
would fail on arrival). Reaching the scheduler (its handshake and first answer included),
waiting for a first worker and asking the workers are all done within one time limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import signal
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import dask
from distributed import CancelledError, Client, Future, LocalCluster, as_completed, wait
from distributed.comm import parse_address
from distributed.comm.registry import backends
from distributed.deploy.spec import SpecCluster

from lstm_graph.distributed import DaskError
from lstm_graph.distributed.jobs import worker_version
from lstm_graph.errors import LstmGraphWarning, printable

#: ``--dask`` for an in-process cluster sized to this machine.
LOCAL = "local"
#: Seconds to reach a scheduler and find a worker there that runs lstm-graph.
TIMEOUT = 10.0
#: Seconds past the time limit that reaching a scheduler may take before what answered
#: counts as no Dask scheduler: Dask gives up on an address where nothing accepts the
#: connection at the limit itself, so a start still waiting a moment later is connected
#: to something that does not speak Dask's protocol (a web server, say).
GRACE = 1.0
#: Dask settings while lstm-graph is its client (and, with ``local``, its scheduler and
#: workers): shards carry their rows of ``x`` in the task itself (so the scheduler can
#: resend them if a worker dies), which Dask would otherwise warn about as a "large
#: graph"; and Dask keeps its last 1,000 messages under 1 MB for debugging, which would
#: keep up to 1,000 shards' inputs alive in memory.
SETTINGS = {"distributed.admin.large-graph-warning-threshold": "1 PiB",
            "distributed.admin.low-level-log-length": 0}
_HOST_PORT = re.compile(r"^[^\s:/]+:[0-9]+$|^\[[0-9a-fA-F:.]+\]:[0-9]+$")
#: One label of a host name (1 to 63 characters, no hyphen at either end): a name is
#: labels joined by single dots (``a..b`` is none, and the resolver refused it with a
#: UnicodeError).
_LABEL = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")


def _is_host(host: str) -> bool:
    """A host name, an IPv4 address, or an IPv6 address in brackets."""
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    return len(host) <= 253 and all(_LABEL.match(label) for label in host.split("."))


def check_address(address: str) -> str:
    """``address`` as Dask spells it: ``local``, or ``scheme://host:port``; a plain
    ``host:port`` means TCP. Raises :class:`ValueError` saying what is wrong.

    >>> check_address("127.0.0.1:8786"), check_address("tls://scheduler.lan:8786")
    ('tcp://127.0.0.1:8786', 'tls://scheduler.lan:8786')
    >>> check_address("tcp://[::1]:8786")
    'tcp://[::1]:8786'
    >>> for bad in ("tcp://a..b:8786", "tcp://127.0.0.1:٨٧٨٦", "tcp://127.0.0.1:²"):
    ...     try:
    ...         check_address(bad)
    ...     except ValueError as err:
    ...         print(str(err).split(" with ")[0].split(" after ")[0].split(" (ASCII)")[0])
    'tcp://a..b:8786': 'a..b:8786' is not HOST:PORT
    'tcp://127.0.0.1:٨٧٨٦': port '٨٧٨٦' is not written in the digits 0-9
    'tcp://127.0.0.1:²': port '²' is not written in the digits 0-9
    """
    if address == LOCAL:
        return address
    if "://" not in address:
        if not _HOST_PORT.match(address):
            raise ValueError(f"'{address}' is not a scheduler address: give local, or "
                             "tcp://HOST:PORT (as 'dask scheduler' prints it)")
        address = f"tcp://{address}"
    scheme, location = parse_address(address)
    if scheme not in backends or scheme == "inproc":
        known = ", ".join(f"{s}://" for s in sorted(backends) if s != "inproc")
        raise ValueError(f"'{address}': unknown scheme '{scheme}://'; use tcp://HOST:PORT "
                         f"(Dask knows {known})")
    host, _, port = location.rpartition(":")
    if host and port and not re.fullmatch("[0-9]+", port) and \
            all(c.isdigit() or c.isdecimal() for c in port):  # '８７８６', '²'
        raise ValueError(f"'{address}': port '{port}' is not written in the digits 0-9 "
                         f"(ASCII), which a port takes; e.g. {scheme}://127.0.0.1:8786")
    if not host or not re.fullmatch("[0-9]+", port):
        raise ValueError(f"'{address}' has no HOST:PORT after {scheme}://; e.g. "
                         f"{scheme}://127.0.0.1:8786")
    if not _is_host(host):
        raise ValueError(f"'{address}': '{location}' is not HOST:PORT with a host name or IP "
                         f"address (IPv6 in brackets); e.g. {scheme}://127.0.0.1:8786 or "
                         f"{scheme}://[::1]:8786")
    if not 0 < int(port) < 65536:
        raise ValueError(f"'{address}': port {port} is not between 1 and 65535")
    return address


@contextmanager
def _quiet() -> Iterator[None]:
    """Dask's own log lines off stderr while lstm-graph is its client (a lost scheduler, say,
    is logged with a traceback as the client tries to reconnect): what went wrong reaches
    the user as one message of ours."""
    handlers = [handler for handler in logging.getLogger("distributed").handlers
                if isinstance(handler, logging.StreamHandler)]
    levels = [handler.level for handler in handlers]
    for handler in handlers:
        handler.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for handler, level in zip(handlers, levels):
            handler.setLevel(level)


def _local_cluster(scratch: str) -> LocalCluster:
    """One single-threaded worker process per core (its NumPy and BLAS single-threaded
    too, as Dask's nanny sets them), all on the loopback interface, the scheduler's web
    server included (on a free port, not the usual 8787 another cluster may hold); the
    workers' scratch space in ``scratch``, a directory of this process's own (Dask's
    default, ``dask-scratch-space`` in the temporary directory, stays behind with its lock
    files, and Dask puts its directories on ``sys.path``: where another user made it
    first, a place they can write)."""
    return LocalCluster(threads_per_worker=1, processes=True, host="127.0.0.1",
                        dashboard_address="127.0.0.1:0", silence_logs=logging.CRITICAL + 1,
                        local_directory=scratch)


@contextmanager
def _interrupts_held() -> Iterator[None]:
    """Ctrl-C ignored while the local cluster starts its worker processes, which inherit
    that (a signal mask does not reach them: Python's process start clears it): a Ctrl-C
    at the terminal reaches the whole process group, and each worker then printed its
    traceback and slowed the exit by seconds; this process, which closes the cluster,
    handles it again once the start is done (a Ctrl-C during the start or the close, a
    second or two, is not acted on). Only the main thread may set it; elsewhere nothing
    changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def _local(scratch: str) -> Iterator[LocalCluster]:
    """The local cluster (:func:`_local_cluster`), started and closed with Ctrl-C held
    (:func:`_interrupts_held`): a Ctrl-C as it closes left it half closed, for Dask's exit
    hook to close slowly (10 s)."""
    with _interrupts_held():
        cluster = _started(lambda: _local_cluster(scratch))
    try:
        yield cluster
    finally:
        with _interrupts_held():
            cluster.close()


def _started(start: Callable[[], LocalCluster]) -> LocalCluster:
    """``start()``; where it is interrupted (Ctrl-C, SIGTERM) or fails half-way, the
    half-made cluster is closed here, its worker processes ended, before its scratch
    directory goes: Dask's exit hook would close it only at the process's exit, printing
    a traceback of its workers' state (``AssertionError: Status.init``)."""
    before = set(SpecCluster._instances)
    try:
        return start()
    except BaseException:
        for cluster in set(SpecCluster._instances) - before:
            _end(cluster)
        raise


def _end(cluster: SpecCluster) -> None:
    """A half-made cluster ended: its workers' processes killed, then closed as far as
    Dask can, and left out of Dask's exit hook."""
    for nanny in list(getattr(cluster, "workers", {}).values()):
        process = getattr(getattr(nanny, "process", None), "process", None)
        with contextlib.suppress(Exception):
            process.kill()  # type: ignore[union-attr]
    with contextlib.suppress(Exception):
        cluster.close(timeout=GRACE)
    cluster.shutdown_on_close = False


class _Unanswered(Exception):
    """The scheduler's start did not end within its time limit (see :data:`GRACE`)."""


class _Client(Client):
    """A :class:`~distributed.Client` whose start ends within ``limit`` seconds: Dask
    bounds the connection by ``timeout``, but not the handshake after it, which waits for
    as long as whatever accepted the connection stays silent."""

    def __init__(self, address: str | LocalCluster, timeout: float, limit: float):
        self._limit = limit
        self.patience = timeout  # how long awaited work may wait for a worker (arrivals)
        super().__init__(address, timeout=timeout)

    def start(self, **kwargs: Any) -> None:
        try:
            super().start(callback_timeout=self._limit, **kwargs)
        except (TimeoutError, asyncio.TimeoutError):
            with contextlib.suppress(Exception):
                self.close(timeout=GRACE)
            raise _Unanswered from None


class _Deadline:
    """Seconds left of a time limit, never quite none (Dask reads 0 as no limit)."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.05, self.end - time.monotonic())


def _not_dask(address: str, why: str) -> DaskError:
    return DaskError(f"something answered at {address}, but not as a Dask scheduler does{why}; "
                     "check the host and port (the scheduler prints its address when it "
                     "starts)")


@contextmanager
def connect(address: str, timeout: float = TIMEOUT) -> Iterator[Client]:
    """A client of the cluster ``address`` names (see the module docstring), with at least
    one worker that runs lstm-graph, within ``timeout`` seconds (and :data:`GRACE`);
    everything it started is closed on the way out."""
    address = check_address(address)
    with ExitStack() as stack:
        stack.enter_context(_quiet())
        stack.enter_context(dask.config.set(SETTINGS))
        if address == LOCAL:
            base = dask.config.get("temporary-directory", None)
            try:
                scratch = stack.enter_context(tempfile.TemporaryDirectory(
                    prefix="lstm-graph-dask-", ignore_cleanup_errors=True, dir=base))
            except OSError as err:  # $DASK_TEMPORARY_DIRECTORY missing or not writable
                where = base or tempfile.gettempdir()
                raise DaskError(f"cannot make the local cluster's scratch directory in "
                                f"{where} ({err.strerror or err}); give Dask a directory it "
                                "can write in (DASK_TEMPORARY_DIRECTORY, or TMPDIR)") from None
            try:
                stack.enter_context(dask.config.set({"temporary-directory": scratch}))
                cluster = stack.enter_context(_local(scratch))
            except (OSError, TimeoutError, RuntimeError) as err:  # "Nanny failed to start."
                cause = f": {err.__cause__}" if err.__cause__ else ""
                raise DaskError(f"cannot start a local Dask cluster ({err}{cause}); see that "
                                "this machine can start processes (ulimit -u) and listen on "
                                "127.0.0.1, or give the address of a running scheduler") \
                    from None
        deadline = _Deadline(timeout + GRACE)
        try:
            client = stack.enter_context(_Client(cluster if address == LOCAL else address,
                                                 timeout, deadline.left()))
        # UnicodeError: a host name the resolver cannot encode (IDNA), as unreachable
        except (_Unanswered, OSError, TimeoutError, UnicodeError) as err:
            if address == LOCAL:
                raise DaskError(f"cannot connect to the local Dask cluster within {timeout:g} "
                                f"s ({type(err).__name__}: {err}); this machine may be "
                                "overloaded: give a larger --dask-timeout") from None
            if isinstance(err, _Unanswered):
                raise _not_dask(address, f" (no Dask handshake within {timeout:g} s)") from None
            raise DaskError(f"cannot reach a Dask scheduler at {address} within {timeout:g} s "
                            f"({err}); is 'dask scheduler' running there, and the address the "
                            "one it printed?") from None
        except Exception as err:  # what answered sent what Dask's protocol cannot read (a
            # frame header of 2**40: struct.error; a length too large: MemoryError; …)
            if address == LOCAL:
                raise DaskError(f"cannot connect to the local Dask cluster ({type(err).__name__}"
                                f": {err})") from None
            scheme = parse_address(address)[0]
            if scheme != "tcp":  # the client's side of the scheme may be what failed
                raise DaskError(f"cannot connect to {address} ({type(err).__name__}: "
                                f"{printable(str(err))}); check that a Dask scheduler "
                                f"listens there, and that Dask's configuration holds what a "
                                f"{scheme}:// client needs (for TLS, the certificates of "
                                "distributed.comm.tls) and its package is installed") \
                    from None
            raise _not_dask(address, "") from None
        check_workers(client, address, timeout, deadline)
        yield client


def check_workers(client: Client, address: str, timeout: float,
                  deadline: _Deadline | None = None) -> None:
    """Wait for a first worker; refuse workers that cannot import lstm-graph; warn of
    workers with another version of it; all by ``deadline`` (default: ``timeout`` from
    now)."""
    deadline = deadline or _Deadline(timeout)
    try:
        client.wait_for_workers(1, timeout=deadline.left())
    except TimeoutError:
        raise DaskError(f"the Dask scheduler at {address} has no workers (none joined within "
                        f"{timeout:g} s); start some: dask worker {address}") from None
    except OSError as err:  # the connection closed: the scheduler stopped
        raise DaskError(f"the Dask scheduler at {address} was lost while its workers were "
                        f"awaited ({one_line(err)}); is it still running?") from None
    try:  # Client.run hands callback_timeout to Client.sync, which bounds the whole call
        found = client.run(worker_version, on_error="return", callback_timeout=deadline.left())
    except (TimeoutError, asyncio.TimeoutError, OSError) as err:
        raise DaskError(f"the workers of the Dask scheduler at {address} did not say which "
                        f"lstm-graph they run within {timeout:g} s ({type(err).__name__}); "
                        "are they overloaded, or is the scheduler still running?") from None
    lost = sorted(worker for worker, version in found.items() if isinstance(version, OSError))
    if lost:  # a closed stream, say: the worker went away as it was asked
        raise DaskError(f"worker {', '.join(lost)} of the Dask scheduler at {address} was "
                        f"lost as it was asked which lstm-graph it runs "
                        f"({one_line(found[lost[0]])}); is it still running?")
    missing = sorted(worker for worker, version in found.items()
                     if not isinstance(version, str))
    if missing:
        raise DaskError(f"lstm-graph cannot run on worker {', '.join(missing)} "
                        f"({one_line(found[missing[0]])}); install it with its dask extra on "
                        "every worker, "
                        "the same version as here (pip install '/path/to/lstm-graph[dask]' "
                        "from a checkout), in the environment 'dask worker' runs in")
    ours = worker_version()
    other = sorted({version for version in found.values() if version != ours})
    if other:
        warnings.warn(f"workers run lstm-graph {', '.join(map(str, other))}, this is {ours}; "
                      "results may differ from a plain run", LstmGraphWarning, stacklevel=3)


def one_line(err: object) -> str:
    """An exception (or Dask's text of one) in one line of printable text."""
    text = f"{type(err).__name__}: {err}" if isinstance(err, BaseException) else str(err)
    return " ".join(printable(text).split())


#: Seconds between looks at the cluster's workers while awaited work does not come.
WATCH = 1.0


def arrivals(client: Client, arrived: as_completed, awaited: Callable[[], Iterable[Future]]
             ) -> Iterator[Future]:
    """Each future of ``arrived`` as it completes (``awaited``: those not yet in). Where
    none completes within :data:`WATCH`, the cluster's workers are counted: one that has
    had none for the client's patience (the ``--dask-timeout`` it was reached within) is
    a DaskError, as is a lost scheduler. A scheduler whose every worker died or left
    keeps the tasks for a worker that may never come, and waiting on would hang."""
    watch = _Watch(client)
    while not arrived.is_empty():
        batch = arrived.next_batch(block=False)
        if batch:
            watch.heard()
            yield from batch
            continue
        pending = [future for future in awaited() if not future.done()]
        if not pending:  # done, not yet handed over by as_completed
            time.sleep(0.001)
            continue
        try:
            wait(pending, timeout=WATCH, return_when="FIRST_COMPLETED")
            continue
        except CancelledError:  # one was cancelled (the scheduler lost): said as it comes
            continue
        except TimeoutError:
            pass
        watch.check()


def result(client: Client, future: Future) -> Any:
    """``future.result()``, watched as :func:`arrivals` watches: a result whose worker
    died before it was fetched is computed again, and where no worker is left, waiting for
    it would hang (the error of a cluster with no workers for the client's patience)."""
    watch = _Watch(client)
    while True:
        try:
            return future.result(timeout=WATCH)
        except TimeoutError:
            watch.check()


class _Watch:
    """How long a cluster has had no workers, counted when a wait runs out."""

    def __init__(self, client: Client):
        self.client = client
        self.patience = client.patience if isinstance(client, _Client) else TIMEOUT
        self.alone_since: float | None = None

    def heard(self) -> None:
        """Something arrived: a worker is there."""
        self.alone_since = None

    def check(self) -> None:
        """Count the workers; a DaskError where there have been none for the patience, or
        where the scheduler does not answer."""
        try:
            workers = len(self.client.nthreads())
        except (OSError, TimeoutError) as err:
            raise DaskError(f"the Dask cluster lost its scheduler ({one_line(err)}); is it "
                            "still running?") from None
        now = time.monotonic()
        self.alone_since = None if workers else (self.alone_since or now)
        if self.alone_since is not None and now - self.alone_since >= self.patience:
            raise DaskError(f"the Dask cluster has had no workers for {self.patience:g} s "
                            "(each died or left), and its work waits for one: start workers "
                            "(dask worker ADDRESS), or see why they stopped (out of memory?)")


def threads(client: Client) -> int:
    """Worker threads the cluster has now (shards that can run at once)."""
    return sum(int(count) for count in client.nthreads().values())
