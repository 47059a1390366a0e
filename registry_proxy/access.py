"""May this client read this blob? Asked of the upstream with the client's own credentials.

A blob in our cache or on other peers must only reach clients the registry would have
served it to, so every blob request is checked with a ``HEAD`` carrying the client's
``Authorization``. Positive answers are cached briefly per credential, repository and
digest; refusals are never cached, so a granted token works at once.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from registry_proxy.upstream import Upstream, UpstreamClient

# Headers of an upstream refusal the client needs to answer it (the token flow).
_REFUSAL_HEADERS = ("WWW-Authenticate", "Docker-Distribution-Api-Version")
_MAX_CACHED = 10_000


@dataclass(frozen=True)
class BlobAccess:
    """The upstream's answer to ``HEAD`` of a blob for one client."""

    status: int
    size_bytes: int | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def allowed(self) -> bool:
        return self.status == 200 and self.size_bytes is not None


class AccessChecker:
    def __init__(
        self,
        client: UpstreamClient,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._ttl_s = ttl_s
        self._clock = clock
        self._granted: OrderedDict[tuple[str, str, str, str], tuple[float, BlobAccess]] = (
            OrderedDict()
        )

    async def check(
        self, upstream: Upstream, name: str, digest: str, authorization: str | None
    ) -> BlobAccess:
        """Raises :class:`UpstreamError` when the upstream cannot be asked."""
        credential = hashlib.sha256((authorization or "").encode()).hexdigest()
        key = (upstream.registry, name, digest, credential)
        now = self._clock()
        cached = self._granted.get(key)
        if cached is not None and cached[0] > now:
            self._granted.move_to_end(key)
            return cached[1]
        response = await self._client.blob(upstream, name, digest, "HEAD", authorization)
        async with response:
            if response.status == 200 and response.content_length is not None:
                access = BlobAccess(200, response.content_length)
                self._granted[key] = (now + self._ttl_s, access)
                while len(self._granted) > _MAX_CACHED:
                    self._granted.popitem(last=False)
                return access
            headers = {h: response.headers[h] for h in _REFUSAL_HEADERS if h in response.headers}
            status = response.status if response.status != 200 else 502
            return BlobAccess(status, None, headers)
