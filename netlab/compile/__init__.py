"""Scenario -> LabPlan: the address plan, hosts and links, and every dataplane config file."""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from netlab.addons import Declared, ServerError, addon_additions, installed_servers, taken_ports
from netlab.addressing import (
    CONTROL_CLIENT,
    CONTROL_INTERNET_SIDE,
    INTERNET_ASN,
    LAB_INTERNET,
    PUBLIC_RESOLVER,
    SITES_V6,
    WHOAMI_DNS,
    IspAddresses,
    SiteAddresses,
    isp_addresses,
    isp_asn,
    link_v6,
)
from netlab.compile import dns, firewall
from netlab.compile.blockpage import compile_blockpage_servers
from netlab.compile.dpi import compile_dpi
from netlab.compile.intercept import compile_intercept, trust_store
from netlab.compile.pki import make_pki
from netlab.compile.router import RouterAdditions
from netlab.compile.shaping import compile_shaping
from netlab.hostcaps import HostCapabilities
from netlab.model import CONTROL, Isp, Scenario, Site, proxy_address
from netlab.plan import LAB_DIR, Host, Interface, LabPlan, Link, ReadyCheck, Route, Service, Vantage
from netlab.services.configs import OriginConfig, PathConfig, ProxyConfig, SiteConfig

INET = "inet"
# Bogon ranges an ISP client sends to its router (which drops them, see _BLACKHOLE): a resolver that
# answers 10.10.34.35 makes the connect time out, as on a real network, instead of failing locally.
# (Only the private range the lab itself lives in: other bogons stay unroutable at the client.)
CLIENT_BOGON_ROUTES = (IPv4Network("10.0.0.0/8"),)


def router_host(isp_name: str) -> str:
    return f"{isp_name}.gw"


def compile_lab(scenario: Scenario, lab: str | None = None, servers: Sequence[Declared] | None = None,
                host: HostCapabilities | None = None) -> LabPlan:
    """Compile a scenario into a plan a backend can bring up. Pure apart from key generation, given
    ``servers``: the probe packages' server declarations (netlab.addons; default: the installed ones),
    and ``host``: what the machine can do (Backend.host_capabilities(); default: assume nothing)."""
    lab = lab or scenario.name
    host = host or HostCapabilities()
    declared = installed_servers() if servers is None else servers
    taken = taken_ports(scenario, declared)
    sites = scenario.site_addresses()
    _check_cohosted_servers(scenario, sites, taken)
    files: dict[str, str | bytes] = {}
    hosts: dict[str, Host] = {}
    links: list[Link] = []
    vantages: dict[str, Vantage] = {}
    notes: list[str] = []

    # The lab internet: root DNS, public resolver and every origin, on one AnyIP range.
    inet = Host(name=INET, role="internet", routes=[Route(dst=LAB_INTERNET, local=True)])
    if scenario.ipv6:  # dual stack: the lab internet's IPv6 /64 is the internet host's too
        inet.routes.append(Route(dst=SITES_V6, local=True))
    hosts[INET] = inet
    dns_tiers = dns.dns_hierarchy(scenario, sites)
    for tier in dns_tiers:
        files.update({dns.zone_file(tier, apex): text for apex, text in tier.zones.items()})
        files[f"inet/dns/{tier.name}/nsd.conf"] = dns.nsd_conf(tier)
    notes.append(dns.hierarchy_note(dns_tiers))
    whoami = dns.whoami_config(scenario)
    if whoami is not None:
        files["inet/whoami.json"] = whoami.to_json()
        inet.services.append(Service("whoami", ("python3", "-m", "netlab.services.whoami", "--config",
                                                f"{LAB_DIR}/inet/whoami.json"),
                                     ready=ReadyCheck("file", WHOAMI_DNS, 0, path="inet/whoami.ready")))
        notes.append(f"inet: {scenario.whoami} answers who asks (TXT and A: the resolver's address), from "
                     f"{WHOAMI_DNS} (netlab.services.whoami)")
    files["inet/public-unbound.conf"] = dns.public_resolver_conf(scenario)
    # An alias (a site with a CNAME) is served by its canonical site's origin, whose certificate names it too.
    origins = [s for s in scenario.sites if s.records.cname is None]
    aliases: dict[str, list[str]] = {s.name: [] for s in origins}
    for a in scenario.sites:
        if a.records.cname is not None:
            aliases[scenario.cname_chain(a.name)[-1]].append(a.name)
    pki = make_pki([s.name for s in origins], {s.name: s.cert for s in origins}, aliases)
    files["pki/ca.pem"] = pki.ca_pem
    for name, pem in pki.site_pems.items():
        files[f"pki/{name}.pem"] = pem
    for name, pem in pki.bad_pems.items():
        files[f"pki/{name}.bad.pem"] = pem
    isp_nets = {isp.name: str(isp_addresses(i).access_network) for i, isp in enumerate(scenario.isps, start=1)}
    isp_nets6 = {isp.name: str(link_v6(isp_addresses(i).client).network)
                 for i, isp in enumerate(scenario.isps, start=1)} if scenario.ipv6 else {}
    for s in scenario.sites:
        if s.body is not None:
            files[f"inet/pages/{s.name}.body"] = s.body
        for i, p in enumerate(s.paths):
            if p.body is not None:
                files[f"inet/pages/{s.name}.path{i}.body"] = p.body
    files["inet/origin.json"] = OriginConfig(
        ready_file=f"{LAB_DIR}/inet/origin.ready",
        sites=[_origin_site(s, sites, isp_nets, taken.get(s.name, set()), aliases[s.name], isp_nets6)
               for s in origins],
    ).to_json()
    site_rules = firewall.site_ruleset([(s.name, a, s.state, [isp_nets[i] for i in s.only_for])
                                        for s in origins for a in sites.all(s.name)]
                                       + [(s.name, a, s.state, [isp_nets6[i] for i in s.only_for])
                                          for s in origins for a in sites.all6(s.name)])
    if site_rules:
        files["inet/sites.nft"] = site_rules
        inet.setup.append(("nft", "-f", f"{LAB_DIR}/inet/sites.nft"))
        notes.append("inet: sites down on their own (state refused/timeout) are filtered in the lab internet")
    # The first site that answers on :80 tells when the origin is up.
    first = next((s.name for s in origins if s.state == "up" and s.dns_answer is None), origins[0].name)
    probe_addr = sites[first]
    inet.services += [
        Service(tier.service, ("nsd", "-d", "-c", f"{LAB_DIR}/inet/dns/{tier.name}/nsd.conf"),
                ready=ReadyCheck("dns", tier.address, 53, first))
        for tier in dns_tiers
    ]
    inet.services += [
        Service("resolver", ("unbound", "-d", "-p", "-c", f"{LAB_DIR}/inet/public-unbound.conf"),
                ready=ReadyCheck("dns", PUBLIC_RESOLVER, 53, first)),
        Service("origin", ("python3", "-m", "netlab.services.origin", "--config", f"{LAB_DIR}/inet/origin.json"),
                ready=ReadyCheck("file", probe_addr, 0, path="inet/origin.ready")),
    ]
    # Servers of probe packages (DNS over TLS, DoH, ...), only for scenarios with a target they are for.
    addons = addon_additions(scenario, sites, declared)
    files.update(addons.files)
    inet.services += addons.services
    notes += addons.notes
    proxies = [str(proxy_address(i)) for i, isp in enumerate(scenario.isps, start=1) if isp.has_proxy]
    if proxies:
        # One program serves every ISP's proxy address: the lab internet owns the whole range (AnyIP).
        files["inet/proxy.json"] = ProxyConfig(
            ready_file=f"{LAB_DIR}/inet/proxy.ready", listen=proxies,
            sites={s.name: str(sites[s.name]) for s in scenario.sites}).to_json()
        inet.services.append(Service(
            "proxy", ("python3", "-m", "netlab.services.proxy", "--config", f"{LAB_DIR}/inet/proxy.json"),
            ready=ReadyCheck("file", IPv4Address(proxies[0]), 0, path="inet/proxy.ready")))
        notes.append(f"inet: ISP transparent proxies on {', '.join(proxies)} relay HTTP by Host and TLS by SNI")

    # The control vantage: straight onto the internet, using the public resolver.
    v6 = scenario.ipv6
    _connect(hosts, links, INET, "ctl0", CONTROL_INTERNET_SIDE, CONTROL, "eth0", CONTROL_CLIENT, v6)
    control = hosts[CONTROL]
    control.role = "client"
    control.routes.append(Route(dst=LAB_INTERNET, via=CONTROL_INTERNET_SIDE.ip))
    if v6:
        control.routes.append(Route(dst=SITES_V6, via=link_v6(CONTROL_INTERNET_SIDE).ip))
    control.resolv_conf = f"nameserver {PUBLIC_RESOLVER}\n"
    vantages[CONTROL] = Vantage(CONTROL, CONTROL, CONTROL_CLIENT.ip, PUBLIC_RESOLVER, PUBLIC_RESOLVER,
                                INTERNET_ASN)

    for index, isp in enumerate(scenario.isps, start=1):
        addrs = isp_addresses(index)
        gw = router_host(isp.name)
        _connect(hosts, links, INET, f"isp{index}", addrs.internet_side, gw, "up0", addrs.router_up, v6)
        _connect(hosts, links, gw, "down0", addrs.router_down, isp.name, "eth0", addrs.client, v6)
        router, client = hosts[gw], hosts[isp.name]
        router.role, client.role = "router", "client"
        router.forwarding = True
        router.routes.append(Route(dst=LAB_INTERNET, via=addrs.internet_side.ip))
        inet.routes.append(Route(dst=IPv4Network(f"10.{index}.0.0/16"), via=addrs.router_up.ip))
        client.routes.append(Route(dst=LAB_INTERNET, via=addrs.router_down.ip))
        client.routes += [Route(dst=net, via=addrs.router_down.ip) for net in CLIENT_BOGON_ROUTES]
        if v6:  # the same paths for IPv6: the sites' /64 one way, the ISP's access /64 back
            router.routes.append(Route(dst=SITES_V6, via=link_v6(addrs.internet_side).ip))
            inet.routes.append(Route(dst=link_v6(addrs.client).network, via=link_v6(addrs.router_up).ip))
            client.routes.append(Route(dst=SITES_V6, via=link_v6(addrs.router_down).ip))
        # Silently: a forwarded packet to a bogon vanishes, as it does past a real ISP's edge.
        router.setup += [("ip", "route", "add", "blackhole", str(net)) for net in CLIENT_BOGON_ROUTES]
        client.resolv_conf = f"nameserver {addrs.resolver}\n"

        conf, rpz = dns.isp_resolver(scenario, isp, addrs.resolver, proxy_address(index) if isp.has_proxy else None)
        files[f"{isp.name}/unbound.conf"] = conf
        files[f"{isp.name}/rpz.zone"] = rpz
        router.services.append(Service("resolver", ("unbound", "-d", "-p", "-c", f"{LAB_DIR}/{isp.name}/unbound.conf"),
                                       ready=ReadyCheck("dns", addrs.resolver, 53, first)))
        if isp.firewall_rules:
            files[f"{isp.name}/firewall.nft"] = firewall.ruleset(isp, sites)
            router.setup.append(("nft", "-f", f"{LAB_DIR}/{isp.name}/firewall.nft"))
        for extra in _router_additions(isp, addrs, sites, host):
            files.update(extra.files)
            router.setup += extra.setup
            router.services += extra.services
            notes += extra.notes
        if isp.dpi_placement == "border":
            # The resolver's recursion crosses the middlebox, whose queue drops it until the program
            # has bound it (fail closed): the backends start services and poll their readiness in
            # this order, so the resolver gets its first query (its readiness probe) only after that.
            router.services.sort(key=lambda svc: svc.name == "resolver")
        vantages[isp.name] = Vantage(isp.name, isp.name, addrs.client.ip, addrs.resolver,
                                     PUBLIC_RESOLVER, isp_asn(index), ca_file=trust_store(isp, pki.ca_pem, files))

    return LabPlan(lab=lab, scenario=scenario, hosts=hosts, links=links, files=files,
                   vantages=vantages, site_addresses=sites, notes=notes, server_probes=addons.probes)


def _check_cohosted_servers(scenario: Scenario, sites: SiteAddresses, taken: dict[str, set[int]]) -> None:
    """An add-on server that takes port 80 or 443 of a site takes it on the site's address: sites
    sharing that address (shared hosting) must all be that server's, or none."""
    if not taken:
        return
    hosted: dict[IPv4Address, list[str]] = {}
    for site in scenario.sites:
        if site.records.cname is not None:
            continue  # an alias is its canonical site's: that one's origin answers for it
        for a in sites.all(site.name):
            hosted.setdefault(a, []).append(site.name)
    for addr, names in hosted.items():
        ports = {name: taken.get(name, set()) & {80, 443} for name in names}
        if len({frozenset(p) for p in ports.values()}) > 1:
            which = ", ".join(f"{n} ({'/'.join(map(str, sorted(p))) or 'none'})" for n, p in ports.items())
            raise ServerError(f"{addr} hosts {which}: an add-on server takes port 80 or 443 of some of them only, "
                              "and one address has one listener per port; give the sites their own addresses "
                              "or name them all in the targets the server is for")


def _origin_site(site: Site, sites: SiteAddresses, isp_nets: dict[str, str], taken: set[int],
                 aliases: Sequence[str] = (), isp_nets6: dict[str, str] | None = None) -> SiteConfig:
    """One site as the origin program (netlab.services.origin) sees it; ``taken``: ports an add-on
    server answers on instead of the origin; ``aliases``: names whose CNAME leads to it."""
    r = site.redirect
    return SiteConfig(
        name=site.name, aliases=list(aliases),
        addresses=[str(a) for a in (*sites.all(site.name), *sites.all6(site.name))],
        pem=f"{LAB_DIR}/pki/{site.name}.pem", headers=[list(h) for h in site.headers],
        paths=[PathConfig(path=p.path, status=p.status, headers=[list(h) for h in p.headers],
                          body_path=f"{LAB_DIR}/inet/pages/{site.name}.path{i}.body" if p.body is not None else None,
                          redirect=None if p.redirect is None else {"to": p.redirect.to,
                                                                    "location": p.redirect.location})
               for i, p in enumerate(site.paths)],
        bad_pem=f"{LAB_DIR}/pki/{site.name}.bad.pem" if site.cert != "valid" else None,
        body_size=site.body_size, https=site.https and 443 not in taken, http=80 not in taken,
        quic=site.https and site.quic and 443 not in taken,
        status=site.status,
        body_path=f"{LAB_DIR}/inet/pages/{site.name}.body" if site.body is not None else None,
        redirect=None if r is None else {"to": r.to, "hops": r.hops, "status": r.status, "location": r.location},
        only_for=[isp_nets[i] for i in site.only_for] + [isp_nets6[i] for i in site.only_for if isp_nets6],
    )


def _router_additions(isp: Isp, addrs: IspAddresses, sites: dict[str, IPv4Address],
                      host: HostCapabilities) -> list[RouterAdditions]:
    """DPI middlebox, TLS interceptor and shaping for one router (netlab.compile.dpi / .intercept / .shaping)."""
    return [compile_dpi(isp, addrs, sites), compile_intercept(isp, addrs, sites), compile_blockpage_servers(isp),
            compile_shaping(isp, addrs, sites, netem_available=host.netem)]


def _connect(hosts: dict[str, Host], links: list[Link], a: str, a_if: str, a_addr: IPv4Interface, b: str,
             b_if: str, b_addr: IPv4Interface, ipv6: bool = False) -> None:
    """A link between hosts ``a`` and ``b`` (made if new); with ``ipv6`` (dual stack) both ends get
    their IPv6 address too (netlab.addressing.link_v6), and both hosts IPv6."""
    for name in (a, b):
        hosts.setdefault(name, Host(name=name, role="client"))
        hosts[name].ipv6 = hosts[name].ipv6 or ipv6
    hosts[a].interfaces.append(Interface(a_if, a_addr, b, b_if, link_v6(a_addr) if ipv6 else None))
    hosts[b].interfaces.append(Interface(b_if, b_addr, a, a_if, link_v6(b_addr) if ipv6 else None))
    links.append(Link(a, a_if, b, b_if))
