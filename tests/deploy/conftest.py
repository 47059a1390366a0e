"""The deploy tests reuse the end-to-end fixtures: real scheduler and peer processes."""

from __future__ import annotations

# Fixtures are found by name in a conftest's namespace; importing them is how a sibling
# directory shares them without moving them.
from tests.e2e.conftest import start_peer, start_scheduler, swarm  # noqa: F401
