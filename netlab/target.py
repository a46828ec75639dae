"""The measurement target: a URL inside the lab. Shared by ``netlab`` and ``probes``."""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from netlab.errors import NetlabError

DEFAULT_PORTS = {"http": 80, "https": 443}


class TargetError(NetlabError, ValueError):
    """A target URL cannot be measured (bad syntax or outside the lab); a ValueError too."""


@dataclass(frozen=True, order=True)
class Target:
    """One URL to measure. ``host`` is the lower-case ASCII (IDNA A-label) name or an IP literal."""

    url: str
    scheme: str
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise TargetError(f"{url!r}: scheme must be http or https")
        if not parts.hostname:
            raise TargetError(f"{url!r}: no host")
        try:
            port = parts.port or DEFAULT_PORTS[scheme]
        except ValueError as exc:
            raise TargetError(f"{url!r}: {exc}") from None
        host = parts.hostname.rstrip(".").lower()
        if not host_is_ip(host):
            try:
                host = _a_label(host)
            except UnicodeError as exc:
                raise TargetError(f"{url!r}: host is not a valid name ({exc})") from None
        return cls(url=url.strip(), scheme=scheme, host=host, port=port, path=parts.path or "/")

    @property
    def is_https(self) -> bool:
        return self.scheme == "https"

    @property
    def canonical(self) -> str:
        """The URL as the lab fetches it: scheme and host lower-case, the default port left out.
        ``HTTP://News.test/`` and ``http://news.test/`` are the same target."""
        port = "" if self.port == DEFAULT_PORTS[self.scheme] else f":{self.port}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        query = urlsplit(self.url).query
        return f"{self.scheme}://{host}{port}{self.path}" + (f"?{query}" if query else "")


def display_name(name: str) -> str:
    """The Unicode form of an IDNA A-label name (xn--e1afmkfd.test -> пример.test), for people."""
    try:
        return name.encode("ascii").decode("idna")
    except UnicodeError:
        return name


# The checks below run several times per measurement on the same few hundred strings, and
# ipaddress parsing (is_global tests a dozen networks) is a visible part of a probe's CPU time.

@functools.lru_cache(maxsize=4096)
def _a_label(host: str) -> str:
    name = host.encode("idna").decode("ascii")
    for label in name.split("."):
        if label.startswith("xn--"):
            # Python's codec passes A-labels through unchecked; one that is no punycode (xn--zz)
            # fails later, in the certificate library, with a traceback instead of a message.
            label[4:].encode("ascii").decode("punycode")
    return name


@functools.lru_cache(maxsize=4096)
def host_is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=4096)
def is_loopback(addr: str) -> bool:
    """Cached: a lab has a few hundred addresses, and probes ask for each several times a measurement."""
    return ipaddress.ip_address(addr).is_loopback


@functools.lru_cache(maxsize=4096)
def in_address_plan(addr: str) -> bool:
    """True for addresses a probe may contact: never a globally routable one."""
    ip = ipaddress.ip_address(addr)
    return not ip.is_global and not ip.is_multicast and not ip.is_unspecified
