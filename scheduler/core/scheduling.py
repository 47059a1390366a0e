"""One scheduling decision: sample, filter, score, pick the best few, else the quota rules.

Candidates are the child's current parents, a sample of the task's holders (nearest
first) and, when fewer than K of those pass the filters, a few complete peers. When none
passes but some failed only for looking slow (``bad_parent``), those are screened again
without that test: a slow parent beats none (see :func:`best_parents`).

This module only reads the state; ``SchedulerState.schedule`` applies the decision (parent
edges, quota counters), so the same decision logic can be called without side effects.
"""

from __future__ import annotations

import math
import random

from scheduler.core import quota
from scheduler.core.decisions import Decision, FilterReason, ParentChoice, Parents, Rejection
from scheduler.core.errors import SchedulerError
from scheduler.core.evaluator import Evaluator
from scheduler.core.filters import (
    Descendants,
    in_other_rack,
    may_use_other_racks,
    rejection_reason,
)
from scheduler.core.model import Peer
from scheduler.core.sampling import sample_candidates, sample_complete
from scheduler.core.settings import SchedulerSettings
from scheduler.core.stripes import stripe_for


def decide(
    child: Peer,
    settings: SchedulerSettings,
    evaluator: Evaluator,
    seed_hosts_alive: bool,
    now: float,
    rng: random.Random,
    in_rack: bool = False,
) -> Decision:
    first = quota.origin_first(child, settings)
    if first is not None:
        return first
    best, rejected = best_parents(child, settings, evaluator, now, rng, in_rack)
    if best:
        rack = child.host.rack_key if child.host.rack else None
        choices = tuple(parent_choice(parent, score, rack) for parent, score in best)
        stripe = None
        if settings.rack_stripes > 1 and any(choice.other_rack for choice in choices):
            stripe = stripe_for(child, settings.rack_gateways, settings.rack_stripes)
        return Parents(choices, rejected, stripe)
    return quota.without_parent(child, rejected, settings, seed_hosts_alive, now, rng)


def best_parents(
    child: Peer,
    settings: SchedulerSettings,
    evaluator: Evaluator,
    now: float,
    rng: random.Random,
    in_rack: bool = False,
) -> tuple[list[tuple[Peer, float]], tuple[Rejection, ...]]:
    """The best ``parents_per_decision`` candidates with their scores, and the rejections.

    ``in_rack`` (the child's rack uplink is congested, ``scheduler.core.rack_flow``):
    normal peers of other racks are dropped whenever a rack-mate or a seed peer will do.

    A parent flagged slow (``bad_parent``) is passed over while any other candidate will
    do. When none will, the slow ones are screened again without that test: they may hold
    pieces nobody else has (a task's only origin peer, flagged for one slow piece behind
    a thin uplink, held back 21 pieces of a 150-piece layer from 300 nodes for 10 s in
    p2psim, until one child gave up waiting and fetched them from the registry again).
    """
    descendants = Descendants(child)
    survivors: list[Peer] = []
    rejected: list[Rejection] = []
    slow: list[Peer] = []
    other_racks = may_use_other_racks(child, settings.rack_gateways, settings.rack_gateway_patience)

    def screen(candidates: list[Peer], bad_parent_ttl_s: float = settings.bad_parent_ttl_s) -> None:
        for candidate in candidates:
            reason = rejection_reason(
                child,
                candidate,
                descendants,
                now,
                bad_parent_ttl_s,
                settings.keep_moving_parent_s,
                other_racks,
            )
            if reason is None:
                survivors.append(candidate)
            else:
                rejected.append(Rejection(candidate.peer_id, reason))
                if reason is FilterReason.BAD_PARENT:
                    slow.append(candidate)

    # The child's current parents compete again with a fresh sample, so a child asking
    # for more parents keeps the good ones it has instead of a random replacement.
    current = list(child.parents.values())
    seen = set(child.parents)
    fresh = [
        peer
        for peer in sample_candidates(child, settings.candidate_sample_size, rng)
        if peer.peer_id not in seen
    ]
    screen(current)
    screen(fresh)
    missing = settings.parents_per_decision - len(survivors)
    if missing > 0:
        seen.update(peer.peer_id for peer in fresh)
        screen(sample_complete(child, missing, seen, rng))
    if not survivors and slow:
        rejected = [r for r in rejected if r.reason is not FilterReason.BAD_PARENT]
        screen(slow, bad_parent_ttl_s=0.0)  # a flag younger than 0 s: none
    if not survivors:
        return [], tuple(rejected)
    scores = [float(s) for s in evaluator.score(child, survivors, now)]
    if len(scores) != len(survivors):
        raise SchedulerError(
            f"evaluator {evaluator.name!r} returned {len(scores)} scores "
            f"for {len(survivors)} candidates"
        )
    # Candidates holding pieces the child lacks rank before current parents kept only
    # because they are still downloading (see filters): a parent with nothing to give
    # must not crowd out one that has something. Within each group the score decides; a
    # score that is not a number ranks last instead of scrambling the sort. Ties keep the
    # candidate order: current parents first (no churn for nothing), then the sample
    # order, which the seeded rng made random, so no peer id is favoured.
    lacking = ~child.pieces_mask
    ranked = sorted(
        zip(survivors, scores, strict=True),
        key=lambda pair: (
            not pair[0].pieces_mask & lacking,
            -pair[1] if not math.isnan(pair[1]) else math.inf,
        ),
    )
    if in_rack:
        # A piece fetched inside the rack leaves the uplink to pieces the rack has
        # nowhere else; the filter's order is kept, so the evaluator still ranks them.
        rack = child.host.rack_key
        inside = [pair for pair in ranked if not in_other_rack(pair[0], rack)]
        if inside:
            rejected.extend(
                Rejection(peer.peer_id, FilterReason.OTHER_RACK)
                for peer, _ in ranked
                if in_other_rack(peer, rack)
            )
            ranked = inside
    return ranked[: settings.parents_per_decision], tuple(rejected)


def parent_choice(parent: Peer, score: float, rack: tuple[str, str] | None) -> ParentChoice:
    """``parent`` as the child (of ``rack``, None: no rack label) is told of it."""
    host = parent.host
    other_rack = rack is not None and in_other_rack(parent, rack)
    return ParentChoice(
        parent.peer_id, host.host_id, host.address, host.piece_port, score, other_rack
    )
