"""harness explain: what the oracle expects and what the lab's dataplane would be, without a lab."""

from __future__ import annotations

import argparse
import json

from rich.console import Console, Group
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from harness.cli import verb_help
from harness.explain import LAB_DIR_SHOWN, Explanation, IspDataplane, explain, verdict_grid
from harness.report import FAMILY_STYLE
from netlab.backends.kernel import probe_host
from netlab.errors import NetlabError
from netlab.loader import load_scenario
from netlab.verdict import Verdict

EPILOG = """examples:
  harness explain scenarios/demo.yaml                 expected verdicts and every ISP's dataplane
  harness explain scenarios/demo.yaml --isp isp-b     ... one ISP only
  harness explain scenarios/gfw-like.yaml --json | jq '.expected[] | select(.verdict != "ok")'

Nothing is brought up: the scenario is compiled, never run. Exit codes: 0 ok, 2 scenario error."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("explain", help=verb_help("explain"),
                       description="Show what the lab makes of a scenario: the oracle's expected verdict "
                       "for every vantage and target, with the rule that decides it, and for each ISP the "
                       "compiled dataplane: the RPZ zone and Unbound policy zones of its resolver, the "
                       "nftables ruleset, the DPI middlebox rules (iptables + dpi.json), the tc commands, and "
                       "the compiler's notes. Read it when a verdict surprises you.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", help="scenario file (YAML)")
    p.add_argument("--isp", action="append", help="only this ISP's dataplane (repeatable)")
    p.add_argument("--json", action="store_true", help="print everything as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    ex = explain(load_scenario(args.scenario), host=probe_host())
    if args.isp:
        unknown = sorted(set(args.isp) - {i.name for i in ex.isps})
        if unknown:
            raise NetlabError(f"no ISP named {', '.join(unknown)} in {ex.scenario.name} "
                              f"(ISPs: {', '.join(i.name for i in ex.isps) or 'none'})")
        ex.isps = [i for i in ex.isps if i.name in args.isp]
    if args.json:
        print(json.dumps(ex.to_json(), indent=1))
        return 0
    console.print(expected_table(ex))
    for line in findings(ex):
        console.print(line, highlight=False)
    for note in ex.notes:
        console.print(f"[dim]note:[/] {note}", highlight=False)
    for isp in ex.isps:
        console.print(isp_panel(isp))
    console.print(f"[dim]{LAB_DIR_SHOWN} is the lab's folder (netns backend: /run/netlab/<lab>).[/]")
    return 0


def expected_table(ex: Explanation) -> Table:
    urls, cols, cells = verdict_grid(ex)
    t = Table(title=f"Expected verdicts of {ex.scenario.name} (the oracle; * = pinned by expect; "
              "† = collateral damage)",
              show_lines=True)
    t.add_column("target", no_wrap=True)
    for v in cols:
        t.add_column(v)
    for url in urls:
        row: list[str | Text] = [url]
        for v in cols:
            e = cells.get((url, v))
            if e is None:
                row.append("-")
                continue
            style = FAMILY_STYLE.get(Verdict(e["verdict"]).technique, "white")
            cell = Text(e["verdict"] + (" *" if e["pinned"] else "") + (" †" if e.get("collateral") else ""),
                        style=style)
            if e.get("derived") and e["derived"] != e["verdict"]:
                cell.append(f" (rules: {e['derived']})", style="bold red")
            why = e["reason"] + (f"\n{e['rule']}" if e["rule"] else "")
            cell.append("\n" + why, style="dim")
            row.append(cell)
        t.add_row(*row)
    return t


def findings(ex: Explanation) -> list[Text]:
    """Pins that contradict the rules, and rules that decide no verdict: either is a scenario that
    does not say what its author meant."""
    out: list[Text] = []
    if ex.pin_conflicts:
        out.append(Text("Pins that contradict the rules (the run is scored against the pin):", style="bold yellow"))
        for c in ex.pin_conflicts:
            out.append(Text(f"  {c['vantage']} {c['url']}: pinned {c['pinned']}, the rules give {c['derived']} "
                            f"({c['reason']})"))
    if ex.idle_rules:
        out.append(Text("Rules that never decide a verdict of this scenario:", style="bold yellow"))
        for r in ex.idle_rules:
            why = r["why"].removeprefix("never decides a verdict of this scenario: ")
            out.append(Text(f"  {r['isp']} {r['stage']} rule line {r['line']} {r['rule']}: {why}"))
    return out


def isp_panel(isp: IspDataplane) -> Panel:
    parts: list[Text | Syntax] = []

    def section(title: str, body: str, lexer: str = "text") -> None:
        parts.append(Text(title, style="bold"))
        if body.strip():
            parts.append(Syntax(body.rstrip("\n"), lexer, theme="ansi_dark", background_color="default",
                                word_wrap=True))
        else:
            parts.append(Text("  (none)", style="dim"))

    section("resolver: RPZ zone (rpz.zone)", isp.rpz_zone, "dns")
    section("resolver: Unbound policy zones (refuse / SERVFAIL stubs)", isp.unbound_policy)
    section("firewall: nftables ruleset (firewall.nft)", isp.nftables)
    section("DPI: iptables rules (dpi.rules)", isp.dpi_iptables)
    section("DPI: middlebox config (dpi.json)", isp.dpi_config.to_json() if isp.dpi_config else "",
            "json")
    if isp.intercept_nft:
        section("DPI intercept: nat rules to the TLS interceptor (intercept.nft)", isp.intercept_nft)
        section("DPI intercept: interceptor config (intercept.json)",
                isp.intercept_config.to_json() if isp.intercept_config else "", "json")
    if isp.shaper_iptables:
        section("shaping: delay/loss emulation (shaper.rules)", isp.shaper_iptables)
    section("shaping: tc commands", "\n".join(isp.tc), "bash")
    parts.append(Text("compiler notes", style="bold"))
    parts += [Text(f"  - {n.removeprefix(isp.name + ': ')}") for n in isp.notes] or [Text("  (none)", style="dim")]
    return Panel(Group(*parts), title=f"ISP {isp.name}: compiled dataplane", title_align="left")
