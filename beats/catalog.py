"""Every beat's event types, by beat name: what the gateway's AsyncAPI document and
``docs/asyncapi.json`` list (each beat serves its own from the same declarations)."""

from __future__ import annotations

from beats.ditto import schema as ditto
from beats.fiware import schema as fiware
from beats.hivemq import schema as hivemq
from beats.opencti import schema as opencti
from common.schema import EventSpec, dead_letter_spec

__all__ = ["EVENTS"]

EVENTS: dict[str, tuple[EventSpec, ...]] = {
    "hivemq": (*hivemq.EVENTS, dead_letter_spec("hivemq")),
    "fiware": (*fiware.EVENTS, dead_letter_spec("fiware")),
    "ditto": (*ditto.EVENTS, dead_letter_spec("ditto")),
    "opencti": (*opencti.EVENTS, dead_letter_spec("opencti", opencti.DEAD_LETTER_EXTENSIONS)),
}
"""The types of each beat, its dead letters included (as :class:`~common.service.Beat` has
them)."""
