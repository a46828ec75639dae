"""DNS over TLS in the lab internet (``netlab.services.dot``), for scenarios that measure it.

A scenario asks for DoT by having a target on port 853 (``https://dns.test:853/``): then every
site also answers DNS over TLS on 853 of its address, with its lab certificate, forwarding to
the lab's public resolver. Other scenarios get nothing extra (no process, no start-up cost).
"""

from __future__ import annotations

import json
from ipaddress import IPv4Address

from netlab.addressing import PUBLIC_RESOLVER, ROOT_DNS
from netlab.compile.router import RouterAdditions
from netlab.model import Scenario
from netlab.plan import LAB_DIR, ReadyCheck, Service

DOT_PORT = 853


def wants_dot(scenario: Scenario) -> bool:
    return DOT_PORT in scenario.target_ports


def dot_additions(scenario: Scenario, sites: dict[str, IPv4Address]) -> RouterAdditions:
    """Files, service and note to add to the internet host (empty unless a target uses 853)."""
    if not wants_dot(scenario):
        return RouterAdditions()
    upstream = PUBLIC_RESOLVER if scenario.public_resolver else ROOT_DNS
    config = {"upstream": str(upstream),
              "sites": {str(sites[s.name]): f"{LAB_DIR}/pki/{s.name}.pem" for s in scenario.sites}}
    first = sites[scenario.sites[0].name]
    service = Service("dot", ("python3", "-m", "netlab.services.dot", "--config", f"{LAB_DIR}/inet/dot.json"),
                      ready=ReadyCheck("tcp", first, DOT_PORT))
    note = (f"DNS over TLS on port {DOT_PORT} of every site (netlab.services.dot, the site's lab certificate), "
            f"forwarding to {'the public resolver' if scenario.public_resolver else 'the root server'} "
            f"{upstream}: a target uses port {DOT_PORT}")
    return RouterAdditions(files={"inet/dot.json": json.dumps(config, indent=1) + "\n"}, services=[service],
                           notes=[note])
