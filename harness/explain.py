"""What a scenario compiles to, for people: the oracle's expected verdicts and, per ISP, the
dataplane the lab would run (RPZ zone, Unbound policy zones, nftables, DPI, tc) with the
compiler's notes. Pure: it compiles, and never brings anything up.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from netlab.compile import compile_lab, router_host
from netlab.model import CONTROL, Scenario
from netlab.oracle import expected_verdicts
from netlab.plan import LabPlan


@dataclass
class IspDataplane:
    name: str
    rpz_zone: str = ""
    unbound_policy: str = ""  # local-zone / stub-zone lines besides the RPZ
    nftables: str = ""
    dpi_iptables: str = ""
    dpi_config: dict[str, Any] | None = None
    shaper_iptables: str = ""
    tc: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Explanation:
    scenario: Scenario
    vantages: list[str]
    expected: list[dict[str, Any]]  # one per (vantage, url): verdict, reason, rule, pinned
    isps: list[IspDataplane]
    notes: list[str]  # compiler notes that belong to no single ISP
    site_addresses: dict[str, str]

    def cell(self, vantage: str, url: str) -> dict[str, Any] | None:
        return next((e for e in self.expected if e["vantage"] == vantage and e["url"] == url), None)

    def to_json(self) -> dict[str, Any]:
        return {"scenario": self.scenario.name, "source": self.scenario.source, "vantages": self.vantages,
                "targets": [t.url for t in self.scenario.targets], "site_addresses": self.site_addresses,
                "expected": self.expected, "isps": [i.to_json() for i in self.isps], "notes": self.notes}


_POLICY_LINE = re.compile(r'^\s*local-zone: "[^"]+" refuse')


def unbound_policy(conf: str) -> str:
    """The policy part of an ISP's unbound.conf: refuse local zones and the stub zones that give
    SERVFAIL (everything but the root stub every resolver of the lab has)."""
    out: list[str] = []
    blocks = re.split(r"\n(?=\S)", conf)
    for block in blocks:
        if block.startswith("server:"):
            out += [line.strip() for line in block.splitlines() if _POLICY_LINE.match(line)]
        elif block.startswith("stub-zone:") and 'name: "."' not in block:
            out.append(block.strip())
    return "\n".join(out)


def explain(scenario: Scenario, lab: str | None = None) -> Explanation:
    plan = compile_lab(scenario, lab)
    expectations = expected_verdicts(scenario, plan.site_addresses)
    vantages = scenario.vantages
    rows = []
    for target in scenario.targets:
        for v in vantages:
            e = expectations.get((v, target.url))
            if e is None:
                continue
            rows.append({"vantage": v, "url": target.url, "verdict": e.verdict.value, "reason": e.reason,
                         "rule": e.rule.describe() if e.rule is not None else None, "pinned": e.pinned})
    isps = [_isp_dataplane(plan, isp.name) for isp in scenario.isps]
    prefixes = tuple(f"{i.name}: " for i in scenario.isps)
    general = [n for n in plan.notes if not n.startswith(prefixes)]
    return Explanation(scenario, vantages, rows, isps, general,
                       {k: str(v) for k, v in plan.site_addresses.items()})


LAB_DIR_SHOWN = "$LAB_DIR"  # where the backend puts the lab's files (netns: /run/netlab/<lab>)


def _text(plan: LabPlan, path: str) -> str:
    content = plan.render(plan.files.get(path, ""), LAB_DIR_SHOWN)
    return content.decode(errors="replace") if isinstance(content, bytes) else content


def _isp_dataplane(plan: LabPlan, isp: str) -> IspDataplane:
    router = plan.hosts[router_host(isp)]
    dpi = _text(plan, f"{isp}/dpi.json")
    return IspDataplane(
        name=isp,
        rpz_zone=_text(plan, f"{isp}/rpz.zone"),
        unbound_policy=unbound_policy(_text(plan, f"{isp}/unbound.conf")),
        nftables=_text(plan, f"{isp}/firewall.nft"),
        dpi_iptables=_text(plan, f"{isp}/dpi.rules"),
        dpi_config=json.loads(dpi) if dpi else None,
        shaper_iptables=_text(plan, f"{isp}/shaper.rules"),
        tc=[" ".join(argv) for argv in router.setup if argv and argv[0] == "tc"],  # no LAB_DIR in tc
        notes=[n for n in plan.notes if n.startswith(f"{isp}: ")],
    )


def verdict_grid(ex: Explanation) -> tuple[list[str], list[str], dict[tuple[str, str], dict[str, Any]]]:
    """(targets, vantage columns with control last, (url, vantage) -> expectation)."""
    urls = [t.url for t in ex.scenario.targets]
    cols = [v for v in ex.vantages if v != CONTROL] + [CONTROL]
    return urls, cols, {(e["url"], e["vantage"]): e for e in ex.expected}
