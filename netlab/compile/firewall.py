"""Firewall dataplane: one nftables table per ISP router, on the forward hook.

Only traffic from the ISP's clients (entering on ``down0``) toward the internet is matched; the
kernel's connection tracking lets the replies through on their own.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from netlab.addressing import addresses_of, addresses_v6
from netlab.model import Isp, Match, Rule

TABLE = "netlab_fw"
ACCESS_IF = "down0"
UPLINK_IF = "up0"


def match_exprs(match: Match, site_addresses: dict[str, IPv4Address]) -> list[str]:
    """nft match expressions for the address keys of a Match (site, ip, cidr, port, proto, family):
    one per IP version the rule can match (an inet table sees both; dual stack: a site has addresses
    of both, an ip or cidr is of one, and ``family`` keeps one)."""
    # No address and no family: one expression (written for IPv4) matches both families.
    families = (4,) if match.family is None and not (match.site or match.ip or match.cidr) else (4, 6)
    out = []
    for family in families:
        expr = match_expr(match, site_addresses, family)
        if expr is not None:
            out.append(expr)
    return out


def match_expr(match: Match, site_addresses: dict[str, IPv4Address], family: int = 4) -> str | None:
    """The nft match expression of a Match for flows of IP version ``family``, None if it matches
    none of them (another family's address, or ``family`` says so)."""
    if match.family not in (None, family) or any(v is not None and v.version != family
                                                 for v in (match.ip, match.cidr)):
        return None
    ip = "ip" if family == 4 else "ip6"
    parts = [f'iifname "{ACCESS_IF}"']
    if match.family is not None and not (match.site or match.ip or match.cidr):
        parts.append(f"meta nfproto ipv{family}")
    if match.site:
        # Every address of the site (a CDN has several); co-hosted sites share them: all are hit.
        site: tuple[IPv4Address | IPv6Address, ...] = (addresses_of(site_addresses, match.site) if family == 4
                                                      else addresses_v6(site_addresses, match.site))
        if not site:
            return None  # no address of this family (a v4-only lab)
        addrs = [str(a) for a in site]
        parts.append(f"{ip} daddr {addrs[0]}" if len(addrs) == 1 else f"{ip} daddr {{ {', '.join(addrs)} }}")
    if match.ip:
        parts.append(f"{ip} daddr {match.ip}")
    if match.cidr:
        parts.append(f"{ip} daddr {match.cidr}")
    if match.proto:
        parts.append(f"meta l4proto {match.proto}")
    if match.port:
        # `th` (transport header) matches the port of TCP and UDP alike when no proto is given.
        parts.append(f"{match.proto or 'th'} dport {match.port}")
    return " ".join(parts)


def _statements(rule: Rule, expr: str) -> list[str]:
    if rule.action == "drop":
        return [f"{expr} counter drop"]
    if rule.action == "reject":
        return [f"{expr} counter reject with icmpx type host-unreachable"]
    # reset: a TCP RST answers the SYN; other protocols get the closest thing, port unreachable.
    if rule.match.proto == "tcp":
        return [f"{expr} counter reject with tcp reset"]
    if rule.match.proto == "udp":
        return [f"{expr} counter reject with icmpx type port-unreachable"]
    return [f"{expr} meta l4proto tcp counter reject with tcp reset",
            f"{expr} counter reject with icmpx type port-unreachable"]


def ruleset(isp: Isp, site_addresses: dict[str, IPv4Address]) -> str:
    lines = [
        f"table inet {TABLE} {{",
        "  chain forward {",
        "    type filter hook forward priority -10; policy accept;",
    ]
    for rule in isp.firewall_rules:
        lines.append(f"    # line {rule.line}: {rule.describe()}")
        for expr in match_exprs(rule.match, site_addresses):
            lines += [f"    {s}" for s in _statements(rule, expr)]
    lines += ["  }", "}"]
    # `delete` first so a re-applied ruleset replaces the old one; `add` makes the delete safe.
    return f"add table inet {TABLE}\ndelete table inet {TABLE}\n" + "\n".join(lines) + "\n"


SITES_TABLE = "netlab_sites"


def site_ruleset(sites: list[tuple[str, IPv4Address | IPv6Address, str, list[str]]]) -> str | None:
    """The lab internet's own packet filter: sites that are down in a way only the network can
    show. ``sites``: (name, address, state, client networks or [] for everyone) with state
    ``refused`` (a TCP RST answers the SYN: nothing listens) or ``timeout`` (the SYN is dropped).
    None when no site needs one."""
    lines = [f"table inet {SITES_TABLE} {{", "  chain input {", "    type filter hook input priority 0; policy accept;"]
    body = []
    for name, addr, state, nets in sites:
        if state not in ("refused", "timeout"):
            continue
        ip = "ip" if addr.version == 4 else "ip6"
        src = f"{ip} saddr {{ {', '.join(nets)} }} " if nets else ""
        verdict = "reject with tcp reset" if state == "refused" else "drop"
        body.append(f"    # site {name}: {state}{' for ' + ', '.join(nets) if nets else ''}")
        body.append(f"    {src}{ip} daddr {addr} tcp dport {{ 80, 443 }} counter {verdict}")
        # HTTP/3 (netlab.services.h3): nothing answers on UDP 443 either; a closed port says so by ICMP.
        udp = "reject with icmpx type port-unreachable" if state == "refused" else "drop"
        body.append(f"    {src}{ip} daddr {addr} udp dport 443 counter {udp}")
    if not body:
        return None
    lines += [*body, "  }", "}"]
    return f"add table inet {SITES_TABLE}\ndelete table inet {SITES_TABLE}\n" + "\n".join(lines) + "\n"
