"""The cluster token: every ``/api/v1`` request but the API document must carry it.

Peers and the scheduler share one secret; a request proves it knows the secret with
``Authorization: Bearer <token>``. The comparison takes the same time whatever the
token's first wrong byte, so the secret cannot be guessed byte by byte from timings.
"""

from __future__ import annotations

import hmac

API_PREFIX = "/api/v1/"
# Readable without the token, so clients and tools can discover the API.
PUBLIC_API_PATHS = frozenset({"/api/v1/openapi.json"})
CHALLENGE = 'Bearer realm="starling"'


def requires_token(path: str) -> bool:
    return path.startswith(API_PREFIX) and path not in PUBLIC_API_PATHS


def bearer_matches(authorization: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header value carries ``token`` as a bearer token."""
    if authorization is None:
        return False
    scheme, _, presented = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    # surrogateescape: header bytes that are not UTF-8 still compare, and never match.
    presented_bytes = presented.strip().encode("utf-8", "surrogateescape")
    return hmac.compare_digest(presented_bytes, token.encode())
