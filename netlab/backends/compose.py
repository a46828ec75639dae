"""The compose backend: every lab host is a Docker container, every link an internal network.

Containers run the lab base image (netlab.images) with this source tree mounted read-only at
/opt/censorlab and the lab folder at /lab; their main process is netlab.services.hostd, which
sets the host up as the plan says and supervises its services. Networks are ``internal: true``
and hostd removes Docker's default route and blackholes the bridge address, so no lab packet
can reach the Docker host or beyond. Everything carries the label ``org.censorlab.lab``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import time
from pathlib import Path
from typing import Any

from netlab.backends.base import (
    STATE_FILE,
    Backend,
    LabState,
    Progress,
    RunningLab,
    ServiceFault,
    claim_lab_dir,
    lab_dir,
    link_gateway,
    log_tail,
    pid_alive,
    read_state,
    remove_lab_dir,
    scenario_digest,
    wait_until,
    write_lab_files,
)
from netlab.backends.netns import PROJECT_ROOT, STOP_TIMEOUT
from netlab.errors import LabError, LabInUse, NoSuchLab
from netlab.names import check_lab_name, host_object_name
from netlab.plan import LabPlan
from netlab.services.fabric import allow_within_bridge, remove_bridge_rules

LABEL = "org.censorlab.lab"
INNER_LAB = "/lab"
INNER_SRC = "/opt/censorlab"
READY_TIMEOUT = 60.0
CAPS = ["NET_ADMIN", "NET_RAW"]


def container_name(lab: str, host: str) -> str:
    return host_object_name(lab, host)


def bridge_name(network: str) -> str:
    """A short, stable name for a lab network's bridge (interface names have 15 characters)."""
    return "nl" + hashlib.sha256(network.encode()).hexdigest()[:10]


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


class ComposeLab(RunningLab):
    def command(self, host: str, argv: list[str]) -> list[str]:
        return ["docker", "exec", "-i", self.state.hosts[host], *argv]

    def inner_path(self, relative: str) -> Path:
        return Path(INNER_LAB) / relative

    def dead_services(self) -> list[ServiceFault]:
        client = _client()
        dead = []
        running = {c.name for c in client.containers.list(filters={"label": f"{LABEL}={self.name}"})}
        for host, name in self.state.hosts.items():
            if name in running:
                continue
            # hostd stops its container when a critical service dies, and says which in faults/<host>.
            why = ""
            with contextlib.suppress(OSError):
                why = self.host_path(f"faults/{host}").read_text().strip()
            service, _, _ = why.partition(" ")
            status = None
            with contextlib.suppress(Exception):
                status = int(client.containers.get(name).attrs["State"]["ExitCode"])
            svc = next((s for s in self.state.services if s.get("host") == host and s.get("name") == service), None)
            tail = log_tail(self.host_path(f"logs/{host}.{service}.log"), 8) if svc else why
            dead.append(ServiceFault(host, svc["name"] if svc else f"container {name}",
                                     svc.get("role", "") if svc else "", status, tail))
        return dead

    def down(self) -> None:
        ComposeBackend()._teardown(self.name)


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
        state = LabState(lab=plan.lab, backend=self.name, lab_dir=str(folder), scenario_source=plan.scenario.source,
                         owner_pid=os.getpid(), hosts={h: container_name(plan.lab, h) for h in plan.hosts},
                         services=[{"host": h.name, "name": svc.name, "pid": 0, "critical": svc.critical,
                                    "role": h.role} for h in plan.hosts.values() for svc in h.services],
                         vantages={k: v.to_dict() for k, v in plan.vantages.items()},
                         site_addresses={k: str(v) for k, v in plan.site_addresses.items()},
                         ca_file=plan.ca_file, created=time.time(),
                         scenario_digest=scenario_digest(plan.scenario.source))
        lab_dir = folder
        try:
            image = build_image(progress=lambda m: say(f"image: {m}")).latest
            write_lab_files(plan, lab_dir, INNER_LAB)
            state.save(lab_dir / STATE_FILE)
            say("creating networks and containers")
            self._create(client, plan, image, lab_dir)
            say("starting services")
            self._wait_ready(client, plan, lab_dir)
            state.ready = True
            state.save(lab_dir / STATE_FILE)
            say(f"lab {plan.lab} up in {time.monotonic() - t0:.2f}s")
            return ComposeLab(state)
        except BaseException:
            self._teardown(plan.lab)
            raise

    def _create(self, client: Any, plan: LabPlan, image: str, lab_dir: Path) -> None:
        import docker.types

        labels = {LABEL: plan.lab}
        networks: dict[tuple[str, str], str] = {}
        for link in plan.links:
            iface = next(i for i in plan.hosts[link.a_host].interfaces if i.name == link.a_name)
            name = host_object_name(plan.lab, f"{link.a_host}-{link.b_host}")
            bridge = bridge_name(name)
            pool = docker.types.IPAMPool(subnet=str(iface.address.network), gateway=str(link_gateway(iface.address)))
            client.networks.create(name, driver="bridge", internal=True, labels=labels,
                                   options={"com.docker.network.bridge.name": bridge},
                                   ipam=docker.types.IPAMConfig(pool_configs=[pool]))
            allow_within_bridge(plan.lab, bridge)
            networks[(link.a_host, link.a_name)] = networks[(link.b_host, link.b_name)] = name
        for host in plan.hosts.values():
            attach = [(networks[(host.name, i.name)], str(i.address.ip)) for i in host.interfaces]
            first_net, first_ip = attach[0]
            sysctls = {"net.ipv4.ip_forward": "1" if host.forwarding else "0",
                       "net.ipv6.conf.all.disable_ipv6": "1"}
            cid = client.api.create_container(
                image, name=container_name(plan.lab, host.name), hostname=host.name, labels=labels,
                command=["python3", "-m", "netlab.services.hostd", "--host", host.name, "--lab-dir", INNER_LAB],
                environment={"PYTHONPATH": INNER_SRC, "PYTHONUNBUFFERED": "1"},
                host_config=client.api.create_host_config(
                    cap_add=CAPS, sysctls=sysctls, binds={str(lab_dir): {"bind": INNER_LAB, "mode": "rw"},
                                                          PROJECT_ROOT: {"bind": INNER_SRC, "mode": "ro"}},
                    dns=[str(plan.vantages[host.name].resolver)] if host.name in plan.vantages else None),
                networking_config=client.api.create_networking_config(
                    {first_net: client.api.create_endpoint_config(ipv4_address=first_ip)}))["Id"]
            for net, ip in attach[1:]:
                client.api.connect_container_to_network(cid, net, ipv4_address=ip)
            client.api.start(cid)

    def _wait_ready(self, client: Any, plan: LabPlan, lab_dir: Path) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        waiting = set(plan.hosts)
        while waiting:
            waiting = {h for h in waiting if not (lab_dir / "ready" / h).exists()}
            for h in list(waiting):
                c = client.containers.get(container_name(plan.lab, h))
                if c.status == "exited" or (lab_dir / "faults" / h).exists():
                    logs = c.logs(tail=20).decode(errors="replace")
                    raise LabError(f"host {h} failed to start:\n{logs}")
            if waiting and time.monotonic() > deadline:
                raise LabError(f"hosts not ready within {READY_TIMEOUT:.0f}s: {', '.join(sorted(waiting))}")
            if waiting:
                time.sleep(0.05)  # a poll interval with a deadline

    def down(self, lab: str, progress: Progress | None = None) -> bool:
        """Remove ``lab`` if it is a compose lab (or its leftovers); False if there is none here."""
        check_lab_name(lab, "lab name")
        state = read_state(lab)
        if state is not None and state.backend != self.name:
            return False  # another backend's lab of that name: not ours to touch
        client = _client()
        found = state is not None or lab_dir(lab).is_dir() or self._exists(client, lab)
        if state is not None and state.owner_pid != os.getpid() and pid_alive(state.owner_pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(state.owner_pid, signal.SIGTERM)
            wait_until(lambda: not pid_alive(state.owner_pid), STOP_TIMEOUT * 5)
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
