"""``p2pctl``: the Starling operator's command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ctl.commands import COMMANDS, add_commands, run_command
from ctl.containerd_config import (
    DEFAULT_CONFIG_DIR,
    DEFAULT_DIAL_TIMEOUT,
    DEFAULT_MIRROR,
    DEFAULT_REGISTRY_DIR,
    ContainerdConfigError,
    hosts_files,
    write_hosts_files,
)
from ctl.model import add_model_command, run_model_command

_CONTAINERD_EPILOG = """\
containerd only reads these files when its config_path points at the directory. In
/etc/containerd/config.toml (then restart containerd once):

  containerd 1.x:   version = 2
                    [plugins."io.containerd.grpc.v1.cri".registry]
                      config_path = "/etc/containerd/certs.d"
  containerd 2.x:   version = 3
                    [plugins."io.containerd.cri.v1.images".registry]
                      config_path = "/etc/containerd/certs.d"

ctr reads them with --hosts-dir /etc/containerd/certs.d. Later changes to the files
need no restart.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="p2pctl", description="Operate a Starling peer-to-peer image distribution cluster."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    containerd = commands.add_parser(
        "containerd-config",
        help="write containerd hosts.toml files that pull through the local peer",
        description="Write <config-dir>/<registry>/hosts.toml for each registry, so "
        "containerd pulls through the Starling peer first and falls back to the registry.",
        epilog=_CONTAINERD_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    containerd.add_argument(
        "registries",
        nargs="*",
        metavar="REGISTRY",
        default=[DEFAULT_REGISTRY_DIR],
        help=f"registry hosts, e.g. docker.io ghcr.io registry.local:5000, or "
        f"{DEFAULT_REGISTRY_DIR} for every registry without a file of its own "
        f"(default {DEFAULT_REGISTRY_DIR})",
    )
    containerd.add_argument(
        "--config-dir",
        metavar="DIR",
        default=DEFAULT_CONFIG_DIR,
        help=f"containerd's registry config_path (default {DEFAULT_CONFIG_DIR})",
    )
    containerd.add_argument(
        "--mirror",
        metavar="URL",
        default=DEFAULT_MIRROR,
        help=f"the peer's registry mirror (default {DEFAULT_MIRROR})",
    )
    containerd.add_argument(
        "--dial-timeout",
        metavar="DURATION",
        default=DEFAULT_DIAL_TIMEOUT,
        help=f"how long containerd waits to connect to the mirror before falling back; "
        f"containerd 1.7 and later (default {DEFAULT_DIAL_TIMEOUT})",
    )
    containerd.add_argument(
        "--insecure-registry",
        metavar="HOST:PORT",
        action="append",
        default=[],
        help="fall back to this registry over plain HTTP (repeatable)",
    )
    containerd.add_argument(
        "--force", action="store_true", help="replace hosts.toml files p2pctl did not write"
    )
    add_commands(commands)
    add_model_command(commands)
    return parser


def containerd_config(args: argparse.Namespace) -> int:
    try:
        files = hosts_files(args.registries, args.mirror, args.dial_timeout, args.insecure_registry)
        paths = write_hosts_files(Path(args.config_dir), files, args.force)
    except (ContainerdConfigError, OSError) as exc:
        print(f"p2pctl containerd-config: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(f"wrote {path}")
    print(f"containerd uses them once its registry config_path is {args.config_dir}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "containerd-config":
        return containerd_config(args)
    if args.command in COMMANDS:
        return run_command(args)
    if args.command == "model":
        return run_model_command(args)
    raise AssertionError(f"unhandled command {args.command}")  # argparse refuses others


if __name__ == "__main__":
    sys.exit(main())
