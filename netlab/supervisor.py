"""Keeps a lab up after `harness up` returns: brings it up, owns (and reaps) its services, and
tears it down on SIGTERM or SIGINT. ``python -m netlab.supervisor SCENARIO --lab NAME``.

Once the lab is ready it prints ``ready`` and from then on writes only to the lab's
``logs/supervisor.log``: the `harness up` that started it exits and closes its pipes, and a write to
a closed pipe must never take the lab down. A critical service that dies is recorded in the lab's
state (``faults``) for `harness status` and `harness run` to report; the lab stays up, faulty, until
`harness down`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from netlab.backends import get_backend
from netlab.backends.base import STATE_FILE, lab_dir
from netlab.compile import compile_lab
from netlab.errors import NetlabError, ScenarioError, UsageError
from netlab.loader import load_scenario
from netlab.names import check_lab_name

POLL_SECONDS = 0.5


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
        name = check_lab_name(args.lab, "--lab")
        backend = get_backend(args.backend)
        plan = compile_lab(load_scenario(args.scenario), name, host=backend.host_capabilities())
        lab = backend.up(plan, progress=lambda m: print(m, flush=True))
    except NetlabError as exc:
        # Exit 2: refused (bad name, name in use, bad scenario), nothing started; 3: a lab fault.
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2 if isinstance(exc, UsageError | ScenarioError) else 3
    try:
        print("ready", flush=True)
        _detach_output(lab_dir(name) / "logs" / "supervisor.log")
        recorded: set[str] = set()
        while not stop.wait(POLL_SECONDS):
            dead = [f for f in lab.dead_services() if f.key not in recorded]
            if dead:
                for fault in dead:
                    print(f"lab fault: {fault}", flush=True)
                    recorded.add(fault.key)
                lab.state.faults += [f.to_dict() for f in dead]
                lab.state.save(lab_dir(name) / STATE_FILE)
    finally:
        lab.down()
    return 0


def _detach_output(log: os.PathLike[str]) -> None:
    """Point stdout and stderr at the lab's log, away from the pipes of `harness up`."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


if __name__ == "__main__":
    raise SystemExit(main())
