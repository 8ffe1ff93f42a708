"""The gateway: one front door to every beat (auth, fan-out, replay, filters, status, dashboard).

It talks to the beats over HTTP only (their ``/events``, ``/readyz`` and ``/metrics``).
"""
