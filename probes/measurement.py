"""Wrap a probe's test keys in OONI's base measurement envelope (ooni/spec df-000-base)."""

from __future__ import annotations

import secrets
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

from netlab.target import Target
from probes.context import ProbeContext

SOFTWARE_NAME = "fauxisp"
DATA_FORMAT_VERSION = "0.2.0"
#: The lab is nowhere: OONI's "unknown country" code.
PROBE_CC = "ZZ"

#: OONI data-format extensions whose structures the probes write.
EXTENSIONS = {"dnst": 0, "httpt": 0, "tcpconnect": 0, "tlshandshake": 0}


def software_version() -> str:
    """The project's version (probes.__version__, which the package metadata is built from), the
    same whether the project is installed or runs from a mounted source tree."""
    from probes import __version__

    return __version__


def ooni_time(moment: datetime) -> str:
    """OONI's timestamp format, "2006-01-02 15:04:05", in UTC."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def new_report_id(test_name: str, ctx: ProbeContext, when: datetime | None = None) -> str:
    """A report id in OONI's shape: ``20240101T000000Z_webconnectivity_ZZ_64500_n1_<random>``."""
    when = (when or datetime.now(UTC)).astimezone(UTC)
    compact_name = test_name.replace("_", "")
    return f"{when:%Y%m%dT%H%M%SZ}_{compact_name}_{PROBE_CC}_{ctx.probe_asn}_n1_{secrets.token_hex(8)}"


def measurement_envelope(
    probe: Any,
    target: Target,
    ctx: ProbeContext,
    test_keys: dict[str, Any],
    start: datetime,
    runtime: float,
    *,
    report_id: str | None = None,
    test_start_time: datetime | None = None,
) -> dict[str, Any]:
    """The full measurement for one run of ``probe`` (a probe class or instance) on ``target``.

    ``start`` is when the measurement began (its ``t0``/``t`` values count from there) and
    ``runtime`` its duration in seconds. ``report_id`` and ``test_start_time`` identify the batch
    the measurement belongs to; by default the measurement is its own batch.
    """
    test_name = getattr(probe, "test_name", "urlgetter")
    start_utc = start.astimezone(UTC) if start.tzinfo is not None else start.replace(tzinfo=UTC)
    return {
        "annotations": {
            "engine_name": SOFTWARE_NAME,
            "platform": sys.platform,
            "probe": str(getattr(probe, "name", "")),
            "vantage": ctx.vantage,
        },
        "data_format_version": DATA_FORMAT_VERSION,
        "extensions": dict(EXTENSIONS),
        "input": target.url,
        "measurement_start_time": ooni_time(start_utc),
        # OONI's measurement_uid: start time, country, test name, random part.
        "measurement_uid": f"{start_utc:%Y%m%d%H%M%S.%f}_{PROBE_CC}_{test_name}_{uuid.uuid4().hex[:16]}",
        "options": [],
        "probe_asn": f"AS{ctx.probe_asn}",
        "probe_cc": PROBE_CC,
        "probe_ip": ctx.probe_ip,
        "probe_network_name": ctx.probe_network_name,
        "report_id": report_id or new_report_id(test_name, ctx, start_utc),
        "resolver_asn": f"AS{ctx.resolver_asn}",
        "resolver_ip": ctx.resolver,
        "resolver_network_name": ctx.resolver_network_name,
        "software_name": SOFTWARE_NAME,
        "software_version": software_version(),
        "test_helpers": {},
        "test_keys": test_keys,
        "test_name": test_name,
        "test_runtime": round(runtime, 6),
        "test_start_time": ooni_time(test_start_time or start_utc),
        "test_version": str(getattr(probe, "version", "0.0.0")),
    }
