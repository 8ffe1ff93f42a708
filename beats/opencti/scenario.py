"""Generated OpenCTI stream events for the emulator: STIX 2.1 objects built with ``stix2``,
carrying the OpenCTI extension and TLP markings, as create / update / delete / merge events
with the fields OpenCTI writes (``version``, ``type``, ``scope``, ``message``, ``origin``,
``context``; see ``opencti-graphql/tests/data/stream-events/*.json`` for the object shapes).

:data:`PLATFORM_OBJECTS` are what an OpenCTI platform holds before any event: the TLP marking
definitions (TLP 1.0 as in ``stix2``, and OpenCTI's TLP:AMBER+STRICT) and the feed's author.
They are not in the stream; a live stream sends them as dependencies.
"""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime
from typing import Any

import jsonpatch
import stix2

from beats.opencti.stix import OCTI_EXTENSION

__all__ = [
    "AUTHOR",
    "PLATFORM_OBJECTS",
    "TLP_AMBER_STRICT",
    "USER_ID",
    "Scenario",
    "stream_event",
    "with_extension",
]

USER_ID = "88ec0c6a-13ce-5e39-b486-354fe4a7084f"  # OpenCTI's admin user id
_CREATED = "2020-01-01T00:00:00.000Z"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def with_extension(obj: Any, entity_type: str, **fields: Any) -> dict[str, Any]:
    """The STIX object (``stix2`` object or dict) as a dict, with OpenCTI's extension added."""
    text = obj.serialize() if hasattr(obj, "serialize") else json.dumps(obj)
    stix: dict[str, Any] = json.loads(text)
    now = _now()
    stix.setdefault("extensions", {})[OCTI_EXTENSION] = {
        "extension_type": "property-extension",
        "id": str(uuid.uuid4()),
        "type": entity_type,
        "created_at": now,
        "updated_at": now,
        "stix_ids": [],
        "is_inferred": False,
        "creator_ids": [USER_ID],
        **fields,
    }
    return stix


TLP_AMBER_STRICT: dict[str, Any] = {
    "type": "marking-definition",
    "spec_version": "2.1",
    "id": "marking-definition--826578e1-40ad-459f-bc73-ede076f81f37",
    "created": _CREATED,
    "definition_type": "TLP",
    "name": "TLP:AMBER+STRICT",
    "definition": {"tlp": "amber+strict"},
}
_TLP_OBJECTS = [
    json.loads(m.serialize())
    for m in (stix2.TLP_WHITE, stix2.TLP_GREEN, stix2.TLP_AMBER, stix2.TLP_RED)
]
AUTHOR = with_extension(
    stix2.Identity(name="Emulated CTI feed", identity_class="organization", created=_CREATED),
    "Organization",
)
PLATFORM_OBJECTS: list[dict[str, Any]] = [
    *(with_extension(m, "Marking-Definition") for m in [*_TLP_OBJECTS, TLP_AMBER_STRICT]),
    AUTHOR,
]
_MARKINGS = [m["id"] for m in [*_TLP_OBJECTS, TLP_AMBER_STRICT]]


def stream_event(
    kind: str, stix: dict[str, Any], message: str, context: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``data:`` JSON of one stream frame, as OpenCTI stores it (event version 4)."""
    event: dict[str, Any] = {
        "version": "4",
        "type": kind,
        "scope": "external",
        "message": message,
        "origin": {"socket": "query", "user_id": USER_ID, "referer": "emulator"},
        "data": stix,
    }
    if context is not None:
        event["context"] = context
    return event


class Scenario:
    """A seeded stream of threat-intel activity: new indicators, malware, observables,
    relationships between known objects and reports on them, score updates, merges of
    duplicates and deletions. ``known`` holds the current state of every live object; at
    ``population`` objects a creation becomes a deletion, so a long run's world stays bounded
    (a feed in steady state, as OpenCTI's retention keeps it)."""

    def __init__(self, *, seed: int | None = None, population: int = 2000) -> None:
        self.rng = random.Random(seed)
        self.population = population
        self.known: dict[str, dict[str, Any]] = {}

    def next(self) -> dict[str, Any]:
        roll = self.rng.random()
        if len(self.known) >= self.population and roll >= 0.2:
            return self.delete()
        if len(self.known) > 4 and roll < 0.2:
            return self.update()
        if len(self.known) > 6 and roll < 0.25:
            return self.delete()
        if len(self.known) > 6 and roll < 0.28:
            return self.merge()
        if len(self.known) > 3 and roll < 0.32:
            refs = self.rng.sample(sorted(self.known), min(5, len(self.known)))
            return self.report(refs)
        return self.create()

    def create(self) -> dict[str, Any]:
        makers = [self.indicator, self.malware, self.observable, self.relationship]
        stix, message = self.rng.choice(makers)()
        self.known[stix["id"]] = stix
        return stream_event("create", stix, message)

    def _common(self) -> dict[str, Any]:
        return {"object_marking_refs": [self.rng.choice(_MARKINGS)], "created_by_ref": AUTHOR["id"]}

    def indicator(self) -> tuple[dict[str, Any], str]:
        ip = f"198.51.100.{self.rng.randint(1, 254)}"
        obj = stix2.Indicator(
            name=ip, pattern=f"[ipv4-addr:value = '{ip}']", pattern_type="stix", **self._common()
        )
        score = self.rng.randint(10, 100)
        fields = {"score": score, "detection": score > 50, "main_observable_type": "IPv4-Addr"}
        return with_extension(obj, "Indicator", **fields), f"creates a Indicator `{ip}`"

    def malware(self) -> tuple[dict[str, Any], str]:
        name = self.rng.choice(["Emotet", "TrickBot", "QakBot", "IcedID", "Ryuk"])
        obj = stix2.Malware(name=name, is_family=True, **self._common())
        return with_extension(obj, "Malware"), f"creates a Malware `{name}`"

    def observable(self) -> tuple[dict[str, Any], str]:
        marking = {"object_marking_refs": [self.rng.choice(_MARKINGS)]}
        if self.rng.random() < 0.5:
            domain = f"host{self.rng.randint(1, 9999)}.example.net"
            obj = stix2.DomainName(value=domain, **marking)
            return with_extension(obj, "Domain-Name", score=50), f"creates a Domain-Name `{domain}`"
        digest = f"{self.rng.getrandbits(256):064x}"
        obj = stix2.File(name="invoice.exe", hashes={"SHA-256": digest}, **marking)
        return with_extension(obj, "StixFile", score=80), f"creates a StixFile `{digest}`"

    def relationship(self) -> tuple[dict[str, Any], str]:
        """``indicates`` between a known indicator and a known malware (created when none)."""
        ends = {kind: self._known_of(kind) for kind in ("indicator", "malware")}
        if ends["indicator"] is None or ends["malware"] is None:
            return self.indicator() if ends["indicator"] is None else self.malware()
        source, target = ends["indicator"], ends["malware"]
        obj = stix2.Relationship(source["id"], "indicates", target["id"], **self._common())
        fields = {
            "source_ref": source["extensions"][OCTI_EXTENSION]["id"],
            "source_type": "Indicator",
            "source_value": source.get("name"),
            "target_ref": target["extensions"][OCTI_EXTENSION]["id"],
            "target_type": "Malware",
            "target_value": target.get("name"),
        }
        return with_extension(obj, "indicates", **fields), "creates a relation `indicates`"

    def _known_of(self, stix_type: str) -> dict[str, Any] | None:
        candidates = [s for s in self.known.values() if s["type"] == stix_type]
        return self.rng.choice(candidates) if candidates else None

    def report(self, refs: list[str]) -> dict[str, Any]:
        obj = stix2.Report(
            name="Weekly threat report",
            published=_now(),
            report_types=["threat-report"],
            object_refs=refs,
            object_marking_refs=[stix2.TLP_AMBER.id],
            created_by_ref=AUTHOR["id"],
            allow_custom=True,
        )
        stix = with_extension(obj, "Report")
        self.known[stix["id"]] = stix
        return stream_event("create", stix, "creates a Report `Weekly threat report`")

    def update(self) -> dict[str, Any]:
        """A new description (and score, for indicators), with OpenCTI's patch pair."""
        stix_id = self.rng.choice(sorted(self.known))
        before = self.known[stix_id]
        after = json.loads(json.dumps(before))
        after["description"] = f"revision {self.rng.randint(1, 10**6)}"
        extension = after["extensions"][OCTI_EXTENSION]
        extension["updated_at"] = _now()
        if "score" in extension:
            extension["score"] = self.rng.randint(0, 100)
        self.known[stix_id] = after
        return stream_event("update", after, "replaces `description`", _patches(before, after))

    def delete(self) -> dict[str, Any]:
        stix = self.known.pop(self.rng.choice(sorted(self.known)))
        return stream_event("delete", stix, "deletes an object", {"deletions": [stix]})

    def merge(self) -> dict[str, Any]:
        """Two known objects of one type merged: the target keeps the source's ids (and its
        name as an alias); the source is gone. Falls back to :meth:`create`."""
        by_type: dict[str, list[str]] = {}
        for stix_id, stix in sorted(self.known.items()):
            by_type.setdefault(stix["type"], []).append(stix_id)
        pairs = [ids for ids in by_type.values() if len(ids) >= 2]
        if not pairs:
            return self.create()
        target_id, source_id = self.rng.sample(self.rng.choice(pairs), 2)
        before, merged = self.known[target_id], self.known.pop(source_id)
        after = json.loads(json.dumps(before))
        extension = after["extensions"][OCTI_EXTENSION]
        extension["stix_ids"] = [*extension.get("stix_ids", []), source_id]
        extension["updated_at"] = _now()
        if "name" in merged and merged.get("name") != after.get("name"):
            after["aliases"] = [*after.get("aliases", []), merged["name"]]
        self.known[target_id] = after
        context = {**_patches(before, after), "sources": [merged]}
        return stream_event("merge", after, "merges objects", context)


def _patches(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {
        "patch": jsonpatch.make_patch(before, after).patch,
        "reverse_patch": jsonpatch.make_patch(after, before).patch,
    }
