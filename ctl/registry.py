"""Resolving an image reference to the blobs a pull fetches, as containerd would.

``p2pctl preheat`` asks the registry itself, with the operator's network access and
credentials, rather than through a peer: the peers' registry mirror listens on loopback
only. The anonymous (or basic-credential) token flow is done here once, and the pull
token is handed to the peers for their downloads.

References follow Docker's rules: ``nginx`` is ``docker.io/library/nginx:latest``; a
first component with a dot or a port, or ``localhost``, names the registry.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import aiohttp

from ctl.api import CtlError

DEFAULT_REGISTRY = "docker.io"
_ENDPOINTS = {"docker.io": "https://registry-1.docker.io"}
MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
_INDEX_TYPES = MANIFEST_TYPES[:2]
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_NAME_RE = re.compile(
    r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*"
)
_DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}")


@dataclass(frozen=True)
class ImageReference:
    registry: str  # as in image references, e.g. docker.io or registry.local:5000
    repository: str
    reference: str  # tag or digest

    def __str__(self) -> str:
        separator = "@" if ":" in self.reference else ":"
        return f"{self.registry}/{self.repository}{separator}{self.reference}"


def parse_reference(text: str) -> ImageReference:
    name, _, digest = text.partition("@")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
    else:
        registry, path = DEFAULT_REGISTRY, name
    tag = "latest"
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, tag = path.rsplit(":", 1)
    if registry == DEFAULT_REGISTRY and "/" not in path:
        path = f"library/{path}"
    if not _NAME_RE.fullmatch(path) or not _TAG_RE.fullmatch(tag):
        raise CtlError(f"{text!r} is not an image reference (REGISTRY/REPOSITORY[:TAG|@DIGEST])")
    if digest and not _DIGEST_RE.fullmatch(digest):
        raise CtlError(f"{text!r}: {digest!r} is not a sha256 or sha512 digest")
    return ImageReference(registry, path, digest or tag)


@dataclass(frozen=True)
class Blob:
    digest: str
    size_bytes: int


@dataclass(frozen=True)
class ResolvedImage:
    reference: ImageReference
    manifest_digest: str
    blobs: tuple[Blob, ...]  # configs and layers, each once
    authorization: str | None  # what the peers send the registry for these blobs


def endpoint(registry: str, insecure: frozenset[str]) -> str:
    if registry in _ENDPOINTS:
        return _ENDPOINTS[registry]
    return f"{'http' if registry in insecure else 'https'}://{registry}"


def _platform_matches(descriptor: dict[str, Any], platform: str) -> bool:
    if platform == "all":
        return True
    wanted = platform.split("/")
    found = descriptor.get("platform") or {}
    have = [found.get("os", ""), found.get("architecture", ""), found.get("variant", "")]
    return have[: len(wanted)] == wanted


class RegistryResolver:
    """Reads manifests from one registry, authorizing once for one repository."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        image: ImageReference,
        insecure: frozenset[str],
        credentials: tuple[str, str] | None,
    ) -> None:
        self._session = session
        self._image = image
        self._base = endpoint(image.registry, insecure)
        self._credentials = credentials
        self._authorization: str | None = None
        self._challenge = ""  # WWW-Authenticate of the last answer

    async def resolve(self, platform: str) -> ResolvedImage:
        image = self._image
        media_type, body, digest = await self._manifest(image.reference)
        manifests = [body]
        if media_type in _INDEX_TYPES or "manifests" in body:
            chosen = [d for d in body.get("manifests", []) if _platform_matches(d, platform)]
            if not chosen:
                available = sorted(
                    "/".join(
                        p
                        for p in (
                            (d.get("platform") or {}).get("os", "?"),
                            (d.get("platform") or {}).get("architecture", "?"),
                            (d.get("platform") or {}).get("variant", ""),
                        )
                        if p
                    )
                    for d in body.get("manifests", [])
                )
                raise CtlError(
                    f"{image} has no manifest for platform {platform} (it has: "
                    f"{', '.join(available) or 'none'}); choose one with --platform"
                )
            manifests = [(await self._manifest(d["digest"]))[1] for d in chosen]
        blobs: dict[str, Blob] = {}
        for manifest in manifests:
            try:
                for descriptor in [manifest["config"], *manifest["layers"]]:
                    blob = Blob(str(descriptor["digest"]), int(descriptor["size"]))
                    blobs.setdefault(blob.digest, blob)
            except (KeyError, TypeError, ValueError) as exc:
                raise CtlError(f"{image}: a manifest without config or layers ({exc!r})") from exc
        return ResolvedImage(image, digest, tuple(blobs.values()), self._authorization)

    async def _manifest(self, reference: str) -> tuple[str, dict[str, Any], str]:
        path = f"/v2/{self._image.repository}/manifests/{reference}"
        status, media_type, raw = await self._get(path)
        if status == 401:
            await self._authorize()
            status, media_type, raw = await self._get(path)
        where = f"registry {self._image.registry}"
        if status in (401, 403):
            hint = (
                "check the --registry-credentials"
                if self._credentials
                else "pass --registry-credentials FILE for a private image"
            )
            raise CtlError(
                f"{where} refused to let us pull {self._image.repository} ({status}); {hint}"
            )
        if status == 404:
            raise CtlError(f"{where}: no manifest {self._image.repository}:{reference} (404)")
        if status != 200:
            raise CtlError(f"{where} answered {status} for {path}: {raw[:200]!r}")
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise CtlError(f"{where}: the manifest of {reference} is not JSON") from exc
        if not isinstance(body, dict):
            raise CtlError(f"{where}: the manifest of {reference} is not a JSON object")
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        if ":" in reference and reference != digest:
            raise CtlError(f"{where}: the manifest {reference} arrived with digest {digest}")
        return media_type or str(body.get("mediaType", "")), body, digest

    async def _get(self, path: str) -> tuple[int, str, bytes]:
        headers = {"Accept": ", ".join(MANIFEST_TYPES)}
        if self._authorization:
            headers["Authorization"] = self._authorization
        try:
            async with self._session.get(self._base + path, headers=headers) as resp:
                self._challenge = resp.headers.get("WWW-Authenticate", "")
                return resp.status, resp.content_type, await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CtlError(
                f"cannot reach registry {self._image.registry} at {self._base}: {exc}"
            ) from exc

    def _basic(self) -> str | None:
        if self._credentials is None:
            return None
        user, password = self._credentials
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    async def _authorize(self) -> None:
        """Answer the registry's challenge: a bearer token for pulling this repository."""
        scheme, _, params_text = self._challenge.strip().partition(" ")
        params = dict(_CHALLENGE_PARAM.findall(params_text))
        where = f"registry {self._image.registry}"
        if scheme.lower() == "basic":
            self._authorization = self._basic()
            if self._authorization is None:
                raise CtlError(f"{where} wants credentials: pass --registry-credentials FILE")
            return
        if scheme.lower() != "bearer" or "realm" not in params:
            raise CtlError(f"{where} refused (401) with challenge {self._challenge!r}")
        query = {"scope": f"repository:{self._image.repository}:pull"}
        if "service" in params:
            query["service"] = params["service"]
        basic = self._basic()
        headers = {"Authorization": basic} if basic else {}
        try:
            async with self._session.get(params["realm"], params=query, headers=headers) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CtlError(f"{where}: cannot reach its token server: {exc}") from exc
        if status != 200:
            raise CtlError(
                f"{where}: its token server refused ({status}): {text[:200]}"
                + ("" if basic else "; pass --registry-credentials FILE for a private image")
            )
        try:
            answer = json.loads(text)
            token = answer.get("token") or answer.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not token:
            raise CtlError(f"{where}: its token server gave no token")
        self._authorization = f"Bearer {token}"
