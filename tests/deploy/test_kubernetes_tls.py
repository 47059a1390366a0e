"""The TLS component of the Kubernetes manifests: one Secret, the same for both daemons.

``components/tls`` (used by ``overlays/production``) mounts the ``starling-tls`` Secret
into the peers and the scheduler at the same path and sets the same three
``STARLING_TLS_*`` variables, which the daemons' own config loaders turn into their
``tls`` block. ``base`` stays without TLS. Rendering and schema validation are the job
of ``test_kubernetes_manifests.py``, which covers the production overlay too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster_tls import ENV_CA_FILE, ENV_CERT_FILE, ENV_KEY_FILE, TLSSettings
from peer.config import load_config as load_peer_config
from scheduler.service.config import load_config as load_scheduler_config
from tests.deploy.test_kubernetes_manifests import config_file, container, find, pod_spec, render
from tests.support.tls import ClusterCA

# kind, name, container of the two workloads whose ports other machines reach.
WORKLOADS = [
    ("DaemonSet", "p2p-peer", "p2p-peer"),
    ("Deployment", "p2p-scheduler", "p2p-scheduler"),
]
TLS_ENV = {ENV_CERT_FILE, ENV_KEY_FILE, ENV_CA_FILE}
PROBES = ("readinessProbe", "livenessProbe")


def test_base_has_no_tls() -> None:
    objects = render("base")
    for kind, name, container_name in WORKLOADS:
        daemon = container(find(objects, kind, name), container_name)
        assert not TLS_ENV & {e["name"] for e in daemon["env"]}
        for probe in PROBES:
            assert daemon[probe]["httpGet"].get("scheme", "HTTP") == "HTTP"


def test_one_secret_is_mounted_and_named_alike_in_both_workloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = render("overlays/production")
    seen = set()
    for kind, name, container_name in WORKLOADS:
        workload = find(objects, kind, name)
        daemon = container(workload, container_name)
        secrets = {
            v["name"]: v["secret"]["secretName"]
            for v in pod_spec(workload)["volumes"]
            if "secret" in v
        }
        assert list(secrets.values()) == ["starling-tls"], name
        (volume,) = secrets
        mounts = {m["name"]: m for m in daemon["volumeMounts"]}
        assert mounts[volume]["readOnly"] is True
        mount_path = Path(mounts[volume]["mountPath"])
        env = {e["name"]: e["value"] for e in daemon["env"] if e["name"] in TLS_ENV}
        assert set(env) == TLS_ENV, name
        # Each variable names a key of the Secret in the mounted directory.
        assert {Path(v).parent for v in env.values()} == {mount_path}
        for probe in PROBES:
            assert daemon[probe]["httpGet"]["scheme"] == "HTTPS", (name, probe)
        seen.add((mount_path, tuple(sorted(env.items()))))
    assert len(seen) == 1, seen

    # The daemons' loaders, given the ConfigMaps and those variables (pointing at files
    # named as the Secret's keys), come up with TLS on and the same block.
    ((mount_path, env_items),) = seen
    files = ClusterCA(tmp_path / "ca").issue("starling", hosts=("starling",))
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    sources = {
        ENV_CERT_FILE: files.cert_file,
        ENV_KEY_FILE: files.key_file,
        ENV_CA_FILE: files.ca_file,
    }
    for variable, value in env_items:
        local = secret_dir / Path(value).name
        local.write_bytes(sources[variable].read_bytes())
        monkeypatch.setenv(variable, str(local))
    peers = find(objects, "DaemonSet", "p2p-peer")
    scheduler = find(objects, "Deployment", "p2p-scheduler")
    peer_config = load_peer_config(str(config_file(objects, peers, "/etc/starling", tmp_path)))
    scheduler_config = load_scheduler_config(
        str(config_file(objects, scheduler, "/etc/starling", tmp_path))
    )
    expected = TLSSettings(
        str(secret_dir / "tls.crt"), str(secret_dir / "tls.key"), str(secret_dir / "ca.crt")
    )
    assert peer_config.tls == scheduler_config.tls == expected
    # The mirror stays plain HTTP on loopback for containerd.
    assert peer_config.listen_host == "127.0.0.1"
