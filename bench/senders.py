"""HTTP load generator of the benchmarks, run as its own process (the harness measures, it does
not also carry the load on its event loop).

``python -m bench.senders --url URL --bodies FILE --senders N [--header NAME:VALUE ...]``:
POSTs every body of ``FILE`` (a JSON list of strings) from ``N`` concurrent senders sharing one
HTTP client, or as many as fit in ``--timeout`` seconds (a stalled receiver must not hang the
run), then prints one JSON object on stdout: ``started`` and ``finished`` (wall clock,
``time.time()``, comparable with the harness's), ``sent`` and ``ok`` (2xx answers), ``cpu_s``
(the process's CPU time while sending).
:func:`send` runs it from a benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.processes import ROOT

__all__ = ["send"]


async def _post_all(
    url: str, bodies: list[bytes], *, senders: int, headers: dict[str, str], timeout: float
) -> dict[str, Any]:
    queue, tally = list(bodies), {"sent": 0, "ok": 0}
    async with httpx.AsyncClient(timeout=5) as client:

        async def sender() -> None:
            while queue:
                body = queue.pop()
                tally["sent"] += 1
                # the connector drops connections under load: such a body is not delivered
                with contextlib.suppress(httpx.HTTPError):
                    answer = await client.post(url, content=body, headers=headers)
                    tally["ok"] += answer.is_success

        started, cpu = time.time(), time.process_time()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.gather(*(sender() for _ in range(senders)))
    finished = time.time()
    # the senders' own CPU use: near ``finished - started``, they were the bottleneck
    cpu = time.process_time() - cpu
    return {"started": started, "finished": finished, "cpu_s": cpu, **tally}


async def send(
    url: str, bodies: Path, *, senders: int, headers: dict[str, str], timeout: float = 60
) -> dict[str, Any]:
    """Run the senders as a subprocess; their report (see the module docstring)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.senders", "--url", url, "--bodies", str(bodies),
        "--senders", str(senders), "--timeout", str(timeout),
        *(f"--header={name}:{value}" for name, value in headers.items()),
        stdout=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    out, _ = await process.communicate()
    if process.returncode:
        raise RuntimeError(f"bench.senders exited {process.returncode}")
    report: dict[str, Any] = json.loads(out)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--url", required=True)
    parser.add_argument("--bodies", type=Path, required=True, help="a JSON list of strings")
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--header", action="append", default=[], help="NAME:VALUE")
    args = parser.parse_args()
    bodies = [body.encode() for body in json.loads(args.bodies.read_text())]
    headers = dict(header.split(":", 1) for header in args.header)
    report = asyncio.run(
        _post_all(args.url, bodies, senders=args.senders, headers=headers, timeout=args.timeout)
    )
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
