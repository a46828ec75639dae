"""Servers that probe packages bring into the lab internet (add-on servers).

A probe type that needs something to talk to that the lab does not serve by itself (a DNS-over-TLS
resolver, a DoH endpoint, ...) declares it as a class attribute ``servers = (Server(...),)``
(docs/writing-a-probe.md, "Its server"). A declaration is data: the port it listens on, which
sites it serves, which targets ask for it, the program to run and how to tell it is ready. The
compiler (``addon_additions``, pure) turns the declarations a scenario asks for into services of
the internet host, which both backends start like the built-in ones; the oracle asks the same
declarations which (site, port) pairs answer (``serves``).

A server is started only for a scenario with a target it is for (its ``port``, and its ``path``
when given), so other scenarios pay nothing. It runs as ``python3 -m MODULE --config FILE`` in
the internet host, which owns the whole site range (AnyIP); ``FILE`` (``ServerConfig``, read with
``netlab.services.addon.load_config``) lists its sites with their addresses and lab certificates
and the lab's resolvers. A server that takes port 80 or 443 of a site takes it from the origin.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Literal

from netlab.addressing import PUBLIC_RESOLVER, ROOT_DNS
from netlab.errors import UsageError
from netlab.model import Scenario
from netlab.plan import LAB_DIR, ReadyCheck, Service
from netlab.services.addon import ServerConfig, SiteEntry
from netlab.target import Target

log = logging.getLogger(__name__)

#: Services the internet host runs by itself: an add-on server may not take their names.
RESERVED_NAMES = frozenset({"nsd", "nsd-tld", "nsd-auth", "whoami", "resolver", "origin", "proxy", "hostd"})
_NAME = re.compile(r"[a-z][a-z0-9-]{0,23}")
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
#: Where the compiler writes a server's configuration, relative to the lab folder.
CONFIG_DIR = "inet/addons"


class ServerError(UsageError):
    """A probe package's server declaration is invalid, or two declarations collide (exit 2)."""


@dataclass(frozen=True, slots=True)
class Server:
    """An in-lab server a probe type needs, declared in its class as ``servers = (Server(...),)``."""

    #: The service's name in the lab (logs/inet.<name>.log, `harness status` faults).
    name: str
    #: The program: run as ``python3 -m MODULE --config FILE`` inside the lab internet. It must be
    #: importable where the probe is (ship it in the probe's own module or package).
    module: str
    #: The TCP port it listens on, on the address of each of its sites.
    port: int
    #: "all": every site of the scenario; "targets": only the sites named by targets it is for.
    sites: Literal["all", "targets"] = "all"
    #: Only targets whose path starts with this ask for the server (None: any target on ``port``).
    path: str | None = None
    #: "tcp": ready once port ``port`` of its first site accepts a connection; "file": once the
    #: program wrote the ``ready_file`` its configuration names.
    ready: Literal["tcp", "file"] = "tcp"
    #: A dead critical server is a lab fault (nothing of the run is scored).
    critical: bool = True
    #: One line for `harness explain` (what it serves).
    description: str = ""

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name) or self.name in RESERVED_NAMES:
            raise ServerError(f"server {self.name!r}: a name is a lower-case letter then up to 23 lower-case "
                              f"letters, digits or '-', and not one of {', '.join(sorted(RESERVED_NAMES))}")
        if not _MODULE.fullmatch(self.module):
            raise ServerError(f"server {self.name!r}: module {self.module!r} is not a module name")
        if not 0 < self.port < 65536 or self.port == 53:
            raise ServerError(f"server {self.name!r}: port {self.port} is not a TCP port it may take")
        if self.sites not in ("all", "targets"):
            raise ServerError(f"server {self.name!r}: sites must be 'all' or 'targets', not {self.sites!r}")
        if self.ready not in ("tcp", "file"):
            raise ServerError(f"server {self.name!r}: ready must be 'tcp' or 'file', not {self.ready!r}")
        if self.path is not None and not self.path.startswith("/"):
            raise ServerError(f"server {self.name!r}: path {self.path!r} must start with '/'")

    def wanted_by(self, target: Target) -> bool:
        """Is ``target`` one this server is for (so a scenario measuring it needs the server)?"""
        return target.port == self.port and (self.path is None or target.path.startswith(self.path))

    def site_names(self, scenario: Scenario) -> list[str]:
        """The sites it serves in ``scenario``, in scenario order (none when no target asks for it)."""
        wanted = {t.host for t in scenario.targets if self.wanted_by(t)}
        if not wanted:
            return []
        return [s.name for s in scenario.sites if self.sites == "all" or s.name in wanted]


@dataclass(frozen=True, slots=True)
class Declared:
    """A server together with the probe type that declared it."""

    probe: str
    server: Server


def check_servers(declared: Iterable[Declared]) -> list[Declared]:
    """Declarations without duplicates (several probe types of one package may share a server);
    ServerError when two different servers share a name or a port."""
    by_name: dict[str, Declared] = {}
    for d in declared:
        same = by_name.get(d.server.name)
        if same is not None and same.server != d.server:
            raise ServerError(f"probe types {same.probe!r} and {d.probe!r} declare different servers named "
                              f"{d.server.name!r}")
        by_name.setdefault(d.server.name, d)
    ports: dict[int, Declared] = {}
    for d in by_name.values():
        other = ports.setdefault(d.server.port, d)
        if other is not d:
            raise ServerError(f"servers {other.server.name!r} ({other.probe}) and {d.server.name!r} ({d.probe}) "
                              f"both take port {d.server.port}")
    return list(by_name.values())


@functools.cache
def installed_servers() -> tuple[Declared, ...]:
    """The servers declared by the installed probe types (entry points ``harness.probes``). A plugin
    that does not import, or declares something else than Servers, is skipped with a warning (as
    `harness probes list` shows it broken): it never stops a lab that does not need it. Cached:
    the entry points of a process do not change (a test that installs a package clears it)."""
    from probes.base import BUILTIN_PROBES, import_probe, probe_specs

    declared = []
    for name, spec in sorted(probe_specs().items()):
        if BUILTIN_PROBES.get(name) == spec:
            continue  # the built-in probe types use the lab's own services
        try:
            servers = tuple(getattr(import_probe(spec), "servers", ()) or ())
        except Exception as exc:
            log.warning("probe %r (%s) does not import, its servers are not started: %s", name, spec, exc)
            continue
        bad = [s for s in servers if not isinstance(s, Server)]
        if bad:
            log.warning("probe %r: servers must hold netlab.addons.Server objects, not %r; none started", name, bad)
            continue
        declared += [Declared(name, s) for s in servers]
    return tuple(declared)


def wanted(scenario: Scenario, declared: Sequence[Declared]) -> list[tuple[Declared, list[str]]]:
    """The declared servers ``scenario`` asks for, each with the sites it serves. ServerError when
    two of them collide (a name, a port): only then, so an unused plugin never stops a lab."""
    key = tuple(declared)
    # The oracle asks for every (vantage, target): remember the last answer (scenarios are immutable).
    if _last and _last[0][0] is scenario and _last[0][1] == key:
        return _last[0][2]
    asked = [d for d in key if d.server.site_names(scenario)]
    out = [(d, d.server.site_names(scenario)) for d in check_servers(asked)]
    _last[:] = [(scenario, key, out)]
    return out


_last: list[tuple[Scenario, tuple[Declared, ...], list[tuple[Declared, list[str]]]]] = []  # wanted's last answer


def serves(scenario: Scenario, site: str, port: int, declared: Sequence[Declared]) -> bool:
    """Does an add-on server listen on ``port`` of ``site`` in ``scenario``'s lab?"""
    return any(d.server.port == port and site in names for d, names in wanted(scenario, declared))


def taken_ports(scenario: Scenario, declared: Sequence[Declared]) -> dict[str, set[int]]:
    """site -> the ports add-on servers take from it (the origin leaves 80/443 to them)."""
    taken: dict[str, set[int]] = {}
    for d, names in wanted(scenario, declared):
        for name in names:
            taken.setdefault(name, set()).add(d.server.port)
    return taken


@dataclass
class Additions:
    """What add-on servers add to the internet host (plain data)."""

    files: dict[str, str]
    services: list[Service]
    notes: list[str]
    probes: list[str]  # the probe types whose packages the servers come from


def addon_additions(scenario: Scenario, sites: dict[str, IPv4Address], declared: Sequence[Declared]) -> Additions:
    """Files, services and notes for the servers ``scenario`` asks for. Pure."""
    add = Additions({}, [], [], [])
    # The lab internet's recursive resolver runs in every lab (`public_resolver: false` only keeps
    # the probes from asking it); the root server refers to the TLDs, it answers no site's name.
    upstream = PUBLIC_RESOLVER
    for d, names in wanted(scenario, declared):
        s = d.server
        config_path = f"{CONFIG_DIR}/{s.name}.json"
        ready_file = f"{CONFIG_DIR}/{s.name}.ready"
        config = ServerConfig(
            name=s.name, port=s.port, ready_file=f"{LAB_DIR}/{ready_file}",
            # Answers come from the lab's recursive resolver, as a DoT/DoH service's would.
            upstream=str(upstream), public_resolver=str(PUBLIC_RESOLVER) if scenario.public_resolver else None,
            root_dns=str(ROOT_DNS), ca=f"{LAB_DIR}/pki/ca.pem",
            sites=[SiteEntry(n, str(sites[n]), f"{LAB_DIR}/pki/{n}.pem") for n in names],
        )
        add.files[config_path] = config.to_json()
        first = sites[names[0]]
        check = (ReadyCheck("tcp", first, s.port) if s.ready == "tcp"
                 else ReadyCheck("file", first, 0, path=ready_file))
        add.services.append(Service(s.name, ("python3", "-m", s.module, "--config", f"{LAB_DIR}/{config_path}"),
                                    ready=check, critical=s.critical))
        which = "every site" if s.sites == "all" else ", ".join(names)
        what = f" ({s.description})" if s.description else ""
        add.notes.append(f"inet: {s.name}{what} on port {s.port} of {which}: server of probe type {d.probe!r} "
                         f"(python3 -m {s.module}), answering from {upstream}; a target asks for it")
        if d.probe not in add.probes:
            add.probes.append(d.probe)
    return add
