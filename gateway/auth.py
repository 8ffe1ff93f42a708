"""Bearer-token authentication and authorisation of the gateway.

The tokens file (``--tokens-file``, YAML or JSON; see docs/gateway.md) lists tokens by ``name`` with
``sha256`` (the hex digest of the token, what production uses) or ``token`` (plain, for
development), ``scopes`` (``<beat>``, ``<beat>:<channel>``, ``*`` for every beat, ``admin``
for the operator's view, ``metrics`` for ``/metrics`` only) and an optional ``tlp_max`` ceiling
for OpenCTI events. A request presents its token as ``Authorization: Bearer <token>``, or for
browsers' ``EventSource`` as the ``access_token`` query parameter or cookie. Every presentation
must name the same token: two different ones (in two places, or a repeated header, parameter
or cookie) are refused with 400 ``invalid_request`` (RFC 6750 §3.1) rather than one being
chosen. The presented token is hashed and compared with every entry in constant time
(:func:`hmac.compare_digest`); only the entry's ``name`` is ever logged.

Without a tokens file the gateway is open: every request is allowed and sees everything.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "ADMIN",
    "METRICS",
    "TLP_LEVELS",
    "AuthError",
    "Authenticator",
    "Principal",
    "TokenEntry",
    "load_tokens",
    "tlp_allows",
]

_log = logging.getLogger(__name__)

TLP_LEVELS = ("clear", "green", "amber", "amber+strict", "red")
_TLP_ALIASES = {"white": "clear"}
TlpLevel = Literal["clear", "green", "amber", "amber+strict", "red"]
COOKIE = "access_token"


class TokenEntry(BaseModel):
    """One entry of the tokens file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    token: str | None = Field(None, min_length=1, repr=False)
    scopes: list[str] = Field(min_length=1)
    tlp_max: TlpLevel | None = None

    @model_validator(mode="after")
    def _one_secret(self) -> TokenEntry:
        if (self.sha256 is None) == (self.token is None):
            raise ValueError(f"token {self.name!r}: give exactly one of sha256 and token")
        return self

    def digest(self) -> bytes:
        if self.sha256 is not None:
            return bytes.fromhex(self.sha256)
        assert self.token is not None
        return hashlib.sha256(self.token.encode()).digest()


class _TokensFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tokens: list[TokenEntry]


def load_tokens(path: Path) -> list[TokenEntry]:
    """Read and validate a tokens file; ``ValueError`` with a message that shows no secret."""
    text = path.read_text()
    try:
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        tokens = _TokensFile.model_validate(raw).tokens
    except (ValueError, yaml.YAMLError) as exc:
        detail = (
            "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            if isinstance(exc, ValidationError)
            else type(exc).__name__
        )
        raise ValueError(f"tokens file {path}: {detail}") from None
    names = [entry.name for entry in tokens]
    if len(set(names)) != len(names):
        raise ValueError(f"tokens file {path}: token names must be unique")
    return tokens


def tlp_allows(ceiling: str | None, tlp: object) -> bool:
    """Whether an event marked ``tlp`` may be shown under ``ceiling`` (``None``: no ceiling).
    An unknown marking is treated as the most restrictive (``red``)."""
    if ceiling is None or tlp is None:
        return True
    level = _TLP_ALIASES.get(str(tlp).lower(), str(tlp).lower())
    rank = TLP_LEVELS.index(level) if level in TLP_LEVELS else len(TLP_LEVELS) - 1
    return rank <= TLP_LEVELS.index(ceiling)


@dataclass(frozen=True)
class Principal:
    """Who is asking and what they may see. ``name`` is safe to log."""

    name: str
    scopes: frozenset[str]
    tlp_max: str | None = None

    def allows(self, beat: str, channel: str | None = None) -> bool:
        """Whether the scopes cover the beat (``channel`` None: every channel of it)."""
        if "*" in self.scopes or beat in self.scopes:
            return True
        return channel is not None and f"{beat}:{channel}" in self.scopes

    def channels(self, beat: str) -> list[str]:
        """Channels of ``beat`` granted one by one (for a principal without the whole beat)."""
        prefix = f"{beat}:"
        return sorted(s[len(prefix) :] for s in self.scopes if s.startswith(prefix))

    def any_scope(self, beat: str) -> bool:
        return self.allows(beat) or bool(self.channels(beat))

    @property
    def admin(self) -> bool:
        """The operator's view: internal URLs, errors, every stream; ``/metrics``, ``/docs``."""
        return ADMIN in self.scopes

    @property
    def metrics(self) -> bool:
        return self.admin or METRICS in self.scopes

    def sees_dead_letters(self, beat: str) -> bool:
        """An explicit ``<beat>:deadletter`` scope: dead letters of that beat whatever their
        TLP (they are red: their content is unknown)."""
        return f"{beat}:deadletter" in self.scopes


ADMIN = "admin"
METRICS = "metrics"
OPEN = Principal(name="anonymous", scopes=frozenset({"*", ADMIN}))


class AuthError(Exception):
    """A refused request: 401 (``invalid_token`` or no token) or 403 (``insufficient_scope``)."""

    def __init__(self, status: int, error: str | None, description: str, reason: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        self.reason = reason

    def headers(self) -> dict[str, str]:
        challenge = 'Bearer realm="works-beats"'
        if self.error is not None:
            challenge += f', error="{self.error}", error_description="{self.description}"'
        return {"WWW-Authenticate": challenge}

    def body(self) -> dict[str, str]:
        return {"error": self.error or "unauthorized", "error_description": self.description}


class Authenticator:
    """Find the principal of a request's token (``None`` entries: the gateway is open)."""

    def __init__(self, entries: Iterable[TokenEntry] | None) -> None:
        self.open = entries is None
        self._entries = [(entry, entry.digest()) for entry in entries or ()]

    @staticmethod
    def presented(
        authorizations: Iterable[str], queries: Iterable[str], cookie_headers: Iterable[str]
    ) -> str | None:
        """The token of a request: from every ``Authorization: Bearer`` header, ``access_token``
        query parameter and ``access_token`` cookie. They must agree: different tokens are an
        :class:`AuthError` 400 ``invalid_request``. ``None`` when none is presented."""
        found: set[str] = set()
        for header in authorizations:
            scheme, _, value = header.partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                found.add(value.strip())
        found.update(value for value in queries if value)
        found.update(_cookie_tokens(cookie_headers))
        if len(found) > 1:
            raise AuthError(
                400,
                "invalid_request",
                "the request presents more than one token (header, access_token query or "
                "cookie): present one",
                "conflict",
            )
        return next(iter(found), None)

    def authenticate(self, token: str | None) -> Principal:
        """The principal, or :class:`AuthError` (401) for a missing or unknown token."""
        if self.open:
            return OPEN
        if token is None:
            raise AuthError(401, None, "a bearer token is required", "missing")
        digest = hashlib.sha256(token.encode()).digest()
        found: TokenEntry | None = None
        for entry, expected in self._entries:
            if hmac.compare_digest(digest, expected) and found is None:
                found = entry
        if found is None:
            raise AuthError(401, "invalid_token", "the token is not known", "invalid")
        return Principal(found.name, frozenset(found.scopes), found.tlp_max)

    @staticmethod
    def forbid(principal: Principal, what: str) -> AuthError:
        _log.info("token %r: refused %s (insufficient scope)", principal.name, what)
        return AuthError(
            403, "insufficient_scope", f"the token's scopes do not cover {what}", "scope"
        )


def _cookie_tokens(headers: Iterable[str]) -> list[str]:
    tokens = []
    for header in headers:
        for part in header.split(";"):
            name, sep, value = part.strip().partition("=")
            if sep and name.strip() == COOKIE and value.strip():
                tokens.append(_unquote(value.strip()))
    return tokens


def _unquote(value: str) -> str:
    if not (value.startswith('"') and value.endswith('"')):
        return value
    try:
        cookie: SimpleCookie = SimpleCookie()
        cookie.load(f"{COOKIE}={value}")
        return cookie[COOKIE].value
    except (CookieError, KeyError):
        return value


def describe(entries: list[TokenEntry]) -> list[dict[str, Any]]:
    """Entries as safe to log (names and scopes only)."""
    return [{"name": e.name, "scopes": e.scopes, "tlp_max": e.tlp_max} for e in entries]
