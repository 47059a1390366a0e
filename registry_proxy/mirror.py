"""The registry mirror: an aiohttp app speaking the pull side of the OCI distribution API.

Pings, manifests and tag lists go to the upstream unchanged (headers, status, body),
so content negotiation and the token flow work as if the client talked to the registry.
Blobs are checked for access, then handed to a pluggable :data:`BlobHandler` (the peer
engine); without one they are relayed from the upstream too.

Every error the mirror produces itself is an OCI error body. When it cannot serve a
request it answers early with a 5xx, which makes containerd try its next host.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from registry_proxy.access import AccessChecker
from registry_proxy.errors import ProtocolError, UpstreamError, oci_error_body
from registry_proxy.reference import Kind, RegistryPath, parse_path
from registry_proxy.upstream import (
    HOP_BY_HOP,
    Upstream,
    UpstreamClient,
    UpstreamConfig,
    resolve_upstream,
)

log = logging.getLogger(__name__)

RELAY_CHUNK_BYTES = 256 * 1024
_REFUSAL_CODES = {401: "UNAUTHORIZED", 403: "DENIED", 404: "BLOB_UNKNOWN", 429: "TOOMANYREQUESTS"}


@dataclass(frozen=True)
class BlobRequest:
    """A blob request that passed validation and the upstream's access check."""

    upstream: Upstream
    name: str
    digest: str
    authorization: str | None
    size_bytes: int


BlobHandler = Callable[[web.Request, BlobRequest], Awaitable[web.StreamResponse]]

UPSTREAM_CLIENT_KEY = web.AppKey("upstream_client", UpstreamClient)
ACCESS_CHECKER_KEY = web.AppKey("access_checker", AccessChecker)


def oci_error_response(status: int, code: str, message: str) -> web.Response:
    return web.Response(
        status=status, body=oci_error_body(code, message), content_type="application/json"
    )


def create_mirror_app(
    config: UpstreamConfig,
    blob_handler: BlobHandler | None = None,
) -> web.Application:
    """An app serving ``/v2/``; ``blob_handler`` serves blob GETs (default: relay).

    A caller that needs the upstream client itself puts one under
    :data:`UPSTREAM_CLIENT_KEY` in an earlier cleanup context, and closes it.
    """
    app = web.Application(middlewares=[_oci_errors])
    mirror = _Mirror(app, config, blob_handler)
    app.router.add_route("*", "/v2", mirror.dispatch)
    app.router.add_route("*", "/v2/{tail:.*}", mirror.dispatch)
    app.cleanup_ctx.append(mirror.lifetime)
    return app


@web.middleware
async def _oci_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except ProtocolError as exc:
        log.info("%s %s -> %d %s", request.method, request.path, exc.status, exc.message)
        return web.Response(status=exc.status, body=exc.body(), content_type="application/json")
    except UpstreamError as exc:
        log.warning("%s %s -> 502 upstream unavailable: %s", request.method, request.path, exc)
        return oci_error_response(502, "UNAVAILABLE", f"upstream registry unavailable: {exc}")
    except web.HTTPException:
        raise
    except Exception:
        # A bug still answers in OCI form: containerd then moves on to its next host.
        log.exception("%s %s -> 500 internal error", request.method, request.path)
        return oci_error_response(500, "UNKNOWN", "internal error in the Starling mirror")


class _Mirror:
    def __init__(
        self,
        app: web.Application,
        config: UpstreamConfig,
        blob_handler: BlobHandler | None,
    ) -> None:
        self._app = app
        self._config = config
        self._blob_handler = blob_handler or relay_blob

    async def lifetime(self, app: web.Application) -> AsyncIterator[None]:
        owned = UPSTREAM_CLIENT_KEY not in app
        if owned:
            app[UPSTREAM_CLIENT_KEY] = UpstreamClient(self._config)
        client = app[UPSTREAM_CLIENT_KEY]
        app[ACCESS_CHECKER_KEY] = AccessChecker(client, self._config.access_cache_ttl_s)
        yield
        if owned:
            await client.close()

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            raise ProtocolError(405, "UNSUPPORTED", "the mirror is read-only (GET and HEAD only)")
        target = parse_path(request.path)
        upstream = resolve_upstream(self._config, request.query.get("ns"))
        if target.kind is Kind.BLOB:
            return await self._blob(request, upstream, target)
        return await relay(request, upstream, request.app[UPSTREAM_CLIENT_KEY])

    async def _blob(
        self, request: web.Request, upstream: Upstream, target: RegistryPath
    ) -> web.StreamResponse:
        authorization = request.headers.get("Authorization")
        access = await request.app[ACCESS_CHECKER_KEY].check(
            upstream, target.name, target.reference, authorization
        )
        if not access.allowed or access.size_bytes is None:
            # The upstream answered a HEAD, so there is no body to pass on: say why.
            code = _REFUSAL_CODES.get(access.status, "UNKNOWN")
            message = f"upstream {upstream.registry} answered {access.status} for this blob"
            return web.Response(
                status=access.status,
                headers={**access.headers, "Content-Type": "application/json"},
                body=oci_error_body(code, message),
            )
        if request.method == "HEAD":
            head = web.StreamResponse(
                status=200,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Docker-Content-Digest": target.reference,
                    "Accept-Ranges": "bytes",
                },
            )
            head.content_length = access.size_bytes
            await head.prepare(request)
            await head.write_eof()
            return head
        blob = BlobRequest(
            upstream, target.name, target.reference, authorization, access.size_bytes
        )
        return await self._blob_handler(request, blob)


async def relay(
    request: web.Request, upstream: Upstream, client: UpstreamClient
) -> web.StreamResponse:
    """Pass a request to the upstream and its response back, both unchanged."""
    upstream_response = await client.forward(
        upstream, request.method, _path_without_ns(request), request.headers
    )
    async with upstream_response:
        return await _relay_response(request, upstream_response)


async def relay_blob(request: web.Request, blob: BlobRequest) -> web.StreamResponse:
    """Default blob handler: relay the blob from the upstream, following redirects."""
    client = request.app[UPSTREAM_CLIENT_KEY]
    upstream_response = await client.blob(
        blob.upstream,
        blob.name,
        blob.digest,
        "GET",
        blob.authorization,
        request.headers.get("Range"),
    )
    async with upstream_response:
        return await _relay_response(request, upstream_response)


async def _relay_response(
    request: web.Request, upstream_response: aiohttp.ClientResponse
) -> web.StreamResponse:
    response = web.StreamResponse(status=upstream_response.status)
    for name, value in upstream_response.headers.items():
        if name.lower() not in HOP_BY_HOP:
            response.headers.add(name, value)
    if upstream_response.content_length is not None:
        response.content_length = upstream_response.content_length
    await response.prepare(request)
    if request.method != "HEAD":
        try:
            async for chunk in upstream_response.content.iter_chunked(RELAY_CHUNK_BYTES):
                await response.write(chunk)
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Headers are gone already: end the response short so the client resumes.
            log.warning("relay of %s cut short: %r", request.path, exc)
            raise ConnectionResetError(str(exc)) from exc
    await response.write_eof()
    return response


def _path_without_ns(request: web.Request) -> str:
    """The path and query to send upstream; ``ns`` is for us, not for the registry."""
    query = [(k, v) for k, v in request.query.items() if k != "ns"]
    url = request.rel_url.with_query(query)
    return url.raw_path_qs if query else url.raw_path
