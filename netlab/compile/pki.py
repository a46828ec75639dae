"""The lab CA: generated fresh for every compiled lab, one certificate per site.

A site may present a bad certificate on purpose (scenario ``tls: {cert: ...}``): ``expired``
(valid until yesterday), ``wrong_name`` (issued for another name) or ``unknown_ca`` (issued by a
second CA that no vantage trusts). Those are the site's own fault, not interception.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import trustme

WRONG_NAME = "wrong-host.invalid"  # a name no site can have (.invalid is reserved)


@dataclass(frozen=True)
class Pki:
    ca_pem: bytes
    site_pems: dict[str, bytes]  # site name -> certificate chain + private key (PEM)
    bad_pems: dict[str, bytes]  # the bad certificate of each site that has one (served per `only_for`)


def make_pki(site_names: list[str], cert_kinds: Mapping[str, str] | None = None,
             aliases: Mapping[str, list[str]] | None = None) -> Pki:
    """``aliases``: the other names a site's certificate covers (the sites that are CNAMEs of it)."""
    kinds = cert_kinds or {}
    ca = trustme.CA(organization_name="fauxisp lab CA")
    rogue: trustme.CA | None = None
    pems: dict[str, bytes] = {}
    bad: dict[str, bytes] = {}
    for name in site_names:
        identities = [name, f"*.{name}", *(aliases or {}).get(name, [])]
        pems[name] = _pem(ca.issue_cert(*identities))
        kind = kinds.get(name, "valid")
        if kind == "valid":
            continue
        issuer = ca
        not_before = not_after = None
        if kind == "expired":
            now = datetime.now(UTC)
            not_before, not_after = now - timedelta(days=30), now - timedelta(days=1)
        elif kind == "wrong_name":
            identities = [WRONG_NAME]
        elif kind == "unknown_ca":
            rogue = rogue or trustme.CA(organization_name="fauxisp unknown CA")
            issuer = rogue
        bad[name] = _pem(issuer.issue_cert(*identities, not_before=not_before, not_after=not_after))
    return Pki(ca_pem=ca.cert_pem.bytes(), site_pems=pems, bad_pems=bad)


def _pem(leaf: trustme.LeafCert) -> bytes:
    return b"".join(b.bytes() for b in leaf.cert_chain_pems) + leaf.private_key_pem.bytes()


@dataclass(frozen=True)
class CensorPki:
    """An ISP's own CA (the DPI action ``intercept``): no vantage trusts it."""

    ca_pem: bytes
    leaf_pems: dict[str, bytes]  # name -> certificate chain + private key (PEM) the interceptor presents


def make_censor_pki(isp: str, names: list[str]) -> CensorPki:
    ca = trustme.CA(organization_name=f"fauxisp {isp} interception CA")
    return CensorPki(ca_pem=ca.cert_pem.bytes(), leaf_pems={n: _pem(ca.issue_cert(n, f"*.{n}")) for n in names})
