"""Ground truth: the verdict every (vantage, target) must get, derived from the rules alone.

The walk follows the data path of scenario.md: the ISP resolver, then on-path DNS (the DPI's
dns_query rules, which only the direct query to the public resolver crosses), then the firewall,
then the DPI, then shaping. The first stage that interferes decides the verdict.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address

from netlab.addressing import PUBLIC_RESOLVER, is_lab_bogon
from netlab.compile.dns import effective_resolver_rules
from netlab.model import CONTROL, Isp, Match, Rule, Scenario
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


def _resolver_rule_matches(rule: Rule, host: str) -> bool:
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


def expect_isp(scenario: Scenario, isp: Isp, target: Target,
               site_addresses: dict[str, IPv4Address]) -> Expectation:
    host = target.host
    addr = site_addresses[host]

    rule = first_rule(effective_resolver_rules(isp), lambda r: _resolver_rule_matches(r, host))
    if rule is not None:
        if rule.action in RESOLVER_VERDICTS:
            return Expectation(RESOLVER_VERDICTS[rule.action], f"resolver rule line {rule.line}", rule=rule)
        assert rule.address is not None
        if rule.address != addr:
            verdict = Verdict.DNS_BOGON if is_lab_bogon(rule.address) else Verdict.DNS_MISMATCH
            return Expectation(verdict, f"resolver rule line {rule.line}", rule=rule)

    if scenario.public_resolver:
        # The direct query to the public resolver crosses the router: firewall and DPI see it.
        dns_rule = first_rule(isp.dpi_rules, lambda r: r.match.dns_query is not None
                              and name_matches(host, r.match.dns_query)
                              and flow_matches(r.match, PUBLIC_RESOLVER, 53, "udp", site_addresses))
        fw = first_rule(isp.firewall_rules, lambda r: flow_matches(r.match, PUBLIC_RESOLVER, 53, "udp",
                                                                  site_addresses))
        if fw is not None:
            return Expectation(Verdict.DNS_TIMEOUT, f"firewall rule line {fw.line} (public resolver)", rule=fw)
        if dns_rule is not None:
            verdict = Verdict.DNS_INJECTED if dns_rule.action == "inject" else Verdict.DNS_TIMEOUT
            return Expectation(verdict, f"dpi rule line {dns_rule.line}", rule=dns_rule)

    fw = first_rule(isp.firewall_rules, lambda r: flow_matches(r.match, addr, target.port, "tcp",
                                                              site_addresses))
    if fw is not None:
        return Expectation(FIREWALL_VERDICTS[fw.action], f"firewall rule line {fw.line}", rule=fw)

    dpi = first_rule(isp.dpi_rules, lambda r: dpi_rule_matches(r, target, addr, site_addresses))
    if dpi is not None:
        return Expectation(_dpi_verdict(dpi, target), f"dpi rule line {dpi.line}", rule=dpi)

    site = scenario.site(host)
    for shaping in isp.shaping:
        if flow_matches(shaping.match, addr, target.port, "tcp", site_addresses):
            if shaping.rate_bps and site and site.body_size * 8 / shaping.rate_bps > THROTTLE_SECONDS:
                return Expectation(Verdict.THROTTLED, f"shaping rule line {shaping.line}",
                                   rule=Rule(match=shaping.match, action="shape", line=shaping.line))
            break
    return Expectation(Verdict.OK, "no rule applies")


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


def expected_verdicts(scenario: Scenario, site_addresses: dict[str, IPv4Address]
                      ) -> dict[tuple[str, str], Expectation]:
    """Every (vantage, url) of the campaign, with the scenario's `expect` pins applied."""
    out: dict[tuple[str, str], Expectation] = {}
    for target in scenario.targets:
        out[(CONTROL, target.url)] = Expectation(Verdict.OK, "control vantage")
    for isp in scenario.isps:
        blocked: dict[IPv4Address, Rule] = {}  # server address -> the residual rule that hit it
        for target in (t for wave in residual_waves(scenario.targets, site_addresses) for t in wave):
            exp = expect_isp(scenario, isp, target, site_addresses)
            addr = site_addresses[target.host]
            connects = exp.verdict.technique not in ("dns",) and not exp.verdict.value.startswith("tcp.")
            if connects and addr in blocked:
                rule = blocked[addr]
                exp = Expectation(_residual_verdict(rule, target), f"residual block of dpi rule line {rule.line}",
                                  rule=rule)
            elif exp.rule is not None and exp.rule.residual:
                blocked[addr] = exp.rule
            out[(isp.name, target.url)] = exp
    for vantage, pins in scenario.expect.items():
        for url, verdict in pins.items():
            out[(vantage, url)] = Expectation(Verdict(verdict), "pinned by the scenario's expect", pinned=True)
    return out
