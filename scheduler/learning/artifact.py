"""Model files: JSON documents of ``scheduler.core.tree_model``, and the shipped default.

Trust boundary: a model file is data, never code. It is parsed with ``json`` and checked
node by node (``tree_model.from_json``), so a model published by anyone who can write the
model path can make scheduling worse but cannot run code in the scheduler. That is why
models are not pickles or joblib files (unpickling runs arbitrary code) and why serving
needs neither scikit-learn nor skops: the trees are exported to plain arrays at training.

The default model lives next to this module (``default_model.json``), is rebuilt by
``make model`` from simulated training scenarios, and is what ``p2p-scheduler`` and
``p2psim --strategy learned`` load when no other model is named.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from scheduler.core.tree_model import ModelFormatError, TreeEnsemble, from_json

DEFAULT_MODEL_PATH = Path(__file__).with_name("default_model.json")
# The name a model is published under in an artifact store (in Redis:
# ``{redis_key_prefix}artifact:model``).
MODEL_ARTIFACT = "model"
# A model file larger than this is refused before parsing.
MAX_MODEL_BYTES = 32 * 1024 * 1024


class ModelFileError(Exception):
    """A model file could not be read or is not a valid model."""


def load_model(path: str | os.PathLike[str]) -> TreeEnsemble:
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_MODEL_BYTES:
            raise ModelFileError(f"{path}: {size} bytes, more than {MAX_MODEL_BYTES}")
        data = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"{path}: {exc}") from exc
    return parse_model(data, str(path))


def parse_model(data: bytes, where: str) -> TreeEnsemble:
    """The model in ``data`` (a model file's bytes, or a published artifact's);
    ``where`` names its origin in errors."""
    if len(data) > MAX_MODEL_BYTES:
        raise ModelFileError(f"{where}: {len(data)} bytes, more than {MAX_MODEL_BYTES}")
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise ModelFileError(f"{where}: {exc}") from exc
    try:
        return from_json(document)
    except ModelFormatError as exc:
        raise ModelFileError(f"{where}: {exc}") from exc


def model_bytes(model: TreeEnsemble) -> bytes:
    """The model as the bytes of a model file or a published artifact."""
    return (json.dumps(model.to_json(), separators=(",", ":")) + "\n").encode()


def save_model(model: TreeEnsemble, path: str | os.PathLike[str]) -> None:
    """Write the model whole: a reader (hot reload) never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(model_bytes(model))
    os.replace(partial, path)


def default_model() -> TreeEnsemble | None:
    """The shipped model; None when the package was built without one."""
    if not DEFAULT_MODEL_PATH.exists():
        return None
    return load_model(DEFAULT_MODEL_PATH)
