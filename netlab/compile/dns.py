"""DNS dataplane: the lab's root zone (NSD), the public resolver and one Unbound per ISP.

Resolver rules become a Response Policy Zone where RPZ can express them (nxdomain, bogus answer,
timeout). RPZ has no SERVFAIL and no REFUSED, so those become a stub zone whose only server is
localhost (which Unbound refuses to query: an immediate SERVFAIL) and a ``refuse`` local zone.
"""

from __future__ import annotations

from ipaddress import IPv4Address

from netlab.addressing import PUBLIC_RESOLVER, ROOT_DNS
from netlab.model import Isp, Rule, Scenario
from netlab.plan import LAB_DIR

ROOT_NS_NAME = "ns.lab-root"


def root_zone(scenario: Scenario, site_addresses: dict[str, IPv4Address]) -> str:
    lines = [
        "$TTL 60",
        f". IN SOA {ROOT_NS_NAME}. hostmaster.{ROOT_NS_NAME}. 1 3600 600 86400 60",
        f". IN NS {ROOT_NS_NAME}.",
        f"{ROOT_NS_NAME}. IN A {ROOT_DNS}",
    ]
    for site in scenario.sites:
        if site.state == "unresolvable":
            continue  # not in the zone: NXDOMAIN for every resolver
        if site.state == "no_address":
            # The name exists (NOERROR) but has no A record: OONI's dns_no_answer.
            lines.append(f'{site.name}. IN TXT "no address"')
            continue
        lines.append(f"{site.name}. IN A {site.dns_answer or site_addresses[site.name]}")
    return "\n".join(lines) + "\n"


def nsd_conf() -> str:
    # Debian's NSD rate-limits responses per /24 by default: a campaign would trip it.
    return f"""server:
  ip-address: {ROOT_DNS}
  port: 53
  username: ""
  chroot: ""
  zonesdir: "{LAB_DIR}/inet"
  database: ""
  zonelistfile: "{LAB_DIR}/inet/nsd-zone.list"
  xfrdfile: "{LAB_DIR}/inet/nsd-xfrd.state"
  xfrdir: "{LAB_DIR}/inet"
  pidfile: ""
  logfile: "{LAB_DIR}/logs/inet.nsd.log"
  server-count: 1
  rrl-ratelimit: 0
  hide-version: yes
  verbosity: 1
remote-control:
  control-enable: no
zone:
  name: "."
  zonefile: "{LAB_DIR}/inet/root.zone"
"""


def _unbound_conf(listen: IPv4Address, workdir: str, tlds: list[str], extra: str = "") -> str:
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
{nodefault}{extra}stub-zone:
  name: "."
  stub-addr: {ROOT_DNS}
remote-control:
  control-enable: no
"""


def scenario_tlds(scenario: Scenario) -> list[str]:
    return sorted({s.name.rsplit(".", 1)[-1] for s in scenario.sites})


def public_resolver_conf(scenario: Scenario) -> str:
    return _unbound_conf(PUBLIC_RESOLVER, f"{LAB_DIR}/inet", scenario_tlds(scenario))


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


def isp_resolver(scenario: Scenario, isp: Isp, listen: IPv4Address,
                 proxy: IPv4Address | None = None) -> tuple[str, str]:
    """(unbound.conf, rpz.zone) for one ISP; ``proxy`` is the address the ``proxy`` action answers."""
    rpz = ["$TTL 60", "@ IN SOA rpz.lab. hostmaster.rpz.lab. 1 3600 600 86400 60", "@ IN NS localhost."]
    extra: list[str] = []
    stubs: list[str] = []
    for rule in effective_resolver_rules(isp):
        name = rule.match.domain or rule.match.exact
        owners = [name] if rule.match.exact else [name, f"*.{name}"]
        rpz.append(f"; line {rule.line}: {rule.describe()}")
        if rule.action == "nxdomain":
            rpz += [f"{o} CNAME ." for o in owners]
        elif rule.action == "answer":
            rpz += [f"{o} A {rule.address}" for o in owners]
        elif rule.action == "proxy":
            assert proxy is not None, "the compiler gives every ISP with a proxy rule its address"
            rpz += [f"{o} A {proxy}" for o in owners]
        elif rule.action == "timeout":
            rpz += [f"{o} CNAME rpz-drop." for o in owners]
        elif rule.action == "refused":
            extra.append(f'  local-zone: "{name}." refuse\n')
        elif rule.action == "servfail":
            # Unbound never queries localhost (do-not-query-localhost): instant SERVFAIL.
            stubs.append(f'stub-zone:\n  name: "{name}."\n  stub-addr: 127.0.0.1\n')
    rpz_block = f'rpz:\n  name: "rpz.lab."\n  zonefile: "{LAB_DIR}/{isp.name}/rpz.zone"\n'
    conf = _unbound_conf(listen, f"{LAB_DIR}/{isp.name}", scenario_tlds(scenario), "".join(extra))
    conf += "".join(stubs) + rpz_block
    return conf, "\n".join(rpz) + "\n"
