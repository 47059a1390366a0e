"""Why a sampled candidate cannot be a parent: the checks, cheapest and commonest first."""

from __future__ import annotations

from scheduler.core.decisions import FilterReason
from scheduler.core.model import Peer


class Descendants:
    """The peers downloading, directly or not, from one child; computed on first use.

    Most children asking for parents are new and have no children of their own, so the
    walk is usually empty; it runs at most once per decision, not once per candidate.
    Walking down from the child beats walking up from each candidate: candidates are
    usually ahead of the child, nearer the roots, with many ancestors between them.
    """

    __slots__ = ("_child", "_peer_ids")

    def __init__(self, child: Peer) -> None:
        self._child = child
        self._peer_ids: set[str] | None = None

    def __contains__(self, peer: Peer) -> bool:
        if self._peer_ids is None:
            self._peer_ids = _walk_children(self._child)
        return peer.peer_id in self._peer_ids


def _walk_children(root: Peer) -> set[str]:
    # Marking peers when pushed, not when popped, keeps a dense graph (every child has
    # several parents) from pushing the same peer once per path to it.
    seen = set(root.children)
    stack = list(root.children.values())
    while stack:
        for child_id, child in stack.pop().children.items():
            if child_id not in seen:
                seen.add(child_id)
                stack.append(child)
    return seen


def rejection_reason(
    child: Peer,
    candidate: Peer,
    descendants: Descendants,
    now: float,
    bad_parent_ttl_s: float,
    keep_moving_parent_s: float = 0.0,
) -> FilterReason | None:
    """The first reason ``candidate`` cannot serve ``child``, or None if it can."""
    if candidate is child:
        return FilterReason.SELF
    if candidate.host is child.host:
        return FilterReason.SAME_HOST
    if candidate.peer_id in child.blocked_parent_ids:
        return FilterReason.BLOCKED
    if candidate.costs.is_bad(now, bad_parent_ttl_s):
        return FilterReason.BAD_PARENT
    if not candidate.pieces_mask & ~child.pieces_mask and not _keeps_feeding(
        child, candidate, now, keep_moving_parent_s
    ):
        return FilterReason.NOTHING_NEEDED
    # A current parent of this child already holds a slot for it, so it may keep it.
    if not candidate.has_free_upload_slot and candidate.peer_id not in child.parents:
        return FilterReason.NO_UPLOAD_SLOT
    # A peer without parents cannot be anyone's descendant; skip the walk for those.
    if candidate.parents and candidate in descendants:
        return FilterReason.CYCLE
    return None


def _keeps_feeding(child: Peer, candidate: Peer, now: float, keep_moving_parent_s: float) -> bool:
    """A current parent still downloading will soon hold pieces the child lacks.

    In a pipelined swarm a child is often right behind its parent: at that instant the
    parent holds nothing new, yet it is the child's best source a moment later. Dropping
    it would cost the child its place in the pipeline and the parent an upload it was
    about to make; only a fresh candidate must already hold something the child needs.
    Not kept that way: a parent that received nothing for ``keep_moving_parent_s``, and
    one behind the child (fewer pieces), which more likely needs the child's pieces
    than the other way round, and as a parent would forbid that edge (a cycle).
    """
    return (
        candidate.peer_id in child.parents
        and not candidate.is_complete
        and now - candidate.last_piece_at_s < keep_moving_parent_s
        and candidate.finished_piece_count >= child.finished_piece_count
    )
