"""Tunable numbers of the scheduler core; defaults from issue 3 and Dragonfly's scheduler."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class SchedulerSettings:
    """Settings of one scheduler; validated on construction so a bad config fails at start."""

    # Candidates looked at per decision. Sampling instead of scanning every peer keeps a
    # decision O(sample) for tasks with thousands of peers (Dragonfly's filterParentLimit).
    candidate_sample_size: int = 15
    # Parents handed out per decision (Dragonfly's candidateParentLimit).
    parents_per_decision: int = 4
    # Normal (non-seed) peers per task that may fetch from the origin while the task has
    # no seed peer and no peer with pieces. Seed peers always go to the origin first.
    back_to_source_quota: int = 1
    # While a seed host is alive, a new task's first peers wait this long for a seed peer
    # to register before normal peers may take the quota, so a normal peer arriving a few
    # milliseconds before the seed does not cost the origin a second copy.
    seed_wait_s: float = 2.0
    # After this many consecutive "retry later" answers a peer is sent to the origin even
    # past the quota, so a swarm that cannot serve it does not stall it forever. None: never.
    back_to_source_after_retries: int | None = 30
    # A peer that has blocked every other peer of its task (they all failed it) is sent
    # to the origin after this many "retry later" answers, without waiting for the above.
    back_to_source_when_all_blocked_after: int = 3
    # Piece costs kept per parent. Below a full window the costs are too few to treat as
    # normally distributed, so a cost is an outlier only past ``slow_cost_factor`` x mean.
    piece_cost_window: int = 30
    slow_cost_factor: float = 20.0
    # With a full window a cost is an outlier past mean + ``slow_cost_sigmas`` x stdev...
    slow_cost_sigmas: float = 3.0
    # ...and past ``slow_cost_min_ratio`` x mean, so a parent with near-constant costs is
    # not flagged for a cost a few percent above its mean (stdev close to zero).
    slow_cost_min_ratio: float = 1.5
    # A parent flagged bad is skipped for this long; without an expiry a parent nobody is
    # allowed to use would never report a good cost again and stay excluded forever.
    bad_parent_ttl_s: float = 30.0
    # "Retry later" delay: base plus up to ``retry_jitter`` x base of random spread, so
    # a crowd that was told to wait does not come back in one burst.
    retry_delay_s: float = 0.5
    retry_jitter: float = 0.2
    # A current parent that holds nothing the child lacks stays its parent while it is
    # still downloading and received a piece within this long: a child right behind its
    # parent in a pipeline would otherwise lose it at every decision. A parent that
    # stopped moving is let go, so the child is not tied to a stalled peer.
    keep_moving_parent_s: float = 5.0
    # Hosts that have not announced for this long are expired with their peers.
    host_ttl_s: float = 60.0
    # Racks behind oversubscribed uplinks: per task and rack, only the first
    # ``rack_gateways`` normal peers (in registration order, among those still there)
    # take parents from other racks; the rest of the rack fetches from them, from each
    # other and from seed peers, so a piece crosses into a rack about once instead of
    # once per peer. 0 turns it off (the default: with uplinks that are no bottleneck it
    # only delays the rack's peers behind its gateways). Hosts without a rack label are
    # never held back.
    rack_gateways: int = 0
    # A peer held back this way that is told "retry later" this many times in a row
    # (no parent in its rack has what it needs) may take parents from other racks.
    rack_gateway_patience: int = 8
    # A rack whose peers get pieces from other racks' normal peers more than
    # ``rack_congestion_ratio`` times slower than from rack-mates (moving averages over
    # at least ``rack_congestion_samples`` pieces each) is congested: its peers then take
    # parents inside the rack (and seed peers) whenever any will do, and other racks' only
    # when none will (``scheduler.core.rack_flow``). 0 turns it off.
    rack_congestion_ratio: float = 2.0
    rack_congestion_samples: int = 5
    # The normal peers of a rack split what they fetch from other racks' normal peers
    # into at most this many stripes: the k-th of the rack's peers in a task (in
    # registration order) asks them only for stripe k mod rack_stripes, and gets the
    # rest from rack-mates (``scheduler.core.stripes``). 0 or 1: every peer takes any
    # piece from any parent.
    rack_stripes: int = 8
    # Before a rack's peer asks another rack's normal peers for pieces, it claims them:
    # one peer of a rack at a time fetches a piece across the uplink, until it releases
    # the claim or the claim is this old (``scheduler.core.claims``): a claimant that died
    # or stalled, far longer than a piece takes to arrive. 0 turns claims off: every
    # claim is granted.
    rack_claim_lease_s: float = 10.0
    # A released claim stays this many times as long as the import took (at most 2 s):
    # rack-mates get the piece from the one that just brought it in rather than across
    # the uplink again (``scheduler.core.claims``). 0: a released piece is free at once.
    # Off by default: at 2, p2psim predicts the racks 5% faster, but real peers on the
    # cluster benchmark's racks were slower, 2.05x the bound against 1.96x over four
    # paired rounds, though 17% fewer bytes entered the racks
    # (bench/results/cluster-racks-claim-hold-paired.json), and no faster at half the
    # rates, with CPUs to spare: 1.94x against 1.95x (cluster-racks-half-rates.json).
    rack_claim_hold_factor: float = 0.0
    # A piece a peer claims that a rack-mate already holds is not granted when a current
    # parent or a rack-mate with a free upload slot can serve it: the scheduler links up
    # to this many such rack-mates as parents of the peer per claims call, so the piece
    # crosses the uplink once (``scheduler.core.rack_holders``). 0 turns it off; so does
    # turning claims off. p2psim, 16 seeds of the cluster benchmark's racks and of the
    # 1,000-node default and oversubscribed scenarios: 4 did as well as 2 or better.
    rack_holders_per_claim: int = 4
    # Origin shares: the first ``origin_sharers_per_rack`` normal peers of each rack in a
    # task (registration order) go to the origin too, alongside seed peers and the
    # quota's peer. Each takes the lowest pieces nobody holds or has taken, a few at a
    # time, and asks for parents once none are left, seeds included; so the origin sends
    # each piece about once, and its egress reaches the racks directly instead of only
    # through the seeds' uplinks (``scheduler.core.origin_shares``). 0 turns it off: seeds
    # and the quota's peer fetch whole blobs. Hosts without a rack label never share.
    # Off by default: p2psim predicts shorter pulls everywhere, but on the cluster
    # benchmark's racks, real peers took longer with it (2.15x the bound against 2.01x
    # over six paired rounds; bench/results/cluster-racks-origin-shares-paired.json).
    origin_sharers_per_rack: int = 0
    # A piece taken this long ago that nobody reported holding may be taken again (its
    # taker stalled); a taker that leaves or fails frees its pieces at once.
    origin_share_lease_s: float = 30.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and not value >= 0:  # also catches NaN
                raise ValueError(f"{f.name} must be >= 0, got {value!r}")
        for name in ("candidate_sample_size", "parents_per_decision"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if 0 < self.rack_congestion_ratio < 1:
            raise ValueError("rack_congestion_ratio must be 0 (off) or >= 1")
        if self.origin_sharers_per_rack and not self.origin_share_lease_s > 0:
            raise ValueError("origin_share_lease_s must be > 0 while origin_sharers_per_rack is on")
        if self.piece_cost_window < 2:
            raise ValueError("piece_cost_window must be >= 2 (a cost needs earlier costs)")
        if self.back_to_source_after_retries is not None and self.back_to_source_after_retries < 1:
            raise ValueError("back_to_source_after_retries must be >= 1 or None")
