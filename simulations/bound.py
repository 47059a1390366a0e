"""The fluid lower bound on makespan: what physics allows, whatever the schedule.

``T >= max(F / u_s, F / d_min, N x F / (u_s + sum u_i))`` for an image of ``F`` bytes,
a registry sending at most ``u_s`` bytes/s, ``N`` nodes whose slowest download link is
``d_min``, and every uploader (registry, seeds, nodes) together sending at most
``u_s + sum u_i``: the registry must send every byte at least once, the slowest node must
receive all of them, and the ``N x F`` bytes the nodes receive must all be uploaded by
someone. (Mundinger, Weber and Weiss, "Optimal scheduling of peer-to-peer file
dissemination", 2008.) Racks, latencies and piece granularity only add to it. With
staggered arrival the last node cannot finish before ``arrival + F / d``.
"""

from __future__ import annotations

from collections.abc import Sequence


def lower_bound_s(
    image_bytes: int,
    registry_bps: float,
    download_bps: Sequence[float],
    upload_bps: Sequence[float],
    arrivals_s: Sequence[float] = (),
) -> float:
    """The bound for nodes with ``download_bps`` and uploaders (nodes, seeds) ``upload_bps``."""
    if not download_bps:
        return 0.0
    nodes = len(download_bps)
    terms = [
        image_bytes / registry_bps,
        image_bytes / min(download_bps),
        nodes * image_bytes / (registry_bps + sum(upload_bps)),
    ]
    if arrivals_s:
        terms.append(
            max(a + image_bytes / d for a, d in zip(arrivals_s, download_bps, strict=True))
        )
    return max(terms)
