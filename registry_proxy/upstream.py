"""Which upstream registry a request goes to, and the HTTP client that talks to it.

containerd names the registry an image comes from in the ``ns`` query parameter of
every mirror request; clients that do not (skopeo) get the configured default.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from registry_proxy.errors import ProtocolError, UpstreamError

# Docker Hub is named docker.io in image references but served from another host.
_WELL_KNOWN_ENDPOINTS = {"docker.io": "https://registry-1.docker.io"}
_HOST_RE = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")

# Hop-by-hop headers (RFC 9110 section 7.6.1) and those the client library sets itself.
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Host",
        "Content-Length",
    )
)
MAX_REDIRECTS = 5
READ_BUFFER_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class UpstreamConfig:
    """How to reach upstream registries.

    ``endpoints`` maps a registry host as it appears in image references to the base
    URL actually contacted (a pull-through cache, a test proxy, Docker Hub's API host).
    ``insecure_registries`` are reached over plain HTTP, like Docker's option of that name.
    """

    default_registry: str = "docker.io"
    insecure_registries: tuple[str, ...] = ()
    endpoints: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    access_cache_ttl_s: float = 30.0


@dataclass(frozen=True)
class Upstream:
    """One upstream registry: its name in image references and the URL we contact."""

    registry: str
    base_url: str


def resolve_upstream(config: UpstreamConfig, ns: str | None) -> Upstream:
    registry = ns if ns else config.default_registry
    if not _HOST_RE.fullmatch(registry):
        raise ProtocolError(400, "NAME_INVALID", f"invalid registry host in ns: {registry!r}")
    if registry in config.endpoints:
        return Upstream(registry, config.endpoints[registry].rstrip("/"))
    if registry in _WELL_KNOWN_ENDPOINTS:
        return Upstream(registry, _WELL_KNOWN_ENDPOINTS[registry])
    scheme = "http" if registry in config.insecure_registries else "https"
    return Upstream(registry, f"{scheme}://{registry}")


def forwardable_headers(headers: Iterable[tuple[str, str]]) -> CIMultiDict[str]:
    """Copy end-to-end headers, keeping repeated ones (several ``Accept``) as sent."""
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers:
        if name.lower() not in HOP_BY_HOP:
            out.add(name, value)
    return out


class UpstreamClient:
    """Requests to upstream registries over one shared connection pool."""

    def __init__(self, config: UpstreamConfig) -> None:
        self.config = config
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=config.connect_timeout_s,
            sock_read=config.read_timeout_s,
        )
        # auto_decompress off: we relay bytes exactly as the registry sent them.
        self._session = aiohttp.ClientSession(
            timeout=timeout,
            auto_decompress=False,
            # A larger buffer than aiohttp's 64 KiB stops the flow control from pausing
            # and resuming the socket every few reads while a blob streams in.
            read_bufsize=READ_BUFFER_BYTES,
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent"),
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=60),
        )

    async def close(self) -> None:
        await self._session.close()

    async def forward(
        self,
        upstream: Upstream,
        method: str,
        path_qs: str,
        headers: CIMultiDictProxy[str] | CIMultiDict[str],
    ) -> aiohttp.ClientResponse:
        """Send a request on unchanged and return the response unread (no redirects)."""
        try:
            return await self._session.request(
                method,
                upstream.base_url + path_qs,
                headers=forwardable_headers(headers.items()),
                allow_redirects=False,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamError(f"{upstream.registry}: {exc}") from exc

    async def blob(
        self,
        upstream: Upstream,
        name: str,
        digest: str,
        method: str,
        authorization: str | None,
        range_header: str | None = None,
    ) -> aiohttp.ClientResponse:
        """Fetch (or HEAD) a blob, following redirects to object storage.

        Redirect targets are signed URLs on other hosts: the client's credentials are
        only sent to the registry itself, never along a redirect to another origin.
        """
        url = f"{upstream.base_url}/v2/{name}/blobs/{digest}"
        headers: dict[str, str] = {}
        if authorization:
            headers["Authorization"] = authorization
        if range_header is not None:
            headers["Range"] = range_header
        origin = _origin(url)
        for _ in range(MAX_REDIRECTS + 1):
            try:
                response = await self._session.request(
                    method, url, headers=headers, allow_redirects=False
                )
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise UpstreamError(f"{upstream.registry}: blob {digest}: {exc}") from exc
            if response.status not in (301, 302, 303, 307, 308):
                return response
            location = response.headers.get("Location")
            response.release()
            if not location:
                raise UpstreamError(f"{upstream.registry}: redirect without Location")
            url = str(response.url.join(URL(location)))
            if _origin(url) != origin:
                headers.pop("Authorization", None)
        raise UpstreamError(f"{upstream.registry}: over {MAX_REDIRECTS} redirects for {digest}")


def _origin(url: str) -> tuple[str, str, int | None]:
    parsed = URL(url)
    return (parsed.scheme, parsed.host or "", parsed.port)
