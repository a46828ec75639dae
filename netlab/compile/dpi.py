"""Compile an ISP's ``dpi:`` rules into the router's middlebox: an iptables-nft rule set that
queues the first client packets of each forwarded flow to NFQUEUE, and the config of the
``netlab.services.dpi`` program bound to that queue.

Data path in the router (netfilter forward hook): the lead firewall (nft ``inet netlab_fw``,
priority -10) first, then iptables' ``filter FORWARD`` (priority 0) where chain ``NETLAB-DPI``:

1. saves a packet's drop mark (set by the middlebox) into its conntrack entry;
2. drops every packet of a flow whose conntrack entry carries that mark (the whole flow is
   blackholed in the kernel, retransmissions included); likewise saves the pass mark (a TCP
   flow the middlebox has decided to let through) and lets the rest of such a flow skip it;
3. queues the first client->internet packets of every flow to NFQUEUE (``dpi.reassembly.packets``,
   default 10, the SYN and the handshake's ACK included; the program keeps at most
   ``dpi.reassembly.bytes`` of each client stream, default 16 KiB),
   with ``--queue-bypass`` only when the scenario says ``dpi_fail: open``. UDP keyword rules are
   matched by the kernel itself where they are the only rules that can act (``kernel_keyword_rules``),
   so those datagrams never cross to userspace.

With ``workers`` > 1 (default ``DPI_WORKERS``) step 3 spreads packets over that many queues with
``--queue-balance``, one worker process per queue. The kernel picks the queue by a hash of the
source and destination addresses and the protocol (not the ports: ``hash_v4`` in
include/net/netfilter/nf_queue.h), so every packet of a flow, and every flow of a client-server
pair and protocol, meets the same worker; the one state that spans protocols, residual blocking,
is shared between the workers (``netlab.services.dpi.ResidualTable``).

Placement (``dpi: {placement: ...}``): ``access`` (the default) is the above, the clients'
forwarded traffic only. ``border`` puts the middlebox between the whole ISP and the internet: a
second chain, ``NETLAB-DPI-OUT`` on ``filter OUTPUT``, does steps 1-3 for the router's own packets
leaving on the uplink, which carry the ISP resolver's recursion. A forged DNS answer then goes to
the resolver (a local address: the raw socket delivers it over loopback) before its query is let
through, so it is in the resolver's socket ahead of the real answer, which is a round trip through
the lab internet away: the resolver caches the forged one every time.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from netlab.addressing import IspAddresses
from netlab.compile.router import (
    DOWN_IF,
    DPI_QUEUE,
    DPI_WORKERS,
    DROP_MARK,
    PASS_MARK,
    SHAPE_MASK,
    SPLICE_MARK,
    UP_IF,
    RouterAdditions,
    dual_stack,
    family_networks,
    intersect,
    server_networks,
)
from netlab.compile.shaping import named_shaping, shape_mark
from netlab.model import Isp, Rule
from netlab.plan import LAB_DIR, ReadyCheck, Service
from netlab.services.configs import DpiConfig, DpiRule, NameShapeRule

__all__ = ["PLACEMENTS", "RouterAdditions", "compile_dpi", "dpi_config", "dpi_iptables_rules"]

CHAIN = "NETLAB-DPI"
OUT_CHAIN = "NETLAB-DPI-OUT"  # placement: border, the router's own traffic
SPLICE_CHAIN = "NETLAB-DPI-SPLICE"  # the TLS interceptor's spliced client flows (netlab.services.intercept)
PLACEMENTS = ("access", "border")
PLACEMENT_NOTES = {
    "access": "{isp}: placement access: the middlebox sees the clients' traffic only; DNS rules see the "
              "queries that cross the router (e.g. to the public resolver), not the recursion of the "
              "ISP's own resolver on the router.",
    "border": "{isp}: placement border: the middlebox sits between the whole ISP and the internet, so it "
              "also sees the router's own traffic (chain NETLAB-DPI-OUT on OUTPUT): SNI, Host and keyword "
              "rules apply to it, and a dns_query inject answers the ISP resolver's queries to the lab's "
              "name servers, whose cache then hands the forged address to every client.",
}
ACTIONS = ("reset", "drop", "blockpage", "close", "inject")
_NAME_KEYS = ("sni", "http_host", "dns_query")
QUIC_PORT = 443  # where the middlebox reads QUIC when a rule names no port


def _rule_proto(rule: Rule) -> set[str]:
    """Transport protocols a rule can ever match."""
    m = rule.match
    if rule.transport == "quic":
        return {"udp"}
    if m.sni and rule.transport == "any":
        return {m.proto} if m.proto else {"tcp", "udp"}
    if m.sni or m.http_host:
        return {"tcp"}
    if m.dns_query:
        return {"udp"}
    return {m.proto} if m.proto else {"tcp", "udp"}


def _check(rule: Rule, isp: Isp) -> None:
    where = f"isp {isp.name}, dpi rule at line {rule.line}"
    m = rule.match
    if rule.action not in ACTIONS:
        raise ValueError(f"{where}: unknown DPI action {rule.action!r}")
    if not any(getattr(m, k) for k in (*_NAME_KEYS, "keyword")) and rule.transport != "quic":
        raise ValueError(f"{where}: a DPI rule needs sni, http_host, dns_query or keyword (or transport quic)")
    if rule.action == "inject" and (not m.dns_query or rule.address is None):
        raise ValueError(f"{where}: inject needs dns_query and an address")
    if rule.action == "blockpage" and not (m.http_host or m.keyword):
        raise ValueError(f"{where}: blockpage needs http_host or keyword")
    if m.proto and m.proto not in ("tcp", "udp"):
        raise ValueError(f"{where}: proto must be tcp or udp")
    if rule.transport == "quic" and (m.http_host or m.dns_query or m.keyword or m.proto == "tcp"):
        raise ValueError(f"{where}: a QUIC rule matches sni and addresses only")
    tcp_only = m.http_host or (m.sni and rule.transport == "tcp")
    if (tcp_only and m.proto == "udp") or (m.dns_query and m.proto == "tcp"):
        raise ValueError(f"{where}: proto contradicts the protocol field matched")


def _page(rule: Rule) -> bytes | None:
    """A page the scenario declares (netlab.blockpage); None: the middlebox's own."""
    bp = rule.blockpage
    return None if bp is None or bp.is_default else bp.response()


def middlebox_rules(isp: Isp) -> tuple[Rule, ...]:
    """The DPI rules the middlebox applies: all but ``intercept``, the interceptor's
    (netlab.compile.intercept)."""
    return tuple(r for r in isp.dpi_rules if r.action != "intercept")


def dpi_config(isp: Isp, addrs: IspAddresses, site_addresses: dict[str, IPv4Address],
               workers: int = DPI_WORKERS) -> DpiConfig:
    """The config of the middlebox program (dpi.json)."""
    rules = []
    for rule in middlebox_rules(isp):
        _check(rule, isp)
        m = rule.match
        rules.append(DpiRule(
            sni=m.sni, http_host=m.http_host, dns_query=m.dns_query, keyword=m.keyword,
            servers=server_networks(m, site_addresses), port=m.port, proto=m.proto, action=rule.action,
            address=str(rule.address) if rule.address else None, residual=rule.residual, page=_page(rule),
            transport=rule.transport, quic=rule.quic, line=rule.line, describe=rule.describe()))
    return DpiConfig(
        isp=isp.name,
        placement=isp.dpi_placement,
        queue=DPI_QUEUE,
        queues=list(range(DPI_QUEUE, DPI_QUEUE + workers)),
        drop_mark=DROP_MARK,
        pass_mark=PASS_MARK,
        inspect_packets=isp.dpi_reassembly.packets,
        max_stream=isp.dpi_reassembly.bytes,
        client_network=str(addrs.access_network),
        ready_file=f"{LAB_DIR}/{isp.name}/dpi.ready",
        rules=rules,
        # Shaping rules that match names: the middlebox reads the name, the flow gets the rule's mark.
        shape=[NameShapeRule(sni=r.match.sni, http_host=r.match.http_host, port=r.match.port, proto=r.match.proto,
                             servers=server_networks(r.match, site_addresses), mark=shape_mark(i), line=r.line,
                             describe=r.describe())
               for i, r in named_shaping(isp)],
    )


STRING_MAX = 128  # the longest pattern the kernel's string match takes (XT_STRING_MAX_PATTERN_SIZE)
UDP_PAYLOAD = 28  # where a UDP datagram's payload starts (IPv4 header without options + UDP header)


def kernel_keyword_rules(isp: Isp, site_addresses: dict[str, IPv4Address] | None = None,
                         ) -> list[tuple[Rule, list[IPv4Network] | None]] | None:
    """The UDP keyword rules the kernel matches itself (iptables ``string``), each with the server
    networks it is narrowed to (None: any); None when UDP keywords must stay in the middlebox.

    On UDP a keyword is looked for in each datagram on its own (no stream to reassemble), and every
    action of a keyword rule is a drop there (reset, blockpage and close have no UDP form), so the
    kernel can do it without queueing the datagram: the flow gets the drop mark in its conntrack
    entry, as when the middlebox drops it. The middlebox keeps the UDP ports other rules read
    (DNS 53, QUIC), where rule order decides between a keyword and a name, and all of UDP when a
    rule has a residual block (its table, in the middlebox, covers every protocol of a pair) or a
    keyword rule is narrowed in a way one iptables rule per server network cannot say."""
    rules = middlebox_rules(isp)
    if any(r.residual for r in rules):
        return None
    out = []
    for rule in rules:
        m = rule.match
        if "udp" not in _rule_proto(rule) or m.dns_query or rule.reads_quic:
            continue
        if m.keyword is None or len(m.keyword.encode()) > STRING_MAX or \
                (m.site is not None and m.site not in (site_addresses or {})):
            return None
        # iptables (IPv4) rules: a dual-stack lab's IPv6 flows all go to the middlebox (dpi6.rules)
        nets = family_networks(intersect(server_networks(m, site_addresses or {})), 4)
        out.append((rule, [n for n in nets if isinstance(n, IPv4Network)] if nets is not None else None))
    return out


def reads_ipv6(isp: Isp, site_addresses: dict[str, IPv4Address]) -> bool:
    """Does the middlebox read IPv6 flows: a dual-stack lab where a rule (DPI, or shaping by name)
    is not limited to ``family: 4``?"""
    return dual_stack(site_addresses) and (any(r.match.family != 4 for r in middlebox_rules(isp))
                                           or any(r.match.family != 4 for _, r in named_shaping(isp)))


def _string_match(keyword: str) -> str:
    """iptables' string match on a UDP datagram's payload, the pattern in hex (any byte goes)."""
    return f"-m string --algo bm --from {UDP_PAYLOAD} --hex-string |{keyword.encode().hex()}|"


def _queue_target(workers: int) -> str:
    if workers == 1:
        return f"NFQUEUE --queue-num {DPI_QUEUE}"
    return f"NFQUEUE --queue-balance {DPI_QUEUE}:{DPI_QUEUE + workers - 1}"


def dpi_iptables_rules(isp: Isp, workers: int = DPI_WORKERS,
                       site_addresses: dict[str, IPv4Address] | None = None, kernel_keywords: bool = True) -> str:
    """An ``iptables-restore --noflush`` input for the router (``kernel_keywords=False``: every
    rule in the middlebox, as before UDP keywords moved to the kernel; bench/bench_dpi.py)."""
    protos: set[str] = set()
    udp_ports: set[int] | None = set()  # None: every UDP port
    in_kernel = (kernel_keyword_rules(isp, site_addresses) if kernel_keywords else None) or []
    for rule in middlebox_rules(isp):
        p = _rule_proto(rule)
        protos |= p
        if "udp" not in p or udp_ports is None or any(rule is k for k, _ in in_kernel):
            continue
        if rule.match.dns_query:
            udp_ports.add(53)
        elif rule.reads_quic:
            udp_ports.add(rule.match.port or QUIC_PORT)  # QUIC is looked for on 443 unless the rule names a port
        else:
            udp_ports = None
    if named_shaping(isp):
        protos.add("tcp")
    bypass = " --queue-bypass" if isp.dpi_fail == "open" else ""
    mark = f"0x{DROP_MARK:x}/0x{DROP_MARK:x}"
    passed = f"0x{PASS_MARK:x}/0x{PASS_MARK:x}"
    packets = isp.dpi_reassembly.packets
    window = f"-m connbytes --connbytes 0:{packets} --connbytes-dir original --connbytes-mode packets"
    lines = ["# generated by netlab.compile.dpi: the DPI middlebox of " + isp.name, "*filter"]
    # Access placement: the clients' forwarded traffic. Border: the router's own traffic toward
    # the internet too (its resolver's recursion among it), which leaves through OUTPUT.
    hooks = [(CHAIN, "-I FORWARD 1", f"-i {DOWN_IF} -o {UP_IF}")]
    if isp.dpi_placement == "border":
        hooks.append((OUT_CHAIN, f"-I OUTPUT 1 -o {UP_IF}", ""))
    elif splices := len(middlebox_rules(isp)) < len(isp.dpi_rules):
        # The interceptor's onward connections for the flows it does not intercept: client bytes
        # leaving from the router itself, so the ISP's other rules still see them.
        hooks.append((SPLICE_CHAIN, f"-I OUTPUT 1 -o {UP_IF} -m mark --mark 0x{SPLICE_MARK:x}/0x{SPLICE_MARK:x}", ""))
    for chain, jump, ifaces in hooks:
        lines += [
            f":{chain} - [0:0]",
            f"{jump} -j {chain}",
            f"-A {chain} -m mark --mark {mark} -j CONNMARK --set-mark {mark}",
            f"-A {chain} -m connmark --mark {mark} -j DROP",
            f"-A {chain} -m mark --mark {passed} -j CONNMARK --set-mark {passed}",
        ]
        if named_shaping(isp):  # the shaping rule a flow belongs to (netlab.compile.shaping)
            lines.append(f"-A {chain} -m mark ! --mark 0x0/0x{SHAPE_MASK:x} -j CONNMARK --save-mark "
                         f"--mask 0x{SHAPE_MASK:x}")
        lines.append(f"-A {chain} -m connmark --mark {passed} -j RETURN")
        for proto in ("tcp", "udp"):
            if proto not in protos:
                continue
            port = ""
            if proto == "udp" and udp_ports:
                port = f" --dport {min(udp_ports)}" if len(udp_ports) == 1 else \
                    f" -m multiport --dports {','.join(map(str, sorted(udp_ports)))}"
            where = f"{ifaces} " if ifaces else ""
            if proto == "udp" and udp_ports == set():
                pass  # only keywords on UDP, all in the kernel (below): no datagram is queued
            else:
                lines.append(f"-A {chain} {where}-p {proto}{port} {window} -j {_queue_target(workers)}{bypass}")
            if proto == "udp" and in_kernel:
                # after the queue rule: the ports the middlebox reads never get here
                for rule, nets in in_kernel:
                    assert rule.match.keyword is not None  # kernel_keyword_rules takes keyword rules only
                    dport = f" --dport {rule.match.port}" if rule.match.port is not None else ""
                    for dst in [f" -d {n}" for n in nets] if nets is not None else [""]:
                        lines.append(f"-A {chain} {where}-p udp{dst}{dport} {window} "
                                     f"{_string_match(rule.match.keyword)} -j CONNMARK --set-mark {mark}")
                lines.append(f"-A {chain} -m connmark --mark {mark} -j DROP")
    if isp.dpi_placement == "border" or splices:
        # The answers to the router's own blackholed flows (forwarded ones are dropped in FORWARD).
        lines.append(f"-I INPUT 1 -i {UP_IF} -m connmark --mark {mark} -j DROP")
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def compile_dpi(isp: Isp, addrs: IspAddresses, site_addresses: dict[str, IPv4Address],
                workers: int = DPI_WORKERS) -> RouterAdditions:
    if not middlebox_rules(isp) and not named_shaping(isp):
        return RouterAdditions()
    if isp.dpi_fail not in ("closed", "open"):
        raise ValueError(f"isp {isp.name}: dpi_fail must be closed or open, not {isp.dpi_fail!r}")
    if isp.dpi_placement not in PLACEMENTS:
        raise ValueError(f"isp {isp.name}: dpi placement must be access or border, not {isp.dpi_placement!r}")
    if workers < 1:
        raise ValueError(f"isp {isp.name}: the middlebox needs at least one worker")
    cfg = dpi_config(isp, addrs, site_addresses, workers)
    base = f"{isp.name}/"
    files: dict[str, str | bytes] = {
        base + "dpi.json": cfg.to_json(),
        base + "dpi.rules": dpi_iptables_rules(isp, workers, site_addresses),
    }
    setup: list[tuple[str, ...]] = [("iptables-restore", "--noflush", f"{LAB_DIR}/{isp.name}/dpi.rules")]
    if reads_ipv6(isp, site_addresses):
        # The same chains for IPv6 flows, the same queues and marks (conntrack's marks and NFQUEUE
        # serve both families); UDP keywords stay in the middlebox there (no kernel string match).
        files[base + "dpi6.rules"] = dpi_iptables_rules(isp, workers, site_addresses, kernel_keywords=False)
        setup.append(("ip6tables-restore", "--noflush", f"{LAB_DIR}/{isp.name}/dpi6.rules"))
    service = Service(
        "dpi",
        ("python3", "-m", "netlab.services.dpi", "--config", f"{LAB_DIR}/{isp.name}/dpi.json"),
        ready=ReadyCheck(kind="file", address=addrs.router_down.ip, port=0, path=f"{isp.name}/dpi.ready"),
        critical=True,
    )
    fail = (
        "fail closed: if the middlebox dies, every queued packet is dropped (no --queue-bypass)"
        if isp.dpi_fail == "closed"
        else "fail open: if the middlebox dies, traffic passes uninspected (--queue-bypass)"
    )
    notes = [
        f"{isp.name}: DPI middlebox (netlab.services.dpi) on NFQUEUE {DPI_QUEUE}"
        f"{f'-{DPI_QUEUE + workers - 1}, {workers} worker processes fed by address pair' if workers > 1 else ''} "
        f"in the router, after the firewall; it inspects the first {isp.dpi_reassembly.packets} client packets and "
        f"{isp.dpi_reassembly.bytes} client bytes of each "
        "forwarded flow (fewer once it has let a TCP flow pass) "
        f"(TLS ClientHello reassembled across segments, HTTP Host, DNS queries via dnspython); {fail}.",
        f"{isp.name}: 'drop' marks the flow (conntrack mark 0x{DROP_MARK:x}) so the kernel drops "
        "it from then on; 'reset' forges RSTs to both ends; 'blockpage' injects an HTTP 451 page and "
        "closes; 'close' forges a FIN to the client and lets the packet on; 'inject' sends a forged "
        "DNS answer before letting the real query through.",
        PLACEMENT_NOTES[isp.dpi_placement].format(isp=isp.name),
    ]
    in_kernel = [k for k, _ in kernel_keyword_rules(isp, site_addresses) or []]
    for rule in middlebox_rules(isp):
        extra = f", residual {rule.residual:g}s for the client-server pair" if rule.residual else ""
        if any(rule is k for k in in_kernel):
            extra += "; on UDP matched in the kernel (iptables string match, no datagram queued)"
        if rule.reads_quic:
            extra = quic_note(rule)
        notes.append(f"{isp.name}: dpi {rule.describe()}{extra}")
    return RouterAdditions(files=files, setup=setup, services=[service], notes=notes)


def quic_note(rule: Rule) -> str:
    """How a rule reads QUIC, in words (the compiler's notes, harness explain)."""
    k = rule.quic
    reading = ["first datagram of a flow" if k.datagrams == "first" else "until the ClientHello is whole"]
    reading += [w for w, on in (("no reassembly", not k.reassemble), ("sport > dport", k.sport_above_dport)) if on]
    if k.min_size:
        reading.append(f">= {k.min_size} bytes")
    out = f"; reads QUIC v{'/v'.join(map(str, k.versions))} Initials on UDP {rule.match.port or QUIC_PORT} " \
          f"({', '.join(reading)})"
    if rule.transport == "any":
        out += "; TLS over TCP too"
    if k.delay is not None:
        out += f"; the trigger passes, blocking starts {k.delay:g}s later"
    if rule.residual:
        scope = {"addresses": "client-server pair", "server_port": "client, server address and UDP port",
                 "flow": "flow"}[k.residual_on]
        out += f"; residual {rule.residual:g}s for the {scope}"
    return out
