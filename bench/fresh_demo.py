"""From a fresh clone to the demo's first event: ``python -m bench.fresh_demo [--cold]``.

Clones this repository's committed ``HEAD`` into a temporary directory, runs ``make demo``
there (which creates ``.venv`` from ``requirements/demo.txt``) and reads the gateway's
``/streams`` until the first event arrives. Reports the seconds until the environment was
installed, until the first event, and the size of ``.venv``. ``--cold`` gives pip an empty cache
(every wheel is downloaded); without it pip uses the machine's cache. Needs the demo's ports
(8080, 8101-8104, 1026, 1884, 4000, 8090) free. Not a timed test: a measurement to report.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
STREAMS = "http://127.0.0.1:8080/streams"
LIMIT = 900.0


def _first_event(deadline: float) -> bool:
    """True once ``/streams`` yields an event, False at the deadline."""
    while time.monotonic() < deadline:
        try:
            with httpx.stream("GET", STREAMS, timeout=5) as response:
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        return True
        except httpx.HTTPError:
            time.sleep(0.2)
    return False


def _size_mb(path: Path) -> float:
    files = (p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return round(sum(p.stat().st_size for p in files) / 1e6, 1)


def measure(*, cold: bool) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="fresh-demo-") as tmp:
        clone = Path(tmp) / "works-beats"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        env = dict(os.environ)
        if cold:
            env["PIP_CACHE_DIR"] = str(Path(tmp) / "pip-cache")
        started, started_wall = time.monotonic(), time.time()
        make = subprocess.Popen(
            ["make", "demo"], cwd=clone, env=env, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            stamp = clone / ".venv" / ".demo-installed"
            seen = _first_event(started + LIMIT)
            first_event = time.monotonic() - started
            installed = stamp.stat().st_mtime - started_wall
        finally:
            os.killpg(make.pid, signal.SIGINT)
            make.wait(timeout=60)
        return {
            "pip_cache": "empty" if cold else "warm",
            "installed_s": round(installed, 1),
            "first_event_s": round(first_event, 1) if seen else None,
            "venv_mb": _size_mb(clone / ".venv"),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="start pip with an empty cache")
    print(json.dumps(measure(cold=parser.parse_args().cold)))


if __name__ == "__main__":
    main()
