"""Why a sampled candidate cannot be a parent: the checks, cheapest and commonest first."""

from __future__ import annotations

from scheduler.core.decisions import FilterReason
from scheduler.core.model import Peer

# The walk down is taken alone for this many peers at the first question: a small
# subtree (the usual case) is then known whole and every later question is one lookup.
WALK_DOWN_FIRST = 64


class Descendants:
    """Answers "does this peer download, directly or not, from the child?".

    A peer is a descendant of the child exactly when the child is among its ancestors,
    so the answer can come from walking down from the child (its children, theirs, ...)
    or up from the candidate (its parents, theirs, ...). Either walk can cover most of a
    large swarm: the child's subtree when the child is near a root, the candidate's
    ancestry when the candidate is deep. So the walk down starts alone (most subtrees
    are small, and then it answers every candidate), and past ``WALK_DOWN_FIRST`` peers
    both walks run in step, one peer at a time, and the first to settle it wins: the
    walk down finds the candidate, or the walk up meets the child or a descendant found
    so far (yes); either walk runs out (no).

    Both walks are shared by the candidates of one decision. The walk down simply goes
    on. A walk up that ran out saw only peers whose ancestors it saw too, none of them
    the child: none of those peers is a descendant, so later walks up stop at them
    (candidates' ancestries overlap: they lead to the same few roots).

    Most children asking for parents are new and have no children of their own, so
    most answers are immediate.
    """

    __slots__ = ("_child", "_found", "_frontier", "_outside", "_started")

    def __init__(self, child: Peer) -> None:
        self._child = child
        # Descendants found so far, and those whose children are not looked at yet.
        self._found: set[str] = set(child.children)
        self._frontier: list[Peer] = list(child.children.values())
        # Peers known not to be descendants (see above).
        self._outside: set[str] = set()
        self._started = False

    def __contains__(self, peer: Peer) -> bool:
        found, frontier, outside = self._found, self._frontier, self._outside
        if not self._started:
            self._started = True
            self._walk_down(WALK_DOWN_FIRST)
        peer_id = peer.peer_id
        if peer_id in found:
            return True
        if not frontier or peer_id in outside:
            return False  # every descendant is known, or this peer is known not to be one
        child_id = self._child.peer_id
        # Marking peers when pushed, not when popped, keeps a dense graph (every child
        # has several parents) from pushing the same peer once per path to it.
        up_seen: set[str] = set(peer.parents)
        up: list[Peer] = list(peer.parents.values())
        while True:
            if not up:
                # The child is not among the candidate's ancestors, nor theirs.
                outside.add(peer_id)
                outside.update(up_seen)
                return False
            ancestor = up.pop()
            ancestor_id = ancestor.peer_id
            if ancestor_id == child_id or ancestor_id in found:
                return True
            if ancestor_id not in outside:
                for parent_id, parent in ancestor.parents.items():
                    if parent_id not in up_seen:
                        up_seen.add(parent_id)
                        up.append(parent)
            if not frontier:
                return False  # every descendant is known, and the candidate is not one
            self._walk_down(1)
            if peer_id in found:
                return True

    def _walk_down(self, steps: int) -> None:
        """Look at the children of up to ``steps`` more descendants."""
        found, frontier = self._found, self._frontier
        while frontier and steps > 0:
            steps -= 1
            for peer_id, below in frontier.pop().children.items():
                if peer_id not in found:
                    found.add(peer_id)
                    frontier.append(below)


def rejection_reason(
    child: Peer,
    candidate: Peer,
    descendants: Descendants,
    now: float,
    bad_parent_ttl_s: float,
    keep_moving_parent_s: float = 0.0,
    other_racks: bool = True,
) -> FilterReason | None:
    """The first reason ``candidate`` cannot serve ``child``, or None if it can.

    ``other_racks`` False: the child may only take normal peers of its own rack (and
    seed peers) as parents; see :func:`may_use_other_racks`.
    """
    if candidate is child:
        return FilterReason.SELF
    if candidate.host is child.host:
        return FilterReason.SAME_HOST
    if not other_racks and in_other_rack(candidate, child.host.rack_key):
        return FilterReason.OTHER_RACK
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


def in_other_rack(candidate: Peer, rack: tuple[str, str]) -> bool:
    """A normal peer outside ``rack``. Seed peers sit outside every rack and serve every
    rack: none of the rack rules holds them back."""
    return candidate.host.rack_key != rack and not candidate.host.is_seed


def may_use_other_racks(child: Peer, gateways: int, patience: int) -> bool:
    """Whether ``child`` may take normal peers of other racks as parents.

    With ``gateways`` 0 (off), a child without a rack label, a seed, one of the first
    ``gateways`` normal peers of its rack in the task, or one that was told to retry
    ``patience`` times in a row: yes. The others wait for their rack's gateways, so the
    rack's uplink carries each piece about once.
    """
    host = child.host
    return (
        gateways == 0
        or not host.rack
        or host.is_seed
        or child.retry_count >= patience
        or child.task.is_rack_gateway(child, gateways)
    )


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
