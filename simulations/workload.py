"""The image the nodes pull: layers (blobs) cut into pieces by the peers' own rule."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from peer.pieces import PieceLayout, piece_length_for
from simulations.scenario import Scenario


@dataclass(frozen=True, slots=True)
class Layer:
    index: int
    task_id: str  # the blob digest, as the scheduler sees it
    layout: PieceLayout
    piece_sizes: tuple[int, ...]
    # Fake but consistent piece digests: every honest transfer of piece i reports digests[i].
    digests: tuple[str, ...]

    @property
    def size_bytes(self) -> int:
        return self.layout.total_bytes

    @property
    def piece_count(self) -> int:
        return self.layout.count


def image_layers(scenario: Scenario) -> tuple[Layer, ...]:
    layers = []
    for index, size in enumerate(scenario.layer_bytes):
        name = f"{scenario.name}/layer-{index}/{size}".encode()
        task_id = "sha256:" + hashlib.sha256(name).hexdigest()
        layout = PieceLayout(size, piece_length_for(size))
        sizes = tuple(layout.size(i) for i in range(layout.count))
        digests = tuple(f"sha256:{index:08x}{piece:056x}" for piece in range(layout.count))
        layers.append(Layer(index, task_id, layout, sizes, digests))
    return tuple(layers)
