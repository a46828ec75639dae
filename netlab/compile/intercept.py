"""Compile an ISP's ``intercept`` DPI rules into the router's TLS interceptor
(``netlab.services.intercept``): a per-lab censor CA, the interceptor's config, and the nat rules
that bring it the client flows it may intercept.

Data path in the router: nat prerouting (nft ``ip netlab_intercept``, priority dstnat) redirects
the ISP clients' TCP flows to the interceptor's port when an intercept rule's address keys allow
them (server addresses from site/ip/cidr, port 443 unless the rule names one), except flows one
of the ISP's firewall rules matches: those go on to the firewall on the forward hook, which comes
first in the scenario's data path. The interceptor then intercepts by SNI, or splices the flow on
with a socket mark the DPI middlebox's rules queue (``netlab.compile.dpi``), so the stage order is
firewall, interception, the other DPI rules.
"""

from __future__ import annotations

from ipaddress import IPv4Address

from netlab.addressing import IspAddresses, link_v6
from netlab.compile import firewall
from netlab.compile.pki import make_censor_pki
from netlab.compile.router import (
    DOWN_IF,
    INTERCEPT_PORT,
    INTERCEPTED_PORT,
    PASS_MARK,
    SPLICE_MARK,
    RouterAdditions,
    dual_stack,
    family_networks,
    intersect,
    server_networks,
)
from netlab.dnsname import name_matches
from netlab.model import Isp, Rule
from netlab.plan import LAB_DIR, ReadyCheck, Service
from netlab.services.configs import InterceptConfig, InterceptRule

TABLE = "netlab_intercept"


def intercept_rules(isp: Isp) -> list[Rule]:
    return [r for r in isp.dpi_rules if r.action == "intercept"]


def intercept_port(rule: Rule) -> int:
    return rule.match.port or INTERCEPTED_PORT


def nat_ruleset(isp: Isp, site_addresses: dict[str, IPv4Address], family: int = 4) -> str:
    """The nft input that redirects the flows of IP version ``family`` the interceptor may take
    (a table of its own per family: nat redirects to the address of the family's packet)."""
    ip, table = ("ip", TABLE) if family == 4 else ("ip6", TABLE + "6")
    lines = [f"table {ip} {table} {{", "  chain prerouting {",
             "    type nat hook prerouting priority dstnat; policy accept;"]
    for rule in isp.firewall_rules:
        expr = firewall.match_expr(rule.match, site_addresses, family)
        if expr is None:
            continue
        lines.append(f"    # firewall line {rule.line}: the firewall stops this flow first")
        lines.append(f"    {expr} return")
    for rule in intercept_rules(isp):
        nets = family_networks(intersect(server_networks(rule.match, site_addresses)), family)
        lines.append(f"    # dpi line {rule.line}: {rule.describe()}")
        if nets == []:
            lines.append(f"    # (no IPv{family} flow: its address keys exclude the family or each other)")
            continue
        daddr = f" {ip} daddr {{ {', '.join(str(n) for n in nets)} }}" if nets else ""
        redirect = (f'    iifname "{DOWN_IF}"{daddr} tcp dport {intercept_port(rule)} counter '
                    f"redirect to :{INTERCEPT_PORT}")
        if redirect not in lines:  # rules that differ only by name take the same flows
            lines.append(redirect)
    lines += ["  }", "}"]
    return f"add table {ip} {table}\ndelete table {ip} {table}\n" + "\n".join(lines) + "\n"


def compile_intercept(isp: Isp, addrs: IspAddresses, site_addresses: dict[str, IPv4Address]) -> RouterAdditions:
    rules = intercept_rules(isp)
    if not rules:
        return RouterAdditions()
    for rule in rules:  # the loader says so with file and line; a model built in code gets this
        if rule.match.sni is None or rule.transport == "quic":
            raise ValueError(f"isp {isp.name}, dpi rule at line {rule.line}: intercept needs sni, over TCP")
    base = f"{isp.name}/intercept"
    # A certificate for every site name a rule covers (what a probe asks for), and one for each
    # rule's own pattern (presented for a covered name that is no site of the lab).
    names = sorted({r.match.sni for r in rules if r.match.sni}
                   | {s for s in site_addresses for r in rules if name_matches(s, r.match.sni or "")})
    pki = make_censor_pki(isp.name, names)
    files: dict[str, str | bytes] = {f"{base}/ca.pem": pki.ca_pem}
    certs = {}
    for name, pem in pki.leaf_pems.items():
        files[f"{base}/{name}.pem"] = pem
        certs[name] = f"{LAB_DIR}/{base}/{name}.pem"
    config_rules: list[InterceptRule] = []
    for i, rule in enumerate(rules):
        page = None
        if rule.blockpage is not None:
            files[f"{base}/page-{i}.http"] = rule.blockpage.response()
            page = f"{LAB_DIR}/{base}/page-{i}.http"
        config_rules.append(InterceptRule(
            sni=rule.match.sni or "", port=intercept_port(rule), page=page, line=rule.line,
            servers=server_networks(rule.match, site_addresses)))
    files[f"{base}.json"] = InterceptConfig(
        isp=isp.name, listen=str(addrs.router_down.ip), port=INTERCEPT_PORT,
        source=str(addrs.router_down.ip), splice_mark=SPLICE_MARK, pass_mark=PASS_MARK,
        ready_file=f"{LAB_DIR}/{base}.ready", certs=certs, rules=config_rules,
        listen6=str(link_v6(addrs.router_down).ip) if dual_stack(site_addresses) else None,
    ).to_json()
    files[f"{base}.nft"] = nat_ruleset(isp, site_addresses)
    setup = [("nft", "-f", f"{LAB_DIR}/{base}.nft")]
    if dual_stack(site_addresses):
        files[f"{base}6.nft"] = nat_ruleset(isp, site_addresses, 6)
        setup.append(("nft", "-f", f"{LAB_DIR}/{base}6.nft"))
    service = Service(
        "intercept", ("python3", "-m", "netlab.services.intercept", "--config", f"{LAB_DIR}/{base}.json"),
        ready=ReadyCheck(kind="file", address=addrs.router_down.ip, port=0, path=f"{base}.ready"),
        critical=True)
    notes = [
        f"{isp.name}: TLS interceptor (netlab.services.intercept) on {addrs.router_down.ip}:{INTERCEPT_PORT}: "
        "nat prerouting redirects the client TCP flows an intercept rule's addresses and port allow (not "
        "those a firewall rule matches); a matching SNI gets a certificate from the ISP's own CA "
        f"('fauxisp {isp.name} interception CA', not trusted by the vantages: ssl_unknown_authority), "
        "the rest is spliced on to its destination and meets the other DPI rules.",
    ]
    for rule in rules:
        what = "serves its page" if rule.blockpage is not None else "relays to the real site"
        notes.append(f"{isp.name}: dpi {rule.describe()}: intercepts TLS on port {intercept_port(rule)}, {what}")
    if isp.ca_installed:
        notes.append(f"{isp.name}: its clients trust the interception CA (dpi.ca_installed): their CA bundle is "
                     f"{base}/trust.pem, the lab CA and the ISP's; interception succeeds silently")
    return RouterAdditions(files=files, setup=list(setup), services=[service], notes=notes)


def trust_store(isp: Isp, lab_ca: bytes, files: dict[str, str | bytes]) -> str | None:
    """The CA bundle of the ISP's vantage when its users installed the interception CA
    (``dpi.ca_installed``): the lab CA and the ISP's, written into ``files``; else None (the lab
    CA alone). Call after ``compile_intercept``'s files are in ``files``."""
    censor_ca = files.get(f"{isp.name}/intercept/ca.pem")
    if not isp.ca_installed or not isinstance(censor_ca, bytes):
        return None
    path = f"{isp.name}/intercept/trust.pem"
    files[path] = lab_ca + censor_ca
    return path
