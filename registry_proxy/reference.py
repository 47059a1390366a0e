"""Parsing of ``/v2/`` paths, repository names, references and digests (sans-IO).

The grammar follows the OCI distribution spec: names are lowercase path components,
tags are at most 128 characters, digests are ``algorithm:encoded``. Anything else is a
:class:`ProtocolError` with the 4xx status and error code the spec names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from registry_proxy.errors import ProtocolError

_NAME_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_RE = re.compile(rf"{_NAME_COMPONENT}(?:/{_NAME_COMPONENT})*")
TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
DIGEST_RE = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")

# Lengths of the hex encodings of the digest algorithms the spec registers.
_HEX_LENGTHS = {"sha256": 64, "sha512": 128}
MAX_NAME_LENGTH = 255


class Kind(Enum):
    PING = "ping"
    MANIFEST = "manifests"
    BLOB = "blobs"
    TAGS = "tags"


@dataclass(frozen=True)
class Digest:
    """A content digest such as ``sha256:<64 hex>``."""

    algorithm: str
    encoded: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.encoded}"


@dataclass(frozen=True)
class RegistryPath:
    """What a ``/v2/`` request path asks for."""

    kind: Kind
    name: str = ""
    reference: str = ""  # tag or digest for manifests, digest for blobs


def parse_digest(text: str) -> Digest:
    """Parse and validate a digest; only registered algorithms are accepted."""
    if not DIGEST_RE.fullmatch(text):
        raise ProtocolError(400, "DIGEST_INVALID", f"invalid digest {text!r}")
    algorithm, encoded = text.split(":", 1)
    expected = _HEX_LENGTHS.get(algorithm)
    if expected is None:
        raise ProtocolError(400, "DIGEST_INVALID", f"unsupported digest algorithm {algorithm!r}")
    if len(encoded) != expected or not re.fullmatch(r"[a-f0-9]+", encoded):
        raise ProtocolError(
            400, "DIGEST_INVALID", f"{algorithm} digest must be {expected} lowercase hex digits"
        )
    return Digest(algorithm, encoded)


def validate_name(name: str) -> str:
    if len(name) > MAX_NAME_LENGTH or not NAME_RE.fullmatch(name):
        raise ProtocolError(400, "NAME_INVALID", f"invalid repository name {name!r}")
    return name


def validate_reference(reference: str) -> str:
    """A manifest reference is a tag or a digest."""
    if ":" in reference:
        parse_digest(reference)
        return reference
    if not TAG_RE.fullmatch(reference):
        raise ProtocolError(400, "MANIFEST_INVALID", f"invalid tag {reference!r}")
    return reference


def parse_path(path: str) -> RegistryPath:
    """Split a ``/v2/...`` path into what it asks for, validating every part.

    Repository names contain slashes, so the path is read from the right: the last
    two components are the endpoint and the reference, the rest is the name.
    """
    if path in ("/v2", "/v2/"):
        return RegistryPath(Kind.PING)
    if not path.startswith("/v2/"):
        raise ProtocolError(404, "UNSUPPORTED", f"not a registry API path: {path!r}")
    parts = path[len("/v2/") :].split("/")
    # Uploads are ``<name>/blobs/uploads/`` and ``<name>/blobs/uploads/<session>``. Only
    # the end of the path counts: ``blobs/uploads`` earlier on is part of the name.
    if parts[-2:] == ["blobs", "uploads"] or parts[-3:-1] == ["blobs", "uploads"]:
        raise ProtocolError(405, "UNSUPPORTED", "the mirror is read-only")
    if len(parts) >= 3 and parts[-2] == "tags" and parts[-1] == "list":
        return RegistryPath(Kind.TAGS, validate_name("/".join(parts[:-2])))
    if len(parts) < 3 or parts[-2] not in ("manifests", "blobs"):
        raise ProtocolError(404, "UNSUPPORTED", f"unsupported registry API path: {path!r}")
    name = validate_name("/".join(parts[:-2]))
    if parts[-2] == "manifests":
        return RegistryPath(Kind.MANIFEST, name, validate_reference(parts[-1]))
    return RegistryPath(Kind.BLOB, name, str(parse_digest(parts[-1])))
