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
from pathlib import Path
from typing import Any, Self

from netlab.dnsname import name_matches
from netlab.target import display_name


def read_text(path: str | Path) -> str:
    """A configuration file's text (what ``from_json`` parses)."""
    return Path(path).read_text()


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
