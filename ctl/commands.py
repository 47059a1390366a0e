"""The p2pctl subcommands that talk to a running cluster: status, preheat, cache ls|rm.

Exit status: 0 done, 1 it failed (the message on stderr says why: a daemon not
running, a refused token, an unknown digest, a blob that did not arrive), 2 a usage
error (argparse).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp

from cluster_tls import ENV_CA_FILE
from ctl.api import ENV_TOKEN, ApiClient, CtlError, read_ca, read_token
from ctl.cache import DEFAULT_PEER, list_blobs, remove_blobs, render_listing
from ctl.preheat import DEFAULT_TIMEOUT_S, Target, preheat, seed_targets
from ctl.registry import RegistryResolver, parse_reference
from ctl.status import fetch_status, render

ENV_SCHEDULER = "STARLING_SCHEDULER"
ENV_PEER = "STARLING_PEER"
DEFAULT_SCHEDULER = "http://127.0.0.1:8002"
DEFAULT_PLATFORM = "linux/amd64"
COMMANDS = ("status", "preheat", "cache")


def _token_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--token-file",
        metavar="FILE",
        help=f"file holding the cluster token (default: the environment variable {ENV_TOKEN})",
    )


def _ca_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ca-file",
        metavar="FILE",
        default=os.environ.get(ENV_CA_FILE) or None,
        help="the cluster CA (PEM) that https:// daemons' certificates must come from, "
        f"the ca_file of their tls block (default ${ENV_CA_FILE}; without it: the "
        "system's CAs)",
    )


def _scheduler_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scheduler",
        metavar="URL",
        default=os.environ.get(ENV_SCHEDULER, DEFAULT_SCHEDULER),
        help=f"p2p-scheduler URL (default ${ENV_SCHEDULER} or {DEFAULT_SCHEDULER})",
    )


def _peer_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--peer",
        metavar="URL",
        default=os.environ.get(ENV_PEER, DEFAULT_PEER),
        help=f"the peer: its registry mirror or piece server (default ${ENV_PEER} or "
        f"{DEFAULT_PEER}, the node's own mirror)",
    )


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = commands.add_parser(
        "status",
        help="summarize the cluster as the scheduler sees it",
        description="Hosts, seed peers, tasks (blobs) and throughput, from the scheduler's "
        "GET /api/v1/status (the data of its status page at /).",
    )
    _scheduler_option(status)
    _token_option(status)
    _ca_option(status)
    status.add_argument("--json", action="store_true", help="print the scheduler's JSON")

    heat = commands.add_parser(
        "preheat",
        help="have seed peers fetch an image before a rollout",
        description="Resolve IMAGE at its registry, have every seed peer the scheduler "
        "knows (or each --peer) fetch its config and layer blobs, and wait until all are "
        "complete. Exit status 0 only when every blob is on every peer.",
    )
    heat.add_argument("image", metavar="IMAGE", help="e.g. registry.local:5000/app:v1, nginx:1.27")
    _scheduler_option(heat)
    _token_option(heat)
    _ca_option(heat)
    heat.add_argument(
        "--peer",
        metavar="URL",
        action="append",
        default=[],
        help="preheat this peer (piece server or mirror URL) instead of the scheduler's "
        "seed peers (repeatable)",
    )
    heat.add_argument(
        "--platform",
        default=DEFAULT_PLATFORM,
        help=f"OS/ARCH[/VARIANT] to take from a multi-platform image, or 'all' "
        f"(default {DEFAULT_PLATFORM})",
    )
    heat.add_argument(
        "--insecure-registry",
        metavar="HOST:PORT",
        action="append",
        default=[],
        help="reach this registry over plain HTTP (repeatable)",
    )
    heat.add_argument(
        "--registry-credentials",
        metavar="FILE",
        help="file holding USER:PASSWORD for a private registry",
    )
    heat.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"give up after this long (default {DEFAULT_TIMEOUT_S:g})",
    )

    cache = commands.add_parser(
        "cache",
        help="list or remove the blobs a peer holds",
        description="Read or change one peer's blob cache through its admin API.",
    )
    actions = cache.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    ls = actions.add_parser("ls", help="list cached blobs and downloads in progress")
    _peer_option(ls)
    _token_option(ls)
    _ca_option(ls)
    ls.add_argument("--json", action="store_true", help="print the peer's JSON")
    rm = actions.add_parser(
        "rm",
        help="remove cached blobs",
        description="Remove complete blobs from the peer's cache; the scheduler is told the "
        "peer no longer holds them. A blob downloading or being read is refused.",
    )
    rm.add_argument("digests", nargs="+", metavar="DIGEST", help="e.g. sha256:<64 hex digits>")
    _peer_option(rm)
    _token_option(rm)
    _ca_option(rm)


def run_command(args: argparse.Namespace) -> int:
    name = args.command if args.command != "cache" else f"cache {args.cache_command}"
    run: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, int]]] = {
        "status": _status,
        "preheat": _preheat,
        "cache ls": _cache_ls,
        "cache rm": _cache_rm,
    }
    try:
        return asyncio.run(run[name](args))
    except CtlError as exc:
        print(f"p2pctl {name}: {exc}", file=sys.stderr)
        return 1


async def _status(args: argparse.Namespace) -> int:
    token, ssl_context = read_token(args.token_file), read_ca(args.ca_file)
    async with ApiClient("scheduler", args.scheduler, token, ssl_context=ssl_context) as scheduler:
        status = await fetch_status(scheduler)
    print(json.dumps(status, indent=2) if args.json else render(status, scheduler.base_url))
    return 0


def _read_credentials(path: str | None) -> tuple[str, str] | None:
    if path is None:
        return None
    try:
        user, sep, password = Path(path).read_text().strip().partition(":")
    except OSError as exc:
        raise CtlError(f"cannot read the registry credentials: {exc}") from exc
    if not sep or not user:
        raise CtlError(f"{path} must hold USER:PASSWORD")
    return user, password


async def _preheat(args: argparse.Namespace) -> int:
    token, ssl_context = read_token(args.token_file), read_ca(args.ca_file)
    reference = parse_reference(args.image)
    credentials = _read_credentials(args.registry_credentials)
    if args.peer:
        targets = [Target(url, url.rstrip("/")) for url in args.peer]
    else:
        async with ApiClient("scheduler", args.scheduler, token, ssl_context=ssl_context) as api:
            targets = await seed_targets(api)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        resolver = RegistryResolver(
            session, reference, frozenset(args.insecure_registry), credentials
        )
        image = await resolver.resolve(args.platform)
    done = await preheat(
        image, targets, token, args.timeout, lambda line: print(line, flush=True), ssl_context
    )
    return 0 if done else 1


async def _cache_ls(args: argparse.Namespace) -> int:
    token, ssl_context = read_token(args.token_file), read_ca(args.ca_file)
    async with ApiClient("peer", args.peer, token, ssl_context=ssl_context) as peer:
        listing = await list_blobs(peer)
    print(json.dumps(listing, indent=2) if args.json else render_listing(listing))
    return 0


async def _cache_rm(args: argparse.Namespace) -> int:
    def warn(line: str) -> None:
        print(f"p2pctl cache rm: {line}", file=sys.stderr)

    token, ssl_context = read_token(args.token_file), read_ca(args.ca_file)
    async with ApiClient("peer", args.peer, token, ssl_context=ssl_context) as peer:
        removed_all = await remove_blobs(peer, args.digests, print, warn)
    return 0 if removed_all else 1
