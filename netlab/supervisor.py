"""Keeps a lab up after `harness up` returns: brings it up, owns (and reaps) its services, and
tears it down on SIGTERM or SIGINT. ``python -m netlab.supervisor SCENARIO --lab NAME``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from netlab.backends import get_backend
from netlab.compile import compile_lab
from netlab.errors import NetlabError
from netlab.loader import load_scenario


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("scenario")
    p.add_argument("--lab", required=True)
    p.add_argument("--backend", default="netns")
    args = p.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        plan = compile_lab(load_scenario(args.scenario), args.lab)
        lab = get_backend(args.backend).up(plan, progress=lambda m: print(m, flush=True))
    except NetlabError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 3
    print("ready", flush=True)
    try:
        while not stop.wait(0.5):
            dead = lab.dead_services()
            if dead:
                print(f"lab fault: {', '.join(dead)} stopped", file=sys.stderr, flush=True)
    finally:
        lab.down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
