"""Talking to the scheduler's and the peers' JSON APIs, with errors an operator can act on.

Every failure becomes a :class:`CtlError` whose message says which daemon, at which
address, and what to do: not running, refused the token, answered something else, a
certificate the cluster CA did not sign (``--ca-file``, as ``cluster_tls`` checks it).
"""

from __future__ import annotations

import json
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from cluster_tls import ENV_CA_FILE, TLSConfigError, client_context, describe_failure

ENV_TOKEN = "STARLING_TOKEN"
DEFAULT_TIMEOUT_S = 10.0


class CtlError(Exception):
    """What went wrong, in words for the operator; p2pctl prints it and exits 1."""


def read_token(token_file: str | None) -> str | None:
    """The cluster token: ``--token-file``, else ``$STARLING_TOKEN``, else none."""
    if token_file is not None:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            raise CtlError(f"cannot read the token file: {exc}") from exc
        if not token:
            raise CtlError(f"the token file {token_file} is empty")
        return token
    return os.environ.get(ENV_TOKEN, "").strip() or None


def read_ca(ca_file: str | None) -> ssl.SSLContext | None:
    """The client context for ``--ca-file`` (the cluster CA); None: the system's CAs."""
    if ca_file is None:
        return None
    try:
        return client_context(ca_file, "--ca-file")
    except TLSConfigError as exc:
        raise CtlError(str(exc)) from exc


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any

    @property
    def error(self) -> str:
        """The server's own words for a refusal."""
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), str):
            return str(self.body["error"])
        return str(self.body)[:300]


class ApiClient:
    """JSON requests to one daemon; use as ``async with ApiClient(...) as api``."""

    def __init__(
        self,
        what: str,
        base_url: str,
        token: str | None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.what = what
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._timeout_s = timeout_s
        self._ssl_context = ssl_context  # from read_ca; None trusts the system's CAs
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ApiClient:
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        self._session = aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=self._timeout_s),
            connector=aiohttp.TCPConnector(ssl=self._ssl_context) if self._ssl_context else None,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def where(self) -> str:
        return f"the {self.what} at {self.base_url}"

    async def request(self, method: str, path: str, body: Any = None) -> Answer:
        """The answer, whatever its status, except that a refused token is an error."""
        assert self._session is not None, "use ApiClient in async with"
        url = self.base_url + path
        try:
            async with self._session.request(method, url, json=body) as resp:
                text = await resp.text()
                status = resp.status
        except aiohttp.InvalidURL as exc:
            raise CtlError(f"{self.what} address {self.base_url!r} is not a URL") from exc
        except aiohttp.ClientSSLError as exc:
            ca_name = "--ca-file" if self._ssl_context else "the system's CAs"
            reason = describe_failure(exc, ca_name) or str(exc)
            if self._ssl_context is None and isinstance(
                exc, aiohttp.ClientConnectorCertificateError
            ):
                reason += f"; give the cluster CA with --ca-file or ${ENV_CA_FILE}"
            raise CtlError(f"cannot talk to {self.where}: {reason}") from exc
        except aiohttp.ServerDisconnectedError as exc:
            # A TLS port closes a plain HTTP connection at once, without an answer.
            hint = "; if it serves TLS, use an https:// URL" if url.startswith("http:") else ""
            raise CtlError(f"{self.where} closed the connection without answering{hint}") from exc
        except aiohttp.ClientConnectorError as exc:
            # asyncio words a refused connection "Connect call failed (...)"; say it plainly.
            error = exc.os_error
            if error is not None and error.errno and error.errno > 0:
                reason = os.strerror(error.errno).lower()
            else:
                reason = (error.strerror if error is not None else None) or str(exc)
            raise CtlError(f"cannot reach {self.where}: {reason}; is it running?") from exc
        except TimeoutError as exc:
            raise CtlError(f"{self.where} did not answer within {self._timeout_s:g} s") from exc
        except aiohttp.ClientError as exc:
            raise CtlError(f"{method} {url} failed: {exc}") from exc
        try:
            parsed: Any = json.loads(text) if text else None
        except ValueError:
            parsed = text
        answer = Answer(status, parsed)
        if status == 401:
            hint = (
                "the cluster token was refused"
                if self._token
                else "it needs the cluster token and none was given"
            )
            raise CtlError(
                f"{self.where}: {hint} ({answer.error}); pass it with --token-file or {ENV_TOKEN}"
            )
        if status == 403:
            raise CtlError(f"{self.where} refused: {answer.error}")
        return answer

    async def get_json(self, path: str) -> Any:
        """A 200 answer's body; any other status is an error naming the daemon."""
        answer = await self.request("GET", path)
        if answer.status != 200:
            raise CtlError(f"{self.where} answered {answer.status} to GET {path}: {answer.error}")
        return answer.body
