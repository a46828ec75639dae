"""What the DPI and shaping compilers add to an ISP router host (plain data, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Network

from netlab.addressing import addresses_of, addresses_v6
from netlab.model import Match
from netlab.plan import Service

# Interface names of the router host (see netlab.addressing / the netns backend).
DOWN_IF = "down0"  # access link, toward the ISP's clients
UP_IF = "up0"  # uplink, toward the lab internet

# NFQUEUE numbers (queues are per network namespace: every router has its own). The shaper's is
# one queue; the DPI middlebox's are DPI_QUEUE .. DPI_QUEUE + DPI_WORKERS - 1 (a contiguous range
# for --queue-balance, clear of the shaper's), one worker process each (the
# engine is Python: one process uses one core). A constant, not the machine's core count, so a
# scenario compiles the same everywhere; 2 is the smallest machine the lab is built for, and a lab
# with several ISPs has one middlebox per router on top of that.
SHAPER_QUEUE = 101
DPI_QUEUE = 110
DPI_WORKERS = 2
# Packet/conntrack mark bit meaning "this flow is blackholed" (set by the middlebox, saved to
# the conntrack entry, then every packet of the flow is dropped in the kernel).
DROP_MARK = 0x40000000
# Mark bit meaning "the middlebox has decided to let this flow pass": saved to the conntrack entry
# the same way, after which the flow's later packets stay in the kernel.
PASS_MARK = 0x20000000
# Socket mark (SO_MARK) of the TLS interceptor's onward connections that carry a client's bytes
# untouched (netlab.services.intercept): the router queues them to the DPI middlebox like forwarded
# client flows, so the other DPI rules still act on what the interceptor lets through.
SPLICE_MARK = 0x10000000
# Mark bits naming the shaping rule a flow belongs to when the rule matches names (sni, http_host):
# the middlebox reads the name and marks the flow (conntrack mark), the router restores the mark on
# every packet, and iptables CLASSIFY puts it in the rule's htb class (netlab.compile.shaping). Rule i: (i + 1) << 16.
SHAPE_MASK = 0x00FF0000
SHAPE_SHIFT = 16
MAX_NAMED_SHAPING = SHAPE_MASK >> SHAPE_SHIFT
# Where the router's TLS interceptor listens; the nat rules redirect the client flows it may
# intercept there (netlab.compile.intercept).
INTERCEPT_PORT = 8443
# The port an intercept rule without `port` concerns (the oracle agrees: netlab.oracle.intercepts).
INTERCEPTED_PORT = 443


@dataclass
class RouterAdditions:
    """Files, one-off setup commands, services and explanations to add to an ISP router host.

    ``files``: paths relative to the lab folder (always under ``<isp>/``); contents may use the
    token ``netlab.plan.LAB_DIR``. ``setup``: argv tuples run once, in order, inside the router
    host after its interfaces are up (they may also use LAB_DIR). ``services``: long-running
    programs of the router. ``notes``: human explanations for ``harness explain``."""

    files: dict[str, str | bytes] = field(default_factory=dict)
    setup: list[tuple[str, ...]] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.files or self.setup or self.services or self.notes)

    def extend(self, other: RouterAdditions) -> RouterAdditions:
        """Append ``other`` to this one (setup order: self first) and return self."""
        self.files.update(other.files)
        self.setup.extend(other.setup)
        self.services.extend(other.services)
        self.notes.extend(other.notes)
        return self


Network = IPv4Network | IPv6Network
#: What ``family: 4|6`` narrows a rule to: a group of one network that holds that family's every address.
FAMILY_NETWORKS: dict[int, Network] = {4: IPv4Network("0.0.0.0/0"), 6: IPv6Network("::/0")}


def dual_stack(site_addresses: dict[str, IPv4Address]) -> bool:
    """Is the lab dual stack (its sites have IPv6 addresses: netlab.addressing.SiteAddresses.v6)?"""
    return bool(getattr(site_addresses, "v6", None))


def server_networks(match: Match, site_addresses: dict[str, IPv4Address]) -> list[list[Network]]:
    """The server-side address constraints of a match, as groups that are ANDed (a packet's
    server address must lie in one network of every group; never in one of the other family).
    Empty list: any address. Dual stack: a site's addresses of both families, ``family`` a group of
    its own."""
    groups: list[list[Network]] = []
    if match.site is not None:
        if match.site not in site_addresses:
            raise ValueError(f"rule references unknown site {match.site!r}")
        groups.append([IPv4Network(f"{a}/32") for a in addresses_of(site_addresses, match.site)]  # a CDN: several
                      + [IPv6Network(f"{a}/128") for a in addresses_v6(site_addresses, match.site)])
    if match.ip is not None:
        groups.append([IPv4Network(f"{match.ip}/32") if match.ip.version == 4 else IPv6Network(f"{match.ip}/128")])
    if match.cidr is not None:
        groups.append([match.cidr])
    if match.family is not None:
        groups.append([FAMILY_NETWORKS[match.family]])
    return groups


def family_networks(nets: list[Network] | None, family: int) -> list[Network] | None:
    """The networks of ``intersect``'s answer in IP version ``family`` (None: any address)."""
    return None if nets is None else [n for n in nets if n.version == family]


def _within(a: Network, b: Network) -> bool:
    """Is ``a`` inside ``b`` (never, for networks of two families)?"""
    if isinstance(a, IPv4Network):
        return isinstance(b, IPv4Network) and a.subnet_of(b)
    return isinstance(b, IPv6Network) and a.subnet_of(b)


def intersect(groups: list[list[Network]]) -> list[Network] | None:
    """The networks an ANDed group list allows (None: any address; []: nothing at all)."""
    if not groups:
        return None
    cur = list(groups[0])
    for grp in groups[1:]:
        nxt: list[Network] = []
        for a in cur:
            for b in grp:
                if _within(a, b):
                    nxt.append(a)
                elif _within(b, a):
                    nxt.append(b)
        cur = nxt
    return cur
