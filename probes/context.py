"""Everything a probe needs to know about the vantage it runs in.

The harness builds one ``ProbeContext`` per vantage and hands it to the probe worker as JSON
(``to_dict`` / ``from_dict``), so every field is a plain JSON value.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from netlab.capabilities import CONNECT_TIMEOUT, HTTP_TOTAL_TIMEOUT, QUIC_TIMEOUT


@dataclass
class ProbeContext:
    vantage: str
    #: IP of the resolver the vantage is configured with (the ISP's resolver).
    resolver: str
    #: IP of the lab's unfiltered public resolver, or None to skip the second lookup.
    public_resolver: str | None
    #: PEM file of the lab CA; TLS handshakes validate against this CA only.
    ca_file: str
    #: Site names the lab serves, lower-case IDNA A-labels. Probes refuse any other name.
    lab_names: frozenset[str] = field(default_factory=frozenset)
    probe_ip: str = "127.0.0.1"
    probe_asn: int = 0
    resolver_asn: int = 0
    probe_network_name: str = ""
    resolver_network_name: str = ""
    # Timeouts, in seconds.
    dns_timeout: float = 2.0
    connect_timeout: float = CONNECT_TIMEOUT
    tls_timeout: float = 3.0
    #: Longest silence tolerated while sending the request or reading the response.
    http_timeout: float = 5.0
    #: Hard cap on one whole HTTP exchange, so a throttled transfer cannot stall a worker forever.
    http_total_timeout: float = HTTP_TOTAL_TIMEOUT
    #: How long to keep listening after the first DNS response: an injector races a forged
    #: answer ahead of the real one, and we want to see both.
    dns_window: float = 0.3
    #: Response body bytes kept in the measurement. Bodies are always read to the end, so
    #: lengths and throughput are exact even when the stored copy is truncated.
    body_limit: int = 1024 * 1024
    #: UDP port of both resolvers. Only tests change it (to reach a resolver on 127.0.0.1).
    dns_port: int = 53
    #: URL of a lab site standing for OONI's test helper: the web probe reaches it through the
    #: vantage's network, so a censor that blocks it causes OONI's control_failure. None: not used.
    test_helper: str | None = None
    #: Never connect to loopback answers, as OONI does (they name no server of the site). The lab
    #: runs set it (harness.runner); it stays off by default so tests can serve sites on 127.0.0.1.
    skip_loopback: bool = False
    #: The quic probe (probes.quic): handshake timeout (OONI's simplequicping waits 3 s), the QUIC
    #: version it speaks (1 or 2), and a ClientHello big enough to span two Initial datagrams.
    quic_timeout: float = QUIC_TIMEOUT
    quic_version: int = 1
    quic_split_hello: bool = False
    #: The web probe's QUIC step: after a successful https fetch, HTTP/3 to the same addresses.
    web_quic: bool = False
    #: A dual-stack lab (scenario `internet.ipv6`): lookups ask AAAA too, and probes measure the
    #: addresses of both families, as OONI does.
    ipv6: bool = False

    def __post_init__(self) -> None:
        # Accept any iterable (a JSON list, a set) and normalise it, so membership tests
        # against Target.host (lower-case A-labels) behave the same however the context was built.
        given: object = self.lab_names  # from JSON or a caller: anything iterable
        if isinstance(given, str):
            raise TypeError("lab_names must be a collection of names, not one string")
        self.lab_names = frozenset(name.rstrip(".").lower() for name in self.lab_names)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["lab_names"] = sorted(self.lab_names)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeContext:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            # A typo in a field name would otherwise silently fall back to a default.
            raise ValueError(f"unknown ProbeContext field(s): {', '.join(unknown)}")
        return cls(**data)
