"""The ISP blockpage servers a resolver's `{answer: IP, blockpage: ...}` rules ask for: each
address goes on the router's loopback, so the ISP's own clients reach it through their default
route, and netlab.services.blockpage answers the page on port 80 of it."""

from __future__ import annotations

from ipaddress import IPv4Address

from netlab.compile.router import RouterAdditions
from netlab.model import Isp
from netlab.plan import LAB_DIR, ReadyCheck, Service
from netlab.services.configs import BlockpageConfig


def compile_blockpage_servers(isp: Isp) -> RouterAdditions:
    pages: dict[IPv4Address, bytes] = {}
    for rule in isp.resolver_rules:
        if rule.blockpage is not None and rule.address is not None:
            pages.setdefault(rule.address, rule.blockpage.response())  # the loader: one page per address
    out = RouterAdditions()
    if not pages:
        return out
    out.files[f"{isp.name}/blockpage.json"] = BlockpageConfig(
        ready_file=f"{LAB_DIR}/{isp.name}/blockpage.ready", pages={str(a): p for a, p in pages.items()}).to_json()
    out.setup += [("ip", "addr", "add", f"{a}/32", "dev", "lo") for a in pages]
    first = next(iter(pages))
    out.services.append(Service(
        "blockpage", ("python3", "-m", "netlab.services.blockpage", "--config", f"{LAB_DIR}/{isp.name}/blockpage.json"),
        ready=ReadyCheck("file", first, 0, path=f"{isp.name}/blockpage.ready")))
    out.notes.append(f"{isp.name}: blockpage server on port 80 of {', '.join(map(str, pages))} (the router's "
                     "loopback), where the resolver sends the names it blocks that way")
    return out
