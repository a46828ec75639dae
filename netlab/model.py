"""The scenario model: plain dataclasses, no I/O. ``netlab.loader`` builds them from YAML."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any, TypeVar

from netlab.addressing import PROXY_BLOCK, SiteAddresses, allocate_sites, v6_of  # with the rest of the address plan
from netlab.blockpage import Blockpage
from netlab.errors import ScenarioError
from netlab.target import Target, display_name
from netlab.verdict import Verdict

CONTROL = "control"  # the name of the uncensored vantage
_Pin = TypeVar("_Pin")  # what a pin holds: a verdict (expect), OONI keys (expect_ooni)


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
    ip: IPv4Address | IPv6Address | None = None
    cidr: IPv4Network | IPv6Network | None = None
    port: int | None = None
    proto: str | None = None  # "tcp" | "udp"
    sni: str | None = None
    http_host: str | None = None
    dns_query: str | None = None
    keyword: str | None = None
    family: int | None = None  # 4 or 6: only flows of that IP version (dual stack); None: both

    def keys(self) -> dict[str, object]:
        """The keys that are set, in declaration order."""
        return {k: v for k, v in self.__dict__.items() if v is not None}

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.keys().items())


TRANSPORTS = ("any", "tcp", "quic")  # what a DPI rule reads: TLS over TCP, QUIC, or both
QUIC_VERSIONS = (1, 2)  # QUIC versions a censor can decrypt (RFC 9000, RFC 9369)
QUIC_DATAGRAMS = ("all", "first")
QUIC_RESIDUAL_SCOPES = ("addresses", "server_port", "flow")


@dataclass(frozen=True)
class QuicKnobs:
    """How a DPI rule's censor reads QUIC (scenario.md "QUIC"): the quirks of real censors."""

    datagrams: str = "all"  # "first": only a new flow's first datagram (GFW, TSPU); "all": until the hello is whole
    reassemble: bool = True  # False: the ClientHello must be whole in the first CRYPTO frame (GFW)
    versions: tuple[int, ...] = QUIC_VERSIONS
    sport_above_dport: bool = False  # only datagrams whose source port is above the destination port (GFW)
    min_size: int = 0  # only datagrams of at least this many UDP payload bytes (TSPU 2022: 1001)
    delay: float | None = None  # None: the trigger is dropped; else it passes and blocking starts this late
    residual_on: str = "addresses"  # what a residual block covers: QUIC_RESIDUAL_SCOPES

    def to_json(self) -> dict[str, object]:
        return {"datagrams": self.datagrams, "reassemble": self.reassemble, "versions": list(self.versions),
                "sport_above_dport": self.sport_above_dport, "min_size": self.min_size, "delay": self.delay,
                "residual_on": self.residual_on}

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> QuicKnobs:
        d = dict(d or {})
        if "versions" in d:
            d["versions"] = tuple(d["versions"])
        return cls(**d)


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
    transport: str = "any"  # DPI only: TRANSPORTS; an sni rule reads TLS over TCP and QUIC alike by default
    quic: QuicKnobs = QuicKnobs()  # DPI only: how the rule reads QUIC

    @property
    def reads_quic(self) -> bool:
        """A DPI rule the QUIC reader applies: sni for QUIC too, or a shape rule (transport quic, no name)."""
        return self.transport == "quic" or (self.match.sni is not None and self.transport == "any")

    @property
    def reads_tcp(self) -> bool:
        return self.transport != "quic"
    # DPI `blockpage`: the page injected; resolver `{answer: IP, blockpage: ...}`: the page the ISP's
    # blockpage server at that address answers (netlab.blockpage, netlab.services.blockpage).
    blockpage: Blockpage | None = None

    def describe(self) -> str:
        act = f"{self.action} {self.address}" if self.address else self.action
        if self.blockpage is not None and not self.blockpage.is_default:  # the scenario's own page
            act += f" {self.blockpage.status}" if self.action == "blockpage" else f" (page {self.blockpage.status})"
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


RECORD_TYPES = ("AAAA", "CNAME", "TXT", "NS", "MX")  # `records:` beside a site's A record


@dataclass(frozen=True)
class SiteRecords:
    """DNS records a site publishes beside its A record (scenario.md `records`). A site with a
    ``cname`` is an alias: it has no address, origin or records of its own; its name resolves
    through the CNAME chain and the canonical site's origin answers for it."""

    aaaa: tuple[IPv6Address, ...] = ()
    cname: str | None = None
    txt: tuple[str, ...] = ()
    ns: tuple[str, ...] = ()  # the site's name is a zone apex served under these names
    mx: tuple[tuple[int, str], ...] = ()  # (preference, exchange)

    def __bool__(self) -> bool:
        return bool(self.aaaa or self.cname or self.txt or self.ns or self.mx)


@dataclass(frozen=True)
class PathResponse:
    """What a site answers on one path (`paths:`), to every client; other paths get the site's
    own response. ``body`` None: the generated page; a 1xx, 204 or 304 never has one."""

    path: str
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    body_file: str | None = None
    redirect: Redirect | None = None  # hops is 1: a path redirects once
    line: int = 0


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
    quic: bool = True  # HTTP/3 on UDP 443 beside HTTPS (netlab.services.h3); False: TCP only
    # Every address given in the scenario (`address`, or `addresses`: a CDN); `address` is the first.
    # Several sites may share an address (shared hosting): the origin tells them apart by SNI and Host.
    addresses: tuple[IPv4Address, ...] = ()
    # Dual stack: the IPv6 addresses given in `address`/`addresses` (AAAA records); none given: the
    # IPv6 twin of each IPv4 address (netlab.addressing.v6_of).
    addresses6: tuple[IPv6Address, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()  # `response.headers`, added to the origin's own
    paths: tuple[PathResponse, ...] = ()

    def path(self, path: str) -> PathResponse | None:
        """The response declared for ``path`` (the query left out), if any."""
        path = path.split("?", 1)[0]
        return next((p for p in self.paths if p.path == path), None)
    records: SiteRecords = SiteRecords()

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
class Reassembly:
    """How much of a flow the DPI middlebox reads (``dpi.reassembly``): its first ``packets``
    client->server packets (the SYN and the handshake's ACK count) and at most ``bytes`` of the
    client's byte stream. A name or keyword past either is never seen: the flow evades."""

    packets: int = 10
    bytes: int = 16 * 1024


@dataclass(frozen=True)
class Isp:
    name: str
    resolver_rules: tuple[Rule, ...] = ()
    firewall_rules: tuple[Rule, ...] = ()
    dpi_rules: tuple[Rule, ...] = ()
    shaping: tuple[ShapingRule, ...] = ()
    dpi_fail: str = "closed"  # "closed": a dead middlebox blocks everything; "open": passes all
    # "access": the middlebox sees the clients' traffic only; "border": the ISP's own too (its
    # resolver's recursion: DNS injection poisons its cache), as a censor at the national border does.
    dpi_placement: str = "access"
    dpi_reassembly: Reassembly = Reassembly()
    # DPI `intercept`: the ISP's clients have installed its interception CA (as Kazakhstan asked),
    # so interception succeeds silently (netlab.compile.intercept.trust_store).
    ca_installed: bool = False
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
    whoami: str | None = None  # a name whose authority answers who asks (netlab.services.whoami)
    ipv6: bool = False  # `internet.ipv6`: dual stack, every host and site has an IPv6 address too
    expect: dict[str, dict[str, Verdict]] = field(default_factory=dict)  # vantage -> url -> pinned verdict
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

    def with_targets(self, targets: Sequence[Target]) -> Scenario:
        """The same scenario measuring ``targets`` instead of its own (`harness run --targets`):
        pins (``expect``, ``expect_ooni``) for URLs that are no longer targets are dropped; the
        rules, and the line numbers the oracle's reasons name, stay as they are. The targets are
        held to the loader's rules: at least one, each on a site of the scenario, no URL twice."""
        if not targets:
            raise ScenarioError("no targets to measure", file=self.source)
        names = {s.name for s in self.sites}
        seen: dict[str, str] = {}
        for t in targets:
            if t.host not in names:
                raise ScenarioError(f"target {t.url}: {t.host!r} is not a site of this scenario", file=self.source)
            if t.canonical in seen:
                raise ScenarioError(f"duplicate target {t.url} (the same URL as {seen[t.canonical]})",
                                    file=self.source)
            seen[t.canonical] = t.url
        urls = {t.url for t in targets}

        def pinned(pins: Mapping[str, Mapping[str, _Pin]]) -> dict[str, dict[str, _Pin]]:
            kept = {v: {u: p for u, p in by_url.items() if u in urls} for v, by_url in pins.items()}
            return {v: by_url for v, by_url in kept.items() if by_url}

        return replace(self, targets=tuple(targets), expect=pinned(self.expect), expect_ooni=pinned(self.expect_ooni))

    def site(self, name: str) -> Site | None:
        return self._sites_by_name.get(name)

    def all_addresses(self, first: Mapping[str, IPv4Address]) -> SiteAddresses:
        """``first`` (site -> its address, as allocated or stored in run.json) with every address of
        the sites served from several (their `addresses`: always given in the scenario)."""
        if isinstance(first, SiteAddresses):
            return first
        extra = {}
        for s in self.sites:
            canonical = self.canonical_site(s.name) or s
            if len(canonical.addresses) > 1:
                extra[s.name] = canonical.addresses
        out = SiteAddresses(first, extra)
        if self.ipv6:
            for s in self.sites:
                canonical = self.canonical_site(s.name) or s
                out.v6[s.name] = canonical.addresses6 or tuple(v6_of(a) for a in out.all(s.name))
        return out

    def cname_chain(self, name: str) -> tuple[str, ...]:
        """``name``, then every CNAME target after it, to the site that has an address (the loader
        refuses loops and CNAMEs to names that are no site). A name without CNAME: itself."""
        chain = [name]
        while (site := self.site(chain[-1])) is not None and site.records.cname is not None:
            chain.append(site.records.cname)
        return tuple(chain)

    def canonical_site(self, name: str) -> Site | None:
        """The site whose address and origin answer for ``name``: the end of its CNAME chain."""
        return self.site(self.cname_chain(name)[-1])

    def site_addresses(self) -> SiteAddresses:
        """Every site's address: its own (given or allocated from the plan), or, for an alias, its
        canonical site's: where the name resolves, and so where a client connects."""
        own = allocate_sites({s.name: s.address for s in self.sites if s.records.cname is None},
                             reserved=(a for s in self.sites for a in s.addresses[1:]))
        # Sites served from several addresses (a CDN) keep all of them: SiteAddresses.all.
        return self.all_addresses({s.name: own[self.cname_chain(s.name)[-1]] for s in self.sites})

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
