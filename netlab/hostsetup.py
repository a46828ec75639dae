"""One host set-up for every backend: the plan's addresses, links and routes, through pyroute2.

The netns backend calls it from outside with a handle on the host's namespace (``NetNS``); in a
container, netlab.services.hostd calls it from inside with ``IPRoute``. Both handles speak the
same netlink API, so a lab host is configured by the same code whichever backend realises it.
"""

from __future__ import annotations

from typing import Any

from netlab.plan import Host

# Services start in this order of their hosts' roles: the internet (root DNS, public resolver,
# origins) before the routers whose resolvers recurse to it, then the rest. A resolver that starts
# before the root answers primes against silence and backs off, failing its clients' queries.
START_RANK = {"internet": 0, "router": 1, "client": 2}


def start_rank(role: str) -> int:
    return START_RANK.get(role, len(START_RANK))


# The kernel's local routing table and link scope (rtnetlink constants).
LOCAL_TABLE = 255
SCOPE_HOST = 254
IFA_F_NODAD = 0x02


def ipv6_sysctls(host: Host) -> dict[str, str]:
    """The host's IPv6 switches, set before its interfaces exist (``default`` applies to new ones):
    off unless the lab is dual stack; then no router advertisements or autoconfiguration (the plan
    gives every address and route) and forwarding on routers."""
    if not host.ipv6:
        return {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"}
    out: dict[str, str] = {}
    for conf in ("all", "default"):
        out |= {f"net.ipv6.conf.{conf}.disable_ipv6": "0", f"net.ipv6.conf.{conf}.accept_dad": "0",
                f"net.ipv6.conf.{conf}.accept_ra": "0", f"net.ipv6.conf.{conf}.autoconf": "0",
                f"net.ipv6.conf.{conf}.forwarding": "1" if host.forwarding else "0"}
    if host.role == "internet":
        # Its sites' addresses are its by a local route (AnyIP), not on an interface: IPv6 lets a
        # program bind such an address only with this (IPv4 needs nothing).
        out["net.ipv6.ip_nonlocal_bind"] = "1"
    return out


def configure_host(ipr: Any, host: Host) -> None:
    """Loopback up, every interface of ``host`` with its address and up, then its routes. The
    interfaces must exist under their plan names (a veth end, or a renamed Docker interface)."""
    lo = ipr.link_lookup(ifname="lo")[0]
    ipr.link("set", index=lo, state="up")
    for iface in host.interfaces:
        idx = ipr.link_lookup(ifname=iface.name)[0]
        ipr.addr("add", index=idx, address=str(iface.address.ip), prefixlen=iface.address.network.prefixlen)
        if iface.address6 is not None:
            # No duplicate address detection: the plan's addresses are unique, and DAD would keep the
            # address tentative (unusable) for a second or more after the link comes up.
            ipr.addr("add", index=idx, address=str(iface.address6.ip), prefixlen=iface.address6.network.prefixlen,
                     flags=IFA_F_NODAD)
        ipr.link("set", index=idx, state="up")
    for route in host.routes:
        if route.local:
            # AnyIP: the whole range is this host's, so one listener per address needs no
            # per-address configuration, however many sites there are.
            ipr.route("add", dst=str(route.dst.network_address), dst_len=route.dst.prefixlen,
                      type="local", scope=SCOPE_HOST, oif=lo, table=LOCAL_TABLE,
                      family=10 if route.dst.version == 6 else 2)
        else:
            ipr.route("add", dst=str(route.dst.network_address), dst_len=route.dst.prefixlen,
                      gateway=str(route.via), family=10 if route.dst.version == 6 else 2)
