"""A host announcement as a peer would send it, for tests that talk to the scheduler."""

from __future__ import annotations

from peer.scheduler_client import HostAnnouncement


def host_announcement(host_id: str, seed: bool = False) -> HostAnnouncement:
    """A loopback host with 100 MB/s both ways, 4 upload slots, no topology labels."""
    return HostAnnouncement(
        host_id=host_id,
        address="127.0.0.1",
        piece_port=65002,
        upload_capacity_bps=1e8,
        download_capacity_bps=1e8,
        upload_slots=4,
        is_seed=seed,
        idc="",
        rack="",
        location="",
        upload_count=0,
        upload_bps=0.0,
    )
