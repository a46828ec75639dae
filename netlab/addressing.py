"""The address plan: which lab address every host, link and site gets.

Lab internet: 198.18.0.0/15 (infrastructure in 198.18.0.1-9, sites from 198.18.1.1 upward).
ISP number i (1-based): access network 10.i.0.0/24 (router .1, client .2), uplink 10.i.255.0/24
(router .1, internet .2). Every link is a /24 whose .254 stays free: Docker puts its bridge there.
Control vantage: 10.0.0.0/24 (internet .1, client .2), no router.
Several labs may use the same plan at once: each lab's namespaces are joined only to each other.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

LAB_INTERNET = IPv4Network("198.18.0.0/15")
ACCESS_RANGE = IPv4Network("10.0.0.0/8")
ROOT_DNS = IPv4Address("198.18.0.1")
PUBLIC_RESOLVER = IPv4Address("198.18.0.2")
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
            count += sum(1 for host in range(1, 255) if (block << 8) + host >= int(FIRST_SITE))
    return count


SITE_CAPACITY = _site_capacity()


def allocate_sites(wanted: dict[str, IPv4Address | None]) -> dict[str, IPv4Address]:
    """Give every site an address: the fixed ones as given, the others in order from FIRST_SITE,
    skipping taken addresses, the proxy block and .0/.255 for readability. The loader keeps the
    number of sites within SITE_CAPACITY, so the ValueError here means a caller skipped it."""
    taken = {a for a in wanted.values() if a is not None}
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


def is_lab_bogon(addr: str | IPv4Address) -> bool:
    """A DNS answer outside the lab internet is a bogon: private, loopback, reserved..."""
    ip = ipaddress.ip_address(addr)
    return ip not in LAB_INTERNET
