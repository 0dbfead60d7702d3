"""Credentials for the emulator: API keys and short-lived bearer tokens.

Three forms are accepted on the WebSocket upgrade (protocol page, "Endpoints
and auth"): ``Authorization: ApiKey <key>``, ``Authorization: Bearer <token>``
and ``Sec-WebSocket-Protocol: bearer, <token>``. Tokens come from
``POST /v1/auth/token`` and expire after ``token_ttl_s``. A credential in the
query string is refused: the real API never reads one there.

Nothing here logs or echoes a key or a token; :class:`AuthError` messages are
fixed strings.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from schemas.wire import TokenResponse

__all__ = ["QUERY_CREDENTIALS", "AuthError", "Authenticator", "Credentials"]

# Names a careless client might use to put a secret in the URL.
QUERY_CREDENTIALS: frozenset[str] = frozenset(
    {"api_key", "apikey", "key", "token", "access_token", "authorization"}
)


class AuthError(Exception):
    """The request carries no acceptable credential: answer 401 with ``str(exc)``."""


@dataclass(frozen=True)
class Credentials:
    """What the upgrade request presented. ``subprotocol`` is ``"bearer"`` when the
    token came in ``Sec-WebSocket-Protocol``: the handshake must then select it."""

    kind: str  # "api_key" | "bearer"
    subprotocol: str | None = None


class Authenticator:
    """Checks credentials and issues tokens.

    ``api_keys`` empty means any non-empty key is accepted (dev mode). ``clock``
    is injectable so token expiry is testable without waiting.
    """

    def __init__(
        self,
        api_keys: Iterable[str] = (),
        *,
        token_ttl_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keys = frozenset(api_keys)
        self._ttl = token_ttl_s
        self._clock = clock
        self._tokens: dict[str, float] = {}

    @property
    def mode(self) -> str:
        """A printable description of the auth mode (never a key)."""
        if self._keys:
            return f"{len(self._keys)} configured API key(s)"
        return "any non-empty API key"

    def issue_token(self, authorization: str | None) -> TokenResponse:
        """Answer ``POST /v1/auth/token``; raises :class:`AuthError` (-> 401)."""
        key = _scheme_value(authorization, "apikey")
        if key is None or not self._key_ok(key):
            raise AuthError("a valid 'Authorization: ApiKey <key>' header is required")
        token = secrets.token_urlsafe(24)
        self._tokens[token] = self._clock() + self._ttl
        return TokenResponse(access_token=token, expires_in=max(1, round(self._ttl)))

    def check(
        self,
        headers: Mapping[str, str],
        subprotocols: Sequence[str],
        query: Mapping[str, str],
    ) -> Credentials:
        """Authenticate an upgrade request; raises :class:`AuthError` (-> 401).

        ``headers`` maps lower-case names to values; ``subprotocols`` is the
        offered ``Sec-WebSocket-Protocol`` list in order.
        """
        if QUERY_CREDENTIALS & {name.lower() for name in query}:
            raise AuthError("credentials are not accepted in the query string")
        authorization = headers.get("authorization")
        key = _scheme_value(authorization, "apikey")
        if key is not None:
            if self._key_ok(key):
                return Credentials("api_key")
            raise AuthError("invalid API key")
        token = _scheme_value(authorization, "bearer")
        if token is not None:
            self._require_token(token)
            return Credentials("bearer")
        return self._check_subprotocol(subprotocols)

    def _check_subprotocol(self, subprotocols: Sequence[str]) -> Credentials:
        # Browsers send `bearer, <token>` (protocol page); the token is the
        # entry right after `bearer`.
        lowered = [value.lower() for value in subprotocols]
        if "bearer" not in lowered:
            raise AuthError("missing credentials")
        index = lowered.index("bearer")
        if index + 1 >= len(subprotocols):
            raise AuthError("missing bearer token")
        self._require_token(subprotocols[index + 1])
        return Credentials("bearer", subprotocol=subprotocols[index])

    def _key_ok(self, key: str) -> bool:
        if not self._keys:
            return bool(key)
        return any(secrets.compare_digest(key, known) for known in self._keys)

    def _require_token(self, token: str) -> None:
        expires = self._tokens.get(token)
        if expires is None:
            raise AuthError("unknown bearer token")
        if self._clock() >= expires:
            del self._tokens[token]
            raise AuthError("bearer token expired")


def _scheme_value(authorization: str | None, scheme: str) -> str | None:
    """The credential after ``scheme`` (case-insensitive), or ``None``."""
    if not authorization:
        return None
    name, _, value = authorization.strip().partition(" ")
    if name.lower() != scheme:
        return None
    return value.strip()
