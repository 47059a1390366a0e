"""Errors of the registry side and their OCI error bodies (sans-IO).

Every failure a client can see is rendered as the OCI distribution error JSON, so a
client such as containerd reads a reason and never an HTML page.
"""

from __future__ import annotations

import json
from typing import Any


class RegistryProxyError(Exception):
    """Root of every error raised by :mod:`registry_proxy`."""


class ProtocolError(RegistryProxyError):
    """Bad input from the network, answered with ``status`` and an OCI error body."""

    def __init__(self, status: int, code: str, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail

    def body(self) -> bytes:
        return oci_error_body(self.code, self.message, self.detail)


class UpstreamError(RegistryProxyError):
    """The upstream registry could not be reached or answered unusably."""


def oci_error_body(code: str, message: str, detail: Any = None) -> bytes:
    """The ``{"errors": [...]}`` document of the OCI distribution spec."""
    error: dict[str, Any] = {"code": code, "message": message}
    if detail is not None:
        error["detail"] = detail
    return json.dumps({"errors": [error]}).encode()
