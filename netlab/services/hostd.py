"""The program that makes a container a lab host: ``python3 -m netlab.services.hostd --host NAME``.

Docker gives a container one interface per network, named by the network's interface prefix
(``--interface lk3_0=up0`` says which link that is), with an address of the network's carrier
subnet, and points DNS at its own resolver. hostd puts the host as the plan describes it: each
interface renamed to its plan name and stripped of Docker's address, then the plan's addresses and
routes by the same code as the netns backend (netlab.hostsetup), every carrier blackholed (a lab
host never reaches the Docker host), the plan's resolv.conf and setup commands. Once the hosts its
services depend on are ready (netlab.hostsetup.START_RANK) it starts them, and supervises them.
Once every service answers it serves its exec socket (netlab.services.hostexec: how the harness runs
probe workers here) and writes ``ready/<host>`` in the lab folder. If a critical service dies it
writes ``faults/<host>`` and exits, stopping the container, so the harness sees a lab fault and
never a silent, uncensored path.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from netlab.hostsetup import configure_host, start_rank
from netlab.plan import LAB_DIR, Host, host_from_dict
from netlab.readiness import is_ready
from netlab.services.hostexec import ExecServer

log = logging.getLogger("hostd")
READY_TIMEOUT = 30.0


def adopt_interfaces(ipr: Any, names: dict[str, str]) -> list[IPv4Network]:
    """Rename Docker's interfaces (``names``: Docker's name -> the plan's) and take Docker's
    addresses off them; the carrier subnets they were in."""
    carriers = []
    for docker_name, plan_name in names.items():
        found = ipr.link_lookup(ifname=docker_name)
        if not found:
            raise RuntimeError(f"no interface {docker_name} for {plan_name} (Docker did not attach its network?)")
        idx = found[0]
        for a in ipr.get_addr(index=idx, family=socket.AF_INET):
            address = a.get_attr("IFA_ADDRESS")
            carriers.append(IPv4Interface(f"{address}/{a['prefixlen']}").network)
            ipr.addr("del", index=idx, address=address, prefixlen=a["prefixlen"])
        ipr.link("set", index=idx, state="down")
        ipr.link("set", index=idx, ifname=plan_name)
    return carriers


def configure(host: Host, names: dict[str, str]) -> None:
    with IPRoute() as ipr:
        carriers = adopt_interfaces(ipr, names)
        # Routes Docker made through its addresses went with them; a default one, if any, goes now.
        for r in ipr.get_routes(family=socket.AF_INET, table=254):
            if r["dst_len"] == 0:
                ipr.route("del", dst="0.0.0.0", dst_len=0, table=254)
        configure_host(ipr, host)
        for net in carriers:
            ipr.route("add", dst=str(net.network_address), dst_len=net.prefixlen, type="blackhole")
    # Never Docker's embedded DNS, which forwards to the Docker host's resolvers.
    Path("/etc/resolv.conf").write_text(host.resolv_conf or "nameserver 127.0.0.1\n")


def _interface_map(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        docker_name, sep, plan_name = pair.partition("=")
        if not sep or not docker_name or not plan_name:
            raise SystemExit(f"--interface {pair!r}: expected DOCKER_NAME=PLAN_NAME")
        out[docker_name] = plan_name
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", required=True)
    ap.add_argument("--lab-dir", required=True)
    ap.add_argument("--interface", action="append", default=[], metavar="DOCKER=PLAN",
                    help="Docker's name of an interface and the plan's (one per link of the host)")
    args = ap.parse_args(argv)
    lab = Path(args.lab_dir)
    (lab / "logs").mkdir(exist_ok=True)
    # Its own log in the lab folder too: a Compose file's score service has no `docker logs`.
    logging.basicConfig(level=logging.INFO, format=f"hostd[{args.host}] %(relativeCreated)6.0fms: %(message)s",
                        handlers=[logging.StreamHandler(sys.stderr),
                                  logging.FileHandler(lab / "logs" / f"{args.host}.hostd.log")])
    log.info("started")
    hosts = json.loads((lab / "hosts.json").read_text())
    host = host_from_dict(hosts["hosts"][args.host])
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    children: dict[str, tuple[subprocess.Popen, bool]] = {}
    server: ExecServer | None = None
    try:
        configure(host, _interface_map(args.interface))
        log.info("configured")
        for argv_ in host.setup:
            res = subprocess.run([a.replace(LAB_DIR, str(lab)) for a in argv_], capture_output=True, text=True)
            if res.returncode != 0:
                raise RuntimeError(f"setup {' '.join(argv_)}: {res.stderr.strip() or res.stdout.strip()}")
        if host.services:
            # As the netns backend starts services in START_RANK order, each host here starts its
            # own once the hosts they depend on are ready (a router's resolver needs the root).
            first = [h for h, d in hosts["hosts"].items() if start_rank(d["role"]) < start_rank(host.role)]
            deadline = time.monotonic() + READY_TIMEOUT * 2
            while not all((lab / "ready" / h).exists() for h in first):
                if stopping or time.monotonic() > deadline:
                    raise RuntimeError(f"not starting services: {', '.join(first)} not ready")
                time.sleep(0.05)  # a poll interval with a deadline
        for svc in host.services:
            out = open(lab / "logs" / f"{args.host}.{svc.name}.log", "ab")  # noqa: SIM115
            argv_ = [sys.executable if a == "python3" else a.replace(LAB_DIR, str(lab)) for a in svc.argv]
            children[svc.name] = (subprocess.Popen(argv_, stdout=out, stderr=subprocess.STDOUT), svc.critical)
            out.close()
        for svc in host.services:
            deadline = time.monotonic() + READY_TIMEOUT
            while svc.ready is not None and not is_ready(svc.ready, lab):
                proc = children[svc.name][0]
                if proc.poll() is not None or time.monotonic() > deadline or stopping:
                    raise RuntimeError(f"{svc.name} did not start (exit status {proc.returncode})")
                time.sleep(0.01)  # a poll interval with a deadline
        server = ExecServer(lab / "run" / f"{args.host}.sock").start()
        (lab / "ready").mkdir(exist_ok=True)
        (lab / "ready" / args.host).write_text(str(os.getpid()))
        log.info("ready")
        while not stopping:
            for name, (proc, critical) in children.items():
                if critical and proc.poll() is not None:
                    log.error("%s exited with status %s: stopping the host", name, proc.returncode)
                    # The harness names the dead service from this file (ComposeLab.dead_services).
                    (lab / "faults").mkdir(exist_ok=True)
                    (lab / "faults" / args.host).write_text(f"{name} exited with status {proc.returncode}")
                    return 1
            time.sleep(0.2)
        return 0
    except Exception as exc:
        log.error("%s", exc)
        (lab / "faults").mkdir(exist_ok=True)
        (lab / "faults" / args.host).write_text(str(exc))
        return 1
    finally:
        if server is not None:
            server.stop()
        for proc, _ in children.values():
            if proc.poll() is None:
                proc.terminate()
        for proc, _ in children.values():
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    raise SystemExit(main())
