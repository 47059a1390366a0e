"""The swarm benchmark's network: one network namespace per node, shaped with ``tc``.

Every node (registry, scheduler, seed, peers) gets a namespace ``sbt-<node>`` with one
interface ``eth0`` at ``10.210.0.<n>/24``; its other end sits in a bridge that lives in a
namespace of its own (``sbt-br``), so the root namespace and its interfaces are never
touched (the one host setting a run may change, and restores, is the list of TCP
congestion controls namespaces may choose: see :class:`NamespaceNetwork`). Two
token-bucket filters shape each node:

* upload: ``tbf`` on the node's ``eth0`` (everything the node sends);
* download: ``tbf`` on the node's bridge port (everything the bridge sends to the node).

So a byte from peer A to peer B is limited by A's upload and B's download, as on a real
network whose core is faster than the hosts' links. The registry's upload is its egress
limit; the scheduler is not shaped. This kernel has no ``netem``: no latency is added.

Racks (:class:`Rack`, used by the cluster benchmark) are bridges of their own in the same
bridge namespace, each joined to the core bridge by a veth pair whose two ends are shaped:
the rack-side end's ``tbf`` is the rack's uplink (rack to core), the core-side end's its
downlink (core to rack). Nodes of a rack hang off its bridge, everyone else off the core
bridge; one /24 spans them all (the bridges form one layer-2 tree), so traffic between two
nodes of one rack never leaves the rack and traffic between racks crosses both uplinks, as
in ``simulations.topology``.

When namespaces or ``tc`` do not work here, :class:`LoopbackNetwork` puts every node on
127.0.0.1 and nothing in the kernel shapes anything; the benchmark then caps uploads in
the peers themselves and says so loudly.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.ports import free_port

# Every namespace this benchmark creates starts with this, so leftovers of a crashed run
# are recognised and removed (with the processes in them) by the next run.
PREFIX = "sbt-"
BRIDGE_NS = f"{PREFIX}br"
BRIDGE = "sbtbr0"
SUBNET = "10.210.0"
PREFIX_LEN = 24
# Bytes the token bucket may send at line rate. GSO packets on a veth are up to 64 KiB
# and tbf segments anything larger than its bucket, so 64 KiB keeps whole packets.
TBF_BURST_BYTES = 64 * 1024
# Queueing delay a shaper allows before it drops, like a switch port's buffer.
TBF_LATENCY_MS = 50
CC_SYSCTL = "net.ipv4.tcp_congestion_control"
CC_ALLOWED_SYSCTL = "net.ipv4.tcp_allowed_congestion_control"
CC_AVAILABLE_SYSCTL = "net.ipv4.tcp_available_congestion_control"
# Fixed ports inside the namespaces (each namespace has its own port space).
NAMESPACE_PORTS = {"registry": 5000, "scheduler": 8002, "mirror": 65001, "piece": 65002}
COMMAND_TIMEOUT_S = 20.0


class NetworkError(RuntimeError):
    """Namespaces, links or shapers could not be set up."""


@dataclass(frozen=True)
class Shaping:
    """Per-node link limits in bits per second; None leaves that direction unshaped."""

    up_bps: float | None = None
    down_bps: float | None = None


@dataclass(frozen=True)
class NodeSpec:
    """A node to create: its name, link limits and the rack label its peer announces.

    A node sits behind a rack's bridge and uplink when the network has a :class:`Rack`
    of that name; otherwise the label is only what the scheduler is told.
    """

    name: str
    shaping: Shaping
    rack: str = ""


@dataclass(frozen=True)
class Rack:
    """A rack: a bridge of its own whose uplink to the core bridge is shaped both ways.

    ``uplink.up_bps`` limits what the rack sends to the core (and on to other racks),
    ``uplink.down_bps`` what it receives from there.
    """

    name: str
    uplink: Shaping


@dataclass
class Node:
    """One machine of the benchmark: where it lives and how its traffic is limited."""

    name: str
    address: str
    shaping: Shaping
    netns: str | None = None
    ports: dict[str, int] = field(default_factory=dict)
    rack: str = ""  # the rack label (see NodeSpec)

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` as run on this node (inside its namespace, when it has one)."""
        if self.netns is None:
            return list(argv)
        return ["ip", "netns", "exec", self.netns, *argv]

    def url(self, port_name: str) -> str:
        return f"http://{self.address}:{self.ports[port_name]}"

    def http_get(self, url: str, timeout_s: float = 10.0) -> tuple[int, bytes]:
        """GET ``url`` from this node; (status, body), status 0 when nothing answered."""
        if self.netns is None:
            try:
                with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                    return resp.status, resp.read()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read()
            except (OSError, ValueError):
                return 0, b""
        # curl writes the body, then the status on a line of its own.
        argv = ["curl", "-sS", "--max-time", str(timeout_s), "-w", "\n%{http_code}", url]
        try:
            result = subprocess.run(
                self.argv(argv), capture_output=True, timeout=timeout_s + 5, check=False
            )
        except subprocess.TimeoutExpired:
            return 0, b""
        body, _, status = result.stdout.rpartition(b"\n")
        return (int(status) if status.strip().isdigit() else 0), body

    def wait_http(self, url: str, timeout_s: float, check: object = None) -> None:
        """Poll ``url`` from this node until it answers HTTP at all."""
        deadline = time.monotonic() + timeout_s
        while True:
            if callable(check):
                check()
            status, _ = self.http_get(url, timeout_s=2.0)
            if status:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no HTTP answer from {url} within {timeout_s:.0f}s")
            time.sleep(0.2)


def _run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
    )
    if check and result.returncode != 0:
        raise NetworkError(f"{' '.join(argv)}: {result.stderr.strip() or result.returncode}")
    return result


def read_sysctl(name: str) -> str:
    """A sysctl of the root namespace, as text ('' when it does not exist)."""
    try:
        return Path("/proc/sys", *name.split(".")).read_text().strip()
    except OSError:
        return ""


def _port_name(node: str) -> str:
    """The node's port on its bridge (interface names are at most 15 characters)."""
    return f"v-{node}"[:15]


def _rack_devices(index: int) -> tuple[str, str, str]:
    """A rack's bridge, the rack-side end of its uplink and the core-side end."""
    return f"{PREFIX[:-1]}rk{index}", f"rku{index}", f"rkd{index}"


def netns_unavailable_reason() -> str | None:
    """Why namespaces with veth, a bridge and tbf cannot be used here, or None."""
    for tool in ("ip", "tc", "curl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = f"{PREFIX}probe"
    commands = [
        ["ip", "netns", "add", probe],
        ["ip", "-n", probe, "link", "add", "sbtprobe0", "type", "bridge"],
        ["ip", "-n", probe, "link", "add", "sbtp0", "type", "veth", "peer", "name", "sbtp1"],
        ["ip", "-n", probe, "link", "set", "sbtp0", "up"],
        ["ip", "netns", "exec", probe, "tc", "qdisc", "add", "dev", "sbtp0", "root"]
        + ["tbf", "rate", "8mbit", "burst", "64kb", "latency", "50ms"],
    ]
    try:
        for argv in commands:
            _run(argv)
    except (NetworkError, OSError, subprocess.SubprocessError) as exc:
        return f"network namespaces or tc do not work here: {exc}"
    finally:
        _run(["ip", "netns", "del", probe], check=False)
    return None


def leftover_namespaces() -> list[str]:
    result = _run(["ip", "-j", "netns", "list"], check=False)
    try:
        listed = json.loads(result.stdout or "[]")
    except json.JSONDecodeError:
        return []
    return [entry["name"] for entry in listed if entry.get("name", "").startswith(PREFIX)]


def remove_namespaces(names: Sequence[str]) -> list[str]:
    """Kill the processes inside each namespace (by pid), then delete it; return notes."""
    notes = []
    for name in names:
        pids = _run(["ip", "netns", "pids", name], check=False).stdout.split()
        for pid in pids:
            _run(["kill", "-KILL", pid], check=False)
            notes.append(f"killed pid {pid} left in {name}")
        result = _run(["ip", "netns", "del", name], check=False)
        if result.returncode != 0:
            notes.append(f"could not delete {name}: {result.stderr.strip()}")
    return notes


class NamespaceNetwork:
    """The namespaces, veth pairs, bridge and shapers of one benchmark run.

    ``congestion_control``, when given, is the TCP congestion control of every node's
    namespace. A namespace other than the root one may only choose one the host lists as
    allowed, so when it is not, it is added to the host's allowed list for the run and
    the list restored at teardown (the host's own default is left alone).
    """

    kind = "netns"

    def __init__(self, congestion_control: str | None = None) -> None:
        self.congestion_control = congestion_control
        self.nodes: list[Node] = []
        self.racks: list[Rack] = []
        self.commands: list[str] = []  # every command run, for the report
        self._created: list[str] = []
        self._allowed_before: str | None = None  # the host's list, while we extend it

    def _do(self, argv: Sequence[str]) -> None:
        self.commands.append(" ".join(argv))
        _run(argv)

    def setup(self, specs: Sequence[NodeSpec], racks: Sequence[Rack] = ()) -> list[Node]:
        """Create the bridges (core, one per rack) and one shaped namespace per node."""
        if len(specs) > 250:
            raise NetworkError("at most 250 nodes fit in the /24")
        if self.congestion_control is not None:
            self._allow_congestion_control(self.congestion_control)
        self._add_namespace(BRIDGE_NS)
        self._do(["ip", "-n", BRIDGE_NS, "link", "add", BRIDGE, "type", "bridge"])
        self._do(["ip", "-n", BRIDGE_NS, "link", "set", BRIDGE, "up"])
        bridges = {}
        for index, rack in enumerate(racks):
            bridges[rack.name] = self._add_rack(index, rack)
        for index, spec in enumerate(specs):
            name, shaping = spec.name, spec.shaping
            netns = f"{PREFIX}{name}"
            port = _port_name(name)
            address = f"{SUBNET}.{index + 2}"
            self._add_namespace(netns)
            if self.congestion_control is not None:
                self._set_congestion_control(netns, self.congestion_control)
            self._do(
                ["ip", "-n", BRIDGE_NS, "link", "add", port, "type", "veth"]
                + ["peer", "name", "eth0", "netns", netns]
            )
            bridge = bridges.get(spec.rack, BRIDGE)
            self._do(["ip", "-n", BRIDGE_NS, "link", "set", port, "master", bridge, "up"])
            self._do(["ip", "-n", netns, "addr", "add", f"{address}/{PREFIX_LEN}", "dev", "eth0"])
            self._do(["ip", "-n", netns, "link", "set", "eth0", "up"])
            self._do(["ip", "-n", netns, "link", "set", "lo", "up"])
            if shaping.up_bps:
                self._shape(netns, "eth0", shaping.up_bps)
            if shaping.down_bps:
                self._shape(BRIDGE_NS, port, shaping.down_bps)
            ports = {"registry": 0, "scheduler": 0, "mirror": 0, "piece": 0}
            ports.update(NAMESPACE_PORTS)
            self.nodes.append(Node(name, address, shaping, netns, ports, spec.rack))
        return self.nodes

    def _add_rack(self, index: int, rack: Rack) -> str:
        """A rack's bridge and its shaped uplink to the core bridge; returns the bridge."""
        bridge, up, down = _rack_devices(index)
        self._do(["ip", "-n", BRIDGE_NS, "link", "add", bridge, "type", "bridge"])
        self._do(["ip", "-n", BRIDGE_NS, "link", "set", bridge, "up"])
        self._do(["ip", "-n", BRIDGE_NS, "link", "add", up, "type", "veth", "peer", "name", down])
        # A bridge sends out of a port what goes towards that port's far end: the rack-side
        # end carries the rack's uploads to the core, the core-side end its downloads.
        self._do(["ip", "-n", BRIDGE_NS, "link", "set", up, "master", bridge, "up"])
        self._do(["ip", "-n", BRIDGE_NS, "link", "set", down, "master", BRIDGE, "up"])
        if rack.uplink.up_bps:
            self._shape(BRIDGE_NS, up, rack.uplink.up_bps)
        if rack.uplink.down_bps:
            self._shape(BRIDGE_NS, down, rack.uplink.down_bps)
        self.racks.append(rack)
        return bridge

    def _add_namespace(self, name: str) -> None:
        self._do(["ip", "netns", "add", name])
        self._created.append(name)

    def _allow_congestion_control(self, name: str) -> None:
        if name not in read_sysctl(CC_AVAILABLE_SYSCTL).split():
            raise NetworkError(
                f"TCP congestion control {name!r} is not available on this kernel "
                f"({CC_AVAILABLE_SYSCTL} = {read_sysctl(CC_AVAILABLE_SYSCTL)!r})"
            )
        allowed = read_sysctl(CC_ALLOWED_SYSCTL)
        if name not in allowed.split():
            self._do(["sysctl", "-qw", f"{CC_ALLOWED_SYSCTL}={allowed} {name}"])
            self._allowed_before = allowed

    def _set_congestion_control(self, netns: str, name: str) -> None:
        self._do(["ip", "netns", "exec", netns, "sysctl", "-qw", f"{CC_SYSCTL}={name}"])
        got = _run(["ip", "netns", "exec", netns, "sysctl", "-n", CC_SYSCTL]).stdout.strip()
        if got != name:
            raise NetworkError(f"{netns}: TCP congestion control is {got!r}, not {name!r}")

    def _shape(self, netns: str, dev: str, rate_bps: float) -> None:
        self._do(
            ["ip", "netns", "exec", netns, "tc", "qdisc", "add", "dev", dev, "root", "tbf"]
            + ["rate", f"{int(rate_bps)}bit", "burst", f"{TBF_BURST_BYTES}b"]
            + ["latency", f"{TBF_LATENCY_MS}ms"]
        )

    def tx_bytes(self, node: Node) -> int:
        """Bytes the node's interface has sent (all protocols, headers included)."""
        assert node.netns is not None
        result = _run(["ip", "-n", node.netns, "-j", "-s", "link", "show", "dev", "eth0"])
        return int(json.loads(result.stdout)[0]["stats64"]["tx"]["bytes"])

    def link_bytes(self) -> dict[str, tuple[int, int]]:
        """Per node: (bytes uploaded, bytes downloaded) so far, from its bridge port.

        One command reads every port, so this is cheap enough to sample every second.
        """
        ports = {_port_name(node.name): node.name for node in self.nodes}
        result = _run(["ip", "-n", BRIDGE_NS, "-s", "-j", "link", "show"], check=False)
        try:
            links = json.loads(result.stdout or "[]")
        except json.JSONDecodeError:
            return {}
        found = {}
        for link in links:
            name = ports.get(link.get("ifname", ""))
            if name is not None and "stats64" in link:
                # The port receives what the node sends and transmits what it receives.
                stats = link["stats64"]
                found[name] = (int(stats["rx"]["bytes"]), int(stats["tx"]["bytes"]))
        return found

    def uplink_bytes(self) -> dict[str, tuple[int, int]]:
        """Per rack: (bytes sent up to the core, bytes received from it) so far."""
        result = _run(["ip", "-n", BRIDGE_NS, "-s", "-j", "link", "show"], check=False)
        try:
            links = {link.get("ifname"): link for link in json.loads(result.stdout or "[]")}
        except json.JSONDecodeError:
            return {}
        found = {}
        for index, rack in enumerate(self.racks):
            _, _, down = _rack_devices(index)
            stats = links.get(down, {}).get("stats64")
            if stats is not None:
                # The core-side end receives what the rack sends and sends what it gets.
                found[rack.name] = (int(stats["rx"]["bytes"]), int(stats["tx"]["bytes"]))
        return found

    def qdisc_stats(self) -> dict[str, dict[str, int]]:
        """Per shaper: bytes sent, packets dropped and times over the limit."""
        stats: dict[str, dict[str, int]] = {}
        places = []
        for node in self.nodes:
            assert node.netns is not None
            places.append((f"{node.name} up", node.netns, "eth0"))
            places.append((f"{node.name} down", BRIDGE_NS, _port_name(node.name)))
        for index, rack in enumerate(self.racks):
            _, up, down = _rack_devices(index)
            places.append((f"{rack.name} uplink up", BRIDGE_NS, up))
            places.append((f"{rack.name} uplink down", BRIDGE_NS, down))
        for label, netns, dev in places:
            result = _run(
                ["ip", "netns", "exec", netns, "tc", "-j", "-s", "qdisc", "show", "dev", dev],
                check=False,
            )
            try:
                qdiscs = json.loads(result.stdout or "[]")
            except json.JSONDecodeError:
                continue
            for qdisc in qdiscs:
                if qdisc.get("kind") == "tbf":
                    stats[label] = {
                        "bytes": int(qdisc.get("bytes", 0)),
                        "packets": int(qdisc.get("packets", 0)),
                        "drops": int(qdisc.get("drops", 0)),
                        "overlimits": int(qdisc.get("overlimits", 0)),
                    }
        return stats

    def teardown(self) -> list[str]:
        """Delete every namespace this run made (their veths and shapers go with them)."""
        notes = remove_namespaces(list(reversed(self._created)))
        self._created.clear()
        if self._allowed_before is not None:
            allowed, self._allowed_before = self._allowed_before, None
            result = _run(["sysctl", "-qw", f"{CC_ALLOWED_SYSCTL}={allowed}"], check=False)
            if result.returncode != 0:
                notes.append(f"could not restore {CC_ALLOWED_SYSCTL} to {allowed!r}")
        return notes


class LoopbackNetwork:
    """The fallback: every node on 127.0.0.1 with ports of its own; nothing is shaped."""

    kind = "loopback"

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.racks: list[Rack] = []
        self.commands: list[str] = []

    def setup(self, specs: Sequence[NodeSpec], racks: Sequence[Rack] = ()) -> list[Node]:
        if racks:
            raise NetworkError("racks need network namespaces: loopback cannot shape uplinks")
        for spec in specs:
            ports = {key: free_port() for key in NAMESPACE_PORTS}
            self.nodes.append(Node(spec.name, "127.0.0.1", spec.shaping, None, ports, spec.rack))
        return self.nodes

    def tx_bytes(self, node: Node) -> int | None:
        return None

    def link_bytes(self) -> dict[str, tuple[int, int]]:
        return {}

    def uplink_bytes(self) -> dict[str, tuple[int, int]]:
        return {}

    def qdisc_stats(self) -> dict[str, dict[str, int]]:
        return {}

    def teardown(self) -> list[str]:
        return []


Network = NamespaceNetwork | LoopbackNetwork
