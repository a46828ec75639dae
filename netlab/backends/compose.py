"""The compose backend: every lab host is a Docker container, every link an internal network.

One description (``lab_spec``) says which networks and containers a lab is; this backend creates
them through the Docker API, and ``harness compose`` writes the same description as a Compose
file (harness.compose_file). Containers run the lab image (netlab.images) with this source tree
at /opt/censorlab (read-only), third-party probe packages of the host beside it, and the lab
folder at /lab/<lab>; their main process is netlab.services.hostd, which sets the host up with the same
code as the netns backend (netlab.hostsetup) and supervises its services.

Addresses: the lab's own addresses are the same in every lab, as with namespaces; Docker only
gives each link network a *carrier* subnet, which hostd removes from the interface it identifies
by name (each network has its own interface prefix) before it puts the plan's address there. So
two labs never compete for a subnet: this backend takes carriers from a range of their own
(netlab.addressing.CARRIER_RANGE, clear of other Docker networks and the host's routes), and a
Compose file lets Docker choose. Networks are ``internal: true``; hostd leaves a host no route
to any carrier (the Docker host's bridge addresses), so no lab packet reaches the Docker host or
beyond. Everything carries the label ``org.censorlab.lab``.

The harness reaches inside a host through hostd's exec socket in the lab folder
(netlab.services.hostexec), which works the same from the Docker host and from a Compose file's
``score`` container; a host whose socket no longer answers, or that wrote ``faults/<host>``, is a
lab fault.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from netlab.addressing import carrier_subnets
from netlab.backends.base import (
    STATE_FILE,
    Backend,
    LabState,
    Progress,
    RunningLab,
    ServiceFault,
    claim_lab_dir,
    lab_dir,
    log_tail,
    read_state,
    remove_lab_dir,
    scenario_digest,
    stop_owner,
    write_lab_files,
)
from netlab.backends.netns import PROJECT_ROOT, STOP_TIMEOUT
from netlab.errors import LabError, LabInUse, NoSuchLab
from netlab.names import check_lab_name, host_object_name
from netlab.plan import LabPlan
from netlab.services import hostexec
from netlab.services.fabric import allow_within_bridge, remove_bridge_rules

LABEL = "org.censorlab.lab"
INNER_LABS = "/lab"
INNER_SRC = "/opt/censorlab"
INNER_PLUGINS = "/opt/censorlab-plugins"
READY_TIMEOUT = 60.0
CAPS = ["NET_ADMIN", "NET_RAW"]
CREATE_ATTEMPTS = 5  # carrier blocks tried when another lab takes ours at the same moment


def container_name(lab: str, host: str) -> str:
    return host_object_name(lab, host)


def network_name(lab: str, a_host: str, b_host: str) -> str:
    """The Docker network of the link between two hosts: ``nl-<lab>.<a>-<b>`` (netlab.names)."""
    return host_object_name(lab, f"{a_host}-{b_host}")


def bridge_name(network: str) -> str:
    """A short, stable name for a lab network's bridge (interface names have 15 characters)."""
    return "nl" + hashlib.sha256(network.encode()).hexdigest()[:10]


def iface_prefix(link_index: int) -> str:
    """The name Docker gives a link's interface inside its containers is this plus "0": how hostd
    knows which interface is which link (Docker attaches networks in no promised order)."""
    return f"lk{link_index}_"


def inner_lab_dir(lab: str) -> str:
    """Where a container sees the lab folder: named after the lab, like the folder itself."""
    return f"{INNER_LABS}/{check_lab_name(lab, 'lab name')}"


def exec_socket(host: str) -> str:
    """hostd's exec socket, relative to the lab folder."""
    return f"run/{host}.sock"


# ------------------------------------------------------------------ the one description


@dataclass(frozen=True)
class Mount:
    source: str  # as the caller gives it: an absolute path (backend), or relative to a Compose file
    target: str
    read_only: bool = True


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    bridge: str
    iface_prefix: str
    subnet: IPv4Network | None  # None: Docker chooses (a Compose file)


@dataclass
class ContainerSpec:
    host: str
    name: str
    command: list[str]
    networks: list[str]  # in the order they are attached
    sysctls: dict[str, str]
    environment: dict[str, str]
    mounts: list[Mount]


@dataclass
class LabSpec:
    lab: str
    image: str
    labels: dict[str, str]
    caps: list[str]
    networks: list[NetworkSpec]
    containers: list[ContainerSpec] = field(default_factory=list)


def lab_spec(plan: LabPlan, *, image: str, lab_source: str, src_source: str, plugins: list[Mount],
             subnets: list[IPv4Network] | None = None) -> LabSpec:
    """The networks and containers of ``plan``. ``lab_source`` and ``src_source`` are where the lab
    folder and this source tree are on the Docker host (as the caller spells paths); ``plugins``
    the third-party probe packages to mount (probe_plugins); ``subnets`` one carrier per link."""
    networks: list[NetworkSpec] = []
    attach: dict[str, list[tuple[str, str, str]]] = {h: [] for h in plan.hosts}  # host -> (net, docker, plan)
    for k, link in enumerate(plan.links):
        name = network_name(plan.lab, link.a_host, link.b_host)
        net = NetworkSpec(name, bridge_name(name), iface_prefix(k), subnets[k] if subnets else None)
        networks.append(net)
        attach[link.a_host].append((net.name, net.iface_prefix + "0", link.a_name))
        attach[link.b_host].append((net.name, net.iface_prefix + "0", link.b_name))
    inner_lab = inner_lab_dir(plan.lab)
    mounts = [Mount(src_source, INNER_SRC), Mount(lab_source, inner_lab, read_only=False), *plugins]
    pythonpath = os.pathsep.join([INNER_SRC, *sorted({str(Path(m.target).parent) for m in plugins})])
    env = {"PYTHONPATH": pythonpath, "PYTHONUNBUFFERED": "1"}
    spec = LabSpec(plan.lab, image, {LABEL: plan.lab}, list(CAPS), networks)
    for host in plan.hosts.values():
        command = ["python3", "-m", "netlab.services.hostd", "--host", host.name, "--lab-dir", inner_lab]
        for _, docker_if, plan_if in attach[host.name]:
            command += ["--interface", f"{docker_if}={plan_if}"]
        spec.containers.append(ContainerSpec(
            host.name, container_name(plan.lab, host.name), command, [n for n, _, _ in attach[host.name]],
            {"net.ipv4.ip_forward": "1" if host.forwarding else "0", "net.ipv6.conf.all.disable_ipv6": "1"},
            dict(env), list(mounts)))
    return spec


def probe_plugins(names: Iterable[str] | None = None) -> list[Mount]:
    """Third-party probe packages installed for this harness (entry points ``harness.probes``), as
    mounts that make them installed in a container too: the module (or package) and its dist-info
    side by side in a folder on PYTHONPATH, where probes.base finds the entry point as it does here.
    An image that has the package installed finds it without these; a mounted one comes first on
    sys.path, so a container runs the version the harness checked. ``names``: only these probe
    types (None: every one). The plugin's own dependencies must be in the image."""
    from probes.base import BUILTIN_PROBES, ENTRY_POINT_GROUP

    mounts: dict[str, Mount] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if (names is not None and ep.name not in names) or BUILTIN_PROBES.get(ep.name) == ep.value:
            continue
        dist_info = getattr(ep.dist, "_path", None)  # PathDistribution: its .dist-info folder
        spec = importlib.util.find_spec(ep.module.split(".")[0])  # finds it without importing it
        if dist_info is None or spec is None or spec.origin is None:
            continue  # not a package on the file system (a zip, a custom loader): not mountable
        code = Path(spec.submodule_search_locations[0]) if spec.submodule_search_locations else Path(spec.origin)
        folder = f"{INNER_PLUGINS}/{re.sub(r'[^A-Za-z0-9_.-]', '_', ep.dist.name)}"
        for path in (Path(dist_info), code):
            mounts[f"{folder}/{path.name}"] = Mount(str(path.resolve()), f"{folder}/{path.name}")
    return list(mounts.values())


def lab_state(plan: LabPlan, folder: str, scenario_source: str) -> LabState:
    """What the harness needs to drive a container lab, saved as the lab folder's state.json by
    this backend, or by a Compose file's ``lab`` service."""
    return LabState(lab=plan.lab, backend=ComposeBackend.name, lab_dir=folder, scenario_source=scenario_source,
                    owner_pid=os.getpid(), hosts={h: container_name(plan.lab, h) for h in plan.hosts},
                    services=[{"host": h.name, "name": svc.name, "pid": 0, "critical": svc.critical,
                               "role": h.role} for h in plan.hosts.values() for svc in h.services],
                    vantages={k: v.to_dict() for k, v in plan.vantages.items()},
                    site_addresses={k: str(v) for k, v in plan.site_addresses.items()},
                    ca_file=plan.ca_file, created=time.time(), scenario_digest=scenario_digest(scenario_source))


def wait_for_hosts(folder: Path, hosts: Iterable[str], timeout: float,
                   gone: Callable[[str], str | None] | None = None) -> None:
    """Until every host wrote ``ready/<host>``; LabError at the first that wrote ``faults/<host>``
    (or that ``gone`` says stopped), or at the deadline."""
    deadline = time.monotonic() + timeout
    waiting = set(hosts)
    while waiting:
        waiting = {h for h in waiting if not (folder / "ready" / h).exists()}
        for h in sorted(waiting):
            why = _read(folder / "faults" / h) or (gone(h) if gone else None)
            if why:
                raise LabError(f"host {h} failed to start: {why}\n"
                               + log_tail(folder / "logs" / f"{h}.hostd.log", 20))
        if waiting and time.monotonic() > deadline:
            raise LabError(f"hosts not ready within {timeout:.0f}s: {', '.join(sorted(waiting))}")
        if waiting:
            time.sleep(0.05)  # a poll interval with a deadline


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


_EXITED = re.compile(r"^(\S+) exited with status (-?\d+)$")


class ComposeLab(RunningLab):
    def command(self, host: str, argv: list[str]) -> list[str]:
        return hostexec.client_command(sys.executable, self.host_path(exec_socket(host)), argv)

    def inner_path(self, relative: str) -> Path:
        return Path(inner_lab_dir(self.name)) / relative

    def dead_services(self) -> list[ServiceFault]:
        dead = []
        for host in self.state.hosts:
            # hostd writes faults/<host> ("<service> exited with status N") and stops its container
            # when a critical service dies; a container stopped any other way leaves a dead socket.
            why = _read(self.host_path(f"faults/{host}"))
            if not why and hostexec.alive(self.host_path(exec_socket(host))):
                continue
            role = next((s.get("role", "") for s in self.state.services if s.get("host") == host), "")
            m = _EXITED.match(why)
            if m and any(s.get("host") == host and s.get("name") == m.group(1) for s in self.state.services):
                dead.append(ServiceFault(host, m.group(1), role, int(m.group(2)),
                                         log_tail(self.host_path(f"logs/{host}.{m.group(1)}.log"), 8)))
            else:
                dead.append(ServiceFault(host, f"container {self.state.hosts[host]}", role, None,
                                         why or "stopped: its hostd no longer answers"))
        return dead

    def down(self) -> None:
        ComposeBackend()._teardown(self.name)


def _client() -> Any:
    try:
        import docker
    except ImportError:
        raise LabError("the compose backend needs the Docker SDK: pip install docker") from None
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        raise LabError(f"no Docker Engine answers here ({exc})") from None
    return client


class ComposeBackend(Backend):
    name = "compose"

    def up(self, plan: LabPlan, progress: Progress | None = None) -> ComposeLab:
        from netlab.images import build_image

        say = progress or (lambda _m: None)
        check_lab_name(plan.lab, "lab name")
        client = _client()
        t0 = time.monotonic()
        folder = claim_lab_dir(plan.lab)  # LabInUse if the name is taken: nothing touched
        if self._exists(client, plan.lab):
            remove_lab_dir(plan.lab)
            raise LabInUse(f"containers of a lab named {plan.lab!r} are left over from a crash; "
                           f"`harness down {plan.lab}` removes them")
        state = lab_state(plan, str(folder), plan.scenario.source)
        try:
            image = build_image(progress=lambda m: say(f"image: {m}")).latest
            write_lab_files(plan, folder, inner_lab_dir(plan.lab))
            state.save(folder / STATE_FILE)
            say("creating networks and containers")
            spec = self._networks(client, plan, image, folder)
            self._containers(client, spec)
            say("starting services")
            wait_for_hosts(folder, plan.hosts, READY_TIMEOUT, lambda h: _exited(client, container_name(plan.lab, h)))
            state.ready = True
            state.save(folder / STATE_FILE)
            say(f"lab {plan.lab} up in {time.monotonic() - t0:.2f}s")
            return ComposeLab(state)
        except BaseException:
            self._teardown(plan.lab)
            raise

    def _networks(self, client: Any, plan: LabPlan, image: str, folder: Path) -> LabSpec:
        """The lab's networks, on carriers no other network uses; the spec they belong to."""
        import docker.errors
        import docker.types

        labels = {LABEL: plan.lab}
        for attempt in range(CREATE_ATTEMPTS):
            subnets = carrier_subnets(len(plan.links), _taken_subnets(client), plan.lab)
            spec = lab_spec(plan, image=image, lab_source=str(folder), src_source=PROJECT_ROOT,
                            plugins=probe_plugins(), subnets=subnets)
            try:
                for net in spec.networks:
                    assert net.subnet is not None
                    client.networks.create(
                        net.name, driver="bridge", internal=True, labels=labels,
                        options={"com.docker.network.bridge.name": net.bridge,
                                 "com.docker.network.container_iface_prefix": net.iface_prefix},
                        ipam=docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=str(net.subnet))]))
                    allow_within_bridge(plan.lab, net.bridge)
                return spec
            except docker.errors.APIError as exc:
                # Another lab took a carrier between our look and our create: try another block.
                if "overlap" not in str(exc).lower() or attempt + 1 == CREATE_ATTEMPTS:
                    raise
                remove_bridge_rules(plan.lab)
                for n in client.networks.list(filters={"label": f"{LABEL}={plan.lab}"}):
                    n.remove()
        raise AssertionError("unreachable")

    def _containers(self, client: Any, spec: LabSpec) -> None:
        for c in spec.containers:
            cid = client.api.create_container(
                spec.image, name=c.name, hostname=c.host, labels=spec.labels, command=c.command,
                environment=c.environment,
                host_config=client.api.create_host_config(
                    cap_add=spec.caps, sysctls=c.sysctls,
                    binds={m.source: {"bind": m.target, "mode": "ro" if m.read_only else "rw"} for m in c.mounts}),
                networking_config=client.api.create_networking_config(
                    {c.networks[0]: client.api.create_endpoint_config()}))["Id"]
            for net in c.networks[1:]:
                client.api.connect_container_to_network(cid, net)
            client.api.start(cid)

    def down(self, lab: str, progress: Progress | None = None) -> bool:
        """Remove ``lab`` if it is a compose lab (or its leftovers); False if there is none here."""
        check_lab_name(lab, "lab name")
        state = read_state(lab)
        if state is not None and state.backend != self.name:
            return False  # another backend's lab of that name: not ours to touch
        client = _client()
        found = state is not None or lab_dir(lab).is_dir() or self._exists(client, lab)
        if state is not None:
            stop_owner(state, STOP_TIMEOUT * 5)
        self._teardown(lab)
        if found and progress:
            progress(f"lab {lab} removed")
        return found

    def _teardown(self, lab: str) -> None:
        client = _client()
        remove_bridge_rules(lab)
        for c in client.containers.list(all=True, filters={"label": f"{LABEL}={lab}"}):
            with contextlib.suppress(Exception):
                c.remove(force=True)
        for n in client.networks.list(filters={"label": f"{LABEL}={lab}"}):
            with contextlib.suppress(Exception):
                n.remove()
        state = read_state(lab)
        if state is None or state.backend == self.name:
            remove_lab_dir(lab)

    def attach(self, lab: str) -> ComposeLab:
        state = read_state(lab)
        if state is None or state.backend != self.name:
            raise NoSuchLab(f"no compose lab named {lab!r} (see `harness status`)")
        if not state.ready:
            raise LabError(f"lab {lab!r} is not ready (still starting, or its start failed)")
        return ComposeLab(state)

    def list_labs(self) -> list[LabState]:
        client = _client()
        labs: dict[str, LabState] = {}
        for c in client.containers.list(all=True, filters={"label": LABEL}):
            lab = c.labels[LABEL]
            if lab not in labs:
                state = read_state(lab)
                labs[lab] = state if state is not None and state.backend == self.name else LabState(
                    lab=lab, backend=self.name, lab_dir="", scenario_source="?", owner_pid=0, hosts={})
        return list(labs.values())

    @staticmethod
    def _exists(client: Any, lab: str) -> bool:
        return bool(client.containers.list(all=True, filters={"label": f"{LABEL}={lab}"}) or
                    client.networks.list(filters={"label": f"{LABEL}={lab}"}))


def _exited(client: Any, name: str) -> str | None:
    """Why a container stopped while starting (its last log lines), or None if it runs."""
    c = client.containers.get(name)
    if c.status != "exited":
        return None
    return f"its container exited with status {c.attrs['State']['ExitCode']}:\n" + c.logs(tail=20).decode(
        errors="replace")


def _taken_subnets(client: Any) -> list[IPv4Network]:
    """Subnets a carrier must not overlap: every Docker network's, and the host's routes."""
    from pyroute2 import IPRoute

    taken = []
    for n in client.networks.list():
        for cfg in (n.attrs.get("IPAM") or {}).get("Config") or []:
            with contextlib.suppress(ValueError, KeyError):
                net = IPv4Network(cfg["Subnet"], strict=False)
                taken.append(net)
    with IPRoute() as ipr:
        for r in ipr.get_routes(family=2, table=254):
            dst = r.get_attr("RTA_DST")
            if dst and r["dst_len"]:
                taken.append(IPv4Network(f"{dst}/{r['dst_len']}", strict=False))
    return taken
