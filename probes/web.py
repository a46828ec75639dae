"""Web-connectivity-style probe: dns -> tcp -> tls -> http, stopping at the first failing stage.

Test keys (OONI ``web_connectivity`` field names, plus ``x_`` extensions):

- ``queries``: the vantage resolver's responses (engine "system", tags classic) -- every
  response, so an injected+real pair shows as two entries with one transaction_id -- then the
  public resolver's (engine "udp", not classic).
- ``tcp_connect`` / ``tls_handshakes``: web_connectivity 0.5's endpoints: the URL's port of every
  address either resolver gave (all tried concurrently; TLS on every one that connected for
  https), and for an ``http://`` URL without a port also TCP+TLS to 443 of every address, which
  never fetches. Tags: ``classic`` (an address of the vantage's resolver, depth 0),
  ``tcptls_experiment`` (depth 0), ``depth=N``, ``fetch_body=true|false``. The first address of
  the vantage's resolver whose connect (and handshake) succeeds fetches.
- ``network_events``: ``connect``, ``read``/``write`` (the first ones of each connection),
  ``tls_handshake_start``/``_done``, ``http_transaction_start``/``_done``, by transaction_id.
- ``requests``: one per hop: redirects are followed (at most 10, each hop measured from DNS up,
  its connectivity entries tagged ``depth=N`` without ``classic``), in OONI's time-reverse order.
- ``x_redirects``: the URLs the redirects led to, in order; ``x_failed_depth``: the hop that failed.
- ``x_th_failure``: with ``ctx.test_helper`` set, the failure of reaching that site (OONI's test
  helper, which a censor may block) -- the harness turns it into ``control_failure``.
- ``dns_experiment_failure``: failure of the vantage resolver's lookup (first response); a lookup
  that gave only loopback addresses (never connected to, as OONI does) fails the chain with
  ``failure`` "dns_bogon_error" and no experiment failure.
- ``http_experiment_failure``: failure of the tcp, tls or http stage that stopped the fetch;
  null when the fetch succeeded or DNS already stopped it.
- ``failure``: whichever failure stopped the chain (urlgetter style), null on success.
- ``x_failed_stage``: "dns" | "tcp" | "tls" | "http" | null.
- ``x_addresses``: addresses connected to (the vantage resolver's first answer, or the IP literal).
- ``x_resolved``: {"system": [...], "public": [...] or null}.
- ``x_dns_responses``: {"system": n, "public": n}: responses received per query.
- ``x_status_code``, ``x_body_length``, ``x_body_seconds``, ``x_body_stall_seconds``, ``x_title``:
  the response's status, full body length, seconds from headers to last body byte, the longest of
  them without body bytes, and page title (null without a response).
- ``agent`` ("redirect") and ``socksproxy`` (null), as OONI writes them.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from netlab.capabilities import WEB, Capabilities
from netlab.target import Target
from probes.base import Probe
from probes.context import ProbeContext
from probes.dns import resolve_target
from probes.errors import TargetRefused
from probes.http import FetchTags, fetch_chain
from probes.redirects import MAX_REDIRECTS
from probes.safety import ensure_target_allowed
from probes.tcp import connect_all, first_connect_failure
from probes.tls import handshake
from probes.trace import Trace

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
    capabilities: ClassVar[Capabilities] = WEB

    async def run(self, target: Target, ctx: ProbeContext) -> dict[str, Any]:
        keys = await self._fetch(target, ctx)
        if ctx.web_quic:  # the QUIC step (probe setting web_quic): HTTP/3 after the page loaded
            # Imported here: aioquic takes about a tenth of a second to import, which every worker
            # would pay at start-up (part of a campaign's time) though only this setting needs it.
            from probes.quic import quic_step

            await quic_step(keys, target, ctx)
        return keys

    async def _fetch(self, target: Target, ctx: ProbeContext) -> dict[str, Any]:
        if not ctx.test_helper:
            return await fetch_chain(target, ctx, public_lookup=True, tags=WEB_TAGS, max_redirects=MAX_REDIRECTS,
                                     ooni_flows=True)
        # OONI asks its test helper while it measures; reaching it crosses the same censor.
        keys: dict[str, Any]
        keys, th_failure = await asyncio.gather(
            fetch_chain(target, ctx, public_lookup=True, tags=WEB_TAGS, max_redirects=MAX_REDIRECTS, ooni_flows=True),
            reach_test_helper(ctx.test_helper, ctx))
        keys["x_th_failure"] = th_failure
        return keys


async def reach_test_helper(url: str, ctx: ProbeContext) -> str | None:
    """A TLS handshake with the test helper site, through the vantage's own resolver and network:
    its failure (OONI's control_failure), or None."""
    try:
        target = Target.parse(url)
        ensure_target_allowed(target, ctx)
    except (ValueError, TargetRefused) as exc:
        return f"unknown_failure: test helper {url}: {exc}"
    trace = Trace()
    resolved = await resolve_target(target, ctx, trace, tags=[])
    if not resolved.addresses:
        return resolved.failure or "dns_no_answer"
    entries, connection = await connect_all(resolved.addresses, target.port, ctx, trace, tags=[])
    if connection is None:
        return first_connect_failure(entries)
    try:
        entry, _ = await handshake(connection.stream, target.host, ctx, trace, tags=[],
                                   transaction_id=connection.transaction_id)
    finally:
        await connection.stream.close()
    failure: str | None = entry["failure"]
    return failure
