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
    if not candidate.pieces_mask & ~child.pieces_mask:
        return FilterReason.NOTHING_NEEDED
    # A current parent of this child already holds a slot for it, so it may keep it.
    if candidate.host.free_upload_slots <= 0 and candidate.peer_id not in child.parents:
        return FilterReason.NO_UPLOAD_SLOT
    # A peer without parents cannot be anyone's descendant; skip the walk for those.
    if candidate.parents and candidate in descendants:
        return FilterReason.CYCLE
    return None
