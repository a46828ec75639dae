"""Compile an ISP's ``shaping:`` rules for its router.

- ``rate``: tc htb on both ends of the router, one class per rule, u32 filters in rule order
  (first match wins): egress of ``down0`` shapes downstream (server -> client, matched on the
  source address/port), egress of ``up0`` shapes upstream (matched on the destination).
  Unclassified traffic bypasses the classes (htb ``default 0``) and is never shaped.
- ``delay`` (added to the downstream direction, so it adds that much round-trip time) and
  ``loss`` (per packet, in each direction): netem under the rule's htb class when the kernel
  has netem; otherwise the middlebox program (``netlab.services.dpi`` in shaper mode on its own
  NFQUEUE, in ``mangle FORWARD`` before the firewall) holds and drops the matching packets.

A rule that matches names (``sni``, ``http_host``) cannot be a u32 filter: the DPI middlebox reads
the name (netlab.compile.dpi) and marks the flow's conntrack entry with the rule's mark
(``shape_mark``); ``mangle PREROUTING`` restores that mark on every packet of the flow, both ways,
and ``mangle POSTROUTING`` puts the marked packets in the rule's htb class (iptables CLASSIFY:
htb takes a packet's priority as its class before any filter; no fw or u32 mark filter here), its
shaper-mode rule a mark match. The
packets before the name (the handshake, the ClientHello itself) go unshaped, or to a later
address rule; a client whose name the middlebox does not read (``dpi.reassembly``) is not shaped.
"""

from __future__ import annotations

from ipaddress import IPv4Address

from netlab.addressing import IspAddresses, link_v6
from netlab.compile.router import (
    DOWN_IF,
    SHAPE_MASK,
    SHAPE_SHIFT,
    SHAPER_QUEUE,
    UP_IF,
    Network,
    RouterAdditions,
    dual_stack,
    family_networks,
    intersect,
    server_networks,
)
from netlab.model import Isp, ShapingRule
from netlab.plan import LAB_DIR, ReadyCheck, Service
from netlab.services.configs import ShaperConfig, ShaperRule

__all__ = ["compile_shaping", "named_shaping", "shape_mark", "shaper_config"]

CHAIN = "NETLAB-SHAPE"
CLASS_CHAIN = "NETLAB-SHAPE-CLASS"  # the htb class of the packets of rules on names
FAST = "10gbit"  # the rate of a class that only carries netem
_PROTO_NUM = {"tcp": 6, "udp": 17}


def is_named(rule: ShapingRule) -> bool:
    """Does the rule match names, which only the middlebox can read?"""
    return rule.match.sni is not None or rule.match.http_host is not None


def named_shaping(isp: Isp) -> list[tuple[int, ShapingRule]]:
    """The ISP's shaping rules that match names, with their index in its shaping list."""
    return [(i, r) for i, r in enumerate(isp.shaping) if is_named(r)]


def shape_mark(index: int) -> int:
    """The packet/conntrack mark of shaping rule number ``index`` (0-based) of an ISP."""
    return (index + 1) << SHAPE_SHIFT


V6_PRIO = 1000  # tc filter priorities of the IPv6 filters start past the IPv4 ones (a priority has one protocol)


def _nets(rule: ShapingRule, site_addresses: dict[str, IPv4Address]) -> list[Network] | None:
    return intersect(server_networks(rule.match, site_addresses))


def _families(site_addresses: dict[str, IPv4Address]) -> tuple[int, ...]:
    """The IP versions the router shapes: IPv6 too in a dual-stack lab."""
    return (4, 6) if dual_stack(site_addresses) else (4,)


def _u32(direction: str, net: Network | None, rule: ShapingRule, family: int = 4) -> list[str]:
    """u32 match arguments; direction 'down' matches the server as source, 'up' as destination."""
    m = rule.match
    side = "src" if direction == "down" else "dst"
    port = "sport" if direction == "down" else "dport"
    ip = "ip" if family == 4 else "ip6"
    args: list[str] = []
    if net is not None:
        args += ["match", ip, side, str(net)]
    if m.proto:
        args += ["match", ip, "protocol", str(_PROTO_NUM[m.proto]), "0xff"]
    if m.port is not None:
        args += ["match", ip, port, str(m.port), "0xffff"]
    if not args:
        args = ["match", "u32", "0", "0"]
    return args


def shaper_config(isp: Isp, site_addresses: dict[str, IPv4Address],
                  client_network: str | None = None, client_network6: str | None = None) -> ShaperConfig:
    """The config of the shaper program (shaper.json)."""
    return ShaperConfig(
        isp=isp.name,
        queue=SHAPER_QUEUE,
        ready_file=f"{LAB_DIR}/{isp.name}/shaper.ready",
        mark_mask=SHAPE_MASK,
        client_network=client_network,
        client_network6=client_network6,
        # rules without delay/loss are kept so first-match order is the scenario's
        shaping=[ShaperRule(servers=server_networks(r.match, site_addresses), port=r.match.port,
                            proto=r.match.proto, delay_ms=r.delay_ms, loss=r.loss,
                            mark=shape_mark(i) if is_named(r) else None,  # its flows carry it (the middlebox's)
                            describe=r.describe())
                 for i, r in enumerate(isp.shaping)],
    )


def _iptables_matches(index: int, rule: ShapingRule, nets: list[Network] | None) -> list[tuple[str, str, str]]:
    """(in interface, out interface, match arguments) of every packet of the rule, in both
    directions: server -> client (up0 -> down0) and client -> server (down0 -> up0)."""
    out: list[tuple[str, str, str]] = []
    if is_named(rule):  # the middlebox checked names and addresses: the mark says it all
        mark = f"-m mark --mark 0x{shape_mark(index):x}/0x{SHAPE_MASK:x}"
        return [(UP_IF, DOWN_IF, mark), (DOWN_IF, UP_IF, mark)]
    m = rule.match
    protos = [m.proto] if m.proto else (["tcp", "udp"] if m.port is not None else [None])
    for net in nets if nets is not None else [None]:
        for proto in protos:
            for in_if, out_if, side, port in ((UP_IF, DOWN_IF, "-s", "--sport"), (DOWN_IF, UP_IF, "-d", "--dport")):
                args = [f"{side} {net}" if net is not None else "", f"-p {proto}" if proto else "",
                        f"{port} {m.port}" if m.port is not None else ""]
                out.append((in_if, out_if, " ".join(a for a in args if a)))
    return out


def _shaper_iptables(isp: Isp, site_addresses: dict[str, IPv4Address], family: int = 4) -> str:
    """The rules that queue the emulated rules' packets to the shaper, for IP version ``family``
    (an iptables-restore input, or an ip6tables-restore one)."""
    bypass = " --queue-bypass" if isp.dpi_fail == "open" else ""
    lines = ["# generated by netlab.compile.shaping: delay/loss emulation for " + isp.name, "*mangle",
             f":{CHAIN} - [0:0]", f"-I FORWARD 1 -j {CHAIN}"]
    for index, r in enumerate(isp.shaping):
        nets = family_networks(_nets(r, site_addresses), family)
        if nets == []:
            continue
        # a rule without delay/loss still wins over later ones: RETURN keeps its packets here
        target = f"NFQUEUE --queue-num {SHAPER_QUEUE}{bypass}" if (r.delay_ms or r.loss) else "RETURN"
        for in_if, out_if, args in _iptables_matches(index, r, nets):
            lines.append(f"-A {CHAIN} -i {in_if} -o {out_if}{' ' + args if args else ''} -j {target}")
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def _mark_iptables(isp: Isp, tc_rules: list[tuple[int, ShapingRule, list[Network] | None]], family: int = 4) -> str:
    """Rules on names: every packet of a marked flow gets its mark back from the conntrack entry
    (PREROUTING, for the shaper's queue), and its htb class from the mark (POSTROUTING: htb takes a
    packet's priority as its class before any filter). Address rules before it in the list keep
    their packets for their u32 filters (RETURN), so the first matching rule still wins."""
    lines = [f"# generated by netlab.compile.shaping: the name-matched shaping of {isp.name}", "*mangle",
             f"-I PREROUTING 1 -j CONNMARK --restore-mark --mask 0x{SHAPE_MASK:x}",
             f":{CLASS_CHAIN} - [0:0]", f"-I POSTROUTING 1 -j {CLASS_CHAIN}"]
    for index, r, any_nets in tc_rules:
        nets = family_networks(any_nets, family)
        if nets == []:
            continue
        for _in_if, out_if, args in _iptables_matches(index, r, nets):
            where = f"-A {CLASS_CHAIN} -o {out_if}{' ' + args if args else ''}"
            if is_named(r):
                lines.append(f"{where} -j CLASSIFY --set-class 1:{index + 10:x}")
            lines.append(f"{where} -j RETURN")
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def compile_shaping(
    isp: Isp, addrs: IspAddresses, site_addresses: dict[str, IPv4Address], netem_available: bool
) -> RouterAdditions:
    if not isp.shaping:
        return RouterAdditions()
    out = RouterAdditions()
    emulate = False
    tc_rules: list[tuple[int, ShapingRule, list[Network] | None]] = []
    families = _families(site_addresses)
    restore = {4: "iptables-restore", 6: "ip6tables-restore"}
    suffix = {4: "", 6: "6"}
    for i, r in enumerate(isp.shaping):
        nets = _nets(r, site_addresses)
        if nets == []:
            out.notes.append(f"{isp.name}: shaping {r.describe()} matches no address (constraints disjoint)")
            continue
        wants_netem = r.delay_ms is not None or r.loss is not None
        if r.rate_bps is not None or (wants_netem and netem_available):
            tc_rules.append((i, r, nets))
        if wants_netem and not netem_available:
            emulate = True
    if named_shaping(isp):
        for family in families:
            path = f"{isp.name}/shape-marks{suffix[family]}.rules"
            out.files[path] = _mark_iptables(isp, tc_rules, family)
            out.setup.append((restore[family], "--noflush", f"{LAB_DIR}/{path}"))
        out.notes.append(f"{isp.name}: shaping rules matching sni/http_host: the DPI middlebox marks their flows "
                         f"(conntrack mark bits 0x{SHAPE_MASK:x}), restored on every packet, which iptables "
                         "CLASSIFY puts in the rule's htb class")
    if tc_rules:
        for dev, direction in ((DOWN_IF, "down"), (UP_IF, "up")):
            out.setup.append(("tc", "qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb", "default", "0"))
            for i, r, nets in tc_rules:
                classid = f"1:{i + 10:x}"
                rate = f"{r.rate_bps}bit" if r.rate_bps is not None else FAST
                out.setup.append(
                    ("tc", "class", "add", "dev", dev, "parent", "1:", "classid", classid,
                     "htb", "rate", rate, "ceil", rate)
                )
                if netem_available and (r.delay_ms is not None or r.loss is not None):
                    netem = ["tc", "qdisc", "add", "dev", dev, "parent", classid, "handle", f"{i + 10:x}:", "netem"]
                    if r.delay_ms is not None and direction == "down":
                        netem += ["delay", f"{r.delay_ms:g}ms"]
                    if r.loss is not None:
                        netem += ["loss", f"{r.loss * 100:g}%"]
                    if r.rate_bps is not None:
                        netem += ["limit", "10000"]
                    out.setup.append(tuple(netem))
                if is_named(r):  # no filter: iptables CLASSIFY picks its class (neither fw nor u32's
                    continue     # mark key is in every kernel)
                for family in families:
                    protocol, prio = ("ip", i + 1) if family == 4 else ("ipv6", V6_PRIO + i + 1)
                    filter_ = ("tc", "filter", "add", "dev", dev, "parent", "1:", "protocol", protocol,
                               "prio", str(prio))
                    fam_nets = family_networks(nets, family)
                    for net in fam_nets if fam_nets is not None else [None]:
                        out.setup.append((*filter_, "u32", *_u32(direction, net, r, family), "flowid", classid))
        for _i, r, _ in tc_rules:
            how = "tc htb" + (" + netem" if netem_available and (r.delay_ms or r.loss) else "")
            out.notes.append(f"{isp.name}: shaping {r.describe()} with {how} on {DOWN_IF} (down) and {UP_IF} (up)")
    if emulate:
        base = f"{isp.name}/"
        config = shaper_config(isp, site_addresses, str(addrs.access_network),
                               str(link_v6(addrs.client).network) if 6 in families else None)
        out.files[base + "shaper.json"] = config.to_json()
        for family in families:
            path = f"{isp.name}/shaper{suffix[family]}.rules"
            out.files[path] = _shaper_iptables(isp, site_addresses, family)
            out.setup.append((restore[family], "--noflush", f"{LAB_DIR}/{path}"))
        out.services.append(
            Service(
                "shaper",
                ("python3", "-m", "netlab.services.dpi", "--config", f"{LAB_DIR}/{isp.name}/shaper.json"),
                ready=ReadyCheck(kind="file", address=addrs.router_down.ip, port=0,
                                 path=f"{isp.name}/shaper.ready"),
                critical=True,
            )
        )
        out.notes.append(
            f"{isp.name}: delay/loss emulated by the middlebox (NFQUEUE {SHAPER_QUEUE}): this kernel has no "
            "netem qdisc; delay is added to server->client packets, loss drops packets in both directions"
        )
    return out
