"""What enforcement did, beyond single verdicts: collateral damage and effectiveness per ISP.

A blocked target is *collateral* when the rule that blocked it did not mean to hit it: the rule's
``intent`` names another service than the site's, or, without an intent, the rule named no site
(a whole ``cidr``, a port, a keyword), named an address the site shares with others, or named
another site the target shares an address with (shared hosting: the filter hits every site there).
*Effectiveness* is, per ISP and per service, the fraction of the service's targets made
unreachable: the number a regulator would be asked about.

Both are computed from any verdict table, so the oracle's figures and the measured ones are
computed the same way and can be compared.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any, Protocol

from netlab.addressing import addresses_of
from netlab.model import Rule, Scenario
from netlab.target import Target

NAME_KEYS = ("domain", "exact", "sni", "http_host", "dns_query")


def intended(rule: Rule | None, target: Target, scenario: Scenario, sites: Mapping[str, IPv4Address]) -> bool:
    if rule is None:
        return True
    site = scenario.site(target.host)
    if rule.intent is not None:
        return site is not None and site.service == rule.intent
    if rule.match.site is not None:
        # A site rule filters the site's addresses: sites hosted there too are hit beside it.
        return site is not None and rule.match.site in (site.name, *scenario.cname_chain(site.name))
    if any(getattr(rule.match, k) is not None for k in NAME_KEYS):
        return True
    if rule.match.ip is not None:
        sharing = sum(1 for name in sites if rule.match.ip in addresses_of(sites, name))
        return sharing <= 1
    return False


class Call(Protocol):
    """What impact reads of an observed call: a netlab.verdict.Verdict, or OONI's pair as a label
    (harness.calls.OoniCall) when an analysis is scored at OONI's level."""

    @property
    def is_censorship(self) -> bool: ...


@dataclass
class IspImpact:
    isp: str
    blocked: list[str] = field(default_factory=list)  # urls with a censorship verdict
    collateral: list[str] = field(default_factory=list)  # of those, the ones no rule meant to hit
    effectiveness: dict[str, float] = field(default_factory=dict)  # service -> fraction of its targets blocked

    def to_json(self) -> dict[str, Any]:
        return {"isp": self.isp, "blocked": len(self.blocked), "collateral": sorted(self.collateral),
                "effectiveness": self.effectiveness}


def impact(scenario: Scenario, sites: Mapping[str, IPv4Address], verdicts: Mapping[tuple[str, str], Call],
           rules: Mapping[tuple[str, str], Rule | None]) -> dict[str, IspImpact]:
    """Per ISP, from a verdict table and, for each (vantage, url), the rule the oracle says decides it."""
    services = sorted({s.service for s in scenario.sites if s.service})
    sites = scenario.all_addresses(sites)  # a CDN's every address (run.json stores the first)
    out: dict[str, IspImpact] = {}
    for isp in scenario.isps:
        imp = IspImpact(isp.name)
        for target in scenario.targets:
            v = verdicts.get((isp.name, target.url))
            if v is None or not v.is_censorship:
                continue
            imp.blocked.append(target.url)
            if not intended(rules.get((isp.name, target.url)), target, scenario, sites):
                imp.collateral.append(target.url)
        for service in services:
            mine = [t for t in scenario.targets if (s := scenario.site(t.host)) and s.service == service]
            measured = [t for t in mine if (isp.name, t.url) in verdicts]
            if measured:
                hit = sum(1 for t in measured if verdicts[(isp.name, t.url)].is_censorship)
                imp.effectiveness[service] = round(hit / len(measured), 4)
        out[isp.name] = imp
    return out
