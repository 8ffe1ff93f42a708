"""STIX 2.1 facts the OpenCTI beat needs: TLP markings and object kinds. Pure data."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "NEUTRAL",
    "OCTI_EXTENSION",
    "STANDARD_TLP_IDS",
    "TLP2_EXTENSION",
    "TLP_LEVELS",
    "channel_for",
    "marking_level",
    "marking_refs",
    "tlp_of_refs",
]

OCTI_EXTENSION = "extension-definition--ea279b3e-5c71-4632-ac08-831c66a786ba"
"""OpenCTI's property extension on every STIX object it exports (``STIX_EXT_OCTI``)."""
TLP2_EXTENSION = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d"
"""The OASIS TLP 2.0 extension; its marking definitions carry ``tlp_2_0``."""
TLP_LEVELS = ("clear", "green", "amber", "amber+strict", "red")

STANDARD_TLP_IDS: dict[str, str] = {
    # STIX 2.1 TLP 1.0 (stix2.TLP_*), which OpenCTI also uses for its TLP markings
    "marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9": "clear",
    "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da": "green",
    "marking-definition--f88d31f6-486f-44da-b317-01333bde0b82": "amber",
    "marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed": "red",
    # OpenCTI's TLP:AMBER+STRICT
    "marking-definition--826578e1-40ad-459f-bc73-ede076f81f37": "amber+strict",
    # OASIS TLP 2.0 extension marking definitions
    "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487": "clear",
    "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb": "green",
    "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421": "amber",
    "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003": "amber+strict",
    "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1": "red",
}

_OBSERVABLES = {
    "artifact",
    "autonomous-system",
    "directory",
    "domain-name",
    "email-addr",
    "email-message",
    "file",
    "ipv4-addr",
    "ipv6-addr",
    "mac-addr",
    "mutex",
    "network-traffic",
    "process",
    "software",
    "url",
    "user-account",
    "windows-registry-key",
    "x509-certificate",
    "cryptocurrency-wallet",
    "hostname",
    "text",
    "phone-number",
    "user-agent",
    "bank-account",
    "credential",
    "media-content",
    "payment-card",
    "persona",
    "ssh-key",
    "tracking-number",
    "windows-registry-value-type",
}
DEFAULT_CHANNELS: dict[str, str] = {
    "indicator": "indicators",
    "relationship": "relationships",
    "sighting": "relationships",
    "report": "reports",
    "note": "reports",
    "opinion": "reports",
    "grouping": "reports",
    **dict.fromkeys(_OBSERVABLES, "observables"),
}


def channel_for(stix_type: str, overrides: Mapping[str, str]) -> str:
    """The channel of a STIX type: ``overrides`` first, then the defaults, else ``entities``."""
    return overrides.get(stix_type) or DEFAULT_CHANNELS.get(stix_type, "entities")


NEUTRAL = "none"
"""The level of a marking that does not restrict who may receive an object: PAP (what the
recipient may *do* with it) and STIX ``statement`` markings (copyright, terms of use)."""
_NEUTRAL_TYPES = frozenset({"pap", "statement"})


def marking_level(marking: Mapping[str, Any]) -> str:
    """What a marking definition stands for: a TLP level, :data:`NEUTRAL`, or ``red`` for any
    other kind (a custom marking restricts its objects to its holders; the gateway cannot prove
    a token holds it). ``marking`` is a STIX ``marking-definition`` object as the stream sends
    it, or a ``MarkingDefinition`` node of OpenCTI's GraphQL API (``standard_id``,
    ``definition_type``, ``definition``)."""
    for key in ("standard_id", "id"):
        known = STANDARD_TLP_IDS.get(str(marking.get(key)))
        if known:
            return known
    kind = str(marking.get("definition_type") or "").strip().lower()
    if kind in _NEUTRAL_TYPES:
        return NEUTRAL
    level = _tlp_named(marking)
    if level is not None and kind in ("", "tlp"):
        return level
    return "red"


def _tlp_named(marking: Mapping[str, Any]) -> str | None:
    definition = marking.get("definition")
    candidates = [
        _extension(marking, TLP2_EXTENSION).get("tlp_2_0"),
        marking.get("name"),
        definition.get("tlp") if isinstance(definition, dict) else definition,
    ]
    for candidate in candidates:
        if isinstance(candidate, str):
            level = candidate.lower().removeprefix("tlp:").strip()
            level = "clear" if level == "white" else level
            if level in TLP_LEVELS:
                return level
    return None


def _extension(obj: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    extensions = obj.get("extensions")
    found = extensions.get(name) if isinstance(extensions, dict) else None
    return found if isinstance(found, dict) else {}


def marking_refs(value: Any) -> set[str]:
    """Every marking id anywhere in ``value`` (an event, its context, previous version, merge
    sources, deletions, patches): values of keys ending in ``marking_refs`` (STIX
    ``object_marking_refs``, OpenCTI's ``source_object_marking_refs`` ...) or ``marking_ref``
    (granular markings), ``related_restrictions.markings``, and the values of JSON-patch
    operations whose path names a marking (an ``object_marking_refs`` entry added or replaced).
    Iterative: the depth of ``value`` does not matter."""
    found: set[str] = set()
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            for key, child in item.items():
                if _names_markings(key, item):
                    found.update(_strings(child))
                if isinstance(child, dict | list):
                    stack.append(child)
    return found


def _names_markings(key: Any, container: Mapping[str, Any]) -> bool:
    if not isinstance(key, str):
        return False
    if key.endswith("marking_refs") or key == "marking_ref":
        return True
    if key == "markings":  # OpenCTI's related_restrictions, and 4.x events' top level
        return True
    path = container.get("path")
    return key == "value" and isinstance(path, str) and "marking" in path


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def tlp_of_refs(refs: Iterable[Any], known: Mapping[str, str]) -> str:
    """The most restrictive TLP among marking ids: standard ids first, then ``known`` (ids the
    stream or the platform described); an unknown id counts as ``red``; neutral markings (PAP,
    statements) do not count; no restricting marking at all is ``clear`` (OpenCTI shows an
    unmarked object to every user)."""
    rank = 0
    for ref in refs:
        level = STANDARD_TLP_IDS.get(str(ref)) or known.get(str(ref)) or "red"
        if level == NEUTRAL:
            continue
        rank = max(rank, TLP_LEVELS.index(level) if level in TLP_LEVELS else len(TLP_LEVELS) - 1)
    return TLP_LEVELS[rank]
