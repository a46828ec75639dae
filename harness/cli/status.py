"""harness status: the labs on this machine."""

from __future__ import annotations

import argparse
import json
import time

from rich.console import Console
from rich.table import Table

from netlab.backends import BACKENDS, get_backend
from netlab.errors import LabError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="list running labs", description="List the labs on this machine, "
                       "of every backend, with their hosts and whether their services run.",
                       epilog="examples:\n  harness status\n  harness status --json | jq '.[].lab'",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    rows = []
    for b in BACKENDS:
        try:
            backend = get_backend(b)
            labs = backend.list_labs()
        except LabError:
            continue
        for st in labs:
            dead = []
            if st.ready:
                try:
                    dead = backend.attach(st.lab).dead_services()
                except LabError:
                    dead = ["?"]
            state = "up" if st.ready and not dead else ("faulty: " + ", ".join(dead) if dead else "leftover")
            rows.append({"lab": st.lab, "backend": b, "state": state, "hosts": len(st.hosts),
                         "scenario": st.scenario_source,
                         "age_s": round(time.time() - st.created, 1) if st.created else None})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        console.print("no labs")
        return 0
    t = Table(title="Labs")
    for col in ("lab", "backend", "state", "hosts", "scenario", "age_s"):
        t.add_column(col)
    for r in rows:
        t.add_row(*(str(r[c]) for c in ("lab", "backend", "state", "hosts", "scenario", "age_s")))
    console.print(t)
    return 0
