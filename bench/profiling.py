"""Flame graphs of the measured process: ``python -m bench --profile NAME...``.

With ``--profile``, each benchmark samples the process it measures (the beat, the gateway) with
py-spy while the measured phase runs, and writes ``bench/profiles/<name>.svg``. py-spy runs
``--nonblocking`` (it reads the process's memory without stopping it), so the figures of a
profiled run stay close to an unprofiled one; they are still not saved as a baseline.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

__all__ = ["PROFILES", "enable", "flame"]

PROFILES = Path(__file__).parent / "profiles"
_RATE = 250  # samples per second
_state = {"on": False, "raw": False}


def enable(*, raw: bool = False) -> None:
    """Profile from now on: flame graphs, or with ``raw`` collapsed stacks (``<name>.txt``, one
    line per stack and its sample count: for tools, and for reading the self time of each
    function)."""
    if _py_spy() is None:
        raise SystemExit("--profile needs py-spy (make install)")
    _state.update(on=True, raw=raw)


def _py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


@contextlib.contextmanager
def flame(pid: int | None, name: str, *, subprocesses: bool = False) -> Iterator[None]:
    """Sample ``pid`` (and with ``subprocesses`` its Python descendants: Spark's Python
    workers) into ``bench/profiles/<name>.svg`` for the duration of the block (only with
    ``--profile``)."""
    spy = _py_spy()
    if not _state["on"] or pid is None or spy is None:
        yield
        return
    PROFILES.mkdir(exist_ok=True)
    command = [spy, "record", "--pid", str(pid), "--rate", str(_RATE), "--nonblocking"]
    command += ["--subprocesses"] if subprocesses else []
    if _state["raw"]:
        command += ["--format", "raw", "--output", str(PROFILES / f"{name}.txt")]
    else:
        command += ["--output", str(PROFILES / f"{name}.svg")]
    recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)
        _, err = recorder.communicate(timeout=60)
        if recorder.returncode not in (0, -signal.SIGINT):
            print(f"py-spy on {name}: {err.decode()[-500:]}", file=sys.stderr)
