"""Nodes failing mid-pull: their peers vanish, their transfers break, children move on.

A failing node is a crash, not a clean exit: its peers stop serving with their pieces,
every transfer from or to it breaks (its NIC links fail, ``Network.fail_links``), and
the scheduler is told the host expired (``HostExpired``: the event the service applies
when a host stops announcing), which drops its peers, their pieces and parent edges.
Children react as ``peer.conductor`` does when a parent fails: the piece goes back to
the wanted set and the child asks the scheduler for new parents at once.

Who fails and when come from a stream seeded by the scenario's seed alone, so every
strategy sees the same failures (common random numbers).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from scheduler.core import HostExpired
from simulations.sim_peers import Mode

if TYPE_CHECKING:
    from simulations.sim_peers import SimNode, SimPeer
    from simulations.swarm import Swarm


class Churn:
    """Schedules the scenario's node failures and applies them to one swarm."""

    def __init__(self, swarm: Swarm) -> None:
        self._swarm = swarm
        # Nodes that failed before they had the image: they never get it.
        self.lost = 0
        # Times a live peer lost a parent to a failure and asked for others.
        self.reasked = 0

    def schedule(self) -> None:
        swarm = self._swarm
        scenario = swarm.scenario
        count = round(scenario.churn_fraction * len(swarm.nodes))
        if count == 0:
            return
        rng = random.Random(f"{scenario.seed}/churn")
        for node in rng.sample(swarm.nodes, count):
            at = node.arrival_s + rng.uniform(scenario.churn_from_s, scenario.churn_until_s)
            swarm.queue.at(at, self._fail, node)

    def _fail(self, now: float, node: SimNode) -> None:
        swarm = self._swarm
        host = node.host
        if host.failed or swarm.queue.stopped:
            return
        host.failed = True
        if node.done_at_s is None:
            self.lost += 1
        for peer in node.peers:
            # Nothing is offered from here any more, and pending asks and polls lapse.
            peer.mode = Mode.DONE
            peer.have = set()
            peer.have_mask = 0
        if swarm.state is not None and host.host_id in swarm.state.hosts:
            removal = swarm.state.apply(HostExpired(host.host_id), now)
            assert removal is not None
            for peer_id in removal.orphaned_peer_ids:
                self._ask_again(now, swarm.peers[peer_id])
        swarm.network.fail_links((host.up, host.down), now)
        if swarm.nodes_done + self.lost == len(swarm.nodes):
            swarm.queue.stop()

    def piece_lost(self, now: float, peer: SimPeer, index: int) -> None:
        """A transfer broke because its sender or receiver failed: undo the request."""
        swarm = self._swarm
        parent_id = peer.in_flight.pop(index)
        if parent_id is None:
            swarm.cluster.registry.release(now)
        else:
            peer.load[parent_id] -= 1
        if peer.node.host.failed:
            return
        peer.wanted_mask |= 1 << index
        if peer.mode is Mode.ORIGIN:
            # It was sent to the origin while this piece was on its way from a parent.
            peer.origin_queue.append(index)
            from_origin = sum(1 for p in peer.in_flight.values() if p is None)
            if from_origin < swarm.scenario.origin_concurrency:
                swarm._origin_next(now, peer)
        else:
            self._ask_again(now, peer)

    def _ask_again(self, now: float, peer: SimPeer) -> None:
        """A parent is gone: ask the scheduler for others, as the conductor does."""
        if peer.mode is Mode.PARENTS and not peer.node.host.failed:
            peer.parents = [p for p in peer.parents if not self._swarm.peers[p].node.host.failed]
            peer.mode = Mode.ASKING
            self.reasked += 1
            self._swarm.queue.at(
                now + self._swarm.scenario.schedule_latency_s, self._swarm._ask, peer
            )
