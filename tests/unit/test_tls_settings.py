"""The ``tls`` block: one shape for the peer and the scheduler, files checked at load.

Every bad file must stop the daemon at start with the field and the file named, through
both config loaders, never later at a handshake with another node.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cluster_tls import TLSConfigError, TLSSettings, load_tls, with_scheme
from peer.config import ConfigError as PeerConfigError
from peer.config import load_config as load_peer_config
from scheduler.service.config import ConfigError as SchedulerConfigError
from scheduler.service.config import load_config as load_scheduler_config
from tests.support.tls import CertFiles, ClusterCA, bundle

ENV_NAMES = ("STARLING_TLS_CERT_FILE", "STARLING_TLS_KEY_FILE", "STARLING_TLS_CA_FILE")


@pytest.fixture(autouse=True)
def _no_tls_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


@dataclass
class Cluster:
    ca: ClusterCA
    other: ClusterCA  # a CA the cluster does not trust
    node: CertFiles
    tmp: Path


@pytest.fixture
def cluster(tmp_path: Path) -> Cluster:
    ca = ClusterCA(tmp_path / "ca")
    return Cluster(ca, ClusterCA(tmp_path / "other", "Other CA"), ca.issue("node"), tmp_path)


def _write(tmp: Path, name: str, settings: dict[str, object]) -> str:
    path = tmp / name
    path.write_text(yaml.safe_dump(settings))
    return str(path)


def test_without_a_block_nothing_changes(tmp_path: Path) -> None:
    assert load_tls(None, {}) is None
    assert load_peer_config(None).tls is None
    assert load_scheduler_config(None).tls is None


def test_the_same_block_loads_in_the_peer_and_the_scheduler(cluster: Cluster) -> None:
    block = cluster.node.block()
    peer = load_peer_config(_write(cluster.tmp, "peer.yaml", {"tls": block}))
    scheduler = load_scheduler_config(_write(cluster.tmp, "scheduler.yaml", {"tls": block}))
    assert peer.tls == scheduler.tls == TLSSettings(**block)
    assert peer.tls is not None
    assert peer.tls.server_context().verify_mode.name == "CERT_NONE"  # no client certs
    client = peer.tls.client_context()
    assert client.verify_mode.name == "CERT_REQUIRED"
    assert client.check_hostname is False  # peers are addressed by IP (cluster_tls)
    # Only the cluster CA is trusted, not the system's public CAs.
    assert [c["subject"] for c in client.get_ca_certs()] == [
        ((("commonName", "Starling test CA"),),)
    ]


def test_environment_alone_switches_tls_on_and_overrides_the_file(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    block = cluster.node.block()
    for name, key in zip(ENV_NAMES, ("cert_file", "key_file", "ca_file"), strict=True):
        monkeypatch.setenv(name, block[key])
    assert load_peer_config(None).tls == TLSSettings(**block)
    assert load_scheduler_config(None).tls == TLSSettings(**block)
    # A file naming a missing CA file is overridden by the environment's.
    wrong = {**block, "ca_file": str(cluster.tmp / "missing.crt")}
    assert load_peer_config(_write(cluster.tmp, "p.yaml", {"tls": wrong})).tls == TLSSettings(
        **block
    )


def test_a_partial_environment_names_what_is_missing(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STARLING_TLS_CA_FILE", str(cluster.ca.ca_file))
    with pytest.raises(PeerConfigError, match="missing: cert_file .*STARLING_TLS_CERT_FILE"):
        load_peer_config(None)
    with pytest.raises(SchedulerConfigError, match="missing: cert_file"):
        load_scheduler_config(None)


def _encrypted_key(cluster: Cluster) -> dict[str, str]:
    path = cluster.tmp / "encrypted.key"
    path.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    return {**cluster.node.block(), "key_file": str(path)}


def _not_pem(cluster: Cluster, key: str) -> dict[str, str]:
    path = cluster.tmp / f"garbage-{key}"
    path.write_text("not a PEM file\n")
    return {**cluster.node.block(), key: str(path)}


def _corrupt_certificate(cluster: Cluster) -> dict[str, str]:
    path = cluster.tmp / "corrupt.crt"
    path.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    return {**cluster.node.block(), "cert_file": str(path)}


BadBlock = Callable[[Cluster], object]
BAD_BLOCKS: list[tuple[str, BadBlock, str]] = [
    (
        "missing cert",
        lambda c: {**c.node.block(), "cert_file": str(c.tmp / "nope.crt")},
        r"tls\.cert_file .*nope\.crt: cannot read it: No such file",
    ),
    (
        "cert not PEM",
        lambda c: _not_pem(c, "cert_file"),
        r"tls\.cert_file .*garbage-cert_file: no PEM certificate",
    ),
    (
        "corrupt cert",
        _corrupt_certificate,
        r"tls\.cert_file .*corrupt\.crt: OpenSSL cannot load it",
    ),
    (
        "key not PEM",
        lambda c: _not_pem(c, "key_file"),
        r"tls\.key_file .*garbage-key_file: no PEM private key",
    ),
    ("encrypted key", _encrypted_key, r"tls\.key_file .*encrypted\.key: the key is encrypted"),
    (
        "key of another cert",
        lambda c: {**c.node.block(), "key_file": str(c.ca.issue("spare").key_file)},
        r"tls\.key_file .*spare\.key is not the key of the certificate in tls\.cert_file",
    ),
    (
        "CA not PEM",
        lambda c: _not_pem(c, "ca_file"),
        r"tls\.ca_file .*garbage-ca_file: no PEM CA certificate",
    ),
    (
        "cert from another CA",
        lambda c: {**c.other.issue("rogue").block(), "ca_file": str(c.ca.ca_file)},
        r"tls\.cert_file .*rogue\.crt is not accepted by tls\.ca_file .*ca\.crt: "
        r"unable to get local issuer certificate",
    ),
    (
        "expired cert",
        lambda c: c.ca.issue("old", valid_days=-1).block(),
        r"tls\.cert_file .*old\.crt is not accepted by tls\.ca_file .*: certificate has expired",
    ),
    (
        "unknown key",
        lambda c: {**c.node.block(), "certfile": "x"},
        r"unknown setting 'tls\.certfile'; known: cert_file, key_file, ca_file",
    ),
    (
        "missing field",
        lambda c: {"cert_file": str(c.node.cert_file), "ca_file": str(c.node.ca_file)},
        r"missing: key_file \(or STARLING_TLS_KEY_FILE\)",
    ),
    ("empty block", lambda c: {}, r"missing: cert_file .*, key_file .*, ca_file"),
    ("not a mapping", lambda c: "/etc/starling/tls", r"tls: expected a mapping"),
    (
        "not a path",
        lambda c: {**c.node.block(), "ca_file": ["a", "b"]},
        r"tls\.ca_file: expected a file path",
    ),
]


@pytest.mark.parametrize(
    ("make", "message"),
    [(make, message) for _, make, message in BAD_BLOCKS],
    ids=[name for name, _, _ in BAD_BLOCKS],
)
def test_bad_blocks_are_refused_by_both_loaders_naming_field_and_file(
    cluster: Cluster, make: BadBlock, message: str
) -> None:
    block = make(cluster)
    with pytest.raises(PeerConfigError, match=message):
        load_peer_config(_write(cluster.tmp, "peer.yaml", {"tls": block}))
    with pytest.raises(SchedulerConfigError, match=message):
        load_scheduler_config(_write(cluster.tmp, "scheduler.yaml", {"tls": block}))


def test_a_ca_bundle_accepts_certificates_of_each_ca(cluster: Cluster) -> None:
    # During a CA rotation nodes trust the old and the new CA at once.
    both = bundle(cluster.tmp / "both.crt", cluster.ca, cluster.other)
    rogue = cluster.other.issue("new-ca-node", ca_file=both)
    assert TLSSettings(**rogue.block()).client_context() is not None
    with pytest.raises(TLSConfigError, match="not accepted"):
        TLSSettings(**{**rogue.block(), "ca_file": str(cluster.ca.ca_file)})


def test_a_misspelt_block_is_refused_naming_tls_among_the_known_settings(tmp_path: Path) -> None:
    with pytest.raises(PeerConfigError, match=r"unknown setting 'tsl'.*known: .*\btls\b"):
        load_peer_config(_write(tmp_path, "p.yaml", {"tsl": {}}))
    with pytest.raises(SchedulerConfigError, match=r"unknown setting 'tsl'.*known: .*\btls\b"):
        load_scheduler_config(_write(tmp_path, "s.yaml", {"tsl": {}}))


@pytest.mark.parametrize(
    ("url", "tls", "expected"),
    [
        ("http://sched:8002", True, "https://sched:8002"),
        ("https://sched:8002", True, "https://sched:8002"),
        ("http://sched:8002", False, "http://sched:8002"),
        ("https://sched:8002", False, "https://sched:8002"),
    ],
)
def test_with_tls_every_url_is_https(url: str, tls: bool, expected: str) -> None:
    assert with_scheme(url, tls) == expected
