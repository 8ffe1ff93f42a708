"""The bare stack under the FIWARE beat's notification endpoint, for ``bench/fiware_path.py``.

``python -m bench.bare_fiware --port N``: a Starlette app served like a beat
(:mod:`bench.bare`) whose ``POST /notify`` reads the body, ``json.loads`` it and answers 204
(Orion's notification carries no reply). Nothing is stored, checked or forwarded: the rate it
takes notifications at is the ceiling of this HTTP stack in one Python process.
"""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.bare import arguments, run, serve

__all__ = ["app"]


async def _notify(request: Request) -> Response:
    json.loads(await request.body())
    return Response(status_code=204)


async def _healthz(request: Request) -> Response:
    return Response(status_code=200)


app = Starlette(routes=[Route("/notify", _notify, methods=["POST"]), Route("/healthz", _healthz)])


def main() -> None:
    args = arguments(__doc__.splitlines()[0] if __doc__ else "").parse_args()
    run(serve(app, port=args.port))


if __name__ == "__main__":
    main()
