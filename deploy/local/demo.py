"""`make demo`: a registry, a Starling peer and containerd on this machine, one image pulled twice.

Shows what Starling does today: containerd pulls through the peer's mirror, blobs are
fetched from the registry in verified pieces and cached, and a second pull (another
containerd namespace) gets every blob from the peer's cache, without one blob byte
from the registry.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from peer.pieces import MiB  # noqa: E402
from peer.sizes import format_size  # noqa: E402
from tests.e2e.conftest import PeerProcess, metric_value  # noqa: E402
from tests.support.containerd import (  # noqa: E402
    ContainerdProcess,
    containerd_unavailable_reason,
    write_hosts_toml,
)
from tests.support.counting_proxy import CountingProxy  # noqa: E402
from tests.support.images import push_image  # noqa: E402
from tests.support.registry import RegistryProcess, registry_unavailable_reason  # noqa: E402


def say(text: str) -> None:
    print(f"==> {text}", flush=True)


def pull_with_http(
    peer: PeerProcess, image_repo: str, registry_host: str, digests: list[str]
) -> None:
    for digest in digests:
        url = f"{peer.url}/v2/{image_repo}/blobs/{digest}?ns={registry_host}"
        with urllib.request.urlopen(url, timeout=120) as resp:
            while resp.read(1 << 20):
                pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layers-mib", default="64,16,1", help="layer sizes in MiB")
    args = parser.parse_args()
    sizes = [int(float(x) * MiB) for x in args.layers_mib.split(",")]
    if reason := registry_unavailable_reason():
        print(f"demo needs the registry: {reason}", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="starling-demo-"))
    registry = RegistryProcess(work / "registry")
    proxy: CountingProxy | None = None
    peer: PeerProcess | None = None
    containerd: ContainerdProcess | None = None
    try:
        say("starting a CNCF distribution registry (docker-registry)")
        registry.start()
        say(
            f"registry at {registry.url}; pushing a generated image with layers "
            + ", ".join(format_size(s) for s in sizes)
        )
        image = push_image(registry.url, "demo/app", "v1", sizes, seed=42, work_dir=work / "image")
        say(f"pushed {image.reference} ({format_size(image.total_blob_bytes)} of blobs)")
        proxy = CountingProxy(registry.url).start()
        say(f"a counting proxy at {proxy.url} counts every blob byte the registry sends")
        peer = PeerProcess(
            work / "peer",
            {
                "upstream": {
                    "insecure_registries": [registry.host],
                    "endpoints": {registry.host: proxy.url},
                }
            },
        ).start()
        say(f"p2p-peer mirror at {peer.url} (data dir {peer.data_dir}, log {peer.log_path})")

        ctr_reason = containerd_unavailable_reason()
        if ctr_reason is None:
            containerd = ContainerdProcess(work / "containerd").start()
            hosts = work / "certs.d"
            hosts_file = write_hosts_toml(hosts, registry.host, [peer.url], server_url=registry.url)
            say(f"containerd running privately; its hosts.toml ({hosts_file}):")
            print("    " + hosts_file.read_text().strip().replace("\n", "\n    "))
        else:
            say(f"containerd not usable here ({ctr_reason}): fetching blobs over HTTP instead")

        for round_number, namespace in enumerate(("team-a", "team-b"), start=1):
            before = proxy.total_blob_bytes
            started = time.monotonic()
            if containerd is not None:
                result = containerd.pull(image.reference, namespace=namespace, hosts_dir=hosts)
                if result.returncode != 0:
                    print(result.stderr, file=sys.stderr)
                    return 1
                how = f"ctr -n {namespace} images pull"
            else:
                pull_with_http(peer, image.repo, registry.host, image.blob_digests)
                how = "HTTP GET of every blob"
            elapsed = time.monotonic() - started
            from_registry = proxy.total_blob_bytes - before
            say(
                f"pull {round_number} ({how}): {elapsed:.2f}s, "
                f"{format_size(from_registry)} of blobs from the registry"
            )

        metrics = peer.metrics()
        say("what the peer reports (/metrics):")
        for label in ("miss", "joined", "hit"):
            value = metric_value(metrics, "p2p_peer_blob_requests_total", f'result="{label}"')
            print(f"    blob requests {label:>6}: {value:.0f}")
        origin = metric_value(metrics, "p2p_peer_download_bytes_total", 'source="origin"')
        served = metric_value(metrics, "p2p_peer_served_bytes_total")
        print(f"    bytes fetched from the registry: {format_size(origin)}")
        print(f"    bytes served to clients:         {format_size(served)}")
        health = peer.health()
        print(f"    cache: {health['cache_blobs']} blobs, {format_size(health['cache_bytes'])}")
        ok = proxy.total_blob_bytes == image.total_blob_bytes
        say(
            "the registry sent each blob exactly once: second pull came from the peer's cache"
            if ok
            else f"unexpected: registry sent {format_size(proxy.total_blob_bytes)} in all"
        )
        return 0 if ok else 1
    finally:
        for closer in (containerd, peer, proxy, registry):
            if closer is not None:
                closer.stop()
        image_dir = work
        import shutil

        shutil.rmtree(image_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
