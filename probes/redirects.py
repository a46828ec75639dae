"""Following HTTP redirects the way OONI's web_connectivity does: at most ten, each hop measured
on its own (dns -> tcp -> tls -> http), with OONI's failure strings for the ways a chain breaks."""

from __future__ import annotations

from typing import Any
from urllib.parse import urljoin, urlsplit

from netlab.capabilities import MAX_REDIRECTS
from netlab.target import Target, TargetError

__all__ = ["BAD_LOCATION", "MAX_REDIRECTS", "REDIRECT_CODES", "TOO_MANY", "location_of", "next_target"]
REDIRECT_CODES = (301, 302, 303, 307, 308)
TOO_MANY = "unknown_failure: stopped after too many redirects"
BAD_LOCATION = "http_invalid_redirect_location_host"


def location_of(entry: dict[str, Any]) -> str | None:
    """The Location of a redirect response in a ``requests`` entry; None when it is no redirect."""
    response = entry.get("response") or {}
    if entry.get("failure") is not None or response.get("code") not in REDIRECT_CODES:
        return None
    headers: list[tuple[str, str]] = response.get("headers_list") or []
    for key, value in headers:
        if key.lower() == "location":
            return value
    return None  # a 3xx without Location is the final response, as browsers and Go treat it


def next_target(location: str, base: str) -> tuple[Target | None, str | None]:
    """(the next hop, None) or (None, OONI failure) for a Location header relative to ``base``."""
    raw = urlsplit(location.strip())
    # "http://" (a scheme, no host) is broken: urljoin would quietly reuse the base's host.
    if raw.scheme.lower() in ("http", "https") and not raw.hostname:
        return None, BAD_LOCATION
    url = urljoin(base, location.strip())
    try:
        return Target.parse(url), None
    except TargetError as exc:
        return None, f"unknown_failure: {exc}"
