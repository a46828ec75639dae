"""The lab's DNS hierarchy by name: which zones exist, which zone holds a name, and what the lab's
own name servers are called. Pure; netlab.compile.dns writes the zones, the loader refuses site
names that would take one of the servers' names.

The root (``.``) delegates every TLD to ``ns.nic.<tld>`` (glue in the root zone); a TLD delegates
every zone under it to ``ns1.<zone>`` (glue in the TLD zone), or to the names a site's
``records: {NS: ...}`` gives. A zone is a registrable name (the last two labels of a name), or
a site with NS records of its own (a delegation further down).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

ROOT_NS = "ns.lab-root"  # the root server's name: in the root zone itself (lab-root is no delegated TLD)
INFRA_TLD = "lab-root"


def tld_of(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def tld_ns(tld: str) -> str:
    """The name of a TLD's name server (in-bailiwick: its address is glue in the root zone)."""
    return f"ns.nic.{tld}"


def default_zone_ns(zone: str) -> str:
    """The name server of a zone without NS records of its own (glue in its TLD's zone)."""
    return f"ns1.{zone}"


def registrable(name: str) -> str:
    """The zone a TLD delegates for ``name``: its last two labels (a single label: the TLD)."""
    return ".".join(name.split(".")[-2:])


def zone_apexes(names: Iterable[str], delegated: Iterable[str]) -> set[str]:
    """Every zone under a TLD: the registrable part of each name, and each ``delegated`` name (a
    site with NS records)."""
    apexes = {registrable(n) for n in names if "." in n}
    return apexes | {d for d in delegated if "." in d}


def zone_of(name: str, apexes: set[str]) -> str:
    """The zone whose data holds ``name``: the closest apex at or above it, else its TLD."""
    labels = name.split(".")
    for i in range(len(labels) - 1):
        candidate = ".".join(labels[i:])
        if candidate in apexes:
            return candidate
    return labels[-1]


def parent_zone(apex: str, apexes: set[str]) -> str:
    """The zone that delegates ``apex`` (a TLD, or a zone above it)."""
    return zone_of(apex.split(".", 1)[1], apexes)


def reserved_dns_name(name: str, delegated: Collection[str]) -> str | None:
    """Why a site cannot be called ``name`` (it would take a name the lab's servers answer to),
    or None. ``delegated``: the sites with NS records (their zones have no ``ns1`` server)."""
    tld = tld_of(name)
    if tld == INFRA_TLD:
        return f"the TLD {INFRA_TLD} is the lab's own (its root server is {ROOT_NS})"
    nic = f"nic.{tld}"
    if name == nic or name.endswith("." + nic):
        return f"{nic} holds the name server of the TLD {tld} ({tld_ns(tld)})"
    if name.startswith("ns1."):
        zone = name[4:]
        if "." in zone and zone == registrable(zone) and zone not in delegated:
            return (f"{name} is the name server of the zone {zone}; give the site another name, or "
                    f"records: {{NS: ...}} on a site {zone}")
    return None
