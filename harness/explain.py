"""What a scenario compiles to, for people: the oracle's expected verdicts and, per ISP, the
dataplane the lab would run (RPZ zone, Unbound policy zones, nftables, DPI, tc) with the
compiler's notes. Pure: it compiles, and never brings anything up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial
from ipaddress import IPv4Address
from typing import Any

from netlab.addressing import PUBLIC_RESOLVER, both_families
from netlab.compile import compile_lab, router_host
from netlab.compile.dns import ResolverPolicy, effective_resolver_rules, resolver_policy
from netlab.dnsname import name_matches
from netlab.hostcaps import HostCapabilities
from netlab.impact import intended
from netlab.model import CONTROL, Isp, Rule, Scenario, ShapingRule
from netlab.oracle import (
    Expectation,
    dpi_rule_matches,
    expected_verdicts,
    first_rule,
    flow_matches,
    intercepts,
    on_recursion_path,
    resolver_rule_matches,
    shaping_matches,
)
from netlab.plan import LabPlan
from netlab.services.configs import DpiConfig, InterceptConfig
from netlab.target import Target
from netlab.verdict import Verdict


@dataclass
class IspDataplane:
    name: str
    rpz_zone: str = ""
    unbound_policy: str = ""  # local-zone / stub-zone lines besides the RPZ
    nftables: str = ""
    dpi_iptables: str = ""
    dpi_config: DpiConfig | None = None  # dpi.json, as the middlebox reads it
    intercept_nft: str = ""  # the nat rules bringing flows to the TLS interceptor (DPI `intercept`)
    intercept_config: InterceptConfig | None = None  # intercept.json, as the interceptor reads it
    shaper_iptables: str = ""
    tc: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "dpi_config": self.dpi_config.to_dict() if self.dpi_config else None,
                "intercept_config": json.loads(self.intercept_config.to_json()) if self.intercept_config else None}


@dataclass
class Explanation:
    scenario: Scenario
    vantages: list[str]
    expected: list[dict[str, Any]]  # one per (vantage, url): verdict, reason, rule, pinned
    isps: list[IspDataplane]
    notes: list[str]  # compiler notes that belong to no single ISP
    site_addresses: dict[str, str]
    # Pins of `expect` whose verdict is not the rules' one: vantage, url, pinned, derived, reason.
    pin_conflicts: list[dict[str, Any]] = field(default_factory=list)
    # Rules that decide no verdict of this scenario: isp, stage, line, rule, why, shadowed_by.
    idle_rules: list[dict[str, Any]] = field(default_factory=list)

    def cell(self, vantage: str, url: str) -> dict[str, Any] | None:
        return next((e for e in self.expected if e["vantage"] == vantage and e["url"] == url), None)

    def to_json(self) -> dict[str, Any]:
        return {"scenario": self.scenario.name, "source": self.scenario.source, "vantages": self.vantages,
                "targets": [t.url for t in self.scenario.targets], "site_addresses": self.site_addresses,
                "expected": self.expected, "isps": [i.to_json() for i in self.isps], "notes": self.notes,
                "pin_conflicts": self.pin_conflicts, "idle_rules": self.idle_rules}


def unbound_policy(policy: ResolverPolicy) -> str:
    """The policy part of an ISP's unbound.conf, as the compiler wrote it there: refuse local zones
    and the stub zones that give SERVFAIL (not the root stub every resolver of the lab has)."""
    return "\n".join(policy.local_zones() + policy.stub_zones())


def explain(scenario: Scenario, lab: str | None = None, host: HostCapabilities | None = None) -> Explanation:
    """Pure, as compile_lab: ``host`` is what the machine can do (netlab.backends.kernel.probe_host())."""
    plan = compile_lab(scenario, lab, host=host)
    expectations = expected_verdicts(scenario, plan.site_addresses)
    sites = scenario.all_addresses(plan.site_addresses)
    vantages = scenario.vantages
    rows = []
    for target in scenario.targets:
        for v in vantages:
            e = expectations.get((v, target.url))
            if e is None:
                continue
            rows.append({"vantage": v, "url": target.url, "verdict": e.verdict.value, "reason": e.reason,
                         "rule": e.rule.describe() if e.rule is not None else None, "pinned": e.pinned,
                         "derived": e.derived.verdict.value if e.derived is not None else None,
                         # Blocked, but the rule meant another site or service (netlab.impact).
                         "collateral": e.verdict.is_censorship and not intended(e.rule, target, scenario, sites)})
    isps = [_isp_dataplane(plan, scenario, isp) for isp in scenario.isps]
    prefixes = tuple(f"{i.name}: " for i in scenario.isps)
    general = [n for n in plan.notes if not n.startswith(prefixes)]
    return Explanation(scenario, vantages, rows, isps, general,
                       {k: str(v) for k, v in plan.site_addresses.items()},
                       pin_conflicts=pin_conflicts(scenario, expectations),
                       idle_rules=idle_rules(scenario, expectations, plan.site_addresses))


def pin_conflicts(scenario: Scenario, expectations: dict[tuple[str, str], Expectation]) -> list[dict[str, Any]]:
    """Pins whose verdict is not the one the rules give: the run is scored against the pin, and
    one of the two is wrong."""
    out = []
    for vantage, pins in scenario.expect.items():
        for url in pins:
            e = expectations.get((vantage, url))
            if e is not None and e.derived is not None and e.contradicts_rules:
                out.append({"vantage": vantage, "url": url, "pinned": e.verdict.value,
                            "derived": e.derived.verdict.value, "reason": e.derived.reason})
    return out


STAGES = ("resolver", "firewall", "dpi", "shaping")


def _stage_lists(isp: Isp) -> dict[str, tuple[Rule, ...] | tuple[ShapingRule, ...]]:
    return {"resolver": isp.resolver_rules, "firewall": isp.firewall_rules, "dpi": isp.dpi_rules,
            "shaping": isp.shaping}


def _matches(stage: str, rule: Rule | ShapingRule, target: Target, scenario: Scenario,
             sites: dict[str, IPv4Address], isp: Isp | None = None) -> bool:
    """Would ``rule`` act on the fetch of ``target`` if no earlier rule did? (The oracle's tests.)"""
    addr = sites[target.host]
    if stage == "resolver":
        assert isinstance(rule, Rule)
        return resolver_rule_matches(rule, target.host)
    if stage == "shaping":
        assert isinstance(rule, ShapingRule)
        if isp is None:
            return flow_matches(rule.match, addr, target.port, "tcp", sites)
        # dual stack: the middlebox and the shaper act on both families' addresses
        return any(shaping_matches(rule, isp, target, a, sites) for a in both_families(sites, target.host))
    assert isinstance(rule, Rule)
    on_dns_path = scenario.public_resolver and flow_matches(rule.match, PUBLIC_RESOLVER, 53, "udp", sites)
    if stage == "firewall":  # any address of the name (a CDN has several; dual stack: of both families)
        return on_dns_path or any(flow_matches(rule.match, a, target.port, "tcp", sites)
                                  for a in both_families(sites, target.host))
    if rule.match.dns_query is not None:
        # At placement border the ISP resolver's own recursion crosses the middlebox too.
        return ((on_dns_path and name_matches(target.host, rule.match.dns_query))
                or (isp is not None and on_recursion_path(rule, isp, target.host, sites)))
    if rule.action == "intercept":
        return any(intercepts(rule, target, a, sites) for a in both_families(sites, target.host))
    return any(dpi_rule_matches(rule, target, a, sites, isp.dpi_reassembly if isp is not None else None)
               for a in both_families(sites, target.host))


def idle_rules(scenario: Scenario, expectations: dict[tuple[str, str], Expectation],
               site_addresses: dict[str, IPv4Address]) -> list[dict[str, Any]]:
    """Rules that decide no (vantage, target) verdict of this scenario, each with why: it matches
    no target, or every target it matches is decided first by an earlier rule (named), or what it
    does changes no verdict (shaping that leaves pages fast enough, an answer that is the site's
    own address). A rule counts as deciding when any expectation -- pinned ones included, which
    keep their rule -- names it, also through residual blocking; a resolver `proxy` rule counts
    when it is the first match for a target (its effect is the path through the proxy)."""
    out: list[dict[str, Any]] = []
    for isp in scenario.isps:
        mine = {t.url: expectations[(isp.name, t.url)] for t in scenario.targets if (isp.name, t.url) in expectations}
        # The oracle hands out the rule objects of the ISP's lists (shaping: a Rule made per verdict).
        # A site that fails the control too is site_down whatever rule also hits it.
        used = {id(e.rule) for e in mine.values()
                if e.rule is not None and e.rule.action != "shape" and (e.derived or e).verdict != Verdict.SITE_DOWN}
        used_shaping = {e.rule.line for e in mine.values() if e.rule is not None and e.rule.action == "shape"}
        effective = effective_resolver_rules(isp)
        stage_of = {id(r): stage for stage, rules in _stage_lists(isp).items() for r in rules}
        # Rules a `coverage` rule expanded into share its line: the source rule is idle only if all are.
        groups: dict[tuple[str, int], list[Rule | ShapingRule]] = {}
        for stage, rules in _stage_lists(isp).items():
            for r in rules:
                groups.setdefault((stage, r.line), []).append(r)
        for (stage, line), group in groups.items():
            if stage == "shaping":
                if line in used_shaping:
                    continue
            elif any(id(r) in used for r in group):
                continue
            hits = [t for t in scenario.targets for r in group if _matches(stage, r, t, scenario, site_addresses, isp)]
            if stage == "resolver" and any(
                    isinstance(r, Rule) and r.action == "proxy"
                    and first_rule(effective, partial(resolver_rule_matches, name=t.host)) is r
                    for r in group for t in hits):
                continue
            shadows = _deciders(stage_of, [(t, mine[t.url]) for t in hits if t.url in mine],
                                isp, scenario, site_addresses, stage, line)
            out.append({"isp": isp.name, "stage": stage, "line": line, "rule": group[0].describe(),
                        "why": _idle_why(stage, group[0], hits, shadows), "shadowed_by": sorted(
                            k for k in shadows if k.split(" rule line ")[0] in STAGES)})
    return out


def _deciders(stage_of: dict[int, str], exps: list[tuple[Target, Expectation]], isp: Isp, scenario: Scenario,
              sites: dict[str, IPv4Address], stage: str, line: int) -> dict[str, int]:
    """What the targets an idle rule (``stage``, ``line``) matches get instead, and from which
    rule: "firewall rule line 12" -> how many targets."""
    out: dict[str, int] = {}
    for target, pinned in exps:
        e = pinned.derived or pinned  # what the rules give, whatever a pin says
        r = e.rule
        shaper = None
        if stage == "shaping":  # first match wins in shaping too
            shaper = first_rule(isp.shaping, partial(_matches, "shaping", target=target, scenario=scenario,
                                                     sites=sites, isp=isp))
        if e.verdict == Verdict.SITE_DOWN:
            name = "the site itself fails"
        elif r is not None:
            name = f"{stage_of.get(id(r), 'shaping')} rule line {r.line}"
        elif shaper is not None and shaper.line != line:
            name = f"shaping rule line {shaper.line}"
        else:
            name = f"{e.verdict.value} ({e.reason})"
        out[name] = out.get(name, 0) + 1
    return out


def _idle_why(stage: str, rule: Rule | ShapingRule, hits: list[Target], shadows: dict[str, int]) -> str:
    lead = "never decides a verdict of this scenario: "
    if not hits:
        return lead + "it matches no target"
    earlier = {k: n for k, n in shadows.items() if k.split(" rule line ")[0] in STAGES}
    if earlier and len(earlier) == len(shadows):
        names = " and ".join(earlier)
        which = "the target it matches is" if len(hits) == 1 else f"all {len(hits)} targets it matches are"
        return lead + f"{which} decided first by {names}"
    if stage == "shaping":
        return lead + f"it shapes {len(hits)} target(s), none enough to change the verdict by its rate (a page " \
                      "that loads within the throttling bound is ok; a delay or loss that lets handshakes through " \
                      "is not modelled, though what it does to TCP can change what a probe sees: pin those " \
                      "targets with expect)"
    if isinstance(rule, Rule) and rule.action == "answer":
        return lead + "its answer is the address the site has anyway"
    parts = ", ".join(f"{k} ({n})" for k, n in shadows.items())
    return lead + f"the targets it matches get: {parts}"


LAB_DIR_SHOWN = "$LAB_DIR"  # where the backend puts the lab's files (netns: /run/netlab/<lab>)


def _text(plan: LabPlan, path: str) -> str:
    content = plan.render(plan.files.get(path, ""), LAB_DIR_SHOWN)
    return content.decode(errors="replace") if isinstance(content, bytes) else content


def _isp_dataplane(plan: LabPlan, scenario: Scenario, isp_model: Isp) -> IspDataplane:
    isp = isp_model.name
    router = plan.hosts[router_host(isp)]
    dpi = _text(plan, f"{isp}/dpi.json")
    return IspDataplane(
        name=isp,
        rpz_zone=_text(plan, f"{isp}/rpz.zone"),
        unbound_policy=unbound_policy(resolver_policy(scenario, isp_model)),
        nftables=_text(plan, f"{isp}/firewall.nft"),
        dpi_iptables=_text(plan, f"{isp}/dpi.rules"),
        dpi_config=DpiConfig.from_json(dpi) if dpi else None,
        intercept_nft=_text(plan, f"{isp}/intercept.nft"),
        intercept_config=InterceptConfig.from_json(icp) if (icp := _text(plan, f"{isp}/intercept.json")) else None,
        shaper_iptables=_text(plan, f"{isp}/shaper.rules"),
        tc=[" ".join(argv) for argv in router.setup if argv and argv[0] == "tc"],  # no LAB_DIR in tc
        notes=[n for n in plan.notes if n.startswith(f"{isp}: ")],
    )


def verdict_grid(ex: Explanation) -> tuple[list[str], list[str], dict[tuple[str, str], dict[str, Any]]]:
    """(targets, vantage columns with control last, (url, vantage) -> expectation)."""
    urls = [t.url for t in ex.scenario.targets]
    cols = [v for v in ex.vantages if v != CONTROL] + [CONTROL]
    return urls, cols, {(e["url"], e["vantage"]): e for e in ex.expected}
