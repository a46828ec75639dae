"""harness probes list: the probe types this installation knows (entry-point group harness.probes)."""

from __future__ import annotations

import argparse
import json
from importlib.metadata import entry_points
from typing import Any

from rich.console import Console
from rich.table import Table

from harness.cli import verb_help
from netlab.capabilities import capabilities_of
from probes.base import BUILTIN_PROBES, ENTRY_POINT_GROUP, load_probe

EPILOG = f"""examples:
  harness probes list
  harness probes list --json | jq -r '.[].name'

A probe type is registered by any installed package under the entry-point group
{ENTRY_POINT_GROUP!r} (see docs/writing-a-probe.md); `harness run --probe NAME` runs it."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("probes", help=verb_help("probes"),
                       description="List the probe types found through the entry-point group "
                       f"{ENTRY_POINT_GROUP!r}, with their version, module and distribution.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("list",))
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def discover() -> list[dict[str, Any]]:
    """One row per probe type: name, version, module, class, OONI test name, distribution, error."""
    specs: dict[str, tuple[str, str]] = {n: (s, "fauxisp (built-in)") for n, s in BUILTIN_PROBES.items()}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist
        specs[ep.name] = (ep.value, f"{dist.metadata['Name']} {dist.version}" if dist is not None else "?")
    rows = []
    for name, (spec, distribution) in sorted(specs.items()):
        module, _, cls = spec.partition(":")
        row: dict[str, Any] = {"name": name, "version": None, "module": module, "class": cls,
                               "test_name": None, "distribution": distribution, "error": None, "capabilities": None,
                               "cannot_see": None, "servers": []}
        try:
            probe = load_probe(name)
            row["version"] = str(getattr(probe, "version", ""))
            row["test_name"] = getattr(probe, "test_name", None)
            caps = capabilities_of(probe)  # a probe without capabilities is listed as broken: it cannot be scored
            row["capabilities"], row["cannot_see"] = caps.to_json(), caps.blind_spots()
            # The in-lab servers it brings (netlab.addons), started for scenarios that ask for them.
            row["servers"] = [{"name": sv.name, "port": sv.port, "sites": sv.sites, "path": sv.path,
                               "module": sv.module} for sv in getattr(probe, "servers", ()) or ()]
        except Exception as exc:  # a broken plugin is listed, with why, not fatal
            row["error"] = f"{type(exc).__name__}: {exc}"
        rows.append(row)
    return rows


def run(args: argparse.Namespace, console: Console) -> int:
    rows = discover()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    t = Table(title=f"Probe types (entry points {ENTRY_POINT_GROUP})")
    for col in ("name", "version", "module", "test_name", "distribution", "stages", "servers", "cannot see"):
        t.add_column(col)
    for r in rows:
        version = r["version"] if r["error"] is None else f"[red]broken: {r['error']}[/]"
        caps = r["capabilities"] or {}
        stages = "+".join(caps.get("stages") or []) + (" +public dns" if caps.get("public_dns") else "")
        if caps.get("quic"):
            stages = "dns+quic+http3"  # its tcp and tls stages are the QUIC handshake
        servers = ", ".join(f"{sv['name']} :{sv['port']}" for sv in r["servers"]) or "-"
        t.add_row(r["name"], version, f"{r['module']}:{r['class']}", r["test_name"] or "-", r["distribution"],
                  stages or "-", servers, "; ".join(r["cannot_see"] or []) or "-")
    console.print(t)
    return 0
