"""STIX 2.1 facts the OpenCTI beat needs: TLP markings and object kinds. Pure data."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "OCTI_EXTENSION",
    "STANDARD_TLP_IDS",
    "TLP2_EXTENSION",
    "TLP_LEVELS",
    "channel_for",
    "highest_tlp",
    "tlp_of_marking",
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


def tlp_of_marking(marking: Mapping[str, Any]) -> str | None:
    """The TLP level a ``marking-definition`` object stands for, if it is a TLP marking."""
    if marking.get("type") != "marking-definition":
        return None
    known = STANDARD_TLP_IDS.get(str(marking.get("id")))
    if known:
        return known
    definition = marking.get("definition")
    tlp2 = _extension(marking, TLP2_EXTENSION).get("tlp_2_0")
    candidates = [
        tlp2,
        marking.get("name"),
        definition.get("tlp") if isinstance(definition, dict) else definition,
        marking.get("definition_type"),
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


def highest_tlp(refs: Iterable[Any], known: Mapping[str, str]) -> str | None:
    """The most restrictive TLP among ``object_marking_refs`` (``None``: no TLP marking)."""
    levels = [known.get(ref) or STANDARD_TLP_IDS.get(ref) for ref in refs if isinstance(ref, str)]
    ranked = [TLP_LEVELS.index(level) for level in levels if level in TLP_LEVELS]
    return TLP_LEVELS[max(ranked)] if ranked else None
