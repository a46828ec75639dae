"""Ground truth: the verdict every (vantage, target) must get, derived from the rules alone.

The walk follows the data path of scenario.md: the ISP resolver, then on-path DNS (the DPI's
dns_query rules, which only the direct query to the public resolver crosses; at placement border
the ISP resolver's own recursion too, so its cache answers the forged address), then the
firewall, then the DPI, then shaping. The first stage that interferes decides the verdict.

What a probe type can see bounds the walk: its ``Capabilities`` (netlab.capabilities) say which
stages it reaches, whether it asks the public resolver, follows redirects and times downloads.
Interference at a stage the probe never reaches leaves it with ``ok`` (the default is the web
probe, which reaches everything).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from ipaddress import IPv4Address, IPv6Address
from typing import TypeVar

from netlab.addons import installed_servers, serves
from netlab.addressing import (
    AUTH_DNS,
    PUBLIC_RESOLVER,
    ROOT_DNS,
    TLD_DNS,
    SiteAddresses,
    addresses_of,
    addresses_v6,
    is_lab_bogon,
)
from netlab.capabilities import CONNECT_TIMEOUT, HTTP_TOTAL_TIMEOUT, MAX_REDIRECTS, QUIC_TIMEOUT, WEB, Capabilities
from netlab.compile.dns import deciding_resolver_rule
from netlab.compile.dns import resolver_rule_matches as resolver_rule_matches  # where explain finds it
from netlab.compile.router import INTERCEPTED_PORT
from netlab.compile.shaping import is_named
from netlab.dnsname import name_matches
from netlab.first_flight import within
from netlab.model import (
    CONTROL,
    DNS_STATES,
    Isp,
    Match,
    Reassembly,
    Rule,
    Scenario,
    ShapingRule,
    Site,
    proxy_address,
)
from netlab.target import Target
from netlab.verdict import Verdict

# A download slower than this is reported as throttled (the analysis uses the same bound).
THROTTLE_SECONDS = 0.5

RESOLVER_VERDICTS = {"nxdomain": Verdict.DNS_NXDOMAIN, "servfail": Verdict.DNS_SERVFAIL,
                     "refused": Verdict.DNS_REFUSED, "timeout": Verdict.DNS_TIMEOUT}
FIREWALL_VERDICTS = {"drop": Verdict.TCP_TIMEOUT, "reset": Verdict.TCP_RESET,
                     "reject": Verdict.TCP_UNREACHABLE}


@dataclass(frozen=True, slots=True)
class Expectation:
    verdict: Verdict
    reason: str  # which rule (or pin) decided it, for mismatch reports and `harness explain`
    pinned: bool = False  # set by the scenario's `expect`, not derived
    rule: Rule | None = None  # the rule that decided it (collateral damage asks what it meant to hit)
    # When pinned: what the rules alone give. A pin replaces the verdict only; the rule stays, so
    # collateral damage and effectiveness are what the rules say.
    derived: Expectation | None = None

    @property
    def contradicts_rules(self) -> bool:
        """A pin whose verdict is not the one the rules give."""
        return self.derived is not None and self.derived.verdict != self.verdict


def pin(derived: Expectation | None, verdict: Verdict) -> Expectation:
    """The scenario's `expect` pin of ``verdict`` over the oracle's ``derived`` expectation."""
    if derived is None:
        return Expectation(verdict, "pinned by the scenario's expect", pinned=True)
    if derived.verdict == verdict:
        why = f"pinned by the scenario's expect, as the rules give: {derived.reason}"
    else:
        why = f"pinned by the scenario's expect; the rules give {derived.verdict.value}: {derived.reason}"
    return Expectation(verdict, why, pinned=True, rule=derived.rule, derived=derived)


# Most (vantage, target) pairs of a large campaign share these: one object each, not 100,000.
NO_RULE = Expectation(Verdict.OK, "no rule applies")
CONTROL_OK = Expectation(Verdict.OK, "control vantage")


def flow_matches(match: Match, addr: IPv4Address | IPv6Address, port: int, proto: str,
                 site_addresses: dict[str, IPv4Address]) -> bool:
    """The address keys of a match (site, ip, cidr, port, proto, family) against one flow (to an
    address of either family: dual stack)."""
    if match.family is not None and match.family != addr.version:
        return False
    if match.site is not None and (match.site not in site_addresses
                                   or addr not in addresses_of(site_addresses, match.site)
                                   + addresses_v6(site_addresses, match.site)):
        return False
    if match.ip is not None and match.ip != addr:
        return False
    if match.cidr is not None and (match.cidr.version != addr.version or addr not in match.cidr):
        return False
    if match.port is not None and match.port != port:
        return False
    return not (match.proto is not None and match.proto != proto)


AnyRule = TypeVar("AnyRule", Rule, ShapingRule)


def first_rule(rules: Sequence[AnyRule], pred: Callable[[AnyRule], bool]) -> AnyRule | None:
    return next((r for r in rules if pred(r)), None)


def firewall_rule(isp: Isp, addr: IPv4Address | IPv6Address, port: int, proto: str,
                  site_addresses: dict[str, IPv4Address]) -> Rule | None:
    """The first of ``isp``'s firewall rules that acts on a flow to ``addr``:``port``/``proto``."""
    return first_rule(isp.firewall_rules, lambda r: flow_matches(r.match, addr, port, proto, site_addresses))


def intercepts(rule: Rule, target: Target, addr: IPv4Address | IPv6Address,
               site_addresses: dict[str, IPv4Address]) -> bool:
    """Does an ``intercept`` rule take the TLS flow that fetches ``target``: its SNI, its server
    addresses, and port 443 unless the rule names another (netlab.compile.intercept)?"""
    return (rule.action == "intercept" and target.is_https and target.port == (rule.match.port or INTERCEPTED_PORT)
            and dpi_rule_matches(rule, target, addr, site_addresses))


def dpi_rule_matches(rule: Rule, target: Target, addr: IPv4Address | IPv6Address,
                     site_addresses: dict[str, IPv4Address], reassembly: Reassembly | None = None) -> bool:
    """Does a DPI rule fire on the TCP flow that fetches ``target`` from ``addr``? With
    ``reassembly`` (the middlebox's ``dpi.reassembly``), only if what the rule matches lies within
    the part of the flow the middlebox reads (netlab.first_flight): else the client evades it."""
    m = rule.match
    if m.dns_query is not None or not rule.reads_tcp:
        return False
    if not flow_matches(m, addr, target.port, "tcp", site_addresses):
        return False
    if not names_match(m, target):
        return False
    if m.keyword is not None:
        # The middlebox sees the SNI in a ClientHello, or the request line and Host header.
        visible = target.host if target.is_https else f"{target.path} {target.host}"
        if m.keyword.encode() not in visible.encode():
            return False
    return reassembly is None or within(reassembly, rule, target)


QUIC_PORT = 443  # where the middlebox reads QUIC unless a rule names a port (netlab.compile.dpi)
# The quic probe's client (aioquic) sends its ClientHello whole in one 1200-byte datagram from an
# ephemeral source port (above 443), in QUIC v1 unless the scenario's probe settings say otherwise.
QUIC_DATAGRAM = 1200


def quic_rule_matches(rule: Rule, target: Target, addr: IPv4Address | IPv6Address,
                      site_addresses: dict[str, IPv4Address],
                      version: int = 1, split_hello: bool = False) -> bool:
    """Does a DPI rule fire on the QUIC Initial of the quic probe's fetch of ``target``?
    ``split_hello``: the client's ClientHello spans two datagrams (a post-quantum key share)."""
    m = rule.match
    if not rule.reads_quic or not target.is_https:
        return False
    if not flow_matches(m, addr, target.port, "udp", site_addresses) or target.port != (m.port or QUIC_PORT):
        return False
    k = rule.quic
    if version not in k.versions or (k.min_size and k.min_size > QUIC_DATAGRAM):
        return False
    if m.sni is None:
        return True  # a shape rule
    if split_hello and (k.datagrams == "first" or not k.reassemble):
        return False  # the SNI is not whole where this censor looks
    return name_matches(target.host, m.sni)


def _quic_verdict(rule: Rule) -> Expectation:
    """What a QUIC rule's hit does to the fetch that triggered it."""
    why = f"dpi rule line {rule.line} (QUIC)"
    if rule.quic.delay is not None and rule.quic.delay > 0:
        return Expectation(Verdict.OK, f"{why}: the trigger passes and blocking starts {rule.quic.delay:g}s "
                           "later, after the fetch", rule=rule)
    return Expectation(Verdict.QUIC_TIMEOUT, why, rule=rule)


def _quic_censored(scenario: Scenario, isp: Isp, target: Target, addr: IPv4Address | IPv6Address,
                   site_addresses: dict[str, IPv4Address]) -> Expectation | None:
    """The ISP's firewall on UDP, then the middlebox's QUIC rules, on the quic probe's flow (to every
    address of a CDN site: the probe keeps the first that works)."""
    timeout = _probe_seconds(scenario, "quic_timeout", QUIC_TIMEOUT)
    fw, addr = _connected(isp, _addresses(target, addr, site_addresses), target.port, site_addresses, "udp",
                          handshake_timeout=timeout)
    if fw is not None and fw.action == "shape":
        return Expectation(Verdict.QUIC_TIMEOUT, _lost_why(fw, timeout, "QUIC handshake"), rule=fw)
    if fw is not None:
        # reset answers with ICMP port unreachable, which the probe's connected UDP socket reports;
        # reject's host unreachable is a soft error to Linux UDP (not reported): as drop, no answer.
        verdict = Verdict.QUIC_RESET if fw.action == "reset" else Verdict.QUIC_TIMEOUT
        return Expectation(verdict, f"firewall rule line {fw.line} (UDP)", rule=fw)
    version = int(scenario.probe.get("quic_version", 1))  # type: ignore[call-overload]
    split = bool(scenario.probe.get("quic_split_hello", False))
    def quic_rule(a: IPv4Address | IPv6Address) -> Rule | None:
        return first_rule(isp.dpi_rules, lambda r: quic_rule_matches(r, target, a, site_addresses, version, split))

    dpi = quic_rule(addr)
    if dpi is not None and _past_middlebox(isp, target, addr, site_addresses, "udp", quic_rule) is not None:
        return None  # the probe keeps the address that works: one of the other family no rule reads
    return _quic_verdict(dpi) if dpi is not None else None




def control_fault(scenario: Scenario, target: Target, hops: int = 0, seen: frozenset[str] = frozenset(),
                  caps: Capabilities = WEB) -> str | None:
    """Why the site itself fails the uncensored control's fetch of ``target`` (following its
    redirects), or None when the control gets a page. Misbehaviour limited by ``only_for`` never
    reaches the control; misbehaviour at a stage the probe does not reach is not seen."""
    site = scenario.canonical_site(target.host)  # an alias (CNAME) behaves as the site it names
    if site is None:
        return f"{target.host} is no site of the lab"
    tcp = caps.reaches("tcp", target)
    if caps.quic and not (site.https and site.quic and _served(scenario, site, target.port)):
        return f"{target.host} serves no HTTP/3 on UDP port {target.port}"
    if tcp and not _served(scenario, site, target.port):
        return f"nothing listens on port {target.port} of {target.host}"
    if site.only_for or (not site.misbehaves and site.dns_answer is None):
        return _path_fault(scenario, site, target, hops, seen, caps)
    if site.state in DNS_STATES or (site.state != "up" and tcp):
        return f"{site.name} is {site.state}"
    if site.dns_answer is not None and tcp:
        return f"{site.name}'s authority answers {site.dns_answer}"
    if caps.reaches("tls", target) and site.cert != "valid":
        return f"{site.name} presents a certificate that is {site.cert}"
    if site.path(target.path) is not None:  # the site's own response and redirect are for other paths
        return _path_fault(scenario, site, target, hops, seen, caps)
    if site.status < 200 and caps.fetches_page:
        return f"{site.name} answers {site.status} and no final response"
    r = site.redirect
    if r is None or not caps.redirects:
        return None
    total = hops + r.hops
    if r.location is not None:
        return f"{site.name} redirects to a broken Location {r.location!r}"
    if total > MAX_REDIRECTS:
        return f"more than {MAX_REDIRECTS} redirects"
    if r.to is None:
        return None
    if target.url in seen:
        return "a redirect loop"
    return control_fault(scenario, Target.parse(r.to), total, seen | {target.url}, caps)


def _path_fault(scenario: Scenario, site: Site, target: Target, hops: int, seen: frozenset[str],
                caps: Capabilities) -> str | None:
    """Why the response ``site`` declares for ``target``'s path (`paths`, the same for every client)
    fails the control's fetch, or None (no such path: the site's own response)."""
    p = site.path(target.path)
    if p is None or not caps.fetches_page:
        return None
    if p.status < 200:
        return f"{site.name}{p.path} answers {p.status} and no final response"
    r = p.redirect
    if r is None or not caps.redirects:
        return None
    if r.location is not None:
        return f"{site.name}{p.path} redirects to a broken Location {r.location!r}"
    if hops + 1 > MAX_REDIRECTS:
        return f"more than {MAX_REDIRECTS} redirects"
    if target.url in seen or r.to is None:
        return "a redirect loop"
    return control_fault(scenario, Target.parse(r.to), hops + 1, seen | {target.url}, caps)


def _served(scenario: Scenario, site: Site, port: int) -> bool:
    """Does anything answer on ``port`` of ``site``: the origin (HTTP, and HTTPS unless the site has
    none), or a probe package's server the scenario asks for (netlab.addons)?"""
    if serves(scenario, site.name, port, installed_servers()):
        return True
    return port == 80 or (port == 443 and site.https)


def expect_isp(scenario: Scenario, isp: Isp, target: Target,
               site_addresses: dict[str, IPv4Address], caps: Capabilities = WEB) -> Expectation:
    addrs = scenario.all_addresses(site_addresses)
    exp = _expect_hop(scenario, isp, target, addrs, depth=0, hops=0, caps=caps)
    if exp.verdict == Verdict.OK and web_quic_step(scenario, caps, target):
        # The page loads over TCP; the web probe's QUIC step then tries HTTP/3 to the same address.
        quic = _quic_censored(scenario, isp, target, addrs[target.host], addrs)
        if quic is not None:
            if quic.verdict == Verdict.OK:  # the trigger of a late block: fine now, later fetches meet it
                return quic
            return Expectation(Verdict.QUIC_BLOCKED, f"the page loads over TCP, HTTP/3 fails: {quic.reason}",
                               rule=quic.rule)
    return exp


def web_quic_step(scenario: Scenario, caps: Capabilities, target: Target) -> bool:
    """Does the web probe's QUIC step (probe setting `web_quic`) run on ``target``, and would the
    control's succeed (a site with HTTP/3)?"""
    if caps != WEB or not scenario.probe.get("web_quic") or not target.is_https or target.port != QUIC_PORT:
        return False
    site = scenario.site(target.host)
    return site is not None and site.https and site.quic and site.state == "up" and _served(scenario, site, 443)


def _expect_hop(scenario: Scenario, isp: Isp, target: Target, site_addresses: dict[str, IPv4Address], *,
                depth: int, hops: int, caps: Capabilities = WEB) -> Expectation:
    """One hop of the fetch from ``isp``'s client: the ISP's censorship first (data-path order), then
    the site's own behaviour, then the redirect it sends the client on; each as far as ``caps``
    lets the probe see."""
    host = target.host
    addr: IPv4Address | IPv6Address = site_addresses[host]
    ctrl = control_fault(scenario, target, hops, caps=caps) if depth == 0 else None
    proxy: Rule | None = None  # the resolver rule sending the fetch to the ISP's transparent proxy
    leak: str | None = None  # dual stack: how the fetch got past a censor of the other family

    censored: Expectation | None = None
    rule = deciding_resolver_rule(scenario, isp, host)
    if rule is not None:
        if rule.action in RESOLVER_VERDICTS:
            censored = Expectation(RESOLVER_VERDICTS[rule.action], f"resolver rule line {rule.line}", rule=rule)
        elif rule.action == "proxy":
            # The ISP's transparent proxy relays the fetch to the site: only its address differs.
            addr, proxy = proxy_address(scenario.isps.index(isp) + 1), rule
        else:
            assert rule.address is not None
            if rule.address != addr or _dns_broken(scenario, host):
                verdict = Verdict.DNS_BOGON if is_lab_bogon(rule.address) else Verdict.DNS_MISMATCH
                if verdict == Verdict.DNS_MISMATCH and ctrl is None and _blockpage_server_shows(rule, target, caps):
                    # The ISP's blockpage server answers there, and the analysis knows its page.
                    return Expectation(Verdict.HTTP_BLOCKPAGE, f"resolver rule line {rule.line} (blockpage server "
                                       f"on {rule.address})", rule=rule)
                # The vantage's answer departs from the control's even when the site is down.
                return Expectation(verdict, f"resolver rule line {rule.line}", rule=rule)

    forged: Expectation | None = None  # the ISP resolver's answer, forged on its own recursion
    border = border_forged_answer(scenario, isp, host, site_addresses) if rule is None else None
    if border is not None and (border.address != addr or _dns_broken(scenario, host)):
        assert border.action == "inject" and border.address is not None, "the loader lets a border DNS rule inject only"
        forged = Expectation(Verdict.DNS_BOGON if is_lab_bogon(border.address) else Verdict.DNS_MISMATCH,
                             f"dpi rule line {border.line} (border: the ISP resolver caches the forged answer)",
                             rule=border)

    if censored is None and scenario.public_resolver and depth == 0 and caps.public_dns:
        # The direct query to the public resolver crosses the router: firewall and DPI see it.
        dns_rule = first_rule(isp.dpi_rules, lambda r: r.match.dns_query is not None
                              and name_matches(host, r.match.dns_query)
                              and flow_matches(r.match, PUBLIC_RESOLVER, 53, "udp", site_addresses))
        fw = firewall_rule(isp, PUBLIC_RESOLVER, 53, "udp", site_addresses)
        if fw is not None:
            censored = Expectation(Verdict.DNS_TIMEOUT, f"firewall rule line {fw.line} (public resolver)", rule=fw)
        elif dns_rule is not None:
            verdict = Verdict.DNS_INJECTED if dns_rule.action == "inject" else Verdict.DNS_TIMEOUT
            why = f"dpi rule line {dns_rule.line}"
            if forged is not None and forged.rule is dns_rule:
                why += " (and at the border: the ISP resolver caches the forged answer)"
            censored = Expectation(verdict, why, rule=dns_rule)

    if censored is None and forged is not None:
        # Only one answer reaches the client, from its own resolver: no race shows (a probe that asks
        # the public resolver too meets the injector there first, above).
        return forged

    if censored is None and not _dns_broken(scenario, host) and caps.quic:
        censored = _quic_censored(scenario, isp, target, addr, site_addresses)
        if censored is not None and censored.verdict == Verdict.OK:
            # The trigger of a late block: the fetch is fine; later ones meet the block (residual).
            return censored if ctrl is None else Expectation(Verdict.SITE_DOWN, f"the site itself fails: {ctrl}")
    elif censored is None and not _dns_broken(scenario, host) and caps.reaches("tcp", target):
        candidates = _addresses(target, addr, site_addresses)
        connect_timeout = _probe_seconds(scenario, "connect_timeout", CONNECT_TIMEOUT)
        fw, addr = _connected(isp, candidates, target.port, site_addresses, handshake_timeout=connect_timeout)
        if fw is None:  # dual stack: a rule that blocks the other family's addresses only
            blocker = next((r for a in candidates if a.version != addr.version
                            and (r := firewall_rule(isp, a, target.port, "tcp", site_addresses)) is not None), None)
            if blocker is not None:
                leak = (f"firewall rule line {blocker.line} blocks IPv{10 - addr.version}; the fetch goes over "
                        f"IPv{addr.version} ({addr})")
        if fw is not None and fw.action == "shape":
            censored = Expectation(Verdict.TCP_TIMEOUT, _lost_why(fw, connect_timeout, "TCP handshake"), rule=fw)
        elif fw is not None:
            censored = Expectation(FIREWALL_VERDICTS[fw.action], f"firewall rule line {fw.line}", rule=fw)
        elif caps.sends_data(target):
            # The middlebox acts on the first data packet (ClientHello, request): a probe that only
            # connects never shows it anything.
            # The router's TLS interceptor answers the ClientHello before the middlebox sees the
            # flow (netlab.compile.intercept); the rest of the DPI rules act on what it splices on.
            dpi = (first_rule(isp.dpi_rules, lambda r: intercepts(r, target, addr, site_addresses))
                   or first_rule(isp.dpi_rules, lambda r: r.action != "intercept"
                                 and dpi_rule_matches(r, target, addr, site_addresses, isp.dpi_reassembly)))
            if dpi is not None and dpi.action == "intercept" and isp.ca_installed:
                # The vantage trusts the censor's CA: the handshake succeeds, and what the probe gets
                # is the site, relayed (beyond the middlebox's reach), or the censor's page.
                page = dpi.blockpage
                if page is not None and caps.fetches_page:
                    censored = Expectation(Verdict.HTTP_BLOCKPAGE if page.fingerprinted else Verdict.HTTP_DIFF,
                                           f"dpi rule line {dpi.line} (intercept, CA installed: its page)", rule=dpi)
                dpi = None
            if dpi is not None and caps == WEB and target.is_https and (
                    other := _past_middlebox(isp, target, addr, site_addresses, "tcp", lambda a: first_rule(
                        isp.dpi_rules, lambda r: dpi_rule_matches(r, target, a, site_addresses,
                                                                  isp.dpi_reassembly)))) is not None:
                # The web probe shakes hands on every address it connected to and fetches through the
                # first that succeeds: one of the other family no rule acts on (a rule's family: 4|6).
                leak = (f"dpi rule line {dpi.line} acts on IPv{addr.version}; the IPv{other.version} handshake "
                        f"({other}) succeeds and fetches")
                dpi, addr = None, other
            if dpi is not None:
                censored = Expectation(_dpi_verdict(dpi, target), f"dpi rule line {dpi.line}", rule=dpi)
                warning = dpi.blockpage.location if dpi.blockpage is not None and not target.is_https else None
                if warning is not None and caps.redirects and hops < MAX_REDIRECTS:
                    # A blockpage that redirects to a warning page: the probe follows it.
                    nxt = _expect_hop(scenario, isp, Target.parse(warning), site_addresses, depth=depth + 1,
                                      hops=hops + 1, caps=caps)
                    if nxt.verdict not in (Verdict.OK, Verdict.SITE_DOWN):
                        censored = Expectation(nxt.verdict, f"dpi rule line {dpi.line} (a blockpage redirecting to "
                                               f"{warning}), then {nxt.reason}", rule=dpi)

    if ctrl is not None:
        # The site fails the control too: whatever the vantage sees, the site is at fault.
        return Expectation(Verdict.SITE_DOWN, f"the site itself fails: {ctrl}",
                           rule=censored.rule if censored else None)
    if censored is not None:
        if proxy is not None and censored.verdict != Verdict.HTTP_BLOCKPAGE:
            # Seen from the vantage: another address than the control's, then a failure.
            return Expectation(Verdict.DNS_MISMATCH, f"resolver rule line {proxy.line} (proxy), then {censored.reason}",
                               rule=censored.rule)
        return censored

    site = scenario.canonical_site(host)
    assert site is not None
    path = site.path(target.path)  # a path's own response is everyone's: no server-side blocking there
    if site.only_for and site.misbehaves_for(isp.name) and proxy is None and path is None:
        return _server_side(scenario, isp, site, target, site_addresses, depth, hops, caps)
    redirect = path.redirect if path is not None else None if site.only_for else site.redirect
    if redirect is not None and redirect.to is not None and caps.redirects:
        redirected = Target.parse(redirect.to)
        return _expect_hop(scenario, isp, redirected, site_addresses, depth=depth + 1, hops=hops + redirect.hops,
                           caps=caps)
    if proxy is not None:
        if caps.quic:  # the transparent proxy relays TCP only: nothing answers QUIC at its address
            return Expectation(Verdict.DNS_MISMATCH, f"resolver rule line {proxy.line} (proxy), which relays "
                               "TCP only", rule=proxy)
        if not caps.fetches_page:
            # The proxy's address differs from the control's, and no page shows that it is the same site.
            return Expectation(Verdict.DNS_MISMATCH, f"resolver rule line {proxy.line} (proxy); this probe "
                               "does not fetch the page", rule=proxy)
        return Expectation(Verdict.OK, "the ISP's transparent proxy relays the site unchanged")
    if not caps.fetches_page:
        return NO_RULE if leak is None else Expectation(Verdict.OK, leak)
    shaped = _shaped(scenario, isp, site, target, addr, site_addresses, caps)
    return Expectation(Verdict.OK, leak) if leak is not None and shaped is NO_RULE else shaped


# The servers an ISP's resolver recurses to (netlab.compile.dns): a middlebox at placement border
# sees those queries, as it sees every packet between the ISP and the internet.
NAME_SERVERS = (ROOT_DNS, TLD_DNS, AUTH_DNS)


def on_recursion_path(rule: Rule, isp: Isp, name: str, site_addresses: dict[str, IPv4Address]) -> bool:
    """Does DPI ``rule`` of ``isp`` act on its resolver's own queries for ``name`` (placement border)?"""
    m = rule.match
    return (isp.dpi_placement == "border" and m.dns_query is not None and name_matches(name, m.dns_query)
            and any(flow_matches(m, ns, 53, "udp", site_addresses) for ns in NAME_SERVERS))


def border_forged_answer(scenario: Scenario, isp: Isp, host: str, site_addresses: dict[str, IPv4Address]
                         ) -> Rule | None:
    """The DPI rule whose forged answer ``isp``'s resolver caches for ``host`` (placement border):
    the resolver asks for every name of the CNAME chain in turn, and the first forged answer is
    final. None at placement access, or when no rule answers."""
    for name in scenario.cname_chain(host):
        rule = first_rule(isp.dpi_rules, partial(on_recursion_path, isp=isp, name=name, site_addresses=site_addresses))
        if rule is not None:
            return rule
    return None


def _dns_broken(scenario: Scenario, host: str) -> bool:
    """The site's own DNS gives no usable address (then no flow to it exists to censor)."""
    site = scenario.canonical_site(host)
    return site is not None and (site.state in DNS_STATES or site.dns_answer is not None)


def _server_side(scenario: Scenario, isp: Isp, site: Site, target: Target, site_addresses: dict[str, IPv4Address],
                 depth: int, hops: int, caps: Capabilities = WEB) -> Expectation:
    """The site treats this ISP's clients differently (``only_for``): what the comparison with the
    control shows. The network is not at fault, yet the measurement cannot tell it apart."""
    why = f"site {site.name} (line {site.line}) misbehaves only for {', '.join(site.only_for)}"
    if site.state in ("refused", "timeout") and caps.quic:  # the lab internet filters UDP 443 alike
        return Expectation(Verdict.QUIC_RESET if site.state == "refused" else Verdict.QUIC_TIMEOUT, why)
    if site.state in ("refused", "timeout") and caps.reaches("tcp", target):
        return Expectation(Verdict.TCP_RESET if site.state == "refused" else Verdict.TCP_TIMEOUT, why)
    if not caps.fetches_page:
        return NO_RULE  # another page or another redirect: only a probe that fetches the page sees it
    r = site.redirect
    if r is not None and r.to is not None and hops + r.hops <= MAX_REDIRECTS and caps.redirects:
        nxt = _expect_hop(scenario, isp, Target.parse(r.to), site_addresses, depth=depth + 1, hops=hops + r.hops,
                          caps=caps)
        if nxt.verdict != Verdict.OK:
            return nxt
    # Another page (status, body), another final URL, or a redirect chain that breaks.
    return Expectation(Verdict.HTTP_DIFF, why)


def names_match(m: Match, target: Target) -> bool:
    """The name keys of a match against the fetch of ``target``: ``sni`` is read from an https
    fetch's ClientHello, ``http_host`` from a plain-HTTP request (no name key: true)."""
    if m.sni is not None and not (target.is_https and name_matches(target.host, m.sni)):
        return False
    return m.http_host is None or (not target.is_https and name_matches(target.host, m.http_host))


def shaping_matches(shaping: ShapingRule, isp: Isp, target: Target, addr: IPv4Address | IPv6Address,
                    site_addresses: dict[str, IPv4Address]) -> bool:
    """Does a shaping rule take the TCP flow that fetches ``target`` from ``addr``? A rule on names
    (sni, http_host) only where the middlebox reads the name (netlab.compile.shaping)."""
    m = shaping.match
    if not flow_matches(m, addr, target.port, "tcp", site_addresses):
        return False
    if not names_match(m, target):
        return False
    return not is_named(shaping) or within(isp.dpi_reassembly, shaping, target)


def _shaped(scenario: Scenario, isp: Isp, site: Site, target: Target, addr: IPv4Address | IPv6Address,
            site_addresses: dict[str, IPv4Address], caps: Capabilities = WEB) -> Expectation:
    """The final page through this ISP's shaping: slow (throttled), or too slow to finish at all."""
    body = p.body if (p := site.path(target.path)) is not None else site.body
    size = len(body) if body is not None else site.body_size
    for shaping in isp.shaping:
        if shaping_matches(shaping, isp, target, addr, site_addresses):
            if shaping.rate_bps:
                rule = Rule(match=shaping.match, action="shape", line=shaping.line)
                seconds = size * 8 / shaping.rate_bps
                cap = _probe_seconds(scenario, "http_total_timeout", HTTP_TOTAL_TIMEOUT)
                if seconds > cap:
                    return Expectation(Verdict.HTTP_TIMEOUT, f"shaping rule line {shaping.line}: the page "
                                       f"needs {seconds:.0f}s, the probe gives up after {cap:g}s", rule=rule)
                if seconds > THROTTLE_SECONDS and caps.throughput:
                    return Expectation(Verdict.THROTTLED, f"shaping rule line {shaping.line}", rule=rule)
            if shaping.delay_ms or shaping.loss:
                # One no handshake survives was decided at the handshake (_handshake_lost). Below that,
                # TCP's own timing decides (a page a little slower, one throttled, a timeout): the
                # oracle cannot tell, and says so.
                return Expectation(Verdict.OK, f"shaping rule line {shaping.line} adds a delay or loss that lets "
                                   "handshakes through, which the oracle does not model: pin this target's verdict "
                                   "with expect")
            break
    return NO_RULE


def _dpi_verdict(rule: Rule, target: Target) -> Verdict:
    if rule.action == "intercept":  # the censor CA's certificate, which the probe does not trust
        return Verdict.TLS_CERT_INVALID
    if rule.action == "blockpage":
        # An HTTP answer injected into a TLS stream breaks the handshake. A page the analysis has no
        # fingerprint for (no body, or a redirect it follows) is only another page than the control's.
        if target.is_https:
            return Verdict.TLS_ALERT
        return Verdict.HTTP_BLOCKPAGE if rule.blockpage is None or rule.blockpage.fingerprinted else Verdict.HTTP_DIFF
    if rule.action == "reset":
        return Verdict.TLS_RESET if target.is_https else Verdict.HTTP_RESET
    if rule.action == "close":  # the forged FIN: an end of stream before the server's answer
        return Verdict.TLS_EOF if target.is_https else Verdict.HTTP_EOF
    return Verdict.TLS_TIMEOUT if target.is_https else Verdict.HTTP_TIMEOUT


def _addresses(target: Target, addr: IPv4Address | IPv6Address, site_addresses: dict[str, IPv4Address]
               ) -> tuple[IPv4Address | IPv6Address, ...]:
    """The addresses a probe connects to for ``target``: every one of its site's (a CDN has several),
    IPv4 then IPv6 in a dual-stack lab (the A answer, then the AAAA one: probes.dns.lookup_both), of
    the families ``site_addresses`` keeps (family_view); or ``addr`` alone when the resolver answered
    another (the ISP's proxy: it forges an A record only)."""
    v4 = addresses_of(site_addresses, target.host)
    if addr not in v4:
        return (addr,)
    families = getattr(site_addresses, "families", (4, 6))
    return (v4 if 4 in families else ()) + (addresses_v6(site_addresses, target.host) if 6 in families else ())


def _past_middlebox(isp: Isp, target: Target, addr: IPv4Address | IPv6Address,
                    site_addresses: dict[str, IPv4Address], proto: str,
                    acts: Callable[[IPv4Address | IPv6Address], Rule | None]) -> IPv4Address | IPv6Address | None:
    """Dual stack: the first address of ``target`` of the other family than ``addr`` that the
    firewall lets ``proto`` reach and no DPI rule acts on (``acts``: the rule that fires on a flow to
    an address; a rule limited to ``family: 4`` leaks over IPv6). None without one."""
    other = 10 - addr.version
    if other not in getattr(site_addresses, "families", (4, 6)):
        return None
    pool = addresses_v6(site_addresses, target.host) if other == 6 else addresses_of(site_addresses, target.host)
    for a in pool:
        if firewall_rule(isp, a, target.port, proto, site_addresses) is None and acts(a) is None:
            return a
    return None


class FamilyView(SiteAddresses):
    """The site addresses as a client limited to one IP version sees them (curl -4 / -6)."""

    families: tuple[int, ...] = (4, 6)


def family_view(site_addresses: SiteAddresses, family: int) -> FamilyView:
    view = FamilyView(site_addresses, site_addresses.extra, site_addresses.v6)
    view.families = (family,)
    return view


def expect_family(scenario: Scenario, isp: Isp, target: Target, site_addresses: dict[str, IPv4Address],
                  family: int, caps: Capabilities = WEB) -> Expectation:
    """What a client of ``isp`` that connects over IP version ``family`` only (curl -4, curl -6)
    gets for ``target``: the firewall and middlebox on that family's addresses. The verdict of the
    campaign's probes, which measure both families, is expect_isp's: a fetch blocked on one family
    and open on the other loads the page (the web probe keeps the address that works)."""
    view = family_view(scenario.all_addresses(site_addresses), family)
    return _expect_hop(scenario, isp, target, view, depth=0, hops=0, caps=caps)


def _probe_seconds(scenario: Scenario, setting: str, default: float) -> float:
    """A timeout of the scenario's ``probe:`` settings (the probes' default when it sets none)."""
    return float(scenario.probe.get(setting, default))  # type: ignore[arg-type]


def _connected(isp: Isp, addrs: tuple[IPv4Address | IPv6Address, ...], port: int,
               site_addresses: dict[str, IPv4Address], proto: str = "tcp", handshake_timeout: float | None = None
               ) -> tuple[Rule | None, IPv4Address | IPv6Address]:
    """The firewall against a name's addresses (a CDN has several, in the zone's order, which the
    resolvers keep): the probe connects to each and keeps the first that answers, so the fetch is
    blocked only when every address is, and then the first address's rule is what it reports.
    With ``handshake_timeout``, a shaping rule no handshake survives blocks an address too
    (``_handshake_lost``). Returns (that rule or None, the address the fetch goes on with)."""
    rules = [firewall_rule(isp, a, port, proto, site_addresses)
             or (_handshake_lost(isp, a, port, proto, site_addresses, handshake_timeout) if handshake_timeout else None)
             for a in addrs]
    for a, r in zip(addrs, rules, strict=True):
        if r is None:
            return None, a
    return rules[0], addrs[0]


#: How much longer than the handshake's timeout a shaping delay must be for the oracle to call the
#: handshake lost: at about the timeout itself, the answer and the timer race in the probe's loop.
LOST_MARGIN = 0.5


def _handshake_lost(isp: Isp, addr: IPv4Address | IPv6Address, port: int, proto: str,
                    site_addresses: dict[str, IPv4Address], timeout: float) -> Rule | None:
    """The shaping rule that takes a flow's handshake (TCP, or QUIC over UDP), if no handshake
    survives it: it loses every packet, or delays the server's answers (netem delays the
    downstream) well past the handshake's timeout. As a Rule with action "shape", as a throttling
    rule's verdict carries. Other delays and losses are not modelled (``_shaped``): what they do
    depends on TCP's own timing."""
    for s in isp.shaping:
        if is_named(s):
            continue  # a rule on names shapes what follows the name, never the handshake
        if not flow_matches(s.match, addr, port, proto, site_addresses):
            continue
        if (s.loss or 0) >= 1 or (s.delay_ms or 0) >= (timeout + LOST_MARGIN) * 1000:
            return Rule(match=s.match, action="shape", line=s.line)
        return None  # the first rule that takes the flow is the one that shapes it
    return None


def _lost_why(rule: Rule, timeout: float, handshake: str) -> str:
    return (f"shaping rule line {rule.line}: no {handshake} survives it (it loses every packet, or delays the "
            f"server's answers well past the {timeout:g} s timeout)")


def _blockpage_server_shows(rule: Rule, target: Target, caps: Capabilities) -> bool:
    """Does a probe fetching ``target`` land on the page of the blockpage server a resolver rule
    sends it to (port 80 only), and recognise it (a fingerprint of its body)?"""
    bp = rule.blockpage
    return (bp is not None and bp.fingerprinted and not target.is_https and target.port == 80
            and caps.fetches_page)


def has_residual(isp: Isp) -> bool:
    return any(r.residual for r in isp.dpi_rules)


def late_block_delay(isp: Isp) -> float:
    """The longest start delay of the ISP's residual QUIC rules (`quic.delay`): a campaign waits
    this long between waves, so a block a trigger started is in force when the next wave comes."""
    return max((r.quic.delay or 0.0 for r in isp.dpi_rules if r.residual), default=0.0)


def residual_waves(targets: tuple[Target, ...] | list[Target], site_addresses: dict[str, IPv4Address]
                   ) -> list[list[Target]]:
    """The order a campaign measures targets in from a vantage with residual blocking: wave k holds
    the k-th target (in scenario order) of every server address, so targets sharing an address
    are measured one after another and the oracle knows which one triggers the block."""
    by_addr: dict[IPv4Address, list[Target]] = {}
    for t in targets:
        by_addr.setdefault(site_addresses[t.host], []).append(t)
    depth = max((len(v) for v in by_addr.values()), default=0)
    return [[g[k] for g in by_addr.values() if k < len(g)] for k in range(depth)]


def _residual_verdict(rule: Rule, target: Target, caps: Capabilities = WEB, web_quic: bool = False
                      ) -> Verdict | None:
    """After a hit, the middlebox applies the rule's action to the first data packet of every new
    flow between the same client and server, whatever it carries (to every datagram over UDP).
    A QUIC rule's block of one server port leaves TCP alone: only HTTP/3 meets it (None: nothing)."""
    if caps.quic:
        return Verdict.QUIC_TIMEOUT
    if rule.quic.residual_on == "addresses":
        return _dpi_verdict(rule, target)
    return Verdict.QUIC_BLOCKED if web_quic else None


def _leaves_residual(rule: Rule, caps: Capabilities) -> bool:
    """Does a hit of ``rule`` block the probe's later flows to the same server? A QUIC rule's block
    of one flow (`residual_on: flow`) never meets a later fetch, which has a new source port."""
    return bool(rule.residual) and not (caps.quic and rule.quic.residual_on == "flow")


def expected_verdicts(scenario: Scenario, site_addresses: dict[str, IPv4Address], caps: Capabilities = WEB
                      ) -> dict[tuple[str, str], Expectation]:
    """Every (vantage, url) of the campaign that a probe with ``caps`` measures (default: the web
    probe's), as that probe sees it, with the scenario's `expect` pins applied (each one keeps the
    derived expectation and its rule: see ``pin``). Pins are written for the web probe: a pin
    applies to another probe type only where that probe reaches the pinned verdict's stage."""
    out: dict[tuple[str, str], Expectation] = {}
    site_addresses = scenario.all_addresses(site_addresses)  # a CDN site's every address
    targets = [t for t in scenario.targets if caps.measures(t)]
    for target in targets:
        fault = control_fault(scenario, target, caps=caps)
        out[(CONTROL, target.url)] = (Expectation(Verdict.SITE_DOWN, f"the site itself fails: {fault}")
                                      if fault else CONTROL_OK)
    for isp in scenario.isps:
        blocked: dict[IPv4Address, Rule] = {}  # server address -> the residual rule that hit it
        for target in (t for wave in residual_waves(targets, site_addresses) for t in wave):
            exp = expect_isp(scenario, isp, target, site_addresses, caps)
            addr = site_addresses[target.host]
            connects = exp.verdict.technique not in ("dns", "tcp")
            # A residual block acts on the first data packet of a later flow: only probes that send one see it.
            residual = None
            if connects and addr in blocked and caps.sends_data(target):
                residual = _residual_verdict(blocked[addr], target, caps, web_quic_step(scenario, caps, target))
            if residual is not None:
                rule = blocked[addr]
                exp = Expectation(residual, f"residual block of dpi rule line {rule.line}", rule=rule)
            elif exp.rule is not None and _leaves_residual(exp.rule, caps):
                blocked[addr] = exp.rule
            out[(isp.name, target.url)] = exp
    for vantage, pins in scenario.expect.items():
        for url, verdict in pins.items():
            if caps == WEB or ((vantage, url) in out and pin_visible(verdict, Target.parse(url), caps)):
                out[(vantage, url)] = pin(out.get((vantage, url)), verdict)
    return out


def pin_visible(verdict: Verdict, target: Target, caps: Capabilities) -> bool:
    """Does a pin (written for the web probe, which reaches every stage) bind a probe with ``caps``?
    Where the web probe fails at a stage, any probe reaching that stage fails there too, on the same
    flow; beyond its reach the rules' derivation for that probe stands."""
    if verdict == Verdict.THROTTLED:
        return caps.throughput
    if verdict == Verdict.DNS_INJECTED:
        return caps.public_dns
    if caps.quic and verdict.technique != "dns":
        return False  # the web probe's TCP, TLS and HTTP are not the quic probe's flow
    if verdict.technique in ("dns", "tcp", "tls", "http"):
        return caps.reaches(verdict.technique, target)
    # ok, site_down, ...: the web probe's view of the whole fetch; only a probe that fetches the page shares it.
    return caps.fetches_page
