"""The ``tls:`` settings block and the SSL contexts built from it.

The same block goes into the peer's and the scheduler's config file::

    tls:
      cert_file: /etc/starling/tls/tls.crt   # PEM: this part's certificate (and chain)
      key_file: /etc/starling/tls/tls.key    # PEM: its private key, unencrypted
      ca_file: /etc/starling/tls/ca.crt      # PEM: the cluster CA that signed them

The environment variables ``STARLING_TLS_CERT_FILE``, ``STARLING_TLS_KEY_FILE`` and
``STARLING_TLS_CA_FILE`` override the fields (and alone switch TLS on), so a Kubernetes
Secret can be mounted into both workloads by one patch. Without the block and the
variables nothing changes: plain HTTP, as before.

With TLS on, the piece server and the scheduler API serve HTTPS with ``cert_file``, and
every client of them (peer to peer, peer to scheduler, ``p2pctl``) accepts a server only
if its certificate chains up to ``ca_file``. Clients are still authenticated by the
cluster token, not by certificates. The files are checked when the settings are made:
each one readable and PEM, the key belonging to the certificate, and the certificate
accepted by the CA, so a wrong file stops the daemon at start with the field to blame,
not at the first handshake with another node.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import aiohttp

ENV_CERT_FILE = "STARLING_TLS_CERT_FILE"
ENV_KEY_FILE = "STARLING_TLS_KEY_FILE"
ENV_CA_FILE = "STARLING_TLS_CA_FILE"
_ENV = {"cert_file": ENV_CERT_FILE, "key_file": ENV_KEY_FILE, "ca_file": ENV_CA_FILE}
_PEM_CERTIFICATE = "-----BEGIN CERTIFICATE-----"
# An in-memory handshake needs two round trips; a few more cost nothing.
_HANDSHAKE_ROUNDS = 8


class TLSConfigError(ValueError):
    """A ``tls`` setting or one of its files is unusable; the message names the field."""


@dataclass(frozen=True)
class TLSSettings:
    """Paths of PEM files; making one checks the files (see the module's docstring)."""

    cert_file: str
    key_file: str
    ca_file: str

    def __post_init__(self) -> None:
        _check_pem(self.cert_file, "tls.cert_file", _PEM_CERTIFICATE, "certificate")
        key_text = _check_pem(self.key_file, "tls.key_file", "PRIVATE KEY-----", "private key")
        if "ENCRYPTED" in key_text:
            raise TLSConfigError(
                f"tls.key_file {self.key_file}: the key is encrypted (protected by a "
                "passphrase); give the daemon an unencrypted key readable by it alone"
            )
        _check_pem(self.ca_file, "tls.ca_file", _PEM_CERTIFICATE, "CA certificate")
        _handshake(self.server_context(), self.client_context(), self)

    def server_context(self) -> ssl.SSLContext:
        """For the piece server and the scheduler API: presents ``cert_file``."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            # A callback that answers no passphrase: an encrypted key must never make
            # OpenSSL prompt on a terminal a daemon does not have.
            context.load_cert_chain(self.cert_file, self.key_file, password=lambda: b"")
        except ssl.SSLError as exc:
            if "KEY_VALUES_MISMATCH" in str(exc):
                raise TLSConfigError(
                    f"tls.key_file {self.key_file} is not the key of the certificate in "
                    f"tls.cert_file {self.cert_file}"
                ) from exc
            field, path = "tls.key_file", self.key_file
            if not _is_certificate(self.cert_file):
                field, path = "tls.cert_file", self.cert_file
            raise TLSConfigError(
                f"{field} {path}: OpenSSL cannot load it ({exc.reason or exc})"
            ) from exc
        except OSError as exc:
            raise TLSConfigError(f"tls.cert_file / tls.key_file: {exc}") from exc
        return context

    def client_context(self) -> ssl.SSLContext:
        """For peer-to-peer piece fetches and calls to the scheduler: trusts ``ca_file``."""
        return client_context(self.ca_file, "tls.ca_file")


def client_context(ca_file: str, field: str = "ca_file") -> ssl.SSLContext:
    """A client context that accepts exactly the servers whose certificate ``ca_file``
    signed (not the system's public CAs).

    The host name is not checked, on purpose. Peers reach each other at the node
    addresses the scheduler hands out, which come and go with the nodes, and every part
    of a cluster usually shares one certificate (one Kubernetes Secret), which cannot
    name every node's IP. What a client needs to know is "this server belongs to the
    cluster", and that is what a certificate from the cluster's own CA says; so
    ``ca_file`` must be a CA dedicated to Starling (not a public CA, nor a company CA
    that signs other servers too), and the key that goes with it stays off the nodes.
    The cluster token still authenticates every request.
    """
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    except ssl.SSLError as exc:
        raise TLSConfigError(
            f"{field} {ca_file}: OpenSSL cannot load it ({exc.reason or exc})"
        ) from exc
    except OSError as exc:
        raise TLSConfigError(f"{field} {ca_file}: {exc.strerror or exc}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False  # must come before verify_mode; see the docstring
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def load_tls(raw: Any, environ: Mapping[str, str]) -> TLSSettings | None:
    """The ``tls`` block of a config file (None or a mapping), with the environment's
    ``STARLING_TLS_*`` variables over it; None when neither asks for TLS."""
    if raw is None:
        values: dict[str, Any] = {}
    elif isinstance(raw, Mapping):
        values = dict(raw)
    else:
        raise TLSConfigError("tls: expected a mapping with cert_file, key_file and ca_file")
    known = [f.name for f in fields(TLSSettings)]
    for key in values:
        if key not in known:
            raise TLSConfigError(f"unknown setting 'tls.{key}'; known: {', '.join(known)}")
    for key, variable in _ENV.items():
        if value := environ.get(variable, "").strip():
            values[key] = value
    if raw is None and not values:
        return None
    missing = [key for key in known if values.get(key) in (None, "")]
    if missing:
        raise TLSConfigError(
            "tls: cert_file, key_file and ca_file are all needed; missing: "
            + ", ".join(f"{key} (or {_ENV[key]})" for key in missing)
        )
    for key in known:
        if not isinstance(values[key], str):
            raise TLSConfigError(f"tls.{key}: expected a file path, got {values[key]!r}")
    return TLSSettings(**values)


def with_scheme(url: str, tls: bool) -> str:
    """``url`` with the scheme a cluster with (or without) TLS uses: with TLS every URL
    between the parts is https, also when a config file still says http."""
    if tls and url.startswith("http://"):
        return "https://" + url.removeprefix("http://")
    return url


def describe_failure(exc: BaseException, ca_name: str = "tls.ca_file") -> str | None:
    """Words for an aiohttp client request that failed in TLS; None for other failures.

    ``ca_name`` is what the operator calls the CA file (a setting or a flag).
    """
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        error = exc.certificate_error
        reason = getattr(error, "verify_message", None) or str(error)
        return (
            f"TLS: the certificate of {exc.host}:{exc.port} is not accepted by {ca_name} "
            f"({reason}); is it from the cluster CA?"
        )
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        error = exc.os_error
        reason = getattr(error, "reason", None) or str(error)
        return (
            f"TLS handshake with {exc.host}:{exc.port} failed ({reason}); does it serve "
            "TLS (a tls block in its config)?"
        )
    return None


def _check_pem(path: str, field: str, marker: str, what: str) -> str:
    if not path:
        raise TLSConfigError(f"{field}: expected a file path")
    try:
        text = Path(path).read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise TLSConfigError(f"{field} {path}: cannot read it: {exc.strerror or exc}") from exc
    if marker not in text:
        raise TLSConfigError(f"{field} {path}: no PEM {what} in it (expected '{marker}')")
    return text


def _is_certificate(path: str) -> bool:
    """Whether OpenSSL reads the certificates in ``path`` (as trust anchors, which is
    enough to tell a broken certificate file from a broken key file)."""
    try:
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, OSError):
        return False
    return True


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext, settings: TLSSettings) -> None:
    """Let a client trusting ``ca_file`` meet a server presenting ``cert_file``, in memory.

    Every node has the same block, so a certificate its own CA file refuses (signed by
    another CA, expired, not yet valid) would be refused by every other node too.
    """
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_end = client.wrap_bio(to_client, to_server, server_side=False)
    server_end = server.wrap_bio(to_server, to_client, server_side=True)
    done = {"client": False, "server": False}
    try:
        for _ in range(_HANDSHAKE_ROUNDS):
            for name, end in (("client", client_end), ("server", server_end)):
                if not done[name]:
                    try:
                        end.do_handshake()
                        done[name] = True
                    except ssl.SSLWantReadError:
                        pass
            if all(done.values()):
                return
    except ssl.SSLCertVerificationError as exc:
        raise TLSConfigError(
            f"tls.cert_file {settings.cert_file} is not accepted by tls.ca_file "
            f"{settings.ca_file}: {exc.verify_message}"
        ) from exc
    except ssl.SSLError as exc:
        raise TLSConfigError(
            f"tls.cert_file {settings.cert_file}: a TLS handshake with it fails: "
            f"{exc.reason or exc}"
        ) from exc
    raise TLSConfigError(f"tls.cert_file {settings.cert_file}: the TLS handshake did not finish")
