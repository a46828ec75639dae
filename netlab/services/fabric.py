"""The lab fabric on a Docker host: keeps traffic that stays on a lab bridge flowing.

Docker drops traffic on an internal network whose addresses lie outside the network's subnet,
and every lab link carries lab-internet addresses routed by lab hosts. For each lab bridge this
accepts exactly the frames that enter and leave that same bridge (``-i br -o br``) in the
``DOCKER-USER`` chain; anything leaving a lab bridge is still dropped by Docker's own rules.
``python3 -m netlab.services.fabric --lab NAME --ready FILE BRIDGE...`` adds the rules, writes
FILE, and removes them again on SIGTERM (``docker compose down``).
"""

from __future__ import annotations

import argparse
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

IPTABLES = ("iptables", "iptables-legacy")


def _iptables() -> str:
    """The iptables whose ruleset Docker uses: the one that has Docker's DOCKER-USER chain."""
    for cmd in IPTABLES:
        if subprocess.run([cmd, "-S", "DOCKER-USER"], capture_output=True).returncode == 0:
            return cmd
    raise RuntimeError("no DOCKER-USER chain in iptables or iptables-legacy: is Docker running here?")


def allow_within_bridge(lab: str, bridge: str) -> None:
    subprocess.run([_iptables(), "-I", "DOCKER-USER", "-i", bridge, "-o", bridge, "-m", "comment", "--comment",
                    f"censorlab:{lab}", "-j", "ACCEPT"], check=True, capture_output=True)


def remove_bridge_rules(lab: str) -> None:
    try:
        cmd = _iptables()
    except RuntimeError:
        return
    res = subprocess.run([cmd, "-S", "DOCKER-USER"], capture_output=True, text=True)
    for line in res.stdout.splitlines():
        if f"censorlab:{lab}" in shlex.split(line):
            subprocess.run([cmd, *shlex.split(line.replace("-A DOCKER-USER", "-D DOCKER-USER", 1))],
                           capture_output=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lab", required=True)
    ap.add_argument("--ready", required=True, help="file to write once the bridges are open")
    ap.add_argument("bridges", nargs="+")
    args = ap.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        remove_bridge_rules(args.lab)
        for b in args.bridges:
            allow_within_bridge(args.lab, b)
        ready = Path(args.ready)
        ready.parent.mkdir(parents=True, exist_ok=True)
        ready.write_text("ok\n")
        print(f"fabric: {len(args.bridges)} lab bridges open within themselves", file=sys.stderr, flush=True)
        stop.wait()
    finally:
        remove_bridge_rules(args.lab)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
