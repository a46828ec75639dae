"""The residual table the middlebox's workers share, and the verdict batching of a worker."""

from __future__ import annotations

import os
import struct

from netlab.addressing import isp_addresses
from netlab.compile.dpi import dpi_config, dpi_iptables_rules
from netlab.compile.router import DPI_QUEUE, DPI_WORKERS
from netlab.model import Isp, Match, Rule
from netlab.services import dpi
from netlab.services._parsers import TCP_ACK, TCP_PSH, build_client_hello, build_tcp, build_udp
from netlab.services.dpi import ACCEPT, KILL, Engine, ResidualTable

C, S1, S2 = "10.1.0.2", "198.18.1.1", "198.18.1.2"
RULES = (Rule(Match(sni="social.test"), "reset", residual=10), Rule(Match(keyword="kw"), "drop"))


def workers(n: int) -> list[Engine]:
    """Engines as the service builds them: one table, each worker writing its own segment."""
    table = ResidualTable(n)
    cfg = dpi_config(Isp("isp-b", dpi_rules=RULES), isp_addresses(1), {})
    return [Engine(cfg, residual=table.writer(i)) for i in range(n)]


def hello(sport: int, dst: str = S1, name: str = "social.test") -> bytes:
    return build_tcp(C, dst, sport, 443, 1001, 5001, TCP_PSH | TCP_ACK, build_client_hello(name))


def test_a_block_recorded_by_one_worker_holds_on_the_other():
    tcp_worker, udp_worker = workers(2)
    assert tcp_worker.process(hello(40000), now=100).verdict == KILL
    # the pair's UDP (hashed to the other worker by the kernel) is blocked there
    assert udp_worker.process(build_udp(C, S1, 5000, 7, b"x"), now=101).verdict == KILL
    assert udp_worker.process(build_udp(C, S2, 5000, 7, b"x"), now=101).verdict == ACCEPT  # other pair
    assert udp_worker.process(build_udp(C, S1, 5001, 7, b"x"), now=111).verdict == ACCEPT  # expired


def test_latest_hit_wins_and_slots_are_reused():
    a, b = workers(2)
    a.residual.put(C, S1, 100, 200, 1)
    b.residual.put(C, S1, 150, 160, 0)
    assert a.residual.get(C, S1, 155) == 0 and b.residual.get(C, S1, 170) == 1
    # more live pairs than a probe window: the one expiring first gives way, the table never grows
    for i in range(ResidualTable.PROBE * 4):
        a.residual.put(C, f"198.18.2.{i}", 100, 1000 + i, 1)
    assert a.residual.get(C, f"198.18.2.{ResidualTable.PROBE * 4 - 1}", 500) == 1
    assert len(a.residual.mem) == 2 * ResidualTable.SLOTS * ResidualTable.SLOT.size


def test_the_table_is_shared_across_fork():
    table = ResidualTable(2)
    pid = os.fork()
    if pid == 0:  # a worker process: write in its own segment
        table.writer(1).put(C, S1, 1, 50, 3)
        os._exit(0)
    os.waitpid(pid, 0)
    assert table.get(C, S1, 10) == 3 and table.get(C, S2, 10) is None


def test_fan_out_rules_and_config():
    isp = Isp("isp-b", dpi_rules=RULES)
    cfg = dpi_config(isp, isp_addresses(1), {})
    assert cfg.queues == list(range(DPI_QUEUE, DPI_QUEUE + DPI_WORKERS)) and DPI_WORKERS >= 2
    rules = dpi_iptables_rules(isp)
    assert f"--queue-balance {DPI_QUEUE}:{DPI_QUEUE + DPI_WORKERS - 1}" in rules
    assert f"--queue-num {DPI_QUEUE}" in dpi_iptables_rules(isp, workers=1)
    assert dpi_config(isp, isp_addresses(1), {}, workers=1).queues == [DPI_QUEUE]


def test_a_flow_decided_to_pass_is_settled_unless_residual_may_still_act():
    plain = Engine(dpi_config(Isp("isp-b", dpi_rules=(Rule(Match(sni="social.test"), "reset"),)),
                              isp_addresses(1), {}))
    d = plain.process(hello(40000, name="ok.test"))
    assert d.verdict == ACCEPT and d.settled
    assert not plain.process(hello(40001, name="social.test")).settled
    # a residual rule: a block recorded later must still reach this flow's next packets
    assert not workers(1)[0].process(hello(40002, name="ok.test")).settled


class _Socket:
    """An NFQUEUE socket fed from memory: one packet message per read, verdicts kept."""

    def __init__(self, msgs: list[bytes]) -> None:
        self.msgs, self.sent = list(msgs), []

    def recv_into(self, buf: bytearray, _n: int = 0, _flags: int = 0) -> int:
        if not self.msgs:
            raise BlockingIOError
        m = self.msgs.pop(0)
        buf[: len(m)] = m
        return len(m)

    def send(self, data: bytes) -> None:
        self.sent.append(data)


def _packet_msg(pid: int, payload: bytes, mark: int = 0) -> bytes:
    attrs = dpi._attr(dpi.NFQA_PACKET_HDR, struct.pack("!IHB", pid, 0x0800, 2)) + dpi._attr(4, b"\0\0\0\2")
    if mark:
        attrs += dpi._attr(dpi.NFQA_MARK, struct.pack("!I", mark))
    body = struct.pack("=BBH", 2, 0, 0) + attrs + dpi._attr(dpi.NFQA_PAYLOAD, payload)
    return dpi._NLMSG.pack(16 + len(body), dpi._PACKET, 0, 0, 0) + body


def _verdicts(data: bytes) -> list[tuple[int, int, int, int | None]]:
    """(message type, verdict, packet id, mark) of each verdict message sent."""
    out, off = [], 0
    while off < len(data):
        mlen, kind = struct.unpack_from("=IH", data, off)
        verdict, pid = struct.unpack_from("!II", data, off + 24)
        mark = struct.unpack_from("!I", data, off + 36)[0] if mlen > 32 else None
        out.append((kind & 0xFF, verdict, pid, mark))
        off += mlen
    return out


def test_a_worker_reads_the_queue_and_batches_its_verdicts():
    box = dpi.Middlebox(dpi_config(Isp("isp-b", dpi_rules=RULES), isp_addresses(1), {}), 100)
    q = dpi.NfQueue.__new__(dpi.NfQueue)  # no kernel queue: the socket is the memory one
    q.num, q.seq, q.buf = 100, 0, bytearray(64 * 1024)
    q.view = memoryview(q.buf)
    q.sock = _Socket([_packet_msg(1, build_udp(C, S1, 5000, 7, b"hello")),
                      _packet_msg(2, build_udp(C, S1, 5001, 7, b"a kw here"), mark=0x10),
                      _packet_msg(3, build_udp(C, S2, 5002, 7, b"fine")),
                      _packet_msg(4, b"\x45 not an IP packet")])
    box.drain(q)
    (sent,) = q.sock.sent
    # the dropped packet gets its own verdict (re-run with the drop mark on its own mark); the
    # accepted ones, the malformed one included, one batch verdict up to the last id, after it
    assert _verdicts(sent) == [(dpi.NFQNL_MSG_VERDICT, dpi.NF_REPEAT, 2, 0x10 | box.drop_mark),
                               (dpi.NFQNL_MSG_VERDICT_BATCH, dpi.NF_ACCEPT, 4, None)]
    assert box.engine.packets == 4 and box.engine.hits == 1
    box.raw.close()
