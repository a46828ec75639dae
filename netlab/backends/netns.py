"""The netns backend: every lab host is a Linux network namespace named ``nl-<lab>.<host>``.

Topology through pyroute2 (netlink, in-process); services started in the foreground with
``ip netns exec`` as children of the calling process, their output in ``<lab dir>/logs``.
Teardown works from the saved state, and falls back to the namespaces whose name says they are
the lab's (netlab.names: an exact lab name, never a prefix), so ``harness down`` also cleans up
after a crash.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from pyroute2 import netns

from netlab.backends.base import (
    STATE_FILE,
    Backend,
    LabState,
    Progress,
    RunningLab,
    ServiceFault,
    claim_lab_dir,
    lab_dir,
    lab_folders,
    log_tail,
    pid_alive,
    read_state,
    remove_lab_dir,
    scenario_digest,
    stop_owner,
    wait_until,
    write_lab_files,
)
from netlab.backends.namespaces import create_netns, iproute_in_netns, socket_in_netns, write_sysctl
from netlab.errors import LabError, LabInUse, NoSuchLab
from netlab.hostsetup import configure_host, ipv6_sysctls, start_rank
from netlab.interrupts import deferred
from netlab.names import NETNS_DIR, PREFIX, check_lab_name, host_object_name, lab_of
from netlab.plan import LAB_DIR, Host, LabPlan, Link, ReadyCheck
from netlab.readiness import is_ready

READY_TIMEOUT = 15.0
STOP_TIMEOUT = 3.0
PROJECT_ROOT = str(Path(__file__).resolve().parents[2])


def ns_name(lab: str, host: str) -> str:
    return host_object_name(lab, host)


class NetnsLab(RunningLab):
    def __init__(self, state: LabState, children: dict[tuple[str, str], subprocess.Popen[bytes]] | None = None
                 ) -> None:
        super().__init__(state)
        self.children = children or {}

    def command(self, host: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.state.hosts[host], *_local_argv(argv)]

    def down(self) -> None:
        if self.state.owner_pid == os.getpid():
            NetnsBackend()._teardown(self.name, self.state, self.children)
        else:  # a lab this process attached to: its owner tears it down
            NetnsBackend().down(self.name)

    def dead_services(self) -> list[ServiceFault]:
        # What the owner (the supervisor of `harness up`) recorded, with exit statuses it alone knows.
        recorded = {} if self.children else {
            f.key: f for f in (read_state(self.name) or self.state).recorded_faults()}
        dead = []
        for svc in self.state.services:
            if not svc.get("critical", True):
                continue
            key = f"{svc['host']}/{svc['name']}"
            proc = self.children.get((svc["host"], svc["name"]))
            alive = proc.poll() is None if proc is not None else pid_alive(svc["pid"])
            if alive:
                continue
            dead.append(recorded.get(key) or ServiceFault(
                svc["host"], svc["name"], svc.get("role", ""), proc.returncode if proc is not None else None,
                log_tail(self.host_path(f"logs/{svc['host']}.{svc['name']}.log"), 8)))
        return dead


class NetnsBackend(Backend):
    name = "netns"

    def up(self, plan: LabPlan, progress: Progress | None = None) -> NetnsLab:
        say = progress or (lambda _m: None)
        _require_root()
        check_lab_name(plan.lab, "lab name")
        t0 = time.monotonic()
        folder = claim_lab_dir(plan.lab)  # LabInUse if the name is taken: nothing touched
        if self._namespaces(plan.lab):
            remove_lab_dir(plan.lab)
            raise LabInUse(f"namespaces of a lab named {plan.lab!r} are left over from a crash; "
                           f"`harness down {plan.lab}` removes them")
        state = LabState(lab=plan.lab, backend=self.name, lab_dir=str(folder),
                         scenario_source=plan.scenario.source, owner_pid=os.getpid(),
                         hosts={h: ns_name(plan.lab, h) for h in plan.hosts},
                         vantages=dict(plan.vantages),
                         site_addresses={k: str(v) for k, v in plan.site_addresses.items()},
                         ca_file=plan.ca_file, created=time.time(),
                         scenario_digest=scenario_digest(plan.scenario.source))
        lab = NetnsLab(state)
        lab_dir = folder
        try:
            write_lab_files(plan, lab_dir, str(lab_dir))
            state.save(lab_dir / STATE_FILE)
            say("creating namespaces and links")
            build_topology(plan.hosts, plan.links, state.hosts)
            run_setup(state, plan.hosts.values(), lab_dir)
            say("starting services")
            self.start_services(lab, plan.hosts.values(), lab_dir, lambda: state.save(lab_dir / STATE_FILE))
            state.ready = True
            state.save(lab_dir / STATE_FILE)
            say(f"lab {plan.lab} up in {time.monotonic() - t0:.2f}s")
            return lab
        except BaseException:
            self._teardown(plan.lab, state, lab.children)
            raise

    def down(self, lab: str, progress: Progress | None = None) -> bool:
        """Remove ``lab`` if it is a netns lab (or its leftovers); False if there is none here."""
        say = progress or (lambda _m: None)
        _require_root()
        check_lab_name(lab, "lab name")
        state = read_state(lab)
        if state is not None and state.backend != self.name:
            return False  # another backend's lab of that name: not ours to touch
        folder = lab_dir(lab).is_dir()
        found = state is not None or folder or bool(self._namespaces(lab))
        if state is not None:
            stop_owner(state, STOP_TIMEOUT * 3)  # a supervisor tears down first; then make sure
        self._teardown(lab, state, {})
        if found:
            say(f"lab {lab} removed")
        return found

    def attach(self, lab: str) -> NetnsLab:
        state = read_state(lab)
        if state is None or state.backend != self.name:
            raise NoSuchLab(f"no netns lab named {lab!r} (see `harness status`)")
        if not state.ready:
            raise LabError(f"lab {lab!r} is not ready (still starting, or its start failed)")
        return NetnsLab(state)

    def list_labs(self) -> list[LabState]:
        labs: dict[str, LabState] = {}
        for name in lab_folders():
            st = read_state(name)
            if st is not None and st.backend == self.name:
                labs[name] = st
        for ns in _our_namespaces():
            lab = lab_of(ns)
            if lab is not None and not any(ns in st.hosts.values() for st in labs.values()):
                labs.setdefault(lab, LabState(lab=lab, backend=self.name, lab_dir="", scenario_source="?",
                                              owner_pid=0, hosts={}))
                labs[lab].hosts[ns] = ns
        return list(labs.values())

    # ------------------------------------------------------------ internals

    @staticmethod
    def _namespaces(lab: str) -> set[str]:
        """The namespaces that belong to ``lab``: exactly its name, never a prefix of another's."""
        return {ns for ns in _our_namespaces() if lab_of(ns) == lab}

    def _topology(self, plan: LabPlan, state: LabState) -> None:
        build_topology(plan.hosts, plan.links, state.hosts)

    def start_services(self, lab: NetnsLab, hosts: Iterable[Host], lab_dir: Path,
                       started: Callable[[], None] = lambda: None) -> None:
        """Start every service of ``hosts`` (the internet first: hostsetup.START_RANK), call
        ``started``, then poll each until it answers: the programs' start-up costs overlap."""
        pending = []
        for host in sorted(hosts, key=lambda h: start_rank(h.role)):
            for svc in host.services:
                argv = [a.replace(LAB_DIR, str(lab_dir)) for a in svc.argv]
                log = open(lab_dir / "logs" / f"{host.name}.{svc.name}.log", "ab")  # noqa: SIM115
                proc = subprocess.Popen(lab.command(host.name, argv), stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                        env=_service_env())
                log.close()
                lab.children[(host.name, svc.name)] = proc
                lab.state.services.append({"host": host.name, "name": svc.name, "pid": proc.pid,
                                           "critical": svc.critical, "role": host.role})
                pending.append((host.name, svc, proc))
        started()
        for host_name, svc, proc in pending:
            if svc.ready:
                self._wait_ready(lab, host_name, svc.name, svc.ready, proc)

    def _wait_ready(self, lab: NetnsLab, host: str, name: str, check: ReadyCheck,
                    proc: subprocess.Popen[bytes]) -> None:
        ns = lab.state.hosts[host]
        deadline = time.monotonic() + READY_TIMEOUT
        last = "not tried"
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise LabError(f"{host}/{name} exited with status {proc.returncode} while starting:\n"
                               + log_tail(Path(lab.state.lab_dir) / "logs" / f"{host}.{name}.log"))
            try:
                if is_ready(check, Path(lab.state.lab_dir), lambda f, t: socket_in_netns(ns, f, t)):
                    return
                last = "not ready"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.01)  # a poll interval with a deadline, not a readiness guess
        raise LabError(f"{host}/{name} did not become ready within {READY_TIMEOUT:.0f}s ({last}):\n"
                       + log_tail(Path(lab.state.lab_dir) / "logs" / f"{host}.{name}.log"))

    @deferred()  # an interrupt must not cut a teardown in half (netlab.interrupts)
    def _teardown(self, lab: str, state: LabState | None,
                  children: dict[tuple[str, str], subprocess.Popen[bytes]]) -> None:
        pids = [p.pid for p in children.values()]
        if state is not None:
            pids += [s["pid"] for s in state.services]
        for pid in set(pids):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in children.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        namespaces = {ns for ns in state.hosts.values() if lab_of(ns) == lab} if state is not None else set()
        namespaces |= self._namespaces(lab)
        for ns in namespaces:
            # Anything still inside (a stuck service, a probe worker) goes with its namespace.
            res = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            for inside in res.stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(inside), signal.SIGKILL)
        for proc in children.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=STOP_TIMEOUT)
        for ns in namespaces:
            with contextlib.suppress(OSError):
                netns.remove(ns)
            shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)
        # `ip netns del` returns before the kernel is done: wait until the names are free.
        wait_until(lambda: not (namespaces & set(_our_namespaces())), STOP_TIMEOUT)
        remove_lab_dir(lab)


def build_topology(hosts: dict[str, Host], links: Iterable[Link], namespaces: dict[str, str]) -> None:
    """One namespace per host (``namespaces``: host -> its name), the veth of every link, every
    host's addresses and routes (netlab.hostsetup), sysctls and resolv.conf. The compose backend
    builds its lab container's namespaces with this too (netlab.services.hostd)."""
    for host, ns in namespaces.items():
        create_netns(ns)
        for key, value in ipv6_sysctls(hosts[host]).items():
            write_sysctl(ns, key, value)
        write_sysctl(ns, "net.ipv4.ip_forward", "1" if hosts[host].forwarding else "0")
        if hosts[host].resolv_conf:
            d = Path("/etc/netns") / ns
            d.mkdir(parents=True, exist_ok=True)
            (d / "resolv.conf").write_text(hosts[host].resolv_conf or "")
    handles = {h: iproute_in_netns(ns) for h, ns in namespaces.items()}
    try:
        for link in links:
            handles[link.a_host].link("add", ifname=link.a_name, kind="veth",
                                      peer={"ifname": link.b_name, "net_ns_fd": namespaces[link.b_host]})
        for spec in hosts.values():
            configure_host(handles[spec.name], spec)
    finally:
        for h in handles.values():
            h.close()


def run_setup(state: LabState, hosts: Iterable[Host], lab_dir: Path) -> None:
    """Every host's set-up commands, in order, inside its namespace."""
    for host in hosts:
        for argv in host.setup:
            argv = tuple(a.replace(LAB_DIR, str(lab_dir)) for a in argv)
            res = subprocess.run(["ip", "netns", "exec", state.hosts[host.name], *argv], capture_output=True,
                                 text=True, timeout=60)
            if res.returncode != 0:
                raise LabError(f"setup of {host.name} failed: {' '.join(argv)}: "
                               f"{res.stderr.strip() or res.stdout.strip()}")


def _local_argv(argv: list[str]) -> list[str]:
    # Services and workers run with this very interpreter, so they see the same packages.
    return [sys.executable if a == "python3" else a for a in argv]


def _service_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = PROJECT_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _our_namespaces() -> list[str]:
    try:
        return [n for n in os.listdir(NETNS_DIR) if n.startswith(PREFIX)]
    except FileNotFoundError:
        return []


def _require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the netns backend needs root (or run inside `unshare --user --map-root-user --net "
                       "--mount` with a tmpfs on /run/netns)")
