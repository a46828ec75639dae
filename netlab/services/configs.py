"""The configuration files the lab compiler writes for the in-lab services, one dataclass each.

The compiler (netlab.compile) builds the dataclass and writes ``to_json()``; the service reads the
file back with ``from_json()``: one serialiser and one parser per file, so neither side spells the
other's keys. Only the standard library and netlab's light modules are imported here: the
compiler runs on the host, the services inside the lab (namespaces or containers).
"""

from __future__ import annotations

import base64
import ipaddress
import json
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Network, IPv6Network
from typing import Any, ClassVar, Self

from netlab.dnsname import name_matches
from netlab.model import QuicKnobs
from netlab.target import display_name


@dataclass(frozen=True)
class WhoamiConfig:
    """inet/whoami.json: the zone the whoami server answers for (netlab.services.whoami)."""
    name: str  # the zone, absolute ("whoami.test.")
    ns: str  # its name server's name, absolute
    address: str  # where it listens (UDP 53) and what its NS record's A answers
    ready_file: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Self:
        d = json.loads(text)
        return cls(name=d["name"], ns=d["ns"], address=d["address"], ready_file=d.get("ready_file"))


@dataclass(frozen=True)
class ProxyConfig:
    """inet/proxy.json: the ISPs' transparent proxies (netlab.services.proxy)."""
    listen: list[str]  # every ISP proxy's address (one program serves them all)
    sites: dict[str, str]  # site name (IDNA A-label) -> its address
    ready_file: str | None = None

    def to_json(self) -> str:
        return json.dumps({"ready_file": self.ready_file, "listen": self.listen, "sites": self.sites}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Self:
        d = json.loads(text)
        return cls(listen=list(d["listen"]), sites=dict(d["sites"]), ready_file=d.get("ready_file"))


@dataclass(frozen=True)
class BlockpageConfig:
    """<isp>/blockpage.json: the page each blockpage address answers (netlab.services.blockpage)."""
    pages: dict[str, bytes]  # address -> the whole HTTP response
    ready_file: str | None = None

    def to_json(self) -> str:
        return json.dumps({"ready_file": self.ready_file,
                           "pages": {a: base64.b64encode(p).decode() for a, p in self.pages.items()}}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Self:
        d = json.loads(text)
        return cls(pages={a: base64.b64decode(p) for a, p in d["pages"].items()}, ready_file=d.get("ready_file"))


@dataclass(frozen=True)
class InterceptRule:
    """One intercept rule as the interceptor applies it."""
    sni: str
    servers: list[list[IPv4Network | IPv6Network]]  # ANDed groups, as the middlebox's rules
    port: int
    page: str | None  # file holding the whole HTTP response served instead of relaying
    line: int

    def matches(self, name: str | None, address: str, port: int) -> bool:
        if name is None or port != self.port or not name_matches(name, self.sni):
            return False
        ip = ipaddress.ip_address(address)
        return all(any(ip in n for n in grp) for grp in self.servers)  # another family's network: no

    def to_dict(self) -> dict[str, Any]:
        return {"sni": self.sni, "port": self.port, "page": self.page, "line": self.line,
                "servers": [[str(n) for n in grp] for grp in self.servers]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Self:
        return cls(sni=d["sni"], servers=[[ipaddress.ip_network(n) for n in grp] for grp in d.get("servers") or []],
                   port=d["port"], page=d.get("page"), line=d.get("line", 0))


@dataclass(frozen=True)
class InterceptConfig:
    """<isp>/intercept.json: the TLS interceptor's rules and certificates (netlab.services.intercept)."""
    isp: str
    listen: str  # the router's address the nat redirect sends flows to
    port: int
    source: str  # onward connections leave from here
    splice_mark: int  # mark of the interceptor's onward connection for a flow it does not intercept
    pass_mark: int  # mark of its own connection for one it intercepts (its middlebox lets it by)
    certs: dict[str, str]  # name -> PEM file (chain + key) presented for that name
    rules: list[InterceptRule]
    ready_file: str | None = None
    listen6: str | None = None  # dual stack: the router's IPv6 access address (listen and source of IPv6 flows)

    def to_json(self) -> str:
        return json.dumps({
            "isp": self.isp, "listen": self.listen, "port": self.port, "source": self.source,
            "splice_mark": self.splice_mark, "pass_mark": self.pass_mark, "ready_file": self.ready_file,
            "certs": self.certs, "rules": [r.to_dict() for r in self.rules], "listen6": self.listen6,
        }, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Self:
        d = json.loads(text)
        return cls(isp=d.get("isp", ""), listen=d["listen"], port=int(d["port"]), source=d["source"],
                   splice_mark=int(d["splice_mark"]), pass_mark=int(d.get("pass_mark", 0)), certs=dict(d["certs"]),
                   rules=[InterceptRule.from_json(r) for r in d["rules"]], ready_file=d.get("ready_file"),
                   listen6=d.get("listen6"))


@dataclass(frozen=True)
class PathConfig:
    """A path a site answers its own way (`paths` in the scenario), to everyone."""
    path: str
    status: int = 200
    headers: list[list[str]] = field(default_factory=list)
    body_path: str | None = None
    redirect: dict[str, Any] | None = None  # {"to", "location"}: a Location for everyone


@dataclass(frozen=True)
class SiteConfig:
    """One site as the origin (netlab.services.origin) serves it."""
    name: str
    pem: str
    body_size: int
    addresses: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)  # names whose CNAME leads here (same content)
    bad_pem: str | None = None
    https: bool = True
    http: bool = True  # False: an add-on server (netlab.addons) answers on port 80 of this site
    quic: bool = True  # HTTP/3 on UDP 443 (netlab.services.h3)
    status: int = 200
    body_path: str | None = None
    headers: list[list[str]] = field(default_factory=list)  # `response.headers`
    paths: list[PathConfig] = field(default_factory=list)
    redirect: dict[str, Any] | None = None  # {"to", "hops", "status", "location"}
    only_for: list[str] = field(default_factory=list)

    @property
    def display_name(self) -> str:
        return display_name(self.name)

    def misbehaves_for(self, peer: str | None) -> bool:
        """Does the client at ``peer`` get the misbehaviour? Everyone does, unless only_for narrows it."""
        if not self.only_for:
            return True
        try:
            ip = ipaddress.ip_address(peer or "")
        except ValueError:
            return False
        return any(ip in ipaddress.ip_network(n) for n in self.only_for)  # either family (dual stack)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "aliases": self.aliases, "addresses": self.addresses, "pem": self.pem,
            "headers": self.headers, "paths": [asdict(p) for p in self.paths], "bad_pem": self.bad_pem,
            "body_size": self.body_size, "https": self.https, "http": self.http, "quic": self.quic,
            "status": self.status, "body_path": self.body_path, "redirect": self.redirect, "only_for": self.only_for,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        d = dict(d)
        if "address" in d:  # one address, as configs before shared hosting gave it
            d["addresses"] = [d.pop("address")]
        d["paths"] = [PathConfig(**p) for p in d.get("paths") or []]
        return cls(**d)


@dataclass(frozen=True)
class OriginConfig:
    """inet/origin.json: every site the lab origin serves (netlab.services.origin)."""
    sites: list[SiteConfig]
    ready_file: str | None = None

    def to_json(self) -> str:
        return json.dumps({"ready_file": self.ready_file, "sites": [s.to_dict() for s in self.sites]}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Self:
        d = json.loads(text)
        return cls(sites=[SiteConfig.from_dict(s) for s in d["sites"]], ready_file=d.get("ready_file"))


MAX_STREAM = 16 * 1024  # client bytes the middlebox keeps per flow unless dpi.json says (dpi.reassembly.bytes)
INSPECT_PACKETS = 10  # client packets it reads per flow unless dpi.json says (dpi.reassembly.packets)
Networks = list[list[IPv4Network | IPv6Network]]  # ANDed groups of ORed networks; [] matches any server


def _networks(groups: Networks) -> list[list[str]]:
    return [[str(n) for n in grp] for grp in groups]


def _parse_networks(groups: list[list[str]] | None) -> Networks:
    return [[ipaddress.ip_network(n) for n in grp] for grp in groups or []]


@dataclass(frozen=True)
class DpiRule:
    """One ``dpi:`` rule as the middlebox applies it (netlab.services.dpi.CRule)."""
    action: str  # reset, drop, blockpage, close, inject
    sni: str | None = None
    http_host: str | None = None
    dns_query: str | None = None
    keyword: str | None = None
    servers: Networks = field(default_factory=list)
    port: int | None = None
    proto: str | None = None  # tcp, udp; None: either
    address: str | None = None  # inject: the forged answer's address
    residual: float | None = None  # seconds the client-server pair stays blocked after a hit
    page: bytes | None = None  # blockpage: the scenario's whole response; None: the middlebox's own
    transport: str = "any"  # tcp, quic, any: which of TLS over TCP and QUIC an sni rule reads
    quic: QuicKnobs = field(default_factory=QuicKnobs)
    line: int = 0
    describe: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"sni": self.sni, "http_host": self.http_host, "dns_query": self.dns_query, "keyword": self.keyword,
                "servers": _networks(self.servers), "port": self.port, "proto": self.proto, "action": self.action,
                "address": self.address, "residual": self.residual,
                "page": base64.b64encode(self.page).decode() if self.page is not None else None,
                "transport": self.transport, "quic": self.quic.to_json(), "line": self.line,
                "describe": self.describe}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        return cls(action=d["action"], sni=d.get("sni"), http_host=d.get("http_host"), dns_query=d.get("dns_query"),
                   keyword=d.get("keyword"), servers=_parse_networks(d.get("servers")), port=d.get("port"),
                   proto=d.get("proto"), address=d.get("address"), residual=d.get("residual"),
                   page=base64.b64decode(d["page"]) if d.get("page") else None,
                   transport=d.get("transport") or "any", quic=QuicKnobs.from_json(d.get("quic")),
                   line=d.get("line", 0), describe=d.get("describe", ""))


@dataclass(frozen=True)
class NameShapeRule:
    """A shaping rule on names (netlab.compile.shaping): the middlebox reads the name and gives
    the flow the rule's conntrack mark, which puts its packets in the rule's htb class."""
    mark: int
    sni: str | None = None
    http_host: str | None = None
    port: int | None = None
    proto: str | None = None
    servers: Networks = field(default_factory=list)
    line: int = 0
    describe: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"sni": self.sni, "http_host": self.http_host, "port": self.port, "proto": self.proto,
                "servers": _networks(self.servers), "action": "shape", "mark": self.mark, "line": self.line,
                "describe": self.describe}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        return cls(mark=d["mark"], sni=d.get("sni"), http_host=d.get("http_host"), port=d.get("port"),
                   proto=d.get("proto"), servers=_parse_networks(d.get("servers")), line=d.get("line", 0),
                   describe=d.get("describe", ""))


@dataclass(frozen=True)
class DpiConfig:
    """<isp>/dpi.json: the ISP's DPI middlebox (netlab.services.dpi; netlab.compile.dpi writes it)."""
    isp: str = ""
    placement: str = "access"  # access, border (the compiler's iptables rules differ; the program does not)
    queue: int = 0  # the first NFQUEUE
    queues: list[int] = field(default_factory=list)  # one worker each; []: ``queue`` alone
    drop_mark: int = 0x40000000  # the packet mark that blackholes a flow (netlab.compile.router.DROP_MARK)
    pass_mark: int = 0  # the mark of a TCP flow let through for good; 0: none
    inspect_packets: int = INSPECT_PACKETS
    max_stream: int = MAX_STREAM
    client_network: str | None = None
    ready_file: str | None = None
    rules: list[DpiRule] = field(default_factory=list)  # first match wins
    shape: list[NameShapeRule] = field(default_factory=list)

    mode: ClassVar[str] = "dpi"  # written to the file: the service tells dpi.json and shaper.json apart by it

    def to_dict(self) -> dict[str, Any]:
        return {
            "isp": self.isp, "mode": self.mode, "placement": self.placement, "queue": self.queue,
            "queues": self.queues, "drop_mark": self.drop_mark, "pass_mark": self.pass_mark,
            "inspect_packets": self.inspect_packets, "max_stream": self.max_stream,
            "client_network": self.client_network, "ready_file": self.ready_file,
            "rules": [r.to_dict() for r in self.rules], "shape": [s.to_dict() for s in self.shape],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        return cls(isp=d.get("isp", ""), placement=d.get("placement", "access"), queue=int(d.get("queue", 0)),
                   queues=[int(q) for q in d.get("queues") or []], drop_mark=int(d.get("drop_mark", 0x40000000)),
                   pass_mark=int(d.get("pass_mark", 0)),
                   inspect_packets=int(d.get("inspect_packets") or INSPECT_PACKETS),
                   max_stream=int(d.get("max_stream") or MAX_STREAM), client_network=d.get("client_network"),
                   ready_file=d.get("ready_file"), rules=[DpiRule.from_dict(r) for r in d.get("rules") or []],
                   shape=[NameShapeRule.from_dict(s) for s in d.get("shape") or []])

    @classmethod
    def from_json(cls, text: str) -> Self:
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class ShaperRule:
    """One ``shaping:`` rule as the shaper emulates it (delay and loss without netem)."""
    servers: Networks = field(default_factory=list)
    port: int | None = None
    proto: str | None = None
    delay_ms: float | None = None  # added to server -> client packets
    loss: float | None = None  # share of packets dropped, each direction
    mark: int | None = None  # a rule on names: its flows carry this mark (the middlebox's); None: by address
    describe: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"servers": _networks(self.servers), "port": self.port, "proto": self.proto,
                "delay_ms": self.delay_ms, "loss": self.loss, "mark": self.mark, "describe": self.describe}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        return cls(servers=_parse_networks(d.get("servers")), port=d.get("port"), proto=d.get("proto"),
                   delay_ms=d.get("delay_ms"), loss=d.get("loss"), mark=d.get("mark"),
                   describe=d.get("describe", ""))


@dataclass(frozen=True)
class ShaperConfig:
    """<isp>/shaper.json: the shaper (netlab.services.dpi in shaper mode; netlab.compile.shaping
    writes it), emulating delay and loss on a kernel without netem."""
    isp: str = ""
    queue: int = 0
    ready_file: str | None = None
    mark_mask: int = 0  # the conntrack mark bits of the rules on names
    client_network: str | None = None  # tells the direction of a packet of a rule matched by mark
    client_network6: str | None = None  # dual stack: the access link's IPv6 /64
    shaping: list[ShaperRule] = field(default_factory=list)  # first match wins; rules without delay/loss too

    mode: ClassVar[str] = "shaper"  # written to the file: the service tells dpi.json and shaper.json apart by it

    def to_dict(self) -> dict[str, Any]:
        return {
            "isp": self.isp, "mode": self.mode, "queue": self.queue, "ready_file": self.ready_file,
            "mark_mask": self.mark_mask, "client_network": self.client_network,
            "client_network6": self.client_network6, "shaping": [r.to_dict() for r in self.shaping],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        return cls(isp=d.get("isp", ""), queue=int(d.get("queue", 0)), ready_file=d.get("ready_file"),
                   mark_mask=int(d.get("mark_mask") or 0), client_network=d.get("client_network"),
                   client_network6=d.get("client_network6"),
                   shaping=[ShaperRule.from_dict(r) for r in d.get("shaping") or []])

    @classmethod
    def from_json(cls, text: str) -> Self:
        return cls.from_dict(json.loads(text))


MiddleboxConfig = DpiConfig | ShaperConfig  # what netlab.services.dpi runs on


def middlebox_config_from_json(text: str) -> MiddleboxConfig:
    """dpi.json or shaper.json, told apart by their ``mode``."""
    d = json.loads(text)
    return ShaperConfig.from_dict(d) if d.get("mode") == "shaper" else DpiConfig.from_dict(d)
