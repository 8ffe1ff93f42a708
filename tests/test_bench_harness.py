"""``python -m bench``'s verdict: which runs are compared with ``bench/baseline.json``, and what
is a regression (the benchmarks themselves run with ``make bench``, never as tests)."""

from __future__ import annotations

from bench.__main__ import TOLERANCE, comparable, regressions

DEFAULTS = {"count": 20000, "clients": 1000, "rate": 50.0, "idle_connections": 10_000}


def test_only_runs_of_the_baselines_sizes_are_compared() -> None:
    small = {**DEFAULTS, "clients": 100, "rate": 20.0}
    assert comparable(DEFAULTS, {"benchmarks": {}}, DEFAULTS)  # a baseline of before: defaults
    assert not comparable(small, {"benchmarks": {}}, DEFAULTS)
    assert comparable(small, {"options": small}, DEFAULTS)
    assert not comparable(DEFAULTS, {"options": small}, DEFAULTS)


def test_a_ratio_worse_than_the_tolerance_is_a_regression() -> None:
    baseline = {
        "benchmarks": {"b": {"ratio_x": 1.0, "x_per_s": 100, "ratio_p99_gateway_to_bare": 1.0}}
    }

    def flagged(**figures: float) -> list[str]:
        return regressions({"benchmarks": {"b": figures}}, baseline)

    within, beyond = 1 - TOLERANCE + 0.01, 1 - TOLERANCE - 0.01
    assert flagged(ratio_x=within, x_per_s=1) == []  # absolute figures are context only
    assert flagged(ratio_x=beyond) == [f"b.ratio_x: {beyond} below baseline 1.0 by > 30%"]
    assert flagged(ratio_p99_gateway_to_bare=0.5) == []  # lower is better for this one
    assert len(flagged(ratio_p99_gateway_to_bare=1 + TOLERANCE + 0.01)) == 1
