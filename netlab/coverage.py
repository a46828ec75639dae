"""Partial enforcement: a rule with ``coverage: 0.3`` hits about 30% of what it matches.

The units are the scenario's sites: for a rule that matches by name (domain, exact, sni,
http_host, dns_query) the matching site names, for one that matches by address (site, ip, cidr,
or only port/proto/keyword) the matching site addresses. Which units are hit is decided by a hash
of the scenario's ``seed``, the ISP, the rule's line and the unit, so every run is identical and a
different seed picks a different subset. The rule is replaced, in place, by one plain rule per
chosen unit: the compiler and the oracle never see ``coverage`` at all.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from ipaddress import IPv4Address
from typing import Any

from netlab.addressing import addresses_of
from netlab.dnsname import name_matches
from netlab.model import Isp, Match, Rule, Scenario

NAME_KEYS = ("domain", "exact", "sni", "http_host", "dns_query")


def chosen(seed: int, isp: str, rule: Rule, unit: str) -> bool:
    digest = hashlib.sha256(f"{seed}|{isp}|{rule.line}|{unit}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < (rule.coverage or 1.0)


def _address_matches(match: Match, addr: IPv4Address, sites: dict[str, IPv4Address]) -> bool:
    if match.site is not None and addr not in addresses_of(sites, match.site):
        return False
    if match.ip is not None and match.ip != addr:
        return False
    return not (match.cidr is not None and addr not in match.cidr)


def expand_rule(rule: Rule, isp: str, scenario: Scenario, sites: dict[str, IPv4Address], resolver: bool
                ) -> list[Rule]:
    if rule.coverage is None or rule.coverage >= 1:
        return [replace(rule, coverage=None)]
    m = rule.match
    key = next((k for k in NAME_KEYS if getattr(m, k) is not None), None)
    out: list[Rule] = []
    if key is not None:
        pattern = getattr(m, key)
        names = [s.name for s in scenario.sites if name_matches(s.name, pattern, key == "exact")]
        units = len(names)
        for name in names:
            if chosen(scenario.seed, isp, rule, name):
                if resolver and rule.action not in ("servfail", "refused"):
                    new = replace(m, domain=None, exact=name)
                else:
                    narrowed: dict[str, Any] = {key: name}  # the same name key, one name
                    new = replace(m, **narrowed)
                out.append(replace(rule, match=new, coverage=None))
    else:
        addrs = sorted({a for n in sites for a in addresses_of(sites, n) if _address_matches(m, a, sites)})
        units = len(addrs)
        for addr in addrs:
            if chosen(scenario.seed, isp, rule, str(addr)):
                out.append(replace(rule, match=replace(m, site=None, cidr=None, ip=addr), coverage=None))
    note = f"line {rule.line}: coverage {rule.coverage:g} hits {len(out)} of {units}"
    return [replace(r, covered_from=note) for r in out]


def apply_coverage(scenario: Scenario) -> Scenario:
    """The scenario with every `coverage` rule expanded into the plain rules it amounts to."""
    isps = scenario.isps
    if not any(r.coverage is not None for i in isps for r in (*i.resolver_rules, *i.firewall_rules, *i.dpi_rules)):
        return scenario
    sites = scenario.site_addresses()

    def expand(isp: Isp, rules: tuple[Rule, ...], resolver: bool = False) -> tuple[Rule, ...]:
        return tuple(x for r in rules for x in expand_rule(r, isp.name, scenario, sites, resolver))

    new = tuple(replace(i, resolver_rules=expand(i, i.resolver_rules, resolver=True),
                        firewall_rules=expand(i, i.firewall_rules), dpi_rules=expand(i, i.dpi_rules))
                for i in isps)
    return replace(scenario, isps=new)
