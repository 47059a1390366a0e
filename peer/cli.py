"""``p2p-peer``: the Starling peer daemon's command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from peer.config import ConfigError, PeerConfig, load_config
from peer.daemon import run
from peer.malloc_tuning import keep_freed_memory

_EPILOG = """\
Point containerd at the mirror with a hosts.toml per registry, for example
/etc/containerd/certs.d/docker.io/hosts.toml:

  server = "https://registry-1.docker.io"
  [host."http://127.0.0.1:65001"]
    capabilities = ["pull", "resolve"]

TLS (optional; docs/tls.md): a tls block in the config file, the same one the
scheduler has, makes the piece server serve HTTPS and this peer call other peers and
the scheduler over https, trusting only certificates from the cluster CA:

  tls:
    cert_file: /etc/starling/tls/tls.crt
    key_file: /etc/starling/tls/tls.key
    ca_file: /etc/starling/tls/ca.crt

The registry mirror stays plain HTTP: containerd reaches it on loopback.

Environment: STARLING_LISTEN, STARLING_DATA_DIR, STARLING_SCHEDULER and STARLING_TOKEN
override the file, as STARLING_TLS_CERT_FILE, STARLING_TLS_KEY_FILE and
STARLING_TLS_CA_FILE override the tls block's fields; flags override both.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="p2p-peer",
        description="Starling peer daemon: a registry mirror for containerd that caches "
        "and verifies blobs piece by piece.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="FILE", help="YAML settings file")
    parser.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help=f"address of the registry mirror (default {PeerConfig.listen})",
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="where blobs and partial downloads are kept "
        "(default /var/lib/starling/peer as root, else ~/.local/share/starling/peer)",
    )
    parser.add_argument(
        "--cache-quota",
        metavar="SIZE",
        help="most bytes of complete blobs to keep, e.g. 20GiB (default 20GiB)",
    )
    parser.add_argument(
        "--insecure-registry",
        metavar="HOST:PORT",
        action="append",
        default=[],
        help="reach this upstream registry over plain HTTP (repeatable)",
    )
    parser.add_argument(
        "--default-registry",
        metavar="HOST[:PORT]",
        help="upstream for clients that do not name one with ?ns= (default docker.io)",
    )
    p2p = parser.add_argument_group(
        "peer-to-peer (all optional: without --scheduler the peer is a caching mirror on its own)"
    )
    p2p.add_argument(
        "--scheduler",
        metavar="URL[,URL...]",
        help="p2p-scheduler base URL, e.g. http://sched:8002; for several replicas a "
        "comma-separated list (with Redis, the live replicas are learned from any of them)",
    )
    p2p.add_argument(
        "--piece-listen",
        metavar="HOST:PORT",
        help="address of the piece server other peers fetch from (default 127.0.0.1:65002)",
    )
    p2p.add_argument(
        "--advertise-address",
        metavar="ADDR",
        help="address other peers use to reach the piece server (default: its listen host)",
    )
    p2p.add_argument(
        "--seed",
        action="store_true",
        default=None,
        help="seed peer: fetch from the registry first and keep blobs",
    )
    p2p.add_argument("--host-id", metavar="ID", help="this node's id (default: the hostname)")
    p2p.add_argument("--idc", metavar="NAME", help="data centre label, for parent choice")
    p2p.add_argument("--rack", metavar="NAME", help="rack label, for parent choice")
    p2p.add_argument("--location", metavar="a|b|c", help="location hierarchy, most general first")
    p2p.add_argument(
        "--token-file",
        metavar="FILE",
        help="file holding the cluster token (or set STARLING_TOKEN)",
    )
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity (default info)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {
        "listen": args.listen,
        "data_dir": args.data_dir,
        "cache_quota": args.cache_quota,
        "log_level": args.log_level,
        "insecure_registries": args.insecure_registry or None,
        "default_registry": args.default_registry,
        "scheduler": args.scheduler,
        "piece_listen": args.piece_listen,
        "advertise_address": args.advertise_address,
        "seed": args.seed,
        "host_id": args.host_id,
        "idc": args.idc,
        "rack": args.rack,
        "location": args.location,
    }
    if args.token_file:
        try:
            overrides["token"] = Path(args.token_file).read_text().strip()
        except OSError as exc:
            print(f"p2p-peer: cannot read token file: {exc}", file=sys.stderr)
            return 2
    try:
        config = load_config(args.config, overrides)
    except ConfigError as exc:
        print(f"p2p-peer: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    keep_freed_memory()
    try:
        asyncio.run(run(config))
    except OSError as exc:
        logging.getLogger("p2p-peer").error("cannot start: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
