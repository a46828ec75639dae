"""The program that makes a container a lab: ``python3 -m netlab.services.hostd --lab-dir /lab/NAME``.

A container lab is one container; every lab host is a network namespace inside it, built by the
netns backend's own code from the lab folder's ``hosts.json`` (netlab.backends.netns: namespaces
and veth links, addresses and routes through netlab.hostsetup, set-up commands, services started
internet first and polled until they answer). So a host is isolated exactly as a netns lab's is:
its own network stack, whose only interfaces are its links. The container itself has no network
from Docker (network mode ``none``): loopback is all it has, so no lab packet has any way to the
Docker host or beyond, and no Docker network, bridge or firewall rule is made for a lab.

hostd serves one exec socket per host, ``run/<host>.sock`` in the lab folder
(netlab.services.hostexec: how the harness runs probe workers in a host), and writes
``ready/<host>`` once everything answers. If a critical service dies it writes ``faults/<host>``
("<service> exited with status N"), closes that host's socket, kills what still runs in the host
and deletes its links: the harness sees a lab fault, and never a silent, uncensored path (a router
forwarding without its DPI). If the lab cannot be brought up, every host gets the reason as its
fault, and hostd exits.

The container needs CAP_SYS_ADMIN besides NET_ADMIN and NET_RAW, to make namespaces. Docker
mounts /proc/sys read-only; hostd makes it writable only while it sets the namespaces' net.*
sysctls, before any service starts.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from netlab.backends.base import LabState, ServiceFault
from netlab.backends.namespaces import iproute_in_netns
from netlab.backends.netns import NetnsBackend, NetnsLab, build_topology, ns_name, run_setup
from netlab.plan import Host, LabHosts, Link
from netlab.services.hostexec import ExecServer

log = logging.getLogger("hostd")
POLL_SECONDS = 0.2


@contextlib.contextmanager
def writable_proc_sys() -> Iterator[None]:
    """/proc/sys writable inside this block only (the net.* sysctls of the hosts' namespaces)."""
    subprocess.run(["mount", "-o", "remount,rw", "/proc/sys"], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["mount", "-o", "remount,ro", "/proc/sys"], check=True, capture_output=True)


def load_hosts(lab: Path) -> tuple[str, dict[str, Host], list[Link]]:
    """The lab's name, hosts and links as the backend wrote them (netlab.backends.base.write_lab_files)."""
    doc = LabHosts.from_json((lab / "hosts.json").read_text())
    return doc.lab, doc.hosts, doc.links


def take_down(lab: NetnsLab, host: Host) -> None:
    """A host whose critical service died: everything still running in it killed, its links gone
    (a veth goes with either end), so nothing passes through it any more."""
    ns = lab.state.hosts[host.name]
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    with iproute_in_netns(ns) as ipr:
        for iface in host.interfaces:
            found = ipr.link_lookup(ifname=iface.name)
            if found:
                with contextlib.suppress(Exception):  # its peer's host may have taken it already
                    ipr.link("del", index=found[0])


def fault_text(fault: ServiceFault) -> str:
    """What faults/<host> says: ComposeLab.dead_services names the service and its status from it."""
    return f"{fault.service} exited with status {fault.status}"


def serve(lab_dir: Path, stopping: list[bool]) -> int:
    name, hosts, links = load_hosts(lab_dir)
    state = LabState(lab=name, backend="compose", lab_dir=str(lab_dir), scenario_source="", owner_pid=os.getpid(),
                     hosts={h: ns_name(name, h) for h in hosts})
    lab = NetnsLab(state)
    backend = NetnsBackend()
    server: ExecServer | None = None
    (lab_dir / "faults").mkdir(exist_ok=True)
    try:
        # Never Docker's DNS or the Docker host's resolvers: hosts without a resolv.conf of their own see this.
        Path("/etc/resolv.conf").write_text("nameserver 127.0.0.1\n")
        with writable_proc_sys():
            build_topology(hosts, links, state.hosts)
        log.info("%d hosts' namespaces and links built", len(hosts))
        run_setup(state, hosts.values(), lab_dir)
        log.info("set-up commands run")
        server = ExecServer({lab_dir / "run" / f"{h}.sock": partial(lab.command, h) for h in hosts}).start()
        backend.start_services(lab, hosts.values(), lab_dir, lambda: log.info("services started"))
        (lab_dir / "ready").mkdir(exist_ok=True)
        for h in hosts:
            (lab_dir / "ready" / h).write_text(str(os.getpid()))
        log.info("ready")
        down: set[str] = set()
        while not stopping[0]:
            for fault in lab.dead_services():
                if fault.host in down:
                    continue
                down.add(fault.host)
                log.error("%s/%s exited with status %s: taking the host down", fault.host, fault.service,
                          fault.status)
                # In this order: the harness, seeing the fault, sees the host down, and never a
                # closed socket before the fault that names the service.
                take_down(lab, hosts[fault.host])
                (lab_dir / "faults" / fault.host).write_text(fault_text(fault))
                server.close(lab_dir / "run" / f"{fault.host}.sock")
            time.sleep(POLL_SECONDS)
        return 0
    except Exception as exc:
        log.error("%s", exc)
        for h in hosts:  # the backend waits for every host: each one says why
            (lab_dir / "faults" / h).write_text(str(exc))
        return 1
    finally:
        if server is not None:
            server.stop()
        # The services, and whatever else runs in a host; the namespaces go with the container.
        for proc in lab.children.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in lab.children.values():
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lab-dir", required=True, help="the lab folder as this container sees it")
    args = ap.parse_args(argv)
    lab_dir = Path(args.lab_dir)
    (lab_dir / "logs").mkdir(exist_ok=True)
    # Its own log in the lab folder too: a Compose file's score service has no `docker logs`.
    logging.basicConfig(level=logging.INFO, format="hostd %(relativeCreated)6.0fms: %(message)s",
                        handlers=[logging.StreamHandler(sys.stderr),
                                  logging.FileHandler(lab_dir / "logs" / "hostd.log")])
    log.info("started")
    stopping = [False]

    def stop(*_: object) -> None:
        stopping[0] = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return serve(lab_dir, stopping)


if __name__ == "__main__":
    raise SystemExit(main())
