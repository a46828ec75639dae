"""Ground truth: the verdict every (vantage, target) must get, derived from the rules alone.

The walk follows the data path of scenario.md: the ISP resolver, then on-path DNS (the DPI's
dns_query rules, which only the direct query to the public resolver crosses), then the firewall,
then the DPI, then shaping. The first stage that interferes decides the verdict.

What a probe type can see bounds the walk: its ``Capabilities`` (netlab.capabilities) say which
stages it reaches, whether it asks the public resolver, follows redirects and times downloads.
Interference at a stage the probe never reaches leaves it with ``ok`` (the default is the web
probe, which reaches everything).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address

from netlab.addons import installed_servers, serves
from netlab.addressing import PUBLIC_RESOLVER, is_lab_bogon
from netlab.capabilities import WEB, Capabilities
from netlab.compile.dns import effective_resolver_rules
from netlab.model import CONTROL, DNS_STATES, Isp, Match, Rule, Scenario, Site, proxy_address
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


def name_matches(name: str, pattern: str, exact: bool = False) -> bool:
    return name == pattern or (not exact and name.endswith("." + pattern))


def flow_matches(match: Match, addr: IPv4Address, port: int, proto: str,
                 site_addresses: dict[str, IPv4Address]) -> bool:
    """The address keys of a match (site, ip, cidr, port, proto) against one flow."""
    if match.site is not None and site_addresses.get(match.site) != addr:
        return False
    if match.ip is not None and match.ip != addr:
        return False
    if match.cidr is not None and addr not in match.cidr:
        return False
    if match.port is not None and match.port != port:
        return False
    return not (match.proto is not None and match.proto != proto)


def first_rule(rules: tuple[Rule, ...] | list[Rule], pred: Callable[[Rule], bool]) -> Rule | None:
    return next((r for r in rules if pred(r)), None)


def resolver_rule_matches(rule: Rule, host: str) -> bool:
    m = rule.match
    return name_matches(host, m.exact, exact=True) if m.exact else name_matches(host, m.domain or "")


def dpi_rule_matches(rule: Rule, target: Target, addr: IPv4Address,
                     site_addresses: dict[str, IPv4Address]) -> bool:
    """Does a DPI rule fire on the TCP flow that fetches ``target`` from ``addr``?"""
    m = rule.match
    if m.dns_query is not None:
        return False
    if not flow_matches(m, addr, target.port, "tcp", site_addresses):
        return False
    if m.sni is not None and not (target.is_https and name_matches(target.host, m.sni)):
        return False
    if m.http_host is not None and not (not target.is_https and name_matches(target.host, m.http_host)):
        return False
    if m.keyword is not None:
        # The middlebox sees the SNI in a ClientHello, or the request line and Host header.
        visible = target.host if target.is_https else f"{target.path} {target.host}"
        if m.keyword.encode() not in visible.encode():
            return False
    return True


MAX_REDIRECTS = 10  # the web probe's limit, OONI's too (probes.redirects)
DEFAULT_TOTAL_TIMEOUT = 60.0  # the probes' default cap on one HTTP exchange (ProbeContext.http_total_timeout)


def control_fault(scenario: Scenario, target: Target, hops: int = 0, seen: frozenset[str] = frozenset(),
                  caps: Capabilities = WEB) -> str | None:
    """Why the site itself fails the uncensored control's fetch of ``target`` (following its
    redirects), or None when the control gets a page. Misbehaviour limited by ``only_for`` never
    reaches the control; misbehaviour at a stage the probe does not reach is not seen."""
    site = scenario.site(target.host)
    if site is None:
        return f"{target.host} is no site of the lab"
    tcp = caps.reaches("tcp", target)
    if tcp and not _served(scenario, site, target.port):
        return f"nothing listens on port {target.port} of {target.host}"
    if site.only_for or (not site.misbehaves and site.dns_answer is None):
        return None
    if site.state in DNS_STATES or (site.state != "up" and tcp):
        return f"{site.name} is {site.state}"
    if site.dns_answer is not None and tcp:
        return f"{site.name}'s authority answers {site.dns_answer}"
    if caps.reaches("tls", target) and site.cert != "valid":
        return f"{site.name} presents a certificate that is {site.cert}"
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


def _served(scenario: Scenario, site: Site, port: int) -> bool:
    """Does anything answer on ``port`` of ``site``: the origin (HTTP, and HTTPS unless the site has
    none), or a probe package's server the scenario asks for (netlab.addons)?"""
    if serves(scenario, site.name, port, installed_servers()):
        return True
    return port == 80 or (port == 443 and site.https)


def expect_isp(scenario: Scenario, isp: Isp, target: Target,
               site_addresses: dict[str, IPv4Address], caps: Capabilities = WEB) -> Expectation:
    return _expect_hop(scenario, isp, target, site_addresses, depth=0, hops=0, caps=caps)


def _expect_hop(scenario: Scenario, isp: Isp, target: Target, site_addresses: dict[str, IPv4Address], *,
                depth: int, hops: int, caps: Capabilities = WEB) -> Expectation:
    """One hop of the fetch from ``isp``'s client: the ISP's censorship first (data-path order), then
    the site's own behaviour, then the redirect it sends the client on; each as far as ``caps``
    lets the probe see."""
    host = target.host
    addr = site_addresses[host]
    ctrl = control_fault(scenario, target, hops, caps=caps) if depth == 0 else None
    via_proxy = False

    censored: Expectation | None = None
    rule = first_rule(effective_resolver_rules(isp), lambda r: resolver_rule_matches(r, host))
    if rule is not None:
        if rule.action in RESOLVER_VERDICTS:
            censored = Expectation(RESOLVER_VERDICTS[rule.action], f"resolver rule line {rule.line}", rule=rule)
        elif rule.action == "proxy":
            # The ISP's transparent proxy relays the fetch to the site: only its address differs.
            addr, via_proxy = proxy_address(scenario.isps.index(isp) + 1), True
        else:
            assert rule.address is not None
            if rule.address != addr or _dns_broken(scenario, host):
                verdict = Verdict.DNS_BOGON if is_lab_bogon(rule.address) else Verdict.DNS_MISMATCH
                # The vantage's answer departs from the control's even when the site is down.
                return Expectation(verdict, f"resolver rule line {rule.line}", rule=rule)

    if censored is None and scenario.public_resolver and depth == 0 and caps.public_dns:
        # The direct query to the public resolver crosses the router: firewall and DPI see it.
        dns_rule = first_rule(isp.dpi_rules, lambda r: r.match.dns_query is not None
                              and name_matches(host, r.match.dns_query)
                              and flow_matches(r.match, PUBLIC_RESOLVER, 53, "udp", site_addresses))
        fw = first_rule(isp.firewall_rules, lambda r: flow_matches(r.match, PUBLIC_RESOLVER, 53, "udp",
                                                                  site_addresses))
        if fw is not None:
            censored = Expectation(Verdict.DNS_TIMEOUT, f"firewall rule line {fw.line} (public resolver)", rule=fw)
        elif dns_rule is not None:
            verdict = Verdict.DNS_INJECTED if dns_rule.action == "inject" else Verdict.DNS_TIMEOUT
            censored = Expectation(verdict, f"dpi rule line {dns_rule.line}", rule=dns_rule)

    if censored is None and not _dns_broken(scenario, host) and caps.reaches("tcp", target):
        fw = first_rule(isp.firewall_rules, lambda r: flow_matches(r.match, addr, target.port, "tcp",
                                                                  site_addresses))
        if fw is not None:
            censored = Expectation(FIREWALL_VERDICTS[fw.action], f"firewall rule line {fw.line}", rule=fw)
        elif caps.sends_data(target):
            # The middlebox acts on the first data packet (ClientHello, request): a probe that only
            # connects never shows it anything.
            dpi = first_rule(isp.dpi_rules, lambda r: dpi_rule_matches(r, target, addr, site_addresses))
            if dpi is not None:
                censored = Expectation(_dpi_verdict(dpi, target), f"dpi rule line {dpi.line}", rule=dpi)

    if ctrl is not None:
        # The site fails the control too: whatever the vantage sees, the site is at fault.
        return Expectation(Verdict.SITE_DOWN, f"the site itself fails: {ctrl}",
                           rule=censored.rule if censored else None)
    if censored is not None:
        if via_proxy and censored.verdict != Verdict.HTTP_BLOCKPAGE:
            # Seen from the vantage: another address than the control's, then a failure.
            return Expectation(Verdict.DNS_MISMATCH, f"resolver rule line {rule.line} (proxy), then {censored.reason}",
                               rule=censored.rule)
        return censored

    site = scenario.site(host)
    assert site is not None
    if site.only_for and site.misbehaves_for(isp.name) and not via_proxy:
        return _server_side(scenario, isp, site, target, site_addresses, depth, hops, caps)
    if site.redirect is not None and not site.only_for and site.redirect.to is not None and caps.redirects:
        nxt = Target.parse(site.redirect.to)
        return _expect_hop(scenario, isp, nxt, site_addresses, depth=depth + 1, hops=hops + site.redirect.hops,
                           caps=caps)
    if via_proxy:
        if not caps.fetches_page:
            # The proxy's address differs from the control's, and no page shows that it is the same site.
            return Expectation(Verdict.DNS_MISMATCH, f"resolver rule line {rule.line} (proxy); this probe "
                               "does not fetch the page", rule=rule)
        return Expectation(Verdict.OK, "the ISP's transparent proxy relays the site unchanged")
    if not caps.fetches_page:
        return NO_RULE
    return _shaped(scenario, isp, site, target, addr, site_addresses, caps)


def _dns_broken(scenario: Scenario, host: str) -> bool:
    """The site's own DNS gives no usable address (then no flow to it exists to censor)."""
    site = scenario.site(host)
    return site is not None and (site.state in DNS_STATES or site.dns_answer is not None)


def _server_side(scenario: Scenario, isp: Isp, site: Site, target: Target, site_addresses: dict[str, IPv4Address],
                 depth: int, hops: int, caps: Capabilities = WEB) -> Expectation:
    """The site treats this ISP's clients differently (``only_for``): what the comparison with the
    control shows. The network is not at fault, yet the measurement cannot tell it apart."""
    why = f"site {site.name} (line {site.line}) misbehaves only for {', '.join(site.only_for)}"
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


def _shaped(scenario: Scenario, isp: Isp, site: Site, target: Target, addr: IPv4Address,
            site_addresses: dict[str, IPv4Address], caps: Capabilities = WEB) -> Expectation:
    """The final page through this ISP's shaping: slow (throttled), or too slow to finish at all."""
    size = len(site.body) if site.body is not None else site.body_size
    for shaping in isp.shaping:
        if flow_matches(shaping.match, addr, target.port, "tcp", site_addresses):
            if shaping.rate_bps:
                rule = Rule(match=shaping.match, action="shape", line=shaping.line)
                seconds = size * 8 / shaping.rate_bps
                cap = float(scenario.probe.get("http_total_timeout", DEFAULT_TOTAL_TIMEOUT))  # type: ignore[arg-type]
                if seconds > cap:
                    return Expectation(Verdict.HTTP_TIMEOUT, f"shaping rule line {shaping.line}: the page "
                                       f"needs {seconds:.0f}s, the probe gives up after {cap:g}s", rule=rule)
                if seconds > THROTTLE_SECONDS and caps.throughput:
                    return Expectation(Verdict.THROTTLED, f"shaping rule line {shaping.line}", rule=rule)
            break
    return NO_RULE


def _dpi_verdict(rule: Rule, target: Target) -> Verdict:
    if rule.action == "blockpage":
        # An HTTP answer injected into a TLS stream breaks the handshake.
        return Verdict.HTTP_BLOCKPAGE if not target.is_https else Verdict.TLS_ALERT
    if rule.action == "reset":
        return Verdict.TLS_RESET if target.is_https else Verdict.HTTP_RESET
    return Verdict.TLS_TIMEOUT if target.is_https else Verdict.HTTP_TIMEOUT


def has_residual(isp: Isp) -> bool:
    return any(r.residual for r in isp.dpi_rules)


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


def _residual_verdict(rule: Rule, target: Target) -> Verdict:
    """After a hit, the middlebox applies the rule's action to the first data packet of every new
    flow between the same client and server, whatever it carries."""
    return _dpi_verdict(rule, target)


def expected_verdicts(scenario: Scenario, site_addresses: dict[str, IPv4Address], caps: Capabilities = WEB
                      ) -> dict[tuple[str, str], Expectation]:
    """Every (vantage, url) of the campaign that a probe with ``caps`` measures (default: the web
    probe's), as that probe sees it, with the scenario's `expect` pins applied (each one keeps the
    derived expectation and its rule: see ``pin``). Pins are written for the web probe: a pin
    applies to another probe type only where that probe reaches the pinned verdict's stage."""
    out: dict[tuple[str, str], Expectation] = {}
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
            connects = exp.verdict.technique not in ("dns",) and not exp.verdict.value.startswith("tcp.")
            # A residual block acts on the first data packet of a later flow: only probes that send one see it.
            if connects and addr in blocked and caps.sends_data(target):
                rule = blocked[addr]
                exp = Expectation(_residual_verdict(rule, target), f"residual block of dpi rule line {rule.line}",
                                  rule=rule)
            elif exp.rule is not None and exp.rule.residual:
                blocked[addr] = exp.rule
            out[(isp.name, target.url)] = exp
    for vantage, pins in scenario.expect.items():
        for url, verdict in pins.items():
            if caps == WEB or ((vantage, url) in out and pin_visible(Verdict(verdict), Target.parse(url), caps)):
                out[(vantage, url)] = pin(out.get((vantage, url)), Verdict(verdict))
    return out


def pin_visible(verdict: Verdict, target: Target, caps: Capabilities) -> bool:
    """Does a pin (written for the web probe, which reaches every stage) bind a probe with ``caps``?
    Where the web probe fails at a stage, any probe reaching that stage fails there too, on the same
    flow; beyond its reach the rules' derivation for that probe stands."""
    if verdict == Verdict.THROTTLED:
        return caps.throughput
    if verdict == Verdict.DNS_INJECTED:
        return caps.public_dns
    if verdict.technique in ("dns", "tcp", "tls", "http"):
        return caps.reaches(verdict.technique, target)
    # ok, site_down, ...: the web probe's view of the whole fetch; only a probe that fetches the page shares it.
    return caps.fetches_page
