"""Rack stripes over the scheduler's HTTP API, as the peer reads them."""

from __future__ import annotations

import pytest
from openapi_schema_validator import OAS31Validator

from peer.scheduler_client import SchedulerRejected, UseParents, parse_decision
from scheduler.core import SchedulerSettings
from scheduler.service.openapi import DOCUMENT
from tests.integration.scheduler.conftest import PIECES, SchedulerClient, SchedulerFactory

pytestmark = pytest.mark.timeout(60)


def _check_schema(body: object) -> None:
    schema = {"$ref": "#/components/schemas/ParentsDecision"}
    OAS31Validator({**schema, "components": DOCUMENT["components"]}).validate(body)


async def _rack_of_three(client: SchedulerClient) -> None:
    await client.announce("h-far", idc="dc1", rack="r2")
    await client.register("far", "h-far", pieces=list(range(PIECES)))
    for name in ("a", "b", "c"):
        await client.announce(f"h-{name}", idc="dc1", rack="r1")
        await client.register(name, f"h-{name}")


async def test_a_decision_carries_the_childs_stripe_and_marks_other_racks(
    make_scheduler: SchedulerFactory,
) -> None:
    client = await make_scheduler()
    await _rack_of_three(client)
    for rank, name in enumerate(("a", "b", "c")):
        body = await client.schedule(name)
        _check_schema(body)
        assert body["stripe"] == {"index": rank, "count": 3}
        assert [(p["peer_id"], p["other_rack"]) for p in body["parents"]] == [("far", True)]
        decision = parse_decision(body)
        assert isinstance(decision, UseParents)
        assert decision.stripe == (rank, 3)
        assert [p.other_rack for p in decision.parents] == [True]


async def test_turned_off_no_stripe(make_scheduler: SchedulerFactory) -> None:
    client = await make_scheduler(scheduling=SchedulerSettings(rack_stripes=0))
    await _rack_of_three(client)
    body = await client.schedule("b")
    _check_schema(body)
    assert body["stripe"] is None
    decision = parse_decision(body)
    assert isinstance(decision, UseParents) and decision.stripe is None


def test_the_peer_rejects_a_malformed_stripe_or_flag() -> None:
    parent = {"peer_id": "p", "host_id": "h", "address": "10.0.0.1", "piece_port": 1}
    good = {"action": "parents", "parents": [{**parent, "score": 1.0}]}
    # From a scheduler that predates stripes: no stripe, nobody in another rack.
    old = parse_decision(good)
    assert isinstance(old, UseParents)
    assert old.stripe is None and not old.parents[0].other_rack
    for bad in (
        {**good, "stripe": {"index": 3, "count": 3}},
        {**good, "stripe": {"index": -1, "count": 3}},
        {**good, "stripe": {"index": 0}},
        {**good, "stripe": [0, 2]},
        {**good, "parents": [{**parent, "score": 1.0, "other_rack": "yes"}]},
    ):
        with pytest.raises(SchedulerRejected, match="malformed decision"):
            parse_decision(bad)
