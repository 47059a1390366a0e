"""The peer's client of the p2p-scheduler JSON API (``/api/v1``).

The client may be given several scheduler replicas (a comma-separated list of URLs);
every request goes through :class:`peer.replicas.ReplicaRouter`, which sends each task's
calls to the replica that owns it and moves them to the next one when it dies. Only when
no replica can be reached (refused, timed out, a 5xx) is the answer
:class:`SchedulerUnavailable`, which the peer answers by going to the registry itself:
a scheduler outage must never fail a pull.

Given an SSL context (the peer's ``tls`` block), every replica is called over https,
and a replica is trusted only with a certificate from the cluster CA (``cluster_tls``).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple, TypeAlias

import aiohttp

from cluster_tls import with_scheme
from peer.backsource import PieceTransfer
from peer.replicas import ReplicaRouter
from peer.replicas import SchedulerRejected as SchedulerRejected
from peer.replicas import SchedulerUnavailable as SchedulerUnavailable

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ParentInfo:
    peer_id: str
    host_id: str
    address: str
    piece_port: int
    score: float
    # A normal peer in another rack: the child asks it only for its stripe's pieces.
    other_rack: bool = False

    def url(self, scheme: str = "http") -> str:
        """The base URL of its piece server: https in a cluster with TLS."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{scheme}://{host}:{self.piece_port}"


@dataclass(frozen=True)
class UseParents:
    parents: tuple[ParentInfo, ...]
    piece_digests: dict[int, str] = field(default_factory=dict)
    # (index, count): of the pieces parents in other racks hold, ask for those with
    # i % count == index, unless that leaves nothing to fetch (peer.piece_picker).
    stripe: tuple[int, int] | None = None


@dataclass(frozen=True)
class GoToSource:
    reason: str
    # Fetch only the pieces take_origin_pieces hands out, then ask for parents
    # (scheduler.core.origin_shares); otherwise every missing piece.
    shared: bool = False


@dataclass(frozen=True)
class WaitAndRetry:
    after_s: float
    reason: str


Decision: TypeAlias = UseParents | GoToSource | WaitAndRetry


class Claims(NamedTuple):
    """A claims answer: pieces granted, pieces to leave to rack-mates, new parents."""

    granted: set[int]
    claimed: set[int]
    holders: tuple[ParentInfo, ...] = ()


@dataclass(frozen=True)
class HostAnnouncement:
    host_id: str
    address: str
    piece_port: int
    upload_capacity_bps: float
    download_capacity_bps: float
    upload_slots: int
    is_seed: bool
    idc: str
    rack: str
    location: str
    upload_count: int
    upload_bps: float


def parse_decision(body: Any) -> Decision:
    """A decision document, checked field by field (a bad one is SchedulerRejected)."""
    try:
        action = body["action"]
        if action == "parents":
            parents = tuple(_parent_info(p) for p in body["parents"])
            digests = {int(k): str(v) for k, v in (body.get("piece_digests") or {}).items()}
            return UseParents(parents, digests, _stripe(body.get("stripe")))
        if action == "back_to_source":
            # A scheduler from before origin shares sends no "shared".
            return GoToSource(str(body.get("reason", "")), _flag(body.get("shared")))
        if action == "retry_later":
            return WaitAndRetry(float(body["after_s"]), str(body.get("reason", "")))
    except (KeyError, TypeError, ValueError) as exc:
        raise SchedulerRejected(200, f"malformed decision {body!r}: {exc!r}") from exc
    raise SchedulerRejected(200, f"unknown decision action {action!r}")


def _parent_info(p: Any) -> ParentInfo:
    """One parent of a decision or a claims answer (raises KeyError, TypeError or
    ValueError on a bad one)."""
    return ParentInfo(
        str(p["peer_id"]),
        str(p["host_id"]),
        str(p["address"]),
        int(p["piece_port"]),
        float(p["score"]),
        _flag(p.get("other_rack")),
    )


def _flag(value: Any) -> bool:
    """An optional boolean field: absent or null is false."""
    if value is None:
        return False
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r}")
    return value


def _stripe(value: Any) -> tuple[int, int] | None:
    """A decision's stripe: absent or null for none."""
    if value is None:
        return None
    index, count = int(value["index"]), int(value["count"])
    if not 0 <= index < count:
        raise ValueError(f"stripe index {index} outside 0..{count - 1}")
    return index, count


def scheduler_urls(urls: str | Sequence[str]) -> list[str]:
    """The replica URLs of a comma-separated list (or a sequence of them)."""
    items = urls.split(",") if isinstance(urls, str) else list(urls)
    return [item.strip().rstrip("/") for item in items if item.strip()]


class SchedulerClient:
    def __init__(
        self,
        base_url: str | Sequence[str],
        token: str | None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        # With TLS every replica is reached over https, also one written as http://.
        urls = [with_scheme(url, ssl_context is not None) for url in scheduler_urls(base_url)]
        self.base_url = ",".join(urls)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session = aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S, sock_connect=2.0),
            connector=aiohttp.TCPConnector(ssl=ssl_context) if ssl_context else None,
        )
        self.router = ReplicaRouter(
            urls, self._session, ca_name="tls.ca_file" if ssl_context else "the system's CAs"
        )

    async def close(self) -> None:
        await self.router.close()
        await self._session.close()

    async def wait_for_change(self, timeout_s: float) -> None:
        """Sleep ``timeout_s``, or less when a scheduler replica was found down."""
        await self.router.wait_for_change(timeout_s)

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        return await self.router.call(method, path, body)

    async def announce(self, host: HostAnnouncement) -> tuple[float, bool]:
        """Returns the host TTL and whether the scheduler did not know this host."""
        reply = await self._call("POST", "/hosts", asdict(host))
        return float(reply.get("host_ttl_s", 30.0)), bool(reply.get("new_host", False))

    async def leave_host(self, host_id: str) -> None:
        await self._call("DELETE", f"/hosts/{host_id}")

    async def register(
        self,
        peer_id: str,
        task_id: str,
        host_id: str,
        size_bytes: int,
        piece_bytes: int,
        pieces: Iterable[int],
        piece_digests: list[str] | None = None,
    ) -> Decision | None:
        """Register (or re-register) a peer; None when it already holds every piece.

        ``piece_digests`` (all of them, in order) only from a peer holding the verified blob.
        """
        body: dict[str, Any] = {
            "peer_id": peer_id,
            "task_id": task_id,
            "host_id": host_id,
            "size_bytes": size_bytes,
            "piece_bytes": piece_bytes,
            "pieces": sorted(pieces),
        }
        if piece_digests:
            body["piece_digests"] = piece_digests
        reply = await self._call("POST", "/peers", body)
        if isinstance(reply, dict) and reply.get("action") in (None, "none", "finished"):
            return None
        return parse_decision(reply)

    async def schedule(self, peer_id: str) -> Decision:
        return parse_decision(await self._call("POST", f"/peers/{peer_id}/schedule", {}))

    async def block(self, peer_id: str, parent_id: str) -> Decision:
        reply = await self._call("POST", f"/peers/{peer_id}/block", {"parent_id": parent_id})
        return parse_decision(reply)

    async def claim_imports(self, peer_id: str, claim: list[int], release: list[int]) -> Claims:
        """Of ``claim``, the pieces this peer may fetch from other racks' normal peers now,
        after releasing ``release``; the pieces its rack-mates are fetching from other
        racks or hold; and the rack-mates that became its parents for those it holds
        (``scheduler.core.claims``, ``scheduler.core.rack_holders``)."""
        body = {"claim": claim, "release": release}
        reply = await self._call("POST", f"/peers/{peer_id}/claims", body)
        try:
            granted = {int(index) for index in reply["granted"]}
            claimed = {int(index) for index in reply["claimed"]}
            # A scheduler from before rack holders sends none.
            holders = tuple(_parent_info(p) for p in reply.get("holders") or ())
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise SchedulerRejected(200, f"malformed claims answer {reply!r}: {exc!r}") from exc
        return Claims(granted & set(claim), claimed, holders)

    async def take_origin_pieces(self, peer_id: str, want: int) -> list[int]:
        """Up to ``want`` pieces of this peer's share of the origin fetch, lowest first;
        empty once its share is done (``scheduler.core.origin_shares``)."""
        reply = await self._call("POST", f"/peers/{peer_id}/origin-pieces", {"want": want})
        try:
            pieces = [int(index) for index in reply["pieces"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise SchedulerRejected(200, f"malformed origin pieces {reply!r}: {exc!r}") from exc
        return pieces

    async def report(self, peer_id: str, transfers: list[PieceTransfer]) -> None:
        reports = [
            {
                "piece_index": t.index,
                "parent_id": t.parent_id,
                "size_bytes": t.size_bytes,
                "cost_s": round(t.cost_s, 6),
                "ok": t.ok,
                **({"digest": t.digest} if t.digest else {}),
            }
            for t in transfers
        ]
        await self._call("POST", f"/peers/{peer_id}/pieces", {"reports": reports})

    async def finished(self, peer_id: str) -> None:
        await self._call("POST", f"/peers/{peer_id}/finished", {})

    async def failed(self, peer_id: str, reason: str) -> None:
        await self._call("POST", f"/peers/{peer_id}/failed", {"reason": reason})

    async def leave(self, peer_id: str) -> None:
        await self._call("DELETE", f"/peers/{peer_id}")

    async def task_digests(self, task_id: str) -> dict[int, str]:
        reply = await self._call("GET", f"/tasks/{task_id}/pieces")
        return {int(k): str(v) for k, v in reply.get("piece_digests", {}).items()}

    async def task_spread(self, task_id: str) -> list[int]:
        """Per piece, the normal peers holding it (see ``SchedulerState.task_spread``)."""
        reply = await self._call("GET", f"/tasks/{task_id}/pieces")
        return [int(count) for count in reply.get("spread", [])]
