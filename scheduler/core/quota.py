"""Who fetches from the origin, and who waits, when the swarm cannot serve a peer.

The origin registry is the scarce resource: ideally it sends each blob once. So:

1. A seed peer always fetches from the origin: that is what seed peers are for. With
   origin shares (``scheduler.core.origin_shares``) so does the first normal peer of
   each rack, and every peer rules 1, 3 and 6 send to the origin takes only a share of
   the blob there, then asks for parents for the rest.
2. A normal peer gets parents whenever one passes the filters.
3. Otherwise, if origin takers left or stalled while pieces nobody holds are free (origin
   shares), it goes to take them.
4. Otherwise, if some other peer holds pieces, it waits: a parent will free up or get
   what it lacks. Peers the child has blocked do not count (it will never take pieces
   from them): when the child has blocked every other peer of the task and some of them
   hold pieces, the swarm cannot serve it, and after a few retries (others may join) it
   goes to the origin past the quota.
5. Otherwise, if a seed peer the child has not blocked works on the task, or a seed
   host is alive and the task is younger than ``seed_wait_s`` (a seed is likely about to
   register), it waits.
6. Otherwise up to ``back_to_source_quota`` normal peers go to the origin; the rest wait.
7. A peer told to wait ``back_to_source_after_retries`` times in a row goes to the origin
   regardless, so a swarm that cannot serve it never stalls it forever.
"""

from __future__ import annotations

import random

from scheduler.core.decisions import BackToSource, DecisionReason, Rejection, RetryLater
from scheduler.core.model import Peer
from scheduler.core.settings import SchedulerSettings


def origin_first(child: Peer, settings: SchedulerSettings) -> BackToSource | None:
    """Rule 1 (and idempotence): the peers that go to the origin before any filtering.
    A peer that has taken its share (``Peer.took_origin_share``) is scheduled like any."""
    task = child.task
    sharing = settings.origin_sharers_per_rack > 0
    if child.back_to_source:
        taking = task.origin_shares.is_taking(child.peer_id)
        return BackToSource(DecisionReason.ALREADY_BACK_TO_SOURCE, shared=taking)
    if task.piece_count == 0:
        return BackToSource(DecisionReason.EMPTY_TASK)
    if child.took_origin_share:
        return None
    if child.host.is_seed:
        return BackToSource(DecisionReason.SEED_PEER, shared=sharing)
    if (
        sharing
        and child.host.rack
        and task.rack_rank(child, settings.origin_sharers_per_rack) is not None
        and 0 in task.availability
    ):
        return BackToSource(DecisionReason.ORIGIN_SHARE, shared=True)
    return None


def without_parent(
    child: Peer,
    rejected: tuple[Rejection, ...],
    settings: SchedulerSettings,
    seed_hosts_alive: bool,
    now: float,
    rng: random.Random,
) -> BackToSource | RetryLater:
    """Rules 3 to 7, for a normal peer none of whose candidates passed the filters."""
    task = child.task
    limit = settings.back_to_source_after_retries
    if limit is not None and child.retry_count >= limit:
        return BackToSource(DecisionReason.GAVE_UP_WAITING, rejected)

    def wait(reason: DecisionReason) -> RetryLater:
        jitter = 1.0 + settings.retry_jitter * rng.random()
        return RetryLater(settings.retry_delay_s * jitter, reason, rejected)

    sharing = settings.origin_sharers_per_rack > 0
    if sharing and task.origin_shares.orphaned(task.availability, now, task.peers.__contains__):
        return BackToSource(DecisionReason.ORIGIN_SHARE, rejected, shared=True)
    other_holders = len(task.holders) - (1 if child.peer_id in task.holders else 0)
    # Only the small blocked set is walked: the parents this child gave up on.
    blocked = [task.peers[p] for p in child.blocked_parent_ids if p in task.peers]
    blocked_holders = sum(1 for peer in blocked if peer.peer_id in task.holders)
    if other_holders - blocked_holders > 0:
        return wait(DecisionReason.NO_PARENT_YET)
    if other_holders > 0 and len(blocked) >= len(task.peers) - 1:
        # Every other peer failed this child: waiting would stall its pull forever.
        if child.retry_count >= settings.back_to_source_when_all_blocked_after:
            return BackToSource(DecisionReason.SWARM_CANNOT_SERVE, rejected)
        return wait(DecisionReason.NO_PARENT_YET)
    # A seed the child blocked (dead, or failing it) is not worth waiting for.
    if task.seed_peer_count - sum(1 for peer in blocked if peer.host.is_seed) > 0:
        return wait(DecisionReason.WAITING_FOR_SEED)
    if seed_hosts_alive and now - task.created_at_s < settings.seed_wait_s:
        return wait(DecisionReason.WAITING_FOR_SEED)
    if task.normal_back_to_source_count < settings.back_to_source_quota:
        return BackToSource(DecisionReason.NO_SOURCE_IN_SWARM, rejected, shared=sharing)
    return wait(DecisionReason.WAITING_FOR_SOURCE)
