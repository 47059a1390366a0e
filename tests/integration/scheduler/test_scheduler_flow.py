"""One task through the real scheduler over HTTP: seed first, digests, blocking, leaving."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from scheduler.core import SchedulerSettings
from tests.integration.scheduler.conftest import (
    PIECES,
    TASK,
    SchedulerClient,
    SchedulerFactory,
    piece_digest,
    report,
)

pytestmark = pytest.mark.timeout(60)

ALL_DIGESTS = {str(i): piece_digest(i) for i in range(PIECES)}


def parent_ids(decision: dict[str, Any]) -> list[str]:
    assert decision["action"] == "parents", decision
    return [parent["peer_id"] for parent in decision["parents"]]


async def _seed_and_three_peers(client: SchedulerClient) -> None:
    """Hosts and peers of one task; the seed has reported every piece from the origin."""
    answer = await client.announce("h-seed", is_seed=True, idc="dc1")
    assert answer == {"host_ttl_s": 30.0, "new_host": True}
    again = await client.announce("h-seed", is_seed=True, idc="dc1")
    assert again == {"host_ttl_s": 30.0, "new_host": False}
    for n in (1, 2, 3):
        await client.announce(f"h{n}", idc="dc1", address=f"10.0.0.{n}", piece_port=65100 + n)
    assert await client.register("seed", "h-seed") == {
        "action": "back_to_source",
        "reason": "seed_peer",
        "shared": False,
    }
    # The seed holds nothing yet, so a normal peer waits for it rather than hit the origin.
    waiting = await client.register("p1", "h1")
    assert waiting["action"] == "retry_later"
    assert waiting["reason"] == "waiting_for_seed"
    assert waiting["after_s"] > 0
    status, answer = await client.report(
        "seed", *(report(i, None, digest=piece_digest(i)) for i in range(PIECES))
    )
    assert (status, answer) == (200, {})
    assert await client.digests() == ALL_DIGESTS


async def test_the_seed_goes_to_the_origin_and_then_serves_the_others(
    scheduler: SchedulerClient,
) -> None:
    await _seed_and_three_peers(scheduler)
    for peer_id, decision in [
        ("p1", await scheduler.schedule("p1")),
        ("p2", await scheduler.register("p2", "h2")),
        ("p3", await scheduler.register("p3", "h3")),
    ]:
        assert parent_ids(decision)[0] == "seed", peer_id
        seed = decision["parents"][0]
        assert seed["host_id"] == "h-seed"
        assert (seed["address"], seed["piece_port"]) == ("127.0.0.1", 65002)
        assert isinstance(seed["score"], float)
        assert decision["piece_digests"] == ALL_DIGESTS
    health = await scheduler.health()
    assert health == {"status": "ok", "hosts": 4, "peers": 4, "tasks": 1}


async def test_a_failed_piece_blocks_that_parent_and_others_take_over(
    scheduler: SchedulerClient,
) -> None:
    await _seed_and_three_peers(scheduler)
    assert parent_ids(await scheduler.schedule("p1")) == ["seed"]
    status, _ = await scheduler.report(
        "p1", report(0, "seed", digest=piece_digest(0)), report(1, "seed", ok=False)
    )
    assert status == 200
    # The seed is blocked for p1 and nobody else holds a piece p1 lacks yet.
    decision = await scheduler.schedule("p1")
    assert decision["action"] == "retry_later"
    assert decision["reason"] == "no_parent_yet"
    # p2 gets pieces 0 and 1 from the seed; p1 lacks 1, so p2 could serve it, but p2 was
    # also given p1 as a parent: serving p1 now would close a cycle.
    assert parent_ids(await scheduler.register("p2", "h2")) == ["seed", "p1"]
    await scheduler.report(
        "p2", report(0, "seed", digest=piece_digest(0)), report(1, "seed", digest=piece_digest(1))
    )
    assert (await scheduler.schedule("p1"))["reason"] == "no_parent_yet"
    # Once p2 asks again, p1 (holding nothing p2 lacks) is no longer its parent.
    assert parent_ids(await scheduler.schedule("p2")) == ["seed"]
    decision = await scheduler.schedule("p1")
    assert parent_ids(decision) == ["p2"]
    assert decision["parents"][0]["address"] == "10.0.0.2"
    assert decision["parents"][0]["piece_port"] == 65102
    assert decision["piece_digests"] == ALL_DIGESTS
    # The block is for p1 only.
    assert "seed" in parent_ids(await scheduler.register("p3", "h3"))


async def test_block_reschedules_at_once_without_that_parent(scheduler: SchedulerClient) -> None:
    await _seed_and_three_peers(scheduler)
    await scheduler.register("p2", "h2", pieces=[0, 1])
    assert parent_ids(await scheduler.register("p3", "h3")) == ["seed", "p2"]
    decision = await scheduler.ok("POST", "/api/v1/peers/p3/block", {"parent_id": "seed"})
    assert parent_ids(decision) == ["p2"]
    assert decision["piece_digests"] == ALL_DIGESTS
    # Blocking a parent that already left is remembered too.
    decision = await scheduler.ok("POST", "/api/v1/peers/p3/block", {"parent_id": "gone"})
    assert parent_ids(decision) == ["p2"]


async def test_a_digest_that_contradicts_the_trusted_one_is_a_409_naming_the_piece(
    scheduler: SchedulerClient,
) -> None:
    await _seed_and_three_peers(scheduler)
    await scheduler.register("p2", "h2", pieces=[0, 1, 2])
    await scheduler.register("p3", "h3")
    status, answer = await scheduler.report(
        "p3",
        report(0, "p2", digest=piece_digest(0)),
        report(2, "p2", digest=piece_digest(2, salt="corrupt")),
    )
    assert status == 409
    assert answer["field"] == "reports[1].digest"
    assert "piece 2" in answer["error"]
    # The batch was refused whole: p3 holds nothing, so it is no one's parent yet.
    decision = await scheduler.register("p1", "h1")
    assert "p3" not in parent_ids(decision)
    assert await scheduler.digests() == ALL_DIGESTS


async def test_a_failed_origin_fetch_drops_its_digests(scheduler: SchedulerClient) -> None:
    await _seed_and_three_peers(scheduler)
    await scheduler.register("p2", "h2", pieces=[0])
    answer = await scheduler.ok("POST", "/api/v1/peers/seed/failed", {"reason": "digest_mismatch"})
    assert answer == {}
    assert await scheduler.digests() == {}
    status, _ = await scheduler.call("POST", "/api/v1/peers/seed/schedule", {})
    assert status == 404
    # Another origin fetch defines the pieces again.
    await scheduler.report("p2", report(1, None, digest=piece_digest(1, salt="fresh")))
    assert await scheduler.digests() == {"1": piece_digest(1, salt="fresh")}


async def test_finishing_leaving_and_host_departure(scheduler: SchedulerClient) -> None:
    await _seed_and_three_peers(scheduler)
    await scheduler.register("p2", "h2")
    await scheduler.register("p3", "h3")
    assert await scheduler.ok("POST", "/api/v1/peers/seed/finished") == {}
    # A finished peer has nothing to fetch; a request that raced its "finished" is harmless.
    assert await scheduler.schedule("seed") == {
        "action": "parents",
        "parents": [],
        "stripe": None,
        "piece_digests": ALL_DIGESTS,
    }
    assert await scheduler.ok("POST", "/api/v1/peers/p1/failed") == {}
    assert await scheduler.ok("DELETE", "/api/v1/peers/p2") == {}
    assert await scheduler.ok("DELETE", "/api/v1/hosts/h3") == {}
    for peer_id in ("p1", "p2", "p3"):
        status, answer = await scheduler.call("POST", f"/api/v1/peers/{peer_id}/schedule", {})
        assert status == 404, peer_id
        assert peer_id in answer["error"]
    assert await scheduler.health() == {"status": "ok", "hosts": 3, "peers": 1, "tasks": 1}
    # The finished seed still serves newcomers, with the digests it reported.
    await scheduler.announce("h4")
    decision = await scheduler.register("p4", "h4")
    assert parent_ids(decision) == ["seed"]
    assert decision["piece_digests"] == ALL_DIGESTS


async def test_re_registering_a_whole_blob_gets_no_parents(scheduler: SchedulerClient) -> None:
    await _seed_and_three_peers(scheduler)
    decision = await scheduler.register("p1", "h1", pieces=list(range(PIECES)))
    assert decision == {
        "action": "parents",
        "parents": [],
        "stripe": None,
        "piece_digests": ALL_DIGESTS,
    }
    # Registering again is idempotent.
    assert await scheduler.register("p1", "h1", pieces=[0]) == decision


async def test_the_task_id_route_takes_a_digest_with_its_colon(scheduler: SchedulerClient) -> None:
    await _seed_and_three_peers(scheduler)
    encoded = TASK.replace(":", "%3A")
    answer = await scheduler.ok("GET", f"/api/v1/tasks/{encoded}/pieces")
    # Only the seed holds pieces: no normal peer has any of them yet.
    assert answer == {"piece_digests": ALL_DIGESTS, "spread": [0] * PIECES}
    unknown = "sha256:" + "cd" * 32
    assert await scheduler.digests(unknown) == {}


async def test_concurrent_registrations_respect_the_origin_quota(
    make_scheduler: SchedulerFactory,
) -> None:
    """One writer: fifty peers racing for the origin, and exactly the quota of them go."""
    client = await make_scheduler(scheduling=SchedulerSettings(back_to_source_quota=2))
    for n in range(50):
        await client.announce(f"h{n}")
    decisions = await asyncio.gather(*(client.register(f"p{n}", f"h{n}") for n in range(50)))
    actions = [d["action"] for d in decisions]
    assert actions.count("back_to_source") == 2
    assert actions.count("retry_later") == 48
    assert (await client.health())["peers"] == 50
