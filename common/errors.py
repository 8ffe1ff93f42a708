"""Errors that stop a command with one line for the operator, not a traceback."""

from __future__ import annotations

__all__ = ["StartupError", "find_startup_error"]


class StartupError(RuntimeError):
    """A service cannot start (or go on); ``str()`` is the whole message, ``exit_code`` the
    process's exit status (``beats`` prints ``<command>: <message>`` and exits with it)."""

    exit_code = 1


def find_startup_error(exc: BaseException) -> StartupError | None:
    """``exc`` itself, or the first :class:`StartupError` inside an exception group (a task
    group of several services, as in ``beats demo``)."""
    if isinstance(exc, StartupError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = find_startup_error(inner)
            if found is not None:
                return found
    return None
