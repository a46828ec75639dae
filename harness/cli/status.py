"""harness status: the labs on this machine."""

from __future__ import annotations

import argparse
import json
import time

from rich.console import Console
from rich.table import Table

from harness.cli import verb_help
from netlab.backends import BACKENDS, get_backend
from netlab.backends.base import LabState, lab_folders, pid_alive, read_state
from netlab.errors import LabError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("status", help=verb_help("status"), description="List the labs on this machine, "
                       "of every backend, with their hosts and whether their services run.",
                       epilog="examples:\n  harness status\n  harness status --json | jq '.[].lab'",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def lab_condition(backend_name: str, st: LabState) -> str:
    """up, starting, faulty (naming what died), orphaned (its owner is gone), or leftover."""
    if not st.lab_dir:
        return "leftover (no state: `harness down` removes it)"
    owner = pid_alive(st.owner_pid)
    if not st.ready:
        return "starting" if owner else "leftover (its start failed: `harness down` removes it)"
    try:
        dead = get_backend(backend_name).attach(st.lab).dead_services()
    except LabError as exc:
        return f"faulty: {exc}"
    if dead:
        return "faulty: " + "; ".join(f.key + ("" if f.status is None else f" (exit {f.status})") for f in dead)
    return "up" if owner else "orphaned (its owner is gone: `harness down` removes it)"


def run(args: argparse.Namespace, console: Console) -> int:
    rows = []
    seen: set[str] = set()
    for b in BACKENDS:
        try:
            labs = get_backend(b).list_labs()
        except LabError:
            continue
        for st in labs:
            seen.add(st.lab)
            rows.append({"lab": st.lab, "backend": b, "state": lab_condition(b, st), "hosts": len(st.hosts),
                         "scenario": st.scenario_source,
                         "age_s": round(time.time() - st.created, 1) if st.created else None})
    for name in lab_folders():
        if name not in seen:
            left = read_state(name)
            rows.append({"lab": name, "backend": left.backend if left else "?",
                         "state": "leftover (no running hosts: `harness down` removes it)",
                         "hosts": 0, "scenario": left.scenario_source if left else "?", "age_s": None})
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
