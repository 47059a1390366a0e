"""The peer's admin API, for operators: ``p2pctl cache ls|rm`` and ``p2pctl preheat``.

JSON in and out; every error is ``{"error": message}``.

- ``GET /api/v1/admin/blobs``: the cache, complete blobs (least recently used first) and
  downloads in progress;
- ``GET /api/v1/admin/blobs/<digest>``: one blob, ``complete``, ``downloading`` or
  ``failed`` (with why); 404 when the peer has not heard of it;
- ``PUT /api/v1/admin/blobs/<digest>``: fetch it now, body ``{"registry", "repository",
  "authorization"?}``; 202 started (or already running), 200 already cached;
- ``DELETE /api/v1/admin/blobs/<digest>``: remove a complete blob; 404 when not cached,
  409 while it downloads or a client reads it.

The routes are mounted on both listeners: the registry mirror (loopback by default, so
``p2pctl cache`` works on the node itself, with or without a scheduler) and the piece
server, the address the scheduler knows, where ``p2pctl preheat`` reaches seed peers.

Who may call it: with a cluster token configured, every request must carry it as a
bearer token. Without one, only clients on a loopback address are served: a peer with
no token must not let every machine that reaches its piece port empty its cache or make
it download.

A blob fetched here is an ordinary download: with a scheduler it registers like any
other (a seed goes to the registry, a normal peer fetches from the swarm), and the peer
checks it may read the blob with a ``HEAD`` carrying ``authorization`` first, exactly as
for a client of the mirror. ``authorization`` is the registry credential header the
caller obtained (``Bearer <pull token>``); it is used for this download and not stored.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import logging
import os
from collections import OrderedDict
from typing import Any

from aiohttp import web

from peer.engine import CacheFull, Engine, SwarmClients, peer_id_for
from peer.origin import BlobOrigin
from peer.scheduler_client import SchedulerRejected, SchedulerUnavailable
from peer.storage import StorageError
from peer.task import BlobTask, TaskState
from registry_proxy.errors import ProtocolError, UpstreamError
from registry_proxy.reference import parse_digest, validate_name
from registry_proxy.upstream import UpstreamClient, resolve_upstream

log = logging.getLogger(__name__)

ADMIN_PREFIX = "/api/v1/admin"
# Downloads started here whose outcome is still worth reporting; the oldest are forgotten.
MAX_REMEMBERED = 1000
_MAX_BODY_BYTES = 64 * 1024


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def is_loopback(remote: str | None) -> bool:
    if remote is None:
        return False
    try:
        return ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False  # a unix socket or something stranger: not a loopback client


class PeerAdmin:
    def __init__(
        self,
        engine: Engine,
        client: UpstreamClient,
        token: str | None,
        swarm: SwarmClients | None,
    ) -> None:
        self._engine = engine
        self._client = client
        self._token = token
        self._swarm = swarm
        self._started: OrderedDict[str, BlobTask] = OrderedDict()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(f"{ADMIN_PREFIX}/blobs", self.list_blobs)
        app.router.add_get(f"{ADMIN_PREFIX}/blobs/{{digest}}", self.get_blob)
        app.router.add_put(f"{ADMIN_PREFIX}/blobs/{{digest}}", self.fetch_blob)
        app.router.add_delete(f"{ADMIN_PREFIX}/blobs/{{digest}}", self.remove_blob)

    # -- checks ------------------------------------------------------------------------

    def _refusal(self, request: web.Request) -> web.Response | None:
        """The answer to a caller that may not use the admin API, or None."""
        if self._token is None:
            if is_loopback(request.remote):
                return None
            return _error(
                403, "this peer has no cluster token: its admin API serves loopback clients only"
            )
        sent = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        if hmac.compare_digest(sent, f"Bearer {self._token}".encode()):
            return None
        return web.json_response(
            {"error": "missing or wrong cluster token (Authorization: Bearer)"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="starling"'},
        )

    # -- views -------------------------------------------------------------------------

    def _blob_json(self, digest: str) -> dict[str, Any] | None:
        engine = self._engine
        complete = engine.complete(digest)
        if complete is not None:
            # Every read touches the metadata file (BlobStore.touch): its mtime is the
            # last use, and survives restarts.
            meta_path = engine.store.blob_path(digest).with_suffix(".json")
            try:
                last_used: float | None = os.stat(meta_path).st_mtime
            except OSError:
                last_used = None
            return {
                "digest": digest,
                "state": "complete",
                "size_bytes": complete.size_bytes,
                "bytes": complete.size_bytes,
                "last_used": last_used,
                "in_use": engine.index.in_use(digest),
                "error": None,
            }
        task = engine.running(digest) or self._started.get(digest)
        if task is None or task.state is TaskState.COMPLETE:
            return None  # complete but evicted or removed since: not here any more
        failed = task.state is TaskState.FAILED
        return {
            "digest": digest,
            "state": "failed" if failed else "downloading",
            "size_bytes": task.size_bytes,
            "bytes": task.servable_bytes,
            "last_used": None,
            "in_use": engine.index.in_use(digest),
            "error": str(task.error or "failed") if failed else None,
        }

    async def list_blobs(self, request: web.Request) -> web.Response:
        if (refusal := self._refusal(request)) is not None:
            return refusal
        engine = self._engine
        digests = [*engine.index.digests(), *(d for d in self._started if d not in engine.index)]
        blobs = [b for b in map(self._blob_json, dict.fromkeys(digests)) if b is not None]
        return web.json_response(
            {
                "blobs": blobs,
                "cache_bytes": engine.index.blob_bytes,
                "cache_quota_bytes": engine.index.quota_bytes,
            }
        )

    async def get_blob(self, request: web.Request) -> web.Response:
        if (refusal := self._refusal(request)) is not None:
            return refusal
        digest = request.match_info["digest"]
        try:
            digest = str(parse_digest(digest))
        except ProtocolError as exc:
            return _error(400, exc.message)
        blob = self._blob_json(digest)
        if blob is None:
            return _error(404, f"{digest} is not in this peer's cache")
        return web.json_response(blob)

    # -- changes -----------------------------------------------------------------------

    async def fetch_blob(self, request: web.Request) -> web.Response:
        """Start downloading a blob into the cache (preheat)."""
        if (refusal := self._refusal(request)) is not None:
            return refusal
        try:
            digest = str(parse_digest(request.match_info["digest"]))
            registry, repository, authorization = await self._fetch_request(request)
            upstream = resolve_upstream(self._client.config, registry)
            validate_name(repository)
        except ProtocolError as exc:
            return _error(400, exc.message)
        engine = self._engine
        if engine.complete(digest) is not None:
            return web.json_response(self._blob_json(digest))
        task = engine.running(digest)
        if task is None:
            try:
                size_bytes = await self._size_at_registry(
                    upstream, repository, digest, authorization
                )
            except _RegistryRefused as exc:
                return _error(502, str(exc))
            try:
                task = engine.ensure_task(
                    BlobOrigin(upstream, repository, digest, authorization), size_bytes
                )
            except CacheFull as exc:
                return _error(507, str(exc))
            except StorageError as exc:
                return _error(500, f"cannot write the cache: {exc}")
            log.info("%s: fetching from %s/%s on request", digest, registry, repository)
        self._remember(digest, task)
        return web.json_response(self._blob_json(digest), status=202)

    async def _fetch_request(self, request: web.Request) -> tuple[str, str, str | None]:
        raw = await request.content.read(_MAX_BODY_BYTES + 1)
        if len(raw) > _MAX_BODY_BYTES:
            raise ProtocolError(400, "BODY", f"body larger than {_MAX_BODY_BYTES} bytes")
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            raise ProtocolError(400, "BODY", "body is not JSON") from None
        if not isinstance(body, dict):
            raise ProtocolError(400, "BODY", "body must be a JSON object")
        unknown = set(body) - {"registry", "repository", "authorization"}
        if unknown:
            raise ProtocolError(400, "BODY", f"unknown fields: {', '.join(sorted(unknown))}")
        registry, repository = body.get("registry"), body.get("repository")
        authorization = body.get("authorization")
        if not isinstance(registry, str) or not isinstance(repository, str):
            raise ProtocolError(400, "BODY", "registry and repository are required strings")
        if authorization is not None and not isinstance(authorization, str):
            raise ProtocolError(400, "BODY", "authorization must be a string")
        return registry, repository, authorization

    async def _size_at_registry(
        self, upstream: Any, repository: str, digest: str, authorization: str | None
    ) -> int:
        """The blob's size from a ``HEAD``, which also proves the caller may read it."""
        try:
            response = await self._client.blob(upstream, repository, digest, "HEAD", authorization)
        except UpstreamError as exc:
            raise _RegistryRefused(f"registry unreachable: {exc}") from exc
        async with response:
            if response.status == 200 and response.content_length is not None:
                return response.content_length
            raise _RegistryRefused(
                f"registry {upstream.registry} answered {response.status} for {repository}@{digest}"
            )

    def _remember(self, digest: str, task: BlobTask) -> None:
        self._started[digest] = task
        self._started.move_to_end(digest)
        while len(self._started) > MAX_REMEMBERED:
            self._started.popitem(last=False)

    async def remove_blob(self, request: web.Request) -> web.Response:
        if (refusal := self._refusal(request)) is not None:
            return refusal
        try:
            digest = str(parse_digest(request.match_info["digest"]))
        except ProtocolError as exc:
            return _error(400, exc.message)
        engine = self._engine
        if engine.running(digest) is not None:
            return _error(409, f"{digest} is downloading; remove it once it is complete")
        self._started.pop(digest, None)
        complete = engine.complete(digest)
        if complete is None:
            return _error(404, f"{digest} is not in this peer's cache")
        if engine.index.in_use(digest):
            return _error(409, f"{digest} is being read by a client; try again later")
        engine.remove_complete(digest)
        if self._swarm is not None:
            # Other peers must stop being sent here for it. A scheduler that cannot be
            # reached learns it when a child finds the blob gone.
            peer_id = peer_id_for(engine.config.host_id, digest)
            with contextlib.suppress(SchedulerUnavailable, SchedulerRejected):
                await self._swarm.scheduler.leave(peer_id)
        return web.json_response({"digest": digest, "removed_bytes": complete.size_bytes})


class _RegistryRefused(Exception):
    """The registry could not be asked about the blob, or said no."""
