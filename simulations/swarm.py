"""Simulated nodes and peers driving the real scheduler core over the modelled network.

A node pulls the image's layers, ``layer_concurrency`` at a time, like containerd; each
layer is one peer (one host working on one blob). A peer follows the scheduler's
decisions the way ``peer.conductor.SwarmSupplier`` does:

- ``BackToSource``: fetch the missing pieces from the registry, ``origin_concurrency``
  at a time, lowest first, reporting each with no parent; when ``shared``, only the
  pieces ``take_origin_pieces`` hands out, ``ORIGIN_TAKE_PIECES`` at a time, then ask
  for parents once it hands out none;
- ``RetryLater``: ask again after ``min(after_s, MAX_RETRY_WAIT_S)``;
- ``Parents``: keep up to ``pieces_in_flight`` piece requests going, at most
  ``max_per_parent`` per parent, chosen as ``simulations.sim_picking`` says (the peer's
  piece picker, rack stripes and import claims, as the conductor chooses);
  look again every ``REFRESH_S`` while below the limit, and ask the scheduler for more
  parents every ``TOPUP_S`` while the parents cannot fill the pipeline (a "retry later"
  answer then keeps the parents at hand); with nothing in flight and no piece for
  ``NO_PROGRESS_S``, ask the scheduler again.

A parent's piece server takes ``upload_slots`` uploads at once and refuses more ("busy":
the child leaves it alone for ``BUSY_BACKOFF_S``); a seed offers and serves only what
``peer.seed_offer.SeedOffer`` allows, as ``peer.piece_server`` does.

Every piece is reported with its cost and digest, batched as ``peer.reporter`` does: a
batch goes out ``REPORT_INTERVAL_S`` after its first report, or at once with
``REPORT_BATCH`` pending, and the last one just before a finished peer calls
``finish_peer``. Until then the scheduler does not know the piece is there, nor trust
its digest if it came from the origin or a seed. The parents' piece lists are read
from the simulated peers at once (the real peer long-polls them over HTTP while it is
short of pieces to fetch, ``peer.parent_watch``, and then hears of a new piece within a
round trip).
"""

from __future__ import annotations

import random
from typing import TypeAlias

from peer.conductor import (
    BUSY_BACKOFF_S,
    MAX_RETRY_WAIT_S,
    NO_PROGRESS_S,
    ORIGIN_TAKE_PIECES,
    REFRESH_S,
    SWARM_ORIGIN_CONCURRENCY,
    TOPUP_S,
)
from peer.piece_picker import stripe_mask
from peer.reporter import REPORT_BATCH, REPORT_INTERVAL_S
from peer.seed_offer import SeedOffer
from peer.upload_slots import upload_slots_for
from scheduler.core import (
    BackToSource,
    Decision,
    HostAnnounced,
    Parents,
    PeerRegistered,
    PieceReport,
    PiecesReported,
    RetryLater,
    SchedulerState,
)
from simulations.churn import Churn
from simulations.clock import EventQueue
from simulations.evaluators import scheduler_for
from simulations.network import Flow, Link, Network
from simulations.scenario import Scenario
from simulations.sim_peers import Counters, Mode, SimNode, SimPeer
from simulations.sim_picking import PieceChooser
from simulations.topology import Cluster, SimHost
from simulations.workload import image_layers

PIECE_PORT = 65002


class _UploadSlots:
    """A host's piece server: at most ``slots`` uploads at once; it refuses the rest."""

    __slots__ = ("slots", "active")

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.active = 0


# One piece request to a parent, from the moment it is sent to its piece's arrival: the
# peer, the piece index, the parent's peer id, the path, the piece's bytes, the parent
# host's upload slots, the parent's seed offer (None: not a seed), when it was sent and
# whether it crosses racks.
# A plain tuple: one is made per request, hundreds of thousands per run.
_Request: TypeAlias = tuple[
    "SimPeer", int, str, tuple[Link, ...], int, _UploadSlots, SeedOffer | None, float, bool
]


class Swarm:
    """One run: the cluster, the scheduler core, the nodes; ``run()`` plays it out."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.queue = EventQueue()
        self.network = Network(self.queue, scenario.sharing, scenario.rise_tolerance)
        self.cluster = Cluster(scenario, self.network)
        self.layers = image_layers(scenario)
        root = random.Random(scenario.seed)
        # Independent streams, so that one consumer drawing more never shifts another.
        self._arrival_rng = random.Random(root.getrandbits(64))
        # Public so a trace (simulations.trace) can seed a scheduler service the same way.
        self.scheduler_seed = root.getrandbits(64)
        self._scheduler_rng = random.Random(self.scheduler_seed)
        picker_rng = random.Random(root.getrandbits(64))
        evaluator_rng = random.Random(root.getrandbits(64))
        self._announce_rng = random.Random(root.getrandbits(64))
        self.state: SchedulerState | None = scheduler_for(
            scenario, evaluator_rng, self.cluster, self.network
        )
        self.counters = Counters()
        self.nodes: list[SimNode] = []
        self.seeds: list[SimNode] = []
        for host in self.cluster.hosts:
            if host.is_seed:
                self.seeds.append(SimNode(host, 0.0))
            else:
                arrival = (
                    self._arrival_rng.uniform(0.0, scenario.arrival_spread_s)
                    if scenario.arrival_spread_s > 0
                    else 0.0
                )
                self.nodes.append(SimNode(host, arrival))
        self.peers: dict[str, SimPeer] = {}
        self.nodes_done = 0
        self.churn = Churn(self)
        self._uploads: dict[str, _UploadSlots] = {}
        # What each seed peer offers, as peer.piece_server does on a seed.
        self._offers: dict[str, SeedOffer] = {}
        self._request_latency_s = scenario.request_latency_s
        self._pieces_in_flight = scenario.pieces_in_flight
        self._chooser = PieceChooser(
            self.state,
            self.peers,
            self._offers,
            bool(self.seeds),
            2 * scenario.pieces_in_flight,
            scenario.max_per_parent,
            picker_rng,
        )
        # Callbacks of every piece request, bound once instead of once per request.
        self._on_arrival = self._request_arrives
        self._on_refusal = self._refused
        self._on_flow_done = self._request_done

    def use_state(self, state: SchedulerState) -> None:
        """Run against ``state`` instead (``simulations.trace`` records its calls)."""
        self.state = state
        self._chooser.state = state

    # -- running ---------------------------------------------------------------------

    def run(self) -> None:
        for node in self.seeds + self.nodes:
            self.queue.at(node.arrival_s, self._arrive, node)
        self.churn.schedule()
        self.queue.run(until_s=self.scenario.max_sim_time_s)

    @property
    def complete(self) -> bool:
        return self.nodes_done + self.churn.lost == len(self.nodes)

    def _arrive(self, now: float, node: SimNode) -> None:
        if self.state is not None:
            self._announce(now, node.host)
        concurrent = len(self.layers) if node.host.is_seed else self.scenario.layer_concurrency
        for _ in range(min(concurrent, len(self.layers))):
            self._start_layer(now, node)

    def _upload_slots(self, host: SimHost) -> int:
        """The host's upload slots: the scenario's, or as a peer sizes them by default."""
        return self.scenario.upload_slots or upload_slots_for(host.announced_upload_bps)

    def _announce(self, now: float, host: SimHost) -> None:
        if self.state is None or self.queue.stopped or host.failed:
            return
        flows = host.up.flows
        self.state.announce_host(
            HostAnnounced(
                host_id=host.host_id,
                address=f"10.{host.index // 65536}.{host.index // 256 % 256}.{host.index % 256}",
                piece_port=PIECE_PORT,
                upload_capacity_bps=host.announced_upload_bps,
                download_capacity_bps=host.announced_download_bps,
                upload_slots=self._upload_slots(host),
                is_seed=host.is_seed,
                idc="dc-1",
                rack=host.rack,
                location=f"sim|region-1|dc-1|{host.rack}",
                upload_count=len(flows),
                upload_bps=sum(flow.rate_bps for flow in flows.values()),
            ),
            now,
        )
        interval = self.scenario.announce_interval_s
        # A random phase on the first repeat, so hosts do not all announce in one burst.
        delay = interval * (self._announce_rng.random() + 0.5) if now == 0 else interval
        self.queue.at(now + delay, self._announce, host)

    def _start_layer(self, now: float, node: SimNode) -> None:
        layer = self.layers[node.next_layer]
        node.next_layer += 1
        peer = SimPeer(node, layer)
        node.peers.append(peer)
        self.peers[peer.peer_id] = peer
        if self.state is None:
            self._go_origin(now, peer, "back_to_source:direct")
        else:
            self.queue.at(now + self.scenario.schedule_latency_s, self._register, peer)

    # -- following decisions -------------------------------------------------------

    def _register(self, now: float, peer: SimPeer) -> None:
        if peer.node.host.failed:
            return
        assert self.state is not None
        layer = peer.layer
        self.state.register_peer(
            PeerRegistered(
                peer.peer_id,
                layer.task_id,
                peer.node.host.host_id,
                layer.size_bytes,
                layer.layout.piece_bytes,
            ),
            now,
        )
        peer.last_ask_s = now
        self._follow(now, peer, self.state.schedule(peer.peer_id, now, self._scheduler_rng))

    def _ask(self, now: float, peer: SimPeer) -> None:
        if peer.mode is Mode.DONE:
            return
        assert self.state is not None
        peer.last_ask_s = now
        self._follow(now, peer, self.state.schedule(peer.peer_id, now, self._scheduler_rng))

    def _top_up(self, now: float, peer: SimPeer) -> None:
        if peer.mode is Mode.DONE:
            return
        assert self.state is not None
        peer.last_ask_s = now
        decision = self.state.schedule(peer.peer_id, now, self._scheduler_rng)
        if isinstance(decision, RetryLater) and peer.in_flight:
            # As the conductor does: keep fetching from the parents at hand.
            self.counters.decisions[f"retry_later:{decision.reason}"] += 1
            peer.mode = Mode.PARENTS
            self._pump(now, peer)
            return
        self._follow(now, peer, decision)

    def _follow(self, now: float, peer: SimPeer, decision: Decision) -> None:
        if isinstance(decision, Parents):
            self.counters.decisions["parents"] += 1
            peer.mode = Mode.PARENTS
            peer.parents = [choice.peer_id for choice in decision.parents]
            # Parents in other racks: asked only for the stripe's pieces, and only for
            # pieces the scheduler lets the peer claim (as peer.conductor does).
            peer.other_racks = frozenset(c.peer_id for c in decision.parents if c.other_rack)
            if decision.stripe is None:
                peer.stripe = None
                peer.stripe_keep = peer.all_mask
            else:
                peer.stripe = stripe = (decision.stripe.index, decision.stripe.count)
                peer.stripe_keep = stripe_mask(stripe, peer.piece_count)
            peer.last_progress_s = now
            self._pump(now, peer)
        elif isinstance(decision, BackToSource):
            self._go_origin(now, peer, f"back_to_source:{decision.reason}", decision.shared)
        else:
            assert isinstance(decision, RetryLater)
            self.counters.decisions[f"retry_later:{decision.reason}"] += 1
            peer.mode = Mode.WAITING
            peer.parents = []
            wait_s = min(decision.after_s, MAX_RETRY_WAIT_S) + self.scenario.schedule_latency_s
            self.queue.at(now + wait_s, self._ask, peer)

    def _go_origin(self, now: float, peer: SimPeer, label: str, shared: bool = False) -> None:
        self.counters.decisions[label] += 1
        self.counters.back_to_source_peers += 1
        peer.mode = Mode.ORIGIN
        peer.parents = []
        if shared:
            peer.sharing = True
            self._take(now, peer)
            return
        have = peer.have_mask
        missing = [i for i in range(peer.piece_count) if not have >> i & 1]
        peer.origin_queue = [i for i in reversed(missing) if i not in peer.in_flight]
        # Sent by the scheduler, a peer fetches with one stream (SWARM_ORIGIN_CONCURRENCY);
        # alone (direct pulls), with its origin_concurrency.
        streams = (
            self.scenario.origin_concurrency if self.state is None else SWARM_ORIGIN_CONCURRENCY
        )
        for _ in range(min(streams, len(peer.origin_queue))):
            self._origin_next(now, peer)

    def _take(self, now: float, peer: SimPeer) -> None:
        """Fetch the next pieces of the peer's origin share; none left: ask for parents."""
        if peer.mode is not Mode.ORIGIN:
            return
        assert self.state is not None
        pieces = self.state.take_origin_pieces(peer.peer_id, ORIGIN_TAKE_PIECES, now)
        latency = self.scenario.schedule_latency_s
        if not pieces:
            peer.sharing = False
            peer.mode = Mode.ASKING
            self.queue.at(now + latency, self._ask, peer)
            return
        have, in_flight = peer.have_mask, peer.in_flight
        missing = [i for i in pieces if not have >> i & 1 and i not in in_flight]
        peer.origin_queue = missing[::-1]
        if not missing:
            self.queue.at(now + latency, self._take, peer)
        for _ in range(min(SWARM_ORIGIN_CONCURRENCY, len(missing))):
            self._origin_next(now, peer)

    def _pump(self, now: float, peer: SimPeer) -> None:
        """The conductor's loop body: start what the parents can serve, else wait or ask."""
        in_flight = peer.in_flight
        limit = self._pieces_in_flight
        if len(in_flight) < limit and peer.parents:
            self._pick(now, peer, limit - len(in_flight))
        if len(in_flight) >= limit:
            return
        if not in_flight and now - peer.last_progress_s > NO_PROGRESS_S:
            peer.mode = Mode.ASKING
            self.queue.at(now + self.scenario.schedule_latency_s, self._ask, peer)
        elif now - peer.last_ask_s >= TOPUP_S:
            # The parents cannot keep the pipeline full: ask for more (TOPUP_S).
            peer.mode = Mode.ASKING
            self.queue.at(now + self.scenario.schedule_latency_s, self._top_up, peer)
        elif not peer.poll_pending:
            peer.poll_pending = True
            self.queue.at(now + REFRESH_S, self._poll, peer)

    def _pick(self, now: float, peer: SimPeer, slots: int) -> None:
        """Start up to ``slots`` piece requests, as ``simulations.sim_picking`` chooses."""
        for index, parent_id in self._chooser.choose(now, peer, slots):
            self._request(now, peer, index, parent_id)

    def _poll(self, now: float, peer: SimPeer) -> None:
        peer.poll_pending = False
        if peer.mode is Mode.PARENTS:
            self._pump(now, peer)

    # -- transfers -----------------------------------------------------------------

    def _request(self, now: float, peer: SimPeer, index: int, parent_id: str) -> None:
        peer.in_flight[index] = parent_id
        peer.wanted_mask &= ~(1 << index)
        peer.load[parent_id] += 1
        parent_host = self.peers[parent_id].node.host
        uploads = self._uploads.get(parent_host.host_id)
        if uploads is None:
            uploads = self._uploads[parent_host.host_id] = _UploadSlots(
                self._upload_slots(parent_host)
            )
        host = peer.node.host
        request = (
            peer,
            index,
            parent_id,
            self.cluster.peer_path(parent_host, host),
            peer.layer.piece_sizes[index],
            uploads,
            self._offers.get(parent_id) if parent_host.is_seed else None,
            now,
            parent_host.rack != host.rack,
        )
        self.queue.at_fifo(now + self._request_latency_s, self._on_arrival, request)

    def _request_arrives(self, now: float, request: _Request) -> None:
        _, index, _, links, size, uploads, offer, _, _ = request
        # The piece server answers "busy" with every slot taken, and a seed also for a
        # piece it does not offer right now (peer.seed_offer).
        if uploads.active >= uploads.slots or (offer is not None and not offer.claim(index, now)):
            self.queue.at_fifo(now + self._request_latency_s, self._on_refusal, request)
            return
        uploads.active += 1
        self.network.start(links, size, now, self._on_flow_done, request)

    def _request_done(self, flow: Flow, now: float) -> None:
        request: _Request = flow.context  # type: ignore[assignment]
        peer, index, _, _, size, uploads, offer, requested_at_s, cross_rack = request
        uploads.active -= 1
        if offer is not None:
            offer.release(index, now, sent=True)
            self.counters.seed_upload_bytes += size
        elif cross_rack:
            self._chooser.release(now, peer, index)
        if flow.failed:
            self.churn.piece_lost(now, peer, index)
            return
        counters = self.counters
        counters.p2p_bytes += size
        if cross_rack:
            counters.cross_rack_bytes += size
        self._piece_done(now, peer, index, size, requested_at_s)

    def _refused(self, now: float, request: _Request) -> None:
        peer, index, parent_id = request[:3]
        if request[8] and request[6] is None:
            self._chooser.release(now, peer, index)
        peer.in_flight.pop(index)
        peer.wanted_mask |= 1 << index
        peer.load[parent_id] -= 1
        until = peer.busy_until[parent_id] = now + BUSY_BACKOFF_S
        peer.busy_until_s = max(peer.busy_until_s, until)
        if peer.mode is Mode.PARENTS:
            self._pump(now, peer)

    def _origin_next(self, now: float, peer: SimPeer) -> None:
        if not peer.origin_queue:
            if peer.sharing and None not in peer.in_flight.values():
                self.queue.at(now + self.scenario.schedule_latency_s, self._take, peer)
            return
        index = peer.origin_queue.pop()
        peer.in_flight[index] = None
        peer.wanted_mask &= ~(1 << index)
        links = self.cluster.registry_path(peer.node.host)
        size = peer.layer.piece_sizes[index]
        registry = self.cluster.registry

        def start(t: float, _: object) -> None:
            self.network.start(links, size, t, done)

        def done(flow: Flow, t_done: float) -> None:
            if flow.failed:
                self.churn.piece_lost(t_done, peer, index)
                return
            registry.release(t_done)
            counters = self.counters
            counters.registry_bytes += size
            if peer.is_seed:
                counters.seed_bytes += size
            self._piece_done(t_done, peer, index, size, now)

        registry.acquire(now, lambda t: self.queue.at(t + self._request_latency_s, start))

    def _piece_done(
        self, now: float, peer: SimPeer, index: int, size: int, requested_at_s: float
    ) -> None:
        """A piece arrived whole (the caller counted its bytes as p2p or registry)."""
        parent_id = peer.in_flight.pop(index)
        self.counters.pieces += 1
        if parent_id is not None:
            peer.load[parent_id] -= 1
        peer.have_mask |= 1 << index
        peer.last_progress_s = now
        if self.state is not None:
            pending = peer.pending_reports
            pending.append(
                PieceReport(
                    index, parent_id, size, now - requested_at_s, True, peer.layer.digests[index]
                )
            )
            if len(pending) >= REPORT_BATCH:
                self._send_reports(now, peer)
            elif not peer.report_due:
                peer.report_due = True
                self.queue.at(now + REPORT_INTERVAL_S, self._report_timer, peer)
        if peer.have_mask == peer.all_mask:
            self._peer_done(now, peer)
        elif peer.mode is Mode.ORIGIN and parent_id is None:
            self._origin_next(now, peer)
        elif peer.mode is Mode.PARENTS:
            self._pump(now, peer)

    def _report_timer(self, now: float, peer: SimPeer) -> None:
        peer.report_due = False
        self._send_reports(now, peer)

    def _send_reports(self, now: float, peer: SimPeer) -> None:
        pending = peer.pending_reports
        if not pending:
            return
        peer.pending_reports = []
        # A crashed node's unsent reports die with it; the scheduler dropped its peers.
        if self.state is not None and not peer.node.host.failed:
            self.state.report_pieces(PiecesReported(peer.peer_id, tuple(pending)), now)

    def _peer_done(self, now: float, peer: SimPeer) -> None:
        peer.mode = Mode.DONE
        if self.state is not None:
            self._send_reports(now, peer)
            self.state.finish_peer(peer.peer_id)
        node = peer.node
        node.layers_done += 1
        if node.next_layer < len(self.layers):
            self._start_layer(now, node)
        elif node.layers_done == len(self.layers) and not node.host.is_seed:
            node.done_at_s = now
            self.nodes_done += 1
            if self.complete:
                self.queue.stop()
