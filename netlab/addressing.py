"""The address plan: which lab address every host, link and site gets.

Lab internet: 198.18.0.0/15 (infrastructure in 198.18.0.1-9: root DNS, public resolver, TLD and
authoritative DNS; sites from 198.18.1.1 upward).
ISP number i (1-based): access network 10.i.0.0/24 (router .1, client .2), uplink 10.i.255.0/24
(router .1, internet .2). Control vantage: 10.0.0.0/24 (internet .1, client .2), no router.
Several labs may use the same plan at once: each lab's namespaces are joined only to each other
(a container lab's are inside its container).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network

LAB_INTERNET = IPv4Network("198.18.0.0/15")
ACCESS_RANGE = IPv4Network("10.0.0.0/8")
ROOT_DNS = IPv4Address("198.18.0.1")
PUBLIC_RESOLVER = IPv4Address("198.18.0.2")
# The DNS hierarchy below the root (netlab.compile.dns): every TLD's name server, and the
# authoritative server of every zone under a TLD (one address each tier, so referrals are real).
TLD_DNS = IPv4Address("198.18.0.3")
AUTH_DNS = IPv4Address("198.18.0.4")
WHOAMI_DNS = IPv4Address("198.18.0.5")  # the authority of `internet.whoami`, answering who asks
# IPv6 addresses a scenario may publish (AAAA records): the benchmarking range, as 198.18.0.0/15 is.
LAB_INTERNET_V6 = IPv6Network("2001:2::/48")
# Dual stack (`internet: {ipv6: true}`): the lab internet's hosts (infrastructure and sites) live in
# the range's first /64, every other lab address (198.18.a.b) mirrored at 2001:2::c612:ab (the v4
# address in the low 32 bits), so both families of a host read alike; the lab internet owns the
# whole /64 (AnyIP, as 198.18.0.0/15), so a site may also take any other address there. Every link
# (10.x.y.0/24) gets a /64 of its own further in the range: link_v6 says which.
SITES_V6 = IPv6Network("2001:2::/64")
INFRA_LAST = IPv4Address("198.18.0.9")
FIRST_SITE = IPv4Address("198.18.1.1")
# Every ISP's transparent proxy (netlab.services.proxy) gets one address of this block of the lab
# internet: the ISP owns it (its ASN in OONI's ip_info), yet it is no bogon, like a real ISP proxy.
PROXY_BLOCK = IPv4Network("198.19.255.0/24")
MAX_ISPS = 249
# ASNs from the private range, one per ISP; the lab internet's own ASN for the control.
INTERNET_ASN = 64500


def isp_asn(index: int) -> int:
    return INTERNET_ASN + index


@dataclass(frozen=True)
class IspAddresses:
    index: int
    router_down: IPv4Interface  # router side of the access link
    client: IPv4Interface
    router_up: IPv4Interface  # router side of the uplink
    internet_side: IPv4Interface  # internet side of the uplink

    @property
    def access_network(self) -> IPv4Network:
        return self.client.network

    @property
    def resolver(self) -> IPv4Address:
        """The ISP resolver listens on the router's access address."""
        return self.router_down.ip


def isp_addresses(index: int) -> IspAddresses:
    if not 1 <= index <= MAX_ISPS:
        raise ValueError(f"ISP index {index} outside 1..{MAX_ISPS}")
    return IspAddresses(
        index=index,
        router_down=IPv4Interface(f"10.{index}.0.1/24"),
        client=IPv4Interface(f"10.{index}.0.2/24"),
        router_up=IPv4Interface(f"10.{index}.255.1/24"),
        internet_side=IPv4Interface(f"10.{index}.255.2/24"),
    )


CONTROL_CLIENT = IPv4Interface("10.0.0.2/24")
CONTROL_INTERNET_SIDE = IPv4Interface("10.0.0.1/24")


def v6_of(addr: IPv4Address) -> IPv6Address:
    """The IPv6 twin of a lab internet address (198.18.1.1 -> 2001:2::c612:101)."""
    if addr not in LAB_INTERNET:
        raise ValueError(f"{addr} is not a lab internet address")
    return SITES_V6.network_address + int(addr)


# The infrastructure's IPv6 twins (root and TLD DNS, resolvers...): no site may take them.
INFRA_V6 = (v6_of(LAB_INTERNET.network_address), v6_of(INFRA_LAST))


def is_site_address_v6(addr: IPv6Address) -> bool:
    """IPv6 addresses a scenario may give a site: the lab internet's /64 minus the infrastructure's twins."""
    return addr in SITES_V6 and not (int(INFRA_V6[0]) <= int(addr) <= int(INFRA_V6[1]))


def link_v6(iface: IPv4Interface) -> IPv6Interface:
    """The IPv6 address of a link's end (10.x.y.z/24): /64 number 1 + 2x + (y == 255) of the range
    (ISP x's access link, then its uplink; the control's is number 1), host z: 10.1.0.2 ->
    2001:2:0:3::2. Never the sites' /64 (number 0)."""
    _, x, y, z = iface.ip.packed
    if iface.ip not in ACCESS_RANGE or y not in (0, 255) or iface.network.prefixlen != 24:
        raise ValueError(f"{iface} is not a link address of the plan")
    return IPv6Interface((int(LAB_INTERNET_V6.network_address) + ((1 + 2 * x + (y == 255)) << 64) + z, 64))


def _allocatable(addr: IPv4Address) -> bool:
    return addr in LAB_INTERNET and addr.packed[-1] not in (0, 255) and addr not in PROXY_BLOCK


# How many sites the plan can hold: the addresses allocate_sites hands out, from FIRST_SITE to the
# end of the lab internet, without .0/.255 and the proxy block (510 /24s of 254 = 129,540). A site
# with a fixed address either takes one of these or one outside the pool (198.18.0.10-198.18.0.255,
# a .0 or .255), so any number of sites up to this always gets addresses.
def _site_capacity() -> int:
    count = 0
    for block in range(int(FIRST_SITE) >> 8, (int(LAB_INTERNET.broadcast_address) >> 8) + 1):  # every /24
        if IPv4Address(block << 8) not in PROXY_BLOCK:
            lowest = max(1, int(FIRST_SITE) - (block << 8))  # hosts lowest..254 of this /24
            count += max(0, 255 - lowest)
    return count


SITE_CAPACITY = _site_capacity()


class SiteAddresses(dict[str, IPv4Address]):
    """Site name -> its (first) address, as every consumer of one address per site reads it, and
    ``all(name)``: every address of a site served from several (a CDN), in the order its A records
    are published. Several sites may share an address (shared hosting)."""

    def __init__(self, first: Mapping[str, IPv4Address], extra: Mapping[str, tuple[IPv4Address, ...]] | None = None,
                 v6: Mapping[str, tuple[IPv6Address, ...]] | None = None) -> None:
        super().__init__(first)
        self.extra = dict(extra or {})
        self.v6 = dict(v6 or {})  # dual stack only: every site's IPv6 addresses (AAAA records)

    def all(self, name: str) -> tuple[IPv4Address, ...]:
        return self.extra.get(name) or (self[name],)

    def all6(self, name: str) -> tuple[IPv6Address, ...]:
        """Site ``name``'s IPv6 addresses: none unless the lab is dual stack."""
        return self.v6.get(name, ())


def addresses_of(site_addresses: Mapping[str, IPv4Address], name: str) -> tuple[IPv4Address, ...]:
    """Every address of site ``name`` (a plain mapping knows one per site)."""
    if isinstance(site_addresses, SiteAddresses):
        return site_addresses.all(name)
    return (site_addresses[name],)


def addresses_v6(site_addresses: Mapping[str, IPv4Address], name: str) -> tuple[IPv6Address, ...]:
    """Every IPv6 address of site ``name`` (dual stack; none in a v4-only lab or a plain mapping)."""
    return site_addresses.all6(name) if isinstance(site_addresses, SiteAddresses) else ()


def both_families(site_addresses: Mapping[str, IPv4Address], name: str) -> tuple[IPv4Address | IPv6Address, ...]:
    """What a dual-stack client resolves for ``name``: its A records, then its AAAA records."""
    return addresses_of(site_addresses, name) + addresses_v6(site_addresses, name)


def allocate_sites(wanted: dict[str, IPv4Address | None], reserved: Iterable[IPv4Address] = ()
                   ) -> dict[str, IPv4Address]:
    """Give every site an address: the fixed ones as given, the others in order from FIRST_SITE,
    skipping taken addresses (and ``reserved`` ones: the further addresses of CDN sites), the proxy
    block and .0/.255 for readability. The loader keeps the number of sites within SITE_CAPACITY,
    so the ValueError here means a caller skipped it."""
    taken = {a for a in wanted.values() if a is not None} | set(reserved)
    out: dict[str, IPv4Address] = {}
    nxt = int(FIRST_SITE)
    for name, fixed in wanted.items():
        if fixed is not None:
            out[name] = fixed
            continue
        while True:
            cand = IPv4Address(nxt)
            nxt += 1
            if cand not in LAB_INTERNET:
                raise ValueError("the lab internet 198.18.0.0/15 has no address left")
            if not _allocatable(cand) or cand in taken:
                continue
            out[name] = cand
            break
    return out


def is_site_address(addr: IPv4Address) -> bool:
    """Addresses a scenario may give a site: the lab internet minus its infrastructure block."""
    return addr in LAB_INTERNET and not (int(addr) <= int(INFRA_LAST))


def is_lab_bogon(addr: str | IPv4Address | IPv6Address) -> bool:
    """A DNS answer outside the lab internet (either family's) is a bogon: private, loopback, reserved..."""
    ip = ipaddress.ip_address(addr)
    return ip not in (LAB_INTERNET if ip.version == 4 else SITES_V6)
