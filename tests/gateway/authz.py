"""The authorisation matrix's world: the events (each with the TLP it must carry), the tokens,
the routes, and the model of what each token may see on each route. Pure data and functions;
``test_authz_matrix.py`` runs it through a real emulator, OpenCTI beat and gateways."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import jsonpatch
import stix2

from beats.opencti.scenario import stream_event, with_extension
from beats.opencti.stix import STANDARD_TLP_IDS, TLP_LEVELS, channel_for

__all__ = ["ROUTES", "TOKENS", "Token", "World", "expected", "route_channels"]

LEVEL_IDS = {level: ref for ref, level in list(STANDARD_TLP_IDS.items())[:5]}
SECRET = "SECRET-"
"""Marks content that only a token allowed red (or a dead-letter scope) may ever receive."""


@dataclass(frozen=True)
class Token:
    name: str
    scopes: tuple[str, ...]
    tlp_max: str | None = None

    @property
    def value(self) -> str:
        return f"token-{self.name}-0a1b2c"

    def entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": self.name,
            "sha256": hashlib.sha256(self.value.encode()).hexdigest(),
            "scopes": list(self.scopes),
        }
        if self.tlp_max:
            entry["tlp_max"] = self.tlp_max
        return entry


TOKENS = [
    Token("admin", ("*", "admin")),
    Token("beat", ("opencti",)),
    *(Token(f"beat-{level}", ("opencti",), level) for level in TLP_LEVELS),
    Token("channel-green", ("opencti:indicators",), "green"),
    Token("deadletter-clear", ("opencti:deadletter", "opencti:indicators"), "clear"),
    Token("metrics", ("metrics",)),
]
ROUTES = {
    "beat": "/streams/opencti",
    "indicators": "/streams/opencti/indicators",
    "deadletter": "/streams/opencti/deadletter",
    "merged": "/streams",
}
ALL_CHANNELS = {"indicators", "observables", "entities", "relationships", "reports", "deadletter"}


def route_channels(token: Token, route: str) -> set[str] | None:
    """The channels ``token`` reads on ``route``; ``None``: the route is refused (403)."""
    whole = "*" in token.scopes or "opencti" in token.scopes
    granted = {s.split(":", 1)[1] for s in token.scopes if s.startswith("opencti:")}
    if route == "beat":
        return ALL_CHANNELS if whole else None
    if route == "merged":
        return ALL_CHANNELS if whole else (granted or None)
    return {route} if whole or route in granted else None


def sees(token: Token, event: dict[str, Any]) -> bool:
    """The TLP rule: no ceiling sees all; a dead letter with ``opencti:deadletter``; else the
    event's TLP must be within the ceiling (an OpenCTI event without one counts as red)."""
    if token.tlp_max is None:
        return True
    if event["type"].endswith(".deadletter") and "opencti:deadletter" in token.scopes:
        return True
    level = event.get("tlp", "red")
    return TLP_LEVELS.index(level) <= TLP_LEVELS.index(token.tlp_max)


def channel_of(event: dict[str, Any]) -> str:
    if event["type"].endswith(".deadletter"):
        return "deadletter"
    return channel_for(event["stixtype"], {})


def expected(token: Token, route: str, events: list[dict[str, Any]]) -> list[str] | None:
    """The CloudEvent ids ``token`` must receive on ``route`` (in order), ``None`` if refused."""
    channels = route_channels(token, route)
    if channels is None:
        return None
    return [e["id"] for e in events if channel_of(e) in channels and sees(token, e)]


def _marking(name: str, kind: str) -> dict[str, Any]:
    definition = stix2.MarkingDefinition(
        definition_type="statement", definition={"statement": name}, name=name
    )
    stix = with_extension(definition, "Marking-Definition", order=7)
    del stix["definition"]
    stix["definition_type"] = kind
    return stix


def _indicator(label: str, *markings: str, secret: bool = False) -> dict[str, Any]:
    name = f"{SECRET if secret else ''}{label}"
    obj = stix2.Indicator(
        name=name,
        pattern="[ipv4-addr:value = '198.51.100.7']",
        pattern_type="stix",
        allow_custom=True,
    )
    stix = with_extension(obj, "Indicator", score=50)
    stix["object_marking_refs"] = list(markings)
    return stix


def _malware(label: str, *markings: str) -> dict[str, Any]:
    stix = with_extension(stix2.Malware(name=label, is_family=True), "Malware")
    stix["object_marking_refs"] = list(markings)
    return stix


class World:
    """Two batches of stream events (before and after a beat restart), and the TLP each
    resulting CloudEvent must carry, by STIX id (dead letters: by their reason)."""

    def __init__(self) -> None:
        self.custom_green = _marking("TLP:GREEN", "TLP")
        self.custom_red = _marking("ACME:EYES-ONLY", "ACME")
        self.pap = _marking("PAP:AMBER", "PAP")
        self.unknown = "marking-definition--00000000-0000-4000-8000-0000000000ff"
        self.tlp: dict[str, str] = {}
        self.sentinels: list[str] = []

    def _expect(self, stix: dict[str, Any], level: str) -> dict[str, Any]:
        self.tlp[stix["id"]] = level
        return stix

    def batch(self, phase: int) -> list[dict[str, Any]]:
        """``[{kind, data | raw}]`` for ``POST /admin/events``; the last two are a dead letter
        and a clear indicator (each route's final event)."""
        frames: list[dict[str, Any]] = []
        if phase == 1:
            for marking in (self.custom_green, self.custom_red, self.pap):
                frames.append(_create(self._expect(marking, "clear")))
            for level, ref in LEVEL_IDS.items():
                stix = _indicator(level, ref, secret=level == "red")
                frames.append(_create(self._expect(stix, level)))
            frames.append(_create(self._expect(_observable(), "clear")))
            frames.append(_create(self._expect(_malware("deleted", LEVEL_IDS["amber"]), "amber")))
            frames.append(self._delete(frames[-1]["data"]["data"]))
        frames += self._both_phases(phase)
        frames.append({"kind": "boom", "data": stream_event("create", _indicator(
            f"dead letter {phase}", LEVEL_IDS["clear"], secret=True), "x")})  # fmt: skip
        sentinel = _indicator(f"sentinel {phase}")
        self.sentinels.append(sentinel["id"])
        frames.append(_create(self._expect(sentinel, "clear")))
        return frames

    def _both_phases(self, phase: int) -> list[dict[str, Any]]:
        green = LEVEL_IDS["green"]
        return [
            _create(self._expect(_indicator(f"custom green {phase}", self.custom_green["id"]),
                                 "green")),
            _create(self._expect(_indicator(f"custom red {phase}", self.custom_red["id"],
                                            secret=True), "red")),
            _create(self._expect(_indicator(f"unknown {phase}", self.unknown, secret=True),
                                 "red")),
            _create(self._expect(_indicator(f"pap {phase}", self.pap["id"], green), "green")),
            self._update_from_red(phase),
            self._merge_red_source(phase),
            {"kind": "create", "raw": '{"data": {"name": "' + SECRET + 'broken", "object_ma'},
        ]  # fmt: skip

    def _update_from_red(self, phase: int) -> dict[str, Any]:
        before = _malware(f"{SECRET}before {phase}", LEVEL_IDS["red"])
        after = json.loads(json.dumps(before))
        after["name"], after["object_marking_refs"] = f"declassified {phase}", [LEVEL_IDS["green"]]
        context = {
            "patch": jsonpatch.make_patch(before, after).patch,
            "reverse_patch": jsonpatch.make_patch(after, before).patch,
        }
        self._expect(after, "red")
        return {"kind": "update", "data": stream_event("update", after, "updates", context)}

    def _merge_red_source(self, phase: int) -> dict[str, Any]:
        target = _malware(f"merge target {phase}", LEVEL_IDS["green"])
        source = _malware(f"{SECRET}merged source {phase}", LEVEL_IDS["red"])
        context = {"patch": [], "reverse_patch": [], "sources": [source]}
        self._expect(target, "red")
        return {"kind": "merge", "data": stream_event("merge", target, "merges", context)}

    def _delete(self, stix: dict[str, Any]) -> dict[str, Any]:
        return {"kind": "delete", "data": stream_event("delete", stix, "x", {"deletions": [stix]})}


def _create(stix: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "create", "data": stream_event("create", stix, "creates")}


def _observable() -> dict[str, Any]:
    return with_extension(stix2.DomainName(value="unmarked.example.net"), "Domain-Name")
