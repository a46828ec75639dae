"""The scenario model: plain dataclasses, no I/O. ``netlab.loader`` builds them from YAML."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

from netlab.addressing import PROXY_BLOCK  # defined with the rest of the address plan
from netlab.target import Target, display_name

CONTROL = "control"  # the name of the uncensored vantage


def proxy_address(isp_index: int) -> IPv4Address:
    """The transparent proxy of ISP number ``isp_index`` (1-based, as netlab.addressing)."""
    return PROXY_BLOCK.network_address + isp_index


@dataclass(frozen=True)
class Match:
    """What a rule matches. Several keys are ANDed; names match themselves and their subdomains,
    except ``exact``. Names are lower-case IDNA A-labels without the trailing dot."""

    domain: str | None = None
    exact: str | None = None
    site: str | None = None
    ip: IPv4Address | None = None
    cidr: IPv4Network | None = None
    port: int | None = None
    proto: str | None = None  # "tcp" | "udp"
    sni: str | None = None
    http_host: str | None = None
    dns_query: str | None = None
    keyword: str | None = None

    def keys(self) -> dict[str, object]:
        """The keys that are set, in declaration order."""
        return {k: v for k, v in self.__dict__.items() if v is not None}

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.keys().items())


@dataclass(frozen=True)
class Rule:
    """One rule of a resolver, firewall or DPI list. ``action`` is the verb (``nxdomain``,
    ``answer``, ``drop``, ``inject``, ...); ``address`` carries the IP of ``answer``/``inject``."""

    match: Match
    action: str
    address: IPv4Address | None = None
    residual: float | None = None  # DPI only: keep blocking the client-server pair this long
    line: int = 0  # where the rule starts in the scenario file, for messages
    coverage: float | None = None  # partial enforcement: the fraction of matching sites it hits
    intent: str | None = None  # the service the censor means to block (collateral damage: netlab.impact)
    covered_from: str = ""  # set on the rules netlab.coverage expands a `coverage` rule into

    def describe(self) -> str:
        act = f"{self.action} {self.address}" if self.address else self.action
        return f"{{{self.match.describe()}}} -> {act}"


@dataclass(frozen=True)
class ShapingRule:
    match: Match
    rate_bps: int | None = None  # bits per second
    delay_ms: float | None = None
    loss: float | None = None  # fraction 0..1
    line: int = 0

    def describe(self) -> str:
        parts = []
        if self.rate_bps is not None:
            parts.append(f"rate={self.rate_bps}bit/s")
        if self.delay_ms is not None:
            parts.append(f"delay={self.delay_ms}ms")
        if self.loss is not None:
            parts.append(f"loss={self.loss:g}")
        return f"{{{self.match.describe()}}} -> {' '.join(parts)}"


SITE_STATES = ("up", "refused", "timeout", "no_address", "unresolvable")
CERT_KINDS = ("valid", "expired", "wrong_name", "unknown_ca")
# States the authoritative DNS decides: every resolver sees the same, so `only_for` cannot apply.
DNS_STATES = ("no_address", "unresolvable")


@dataclass(frozen=True)
class Redirect:
    """How a site redirects (scenario.md "Sites that misbehave on their own").

    The site answers ``hops`` redirects on itself (``/`` -> ``/hop/<n-1>`` -> ... ``/hop/0``),
    then sends the client to ``to`` -- or, without ``to``, serves its page at ``/hop/0``.
    ``location`` replaces the whole Location header (a broken one, e.g. ``http://``)."""

    to: str | None = None
    hops: int = 1
    status: int = 302
    location: str | None = None


@dataclass(frozen=True)
class Site:
    name: str  # IDNA A-label
    address: IPv4Address | None = None  # None: allocated from the address plan
    body_size: int = 64 * 1024
    line: int = 0
    service: str | None = None  # the service a site belongs to (e.g. telegram), for effectiveness
    # Misbehaviour of the site itself, the same for every vantage unless `only_for` names ISPs.
    state: str = "up"  # SITE_STATES
    cert: str = "valid"  # CERT_KINDS
    redirect: Redirect | None = None
    status: int = 200  # `response.status`
    body: bytes | None = None  # `response.body_file`'s content (None: the generated page)
    body_file: str | None = None  # as written in the scenario, relative to the scenario's folder
    only_for: tuple[str, ...] = ()  # ISP names whose clients see the misbehaviour; () = everyone
    https: bool = True  # False: nothing listens on 443 (a plain-HTTP server)
    dns_answer: IPv4Address | None = None  # the authority's A record, when not the site's address

    @property
    def display_name(self) -> str:
        return display_name(self.name)

    @property
    def misbehaves(self) -> bool:
        return (self.state != "up" or self.cert != "valid" or self.redirect is not None
                or self.status != 200 or self.body is not None)

    def misbehaves_for(self, vantage: str) -> bool:
        """Does ``vantage`` (an ISP name or "control") see this site's misbehaviour?"""
        return self.misbehaves and (not self.only_for or vantage in self.only_for)


@dataclass(frozen=True)
class Isp:
    name: str
    resolver_rules: tuple[Rule, ...] = ()
    firewall_rules: tuple[Rule, ...] = ()
    dpi_rules: tuple[Rule, ...] = ()
    shaping: tuple[ShapingRule, ...] = ()
    dpi_fail: str = "closed"  # "closed": a dead middlebox blocks everything; "open": passes all
    line: int = 0

    @property
    def has_proxy(self) -> bool:
        """A resolver rule points clients at this ISP's transparent proxy (netlab.services.proxy)."""
        return any(r.action == "proxy" for r in self.resolver_rules)


@dataclass(frozen=True)
class Scenario:
    name: str
    sites: tuple[Site, ...]
    isps: tuple[Isp, ...]
    targets: tuple[Target, ...]
    description: str = ""
    public_resolver: bool = True
    expect: dict[str, dict[str, str]] = field(default_factory=dict)  # vantage -> url -> verdict
    source: str = "<scenario>"
    version: int = 1
    seed: int = 0  # chooses, deterministically, what a rule with `coverage` hits
    # Probe settings the scenario needs (ProbeContext fields, e.g. http_total_timeout, test_helper).
    probe: dict[str, object] = field(default_factory=dict)
    # OONI web_connectivity keys pinned per vantage and URL (the QA suite: qa/README.md).
    expect_ooni: dict[str, dict[str, dict[str, object]]] = field(default_factory=dict)

    @property
    def vantages(self) -> list[str]:
        """Every ISP's client vantage, then the control vantage."""
        return [isp.name for isp in self.isps] + [CONTROL]

    def site(self, name: str) -> Site | None:
        return self._sites_by_name.get(name)

    # Derived once per scenario: the oracle asks for them for every target of every vantage,
    # and a scan each time makes scoring a 50,000-target campaign quadratic.
    @functools.cached_property
    def _sites_by_name(self) -> dict[str, Site]:
        return {s.name: s for s in self.sites}

    @functools.cached_property
    def target_ports(self) -> frozenset[int]:
        """The ports the targets ask for."""
        return frozenset(t.port for t in self.targets)

    def isp(self, name: str) -> Isp:
        for i in self.isps:
            if i.name == name:
                return i
        raise KeyError(name)
