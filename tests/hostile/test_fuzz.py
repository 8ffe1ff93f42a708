"""Generated hostile inputs through every beat's real transport: each Hypothesis example is sent
whole and embedded (and, over MQTT 5, declared JSON) between normal inputs, to one beat process
that runs for all the examples; each must be kept losslessly, dead-lettered or refused, and the
normal inputs around it committed. Then the beat must still commit, tell the truth in
``/readyz``, serve strict JSON, and stay within its memory bound.

``make test`` runs a few examples per beat; ``make fuzz`` (``BEATS_FUZZ_EXAMPLES=10000``) runs
them long. Failing examples are not shrunk (each costs a round trip through the beat); the
failure lists every input of the example and what became of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from tests.hostile.contract import RSS_GROWTH_BOUND, Outcome
from tests.hostile.corpus import Sample
from tests.hostile.fuzzing import Stream, hostile_samples
from tests.hostile.support import Input, Upstream
from tests.hostile.test_ditto import DittoUpstream
from tests.hostile.test_fiware import FiwareUpstream
from tests.hostile.test_hivemq import MqttUpstream
from tests.hostile.test_opencti import OpenctiUpstream
from tests.support import fuzz_examples

pytestmark = pytest.mark.fuzz

FUZZ = settings(
    max_examples=fuzz_examples(6),
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
UPSTREAMS: dict[str, Callable[[], Upstream]] = {
    "hivemq-3.1.1": lambda: MqttUpstream("3.1.1"),
    "hivemq-5": lambda: MqttUpstream("5"),
    "fiware": FiwareUpstream,
    "opencti": OpenctiUpstream,
    "ditto": DittoUpstream,
}


@pytest.fixture(scope="module", params=sorted(UPSTREAMS))
def stream(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stream]:
    with Stream(UPSTREAMS[request.param](), tmp_path_factory.mktemp(request.param)) as running:
        yield running


def _wrong(rows: list[tuple[Input, Outcome]]) -> list[str]:
    return [
        f"{item.label} {item.raw[:80]!r}: {outcome.kind}: {outcome.detail}"[:300]
        for item, outcome in rows
        if not (outcome.kind == "committed" if item.normal else outcome.accepted)
    ]


@FUZZ
@given(sample=hostile_samples())
def test_a_generated_input_is_kept_dead_lettered_or_refused_and_normal_ones_go_on(
    stream: Stream, sample: Sample
) -> None:
    wrong = _wrong(stream.check(sample))
    assert not wrong, f"sample {sample.raw[:300]!r}:\n" + "\n".join(wrong)


def test_after_the_generated_inputs_the_beat_commits_is_ready_and_bounded(stream: Stream) -> None:
    phase = stream.finish()
    assert phase.alive, "the beat process died"
    assert phase.can_commit, f"the beat no longer commits; /readyz {phase.readyz}"
    assert phase.readyz[0] == 200, phase.readyz
    invalid = [f"{s.id}: {s.error}" for s in phase.replay if s.error]
    assert not invalid, "served data that is not strict JSON:\n" + "\n".join(invalid[:20])
    assert phase.rss_peak - phase.rss_start < RSS_GROWTH_BOUND
