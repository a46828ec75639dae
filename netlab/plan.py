"""The compiled lab: hosts, links, files and services, ready for a backend to realise.

A ``LabPlan`` is data only. Paths inside config files and service command lines are written
relative to the token ``LAB_DIR``; each backend substitutes the folder where it put the files
(the netns backend: /run/netlab/<lab>; the compose backend: /lab inside every container).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network
from typing import Any

from netlab.model import Scenario

LAB_DIR = "@LAB@"


@dataclass(frozen=True)
class ReadyCheck:
    """How a backend knows a service answers: a DNS query or a TCP connect, from inside its host."""

    kind: str  # "dns" | "tcp" | "file" (a path relative to the lab folder exists)
    address: IPv4Address
    port: int
    qname: str = "."
    path: str = ""


@dataclass(frozen=True)
class Service:
    """One long-running program inside a host, started in the foreground."""

    name: str
    argv: tuple[str, ...]
    ready: ReadyCheck | None = None
    # A critical service dying makes every later result of the run a lab fault.
    critical: bool = True


@dataclass
class Interface:
    name: str
    address: IPv4Interface
    peer_host: str
    peer_name: str
    address6: IPv6Interface | None = None  # dual stack (netlab.addressing.link_v6)


@dataclass
class Route:
    dst: IPv4Network | IPv6Network
    via: IPv4Address | IPv6Address | None = None  # None with local=True: the whole range is this host's (AnyIP)
    local: bool = False


@dataclass
class Host:
    """A machine of the lab: one network namespace, or one container."""

    name: str  # "inet", "control", "<isp>" (client), "<isp>.gw" (router)
    role: str  # "internet" | "router" | "client"
    interfaces: list[Interface] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    forwarding: bool = False
    setup: list[tuple[str, ...]] = field(default_factory=list)  # commands run once, in order
    services: list[Service] = field(default_factory=list)
    resolv_conf: str | None = None  # the resolver getaddrinfo uses inside the host
    ipv6: bool = False  # dual stack: IPv6 on (else disabled in the host's network stack)


@dataclass(frozen=True)
class Link:
    a_host: str
    a_name: str
    b_host: str
    b_name: str


@dataclass(frozen=True)
class Vantage:
    """Where probes run: a client host, its resolver and the lab's public resolver."""

    name: str
    host: str
    address: IPv4Address
    resolver: IPv4Address
    public_resolver: IPv4Address | None  # None: the vantage asks no public resolver
    asn: int
    # The CA bundle the vantage trusts, relative to the lab folder, when not the lab CA alone
    # (its users installed their ISP's interception CA: netlab.compile.intercept.trust_store).
    ca_file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """As a lab's state.json keeps it (netlab.backends.base.LabState); from_dict reads it back."""
        out = {"name": self.name, "host": self.host, "address": str(self.address), "resolver": str(self.resolver),
               "public_resolver": None if self.public_resolver is None else str(self.public_resolver),
               "asn": self.asn}
        return out | ({"ca_file": self.ca_file} if self.ca_file else {})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Vantage:
        public = d.get("public_resolver")
        return cls(name=d["name"], host=d["host"], address=IPv4Address(d["address"]),
                   resolver=IPv4Address(d["resolver"]), public_resolver=None if public is None else IPv4Address(public),
                   asn=int(d["asn"]), ca_file=d.get("ca_file"))


@dataclass
class LabPlan:
    lab: str
    scenario: Scenario
    hosts: dict[str, Host]
    links: list[Link]
    files: dict[str, str | bytes]  # path relative to the lab folder -> content
    vantages: dict[str, Vantage]
    site_addresses: dict[str, IPv4Address]
    ca_file: str = "pki/ca.pem"  # relative to the lab folder
    notes: list[str] = field(default_factory=list)  # what the compiler chose and why (explain)
    # Probe types whose packages provide the plan's add-on servers (netlab.addons): a container
    # lab mounts them even when another probe type runs.
    server_probes: list[str] = field(default_factory=list)

    def render(self, content: str | bytes, lab_dir: str) -> str | bytes:
        if isinstance(content, bytes):
            return content
        return content.replace(LAB_DIR, lab_dir)


def host_to_dict(host: Host) -> dict[str, Any]:
    """A host as JSON, for the programs that set it up from inside (netlab.services.hostd)."""
    return {
        "name": host.name, "role": host.role, "forwarding": host.forwarding, "resolv_conf": host.resolv_conf,
        "ipv6": host.ipv6,
        "interfaces": [{"name": i.name, "address": str(i.address),
                        "address6": str(i.address6) if i.address6 else None} for i in host.interfaces],
        "routes": [{"dst": str(r.dst), "via": str(r.via) if r.via else None, "local": r.local} for r in host.routes],
        "setup": [list(a) for a in host.setup],
        "services": [{"name": s.name, "argv": list(s.argv), "critical": s.critical,
                      "ready": None if s.ready is None else {"kind": s.ready.kind, "address": str(s.ready.address),
                                                             "port": s.ready.port, "qname": s.ready.qname,
                                                             "path": s.ready.path}}
                     for s in host.services],
    }


def host_from_dict(d: dict[str, Any]) -> Host:
    """The inverse of host_to_dict (interfaces without their peers, which hosts.json omits)."""
    return Host(
        name=d["name"], role=d["role"], forwarding=d["forwarding"], resolv_conf=d["resolv_conf"],
        ipv6=d.get("ipv6", False),
        interfaces=[Interface(i["name"], IPv4Interface(i["address"]), "", "",
                              IPv6Interface(i["address6"]) if i.get("address6") else None) for i in d["interfaces"]],
        routes=[Route(ipaddress.ip_network(r["dst"]), ipaddress.ip_address(r["via"]) if r["via"] else None,
                      r["local"]) for r in d["routes"]],
        setup=[tuple(a) for a in d["setup"]],
        services=[Service(s["name"], tuple(s["argv"]), ready_check_from_dict(s["ready"]), s["critical"])
                  for s in d["services"]],
    )


@dataclass(frozen=True)
class LabHosts:
    """A lab folder's ``hosts.json``: the hosts and links the backend sets up, as the programs that
    set them up from inside read them (netlab.services.hostd). Interfaces carry no peers."""
    lab: str
    hosts: dict[str, Host]
    links: list[Link]

    def to_json(self) -> str:
        return json.dumps({"lab": self.lab, "hosts": {n: host_to_dict(h) for n, h in self.hosts.items()},
                           "links": [dataclasses.asdict(link) for link in self.links]}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> LabHosts:
        doc = json.loads(text)
        return cls(doc["lab"], {name: host_from_dict(d) for name, d in doc["hosts"].items()},
                   [Link(**link) for link in doc["links"]])


def ready_check_from_dict(d: dict[str, Any] | None) -> ReadyCheck | None:
    if d is None:
        return None
    return ReadyCheck(kind=d["kind"], address=IPv4Address(d["address"]), port=d["port"], qname=d["qname"],
                      path=d["path"])
