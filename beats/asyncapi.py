"""The whole system's AsyncAPI document, ``docs/asyncapi.json``: every beat with its default
settings (SSE on its default port, its Kafka topics) and the gateway in front of them.

``python -m beats.asyncapi`` rewrites the file; ``python -m beats.asyncapi --check`` fails when
it differs from what the code generates (``tests/asyncapi`` checks it too). Each running service
serves its own document as ``GET /asyncapi.json``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from beats.catalog import EVENTS
from beats.cli import RUN
from common.asyncapi import Document, Publisher, add_beat, add_gateway
from common.schema import DEAD_LETTER_CHANNEL

__all__ = ["DOCUMENT", "main", "render", "system_document"]

DOCUMENT = Path(__file__).resolve().parent.parent / "docs" / "asyncapi.json"
KAFKA = "localhost:9092"


def publisher(name: str) -> Publisher:
    """The beat ``name`` with its default settings (no environment, no command line)."""
    command = RUN[name]
    module = importlib.import_module(command.module)
    settings = getattr(module, command.settings).model_construct()
    channels = {*module.channels(settings), DEAD_LETTER_CHANNEL}
    schema = importlib.import_module(f"beats.{name}.schema")
    return Publisher(
        name=name,
        events=EVENTS[name],
        channels=tuple(sorted(channels)),
        http=f"localhost:{settings.port}",
        kafka_prefix=settings.kafka_topic_prefix,
        description=schema.DESCRIPTION,
    )


def system_document() -> dict[str, Any]:
    document = Document(
        "Works Beats",
        "Every beat's SSE streams and Kafka topics (default settings, Kafka at "
        f"{KAFKA}), and the gateway in front of them.",
    )
    beats = [publisher(name) for name in EVENTS]
    for beat in beats:
        add_beat(document, beat, kafka=KAFKA, prefix=f"{beat.name}-")
    gateway = importlib.import_module(RUN["gateway"].module)
    port = getattr(gateway, RUN["gateway"].settings).model_construct().port
    add_gateway(document, beats, http=f"localhost:{port}")
    return document.doc


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m beats.asyncapi", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    parser.add_argument("path", nargs="?", type=Path, default=DOCUMENT)
    args = parser.parse_args(argv)
    text = render(system_document())
    if args.check:
        if not args.path.is_file() or args.path.read_text() != text:
            print(f"{args.path} is stale: run python -m beats.asyncapi", file=sys.stderr)
            return 1
        return 0
    args.path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
