"""The lab CA: generated fresh for every compiled lab, one certificate per site."""

from __future__ import annotations

from dataclasses import dataclass

import trustme


@dataclass(frozen=True)
class Pki:
    ca_pem: bytes
    site_pems: dict[str, bytes]  # site name -> certificate chain + private key (PEM)


def make_pki(site_names: list[str]) -> Pki:
    ca = trustme.CA(organization_name="censorlab lab CA")
    pems: dict[str, bytes] = {}
    for name in site_names:
        leaf = ca.issue_cert(name, f"*.{name}")
        pems[name] = b"".join(b.bytes() for b in leaf.cert_chain_pems) + leaf.private_key_pem.bytes()
    return Pki(ca_pem=ca.cert_pem.bytes(), site_pems=pems)
