"""DNS dataplane: the lab's DNS hierarchy (NSD: root, TLDs, the zones under them), the public
resolver and one Unbound per ISP.

Resolver rules become a Response Policy Zone where RPZ can express them (nxdomain, bogus answer,
timeout). RPZ has no SERVFAIL and no REFUSED, so those become a stub zone whose only server is
localhost (which Unbound refuses to query: an immediate SERVFAIL) and a ``refuse`` local zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from netlab.addressing import AUTH_DNS, PUBLIC_RESOLVER, ROOT_DNS, TLD_DNS, WHOAMI_DNS, addresses_of, addresses_v6
from netlab.dnstree import (
    ROOT_NS,
    default_zone_ns,
    parent_zone,
    tld_ns,
    tld_of,
    zone_apexes,
    zone_of,
)
from netlab.model import Isp, Rule, Scenario, Site
from netlab.plan import LAB_DIR
from netlab.services.configs import WhoamiConfig

SOA_TIMERS = "1 3600 600 86400 60"  # serial refresh retry expire minimum


@dataclass(frozen=True)
class DnsTier:
    """One authoritative server of the hierarchy: an NSD process on its own address, its zones."""

    name: str  # "root" | "tld" | "auth"
    address: IPv4Address
    zones: dict[str, str]  # apex ("." for the root) -> zone file text

    @property
    def service(self) -> str:
        return "nsd" if self.name == "root" else f"nsd-{self.name}"


def dns_hierarchy(scenario: Scenario, site_addresses: dict[str, IPv4Address]) -> list[DnsTier]:
    """The root zone, every TLD zone and every zone under a TLD (netlab.dnstree), with the sites'
    records; three tiers, each answered from an address of its own, so a resolver (or ``dig
    +trace``) follows real referrals: root -> TLD -> the zone's authority, with glue."""
    resolvable = [s for s in scenario.sites if s.state != "unresolvable"]  # not in any zone: NXDOMAIN
    delegated = {s.name: s.records.ns for s in resolvable if s.records.ns}
    whoami = scenario.whoami  # a zone the whoami server answers (netlab.services.whoami), not NSD
    if whoami:
        delegated[whoami] = (default_zone_ns(whoami),)
    zone_ns = {}  # apex -> the names of its servers
    ns_hosts = {n for names in delegated.values() for n in names}
    names = [s.name for s in resolvable] + sorted(ns_hosts)
    apexes = zone_apexes(names, delegated)
    for apex in sorted(apexes):
        zone_ns[apex] = delegated.get(apex) or (default_zone_ns(apex),)
        ns_hosts |= set(zone_ns[apex])
    server = {n: WHOAMI_DNS if whoami and zone_of(n, apexes) == whoami else AUTH_DNS for n in ns_hosts}
    tlds = sorted({tld_of(n) for n in [*names, *apexes]})
    data: dict[str, list[str]] = {z: [] for z in [*tlds, *sorted(apexes)]}

    def soa(apex: str, ns: str) -> list[str]:
        origin = "." if apex == "." else f"{apex}."
        return ["$TTL 60", f"{origin} IN SOA {ns}. hostmaster.{ns}. {SOA_TIMERS}"]

    root = [*soa(".", ROOT_NS), f". IN NS {ROOT_NS}.", f"{ROOT_NS}. IN A {ROOT_DNS}"]
    for tld in tlds:
        root += [f"{tld}. IN NS {tld_ns(tld)}.", f"{tld_ns(tld)}. IN A {TLD_DNS}"]  # delegation + glue
        data[tld] += [*soa(tld, tld_ns(tld)), f"{tld}. IN NS {tld_ns(tld)}.", f"{tld_ns(tld)}. IN A {TLD_DNS}"]
    for apex in sorted(apexes):
        servers = zone_ns[apex]
        data[apex] += soa(apex, servers[0]) + [f"{apex}. IN NS {n}." for n in servers]
        parent = parent_zone(apex, apexes)
        data[parent] += [f"{apex}. IN NS {n}." for n in servers]
        # Glue: the parent hands out the address of a server named inside the zone it delegates.
        data[parent] += [f"{n}. IN A {server[n]}" for n in servers if n.endswith("." + apex)]
    for host in sorted(ns_hosts):
        data[zone_of(host, apexes)].append(f"{host}. IN A {server[host]}")
    for site in resolvable:
        data[zone_of(site.name, apexes)] += _site_records(site, site_addresses)
    return [
        DnsTier("root", ROOT_DNS, {".": _zone_text(root)}),
        DnsTier("tld", TLD_DNS, {t: _zone_text(data[t]) for t in tlds}),
        DnsTier("auth", AUTH_DNS, {a: _zone_text(data[a]) for a in sorted(apexes) if a != whoami}),
    ]


def whoami_config(scenario: Scenario) -> WhoamiConfig | None:
    """The whoami server's configuration (netlab.services.whoami), None without `internet.whoami`."""
    if scenario.whoami is None:
        return None
    return WhoamiConfig(name=f"{scenario.whoami}.", ns=f"{default_zone_ns(scenario.whoami)}.",
                        address=str(WHOAMI_DNS), ready_file=f"{LAB_DIR}/inet/whoami.ready")


def hierarchy_note(tiers: list[DnsTier]) -> str:
    """One line for `harness explain`: who answers which zones."""
    def zones(t: DnsTier) -> str:
        names = sorted(t.zones)
        more = f" and {len(names) - 4} more" if len(names) > 4 else ""
        return ", ".join(names[:4]) + more if names else "no zone"
    parts = [f"{t.name} {t.address} ({zones(t)})" for t in tiers]
    return "inet: DNS hierarchy (NSD), each tier delegating to the next: " + " -> ".join(parts)


def _site_records(site: Site, site_addresses: dict[str, IPv4Address]) -> list[str]:
    """A site's records in its zone: its A record (or, for an alias, its CNAME) and `records`."""
    owner = f"{site.name}."
    r = site.records
    if r.cname is not None:
        return [f"{owner} IN CNAME {r.cname}."]
    lines = []
    if site.state != "no_address":
        # A CDN site has an A record per address, published in the scenario's order.
        lines += [f"{owner} IN A {a}" for a in ((site.dns_answer,) if site.dns_answer
                                                else addresses_of(site_addresses, site.name))]
        if site.dns_answer is None:  # dual stack: an AAAA record per IPv6 address (a DNS that lies has none)
            lines += [f"{owner} IN AAAA {a}" for a in addresses_v6(site_addresses, site.name)]
    lines += [f"{owner} IN AAAA {a}" for a in r.aaaa]
    lines += [f"{owner} IN TXT {_txt(t)}" for t in r.txt]
    lines += [f"{owner} IN MX {pref} {host}." for pref, host in r.mx]
    if site.https and site.quic and site.state != "no_address":
        # RFC 9460: HTTP/3 besides the default http/1.1, as browsers learn it before connecting.
        lines.append(f'{owner} IN HTTPS 1 . alpn="h3"')
    if not lines:
        # The name exists (NOERROR) but has no A record: OONI's dns_no_answer.
        lines.append(f'{owner} IN TXT "no address"')
    return lines


def _txt(text: str) -> str:
    """One TXT character-string in zone-file syntax: quoted, with quotes, backslashes and bytes
    outside printable ASCII escaped (\\DDD)."""
    out = []
    for byte in text.encode():
        ch = chr(byte)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 32 <= byte < 127:
            out.append(ch)
        else:
            out.append(f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


def _zone_text(lines: list[str]) -> str:
    return "\n".join(dict.fromkeys(lines)) + "\n"  # a record stated twice (shared glue) once


def zone_file(tier: DnsTier, apex: str) -> str:
    """Where a zone's file is, relative to the lab folder."""
    return f"inet/dns/{tier.name}/{'root' if apex == '.' else apex}.zone"


def nsd_conf(tier: DnsTier) -> str:
    # Debian's NSD rate-limits responses per /24 by default: a campaign would trip it.
    state = f"{LAB_DIR}/inet/dns/{tier.name}"
    zones = "".join(f'zone:\n  name: "{apex}"\n  zonefile: "{LAB_DIR}/{zone_file(tier, apex)}"\n'
                    for apex in tier.zones)
    return f"""server:
  ip-address: {tier.address}
  port: 53
  username: ""
  chroot: ""
  zonesdir: "{state}"
  database: ""
  zonelistfile: "{state}/nsd-zone.list"
  xfrdfile: "{state}/nsd-xfrd.state"
  xfrdir: "{state}"
  pidfile: ""
  logfile: "{LAB_DIR}/logs/inet.{tier.service}.log"
  server-count: 1
  rrl-ratelimit: 0
  hide-version: yes
  verbosity: 1
remote-control:
  control-enable: no
{zones}"""


def _unbound_conf(listen: IPv4Address, workdir: str, tlds: list[str], extra: str = "") -> str:
    # rrset-roundrobin off: a CDN site's A records keep the zone's order, so every client tries its
    # addresses in the same order and the oracle knows which one a probe keeps (netlab.oracle).
    # Unbound ships built-in empty zones for test., invalid., onion., ... and a stub zone does not
    # override them: `nodefault` lets the lab's root answer for every TLD the scenario uses.
    nodefault = "".join(f'  local-zone: "{t}." nodefault\n  domain-insecure: "{t}."\n' for t in tlds)
    return f"""server:
  interface: {listen}
  port: 53
  username: ""
  chroot: ""
  directory: "{workdir}"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 1
  do-ip6: no
  num-threads: 1
  access-control: 0.0.0.0/0 allow
  module-config: "respip iterator"
  do-not-query-localhost: yes
  qname-minimisation: no
  minimal-responses: yes
  cache-max-ttl: 60
  rrset-roundrobin: no
{nodefault}{extra}stub-zone:
  name: "."
  stub-addr: {ROOT_DNS}
remote-control:
  control-enable: no
"""


def scenario_tlds(scenario: Scenario) -> list[str]:
    """Every TLD the lab's names use: the sites', and those of the names their NS records give."""
    names = [s.name for s in scenario.sites] + [n for s in scenario.sites for n in s.records.ns]
    return sorted({tld_of(n) for n in [*names, *([scenario.whoami] if scenario.whoami else [])]})


def public_resolver_conf(scenario: Scenario) -> str:
    # Its queries leave from its own address: the lab internet owns the whole range, and the kernel
    # would pick the server's address as the source (what a whoami name would then report).
    return _unbound_conf(PUBLIC_RESOLVER, f"{LAB_DIR}/inet", scenario_tlds(scenario),
                         f"  outgoing-interface: {PUBLIC_RESOLVER}\n")


def _covers(earlier: Rule, later: Rule) -> bool:
    """True if ``earlier`` matches every name ``later`` matches: ``later`` can never fire."""
    e_name = earlier.match.domain or earlier.match.exact
    l_name = later.match.domain or later.match.exact
    assert e_name and l_name
    if earlier.match.exact:
        return later.match.exact == e_name
    return l_name == e_name or l_name.endswith("." + e_name)


def effective_resolver_rules(isp: Isp) -> list[Rule]:
    """The rules that can fire under first-match-wins: a rule shadowed by an earlier, broader one
    is left out (RPZ itself prefers the most specific name, which would reorder them)."""
    out: list[Rule] = []
    for rule in isp.resolver_rules:
        if not any(_covers(e, rule) for e in out):
            out.append(rule)
    return out


def resolver_rule_matches(rule: Rule, name: str) -> bool:
    m = rule.match
    if m.exact:
        return name == m.exact
    return name == m.domain or name.endswith(f".{m.domain}")


def deciding_resolver_rule(scenario: Scenario, isp: Isp, host: str) -> Rule | None:
    """The resolver rule that decides ``host``'s answer from ``isp``'s resolver, through the name's
    CNAME chain: the first name of the chain a rule matches decides, so a rule on the canonical
    name (or a name in between) blocks its aliases; but a `refused` rule only on the name asked,
    as Unbound consults local zones for the query, not for the CNAME targets it follows. The
    compiler writes each alias a chain rule decides into the ISP's policy (``isp_resolver``): the
    oracle and the resolver agree by construction."""
    rules = effective_resolver_rules(isp)
    for i, name in enumerate(scenario.cname_chain(host)):
        rule = next((r for r in rules if resolver_rule_matches(r, name) and not (i > 0 and r.action == "refused")),
                    None)
        if rule is not None:
            return rule
    return None


def _chain_triggers(scenario: Scenario, isp: Isp) -> dict[int, list[str]]:
    """The aliases each rule (by id) decides through their CNAME chain (deciding_resolver_rule).
    Unbound 1.17 applies its RPZ to a CNAME target it iterates, yet not to one it answers from
    its cache (measured: www.shop.test -> shop.cdn.test -> edge.cdn.test with a rule on
    edge.cdn.test answered NXDOMAIN first, NOERROR once shop.cdn.test was cached), so a run's
    verdicts would hang on the order of its queries: the aliases become triggers of their own."""
    out: dict[int, list[str]] = {}
    for site in scenario.sites:
        if site.records.cname is None:
            continue
        rule = deciding_resolver_rule(scenario, isp, site.name)
        if rule is not None and not resolver_rule_matches(rule, site.name):
            out.setdefault(id(rule), []).append(site.name)
    return out


@dataclass(frozen=True)
class ResolverPolicy:
    """What an ISP's Unbound decides besides its RPZ: the names it refuses (a ``refuse`` local zone)
    and those it answers SERVFAIL for (a stub zone whose only server is localhost, which Unbound
    never queries). Written into unbound.conf by ``isp_resolver``; harness explain shows it."""

    refused: tuple[str, ...] = ()
    servfail: tuple[str, ...] = ()

    def local_zones(self) -> list[str]:
        return [f'local-zone: "{n}." refuse' for n in self.refused]

    def stub_zones(self) -> list[str]:
        return [f'stub-zone:\n  name: "{n}."\n  stub-addr: 127.0.0.1' for n in self.servfail]


def resolver_policy(scenario: Scenario, isp: Isp) -> ResolverPolicy:
    """The ISP resolver's refuse and SERVFAIL names, in rule order (a servfail rule's aliases too)."""
    chained = _chain_triggers(scenario, isp)
    refused: list[str] = []
    servfail: list[str] = []
    for rule in effective_resolver_rules(isp):
        name = rule.match.domain or rule.match.exact
        if name is None:  # the loader gives every resolver rule a domain or an exact name
            continue
        if rule.action == "refused":
            refused.append(name)
        elif rule.action == "servfail":
            servfail += [name, *chained.get(id(rule), [])]
    return ResolverPolicy(tuple(refused), tuple(servfail))


def isp_resolver(scenario: Scenario, isp: Isp, listen: IPv4Address,
                 proxy: IPv4Address | None = None) -> tuple[str, str]:
    """(unbound.conf, rpz.zone) for one ISP; ``proxy`` is the address the ``proxy`` action answers."""
    rpz = ["$TTL 60", "@ IN SOA rpz.lab. hostmaster.rpz.lab. 1 3600 600 86400 60", "@ IN NS localhost."]
    chained = _chain_triggers(scenario, isp)
    for rule in effective_resolver_rules(isp):
        name = rule.match.domain or rule.match.exact
        aliases = chained.get(id(rule), [])
        owners = ([name] if rule.match.exact else [name, f"*.{name}"]) + aliases
        rpz.append(f"; line {rule.line}: {rule.describe()}")
        if aliases:
            rpz.append(f"; and the aliases whose CNAME chain it decides: {', '.join(aliases)}")
        if rule.action == "nxdomain":
            rpz += [f"{o} CNAME ." for o in owners]
        elif rule.action == "answer":
            rpz += [f"{o} A {rule.address}" for o in owners]
        elif rule.action == "proxy":
            assert proxy is not None, "the compiler gives every ISP with a proxy rule its address"
            rpz += [f"{o} A {proxy}" for o in owners]
        elif rule.action == "timeout":
            rpz += [f"{o} CNAME rpz-drop." for o in owners]
    # refused and servfail have no RPZ form: Unbound never queries localhost (do-not-query-localhost),
    # so a stub zone on it is an instant SERVFAIL.
    policy = resolver_policy(scenario, isp)
    extra = [f"  {line}\n" for line in policy.local_zones()]
    stubs = [f"{stub}\n" for stub in policy.stub_zones()]
    rpz_block = f'rpz:\n  name: "rpz.lab."\n  zonefile: "{LAB_DIR}/{isp.name}/rpz.zone"\n'
    conf = _unbound_conf(listen, f"{LAB_DIR}/{isp.name}", scenario_tlds(scenario), "".join(extra))
    conf += "".join(stubs) + rpz_block
    return conf, "\n".join(rpz) + "\n"
