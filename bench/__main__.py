"""``make bench`` / ``python -m bench``: run the benchmarks, write JSON, compare with the baseline.

Every figure that matters is a ratio to a baseline measured in the same run on the same machine
(these machines are shared and noisy); absolute numbers are reported for context only. A ratio
that falls more than ``TOLERANCE`` below the checked-in ``bench/baseline.json`` is flagged.
Only a run with the baseline's options (``--count``, ``--clients``, ``--rate``,
``--idle-connections``; the defaults) is compared: ratios at other sizes are other figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from bench import (
    ditto_path,
    fiware_path,
    gateway_fanout,
    gateway_kafka,
    memory_bounds,
    mqtt_path,
    opencti_path,
    profiling,
    spark_source,
)

HERE = Path(__file__).parent
TOLERANCE = 0.30
LOWER_IS_BETTER = {"ratio_p99_gateway_to_bare"}
"""``ratio_*`` figures where a rise is the regression (the others: a fall)."""


def machine() -> dict[str, Any]:
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _flat(figures: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in figures.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _regressed(key: str, value: float, old: float) -> bool:
    if key in LOWER_IS_BETTER:
        return value > old * (1 + TOLERANCE)
    return value < old * (1 - TOLERANCE)


def regressions(result: dict[str, Any], baseline: dict[str, Any]) -> list[str]:
    """The ``ratio_*`` figures of ``result`` more than ``TOLERANCE`` worse than the baseline's
    (``machine_load`` and every other figure are context, never compared)."""
    flagged = []
    for bench_name, figures in result["benchmarks"].items():
        old = _flat(baseline.get("benchmarks", {}).get(bench_name, {}))
        for key, value in _flat(figures).items():
            last = key.rsplit(".", 1)[-1]
            if (
                last.startswith("ratio_")
                and not key.startswith("machine_load.")
                and isinstance(value, int | float)
                and isinstance(old.get(key), int | float)
                and _regressed(last, value, old[key])
            ):
                worse = "above" if last in LOWER_IS_BETTER else "below"
                flagged.append(
                    f"{bench_name}.{key}: {value} {worse} baseline {old[key]} by > {TOLERANCE:.0%}"
                )
    return flagged


SIZES = ("count", "clients", "rate", "idle_connections")
"""The options that set a run's size (each benchmark takes the ones it uses)."""


def comparable(options: dict[str, Any], baseline: dict[str, Any], defaults: dict[str, Any]) -> bool:
    """Whether a run with ``options`` is measured as the baseline was (a baseline that does not
    record its options was a run with the defaults)."""
    return bool(options == baseline.get("options", defaults))


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from ``/proc/stat`` (guest time is already
    in user time; idle and iowait are not busy)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


def _own_cpu() -> float:
    """CPU seconds of this process and of its children waited for (the services it ran)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


async def measured(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    """``bench``'s figures with ``machine_load``: the load averages before and after, the busy
    fraction of all CPUs over the run and the CPU seconds used by this benchmark (this process
    and the services it started and waited for) and by everything else on the machine."""
    load, (busy, total), own = os.getloadavg(), _cpu_ticks(), _own_cpu()
    figures = await bench(args)
    after_busy, after_total = _cpu_ticks()
    all_cpu = (after_busy - busy) / os.sysconf("SC_CLK_TCK")
    own = _own_cpu() - own
    figures["machine_load"] = {
        "loadavg_before": [round(x, 2) for x in load],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "busy_fraction": round((after_busy - busy) / max(1, after_total - total), 3),
        "cpu_s_benchmark": round(own, 1),
        "cpu_s_others": round(max(0.0, all_cpu - own), 1),
    }
    return figures


Bench = Callable[[argparse.Namespace], Coroutine[Any, Any, dict[str, Any]]]

BENCHMARKS: dict[str, Bench] = {
    "mqtt_path_v5": lambda a: mqtt_path.run(count=a.count, version="5"),
    "mqtt_path_v311": lambda a: mqtt_path.run(count=a.count, version="3.1.1"),
    "opencti_path": lambda a: opencti_path.run(count=a.count // 2),
    "ditto_path": lambda a: ditto_path.run(count=a.count // 2),
    "fiware_path": lambda a: fiware_path.run(count=a.count // 20),
    "spark_source": lambda a: spark_source.run(count=a.count),
    "gateway_fanout": lambda a: gateway_fanout.run(
        clients=a.clients, rate=a.rate, idle=a.idle_connections
    ),
    "gateway_kafka": lambda a: gateway_kafka.run(
        clients=a.clients // 2, rate=a.rate, idle=a.idle_connections // 5
    ),
    "memory_bounds": lambda a: memory_bounds.run(),
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run (default: all of {', '.join(BENCHMARKS)})",
    )
    parser.add_argument("--count", type=int, default=20000, help="messages per throughput run")
    parser.add_argument("--clients", type=int, default=1000, help="gateway fan-out: SSE clients")
    parser.add_argument("--rate", type=float, default=50.0, help="gateway fan-out: events/s")
    parser.add_argument(
        "--idle-connections", type=int, default=10_000, help="gateway fan-out: idle connections"
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="svg",
        choices=["svg", "raw"],
        help="py-spy profiles of the measured processes in bench/profiles/ (svg flame graphs, "
        "or raw collapsed stacks)",
    )
    parser.add_argument("--save-baseline", action="store_true", help="write bench/baseline.json")
    args = parser.parse_args()
    unknown = set(args.names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    names = args.names or list(BENCHMARKS)
    options = {name: getattr(args, name) for name in SIZES}
    defaults = {name: parser.get_default(name) for name in SIZES}
    if args.save_baseline and options != defaults:
        parser.error("the baseline is a run with the default sizes")
    if args.profile:
        if args.save_baseline:
            parser.error("a profiled run is not saved as the baseline")
        profiling.enable(raw=args.profile == "raw")
    result = {
        "machine": machine(),
        "options": options,
        "benchmarks": {name: asyncio.run(measured(BENCHMARKS[name], args)) for name in names},
    }
    _report(result, args, defaults)


def _report(result: dict[str, Any], args: argparse.Namespace, defaults: dict[str, Any]) -> None:
    """Print and write the result; save it as the baseline, or compare it with the baseline
    (exit status 1 on a regression)."""
    options = result["options"]
    text = json.dumps(result, indent=2)
    print(text)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "latest.json").write_text(text + "\n")
    baseline_path = HERE / "baseline.json"
    if args.save_baseline:
        saved = json.loads(baseline_path.read_text()) if baseline_path.exists() else {}
        saved = {
            "machine": result["machine"],
            "options": options,
            "benchmarks": {**saved.get("benchmarks", {}), **result["benchmarks"]},
        }
        baseline_path.write_text(json.dumps(saved, indent=2) + "\n")
    elif args.profile:
        print("a profiled run: not compared with the baseline", file=sys.stderr)
    elif baseline_path.exists():
        baseline = json.loads(baseline_path.read_text())
        if not comparable(options, baseline, defaults):
            print(f"sizes {options} are not the baseline's: not compared", file=sys.stderr)
            return
        flagged = regressions(result, baseline)
        for line in flagged:
            print(f"REGRESSION {line}", file=sys.stderr)
        if flagged:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
