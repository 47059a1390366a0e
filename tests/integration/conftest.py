"""An in-process peer daemon (the real aiohttp app on an ephemeral port) for integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from peer.config import PeerConfig
from peer.daemon import PeerDaemon
from registry_proxy.upstream import UpstreamConfig

PeerFactory = Callable[..., Awaitable[PeerDaemon]]


@pytest.fixture
async def make_peer(tmp_path: Path) -> AsyncIterator[PeerFactory]:
    """Start peers whose upstream for ``registry_host`` is ``endpoint`` (a proxy)."""
    daemons: list[PeerDaemon] = []

    async def start(
        registry_host: str,
        endpoint: str | None = None,
        data_dir: Path | None = None,
        **settings: Any,
    ) -> PeerDaemon:
        upstream_settings = {
            key: settings.pop(key)
            for key in ("read_timeout_s", "connect_timeout_s", "access_cache_ttl_s")
            if key in settings
        }
        config = PeerConfig(
            listen="127.0.0.1:0",
            piece_listen="127.0.0.1:0",
            data_dir=str(data_dir or tmp_path / "peer"),
            upstream=UpstreamConfig(
                default_registry=registry_host,
                insecure_registries=(registry_host,),
                endpoints={registry_host: endpoint} if endpoint else {},
                **upstream_settings,
            ),
            **settings,
        )
        daemon = PeerDaemon(config)
        await daemon.start()
        daemons.append(daemon)
        return daemon

    yield start
    for daemon in daemons:
        await daemon.stop()


def engine_of(daemon: PeerDaemon) -> Any:
    return daemon.engine
