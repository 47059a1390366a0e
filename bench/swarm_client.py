"""What the swarm benchmark runs on a node (inside its namespace): pull, push, probe.

``pull`` is the client a container runtime would be: it fetches the manifest and then
every blob, at most ``--concurrency`` at once (containerd's default is 3), checks each
blob's size and sha256, and prints one JSON line. Like containerd with the hosts.toml in
``deploy/containerd``, it resumes a body that ended short with a Range request and falls
back to the registry (``--fallback``) for a blob the mirror answers with an error. It
prints ``ready`` first and waits for a line on stdin, so every node starts at the same
moment no matter how long Python took to start. Times are ``time.monotonic()``, which
every process on the machine shares.

``push`` builds the benchmark image and pushes it to the registry; ``source`` and
``sink`` move a stream of zeros between two nodes to check the shaping.

Run as ``python -m bench.swarm_client SUBCOMMAND ...`` with the repository as the
working directory.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

CHUNK_BYTES = 256 * 1024
# Tries per source of a blob: the first request and resumes after bodies that ended short.
ATTEMPTS_PER_SOURCE = 4
# With --retry: the pause before asking again after an error.
RETRY_PAUSE_S = 1.0
MANIFEST_ACCEPT = (
    "application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json"
)


def _emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


# pull ---------------------------------------------------------------------------------


async def _get_blob(
    session: aiohttp.ClientSession,
    sources: list[tuple[str, str]],
    digest: str,
    size_bytes: int,
    t0: float,
    retry_until: float | None = None,
) -> dict[str, Any]:
    """Fetch one blob from the first source that delivers, as containerd would.

    A body that ends short is resumed from the same source with a Range request (the
    mirror ends a stalled response short on purpose); a source that answers an error, or
    delivers nothing on an attempt, is left for the next one (containerd's hosts.toml
    fallback from the mirror to the registry). With ``retry_until`` (a monotonic time) a
    source is tried again after errors until then, as a kubelet retrying a failed pull.
    """
    sha = hashlib.sha256()
    received = 0
    started = time.monotonic()
    from_source = {name: 0 for name, _ in sources}
    errors: list[str] = []
    for name, url in sources:
        attempt = 0
        while attempt < ATTEMPTS_PER_SOURCE or (
            retry_until is not None and time.monotonic() < retry_until
        ):
            attempt += 1
            headers = {"Range": f"bytes={received}-"} if received else {}
            got = 0
            try:
                async with session.get(url, headers=headers) as resp:
                    if resp.status == 200 and received:
                        sha, received = hashlib.sha256(), 0  # the Range was ignored
                    elif resp.status not in (200, 206):
                        body = (await resp.text())[:200]
                        errors.append(f"{name}: {resp.status} {body}")
                        if retry_until is None:
                            break
                        await asyncio.sleep(RETRY_PAUSE_S)
                        continue
                    async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
                        sha.update(chunk)
                        received += len(chunk)
                        got += len(chunk)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                errors.append(f"{name}: {type(exc).__name__}: {exc}")
            from_source[name] += got
            if received >= size_bytes:
                break
            if got == 0:
                if retry_until is None:
                    break
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            errors.append(f"{name}: body ended at {received} of {size_bytes} bytes; resuming")
        if received >= size_bytes:
            break
    actual = "sha256:" + sha.hexdigest()
    ok = received == size_bytes and actual == digest
    result: dict[str, Any] = {
        "digest": digest,
        "start_s": round(started - t0, 4),
        "end_s": round(time.monotonic() - t0, 4),
        "bytes": received,
        "bytes_by_source": from_source,
        "ok": ok,
    }
    if errors:
        result["attempt_errors"] = errors
    if not ok:
        result["error"] = f"got {received} of {size_bytes} bytes, digest {actual}; {errors}"
    return result


async def _pull(args: argparse.Namespace) -> dict[str, Any]:
    blobs = [(d, int(s)) for d, _, s in (item.rpartition(":") for item in args.blobs.split(","))]
    query = f"?ns={args.ns}" if args.ns else ""
    timeout = aiohttp.ClientTimeout(total=args.timeout, sock_connect=10)
    connector = aiohttp.TCPConnector(limit=args.concurrency + 1)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        _emit({"ready": True})
        # The go signal: one line on stdin, sent to every node at once.
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        t0 = time.monotonic()
        out: dict[str, Any] = {"go_monotonic": t0, "errors": []}
        manifest_url = f"{args.base}/v2/{args.repo}/manifests/{args.tag}{query}"
        try:
            async with session.get(manifest_url, headers={"Accept": MANIFEST_ACCEPT}) as resp:
                await resp.read()
                out["manifest_status"] = resp.status
                if resp.status != 200:
                    out["errors"].append(f"manifest: status {resp.status}")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            out["errors"].append(f"manifest: {type(exc).__name__}: {exc}")
        out["manifest_s"] = round(time.monotonic() - t0, 4)
        limit = asyncio.Semaphore(args.concurrency)

        async def one(digest: str, size_bytes: int) -> dict[str, Any]:
            async with limit:
                sources = [("base", f"{args.base}/v2/{args.repo}/blobs/{digest}{query}")]
                if args.fallback:
                    sources.append(("fallback", f"{args.fallback}/v2/{args.repo}/blobs/{digest}"))
                retry_until = t0 + args.timeout if args.retry else None
                return await _get_blob(session, sources, digest, size_bytes, t0, retry_until)

        out["blobs"] = await asyncio.gather(*(one(d, s) for d, s in blobs))
        out["done_monotonic"] = time.monotonic()
    out["cpu_s"] = round(time.process_time(), 3)
    out["errors"] += [f"{b['digest']}: {b['error']}" for b in out["blobs"] if not b["ok"]]
    out["bytes"] = sum(b["bytes"] for b in out["blobs"])
    out["ok"] = not out["errors"]
    return out


# push ---------------------------------------------------------------------------------


def _push(args: argparse.Namespace) -> dict[str, Any]:
    from tests.support.images import push_image

    sizes = [int(s) for s in args.layer_bytes.split(",")]
    image = push_image(
        args.registry, args.repo, args.tag, sizes, args.seed, work_dir=Path(args.work_dir)
    )
    image.cleanup()  # the registry has its copy
    return {
        "manifest_digest": image.manifest_digest,
        "config": [image.config_digest, image.config_size],
        "layers": [list(layer) for layer in image.layers],
    }


# source / sink --------------------------------------------------------------------------


def _source(args: argparse.Namespace) -> None:
    """Accept one connection and send ``--bytes`` zeros to it."""
    host, _, port = args.listen.rpartition(":")
    with socket.create_server((host, int(port))) as server:
        _emit({"ready": True})
        conn, _ = server.accept()
        with conn:
            block = bytes(CHUNK_BYTES)
            left = args.bytes
            while left > 0:
                conn.sendall(block[: min(left, CHUNK_BYTES)])
                left -= CHUNK_BYTES


def _sink(args: argparse.Namespace) -> dict[str, Any]:
    """Read everything from ``--connect``; report bytes and seconds from the first byte."""
    host, _, port = args.connect.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=60) as conn:
        received = 0
        first: float | None = None
        while chunk := conn.recv(CHUNK_BYTES):
            if first is None:
                first = time.monotonic()
            received += len(chunk)
        seconds = time.monotonic() - first if first is not None else 0.0
    return {"bytes": received, "seconds": seconds}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.swarm_client")
    sub = parser.add_subparsers(dest="command", required=True)
    pull = sub.add_parser("pull", help="pull an image's blobs at the go signal")
    pull.add_argument("--base", required=True, help="registry or mirror URL")
    pull.add_argument("--repo", required=True)
    pull.add_argument("--tag", required=True)
    pull.add_argument("--ns", default="", help="?ns= value (mirror only)")
    pull.add_argument("--fallback", default="", help="registry URL to use when --base fails")
    pull.add_argument(
        "--retry", action="store_true", help="retry --base after errors until --timeout"
    )
    pull.add_argument("--blobs", required=True, help="DIGEST:SIZE,... in pull order")
    pull.add_argument("--concurrency", type=int, default=3)
    pull.add_argument("--timeout", type=float, default=600.0)
    push = sub.add_parser("push", help="build and push the benchmark image")
    push.add_argument("--registry", required=True)
    push.add_argument("--repo", required=True)
    push.add_argument("--tag", required=True)
    push.add_argument("--layer-bytes", required=True, help="SIZE,SIZE,...")
    push.add_argument("--seed", type=int, required=True)
    push.add_argument("--work-dir", required=True)
    source = sub.add_parser("source", help="send zeros to one connection")
    source.add_argument("--listen", required=True)
    source.add_argument("--bytes", type=int, required=True)
    sink = sub.add_parser("sink", help="read one stream and time it")
    sink.add_argument("--connect", required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "pull":
        result = asyncio.run(_pull(args))
        _emit(result)
        return 0 if result["ok"] else 1
    if args.command == "push":
        _emit(_push(args))
    elif args.command == "source":
        _source(args)
    else:
        _emit(_sink(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
