"""The lab's resolver-identification server (scenario `internet.whoami`): the authority of one
name, which answers who asks. A TXT or A query for the name gets the address the query came from:
the recursive resolver that asked on a client's behalf (an ISP's resolver leaves through its
router's uplink address; the public resolver through its own), as `whoami`-style services on the
internet answer (o-o.myaddr.l.google.com, whoami.akamai.net). The zone's SOA and NS answer too, so
`dig +trace` ends here; any other name is REFUSED (this server is no one else's authority).

Started by the lab compiler as ``python3 -m netlab.services.whoami --config FILE`` in the lab
internet, on its own address, which the parent zone delegates to with glue (netlab.compile.dns).
"""

from __future__ import annotations

import asyncio
import logging
import socket

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from netlab.services._serve import serve_until_stopped, service_main
from netlab.services.configs import WhoamiConfig

log = logging.getLogger(__name__)
TTL = 0  # every resolver asks again: the answer is the asker, never a cached one


def answer(query: bytes, peer: str, zone: dns.name.Name, ns: dns.name.Name, ns_address: str) -> bytes | None:
    """The response to one query (wire format) from ``peer``; None for what is no DNS query."""
    try:
        msg = dns.message.from_wire(query)
    except dns.exception.DNSException:
        return None
    if msg.flags & dns.flags.QR or len(msg.question) != 1:
        return None
    response = dns.message.make_response(msg)
    q = msg.question[0]
    if not q.name.is_subdomain(zone):
        response.set_rcode(dns.rcode.REFUSED)
        return response.to_wire()
    response.flags |= dns.flags.AA
    records: list[tuple[dns.name.Name, dns.rdatatype.RdataType, str]] = []
    if q.name == zone:
        if q.rdtype in (dns.rdatatype.TXT, dns.rdatatype.ANY):
            records.append((zone, dns.rdatatype.TXT, f'"{peer}"'))
        if q.rdtype in (dns.rdatatype.A, dns.rdatatype.ANY):
            records.append((zone, dns.rdatatype.A, peer))
        if q.rdtype == dns.rdatatype.NS:
            records.append((zone, dns.rdatatype.NS, ns.to_text()))
        if q.rdtype == dns.rdatatype.SOA:
            records.append((zone, dns.rdatatype.SOA, f"{ns} hostmaster.{ns} 1 3600 600 86400 0"))
    elif q.name == ns and q.rdtype == dns.rdatatype.A:
        records.append((ns, dns.rdatatype.A, ns_address))
    elif q.name != ns:
        response.set_rcode(dns.rcode.NXDOMAIN)
    for name, rdtype, text in records:
        response.answer.append(dns.rrset.from_text(name, TTL, dns.rdataclass.IN, rdtype, text))
    if not records:  # NODATA or NXDOMAIN: the zone's SOA says for how long
        soa = f"{ns} hostmaster.{ns} 1 3600 600 86400 0"
        response.authority.append(dns.rrset.from_text(zone, TTL, dns.rdataclass.IN, dns.rdatatype.SOA, soa))
    return response.to_wire()


class _Server(asyncio.DatagramProtocol):
    def __init__(self, config: WhoamiConfig) -> None:
        self.zone = dns.name.from_text(config.name)
        self.ns = dns.name.from_text(config.ns)
        self.ns_address = config.address
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = answer(data, addr[0], self.zone, self.ns, self.ns_address)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


async def serve(config: WhoamiConfig) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((config.address, 53))
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: _Server(config), sock=sock)
    try:
        await serve_until_stopped([], config.ready_file)
    finally:
        transport.close()


def main(argv: list[str] | None = None) -> int:
    return service_main(argv, name="whoami", parse=WhoamiConfig.from_json, serve=serve,
                        description="The lab's whoami DNS server: answers who asks.")


if __name__ == "__main__":
    raise SystemExit(main())
