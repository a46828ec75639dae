"""Compile an ISP's ``dpi:`` rules into the router's middlebox: an iptables-nft rule set that
queues the first client packets of each forwarded flow to NFQUEUE, and the config of the
``netlab.services.dpi`` program bound to that queue.

Data path in the router (netfilter forward hook): the lead firewall (nft ``inet netlab_fw``,
priority -10) first, then iptables' ``filter FORWARD`` (priority 0) where chain ``NETLAB-DPI``:

1. saves a packet's drop mark (set by the middlebox) into its conntrack entry;
2. drops every packet of a flow whose conntrack entry carries that mark (the whole flow is
   blackholed in the kernel, retransmissions included); likewise saves the pass mark (a TCP
   flow the middlebox has decided to let through) and lets the rest of such a flow skip it;
3. queues the first ``INSPECT_PACKETS`` client->internet packets of every flow to NFQUEUE,
   with ``--queue-bypass`` only when the scenario says ``dpi_fail: open``.

With ``workers`` > 1 (default ``DPI_WORKERS``) step 3 spreads packets over that many queues with
``--queue-balance``, one worker process per queue. The kernel picks the queue by a hash of the
source and destination addresses and the protocol (not the ports: ``hash_v4`` in
include/net/netfilter/nf_queue.h), so every packet of a flow, and every flow of a client-server
pair and protocol, meets the same worker; the one state that spans protocols, residual blocking,
is shared between the workers (``netlab.services.dpi.ResidualTable``).
"""

from __future__ import annotations

import json
from ipaddress import IPv4Address

from netlab.addressing import IspAddresses
from netlab.compile.router import (
    DOWN_IF,
    DPI_QUEUE,
    DPI_WORKERS,
    DROP_MARK,
    INSPECT_PACKETS,
    PASS_MARK,
    UP_IF,
    RouterAdditions,
    server_networks,
)
from netlab.model import Isp, Rule
from netlab.plan import LAB_DIR, ReadyCheck, Service

__all__ = ["RouterAdditions", "compile_dpi", "dpi_config", "dpi_iptables_rules"]

CHAIN = "NETLAB-DPI"
ACTIONS = ("reset", "drop", "blockpage", "inject")
_NAME_KEYS = ("sni", "http_host", "dns_query")


def _rule_proto(rule: Rule) -> set[str]:
    """Transport protocols a rule can ever match."""
    m = rule.match
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
    if not any(getattr(m, k) for k in (*_NAME_KEYS, "keyword")):
        raise ValueError(f"{where}: a DPI rule needs sni, http_host, dns_query or keyword")
    if rule.action == "inject" and (not m.dns_query or rule.address is None):
        raise ValueError(f"{where}: inject needs dns_query and an address")
    if rule.action == "blockpage" and not (m.http_host or m.keyword):
        raise ValueError(f"{where}: blockpage needs http_host or keyword")
    if m.proto and m.proto not in ("tcp", "udp"):
        raise ValueError(f"{where}: proto must be tcp or udp")
    if ((m.sni or m.http_host) and m.proto == "udp") or (m.dns_query and m.proto == "tcp"):
        raise ValueError(f"{where}: proto contradicts the protocol field matched")


def dpi_config(isp: Isp, addrs: IspAddresses, site_addresses: dict[str, IPv4Address],
               workers: int = DPI_WORKERS) -> dict:
    """The JSON config of the middlebox program."""
    rules = []
    for rule in isp.dpi_rules:
        _check(rule, isp)
        m = rule.match
        rules.append(
            {
                "sni": m.sni,
                "http_host": m.http_host,
                "dns_query": m.dns_query,
                "keyword": m.keyword,
                "servers": [[str(n) for n in grp] for grp in server_networks(m, site_addresses)],
                "port": m.port,
                "proto": m.proto,
                "action": rule.action,
                "address": str(rule.address) if rule.address else None,
                "residual": rule.residual,
                "line": rule.line,
                "describe": rule.describe(),
            }
        )
    return {
        "isp": isp.name,
        "mode": "dpi",
        "queue": DPI_QUEUE,
        "queues": list(range(DPI_QUEUE, DPI_QUEUE + workers)),
        "drop_mark": DROP_MARK,
        "pass_mark": PASS_MARK,
        "inspect_packets": INSPECT_PACKETS,
        "client_network": str(addrs.access_network),
        "ready_file": f"{LAB_DIR}/{isp.name}/dpi.ready",
        "rules": rules,
    }


def _queue_target(workers: int) -> str:
    if workers == 1:
        return f"NFQUEUE --queue-num {DPI_QUEUE}"
    return f"NFQUEUE --queue-balance {DPI_QUEUE}:{DPI_QUEUE + workers - 1}"


def dpi_iptables_rules(isp: Isp, workers: int = DPI_WORKERS) -> str:
    """An ``iptables-restore --noflush`` input for the router."""
    protos: set[str] = set()
    udp_only_dns = True
    for rule in isp.dpi_rules:
        p = _rule_proto(rule)
        protos |= p
        if "udp" in p and not rule.match.dns_query:
            udp_only_dns = False
    bypass = " --queue-bypass" if isp.dpi_fail == "open" else ""
    mark = f"0x{DROP_MARK:x}/0x{DROP_MARK:x}"
    passed = f"0x{PASS_MARK:x}/0x{PASS_MARK:x}"
    window = f"-m connbytes --connbytes 0:{INSPECT_PACKETS} --connbytes-dir original --connbytes-mode packets"
    lines = [
        "# generated by netlab.compile.dpi: the DPI middlebox of " + isp.name,
        "*filter",
        f":{CHAIN} - [0:0]",
        f"-I FORWARD 1 -j {CHAIN}",
        f"-A {CHAIN} -m mark --mark {mark} -j CONNMARK --set-mark {mark}",
        f"-A {CHAIN} -m connmark --mark {mark} -j DROP",
        f"-A {CHAIN} -m mark --mark {passed} -j CONNMARK --set-mark {passed}",
        f"-A {CHAIN} -m connmark --mark {passed} -j RETURN",
    ]
    for proto in ("tcp", "udp"):
        if proto not in protos:
            continue
        port = " --dport 53" if proto == "udp" and udp_only_dns else ""
        lines.append(
            f"-A {CHAIN} -i {DOWN_IF} -o {UP_IF} -p {proto}{port} {window} "
            f"-j {_queue_target(workers)}{bypass}"
        )
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def compile_dpi(isp: Isp, addrs: IspAddresses, site_addresses: dict[str, IPv4Address],
                workers: int = DPI_WORKERS) -> RouterAdditions:
    if not isp.dpi_rules:
        return RouterAdditions()
    if isp.dpi_fail not in ("closed", "open"):
        raise ValueError(f"isp {isp.name}: dpi_fail must be closed or open, not {isp.dpi_fail!r}")
    if workers < 1:
        raise ValueError(f"isp {isp.name}: the middlebox needs at least one worker")
    cfg = dpi_config(isp, addrs, site_addresses, workers)
    base = f"{isp.name}/"
    files = {
        base + "dpi.json": json.dumps(cfg, indent=2) + "\n",
        base + "dpi.rules": dpi_iptables_rules(isp, workers),
    }
    setup = [("iptables-restore", "--noflush", f"{LAB_DIR}/{isp.name}/dpi.rules")]
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
        f"in the router, after the firewall; it inspects the first {INSPECT_PACKETS} client packets of each "
        "forwarded flow (fewer once it has let a TCP flow pass) "
        f"(TLS ClientHello reassembled across segments, HTTP Host, DNS queries via dnspython); {fail}.",
        f"{isp.name}: 'drop' marks the flow (conntrack mark 0x{DROP_MARK:x}) so the kernel drops "
        "it from then on; 'reset' forges RSTs to both ends; 'blockpage' injects an HTTP 451 page and "
        "closes; 'inject' sends a forged DNS answer before letting the real query through.",
        f"{isp.name}: DNS rules see only queries that cross the router (e.g. to the public resolver), "
        "not those the ISP's own resolver on the router answers.",
    ]
    for rule in isp.dpi_rules:
        extra = f", residual {rule.residual:g}s for the client-server pair" if rule.residual else ""
        notes.append(f"{isp.name}: dpi {rule.describe()}{extra}")
    return RouterAdditions(files=files, setup=setup, services=[service], notes=notes)
