"""``p2pctl preheat IMAGE``: seed peers fetch an image's blobs before a rollout.

1. p2pctl resolves IMAGE at its registry (``ctl.registry``): the config and layer blobs
   of the chosen platform, and a pull token when the registry wants one.
2. The targets are the seed peers the scheduler knows (``GET /api/v1/status``: their
   piece-server address, https when the scheduler is: TLS is on for all parts of a
   cluster or for none), or the peers named with ``--peer``.
3. Each target gets ``PUT /api/v1/admin/blobs/<digest>`` for every blob (``peer.admin``):
   an ordinary download into its cache, registered with the scheduler, so a seed goes to
   the registry and a normal peer fetches from the swarm.
4. p2pctl polls ``GET /api/v1/admin/blobs/<digest>`` until every blob is complete on
   every target, printing each as it lands, and exits 0. A failed download, a target
   that cannot be reached, or ``--timeout`` ends it with exit status 1.

Manifests are not cached by peers (the mirror passes them through), so a preheated
image costs the registry its manifests and nothing else when the rollout pulls it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ctl.api import ApiClient, CtlError
from ctl.registry import Blob, ResolvedImage
from ctl.status import format_bytes, plural, short_digest

DEFAULT_TIMEOUT_S = 1800.0
POLL_INTERVAL_S = 0.5


@dataclass(frozen=True)
class Target:
    name: str
    url: str


def piece_server_url(address: str, port: int, scheme: str = "http") -> str:
    host = f"[{address}]" if ":" in address else address
    return f"{scheme}://{host}:{port}"


async def seed_targets(scheduler: ApiClient) -> list[Target]:
    status = await scheduler.get_json("/api/v1/status")
    seeds = [h for h in status["hosts"] if h["is_seed"]]
    if not seeds:
        raise CtlError(
            f"{scheduler.where} knows no seed peer (start one with p2p-peer --seed), "
            "or name the peers to preheat with --peer URL"
        )
    scheme = "https" if scheduler.base_url.startswith("https://") else "http"
    return [
        Target(h["host_id"], piece_server_url(h["address"], h["piece_port"], scheme)) for h in seeds
    ]


@dataclass
class _Job:
    """One blob on one target."""

    target: Target
    blob: Blob
    state: str = "starting"  # downloading, complete, failed
    error: str = ""


async def _start(api: ApiClient, image: ResolvedImage, job: _Job) -> None:
    body = {
        "registry": image.reference.registry,
        "repository": image.reference.repository,
        "authorization": image.authorization,
    }
    answer = await api.request("PUT", f"/api/v1/admin/blobs/{job.blob.digest}", body)
    if answer.status in (200, 202) and isinstance(answer.body, dict):
        job.state = str(answer.body.get("state", "downloading"))
        job.error = str(answer.body.get("error") or "")
    else:
        job.state, job.error = "failed", f"{answer.status}: {answer.error}"


async def _check(api: ApiClient, job: _Job) -> None:
    answer = await api.request("GET", f"/api/v1/admin/blobs/{job.blob.digest}")
    if answer.status == 200 and isinstance(answer.body, dict):
        job.state = str(answer.body.get("state"))
        job.error = str(answer.body.get("error") or "")
    elif answer.status == 404:
        job.state, job.error = "failed", "the peer no longer has it (evicted or removed)"
    else:
        job.state, job.error = "failed", f"{answer.status}: {answer.error}"


async def preheat(
    image: ResolvedImage,
    targets: list[Target],
    token: str | None,
    timeout_s: float,
    say: Callable[[str], None],
    ssl_context: ssl.SSLContext | None = None,
) -> bool:
    """Fetch every blob of ``image`` onto every target; True when all are complete.

    ``ssl_context`` (from ``--ca-file``) verifies targets reached over https."""
    started = time.monotonic()
    total_bytes = sum(b.size_bytes for b in image.blobs)
    say(
        f"preheating {image.reference} ({image.manifest_digest}): "
        f"{plural(len(image.blobs), 'blob')}, {format_bytes(total_bytes)}, on "
        f"{plural(len(targets), 'peer')}: " + ", ".join(f"{t.name} ({t.url})" for t in targets)
    )
    jobs = [_Job(t, b) for t in targets for b in image.blobs]
    async with contextlib.AsyncExitStack() as stack:
        clients = {
            t: await stack.enter_async_context(
                ApiClient(f"peer {t.name}", t.url, token, ssl_context=ssl_context)
            )
            for t in targets
        }
        await _run(image, clients, jobs, started + timeout_s, say)
    failed = [j for j in jobs if j.state != "complete"]
    elapsed = time.monotonic() - started
    if not failed:
        say(
            f"done: {plural(len(image.blobs), 'blob')} on {plural(len(targets), 'peer')} "
            f"in {elapsed:.1f} s"
        )
        return True
    for job in failed:
        say(f"  {job.target.name}: {short_digest(job.blob.digest)} {job.state}: {job.error}")
    say(f"failed: {len(failed)} of {len(jobs)} blob copies are not complete after {elapsed:.1f} s")
    return False


async def _run(
    image: ResolvedImage,
    clients: dict[Target, ApiClient],
    jobs: list[_Job],
    deadline: float,
    say: Callable[[str], None],
) -> None:
    async def guarded(job: _Job, step: Awaitable[None]) -> None:
        # An unreachable peer fails its own blobs, not the whole preheat.
        try:
            await step
        except CtlError as exc:
            job.state, job.error = "failed", str(exc)

    await asyncio.gather(*(guarded(j, _start(clients[j.target], image, j)) for j in jobs))
    reported: set[int] = set()
    while True:
        for index, job in enumerate(jobs):
            if job.state == "complete" and index not in reported:
                reported.add(index)
                say(
                    f"  {job.target.name}: {short_digest(job.blob.digest)} complete "
                    f"({format_bytes(job.blob.size_bytes)})"
                )
        waiting = [j for j in jobs if j.state not in ("complete", "failed")]
        if not waiting:
            return
        if time.monotonic() >= deadline:
            for job in waiting:
                job.state, job.error = "timed out", "still downloading at --timeout"
            return
        await asyncio.sleep(POLL_INTERVAL_S)
        await asyncio.gather(*(guarded(j, _check(clients[j.target], j)) for j in waiting))
