"""A minimal OCI distribution push client (aiohttp) with the bearer-token flow.

Just enough for fixtures: check a blob, upload a blob from a file (POST then PUT), put a
manifest. Bodies stream from disk so multi-GiB layers never sit in memory.
"""

from __future__ import annotations

import base64
import re
import urllib.parse
from pathlib import Path

import aiohttp

_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class RegistryError(RuntimeError):
    """The registry (or its token server) answered something the push cannot go on with."""


def basic_auth_header(username: str, password: str) -> str:
    # Built by hand: aiohttp's BasicAuth is deprecated in new releases, and its
    # replacement does not exist in the oldest aiohttp the project supports.
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="x",service="y"`` -> ("bearer", {"realm": "x", "service": "y"})."""
    scheme, _, params = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE_PARAM.findall(params))


class RegistryClient:
    """Talks to one registry for one repository, authorizing once up front."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        registry_url: str,
        repo: str,
        auth: tuple[str, str] | None = None,
    ) -> None:
        self.session = session
        self.registry_url = registry_url.rstrip("/")
        self.repo = repo
        self.auth = auth
        self._headers: dict[str, str] = {}

    async def authorize(self, actions: str = "pull,push") -> None:
        """Ping /v2/ and, if it asks for a bearer token, get one for this repository.

        Fetching the token before the first real request means bodies never have to be
        replayed after a 401.
        """
        async with self.session.get(f"{self.registry_url}/v2/") as resp:
            if resp.status == 200:
                return
            challenge = resp.headers.get("WWW-Authenticate", "")
            if resp.status != 401 or not challenge:
                raise RegistryError(f"GET /v2/ answered {resp.status}: {await resp.text()}")
        scheme, params = parse_challenge(challenge)
        basic = basic_auth_header(*self.auth) if self.auth else None
        if scheme == "basic":
            if basic is None:
                raise RegistryError("registry wants Basic auth and no credentials were given")
            self._headers = {"Authorization": basic}
            return
        if scheme != "bearer" or "realm" not in params:
            raise RegistryError(f"unsupported auth challenge: {challenge}")
        query = {"scope": f"repository:{self.repo}:{actions}"}
        if "service" in params:
            query["service"] = params["service"]
        token_headers = {"Authorization": basic} if basic else {}
        async with self.session.get(params["realm"], params=query, headers=token_headers) as resp:
            if resp.status != 200:
                raise RegistryError(f"token server answered {resp.status}: {await resp.text()}")
            body = await resp.json(content_type=None)
        token = body.get("token") or body.get("access_token")
        if not token:
            raise RegistryError(f"token server gave no token: {body}")
        self._headers = {"Authorization": f"Bearer {token}"}

    def _url(self, path: str) -> str:
        return f"{self.registry_url}/v2/{self.repo}/{path}"

    async def blob_exists(self, digest: str) -> bool:
        async with self.session.head(self._url(f"blobs/{digest}"), headers=self._headers) as resp:
            if resp.status in (200, 404):
                return resp.status == 200
            raise RegistryError(f"HEAD blob {digest} answered {resp.status}")

    async def upload_blob(self, digest: str, path: Path, size: int) -> None:
        """POST an upload session, then PUT the whole file to it with ``?digest=``."""
        async with self.session.post(self._url("blobs/uploads/"), headers=self._headers) as resp:
            if resp.status != 202 or "Location" not in resp.headers:
                raise RegistryError(f"starting upload answered {resp.status}: {await resp.text()}")
            # Location may be relative; resolve it against the URL that was asked.
            location = urllib.parse.urljoin(str(resp.url), resp.headers["Location"])
        separator = "&" if "?" in location else "?"
        put_url = f"{location}{separator}digest={urllib.parse.quote(digest, safe=':')}"
        headers = {
            **self._headers,
            "Content-Type": "application/octet-stream",
            "Content-Length": str(size),
        }
        with path.open("rb") as body:
            async with self.session.put(put_url, data=body, headers=headers) as resp:
                if resp.status != 201:
                    raise RegistryError(
                        f"finishing upload of {digest} answered {resp.status}: {await resp.text()}"
                    )

    async def put_manifest(self, reference: str, media_type: str, body: bytes) -> str:
        """PUT a manifest under a tag or digest; return the digest the registry reports."""
        headers = {**self._headers, "Content-Type": media_type}
        async with self.session.put(
            self._url(f"manifests/{reference}"), data=body, headers=headers
        ) as resp:
            if resp.status != 201:
                raise RegistryError(f"PUT manifest answered {resp.status}: {await resp.text()}")
            return resp.headers.get("Docker-Content-Digest", "")
