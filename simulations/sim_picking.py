"""Which pieces a simulated peer asks which parents for, as ``peer.conductor`` does.

The peer's piece picker (``peer.piece_picker``, through its bitmask entry point
``pick_pieces_masked``) with a window of twice the in-flight limit, among pieces whose
digest the scheduler trusts; parents refusing for want of a slot are left alone a moment,
a seed lists only what its ``SeedOffer`` allows. With a rack stripe, parents in other
racks count as holding only its pieces unless that leaves the peer idle
(``peer.piece_picker.stripe_blocks``); pieces asked of other racks' parents are claimed
first (``SchedulerState.claim_imports``) and released when the request ends, and every
piece a rack-mate claimed or holds is left to rack-mates for ``CLAIM_HOLD_S``; the
rack-mates the scheduler names as holders become parents.
"""

from __future__ import annotations

import random

from peer.conductor import CLAIM_HOLD_S
from peer.piece_picker import lowest_bits, pick_pieces_masked, stripe_blocks
from peer.seed_offer import SeedOffer
from scheduler.core import SchedulerState
from simulations.sim_peers import SimPeer, indices

_NO_SEEDS: frozenset[str] = frozenset()
_NO_STRIPE: frozenset[str] = frozenset()


class PieceChooser:
    """The piece choice of every peer of one run (``Swarm`` starts the requests)."""

    def __init__(
        self,
        state: SchedulerState | None,
        peers: dict[str, SimPeer],
        offers: dict[str, SeedOffer],
        has_seeds: bool,
        window: int,
        max_per_parent: int,
        rng: random.Random,
    ) -> None:
        self.state = state
        self.peers = peers
        # What each seed peer offers, shared with the swarm, which claims and releases.
        self._offers = offers
        self._has_seeds = has_seeds
        # The piece picker's window, as the conductor sets it: twice the requests in flight.
        self._window = window
        self._max_per_parent = max_per_parent
        self._picker_rng = rng

    def choose(self, now: float, peer: SimPeer, slots: int) -> list[tuple[int, str]]:
        """Up to ``slots`` (piece, parent) requests to start: within the peer's rack stripe
        first, from every parent's whole list if that left it idle; from other racks'
        parents only the pieces the scheduler lets it claim."""
        picks = None
        held = self._held_mask(now, peer) if peer.held else 0
        if peer.stripe is not None and peer.other_racks:
            picks = self._picks(now, peer, slots, peer.other_racks, peer.stripe_keep & ~held)
            if stripe_blocks(peer.stripe, picks, len(peer.in_flight)):
                picks = None
        if picks is None:
            if held:
                picks = self._picks(now, peer, slots, peer.other_racks, ~held)
            else:
                picks = self._picks(now, peer, slots, _NO_STRIPE, -1)
        if peer.other_racks:
            picks = self._claimed(now, peer, picks)
        return picks

    def _held_mask(self, now: float, peer: SimPeer) -> int:
        """The pieces a rack-mate claimed that the peer still leaves to rack-mates."""
        mask = 0
        for index, until in list(peer.held.items()):
            if until > now:
                mask |= 1 << index
            else:
                del peer.held[index]
        return mask

    def _claimed(
        self, now: float, peer: SimPeer, picks: list[tuple[int, str]]
    ) -> list[tuple[int, str]]:
        """``picks`` less the pieces from other racks' parents that a rack-mate claimed,
        as ``peer.conductor`` does; the denied ones are held for ``CLAIM_HOLD_S``."""
        remote = [index for index, parent_id in picks if parent_id in peer.other_racks]
        if not remote:
            return picks
        assert self.state is not None
        granted, claimed, holders, _ = self.state.claim_imports(peer.peer_id, remote, [], now)
        for holder in holders:
            # A rack-mate holding pieces asked for, now a parent (scheduler.core.rack_holders).
            if holder.peer_id not in peer.parents:
                peer.parents.append(holder.peer_id)
        until = now + CLAIM_HOLD_S
        for index in claimed:
            peer.held[index] = until
        if len(granted) == len(remote):
            return picks
        denied = set(remote).difference(granted)
        return [(index, parent_id) for index, parent_id in picks if index not in denied]

    def release(self, now: float, peer: SimPeer, index: int) -> None:
        """The request for a piece claimed from another rack ended: release the claim."""
        state = self.state
        if state is not None and not peer.node.host.failed and peer.peer_id in state.peers:
            state.claim_imports(peer.peer_id, [], [index], now)

    def _picks(
        self, now: float, peer: SimPeer, slots: int, striped: frozenset[str], keep: int
    ) -> list[tuple[int, str]]:
        """The picker's picks, with the parents in ``striped`` holding only what they
        hold of ``keep`` (the stripe's mask), as ``peer.piece_picker.within_stripe``."""
        state = self.state
        assert state is not None
        peers = self.peers
        task_id = peer.layer.task_id
        trusted = state.tasks[task_id].piece_digests
        all_trusted = len(trusted) == peer.piece_count
        seeds: set[str] | frozenset[str] = _NO_SEEDS
        if all_trusted and not self._has_seeds and peer.busy_until_s <= now:
            # The usual case: every piece has a trusted digest (the origin sent each
            # once), no parent is a seed or left alone for refusing, so the picker gets
            # every parent's piece list and picks among the first ``window`` pieces the
            # peer wants that some parent holds, as the conductor's picker does.
            missing = peer.wanted_mask
            availability: list[tuple[str, int]] = []
            for parent_id in peer.parents:
                mask = peers[parent_id].have_mask
                availability.append((parent_id, mask & keep if parent_id in striped else mask))
        else:
            offered = 0
            for parent_id in peer.parents:
                mask = peers[parent_id].have_mask
                offered |= mask & keep if parent_id in striped else mask
            candidates = offered & peer.wanted_mask
            if not candidates:
                return []
            if all_trusted:
                missing = lowest_bits(candidates, self._window)
            else:
                missing = self._trusted_window(candidates, trusted)
            availability, seeds = self._listed(now, peer, missing, task_id, striped, keep)
        return pick_pieces_masked(
            missing,
            availability,
            peer.load,
            slots,
            self._max_per_parent,
            self._window,
            self._picker_rng,
            seeds,
        )

    def _trusted_window(self, candidates: int, trusted: dict[int, str]) -> int:
        """The first ``window`` of ``candidates`` (pieces the peer wants and some parent
        holds) that have a trusted digest: the picker looks at no others, so passing
        just those gives it the same input that matters and the same picks."""
        missing = 0
        taken = 0
        while candidates and taken < self._window:
            lowest = candidates & -candidates
            candidates ^= lowest
            if lowest.bit_length() - 1 in trusted:
                missing |= lowest
                taken += 1
        return missing

    def _listed(
        self,
        now: float,
        peer: SimPeer,
        missing: int,
        task_id: str,
        striped: frozenset[str],
        keep: int,
    ) -> tuple[list[tuple[str, int]], set[str] | frozenset[str]]:
        """What each parent's piece list says, and which parents are seeds: parents that
        refused a request for want of a slot are left alone a moment, a seed lists only
        what it offers of ``missing`` (peer.seed_offer), and a parent in ``striped`` only
        what it holds of ``keep``."""
        assert self.state is not None
        busy_until = peer.busy_until
        availability = []
        seeds: set[str] | frozenset[str] = _NO_SEEDS
        for parent_id in peer.parents:
            if busy_until.get(parent_id, 0.0) > now:
                continue
            parent = self.peers[parent_id]
            if parent.is_seed:
                seeds = {parent_id} if not seeds else {*seeds, parent_id}
                offer = self._offers.setdefault(parent_id, SeedOffer())
                if offer.spread_due(now):
                    offer.set_spread(self.state.task_spread(task_id))
                offered = 0
                for index in offer.offered(indices(missing), now):
                    offered |= 1 << index
                availability.append((parent_id, offered))
            elif parent_id in striped:
                availability.append((parent_id, parent.have_mask & keep))
            else:
                availability.append((parent_id, parent.have_mask))
        return availability, seeds
