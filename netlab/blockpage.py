"""Blockpages as censors send them: the bytes of the HTTP response a DPI middlebox injects, or a
resolver-redirect blockpage server answers, and the fingerprints the scenario's pages give.

A scenario declares a page as ``{status, headers, body | body_file}`` (docs/scenario.md); without
one, the lab's own 451 page (``DEFAULT``). Declared headers are sent exactly as written, nothing
added: a page without Content-Length ends where the censor closes the connection, as pages
injected in one TCP segment with FIN do. Pure: no I/O (the loader reads ``body_file``).
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from netlab.model import Scenario

MARKER = "netlab-blockpage"
DEFAULT_BODY = (
    "<!DOCTYPE html>\n<html><head><title>Blocked</title></head>\n"
    f"<body><h1>Access denied</h1><p>This site is blocked by your ISP ({MARKER}).</p>"
    "</body></html>\n"
).encode()
# Statuses whose responses never carry a body (RFC 9110 6.4.1): informational, 204 and 304.
BODILESS = frozenset({204, 304})
# What a middlebox injects goes out as one TCP segment (the lab's links have a 1500-byte MTU).
MAX_INJECTED = 1400
FINGERPRINT_CHARS = 200  # the head of a declared body that identifies it


def bodiless(status: int) -> bool:
    return status < 200 or status in BODILESS


def reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


@dataclass(frozen=True)
class Blockpage:
    status: int = 451
    headers: tuple[tuple[str, str], ...] | None = None  # None: Content-Type, Content-Length, Connection
    body: bytes | None = None  # None: the lab's page
    body_file: str | None = None  # as written in the scenario (body holds its content)
    line: int = 0

    @property
    def is_default(self) -> bool:
        return self.status == 451 and self.headers is None and self.body is None

    @property
    def page(self) -> bytes:
        return b"" if bodiless(self.status) else (DEFAULT_BODY if self.body is None else self.body)

    def response(self) -> bytes:
        """The whole HTTP response, status line to the last byte of the body."""
        body = self.page
        headers = self.headers
        if headers is None:
            headers = (("Content-Type", "text/html; charset=utf-8"),) + (
                () if bodiless(self.status) else (("Content-Length", str(len(body))),)) + (("Connection", "close"),)
            if self.is_default:
                headers += (("X-Netlab-Blockpage", MARKER),)
        head = f"HTTP/1.1 {self.status} {reason(self.status)}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
        return head.encode("latin-1") + b"\r\n" + body

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers or () if k.lower() == name.lower()), None)

    @property
    def location(self) -> str | None:
        """Where a redirecting page sends the client (3xx with a Location header), else None."""
        return self.header("location") if 300 <= self.status < 400 else None

    @property
    def fingerprinted(self) -> bool:
        """Does the analysis recognise this page as a blockpage (a fingerprint of its body)? A
        redirect is followed, so its own body is never the page the probe ends on."""
        return self.location is None and bool(self.page.strip())

    def fingerprint(self) -> str | None:
        """What the body of this page contains and no site's page does (its head), or None."""
        if not self.fingerprinted:
            return None
        if self.body is None:
            return MARKER
        return self.page.decode("utf-8", errors="ignore").strip()[:FINGERPRINT_CHARS] or None


DEFAULT = Blockpage()


def declared_fingerprints(scenario: Scenario) -> list[dict[str, str]]:
    """The fingerprints of the blockpages ``scenario`` declares, as entries of a ``--fingerprints``
    file (OONI's shape: location, pattern_type, pattern), for ``harness.analysis.load_fingerprints``'s
    ``declared``. The lab's own page has its built-in fingerprint."""
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    for isp in scenario.isps:
        for rule in (*isp.resolver_rules, *isp.dpi_rules):
            bp = rule.blockpage
            if bp is None or bp.is_default:
                continue
            pattern = bp.fingerprint()
            if pattern is not None and pattern not in seen:
                seen.add(pattern)
                out.append({"name": f"scenario {isp.name} line {rule.line}", "location": "body",
                            "pattern_type": "contains", "pattern": pattern})
    return out
