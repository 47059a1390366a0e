"""``p2p-scheduler``: the Starling scheduler's command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from cluster_tls import ENV_CA_FILE as ENV_TLS_CA_FILE
from cluster_tls import ENV_CERT_FILE as ENV_TLS_CERT_FILE
from cluster_tls import ENV_KEY_FILE as ENV_TLS_KEY_FILE
from scheduler.service.app import run
from scheduler.service.config import (
    ENV_ADVERTISE_URL,
    ENV_LISTEN,
    ENV_REDIS_URL,
    ENV_TOKEN,
    LOG_LEVELS,
    SchedulerConfig,
    load_config,
)
from scheduler.service.errors import ConfigError

_EPILOG = f"""\
API: JSON under /api/v1 (the OpenAPI document is at /api/v1/openapi.json), plus /healthz,
/metrics (Prometheus) and a status page at / for browsers. State is kept in memory.

Replicas: with redis_url set, the scheduler registers itself in Redis with a heartbeat,
lists the live replicas at /api/v1/replicas, and peers given any replica's URL route
each blob to one replica by rendezvous hashing. Transfer records go to a capped Redis
stream and models are published there (p2pctl model publish), so every replica serves
the same model (docs/learned-scoring.md). Without it, nothing else is needed.

Cluster token: every /api/v1 request must carry "Authorization: Bearer <token>" when a
token is configured, from --token-file, the environment variable {ENV_TOKEN}, or
token_file in the config file (in that order of precedence). Without one, any client
is accepted and a warning is logged.

TLS (optional): with a tls block (the same one the peers have; docs/tls.md) the API
serves HTTPS with cert_file, and the replica URL it advertises is https. The block's
fields are overridden by {ENV_TLS_CERT_FILE}, {ENV_TLS_KEY_FILE}
and {ENV_TLS_CA_FILE}.

Environment: {ENV_LISTEN}, {ENV_REDIS_URL} and {ENV_ADVERTISE_URL} override
listen, redis_url and advertise_url from the file; flags override both.

Config file (YAML; unknown keys are an error), with the defaults:
  listen: {SchedulerConfig.listen}
  host_ttl_s: {SchedulerConfig.host_ttl_s:g}        # hosts silent this long expire with their peers
  upkeep_interval_s: {SchedulerConfig.upkeep_interval_s:g}  # how often expiry runs
  rng_seed: null         # fix it for reproducible decisions
  token_file: null
  log_level: info
  redis_url: null        # redis://HOST:6379/0 to run several replicas
  advertise_url: null    # the URL peers reach this replica at (default: from listen)
  replica_heartbeat_s: {SchedulerConfig.replica_heartbeat_s:g}
  replica_ttl_s: {SchedulerConfig.replica_ttl_s:g}       # a replica silent this long is dropped
  redis_key_prefix: "{SchedulerConfig.redis_key_prefix}"
  evaluator: {SchedulerConfig.evaluator}        # or learned (docs/learned-scoring.md)
  records_dir: null      # transfer records as files here too
  records_redis_max_len: {SchedulerConfig.records_redis_max_len}  # cap of the Redis records stream
  retrain_interval_s: null  # retrain and promote a better model this often
  tls: null              # {{cert_file, key_file, ca_file}}: PEM files, HTTPS for the API
  scheduling:            # the core's tunables (scheduler/core/settings.py)
    candidate_sample_size: 15
    parents_per_decision: 4
    back_to_source_quota: 1
    rack_gateways: 0     # 1: racks behind oversubscribed uplinks (README)
    rack_congestion_ratio: 2.0  # 0: never keep a congested rack's parents inside
    rack_stripes: 8      # stripes a rack's peers split other racks' pieces into (README)
    ...
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="p2p-scheduler",
        description="Starling scheduler: tells each peer which other peers to fetch blob "
        "pieces from, and which few go to the origin registry.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="FILE", help="YAML settings file")
    parser.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help=f"address of the HTTP API (default {SchedulerConfig.listen}; port 0 picks one)",
    )
    parser.add_argument(
        "--token-file",
        metavar="FILE",
        help=f"file holding the cluster token (overrides {ENV_TOKEN})",
    )
    parser.add_argument(
        "--log-level", choices=list(LOG_LEVELS), help="log verbosity (default info)"
    )
    parser.add_argument(
        "--redis-url",
        metavar="URL",
        help=f"Redis for replicas, records and models, e.g. redis://redis:6379/0 "
        f"(or {ENV_REDIS_URL})",
    )
    parser.add_argument(
        "--advertise-url",
        metavar="URL",
        help="the URL peers reach this replica at (default: http://LISTEN-ADDRESS)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {
        "listen": args.listen,
        "token_file": args.token_file,
        "log_level": args.log_level,
        "redis_url": args.redis_url,
        "advertise_url": args.advertise_url,
    }
    try:
        config = load_config(args.config, overrides)
    except ConfigError as exc:
        print(f"p2p-scheduler: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(run(config))
    except OSError as exc:
        logging.getLogger("p2p-scheduler").error("cannot start: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
