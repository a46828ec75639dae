"""The program that makes a container a lab host: ``python3 -m netlab.services.hostd --host NAME``.

Docker gives a container its addresses but names its interfaces eth0, eth1, ... in no promised
order, routes everything through the bridge, and points DNS at its own resolver. hostd puts the
host as the plan describes it: interfaces renamed by address, Docker's default route and bridge
address removed (a lab host never reaches the Docker host), the plan's routes and resolv.conf,
the setup commands, then the services, which it supervises. It writes ``ready/<host>`` in the
lab folder once every service answers, and exits (stopping the container) if a critical service
dies, so the harness sees a lab fault and never a silent, uncensored path.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from netlab.plan import LAB_DIR, ready_check_from_dict
from netlab.readiness import is_ready

log = logging.getLogger("hostd")
READY_TIMEOUT = 30.0


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(argv, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {res.stderr.strip() or res.stdout.strip()}")
    return res


def configure(spec: dict, blackhole: list[str]) -> None:
    links = json.loads(sh("ip", "-j", "addr", "show").stdout)
    by_addr = {a["local"]: link["ifname"] for link in links for a in link.get("addr_info", [])
               if a.get("family") == "inet"}
    for iface in spec["interfaces"]:
        ip = iface["address"].split("/")[0]
        current = by_addr.get(ip)
        if current is None:
            raise RuntimeError(f"no interface has {ip} (Docker did not attach the network?)")
        if current != iface["name"]:
            sh("ip", "link", "set", current, "down")
            sh("ip", "link", "set", current, "name", iface["name"])
            sh("ip", "link", "set", iface["name"], "up")
    # Docker's default route leads to the Docker host: a lab host must have none.
    sh("ip", "route", "flush", "default", check=False)
    for gw in blackhole:
        sh("ip", "route", "replace", "blackhole", f"{gw}/32")
    for r in spec["routes"]:
        net = ipaddress.ip_network(r["dst"])
        if r["local"]:
            sh("ip", "route", "replace", "local", str(net), "dev", "lo", "table", "local")
        else:
            sh("ip", "route", "replace", str(net), "via", r["via"])
    # Never Docker's embedded DNS, which forwards to the Docker host's resolvers.
    Path("/etc/resolv.conf").write_text(spec.get("resolv_conf") or "nameserver 127.0.0.1\n")


def run_when_lab_ready(args: argparse.Namespace, lab: Path, markers: list[str],
                       stopping: Callable[[], bool]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT * 4
    while not all((lab / "ready" / m).exists() for m in markers):
        if stopping() or time.monotonic() > deadline:
            raise RuntimeError("the lab did not become ready: not measuring")
        time.sleep(0.05)  # a poll interval with a deadline
    argv = [sys.executable if a == "python3" else a for a in shlex.split(args.then_run)]
    log.info("lab ready: running %s", " ".join(argv))
    Path(args.stdout).parent.mkdir(parents=True, exist_ok=True)
    with open(args.stdin) as stdin, open(args.stdout, "w") as stdout:
        res = subprocess.run(argv, stdin=stdin, stdout=stdout)
    (lab / "done").mkdir(exist_ok=True)
    (lab / "done" / args.host).write_text(str(res.returncode))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", required=True)
    ap.add_argument("--lab-dir", default="/lab")
    ap.add_argument("--then-run", help="once every host of the lab is ready, run this command line here "
                    "(docker compose up: a vantage's measurements)")
    ap.add_argument("--stdin", help="file for --then-run's standard input")
    ap.add_argument("--stdout", help="file for --then-run's standard output")
    ap.add_argument("--wait-for", nargs="*", default=[], help="more ready markers to wait for (e.g. _fabric)")
    args = ap.parse_args(argv)
    lab = Path(args.lab_dir)
    logging.basicConfig(level=logging.INFO, format=f"hostd[{args.host}]: %(message)s", stream=sys.stderr)
    hosts = json.loads((lab / "hosts.json").read_text())
    spec = hosts["hosts"][args.host]
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    children: dict[str, tuple[subprocess.Popen, bool]] = {}
    try:
        configure(spec, hosts.get("blackhole", []))
        for argv_ in spec["setup"]:
            sh(*[a.replace(LAB_DIR, str(lab)) for a in argv_])
        (lab / "logs").mkdir(exist_ok=True)
        for svc in spec["services"]:
            out = open(lab / "logs" / f"{args.host}.{svc['name']}.log", "ab")  # noqa: SIM115
            argv_ = [sys.executable if a == "python3" else a.replace(LAB_DIR, str(lab)) for a in svc["argv"]]
            children[svc["name"]] = (subprocess.Popen(argv_, stdout=out, stderr=subprocess.STDOUT), svc["critical"])
            out.close()
        for svc in spec["services"]:
            check = ready_check_from_dict(svc["ready"])
            deadline = time.monotonic() + READY_TIMEOUT
            while check is not None and not is_ready(check, lab):
                proc = children[svc["name"]][0]
                if proc.poll() is not None or time.monotonic() > deadline or stopping:
                    raise RuntimeError(f"{svc['name']} did not start (exit status {proc.returncode})")
                time.sleep(0.01)  # a poll interval with a deadline
        (lab / "ready").mkdir(exist_ok=True)
        (lab / "ready" / args.host).write_text(str(os.getpid()))
        log.info("ready")
        if args.then_run:
            run_when_lab_ready(args, lab, [*hosts["hosts"], *args.wait_for], lambda: stopping)
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
