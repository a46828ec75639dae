"""Web-connectivity-style probe: dns -> tcp -> tls -> http, stopping at the first failing stage.

Test keys (OONI ``web_connectivity`` field names, plus ``x_`` extensions):

- ``queries``: the vantage resolver's responses (engine "system", tags classic) -- every
  response, so an injected+real pair shows as two entries with one transaction_id -- then the
  public resolver's (engine "udp", not classic).
- ``tcp_connect``: one entry per resolved address (all tried concurrently).
- ``tls_handshakes``: at most one, on the first address that connected (https only).
- ``requests``: at most one (no redirects followed), in OONI's time-reverse order.
- ``dns_experiment_failure``: failure of the vantage resolver's lookup (first response).
- ``http_experiment_failure``: failure of the tcp, tls or http stage that stopped the fetch;
  null when the fetch succeeded or DNS already stopped it.
- ``failure``: whichever failure stopped the chain (urlgetter style), null on success.
- ``x_failed_stage``: "dns" | "tcp" | "tls" | "http" | null.
- ``x_addresses``: addresses connected to (the vantage resolver's first answer, or the IP literal).
- ``x_resolved``: {"system": [...], "public": [...] or null}.
- ``x_dns_responses``: {"system": n, "public": n}: responses received per query.
- ``x_status_code``, ``x_body_length``, ``x_body_seconds``, ``x_title``: the response's status,
  full body length, seconds from headers to last body byte, and page title (null without a
  response).
- ``agent`` ("redirect") and ``socksproxy`` (null), as OONI writes them.
"""

from __future__ import annotations

from typing import Any, ClassVar

from netlab.target import Target
from probes.base import Probe
from probes.context import ProbeContext
from probes.http import FetchTags, fetch_chain

# OONI tags: "classic" marks the data the classic web_connectivity analysis may use; the public
# resolver lookup is an extension (like OONI's extra DNS-over-UDP lookup), so it is not classic.
WEB_TAGS = FetchTags(
    dns=["classic", "depth=0"],
    public_dns=["depth=0"],
    connection=["classic", "tcptls_experiment", "depth=0"],
)


class WebProbe(Probe):
    name: ClassVar[str] = "web"
    version: ClassVar[str] = "0.1.0"
    test_name: ClassVar[str] = "web_connectivity"

    async def run(self, target: Target, ctx: ProbeContext) -> dict[str, Any]:
        return await fetch_chain(target, ctx, public_lookup=True, tags=WEB_TAGS)
