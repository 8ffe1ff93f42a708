"""How every command starts and stops: listening sockets bound first, signals, exit codes.

A service binds its listening sockets (:func:`listen`) before it opens its log or starts its
source, so a port that cannot be had stops it before it consumed anything, with one line that
names the port and the option that changes it (:class:`CannotListen`, exit code 3).

:class:`Stopper` owns SIGTERM and SIGINT: the first one sets the shutdown event and arms a
watchdog thread; if the process has not exited ``grace`` seconds later (a shutdown that overran
``--shutdown-timeout``, a task that ignores cancellation, a stuck thread), the watchdog logs it and
ends the process with exit code 4. A second signal ends it at once with ``128 + signal``. The
watchdog is a thread, so it fires whatever the event loop is doing.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any

__all__ = [
    "EXIT_CANNOT_LISTEN",
    "EXIT_FORCED",
    "EXIT_LOG_UNUSABLE",
    "CannotListen",
    "Fatal",
    "Stopper",
    "fatal_in",
    "listen",
    "run_until",
]

_log = logging.getLogger(__name__)

EXIT_CANNOT_LISTEN = 3
EXIT_FORCED = 4
EXIT_LOG_UNUSABLE = 5


class Fatal(Exception):
    """A failure the operator fixes, not a bug: the command prints ``str(exc)`` (one line, no
    traceback) and exits with ``exit_code``."""

    exit_code = 1


class CannotListen(Fatal):
    exit_code = EXIT_CANNOT_LISTEN


_REASONS = {
    errno.EADDRINUSE: "address in use",
    errno.EACCES: "permission denied",
    errno.EADDRNOTAVAIL: "address not available on this machine",
}


def listen(
    host: str, port: int, *, who: str, option: str = "--port", host_option: str = "--host"
) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening, for ``uvicorn.Server.serve(sockets=...)``
    or ``asyncio.start_server(sock=...)``. :class:`CannotListen` names ``who`` and the option (and
    its ``BEATS_*`` variable) that changes the port, or the host when the host is the problem."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise _cannot(who, host, port, f"unknown host: {exc.strerror}", host_option) from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        reason = _REASONS.get(exc.errno or 0, exc.strerror or str(exc))
        culprit = host_option if exc.errno == errno.EADDRNOTAVAIL else option
        raise _cannot(who, host, port, reason, culprit) from None
    sock.setblocking(False)
    return sock


def _cannot(who: str, host: str, port: int, reason: str, option: str) -> CannotListen:
    env = "BEATS_" + option.removeprefix("--").replace("-", "_").upper()
    what = "port" if option.endswith("port") else "host"
    return CannotListen(
        f"{who}: cannot listen on {host}:{port} ({reason}); "
        f"choose another {what} with {option} or {env}"
    )


async def run_until(shutdown: asyncio.Event, work: Coroutine[Any, Any, None], *, name: str) -> None:
    """Run ``work`` until it ends (its failure is raised here) or ``shutdown`` is set (then it is
    cancelled and awaited)."""
    task = asyncio.create_task(work, name=name)
    waiter = asyncio.create_task(shutdown.wait(), name=f"{name}:shutdown")
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if not task.cancelled():
        task.result()  # its failure, if it ended on its own


def fatal_in(exc: BaseException) -> Fatal | None:
    """The :class:`Fatal` that ``exc`` is or holds (task groups wrap failures in groups)."""
    if isinstance(exc, Fatal):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = fatal_in(inner)
            if found is not None:
                return found
    return None


class Stopper:
    """SIGTERM/SIGINT handling of a command (see the module docstring).

    ``request_stop(signal_name)`` is called on the first signal, in the signal handler (between two
    bytecodes of the main thread): it should only hand over to the event loop
    (``loop.call_soon_threadsafe``). ``grace`` is the watchdog's delay.
    """

    def __init__(self, request_stop: Callable[[str], None], *, grace: float) -> None:
        self._request_stop = request_stop
        self.grace = grace
        self._signalled = False
        self._watchdog: threading.Timer | None = None
        self._lock = threading.Lock()

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def arm(self, why: str) -> None:
        """Start the watchdog (once): the process must be gone ``grace`` seconds from now."""
        with self._lock:
            if self._watchdog is not None:
                return
            self._watchdog = threading.Timer(self.grace, self._force, args=(why,))
            self._watchdog.daemon = True
            self._watchdog.name = "shutdown-watchdog"
            self._watchdog.start()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._signalled:
            # runs between two bytecodes of the main thread: no logging (it may hold the lock
            # of a stream), one raw write
            _write(f"second {name}: exiting now without finishing the shutdown\n")
            os._exit(128 + signum)
        self._signalled = True
        self._request_stop(name)
        self.arm(f"{name} received")

    def _force(self, why: str) -> None:
        _log.error(
            "shutdown did not finish %.0fs after %s; forcing the exit (code %d)",
            self.grace,
            why,
            EXIT_FORCED,
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(EXIT_FORCED)


def _write(text: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        os.write(sys.stderr.fileno(), text.encode())
