"""A real Docker Swarm lab on this machine, for tests and benchmarks (development code, not product).

``SwarmLab(root, nodes=3)`` runs N dockerd instances, each in a network namespace of its own:

::

    root namespace (tests, nginx, Consul)       netns <name>-hub            netns <name>-1 .. -N
    <name>-up 10.213.0.1/24  ── veth ──  up0 ─┐                        ┌─ eth0 10.213.0.11, .12, ...
                                            br0 (bridge) ── veth ──────┘   containerd + dockerd
                                                                            (own data/exec root,
                                                                             socket, pidfile,
                                                                             cgroup parent)

- **Why a hub namespace for the bridge** (not a bridge in the root namespace): the root namespace
  has ``net.bridge.bridge-nf-call-iptables=1`` and, once the main dockerd runs, ``FORWARD``
  policy ``DROP``; node-to-node frames on a root bridge would be dropped by the main engine's
  rules, and fixing that would mean editing its chains. In the hub namespace nothing filters,
  and the root namespace only sends and receives (``OUTPUT``/``INPUT``), never forwards.
- **Why one namespace per node**: two dockerds in one namespace form a swarm, but their overlay
  tasks fail with ``error creating vxlan interface: file exists`` (one UDP 4789 / vxlan id space
  per namespace). Per-namespace, vxlan overlays work (``overlay_ok()`` checks it).
- **containerd**: one per node, started in the node's network namespace and a mount namespace
  of its own (``nsenter --net`` + ``unshare --mount --propagation slave``; not ``ip netns exec``,
  whose fresh ``/sys`` hides the cgroup mounts: dockerd then fails with ``failed to start
  daemon: Devices cgroup isn't mounted``); dockerd joins that mount and network namespace with
  ``nsenter`` so that its container mounts are visible to containerd and runc, and so that no
  mount of the lab ever appears in the root mount namespace: when a node's processes end, its
  mounts end with them. dockerd's own "system containerd" detection is bypassed
  (``--containerd``), so the nodes never share a containerd with the main engine.
- **What does not work here**: the ingress routing mesh and VIP load balancing need IPVS, and
  this kernel has ``# CONFIG_IP_VS is not set``; encrypted overlays need ``CONFIG_INET_ESP``
  (not set). Services therefore publish in ``mode: host`` and use ``endpoint_mode: dnsrr``.
  An ingress-published port is accepted, its task runs, but nothing answers on the port;
  dockerd logs ``Could not get ipvs family information from the kernel. It is possible that
  ipvs is not enabled in your kernel. Native loadbalancing will not work until this is fixed.``
- ``/sys`` is the root namespace's sysfs (see containerd), so overlay bridges log ``enabling
  default vlan on bridge br0 failed open /sys/class/net/br0/bridge/default_pvid: permission
  denied``; harmless here (overlay tasks run; ``overlay_ok()``).
- No registry and no way out: every task start would first try a pull (a DNS timeout on this
  machine); the nodes run with ``DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1``, so local images win.
- Swarm overlay subnets come from 10.214.0.0/16 (``--default-addr-pool``) and stay inside the
  node namespaces. The manager uses a 1 s dispatcher heartbeat, so a dead node is noticed fast.

Needs root and Debian's ``iproute2``, ``iptables``, ``util-linux`` (nsenter), ``docker.io``
(dockerd, containerd, runc, docker-proxy, docker-init). The main dockerd is only read from:
``docker save`` of the sample images, which are loaded into every node.

CLI: ``python -m bluegreen_dev.swarm_lab up|down ROOT [--nodes N] [--name NAME] [--subnet A.B.C]``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bluegreen.errors import OperationFailed
from bluegreen_dev.sandbox import SAMPLE_IMAGE, SAMPLE_TAGS, wait_for

ADDR_POOL = "10.214.0.0/16"
TOOLS = {"ip": "iproute2", "nsenter": "util-linux", "unshare": "util-linux",
         "dockerd": "docker.io", "containerd": "containerd", "runc": "runc",
         "iptables": "iptables"}
NAME_RE = re.compile(r"[a-z][a-z0-9]{0,7}")
SUBNET_RE = re.compile(r"10\.(2[0-4][0-9]|25[0-5]|1[0-9][0-9]|[1-9][0-9]?)\.[0-9]{1,3}")
CONTAINERD_TOML = """version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
"""


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command (no shell); raise ``OperationFailed`` with its stderr when it fails."""
    p = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if check and p.returncode != 0:
        raise OperationFailed(f"{' '.join(argv)}: {p.stderr.strip()[-300:]}")
    return p


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _read_pid(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(path.read_text().strip())
    return None


def _kill(pid: int | None, sig: int = signal.SIGKILL, wait: float = 20.0) -> None:
    """Signal ``pid`` and wait until it is gone (escalating to SIGKILL after ``wait``)."""
    if not _alive(pid):
        return
    assert pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + wait
    while _alive(pid):
        if time.monotonic() > deadline and sig != signal.SIGKILL:
            sig = signal.SIGKILL
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)


@dataclass
class Node:
    """One dockerd (with its containerd) in its own network namespace."""

    lab: str
    index: int
    ip: str
    root: Path  # data: data-root, containerd root, logs
    run: Path  # sockets, exec roots, pid files (short paths: unix sockets <= 107 bytes)

    @property
    def netns(self) -> str:
        return f"{self.lab}-{self.index}"

    @property
    def hub_port(self) -> str:
        return f"{self.lab}-p{self.index}"

    @property
    def socket(self) -> Path:
        return self.run / "docker.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def containerd_socket(self) -> Path:
        return self.run / "containerd.sock"

    @property
    def cgroup_parent(self) -> str:
        return f"/{self.netns}"

    @property
    def dockerd_pid(self) -> int | None:
        return _read_pid(self.run / "docker.pid")

    @property
    def containerd_pid(self) -> int | None:
        return _read_pid(self.run / "containerd.pid")

    def client(self, timeout: int = 60) -> Any:
        import docker

        return docker.DockerClient(base_url=self.url, timeout=timeout)

    def answers(self) -> bool:
        try:
            return bool(self.client(5).ping())
        except Exception:
            return False

    def _log(self, name: str) -> Any:
        return open(self.root / name, "ab")

    def start_daemons(self, timeout: float = 60.0) -> None:
        """Start containerd (when not running) and dockerd (when not answering)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.run.mkdir(parents=True, exist_ok=True)
        if not _alive(self.containerd_pid):
            cfg = self.root / "containerd.toml"
            cfg.write_text(CONTAINERD_TOML.format(root=self.root / "containerd",
                                                  state=self.run / "containerd",
                                                  sock=self.containerd_socket))
            self.containerd_socket.unlink(missing_ok=True)
            proc = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{self.netns}", "--", "unshare", "--mount",
                 "--propagation", "slave", "--", "containerd", "--config", str(cfg)],
                stdout=self._log("containerd.log"), stderr=subprocess.STDOUT,
                start_new_session=True)
            (self.run / "containerd.pid").write_text(str(proc.pid))
            _wait_daemon(proc, self.containerd_socket.exists, timeout, "containerd", self)
        if self.answers():
            return
        _kill(self.dockerd_pid)
        proc = subprocess.Popen(
            ["nsenter", f"--target={self.containerd_pid}", "--net", "--mount", "--",
             "dockerd", f"--data-root={self.root / 'docker'}", f"--exec-root={self.run / 'exec'}",
             f"--pidfile={self.run / 'docker.pid'}", f"-H={self.url}",
             f"--containerd={self.containerd_socket}", f"--cgroup-parent={self.cgroup_parent}",
             "--storage-driver=overlay2", "--log-level=warn"],
            stdout=self._log("dockerd.log"), stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "DOCKER_SERVICE_PREFER_OFFLINE_IMAGE": "1"})
        _wait_daemon(proc, self.answers, timeout, "dockerd", self)

    def kill_dockerd(self) -> None:
        """SIGKILL this node's dockerd only: its containers keep running under containerd,
        as when the engine crashes; the manager marks the node down after its heartbeat."""
        _kill(self.dockerd_pid)

    def kill_all(self) -> None:
        """End everything of this node: dockerd, containerd, shims, container processes."""
        self.kill_dockerd()
        _kill(self.containerd_pid)
        for _ in range(3):
            pids = {int(p) for p in sh("ip", "netns", "pids", self.netns, check=False).stdout.split()}
            pids |= set(_cgroup_pids(self.cgroup_parent))
            if not pids:
                break
            for pid in pids:
                _kill(pid, wait=5)

    def stop(self) -> None:
        """Stop dockerd gracefully (it stops its containers), then the rest."""
        _kill(self.dockerd_pid, signal.SIGTERM, wait=30)
        _kill(self.containerd_pid, signal.SIGTERM, wait=10)
        self.kill_all()
        _remove_cgroups(self.cgroup_parent)


def _wait_daemon(proc: subprocess.Popen[bytes], ready: Any, timeout: float, what: str,
                 node: Node) -> None:
    """Wait until ``ready()``; fail at once, with its log's tail, when the daemon exits."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            log = (node.root / f"{what}.log").read_text(errors="replace").strip().splitlines()
            raise OperationFailed(f"{what} of {node.netns} exited with {proc.returncode}: "
                                  f"{' | '.join(log[-3:])}")
        if time.monotonic() > deadline:
            raise OperationFailed(f"{what} of {node.netns} not ready after {timeout:g}s")
        time.sleep(0.1)


def _cgroup_dirs(parent: str) -> Iterator[Path]:
    base = Path("/sys/fs/cgroup")
    for hierarchy in [base, *sorted(base.iterdir())] if base.is_dir() else []:
        d = hierarchy / parent.strip("/")
        if d.is_dir():
            yield d


def _cgroup_pids(parent: str) -> list[int]:
    pids = set()
    for d in _cgroup_dirs(parent):
        for procs in d.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids |= {int(p) for p in procs.read_text().split()}
    return sorted(pids)


def _remove_cgroups(parent: str) -> None:
    for d in _cgroup_dirs(parent):
        for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                sub.rmdir()
        with contextlib.suppress(OSError):
            d.rmdir()


@dataclass
class SwarmLab:
    """N nodes (node 1 the manager, the others workers) on ``<subnet>.0/24``."""

    root: Path
    nodes_count: int = 3
    name: str = "bgs"
    subnet: str = "10.213.0"
    images: list[str] = field(default_factory=lambda: [f"{SAMPLE_IMAGE}:{t}" for t in SAMPLE_TAGS])
    nodes: list[Node] = field(init=False)
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not NAME_RE.fullmatch(self.name):
            raise OperationFailed(f"lab name {self.name!r} must match {NAME_RE.pattern}")
        if not SUBNET_RE.fullmatch(self.subnet) or int(self.subnet.rsplit(".", 1)[1]) > 255:
            raise OperationFailed(f"lab subnet {self.subnet!r} must be 10.B.C (a /24)")
        if not 1 <= self.nodes_count <= 9:
            raise OperationFailed("a lab has 1 to 9 nodes")
        self.root = Path(self.root)
        run = Path("/run") / f"bluegreen-{self.name}"
        self.nodes = [Node(self.name, i, f"{self.subnet}.{10 + i}", self.root / f"node{i}",
                           run / f"n{i}") for i in range(1, self.nodes_count + 1)]

    @property
    def hub(self) -> str:
        return f"{self.name}-hub"

    @property
    def uplink(self) -> str:
        return f"{self.name}-up"

    @property
    def manager(self) -> Node:
        return self.nodes[0]

    @property
    def workers(self) -> list[Node]:
        return self.nodes[1:]

    # -- network ---------------------------------------------------------------------

    def _netns(self) -> set[str]:
        return {line.split()[0] for line in sh("ip", "netns", "list").stdout.splitlines() if line}

    def _network(self) -> None:
        """Hub namespace with a bridge, the root namespace's uplink, one namespace per node."""
        existing = self._netns()
        if self.hub not in existing:
            sh("ip", "netns", "add", self.hub)
            sh("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
            sh("ip", "-n", self.hub, "link", "set", "br0", "up")
            sh("ip", "-n", self.hub, "link", "set", "lo", "up")
        if not Path(f"/sys/class/net/{self.uplink}").exists():
            sh("ip", "link", "add", self.uplink, "type", "veth", "peer", "name", "up0",
               "netns", self.hub)
            sh("ip", "addr", "add", f"{self.subnet}.1/24", "dev", self.uplink)
            sh("ip", "link", "set", self.uplink, "up")
            sh("ip", "-n", self.hub, "link", "set", "up0", "master", "br0", "up")
        for node in self.nodes:
            if node.netns in existing:
                continue
            sh("ip", "netns", "add", node.netns)
            sh("ip", "link", "add", node.hub_port, "netns", self.hub, "type", "veth", "peer",
               "name", "eth0", "netns", node.netns)
            sh("ip", "-n", self.hub, "link", "set", node.hub_port, "master", "br0", "up")
            sh("ip", "-n", node.netns, "addr", "add", f"{node.ip}/24", "dev", "eth0")
            sh("ip", "-n", node.netns, "link", "set", "eth0", "up")
            sh("ip", "-n", node.netns, "link", "set", "lo", "up")
            sh("ip", "-n", node.netns, "route", "add", "default", "via", f"{self.subnet}.1")

    def partition(self, node: Node, cut: bool = True) -> None:
        """Cut (or restore) a node's link to the others and to the root namespace."""
        sh("ip", "-n", self.hub, "link", "set", node.hub_port, "down" if cut else "up")

    # -- lifecycle -------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> SwarmLab:
        """Bring the lab up (idempotent): network, daemons, swarm, images."""
        t0 = time.monotonic()
        missing = sorted({pkg for tool, pkg in TOOLS.items() if not shutil.which(tool)})
        if missing or os.geteuid() != 0:
            raise OperationFailed(f"the swarm lab needs root and the Debian packages "
                                  f"{' '.join(missing or TOOLS.values())}")
        self._network()
        self.timings["network"] = time.monotonic() - t0
        for node in self.nodes:
            node.start_daemons(timeout)
        self.timings["daemons"] = time.monotonic() - t0
        self._swarm()
        self.timings["swarm"] = time.monotonic() - t0
        self.load_images(self.images)
        self.timings["images"] = time.monotonic() - t0
        return self

    def _swarm(self) -> None:
        mgr = self.manager.client()
        info = mgr.info()["Swarm"]
        if not info.get("ControlAvailable"):
            if info.get("LocalNodeState") != "inactive":
                mgr.swarm.leave(force=True)
            mgr.swarm.init(advertise_addr=self.manager.ip, listen_addr=f"{self.manager.ip}:2377",
                           default_addr_pool=[ADDR_POOL], subnet_size=24,
                           dispatcher_heartbeat_period=1_000_000_000,
                           task_history_retention_limit=2)
        mgr.swarm.reload()
        token = mgr.swarm.attrs["JoinTokens"]["Worker"]
        for node in self.workers:
            client = node.client()
            state = client.info()["Swarm"]
            if state.get("LocalNodeState") == "active" and state.get("Cluster", {}).get("ID") \
                    == mgr.swarm.attrs["ID"]:
                continue
            if state.get("LocalNodeState") != "inactive":
                client.swarm.leave(force=True)
            client.swarm.join(remote_addrs=[f"{self.manager.ip}:2377"], join_token=token,
                              listen_addr=f"{node.ip}:2377", advertise_addr=node.ip)
        wait_for(lambda: len(self.ready_nodes()) == len(self.nodes), 60, "swarm nodes ready", 0.2)
        # Nodes that left earlier (a lab restarted) stay listed as down: forget them.
        for n in mgr.nodes.list():
            if n.attrs["Status"]["State"] == "down":
                with contextlib.suppress(Exception):
                    n.remove(force=True)

    def ready_nodes(self) -> list[str]:
        """Addresses of the nodes the manager sees ``ready``."""
        nodes = self.manager.client(10).nodes.list()
        return sorted(n.attrs["Status"]["Addr"] if n.attrs["Status"].get("Addr") not in
                      (None, "", "0.0.0.0") else self.manager.ip  # noqa: S104
                      for n in nodes if n.attrs["Status"]["State"] == "ready")

    def node_state(self, node: Node) -> str:
        """``ready`` | ``down`` | ``unknown`` | ... as the manager sees ``node``."""
        for n in self.manager.client(10).nodes.list():
            addr = n.attrs["Status"].get("Addr")
            if addr == node.ip or (node is self.manager and addr in ("", "0.0.0.0")):  # noqa: S104
                return str(n.attrs["Status"]["State"])
        return "absent"

    def load_images(self, refs: list[str]) -> None:
        """``docker save`` each image of ``refs`` from the main engine once; load it on every
        node where it is missing (a test adds its own images to a running lab this way)."""
        import docker

        if not refs:
            return
        main = docker.from_env(timeout=120)
        want = {ref: main.images.get(ref).id for ref in refs}
        tar_dir = self.root / "images"
        tar_dir.mkdir(parents=True, exist_ok=True)
        for node in self.nodes:
            client = node.client(120)
            for ref, image_id in want.items():
                with contextlib.suppress(docker.errors.ImageNotFound):
                    if client.images.get(ref).id == image_id:
                        continue
                tar = tar_dir / f"{ref.replace(':', '_').replace('/', '_')}.tar"
                if not tar.exists():
                    part = tar.with_suffix(".part")
                    with part.open("wb") as out:
                        for chunk in main.api.get_image(ref):
                            out.write(chunk)
                    part.rename(tar)
                with tar.open("rb") as data:
                    client.images.load(data)

    def restart_dockerd(self, node: Node, timeout: float = 60.0) -> None:
        node.start_daemons(timeout)

    def overlay_ok(self, image: str | None = None, timeout: float = 60.0) -> str:
        """Run a one-task service on an overlay network on the last node; '' when it ran,
        else the task's error (e.g. the vxlan error of a shared namespace)."""
        import docker

        mgr = self.manager.client()
        net = mgr.networks.create(f"{self.name}-ovl-check", driver="overlay", attachable=True)
        svc = None
        try:
            svc = mgr.services.create(
                image or self.images[0], name=f"{self.name}-ovl-check", networks=[net.id],
                endpoint_spec=docker.types.EndpointSpec(mode="dnsrr"),
                constraints=[f"node.role=={'worker' if self.workers else 'manager'}"],
                restart_policy=docker.types.RestartPolicy(condition="none"))
            result: list[str] = []

            def settled() -> bool:
                for t in svc.tasks():
                    state = t["Status"]["State"]
                    if state == "running":
                        result.append("")
                        return True
                    if state in ("failed", "rejected"):
                        result.append(t["Status"].get("Err") or state)
                        return True
                return False

            wait_for(settled, timeout, "overlay check task", 0.2)
            return result[0]
        finally:
            if svc is not None:
                svc.remove()
            wait_for(lambda: _remove_network(mgr, net.id), 30, "overlay check network removal", 0.2)

    def close(self) -> None:
        """Stop every daemon, delete the namespaces and the uplink, remove the lab's files."""
        for node in reversed(self.nodes):
            node.stop()
        existing = self._netns()
        for ns in [n.netns for n in self.nodes] + [self.hub]:
            if ns in existing:
                sh("ip", "netns", "del", ns)
        if Path(f"/sys/class/net/{self.uplink}").exists():
            sh("ip", "link", "del", self.uplink, check=False)
        for node in self.nodes:
            shutil.rmtree(node.run, ignore_errors=True)
            shutil.rmtree(node.root, ignore_errors=True)
        shutil.rmtree(self.root / "images", ignore_errors=True)
        for d in (self.nodes[0].run.parent, self.root):
            with contextlib.suppress(OSError):
                d.rmdir()


def _remove_network(client: Any, net_id: str) -> bool:
    import docker

    try:
        client.networks.get(net_id).remove()
    except docker.errors.NotFound:
        return True
    return False


if __name__ == "__main__":
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m bluegreen_dev.swarm_lab")
    ap.add_argument("action", choices=["up", "down"])
    ap.add_argument("root", type=Path)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--name", default="bgs")
    ap.add_argument("--subnet", default="10.213.0")
    args = ap.parse_args()
    lab = SwarmLab(args.root, args.nodes, args.name, args.subnet)
    if args.action == "up":
        lab.start()
        print(json.dumps({"manager": lab.manager.url, "nodes": [n.ip for n in lab.nodes],
                          "timings": {k: round(v, 2) for k, v in lab.timings.items()}}))
    else:
        lab.close()
