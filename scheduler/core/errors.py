"""Errors of the scheduler core: one root, one subclass per kind of bad input.

Expected outcomes ("no parent yet", "go to the origin") are decisions, never exceptions.
These errors mean the caller sent something the core cannot act on; the service maps each
kind onto an HTTP status (unknown -> 404, invalid -> 400, conflict -> 409).
"""

from __future__ import annotations


class SchedulerError(Exception):
    """Root of every error raised by ``scheduler.core``."""


class InvalidEventError(SchedulerError, ValueError):
    """An event field has an impossible value; the message names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class UnknownHostError(SchedulerError, LookupError):
    """The host id was never announced, or it has expired."""

    def __init__(self, host_id: str) -> None:
        super().__init__(f"unknown host {host_id!r}: announce it before registering peers")
        self.host_id = host_id


class UnknownPeerError(SchedulerError, LookupError):
    """The peer id was never registered, or the peer has left, failed or expired."""

    def __init__(self, peer_id: str) -> None:
        super().__init__(f"unknown peer {peer_id!r}: register it first (it may have left)")
        self.peer_id = peer_id


class ConflictError(SchedulerError):
    """The event contradicts what the core already knows (task size, a peer's host)."""


class DigestConflictError(ConflictError):
    """A reported piece digest differs from the task's trusted digest of that piece.

    The reporting peer is lying or holds corrupt bytes; the whole batch is refused.
    ``field`` names the report (``"reports[3].digest"``) like ``InvalidEventError`` does.
    """

    def __init__(
        self, field: str, task_id: str, piece_index: int, trusted: str, reported: str
    ) -> None:
        super().__init__(
            f"piece {piece_index} of task {task_id!r}: reported digest {reported!r} "
            f"differs from the trusted digest {trusted!r}"
        )
        self.field = field
        self.task_id = task_id
        self.piece_index = piece_index
        self.trusted = trusted
        self.reported = reported


class PeerStateError(SchedulerError):
    """The peer is in a state where the request makes no sense (e.g. it already finished)."""
