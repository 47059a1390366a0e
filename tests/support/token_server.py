"""A registry token server: issues bearer JWTs the distribution registry accepts.

This is the Docker token-auth flow (distribution ``auth.token``): the registry answers 401
with ``WWW-Authenticate: Bearer realm=...,service=...,scope=...``, the client asks the realm
for a token (GET with Basic auth, or the OAuth2 POST form that containerd tries first) and
retries with ``Authorization: Bearer <jwt>``.

The JWT is signed with a P-256 key (ES256). Its header carries the signing certificate in
``x5c``; distribution 2.8 verifies that chain against ``auth.token.rootcertbundle``, to which
the same self-signed certificate is written. That avoids ``kid``, which distribution expects
in libtrust's key-id format.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from .threaded_server import ThreadedServer

DEFAULT_SERVICE = "starling-test-registry"
DEFAULT_ISSUER = "starling-test-token-issuer"


@dataclass(frozen=True)
class TokenRequest:
    """One call to the token endpoint, as the server saw it."""

    method: str
    username: str | None  # None: anonymous
    scopes: tuple[str, ...]
    granted: bool  # False: refused with 401


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _parse_scope(scope: str) -> dict[str, Any] | None:
    """``repository:name:pull,push`` -> an access entry; the name may itself hold ':'."""
    kind, sep, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not sep or not sep2 or not name:
        return None
    return {"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]}


class TokenServer:
    """Issues registry tokens to the users in ``users`` (name -> password).

    Known users get every action they ask for; a wrong password is refused with 401;
    anonymous callers get a valid token with no access, so the registry then refuses them
    with 401 on the repository, as Docker Hub-style token servers do.
    """

    def __init__(
        self,
        users: dict[str, str],
        service: str = DEFAULT_SERVICE,
        issuer: str = DEFAULT_ISSUER,
        token_ttl_s: int = 300,
    ) -> None:
        self.users = dict(users)
        self.service = service
        self.issuer = issuer
        self.token_ttl_s = token_ttl_s
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._cert = self._self_signed_cert()
        self._x5c = base64.b64encode(self._cert.public_bytes(serialization.Encoding.DER)).decode()
        self._lock = threading.Lock()
        self._requests: list[TokenRequest] = []
        app = web.Application()
        app.router.add_route("GET", "/token", self._handle_get)
        app.router.add_route("POST", "/token", self._handle_post)
        self._server = ThreadedServer(app, name="token-server")

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> TokenServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def realm(self) -> str:
        return f"{self._server.url}/token"

    @property
    def requests(self) -> list[TokenRequest]:
        with self._lock:
            return list(self._requests)

    # -- registry configuration ----------------------------------------------------

    @property
    def cert_pem(self) -> bytes:
        return self._cert.public_bytes(serialization.Encoding.PEM)

    def registry_auth_config(self, cert_bundle_path: Path) -> dict[str, Any]:
        """Write the root cert bundle and return the registry's ``auth`` config section."""
        cert_bundle_path.write_bytes(self.cert_pem)
        return {
            "token": {
                "realm": self.realm,
                "service": self.service,
                "issuer": self.issuer,
                "rootcertbundle": str(cert_bundle_path),
            }
        }

    # -- tokens ----------------------------------------------------------------------

    def _self_signed_cert(self) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "starling test token signer")])
        now = dt.datetime.now(dt.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            # Backdated so a registry whose clock is a little behind still trusts it.
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )

    def issue_token(self, subject: str, access: list[dict[str, Any]]) -> str:
        """A signed ES256 JWT in the claim layout distribution's token auth checks."""
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "x5c": [self._x5c]}
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + self.token_ttl_s,
            "nbf": now - 60,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        signing_input = (
            _b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        # JWS wants the raw 64-byte r||s form, not the DER that cryptography returns.
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return signing_input + "." + _b64url(signature)

    def _answer(
        self, method: str, username: str | None, password: str | None, scopes: list[str]
    ) -> web.Response:
        if username is not None and self.users.get(username) != password:
            with self._lock:
                self._requests.append(TokenRequest(method, username, tuple(scopes), False))
            body = {"errors": [{"code": "UNAUTHORIZED", "message": "bad username or password"}]}
            return web.json_response(body, status=401)
        access: list[dict[str, Any]] = []
        if username is not None:
            access = [entry for s in scopes if (entry := _parse_scope(s)) is not None]
        token = self.issue_token(username or "", access)
        with self._lock:
            self._requests.append(TokenRequest(method, username, tuple(scopes), True))
        issued_at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return web.json_response(
            {
                "token": token,
                "access_token": token,
                "expires_in": self.token_ttl_s,
                "issued_at": issued_at,
            }
        )

    async def _handle_get(self, request: web.Request) -> web.Response:
        """Docker token GET: scopes as repeated ``scope`` params, user in Basic auth."""
        username: str | None = None
        password: str | None = None
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(header[6:].strip()).decode()
            except (binascii.Error, UnicodeDecodeError):
                return web.json_response({"errors": [{"code": "UNAUTHORIZED"}]}, status=401)
            username, _, password = decoded.partition(":")
        return self._answer("GET", username, password, request.query.getall("scope", []))

    async def _handle_post(self, request: web.Request) -> web.Response:
        """OAuth2 password grant, which containerd tries first when it has credentials."""
        form = await request.post()
        if form.get("grant_type") != "password":
            # No refresh tokens are issued, so only the password grant can succeed.
            body = {"error": "unsupported_grant_type"}
            return web.json_response(body, status=400)
        username = str(form.get("username", ""))
        password = str(form.get("password", ""))
        scopes = str(form.get("scope", "")).split()
        return self._answer("POST", username, password, scopes)
