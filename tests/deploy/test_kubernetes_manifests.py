"""The Kubernetes manifests render with kustomize and match the Kubernetes schemas.

``kubectl kustomize`` renders each kustomization (base and overlays) as a cluster would
get it; every object is validated, offline and strictly (unknown fields are errors),
against the OpenAPI-derived JSON schemas bundled in the ``kubernetes-validate`` package.
Then the parts are checked against each other and against the code: the ConfigMaps load
with the daemons' own config loaders, the container arguments parse with their own
command lines, ports and names line up with Services, probes and Prometheus.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from ctl.cli import build_parser as ctl_parser
from peer.cli import build_parser as peer_parser
from peer.config import load_config as load_peer_config
from scheduler.service.cli import build_parser as scheduler_parser
from scheduler.service.config import load_config as load_scheduler_config
from tests.support.prometheus import PROMETHEUS_DIR
from tests.support.requirements import require

KUBERNETES = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
KUSTOMIZATIONS = ["base", "overlays/production"]
# The oldest Kubernetes release still supported upstream when this was written; the
# manifests use nothing newer.
KUBERNETES_VERSION = "1.30"
NAMESPACE = "starling"
Object = dict[str, Any]


def render(kustomization: str) -> list[Object]:
    require(None if shutil.which("kubectl") else "kubectl not installed (needed for kustomize)")
    result = subprocess.run(
        ["kubectl", "kustomize", str(KUBERNETES / kustomization)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(objects: list[Object], kind: str, name: str) -> Object:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def pod_spec(workload: Object) -> Object:
    spec: Object = workload["spec"]["template"]["spec"]
    return spec


def container(workload: Object, name: str) -> Object:
    spec = pod_spec(workload)
    (found,) = [c for c in spec["containers"] + spec.get("initContainers", []) if c["name"] == name]
    return found


def config_file(objects: list[Object], workload: Object, mount_path: str, tmp: Path) -> Path:
    """The file a workload's ConfigMap volume puts at ``mount_path`` (a directory)."""
    spec = pod_spec(workload)
    mounts = {m["mountPath"]: m["name"] for c in spec["containers"] for m in c["volumeMounts"]}
    volume = {v["name"]: v for v in spec["volumes"]}[mounts[mount_path]]
    config_map = find(objects, "ConfigMap", volume["configMap"]["name"])
    ((key, text),) = config_map["data"].items()
    path = tmp / key
    path.write_text(text)
    return path


def args_with_env(container_spec: Object) -> list[str]:
    """The container's arguments as the kubelet expands $(VAR) from fieldRef env."""
    values = {e["name"]: f"<{e['name'].lower()}>" for e in container_spec.get("env", [])}
    args: list[str] = container_spec.get("args", [])
    expanded = []
    for arg in args:
        for name, value in values.items():
            arg = arg.replace(f"$({name})", value)
        expanded.append(arg)
    return expanded


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_object_matches_the_kubernetes_schema(kustomization: str) -> None:
    objects = render(kustomization)
    kinds = {(o["kind"], o["metadata"]["name"].rsplit("-", 1)[0]) for o in objects}
    assert {
        ("DaemonSet", "p2p"),
        ("Deployment", "p2p"),
        ("Deployment", "redis"),
        ("Service", "redis"),
        ("ConfigMap", "p2p-peer-config"),
        ("ConfigMap", "p2p-scheduler-config"),
    } <= kinds
    for obj in objects:
        name = f"{kustomization}: {obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{name}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(f"{name}: {exc.message}")
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == NAMESPACE, name


def test_a_broken_object_fails_validation() -> None:
    (daemon_set,) = [o for o in render("base") if o["kind"] == "DaemonSet"]
    pod_spec(daemon_set)["hostNetwrok"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemon_set, KUBERNETES_VERSION, strict=True)


def test_peer_daemonset_runs_on_the_host_network_with_its_cache_on_the_host(
    tmp_path: Path,
) -> None:
    objects = render("base")
    peers = find(objects, "DaemonSet", "p2p-peer")
    spec = pod_spec(peers)
    assert spec["hostNetwork"] is True
    assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    config = load_peer_config(str(config_file(objects, peers, "/etc/starling", tmp_path)))
    peer = container(peers, "p2p-peer")
    # The cache directory of the config is a hostPath on the node.
    mounts = {m["mountPath"]: m["name"] for m in peer["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes[mounts[config.data_dir]]["hostPath"]["path"] == config.data_dir
    # containerd reaches the mirror on loopback; other peers reach the piece server.
    assert config.listen_host == "127.0.0.1"
    assert config.piece_host == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in peer["ports"]}
    assert ports == {"pieces": config.piece_port}
    for probe in ("readinessProbe", "livenessProbe"):
        assert peer[probe]["httpGet"]["port"] in ports
    assert config.scheduler == "http://p2p-scheduler:8002"
    args = peer_parser().parse_args(args_with_env(peer))
    assert (args.host_id, args.advertise_address) == ("<node_name>", "<node_ip>")
    assert {e["name"] for e in peer["env"]} >= {"STARLING_TOKEN", "NODE_NAME", "NODE_IP"}
    # The init container writes containerd's hosts.toml for the mirror into the host's
    # config_path, with p2pctl's own command line.
    init = container(peers, "containerd-config")
    init_args = ctl_parser().parse_args(init["args"])
    assert init_args.mirror == f"http://127.0.0.1:{config.listen_port}"
    (certs,) = [m for m in init["volumeMounts"] if m["mountPath"] == init_args.config_dir]
    assert volumes[certs["name"]]["hostPath"]["path"] == "/etc/containerd/certs.d"


def test_scheduler_deployment_serves_what_the_peers_and_services_expect(tmp_path: Path) -> None:
    objects = render("base")
    deployment = find(objects, "Deployment", "p2p-scheduler")
    config = load_scheduler_config(str(config_file(objects, deployment, "/etc/starling", tmp_path)))
    scheduler = container(deployment, "p2p-scheduler")
    scheduler_parser().parse_args(scheduler["args"])
    ports = {p["name"]: p["containerPort"] for p in scheduler["ports"]}
    assert ports == {"http": config.listen_port}
    assert config.listen_host == "0.0.0.0"
    assert "STARLING_TOKEN" in {e["name"] for e in scheduler["env"]}
    service = find(objects, "Service", "p2p-scheduler")
    assert [p["port"] for p in service["spec"]["ports"]] == [8002]  # peer.yaml's address


def test_scheduler_replicas_share_the_redis_service_and_advertise_their_pod_ip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = render("base")
    deployment = find(objects, "Deployment", "p2p-scheduler")
    replicas = deployment["spec"]["replicas"]
    assert replicas >= 2
    env = container(deployment, "p2p-scheduler")["env"]
    names = [e["name"] for e in env]
    # The kubelet expands $(POD_IP) only from a variable defined earlier in the list.
    assert names.index("POD_IP") < names.index("STARLING_SCHEDULER_ADVERTISE_URL")
    by_name = {e["name"]: e for e in env}
    assert by_name["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    pod_ip = "10.244.1.7"
    for variable in env:
        if "value" in variable:
            monkeypatch.setenv(variable["name"], variable["value"].replace("$(POD_IP)", pod_ip))
    config = load_scheduler_config(str(config_file(objects, deployment, "/etc/starling", tmp_path)))
    assert config.advertise_url == f"http://{pod_ip}:{config.listen_port}"
    redis = urlsplit(config.redis_url)
    service = find(objects, "Service", "redis")
    assert redis.hostname == service["metadata"]["name"]
    assert redis.port in [p["port"] for p in service["spec"]["ports"]]
    budget = find(objects, "PodDisruptionBudget", "p2p-scheduler")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert budget["spec"]["maxUnavailable"] < replicas


def test_services_select_pods_that_have_their_target_ports() -> None:
    objects = render("base")
    workloads = [o for o in objects if o["kind"] in ("Deployment", "DaemonSet")]
    for service in [o for o in objects if o["kind"] == "Service"]:
        selector = service["spec"]["selector"]
        selected = [
            w
            for w in workloads
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(selected) == 1, service["metadata"]["name"]
        port_names = {p["name"] for c in pod_spec(selected[0])["containers"] for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names, service["metadata"]["name"]


def test_prometheus_finds_the_pods_through_the_headless_services() -> None:
    objects = render("base")
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus-kubernetes.yml").read_text())
    for job in config["scrape_configs"]:
        (discovery,) = job["dns_sd_configs"]
        (name,) = discovery["names"]
        service_name, namespace, *_ = name.split(".")
        assert namespace == NAMESPACE
        service = find(objects, "Service", service_name)
        assert service["spec"]["clusterIP"] == "None", "must resolve to the pods themselves"
        assert discovery["port"] in [p["port"] for p in service["spec"]["ports"]]
        assert service["spec"]["selector"]["app.kubernetes.io/name"] == job["job_name"]


def test_overlay_changes_the_image_and_the_nodes() -> None:
    objects = render("overlays/production")
    peers = find(objects, "DaemonSet", "p2p-peer")
    assert pod_spec(peers)["nodeSelector"] == {"starling.io/peer": "true"}
    images = {
        c["image"]
        for o in objects
        if o["kind"] in ("Deployment", "DaemonSet")
        for c in pod_spec(o)["containers"] + pod_spec(o).get("initContainers", [])
    }
    assert images == {"registry.example.com/platform/starling:0.1.0", "redis:7.2"}
    assert shlex.join(container(peers, "p2p-peer")["command"]) == "p2p-peer"
