"""The FIWARE upstream corpus (``tests/fiware/corpus``) through a running beat: every file is
POSTed to ``/notify`` exactly as the upstream sends it (headers, query, body), with hostile
requests in between, and every fact must reach the processed view on SSE.

The corpus covers Orion 4.x and 3.x (NGSI v2), Orion 3.x and older (NGSIv1 ``legacy``),
Orion-LD in its default mode (``Ngsiv2-AttrsFormat`` on NGSI-LD bodies, GeoJSON) and in its
experimental mode, and Orion-LD's cross-API v2 format.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import httpx

from beats.fiware.emulator import create_app
from beats.fiware.subscriptions import SECRET_HEADER
from tests.corpus import Case, check_facts, load_corpus
from tests.fiware.test_fiware_beat import SECRET, fiware_beat
from tests.support import read_sse, run_beat, serve_app

CASES = load_corpus(Path(__file__).parent)
HOSTILE: list[tuple[bytes, dict[str, str]]] = [
    (b"{not json", {"Content-Type": "application/json"}),
    (b'{"contextResponses": [{"statusCode": {"code": "200"}}]}', {}),
    (b'{"type": "Notification", "data": {"type": "FeatureCollection", "features": [5]}}', {}),
    (b'{"data": {"type": "FeatureCollection"}}', {"Content-Type": "application/geo+json"}),
]


def _attributes_of(case: Case, index: int) -> dict[str, Any]:
    """The attributes of the ``index``-th entity as the upstream sent them."""
    body = case.spec["body"]
    if "contextResponses" in body:
        element = body["contextResponses"][index]["contextElement"]
        return {a["name"]: a for a in element.get("attributes") or []}
    data = body["data"]
    if isinstance(data, dict):  # a GeoJSON FeatureCollection
        properties = dict(data["features"][index]["properties"])
        properties.pop("type", None)
        return properties
    entity = data[index]
    return {k: v for k, v in entity.items() if k not in ("id", "type", "@context")}


def _sub_names(sent: Any) -> list[str]:
    """The metadata (v1 ``metadatas``, v2 ``metadata``) or LD sub-property names of one
    attribute as sent."""
    if not isinstance(sent, dict):
        return []
    if "metadatas" in sent or "name" in sent:  # NGSIv1
        return [m["name"] for m in sent.get("metadatas") or []]
    if isinstance(sent.get("metadata"), dict):
        return list(sent["metadata"])
    if "value" in sent or "object" in sent:
        return [k for k in sent if k not in ("type", "value", "object", "metadata")]
    return []


def _nothing_only_in_the_raw_copy(case: Case, events: list[dict[str, Any]]) -> None:
    """Every attribute the upstream sent is in ``attributes`` and ``values`` (not only in the
    ``entity`` copy), and every sub-property / metadata name is kept on it."""
    for index, event in enumerate(events):
        data = event["data"]
        for name, sent in _attributes_of(case, index).items():
            assert name in data["attributes"], f"{case.name}[{index}]: {name} dropped"
            if name == "alterationType":  # Orion's built-in: lifted, not a value
                assert data["alteration_type"] == sent["value"], case.name
            else:
                assert name in data["values"], f"{case.name}[{index}]: {name} not in values"
            shaped = data["attributes"][name]
            subs = _sub_names(sent)
            for sub in subs:
                kept = sub in shaped or sub in shaped.get("metadata", {})
                assert kept, f"{case.name}[{index}]: {name}.{sub} dropped"


async def test_every_corpus_file_reaches_the_processed_view(tmp_path: Path) -> None:
    expected = sum(len(c.facts) for c in CASES)
    async with contextlib.AsyncExitStack() as stack:
        url = await stack.enter_async_context(serve_app(create_app()))
        base = await stack.enter_async_context(run_beat(fiware_beat(tmp_path, url)))
        client = await stack.enter_async_context(httpx.AsyncClient(base_url=base))
        for n, case in enumerate(CASES):
            body, hostile_headers = HOSTILE[n % len(HOSTILE)]
            refused = await client.post(
                "/notify", content=body, headers={SECRET_HEADER: SECRET, **hostile_headers}
            )
            assert refused.status_code == 400, refused.text
            response = await client.post(
                "/notify",
                params=case.spec.get("query"),
                content=json.dumps(case.spec["body"]).encode(),
                headers={SECRET_HEADER: SECRET, **case.spec["headers"]},
            )
            assert response.status_code == 200, f"{case.name}: {response.text}"
            assert response.json() == {"committed": len(case.facts)}, case.name
        entities = await read_sse(f"{base}/events/entities?last_event_id=0", count=expected)
        dead = await read_sse(f"{base}/events/deadletter?last_event_id=0", count=len(CASES))
    events = [m.json() for m in entities]
    for case in CASES:
        mine, events = events[: len(case.facts)], events[len(case.facts) :]
        check_facts(case, mine)
        _nothing_only_in_the_raw_copy(case, mine)
        for event in mine:
            assert event["time"], f"{case.name}: no time"
    assert not events
    assert {m.json()["type"] for m in dead} == {"beats.fiware.deadletter"}


def test_the_corpus_covers_every_upstream_mode() -> None:
    names = {c.name for c in CASES}
    for prefix in (
        "orion4_v2",
        "orion3_v2",
        "orion3_v1",
        "orionld_default_",
        "orionld_default_geojson",
        "orionld_experimental_",
        "orionld_cross_api",
    ):
        assert any(n.startswith(prefix) for n in names), prefix
    assert all(c.spec["source"] for c in CASES)
