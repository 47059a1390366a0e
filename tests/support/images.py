"""Build deterministic OCI images on disk and push them to a registry.

Usable outside pytest (the benchmark imports it): ``push_image`` is a plain function that
works from sync code and from inside a running event loop.

Layers are uncompressed tar archives (``application/vnd.oci.image.layer.v1.tar``) holding
one file of pseudo-random bytes from ``random.Random`` seeded by (seed, layer index), so
the same seed and sizes always give the same digests: two repositories pushed with the
same seed share their blobs, as real images share base layers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import platform
import random
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp

from .registry_client import RegistryClient, RegistryError

MEDIA_TYPE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"

CHUNK_BYTES = 1 << 20
BLOCK_BYTES = tarfile.BLOCKSIZE  # 512
# A fixed mtime keeps the tar headers, hence the digests, identical across runs.
LAYER_MTIME = 1_700_000_000

T = TypeVar("T")

__all__ = [
    "BuiltImage",
    "PushedImage",
    "RegistryError",
    "build_image",
    "host_architecture",
    "push_built_image",
    "push_built_image_async",
    "push_image",
    "push_image_async",
]


def host_architecture() -> str:
    """The OCI architecture name of this machine, so containerd picks the image."""
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        machine, machine
    )


def _digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_layer(path: Path, size_bytes: int, seed: int, index: int) -> tuple[str, int]:
    """Write a one-file tar of about ``size_bytes`` to ``path``; return (digest, size).

    The archive is header + payload + padding + two zero blocks, written and hashed in
    1 MiB chunks. The payload comes from fixed-size ``randbytes`` calls so its bytes do not
    depend on how the archive is written.
    """
    overhead = 3 * BLOCK_BYTES  # one header block, two end-of-archive blocks
    payload_bytes = max(0, size_bytes - overhead)
    info = tarfile.TarInfo(name=f"starling-layer-{index}.bin")
    info.size = payload_bytes
    info.mode = 0o644
    info.mtime = LAYER_MTIME
    info.type = tarfile.REGTYPE
    rng = random.Random(f"starling-layer:{seed}:{index}")
    sha = hashlib.sha256()
    written = 0

    with path.open("wb") as out:

        def emit(data: bytes) -> None:
            nonlocal written
            out.write(data)
            sha.update(data)
            written += len(data)

        # PAX only adds an extended header when a field needs it (payloads over 8 GiB).
        emit(info.tobuf(format=tarfile.PAX_FORMAT))
        remaining = payload_bytes
        while remaining > 0:
            chunk = rng.randbytes(CHUNK_BYTES)
            emit(chunk[:remaining] if remaining < CHUNK_BYTES else chunk)
            remaining -= CHUNK_BYTES
        emit(b"\0" * ((-payload_bytes) % BLOCK_BYTES))
        emit(b"\0" * (2 * BLOCK_BYTES))
    return "sha256:" + sha.hexdigest(), written


@dataclass
class BuiltImage:
    """An image on disk: every blob as a file named by its digest, plus the manifest."""

    work_dir: Path
    manifest: bytes
    manifest_digest: str
    config_digest: str
    config_size: int
    layers: list[tuple[str, int]]  # (digest, size) in manifest order
    blob_paths: dict[str, Path]

    @property
    def blob_digests(self) -> list[str]:
        """Config first, then layers: everything a pull fetches besides the manifest."""
        return [self.config_digest, *(digest for digest, _ in self.layers)]

    @property
    def blob_sizes(self) -> dict[str, int]:
        return {self.config_digest: self.config_size, **dict(self.layers)}

    @property
    def total_blob_bytes(self) -> int:
        return self.config_size + sum(size for _, size in self.layers)

    def cleanup(self) -> None:
        shutil.rmtree(self.work_dir, ignore_errors=True)


@dataclass
class PushedImage(BuiltImage):
    """A built image and where it now lives in a registry."""

    registry_host: str = ""
    repo: str = ""
    tag: str = ""

    @property
    def reference(self) -> str:
        """``HOST/repo:tag``, what ctr and skopeo pull."""
        return f"{self.registry_host}/{self.repo}:{self.tag}"

    @property
    def digest_reference(self) -> str:
        return f"{self.registry_host}/{self.repo}@{self.manifest_digest}"


def build_image(layer_sizes: list[int], seed: int, work_dir: Path | None = None) -> BuiltImage:
    """Write layers, config and manifest under ``work_dir`` (a new temp dir by default)."""
    work_dir = Path(tempfile.mkdtemp(prefix="starling-image-")) if work_dir is None else work_dir
    blob_dir = work_dir / "blobs"
    blob_dir.mkdir(parents=True, exist_ok=True)
    blob_paths: dict[str, Path] = {}
    layers: list[tuple[str, int]] = []
    for index, size in enumerate(layer_sizes):
        tmp = blob_dir / f"layer-{index}.tmp"
        digest, actual = write_layer(tmp, size, seed, index)
        path = blob_dir / digest.replace(":", "-")
        tmp.replace(path)
        blob_paths[digest] = path
        layers.append((digest, actual))

    config = {
        "architecture": host_architecture(),
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        # Layers are uncompressed, so each diff_id is simply the layer digest.
        "rootfs": {"type": "layers", "diff_ids": [digest for digest, _ in layers]},
        "history": [{"created_by": f"starling test layer {i}"} for i in range(len(layers))],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_digest = _digest_of(config_bytes)
    config_path = blob_dir / config_digest.replace(":", "-")
    config_path.write_bytes(config_bytes)
    blob_paths[config_digest] = config_path

    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_MANIFEST,
        "config": {
            "mediaType": MEDIA_TYPE_CONFIG,
            "digest": config_digest,
            "size": len(config_bytes),
        },
        "layers": [
            {"mediaType": MEDIA_TYPE_LAYER_TAR, "digest": digest, "size": size}
            for digest, size in layers
        ],
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    (work_dir / "manifest.json").write_bytes(manifest_bytes)
    return BuiltImage(
        work_dir=work_dir,
        manifest=manifest_bytes,
        manifest_digest=_digest_of(manifest_bytes),
        config_digest=config_digest,
        config_size=len(config_bytes),
        layers=layers,
        blob_paths=blob_paths,
    )


async def push_built_image_async(
    image: BuiltImage,
    registry_url: str,
    repo: str,
    tag: str,
    auth: tuple[str, str] | None = None,
) -> PushedImage:
    """Push blobs the registry lacks, then the manifest under ``tag``."""
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        client = RegistryClient(session, registry_url, repo, auth)
        await client.authorize("pull,push")
        for digest in image.blob_digests:
            if not await client.blob_exists(digest):
                await client.upload_blob(digest, image.blob_paths[digest], image.blob_sizes[digest])
        reported = await client.put_manifest(tag, MEDIA_TYPE_MANIFEST, image.manifest)
    if reported and reported != image.manifest_digest:
        raise RegistryError(f"registry stored manifest as {reported}, not {image.manifest_digest}")
    return PushedImage(
        work_dir=image.work_dir,
        manifest=image.manifest,
        manifest_digest=image.manifest_digest,
        config_digest=image.config_digest,
        config_size=image.config_size,
        layers=list(image.layers),
        blob_paths=dict(image.blob_paths),
        registry_host=urlsplit(registry_url).netloc,
        repo=repo,
        tag=tag,
    )


async def push_image_async(
    registry_url: str,
    repo: str,
    tag: str,
    layer_sizes: list[int],
    seed: int,
    auth: tuple[str, str] | None = None,
    work_dir: Path | None = None,
) -> PushedImage:
    """Build (in a worker thread: it is CPU and disk bound) and push an image."""
    image = await asyncio.to_thread(build_image, layer_sizes, seed, work_dir)
    try:
        return await push_built_image_async(image, registry_url, repo, tag, auth)
    except BaseException:
        # A temp dir the caller never saw would leak; one it chose is its to keep.
        if work_dir is None:
            image.cleanup()
        raise


def _run(make_coro: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code.

    Inside a running loop (an async test calling the sync helper) ``asyncio.run`` is not
    allowed, so the coroutine gets a private loop in a worker thread instead.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coro())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make_coro())).result()


def push_built_image(
    image: BuiltImage,
    registry_url: str,
    repo: str,
    tag: str,
    auth: tuple[str, str] | None = None,
) -> PushedImage:
    """Sync wrapper of ``push_built_image_async``."""
    return _run(lambda: push_built_image_async(image, registry_url, repo, tag, auth))


def push_image(
    registry_url: str,
    repo: str,
    tag: str,
    layer_sizes: list[int],
    seed: int,
    auth: tuple[str, str] | None = None,
    work_dir: Path | None = None,
) -> PushedImage:
    """Build an image from ``layer_sizes`` and ``seed`` and push it as ``repo:tag``.

    Blob files stay in ``work_dir`` (a new temp dir by default; remove it with
    ``cleanup()``) so tests can compare what a client received with what was pushed.
    """
    image = build_image(layer_sizes, seed, work_dir)
    try:
        return push_built_image(image, registry_url, repo, tag, auth)
    except BaseException:
        # A temp dir the caller never saw would leak; one it chose is its to keep.
        if work_dir is None:
            image.cleanup()
        raise
