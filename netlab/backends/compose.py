"""The compose backend: a lab is one Docker container, every lab host a network namespace in it.

One description (``lab_spec``) says what the lab's container is; this backend creates it through
the Docker API, and ``harness compose`` writes the same description as a Compose file
(harness.compose_file). The container runs the lab image (netlab.deploy.images) with this source tree at
/opt/fauxisp (read-only), third-party probe packages of the host beside it, and the lab folder
at /lab/<lab>; its main process is netlab.services.hostd, which builds the hosts with the netns
backend's own code (namespaces, veth links, addresses, routes, services) and supervises them.

Isolation: each host has its own network stack whose only interfaces are its links, as in a netns
lab. The container has no Docker network at all (network mode ``none``, loopback only), so no lab
packet has a way to the Docker host or beyond; no Docker network, bridge or firewall rule is made
for a lab. The container holds CAP_SYS_ADMIN (to make the namespaces) besides NET_ADMIN and NET_RAW.
Everything carries the label ``org.fauxisp.lab``.

Why one container and not one per host: starting a container costs this Docker Engine 0.3-0.8 s
of work whatever it runs (its root file system, runtime, network endpoints), so 42 containers
(20 ISPs) took 25 s to start however they were created; namespaces cost milliseconds
(bench/bench_compose_up.py measures both backends).

The harness reaches inside a host through hostd's exec socket for that host in the lab folder
(netlab.services.hostexec), which works the same from the Docker host and from a Compose file's
``score`` container; a host whose socket no longer answers, or that has ``faults/<host>``, is a
lab fault.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
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
    log_tail,
    read_state,
    remove_lab_dir,
    scenario_digest,
    stop_owner,
    write_lab_files,
)
from netlab.backends.netns import PROJECT_ROOT, STOP_TIMEOUT
from netlab.errors import LabError, LabInUse, NoSuchLab
from netlab.names import PREFIX, check_lab_name
from netlab.plan import LabPlan
from netlab.services import hostexec

LABEL = "org.fauxisp.lab"
INNER_LABS = "/lab"
INNER_SRC = "/opt/fauxisp"
INNER_PLUGINS = "/opt/fauxisp-plugins"
READY_TIMEOUT = 60.0
CAPS = ["NET_ADMIN", "NET_RAW", "SYS_ADMIN"]  # SYS_ADMIN: hostd makes the hosts' namespaces


def container_name(lab: str) -> str:
    """The lab's container: ``nl-<lab>`` (its hosts' namespaces inside are ``nl-<lab>.<host>``)."""
    return f"{PREFIX}{check_lab_name(lab, 'lab name')}"


def inner_lab_dir(lab: str) -> str:
    """Where the container sees the lab folder: named after the lab, like the folder itself."""
    return f"{INNER_LABS}/{check_lab_name(lab, 'lab name')}"


def exec_socket(host: str) -> str:
    """hostd's exec socket for ``host``, relative to the lab folder."""
    return f"run/{host}.sock"


# ------------------------------------------------------------------ the one description


@dataclass(frozen=True)
class Mount:
    source: str  # as the caller gives it: an absolute path (backend), or relative to a Compose file
    target: str
    read_only: bool = True


@dataclass
class LabSpec:
    """The lab's container."""

    lab: str
    name: str
    image: str
    labels: dict[str, str]
    caps: list[str]
    command: list[str]
    environment: dict[str, str]
    mounts: list[Mount]


def lab_spec(plan: LabPlan, *, image: str, lab_source: str, src_source: str, plugins: list[Mount]) -> LabSpec:
    """The container of ``plan``'s lab. ``lab_source`` and ``src_source`` are where the lab folder
    and this source tree are on the Docker host (as the caller spells paths); ``plugins`` the
    third-party probe packages to mount (probe_plugins)."""
    inner_lab = inner_lab_dir(plan.lab)
    mounts = [Mount(src_source, INNER_SRC), Mount(lab_source, inner_lab, read_only=False), *plugins]
    pythonpath = os.pathsep.join([INNER_SRC, *sorted({str(Path(m.target).parent) for m in plugins})])
    return LabSpec(plan.lab, container_name(plan.lab), image, {LABEL: plan.lab}, list(CAPS),
                   ["python3", "-m", "netlab.services.hostd", "--lab-dir", inner_lab],
                   {"PYTHONPATH": pythonpath, "PYTHONUNBUFFERED": "1"}, mounts)


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
        if ep.dist is None or dist_info is None or spec is None or spec.origin is None:
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
                    owner_pid=os.getpid(), hosts={h: container_name(plan.lab) for h in plan.hosts},
                    services=[{"host": h.name, "name": svc.name, "pid": 0, "critical": svc.critical,
                               "role": h.role} for h in plan.hosts.values() for svc in h.services],
                    vantages=dict(plan.vantages),
                    site_addresses={k: str(v) for k, v in plan.site_addresses.items()},
                    ca_file=plan.ca_file, created=time.time(), scenario_digest=scenario_digest(scenario_source))


def wait_for_hosts(folder: Path, hosts: Iterable[str], timeout: float,
                   gone: Callable[[], str | None] | None = None) -> None:
    """Until every host has ``ready/<host>``; LabError at the first that has ``faults/<host>``
    (or once ``gone`` says the lab's container stopped), or at the deadline."""
    deadline = time.monotonic() + timeout
    waiting = set(hosts)
    rounds = 0
    while waiting:
        waiting = {h for h in waiting if not (folder / "ready" / h).exists()}
        # The container's state costs an Engine call: once in ten rounds is soon enough.
        stopped = gone() if gone and waiting and rounds % 10 == 0 else None
        for h in sorted(waiting):
            why = _read(folder / "faults" / h) or stopped
            if why:
                raise LabError(f"host {h} failed to start: {why}\n" + log_tail(folder / "logs" / "hostd.log", 20))
        if waiting and time.monotonic() > deadline:
            raise LabError(f"hosts not ready within {timeout:.0f}s: {', '.join(sorted(waiting))}")
        if waiting:
            rounds += 1
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
            # hostd writes faults/<host> ("<service> exited with status N") and closes the host's
            # socket when a critical service dies; a container stopped any way leaves dead sockets.
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
        from netlab.deploy.images import build_image

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
            say("starting the lab's container")
            spec = lab_spec(plan, image=image, lab_source=str(folder), src_source=PROJECT_ROOT,
                            plugins=probe_plugins())
            self._start(client, spec)
            say("starting services")
            wait_for_hosts(folder, plan.hosts, READY_TIMEOUT, lambda: _exited(client, spec.name))
            state.ready = True
            state.save(folder / STATE_FILE)
            say(f"lab {plan.lab} up in {time.monotonic() - t0:.2f}s")
            return ComposeLab(state)
        except BaseException:
            self._teardown(plan.lab)
            raise

    @staticmethod
    def _start(client: Any, spec: LabSpec) -> None:
        cid = client.api.create_container(
            spec.image, name=spec.name, hostname=spec.lab, labels=spec.labels, command=spec.command,
            environment=spec.environment,
            host_config=client.api.create_host_config(
                network_mode="none", cap_add=spec.caps,
                binds={m.source: {"bind": m.target, "mode": "ro" if m.read_only else "rw"} for m in spec.mounts}))["Id"]
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
        for c in client.containers.list(all=True, filters={"label": f"{LABEL}={lab}"}, ignore_removed=True):
            with contextlib.suppress(Exception):
                c.remove(force=True)
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
        # ignore_removed: the SDK inspects each container listed, and another lab's may be gone by then.
        for c in client.containers.list(all=True, filters={"label": LABEL}, ignore_removed=True):
            lab = c.labels[LABEL]
            if lab not in labs:
                state = read_state(lab)
                labs[lab] = state if state is not None and state.backend == self.name else LabState(
                    lab=lab, backend=self.name, lab_dir="", scenario_source="?", owner_pid=0, hosts={})
        return list(labs.values())

    @staticmethod
    def _exists(client: Any, lab: str) -> bool:
        return bool(client.containers.list(all=True, filters={"label": f"{LABEL}={lab}"}, ignore_removed=True))


def _exited(client: Any, name: str) -> str | None:
    """Why the lab's container stopped while starting (its last log lines), or None if it runs."""
    import docker.errors

    try:
        c = client.containers.get(name)
    except docker.errors.NotFound:
        return "its container is gone"
    if c.status != "exited":
        return None
    logs: bytes = c.logs(tail=20)
    return f"its container exited with status {c.attrs['State']['ExitCode']}:\n" + logs.decode(errors="replace")
