"""Load and validate a scenario file into a ``Scenario``.

Every error names the file, the line and the key path (``isps[0].resolver.rules[2].match``),
and nothing starts: the loader is pure. Parsing walks PyYAML's node tree, not plain dicts, so
every value still knows where it came from.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from pathlib import Path
from typing import Any, TypeVar, overload

import idna
import yaml

from netlab.addressing import (
    LAB_INTERNET,
    LAB_INTERNET_V6,
    MAX_ISPS,
    PROXY_BLOCK,
    SITE_CAPACITY,
    SITES_V6,
    allocate_sites,
    is_site_address,
    is_site_address_v6,
)
from netlab.blockpage import MAX_INJECTED, Blockpage, bodiless
from netlab.compile.router import MAX_NAMED_SHAPING
from netlab.coverage import apply_coverage
from netlab.dnstree import registrable, reserved_dns_name
from netlab.errors import ScenarioError
from netlab.model import (
    CERT_KINDS,
    CONTROL,
    DNS_STATES,
    QUIC_DATAGRAMS,
    QUIC_RESIDUAL_SCOPES,
    QUIC_VERSIONS,
    RECORD_TYPES,
    SITE_STATES,
    TRANSPORTS,
    Isp,
    Match,
    PathResponse,
    QuicKnobs,
    Reassembly,
    Redirect,
    Rule,
    Scenario,
    ShapingRule,
    Site,
    SiteRecords,
)
from netlab.names import lab_name_problem
from netlab.target import Target, TargetError, in_address_plan
from netlab.verdict import Verdict

_T = TypeVar("_T")
_U = TypeVar("_U")
_V = TypeVar("_V")

RESOLVER_ACTIONS = ("nxdomain", "servfail", "refused", "timeout", "proxy")  # plus {answer: IP}
SITE_KEYS = ("name", "address", "addresses", "paths", "body_size", "service", "state", "tls", "redirect",
             "response", "only_for", "https", "dns_answer", "records", "quic")
# What an alias (a site with a CNAME) may say beside it: the rest is its canonical site's.
ALIAS_KEYS = ("name", "service", "records")
MAX_TXT = 255  # bytes of one TXT string (one character-string of the record)
# ProbeContext fields a scenario may set (`probe:`), and test_helper (a site standing for OONI's TH).
PROBE_NUMBERS = ("dns_timeout", "connect_timeout", "tls_timeout", "http_timeout", "http_total_timeout",
                 "quic_timeout")
OONI_KEYS = ("blocking", "accessible", "dns_consistency", "dns_experiment_failure", "http_experiment_failure",
             "control_failure", "x_verdict", "body_length_match", "status_code_match", "headers_match",
             "title_match")
FIREWALL_ACTIONS = ("drop", "reset", "reject")
DPI_ACTIONS = ("reset", "drop", "blockpage", "close", "intercept")  # plus {inject: IP}, {intercept: {page: ...}}
DPI_KEYS = ("rules", "fail", "placement", "reassembly", "ca_installed")
DPI_PLACEMENTS = ("access", "border")  # where the middlebox sits (netlab.compile.dpi)
NAME_KEYS = ("domain", "exact", "sni", "http_host", "dns_query")
ADDRESS_KEYS = ("site", "ip", "cidr", "port", "proto")
MATCH_KEYS = {
    "resolver": ("domain", "exact"),
    "firewall": (*ADDRESS_KEYS, "family"),  # family: 4 or 6, dual stack
    "dpi": ("sni", "http_host", "dns_query", "keyword", *ADDRESS_KEYS, "family"),
    "shaping": ("sni", "http_host", *ADDRESS_KEYS, "family"),  # names: the middlebox reads them (compile.shaping)
}
# Limits (documented in docs/scenario-limits.md). Each one keeps a value the lab cannot honour from
# becoming a lab fault, or a traceback, long after the scenario was accepted.
MAX_SITES = SITE_CAPACITY  # every site needs an address of the plan (netlab.addressing)
MAX_TARGETS = 2 * MAX_SITES  # the default list (https and http of every site) always fits
MAX_RULES = 10_000  # per list: the oracle and the middlebox try rules one by one, in order
GIB = 1024**3
MAX_BODY_SIZE = GIB  # one page: the origin builds it in memory at start-up
# All pages together: one origin process holds every site's page. The default page of every site
# the plan holds fits (129,540 x 64 KiB = 7.9 GiB).
MAX_TOTAL_BODY = 8 * GIB
MAX_RATE_BPS = 32 * 1000**3  # tc's rate fields count bytes/s in 32 bits: 32gbit = 4e9 bytes/s < 2**32
MAX_DELAY_MS = 60_000.0  # a minute: far beyond any probe timeout
QUIC_MIN_DELAY = 1.0  # seconds: a QUIC block that starts later than this misses the triggering fetch
MAX_INSPECT_PACKETS = 1000  # dpi.reassembly.packets: every queued packet costs the Python middlebox
MAX_INSPECT_BYTES = 1024**2  # dpi.reassembly.bytes: kept per flow in the middlebox's memory
MAX_RESIDUAL = 3600.0  # seconds; the GFW's is about 90 s, and an hour outlasts any campaign of the lab
MAX_PROBE_SECONDS = 600.0  # a probe timeout of ten minutes already stalls a campaign
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_LAB_NAME = re.compile(r"^[a-z][a-z0-9-]{0,23}$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?\s*$", re.IGNORECASE)
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an RFC 9110 token
_FRAMING_HEADERS = ("content-length", "transfer-encoding", "connection")
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?)(bit|bps)\s*$", re.IGNORECASE)


class _Ctx:
    """Where we are in the file, for error messages."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, node: yaml.Node | None, key: str, message: str) -> ScenarioError:
        line = node.start_mark.line + 1 if node is not None else None
        return ScenarioError(message, file=self.file, line=line, key=key)


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file. Raises ScenarioError naming file, line and key."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"cannot read the file: {exc.strerror or exc}", file=str(p)) from None
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"not UTF-8 text ({exc.reason})", file=str(p)) from None
    return parse_scenario(text, source=str(p))


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    ctx = _Ctx(source)
    if len(text) > _PRECOUNT_ABOVE:
        _precount(ctx, text)
    try:
        root = yaml.compose(text, Loader=_YAML_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ScenarioError(f"malformed YAML: {exc.problem or exc}", file=source, line=line) from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"malformed YAML: {exc}", file=source) from None
    except RecursionError:
        raise ScenarioError("malformed YAML: nested too deeply", file=source) from None
    if root is None:
        raise ScenarioError("the file is empty", file=source)
    _check_scalars(ctx, root)
    return _Loader(ctx).scenario(root)


# No file shorter than this can list more sites or targets than the limits allow (an item takes 10
# bytes at the very least); for longer ones, counting from the parser's events takes a seventh of
# the time of building the node tree, so 140,000 sites are refused in a second, not after seven.
_PRECOUNT_ABOVE = 1_000_000
_COUNTED = {("internet", "sites"): "internet.sites", ("targets",): "targets", ("isps",): "isps"}
_LIMITS = {"internet.sites": MAX_SITES, "targets": MAX_TARGETS, "isps": MAX_ISPS}


def _too_many(key: str, count: int | None) -> str | None:
    """The message for a list at ``key`` with ``count`` items (None: more than the limit), or None."""
    limit = _LIMITS[key]
    what, why = {"internet.sites": ("sites", " (the site addresses of the lab internet's address plan)"),
                 "targets": ("targets", ""), "isps": ("ISPs", " (one 10.N.0.0/16 each)")}[key]
    if count is not None and count <= limit:
        return None
    return f"{'more than ' + str(limit) if count is None else count} {what}; at most {limit}{why}"


def _precount(ctx: _Ctx, text: str) -> None:
    """Refuse a list longer than its limit from the event stream, before the node tree is built.
    Malformed YAML is left for the composer to report."""
    # A frame per open collection: [path, is_mapping, next node is a key, current key, items].
    stack: list[list[Any]] = []
    try:
        for ev in yaml.parse(text, Loader=_YAML_LOADER):
            if isinstance(ev, yaml.MappingEndEvent | yaml.SequenceEndEvent):
                stack.pop()
                continue
            if not isinstance(ev, yaml.NodeEvent):
                continue
            path: tuple[str, ...] | None = ()
            if stack:
                top = stack[-1]
                if top[0] is None:
                    path = None  # inside a key that is a collection: nothing we count
                elif top[1] and top[2]:  # a mapping key
                    top[3] = ev.value if isinstance(ev, yaml.ScalarEvent) else None
                    top[2] = False
                    path = None
                elif top[1]:  # a mapping value
                    top[2] = True
                    path = (*top[0], top[3]) if top[3] is not None else None
                else:  # a list item
                    top[4] += 1
                    key = _COUNTED.get(top[0])
                    if key and top[4] > _LIMITS[key]:
                        line = ev.start_mark.line + 1 if ev.start_mark is not None else None
                        raise ScenarioError(str(_too_many(key, None)), file=ctx.file, line=line, key=key)
                    path = (*top[0], "[]")
            if isinstance(ev, yaml.MappingStartEvent | yaml.SequenceStartEvent):
                stack.append([path, isinstance(ev, yaml.MappingStartEvent), True, None, 0])
    except yaml.YAMLError:
        return


def _check_scalars(ctx: _Ctx, root: yaml.Node) -> None:
    """Every scalar must have a Python value: ``!!int abc``, ``!!timestamp x`` or an unknown tag
    (``!foo``) would otherwise raise from deep inside the loader, naming nothing. Iterative, so
    deep nesting costs no recursion; aliases are visited once."""
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    seen: set[int] = set()
    while stack:
        node, key = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            if node.tag in _PLAIN_TAGS:
                continue  # the common case, and one that always constructs
            try:
                _CONSTRUCTOR.construct_object(node, deep=True)
            except Exception as exc:  # PyYAML's constructors raise ValueError, KeyError, AttributeError...
                problem = getattr(exc, "problem", None) or str(exc)
                raise ctx.fail(node, key, f"bad value {node.value!r} ({node.tag}): {problem}") from None
        elif isinstance(node, yaml.SequenceNode):
            stack += [(v, f"{key}[{i}]") for i, v in enumerate(node.value)]
        elif isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                stack.append((k, key))
                sub = k.value if isinstance(k, yaml.ScalarNode) else "?"
                stack.append((v, _join(key, sub)))


# ---------------------------------------------------------------- node helpers


_CONSTRUCTOR = yaml.constructor.SafeConstructor()
# libyaml's composer where PyYAML has it: same nodes and line numbers, a fraction of the time and
# memory for scenarios with tens of thousands of targets.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_PLAIN_TAGS = frozenset({"tag:yaml.org,2002:str", "tag:yaml.org,2002:null"})


def _scalar(node: yaml.Node) -> Any:
    """The Python value of a scalar node, typed as YAML's safe loader types it."""
    if not isinstance(node, yaml.ScalarNode):
        return None
    return _CONSTRUCTOR.construct_object(node, deep=True)


class _Loader:
    def __init__(self, ctx: _Ctx) -> None:
        self.ctx = ctx
        self.site_names: set[str] = set()
        # Checked once the ISPs and all sites are known.
        self.only_for_nodes: list[tuple[yaml.Node, str, tuple[str, ...]]] = []
        self.redirect_targets: list[tuple[yaml.Node, str, Target]] = []
        self.record_nodes: dict[str, dict[str, yaml.Node]] = {}  # key of a site's records -> its type nodes
        self.whoami_node: yaml.Node | None = None
        self.ipv6 = False  # internet.ipv6: dual stack
        self.whoami: str | None = None

    # -- generic shapes

    def mapping(self, node: yaml.Node, key: str, allowed: tuple[str, ...],
                required: tuple[str, ...] = ()) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            raise self.ctx.fail(node, key, f"expected a mapping, got {_kind(node)}")
        out: dict[str, yaml.Node] = {}
        for knode, vnode in node.value:
            k = _scalar(knode)
            if not isinstance(k, str):
                raise self.ctx.fail(knode, key, f"keys must be strings, got {k!r}")
            if k not in allowed:
                hint = f"; expected one of: {', '.join(allowed)}" if allowed else ""
                raise self.ctx.fail(knode, _join(key, k), f"unknown key{hint}")
            if k in out:
                raise self.ctx.fail(knode, _join(key, k), "duplicate key")
            out[k] = vnode
        for r in required:
            if r not in out:
                raise self.ctx.fail(node, _join(key, r), "missing required key")
        return out

    def sequence(self, node: yaml.Node, key: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.ctx.fail(node, key, f"expected a list, got {_kind(node)}")
        return list(node.value)

    @overload
    def value(self, node: yaml.Node, key: str, typ: type[_T], what: str) -> _T: ...
    @overload
    def value(self, node: yaml.Node, key: str, typ: tuple[type[_T], type[_U]], what: str) -> _T | _U: ...
    @overload
    def value(self, node: yaml.Node, key: str, typ: tuple[type[_T], type[_U], type[_V]], what: str
              ) -> _T | _U | _V: ...

    def value(self, node: yaml.Node, key: str, typ: type[Any] | tuple[type[Any], ...], what: str) -> Any:
        v = _scalar(node) if isinstance(node, yaml.ScalarNode) else node
        if isinstance(v, bool) and bool not in (typ if isinstance(typ, tuple) else (typ,)):
            raise self.ctx.fail(node, key, f"expected {what}, got a boolean")
        if not isinstance(v, typ):
            raise self.ctx.fail(node, key, f"expected {what}, got {_kind(node)}")
        return v

    def string(self, node: yaml.Node, key: str) -> str:
        return self.value(node, key, str, "a string")

    def dns_name(self, node: yaml.Node, key: str) -> str:
        raw = self.value(node, key, str, "a DNS name")
        try:
            return idna_name(raw)
        except ValueError as exc:
            raise self.ctx.fail(node, key, f"{raw!r} is not a valid DNS name: {exc}") from None

    def label(self, node: yaml.Node, key: str) -> str:
        """A short identifier: a service name, for instance."""
        raw = self.string(node, key)
        if not _LAB_NAME.match(raw):
            raise self.ctx.fail(node, key, f"{raw!r}: use 1-24 characters a-z, 0-9 and '-', starting with a letter")
        return raw

    def ip(self, node: yaml.Node, key: str) -> IPv4Address:
        raw = _scalar(node)
        try:
            return IPv4Address(str(raw).strip()) if isinstance(raw, str) else IPv4Address(raw)
        except (ValueError, ipaddress.AddressValueError):
            raise self.ctx.fail(node, key, f"{raw!r} is not an IPv4 address") from None

    def any_ip(self, node: yaml.Node, key: str) -> IPv4Address | IPv6Address:
        """An IPv4 or (dual stack) IPv6 address."""
        raw = _scalar(node)
        try:
            return ipaddress.ip_address(str(raw).strip() if isinstance(raw, str) else raw)
        except ValueError:
            raise self.ctx.fail(node, key, f"{raw!r} is not an {'IPv4 or IPv6' if self.ipv6 else 'IPv4'} "
                                "address") from None

    def lab_ip(self, node: yaml.Node, key: str) -> IPv4Address:
        """An address a resolver or middlebox may answer with: never a public one."""
        ip = self.ip(node, key)
        if not in_address_plan(str(ip)):
            raise self.ctx.fail(node, key, f"{ip} is a public address; the lab uses only private, "
                                "loopback and reserved ranges (e.g. 10.0.0.0/8, 198.18.0.0/15)")
        return ip

    # -- the document

    def scenario(self, root: yaml.Node) -> Scenario:
        top = self.mapping(root, "", ("version", "name", "description", "seed", "internet", "isps",
                                      "targets", "expect", "probe", "expect_ooni"),
                           required=("version", "name", "internet"))
        version = self.value(top["version"], "version", int, "an integer")
        if version != 1:
            raise self.ctx.fail(top["version"], "version", f"unsupported version {version}; this is 1")
        name = self.string(top["name"], "name")
        problem = lab_name_problem(name)
        if problem:
            raise self.ctx.fail(top["name"], "name", f"{problem}: it names the lab's namespaces and folder")
        self.check_sizes(top)
        description = self.string(top["description"], "description") if "description" in top else ""
        sites, public_resolver = self.internet(top["internet"])
        isps = self.isps(top["isps"]) if "isps" in top else ()
        self.check_only_for(isps)
        self.check_blockpage_servers(isps, sites)
        targets = self.targets(top.get("targets"), sites)
        expect = self.expect(top["expect"], isps, targets) if "expect" in top else {}
        seed = self.value(top["seed"], "seed", int, "an integer") if "seed" in top else 0
        probe = self.probe(top["probe"]) if "probe" in top else {}
        expect_ooni = self.expect_ooni(top["expect_ooni"], isps, targets) if "expect_ooni" in top else {}
        scenario = Scenario(name=name, description=description, sites=sites, isps=isps, targets=targets,
                            public_resolver=public_resolver, whoami=self.whoami, ipv6=self.ipv6, expect=expect,
                            source=self.ctx.file, version=version, seed=seed, probe=probe, expect_ooni=expect_ooni)
        # Partial enforcement becomes plain rules here, so the compiler and the oracle agree on it.
        return apply_coverage(scenario)

    def check_sizes(self, top: dict[str, yaml.Node]) -> None:
        """The counts with a limit, before any per-item work: 140,000 sites would otherwise take
        tens of seconds to load, then fail in the address plan."""
        internet = top["internet"]
        lists = {"targets": top.get("targets"), "isps": top.get("isps")}
        if isinstance(internet, yaml.MappingNode):
            lists["internet.sites"] = next((v for k, v in internet.value
                                            if isinstance(k, yaml.ScalarNode) and k.value == "sites"), None)
        for key, node in lists.items():
            if isinstance(node, yaml.SequenceNode) and (problem := _too_many(key, len(node.value))):
                raise self.ctx.fail(node, key, problem)

    def internet(self, node: yaml.Node) -> tuple[tuple[Site, ...], bool]:
        m = self.mapping(node, "internet", ("sites", "public_resolver", "whoami", "ipv6"), required=("sites",))
        if "ipv6" in m:
            self.ipv6 = self.value(m["ipv6"], "internet.ipv6", bool, "true or false")
        public = True
        if "public_resolver" in m:
            public = self.value(m["public_resolver"], "internet.public_resolver", bool, "true or false")
        self.whoami_node = m.get("whoami")
        sites: list[Site] = []
        site_maps: list[dict[str, yaml.Node]] = []  # each site's keys, for the co-hosting checks
        site_nodes = self.sequence(m["sites"], "internet.sites")
        if problem := _too_many("internet.sites", len(site_nodes)):
            raise self.ctx.fail(m["sites"], "internet.sites", problem)
        total_body = 0
        name_nodes: list[yaml.Node] = []
        for i, snode in enumerate(site_nodes):
            key = f"internet.sites[{i}]"
            s = self.mapping(snode, key, SITE_KEYS, required=("name",))
            name_nodes.append(s["name"])
            site_maps.append(s)
            name = self.dns_name(s["name"], f"{key}.name")
            if name in self.site_names:
                raise self.ctx.fail(s["name"], f"{key}.name", f"duplicate site name {name!r}")
            site_addrs, site_addrs6 = self.site_addresses(s, key)
            addr = site_addrs[0] if site_addrs else None
            body_size = 64 * 1024
            if "body_size" in s:
                body_size = self.size(s["body_size"], f"{key}.body_size")
            service = self.label(s["service"], f"{key}.service") if "service" in s else None
            self.site_names.add(name)
            records = self.records(s["records"], f"{key}.records") if "records" in s else SiteRecords()
            if records.cname is not None and (extra := [k for k in s if k not in ALIAS_KEYS]):
                raise self.ctx.fail(s[extra[0]], f"{key}.{extra[0]}", f"a site with a CNAME is an alias of "
                                    f"{records.cname}: its address, origin and behaviour are that site's")
            if self.ipv6 and records.aaaa:
                raise self.ctx.fail(self.record_nodes[f"{key}.records"]["AAAA"], f"{key}.records.AAAA",
                                    "with internet.ipv6 a site's AAAA records are its IPv6 addresses: give them "
                                    "in address/addresses (or leave them out: the twin of each IPv4 address)")
            site = Site(name=name, address=addr, addresses=site_addrs, addresses6=site_addrs6, body_size=body_size,
                        records=records,
                        line=snode.start_mark.line + 1, service=service, **self.behaviour(s, key))
            if records.cname is not None and site.name == registrable(site.name):
                raise self.ctx.fail(s["records"], f"{key}.records.CNAME", f"{name} is a zone apex, which has SOA "
                                    f"and NS records: no CNAME there (RFC 1034); alias a name under it, e.g. "
                                    f"www.{name}")
            if site.state == "unresolvable" and records:
                raise self.ctx.fail(s["records"], f"{key}.records", "an unresolvable site is in no zone: "
                                    "it has no records")
            # The origin builds the generated page even when response.body replaces it for some.
            total_body += site.body_size + (len(site.body) if site.body is not None else 0) + sum(
                len(p.body or b"") for p in site.paths)
            if total_body > MAX_TOTAL_BODY:
                raise self.ctx.fail(snode, key, f"the sites' pages add up to more than {_bytes(MAX_TOTAL_BODY)} "
                                    "(one origin process holds every page in memory)")
            sites.append(site)
        if not sites:
            raise self.ctx.fail(m["sites"], "internet.sites", "at least one site is needed")
        self.check_dns_names(sites, name_nodes)
        if self.whoami_node is not None:
            self.whoami = self.whoami_name(self.whoami_node, sites)
        self.check_cohosting(sites, site_maps)
        return tuple(sites), public

    def check_cohosting(self, sites: list[Site], maps: list[dict[str, yaml.Node]]) -> None:
        """Sites that share an address share its listeners and its packet filter: they must agree
        on what those do (whether 443 answers, with a certificate; a state that is a filter rule)."""
        first: dict[IPv4Address, int] = {}  # address -> the first site declared with it
        for i, site in enumerate(sites):
            for addr in site.addresses:
                j = first.setdefault(addr, i)
                if j == i:
                    continue
                other, s, key = sites[j], maps[i], f"internet.sites[{i}]"
                where = f"{addr} also serves {other.name} (line {other.line})"
                if site.https != other.https:
                    raise self.ctx.fail(s.get("https", s["name"]), f"{key}.https", f"{where}, which "
                                        f"{'has' if other.https else 'has no'} HTTPS listener: co-hosted sites "
                                        "share port 443, so either all present a certificate there or none")
                filtered = ("refused", "timeout")
                if (site.state in filtered or other.state in filtered) and (
                        site.state != other.state or site.only_for != other.only_for):
                    raise self.ctx.fail(s.get("state", s["name"]), f"{key}.state", f"{where}, whose state is "
                                        f"{other.state}: refused and timeout filter the address, so co-hosted sites "
                                        "share them (and their only_for)")

    def records(self, node: yaml.Node, key: str) -> SiteRecords:
        """A site's `records:` (scenario.md): each type a value or a list of values."""
        m = self.mapping(node, key, RECORD_TYPES)
        values = {t: ([v for v in self.sequence(n, f"{key}.{t}")] if isinstance(n, yaml.SequenceNode) else [n])
                  for t, n in m.items()}
        for t, vs in values.items():
            if not vs:
                raise self.ctx.fail(m[t], f"{key}.{t}", "an empty list; give at least one value")
        self.record_nodes[key] = m
        aaaa = []
        for v in values.get("AAAA", []):
            raw = _scalar(v)
            try:
                addr = IPv6Address(str(raw).strip())
            except (ValueError, ipaddress.AddressValueError):
                raise self.ctx.fail(v, f"{key}.AAAA", f"{raw!r} is not an IPv6 address") from None
            if addr not in LAB_INTERNET_V6:
                raise self.ctx.fail(v, f"{key}.AAAA", f"{addr} is outside the lab's IPv6 range {LAB_INTERNET_V6}")
            aaaa.append(addr)
        cname = None
        if "CNAME" in values:
            if len(values["CNAME"]) > 1:
                raise self.ctx.fail(m["CNAME"], f"{key}.CNAME", "a name has one CNAME")
            cname = self.dns_name(values["CNAME"][0], f"{key}.CNAME")
            if len(m) > 1:
                other = next(t for t in m if t != "CNAME")
                raise self.ctx.fail(m[other], f"{key}.{other}", "a name with a CNAME has no other records (RFC 1034)")
        txt = []
        for v in values.get("TXT", []):
            text = self.value(v, f"{key}.TXT", (str, int, float), "a string")
            text = str(text)
            if len(text.encode()) > MAX_TXT:
                raise self.ctx.fail(v, f"{key}.TXT", f"{len(text.encode())} bytes; a TXT string has at most {MAX_TXT}")
            txt.append(text)
        ns = tuple(self.dns_name(v, f"{key}.NS") for v in values.get("NS", []))
        mx = []
        for v in values.get("MX", []):
            raw = self.string(v, f"{key}.MX")
            parts = raw.split()
            pref = 10
            if len(parts) == 2 and parts[0].isdigit():
                pref, parts = int(parts[0]), parts[1:]
            if len(parts) != 1 or not 0 <= pref <= 65535:
                raise self.ctx.fail(v, f"{key}.MX", f"{raw!r} is not a mail exchanger (e.g. '10 mail.news.test' "
                                    "or 'mail.news.test')")
            try:
                mx.append((pref, idna_name(parts[0])))
            except ValueError as exc:
                raise self.ctx.fail(v, f"{key}.MX", f"{parts[0]!r} is not a valid DNS name: {exc}") from None
        return SiteRecords(aaaa=tuple(aaaa), cname=cname, txt=tuple(txt), ns=ns, mx=tuple(mx))

    def whoami_name(self, node: yaml.Node, sites: list[Site]) -> str:
        """`internet.whoami`: a zone of its own, whose server answers who asks (so no site in it)."""
        name = self.dns_name(node, "internet.whoami")
        if "." not in name:
            raise self.ctx.fail(node, "internet.whoami", f"{name} is a TLD; give a name under one, e.g. whoami.{name}")
        for s in sites:
            if s.name == name or s.name.endswith("." + name):
                raise self.ctx.fail(node, "internet.whoami", f"{name} is a zone of its own, served by the lab's "
                                    f"whoami server: site {s.name} cannot be in it")
            if any(n == name or n.endswith("." + name) for n in s.records.ns):
                raise self.ctx.fail(node, "internet.whoami", f"site {s.name}'s NS records name a server in {name}")
        problem = reserved_dns_name(name, [s.name for s in sites if s.records.ns])
        if problem:
            raise self.ctx.fail(node, "internet.whoami", problem)
        return name

    def check_dns_names(self, sites: list[Site], name_nodes: list[yaml.Node]) -> None:
        """Once every site is known: CNAMEs point at sites and end at one with an address, and no
        name takes one the lab's own name servers use (netlab.compile.dns)."""
        by_name = {s.name: s for s in sites}
        delegated = {s.name for s in sites if s.records.ns}
        for i, site in enumerate(sites):
            rkey = f"internet.sites[{i}].records"
            nodes = self.record_nodes.get(rkey, {})
            if site.records.cname is not None:
                chain = [site.name]
                while (nxt := by_name.get(chain[-1])) is not None and nxt.records.cname is not None:
                    if nxt.records.cname in chain:
                        loop = " -> ".join([*chain[chain.index(nxt.records.cname):], nxt.records.cname])
                        raise self.ctx.fail(nodes["CNAME"], f"{rkey}.CNAME", f"a CNAME loop: {loop}")
                    chain.append(nxt.records.cname)
                if chain[-1] not in by_name:
                    raise self.ctx.fail(nodes["CNAME"], f"{rkey}.CNAME", f"{chain[-1]!r} is not a site of this "
                                        "scenario: a CNAME points at a site")
            for ns in site.records.ns:
                if ns in by_name:
                    raise self.ctx.fail(nodes["NS"], f"{rkey}.NS", f"{ns} is a site; a name server's name gets "
                                        "the lab's authoritative server's address, so it cannot be a site too")
            problem = reserved_dns_name(site.name, delegated)
            if problem:
                raise self.ctx.fail(name_nodes[i], f"internet.sites[{i}].name", problem)

    def site_addresses(self, s: dict[str, yaml.Node], key: str
                       ) -> tuple[tuple[IPv4Address, ...], tuple[IPv6Address, ...]]:
        """`address` or `addresses` (a CDN): any number of sites may share one (shared hosting).
        With internet.ipv6, IPv6 addresses too (the site's AAAA records); (IPv4 ones, IPv6 ones)."""
        if "address" in s and "addresses" in s:
            raise self.ctx.fail(s["addresses"], f"{key}.addresses", "give address or addresses, not both")
        if "address" in s:
            nodes, akey = [s["address"]], f"{key}.address"
        elif "addresses" in s:
            akey = f"{key}.addresses"
            nodes = self.sequence(s["addresses"], akey)
            if not nodes:
                raise self.ctx.fail(s["addresses"], akey, "name at least one address")
        else:
            return (), ()
        out: list[IPv4Address] = []
        out6: list[IPv6Address] = []
        for node in nodes:
            any_addr = self.any_ip(node, akey)
            if isinstance(any_addr, IPv6Address):
                if not self.ipv6:
                    raise self.ctx.fail(node, akey, f"{any_addr} is an IPv6 address: the lab internet has IPv6 "
                                        "only with internet.ipv6: true")
                if not is_site_address_v6(any_addr):
                    raise self.ctx.fail(node, akey, f"{any_addr} is outside the lab internet's IPv6 sites "
                                        f"{SITES_V6} (2001:2::c612:0-2001:2::c612:9 are the infrastructure's)")
                if any_addr in out6:
                    raise self.ctx.fail(node, akey, f"{any_addr} is listed twice")
                out6.append(any_addr)
                continue
            addr = any_addr
            if not is_site_address(addr) or addr in PROXY_BLOCK:
                raise self.ctx.fail(node, akey, f"{addr} is outside the lab internet {LAB_INTERNET} "
                                    f"(198.18.0.0-198.18.0.9 and the ISP proxies' {PROXY_BLOCK} are reserved)")
            if addr in out:
                raise self.ctx.fail(node, akey, f"{addr} is listed twice")
            out.append(addr)
        return tuple(out), tuple(out6)

    def behaviour(self, s: dict[str, yaml.Node], key: str) -> dict[str, Any]:
        """The keys of a site that misbehaves on its own (scenario.md)."""
        out: dict[str, Any] = {}
        if "state" in s:
            out["state"] = self.choice(s["state"], f"{key}.state", SITE_STATES)
        if "tls" in s:
            t = self.mapping(s["tls"], f"{key}.tls", ("cert",), required=("cert",))
            out["cert"] = self.choice(t["cert"], f"{key}.tls.cert", CERT_KINDS)
        if "https" in s:
            out["https"] = self.value(s["https"], f"{key}.https", bool, "true or false")
        if "redirect" in s:
            out["redirect"] = self.redirect(s["redirect"], f"{key}.redirect")
        if "response" in s:
            rkey = f"{key}.response"
            r = self.mapping(s["response"], rkey, ("status", "headers", "body_file", "body"))
            answer = self.http_answer(r, rkey, framed=True)
            out["status"] = answer["status"]
            out.update({k: answer[k] for k in ("headers", "body", "body_file") if answer[k] is not None})
        if "paths" in s:
            out["paths"] = self.paths(s["paths"], f"{key}.paths")
        if "only_for" in s:
            names = [self.string(n, f"{key}.only_for") for n in self.sequence(s["only_for"], f"{key}.only_for")]
            if not names:
                raise self.ctx.fail(s["only_for"], f"{key}.only_for", "name at least one ISP")
            out["only_for"] = tuple(names)
            self.only_for_nodes.append((s["only_for"], f"{key}.only_for", tuple(names)))
            if out.get("cert", "valid") != "valid":
                raise self.ctx.fail(s["only_for"], f"{key}.only_for", "a bad certificate is presented to "
                                    "every client (the TLS handshake comes before the origin sees who asks)")
            if out.get("state") in DNS_STATES:
                raise self.ctx.fail(s["only_for"], f"{key}.only_for", f"state {out['state']} is decided by the "
                                    "authoritative DNS, which every resolver asks alike: it cannot apply to "
                                    "some ISPs only")
        if "dns_answer" in s:
            out["dns_answer"] = self.lab_ip(s["dns_answer"], f"{key}.dns_answer")
        if "quic" in s:
            out["quic"] = self.value(s["quic"], f"{key}.quic", bool, "true or false")
        return out

    def http_answer(self, r: dict[str, yaml.Node], key: str, framed: bool, default_status: int = 200
                    ) -> dict[str, Any]:
        """``status``, ``headers`` and ``body | body_file`` of a response (a site's, a path's or a
        blockpage): {"status", "headers" (tuple or None), "body" (bytes or None), "body_file"}.
        ``framed``: the origin frames the response (h11), so the headers that do it are its own."""
        if "body_file" in r and "body" in r:
            raise self.ctx.fail(r["body"], f"{key}.body", "give body or body_file, not both")
        status = self.status(r["status"], f"{key}.status") if "status" in r else default_status
        out: dict[str, Any] = {"status": status, "headers": None, "body": None, "body_file": None}
        if "headers" in r:
            out["headers"] = self.headers(r["headers"], f"{key}.headers", framed)
        if "body" in r:
            out["body"] = self.string(r["body"], f"{key}.body").encode()
        if "body_file" in r:
            rel = self.body_file(r["body_file"], f"{key}.body_file")
            out["body"] = self.read_body(r["body_file"], f"{key}.body_file", rel)
            out["body_file"] = rel
        if bodiless(status):
            if out["body"]:
                which = "body" if "body" in r else "body_file"
                raise self.ctx.fail(r[which], f"{key}.{which}", f"a {status} response never carries a body "
                                    "(1xx, 204 and 304 have none)")
            out["body"] = b""
        return out

    def headers(self, node: yaml.Node, key: str, framed: bool) -> tuple[tuple[str, str], ...]:
        """HTTP headers as a mapping of name to value, sent in the order written."""
        if not isinstance(node, yaml.MappingNode):
            raise self.ctx.fail(node, key, f"expected a mapping of header names to values, got {_kind(node)}")
        out: list[tuple[str, str]] = []
        for knode, vnode in node.value:
            name = _scalar(knode)
            if not isinstance(name, str) or not _HEADER_NAME.match(name):
                raise self.ctx.fail(knode, key, f"{name!r} is not an HTTP header name")
            hkey = f"{key}.{name}"
            if framed and name.lower() in _FRAMING_HEADERS:
                raise self.ctx.fail(knode, hkey, "the origin sets this header itself (it frames every response)")
            value = self.value(vnode, hkey, (str, int, float), "a header value")
            value = str(value)
            if "\r" in value or "\n" in value or not value.isprintable() or not value.isascii():
                raise self.ctx.fail(vnode, hkey, "a header value is one line of printable ASCII")
            out.append((name, value))
        return tuple(out)

    def paths(self, node: yaml.Node, key: str) -> tuple[PathResponse, ...]:
        """`paths:` {path: {status, headers, body | body_file, redirect}}: what one path answers."""
        if not isinstance(node, yaml.MappingNode):
            raise self.ctx.fail(node, key, f"expected a mapping of paths, got {_kind(node)}")
        out: list[PathResponse] = []
        for knode, vnode in node.value:
            path = _scalar(knode)
            pkey = f"{key}.{path}"
            if not isinstance(path, str) or not path.startswith("/") or "?" in path or "#" in path \
                    or not path.isascii() or not path.isprintable() or " " in path:
                raise self.ctx.fail(knode, pkey, f"{path!r} is not a path: it starts with '/', has no query "
                                    "and is printable ASCII without spaces (percent-encode the rest)")
            if any(p.path == path for p in out):
                raise self.ctx.fail(knode, pkey, "duplicate path")
            r = self.mapping(vnode, pkey, ("status", "headers", "body", "body_file", "redirect"))
            redirect = None
            if "redirect" in r:
                if extra := [k for k in ("status", "body", "body_file") if k in r]:
                    raise self.ctx.fail(r[extra[0]], f"{pkey}.{extra[0]}", "a redirect has its own status and no "
                                        "body: give its status in redirect.status")
                rnode = r["redirect"]
                if isinstance(rnode, yaml.MappingNode) and any(_scalar(k) == "hops" for k, _ in rnode.value):
                    raise self.ctx.fail(rnode, f"{pkey}.redirect.hops", "a path redirects once (hops is for a "
                                        "whole site's redirect)")
                redirect = self.redirect(rnode, f"{pkey}.redirect")
            answer = self.http_answer(r, pkey, framed=True)
            out.append(PathResponse(path=path, status=redirect.status if redirect else answer["status"],
                                    headers=answer["headers"] or (), body=answer["body"],
                                    body_file=answer["body_file"], redirect=redirect,
                                    line=knode.start_mark.line + 1))
        return tuple(out)

    def body_file(self, node: yaml.Node, key: str) -> str:
        """A path relative to the scenario's folder that stays inside it: the results folder gets a
        copy at the same relative path (harness.runner.copy_scenario_files), and ``../x`` or
        ``/etc/x`` there would be written outside it."""
        rel = self.string(node, key)
        if not rel.strip() or "\x00" in rel:
            raise self.ctx.fail(node, key, f"{rel!r} is not a file name")
        if os.path.isabs(rel) or rel.startswith("~"):
            raise self.ctx.fail(node, key, f"{rel!r} is an absolute path; give a path relative to the "
                                "scenario's folder")
        norm = os.path.normpath(rel)
        if norm == ".." or norm.startswith("../") or norm == ".":
            raise self.ctx.fail(node, key, f"{rel!r} leaves the scenario's folder; the file must be in it "
                                "or under it")
        return rel

    def read_body(self, node: yaml.Node, key: str, rel: str) -> bytes:
        base = Path(self.ctx.file).parent
        path = base / rel
        try:
            # A symlink may point anywhere: what counts is where the file really is.
            if not path.resolve().is_relative_to(base.resolve()):
                raise self.ctx.fail(node, key, f"{rel!r} resolves to {path.resolve()}, outside the scenario's folder")
            if not path.is_file():
                what = "no such file" if not path.exists() else "not a regular file"
                raise self.ctx.fail(node, key, f"cannot read {path}: {what}")
            size = path.stat().st_size
            if size > MAX_BODY_SIZE:
                raise self.ctx.fail(node, key, f"{path} has {size} bytes; a response body has at most "
                                    f"{_bytes(MAX_BODY_SIZE)}")
            return path.read_bytes()
        except OSError as exc:
            raise self.ctx.fail(node, key, f"cannot read {path}: {exc.strerror or exc}") from None

    def seconds(self, node: yaml.Node, key: str, limit: float) -> float:
        """A positive, finite number of seconds up to ``limit`` (YAML reads .nan and .inf as floats)."""
        v = float(self.value(node, key, (int, float), "seconds"))
        if not math.isfinite(v):
            raise self.ctx.fail(node, key, f"{v} is not a number of seconds (give one from 0 to {limit:g})")
        if v <= 0:
            raise self.ctx.fail(node, key, "must be positive")
        if v > limit:
            raise self.ctx.fail(node, key, f"{v:g} s is too long; at most {limit:g} s")
        return v

    def choice(self, node: yaml.Node, key: str, allowed: tuple[str, ...]) -> str:
        v = self.string(node, key)
        if v not in allowed:
            raise self.ctx.fail(node, key, f"{v!r}; expected one of: {', '.join(allowed)}")
        return v

    def status(self, node: yaml.Node, key: str) -> int:
        code = self.value(node, key, int, "an HTTP status code")
        if not 100 <= code <= 599:
            raise self.ctx.fail(node, key, f"{code} is not an HTTP status code (100-599)")
        return code

    def redirect(self, node: yaml.Node, key: str) -> Redirect:
        r = self.mapping(node, key, ("to", "hops", "status", "location"))
        to = location = None
        if "to" in r:
            to = self.string(r["to"], f"{key}.to")
            try:
                t = Target.parse(to)
            except TargetError as exc:
                raise self.ctx.fail(r["to"], f"{key}.to", f"{exc} (a broken Location goes in "
                                    f"{key}.location)") from None
            self.redirect_targets.append((r["to"], f"{key}.to", t))
        if "location" in r:
            location = self.string(r["location"], f"{key}.location")
        if to is not None and location is not None:
            raise self.ctx.fail(r["location"], f"{key}.location", "give to or location, not both")
        hops = 1
        if "hops" in r:
            hops = self.value(r["hops"], f"{key}.hops", int, "a number of redirects")
            if not 1 <= hops <= 64:
                raise self.ctx.fail(r["hops"], f"{key}.hops", "between 1 and 64")
        if to is None and location is None and "hops" not in r:
            raise self.ctx.fail(node, key, "say where to: to (a URL), location (a raw header) or hops")
        status = self.status(r["status"], f"{key}.status") if "status" in r else 302
        if status not in (301, 302, 303, 307, 308):
            raise self.ctx.fail(r["status"], f"{key}.status", "a redirect status: 301, 302, 303, 307 or 308")
        return Redirect(to=to, hops=hops, status=status, location=location)

    def check_blockpage_servers(self, isps: tuple[Isp, ...], sites: tuple[Site, ...]) -> None:
        """A resolver's {answer: IP, blockpage: ...} puts the ISP's blockpage server on IP, in its
        router: an address no site, lab server or ISP network of the plan uses, one page each."""
        if not any(r.blockpage is not None for isp in isps for r in isp.resolver_rules):
            return  # the common case: no address plan to work out
        taken = allocate_sites({s.name: s.address for s in sites if s.records.cname is None},
                               reserved=(a for s in sites for a in s.addresses[1:]))
        owner = {a: n for n, a in taken.items()} | {a: s.name for s in sites for a in s.addresses}
        isp_nets = [IPv4Network(f"10.{i}.0.0/16") for i in range(1, len(isps) + 1)] + [IPv4Network("10.0.0.0/24")]
        for i, isp in enumerate(isps):
            pages: dict[IPv4Address, Rule] = {}
            for j, rule in enumerate(isp.resolver_rules):
                if rule.blockpage is None or rule.address is None:
                    continue
                addr, key = rule.address, f"isps[{i}].resolver.rules[{j}].action.answer"
                problem = None
                if addr in owner:
                    problem = f"{addr} is the address of site {owner[addr]}"
                elif addr in LAB_INTERNET and (not is_site_address(addr) or addr in PROXY_BLOCK):
                    problem = f"{addr} belongs to the lab's own servers (198.18.0.0-198.18.0.9, {PROXY_BLOCK})"
                elif any(addr in n for n in isp_nets) or not addr.is_private or addr.is_loopback:
                    problem = (f"{addr} cannot hold a blockpage server: use a private address outside the ISPs' "
                               "10.N.0.0/16 and control's 10.0.0.0/24 (e.g. 10.10.34.34 with fewer than ten ISPs), "
                               "or a free one of the lab internet")
                elif addr in pages and pages[addr].blockpage != rule.blockpage:
                    problem = f"{addr} already serves the page of the rule at line {pages[addr].line}; one page each"
                if problem:
                    raise ScenarioError(problem, file=self.ctx.file, line=rule.line, key=key)
                pages.setdefault(addr, rule)

    def check_only_for(self, isps: tuple[Isp, ...]) -> None:
        names = {i.name for i in isps}
        for node, key, wanted in self.only_for_nodes:
            for n in wanted:
                if n not in names:
                    raise self.ctx.fail(node, key, f"no ISP named {n!r}")
        for node, key, t in self.redirect_targets:
            if t.host not in self.site_names:
                raise self.ctx.fail(node, key, f"{t.host!r} is not a site of this scenario: redirects stay "
                                    "inside the lab")

    def probe(self, node: yaml.Node) -> dict[str, Any]:
        m = self.mapping(node, "probe", (*PROBE_NUMBERS, "test_helper", "quic_version", "quic_split_hello",
                                         "web_quic"))
        out: dict[str, Any] = {}
        for k in PROBE_NUMBERS:
            if k in m:
                out[k] = self.seconds(m[k], f"probe.{k}", MAX_PROBE_SECONDS)
        if "quic_version" in m:  # the quic probe's (probes.quic); the oracle reads them too
            out["quic_version"] = self.value(m["quic_version"], "probe.quic_version", int, "1 or 2")
            if out["quic_version"] not in QUIC_VERSIONS:
                raise self.ctx.fail(m["quic_version"], "probe.quic_version", "1 or 2")
        for flag in ("quic_split_hello", "web_quic"):
            if flag in m:
                out[flag] = self.value(m[flag], f"probe.{flag}", bool, "true or false")
        if "test_helper" in m:
            name = self.dns_name(m["test_helper"], "probe.test_helper")
            if name not in self.site_names:
                raise self.ctx.fail(m["test_helper"], "probe.test_helper", f"no site named {name!r}")
            out["test_helper"] = f"https://{name}/"
        return out

    def expect_ooni(self, node: yaml.Node, isps: tuple[Isp, ...], targets: tuple[Target, ...]
                    ) -> dict[str, dict[str, dict[str, Any]]]:
        vantages = (*(i.name for i in isps), CONTROL)
        urls = tuple(sorted(t.url for t in targets))
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for vantage, vnode in self.mapping(node, "expect_ooni", vantages).items():
            key = f"expect_ooni.{vantage}"
            out[vantage] = {}
            for url, unode in self.mapping(vnode, key, urls).items():
                keys = self.mapping(unode, f"{key}.{url}", OONI_KEYS)
                vals = {k: _scalar(v) for k, v in keys.items()}
                for k, v in vals.items():
                    # _scalar gives None for a list or a mapping: only a real null may be null.
                    if not isinstance(keys[k], yaml.ScalarNode) or not (v is None or isinstance(v, bool | str)):
                        raise self.ctx.fail(keys[k], f"{key}.{url}.{k}", "expected a string, true, false or "
                                            f"null, got {_kind(keys[k])}")
                out[vantage][url] = vals
        return out

    def size(self, node: yaml.Node, key: str) -> int:
        raw = _scalar(node)
        size: float
        if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
            size = raw
        else:
            mt = _SIZE.match(str(raw)) if isinstance(raw, str) else None
            if not mt:
                raise self.ctx.fail(node, key, f"{raw!r} is not a size (e.g. 65536, 64KiB, 8MiB)")
            unit = (mt.group(2) or "B").upper().replace("I", "")
            mult = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[unit]
            size = float(mt.group(1)) * mult  # inf for a few hundred digits: caught below, before int()
        if size > MAX_BODY_SIZE:
            raise self.ctx.fail(node, key, f"{_short(raw)} is too large; a page has at most {_bytes(MAX_BODY_SIZE)} "
                                "(the origin builds it in memory)")
        return int(size)

    def isps(self, node: yaml.Node) -> tuple[Isp, ...]:
        out: list[Isp] = []
        seen: set[str] = set()
        nodes = self.sequence(node, "isps")
        if problem := _too_many("isps", len(nodes)):
            raise self.ctx.fail(node, "isps", problem)
        for i, inode in enumerate(nodes):
            key = f"isps[{i}]"
            m = self.mapping(inode, key, ("name", "resolver", "firewall", "dpi", "shaping"),
                             required=("name",))
            name = self.string(m["name"], f"{key}.name")
            if not _LAB_NAME.match(name) or name == CONTROL or name == "inet":
                raise self.ctx.fail(m["name"], f"{key}.name", f"{name!r}: use 1-24 characters a-z, 0-9, "
                                    "'-', starting with a letter; 'control' and 'inet' are reserved")
            if name in seen:
                raise self.ctx.fail(m["name"], f"{key}.name", f"duplicate ISP name {name!r}")
            seen.add(name)
            resolver = self.rule_list(m.get("resolver"), f"{key}.resolver", "resolver", self.resolver_action)
            firewall = self.rule_list(m.get("firewall"), f"{key}.firewall", "firewall",
                                      self.simple_action(FIREWALL_ACTIONS))
            dpi_fail = "closed"
            placement = "access"
            reassembly = Reassembly()
            dpi: tuple[Rule, ...] = ()
            ca_installed = False
            if "dpi" in m:
                dm = self.mapping(m["dpi"], f"{key}.dpi", DPI_KEYS)
                if "fail" in dm:
                    dpi_fail = self.string(dm["fail"], f"{key}.dpi.fail")
                    if dpi_fail not in ("closed", "open"):
                        raise self.ctx.fail(dm["fail"], f"{key}.dpi.fail", "expected closed or open")
                if "placement" in dm:
                    placement = self.choice(dm["placement"], f"{key}.dpi.placement", DPI_PLACEMENTS)
                if "reassembly" in dm:
                    reassembly = self.reassembly(dm["reassembly"], f"{key}.dpi.reassembly")
                dpi = self.rule_list(m["dpi"], f"{key}.dpi", "dpi", self.dpi_action)
                if placement == "border":
                    self.check_border_rules(dm, f"{key}.dpi", dpi)
                if "ca_installed" in dm:
                    ca_installed = self.value(dm["ca_installed"], f"{key}.dpi.ca_installed", bool, "true or false")
                    if ca_installed and not any(r.action == "intercept" for r in dpi):
                        raise self.ctx.fail(dm["ca_installed"], f"{key}.dpi.ca_installed", "the ISP's interception "
                                            "CA is made for intercept rules: this ISP has none")
            shaping = self.shaping(m["shaping"], f"{key}.shaping") if "shaping" in m else ()
            self.check_intercept_and_named_shaping(m, key, dpi, shaping)
            out.append(Isp(name=name, resolver_rules=resolver, firewall_rules=firewall, dpi_rules=dpi,
                           shaping=shaping, dpi_fail=dpi_fail, dpi_placement=placement, dpi_reassembly=reassembly,
                           ca_installed=ca_installed, line=inode.start_mark.line + 1))
        return tuple(out)

    def check_intercept_and_named_shaping(self, m: dict[str, yaml.Node], key: str, dpi: tuple[Rule, ...],
                                          shaping: tuple[ShapingRule, ...]) -> None:
        """An intercept rule without an address (site, ip, cidr) takes every TLS flow of the ISP's
        clients through the interceptor, whose onward connections the middlebox never marks: shaping
        by name would miss their downloads, so the two are refused together."""
        wide = next((r for r in dpi if r.action == "intercept"
                     and r.match.site is None and r.match.ip is None and r.match.cidr is None), None)
        named = next((i for i, r in enumerate(shaping) if r.match.sni is not None or r.match.http_host is not None),
                     None)
        if wide is not None and named is not None:
            node = self.sequence(m["shaping"], f"{key}.shaping")[named]
            raise self.ctx.fail(node, f"{key}.shaping[{named}].match", "shaping by sni or http_host cannot be "
                                f"combined with an intercept rule that names no site, ip or cidr (line {wide.line}): "
                                "the interceptor carries every TLS flow and the shaper would not see them; give the "
                                "intercept rule a site")

    def reassembly(self, node: yaml.Node, key: str) -> Reassembly:
        """`dpi.reassembly`: how much of each flow the middlebox reads (docs/scenario.md)."""
        m = self.mapping(node, key, ("packets", "bytes"))
        out = Reassembly()
        if "packets" in m:
            packets = self.value(m["packets"], f"{key}.packets", int, "a number of packets")
            if not 1 <= packets <= MAX_INSPECT_PACKETS:
                raise self.ctx.fail(m["packets"], f"{key}.packets", f"{packets} packets; from 1 to "
                                    f"{MAX_INSPECT_PACKETS} (the SYN and the handshake's ACK count)")
            out = Reassembly(packets=packets, bytes=out.bytes)
        if "bytes" in m:
            size = self.size(m["bytes"], f"{key}.bytes")
            if not 1 <= size <= MAX_INSPECT_BYTES:
                raise self.ctx.fail(m["bytes"], f"{key}.bytes", f"{size} bytes; from 1 to {_bytes(MAX_INSPECT_BYTES)} "
                                    "(the middlebox keeps that much of every flow in memory)")
            out = Reassembly(packets=out.packets, bytes=size)
        return out

    def check_border_rules(self, dm: dict[str, yaml.Node], key: str, rules: tuple[Rule, ...]) -> None:
        """A middlebox at the border also sees the ISP resolver's own queries (docs/scenario.md)."""
        for i, rule in enumerate(rules):
            if rule.match.dns_query is not None and rule.action == "drop":
                rnode = dm["rules"].value[i]
                anode = next((v for k, v in rnode.value if _scalar(k) == "action"), rnode)
                # Unbound retries a dropped query with backoff and counts the timeouts against the
                # server it asked: what its clients get (a timeout, later a SERVFAIL, or slow answers
                # for other names) depends on their own timeouts and the order of the campaign.
                raise self.ctx.fail(anode, f"{key}.rules[{i}].action", "at placement: border a dns_query "
                                    "rule would drop the ISP resolver's own queries, which then retries and "
                                    "backs off: its clients would see a timeout or a SERVFAIL depending on "
                                    "timing. Use {inject: IP}, or placement: access")

    def rule_list(self, node: yaml.Node | None, key: str, kind: str,
                  action: Callable[[yaml.Node, str, Match], tuple[str, IPv4Address | None]]
                  ) -> tuple[Rule, ...]:
        if node is None:
            return ()
        allowed = DPI_KEYS if kind == "dpi" else ("rules",)
        m = self.mapping(node, key, allowed)
        if "rules" not in m or (isinstance(m["rules"], yaml.ScalarNode) and _scalar(m["rules"]) is None):
            return ()
        rules = []
        rule_nodes = self.sequence(m["rules"], f"{key}.rules")
        if len(rule_nodes) > MAX_RULES:
            raise self.ctx.fail(m["rules"], f"{key}.rules", f"{len(rule_nodes)} rules; at most {MAX_RULES} per list")
        for i, rnode in enumerate(rule_nodes):
            rkey = f"{key}.rules[{i}]"
            extra = ("residual", "transport", "quic") if kind == "dpi" else ()
            r = self.mapping(rnode, rkey, ("match", "action", "coverage", "intent", *extra),
                             required=("match", "action"))
            transport = self.choice(r["transport"], f"{rkey}.transport", TRANSPORTS) if "transport" in r else "any"
            match = self.match(r["match"], f"{rkey}.match", kind, transport)
            verb, address = action(r["action"], f"{rkey}.action", match)
            blockpage = self.blockpage(r["action"], f"{rkey}.action", kind, verb)
            if verb == "intercept":
                blockpage, transport = self.intercept(r, rkey, transport)
            if transport == "quic" and verb != "drop":
                # No censor has been seen to answer QUIC with anything but silence; the lab forges nothing.
                raise self.ctx.fail(r["action"], f"{rkey}.action", "a QUIC rule (transport: quic) can only drop")
            residual = None
            if "residual" in r:
                residual = self.seconds(r["residual"], f"{rkey}.residual", MAX_RESIDUAL)
                if match.dns_query is not None:
                    # Every DNS query goes to the same resolver: a residual block there would
                    # hit every later lookup, in whatever order the campaign makes them.
                    raise self.ctx.fail(r["residual"], f"{rkey}.residual", "residual blocking applies to "
                                        "TCP flows (sni, http_host, keyword), not to dns_query rules")
            coverage = None
            if "coverage" in r:
                coverage = float(self.value(r["coverage"], f"{rkey}.coverage", (int, float), "a fraction"))
                if not 0 < coverage <= 1:  # also false for NaN
                    raise self.ctx.fail(r["coverage"], f"{rkey}.coverage", "must be in (0, 1], e.g. 0.3")
            intent = self.label(r["intent"], f"{rkey}.intent") if "intent" in r else None
            knobs = QuicKnobs()
            if "quic" in r:
                if transport != "quic":
                    raise self.ctx.fail(r["quic"], f"{rkey}.quic", "QUIC reading knobs need transport: quic")
                knobs = self.quic_knobs(r["quic"], f"{rkey}.quic", residual)
            rules.append(Rule(match=match, action=verb, address=address, residual=residual,
                              line=rnode.start_mark.line + 1, coverage=coverage, intent=intent,
                              transport=transport, quic=knobs, blockpage=blockpage))
        if any(rule.action == "intercept" for rule in rules) and (res := next(
                (n for n in rule_nodes if any(_scalar(k) == "residual" for k, _ in n.value)), None)):
            # The interceptor's onward connections leave from the router (netlab.services.intercept):
            # a residual block they set would hold the router's address, not the client's.
            raise self.ctx.fail(res, f"{key}.rules[{rule_nodes.index(res)}].residual", "residual blocking "
                                "cannot be combined with intercept rules in the same ISP")
        return tuple(rules)

    def intercept(self, r: dict[str, yaml.Node], rkey: str, transport: str) -> tuple[Blockpage | None, str]:
        """The page of `{intercept: {page: ...}}` (None: the interceptor relays to the real site) and
        the transport an intercept rule reads: TLS over TCP only (netlab.services.intercept)."""
        if transport == "quic":
            raise self.ctx.fail(r["transport"], f"{rkey}.transport", "intercept terminates TLS over TCP: "
                                "transport quic cannot be intercepted (drop QUIC with a rule of its own)")
        node = r["action"]
        if not isinstance(node, yaml.MappingNode):
            return None, "tcp"
        akey = f"{rkey}.action.intercept"
        inner = next(v for k, v in node.value if _scalar(k) == "intercept")
        if isinstance(inner, yaml.ScalarNode) and _scalar(inner) is None:
            return None, "tcp"
        m = self.mapping(inner, akey, ("page",))
        if "page" not in m:
            return None, "tcp"
        return self.page(m["page"], f"{akey}.page"), "tcp"

    def page(self, node: yaml.Node, key: str) -> Blockpage:
        """A `PAGE` (docs/scenario.md "Blockpages"): nothing (`blockpage:` alone) for the lab's own
        page, or `{status, headers, body | body_file}` as a censor sends it."""
        if isinstance(node, yaml.ScalarNode) and _scalar(node) is None:
            return Blockpage(line=node.start_mark.line + 1)
        r = self.mapping(node, key, ("status", "headers", "body", "body_file"))
        answer = self.http_answer(r, key, framed=False, default_status=451)
        # A page the scenario declares has no body unless it gives one (the lab's page is for `blockpage` alone).
        return Blockpage(status=answer["status"], headers=answer["headers"],
                         body=answer["body"] if answer["body"] is not None else b"",
                         body_file=answer["body_file"], line=node.start_mark.line + 1)

    def blockpage(self, node: yaml.Node, key: str, kind: str, verb: str) -> Blockpage | None:
        """The page of a DPI `blockpage` (the lab's own, or `{blockpage: {status, headers, body |
        body_file}}`) or of a resolver's `{answer: IP, blockpage: ...}` (served at that address)."""
        page = None
        if isinstance(node, yaml.MappingNode):
            page = next((v for k, v in node.value if _scalar(k) == "blockpage"), None)
        if page is None:
            return Blockpage() if kind == "dpi" and verb == "blockpage" else None
        bkey = f"{key}.blockpage"
        bp = self.page(page, bkey)
        if kind == "dpi" and len(bp.response()) > MAX_INJECTED:
            raise self.ctx.fail(page, bkey, f"the page makes a {len(bp.response())}-byte response; a middlebox "
                                f"injects at most {MAX_INJECTED} bytes (one TCP segment): serve a larger page "
                                "from a resolver's {answer: IP, blockpage: ...}")
        if 300 <= bp.status < 400:
            headers = next((v for k, v in page.value if _scalar(k) == "headers"), page)
            try:
                t = Target.parse(bp.location or "")
            except TargetError:
                raise self.ctx.fail(headers, f"{bkey}.headers", "a redirecting blockpage needs a Location header "
                                    "with the URL of a site of the scenario (a warning page)") from None
            self.redirect_targets.append((headers, f"{bkey}.headers.Location", t))
        return bp

    def quic_knobs(self, node: yaml.Node, key: str, residual: float | None) -> QuicKnobs:
        """How a QUIC rule's censor reads datagrams (scenario.md "QUIC")."""
        m = self.mapping(node, key, ("datagrams", "reassemble", "versions", "sport_above_dport", "min_size",
                                     "delay", "residual_on"))
        out: dict[str, Any] = {}
        if "datagrams" in m:
            out["datagrams"] = self.choice(m["datagrams"], f"{key}.datagrams", QUIC_DATAGRAMS)
        for flag in ("reassemble", "sport_above_dport"):
            if flag in m:
                out[flag] = self.value(m[flag], f"{key}.{flag}", bool, "true or false")
        if "versions" in m:
            versions = []
            for v in self.sequence(m["versions"], f"{key}.versions"):
                n = self.value(v, f"{key}.versions", int, "a QUIC version: 1 or 2")
                if n not in QUIC_VERSIONS:
                    raise self.ctx.fail(v, f"{key}.versions", f"{n}: the lab reads QUIC versions 1 and 2")
                versions.append(n)
            if not versions:
                raise self.ctx.fail(m["versions"], f"{key}.versions", "name at least one version")
            out["versions"] = tuple(versions)
        if "min_size" in m:
            n = self.value(m["min_size"], f"{key}.min_size", int, "a number of bytes")
            if not 0 <= n <= 65507:
                raise self.ctx.fail(m["min_size"], f"{key}.min_size", "a UDP payload size, 0-65507")
            out["min_size"] = n
        if "delay" in m:
            delay = float(self.value(m["delay"], f"{key}.delay", (int, float), "seconds"))
            # A block that starts while the triggering fetch is still running races with it: the
            # oracle could not say which wins. 0 (the rest of the flow dropped at once) or >= 1 s.
            if not (delay == 0 or QUIC_MIN_DELAY <= delay <= MAX_RESIDUAL):
                raise self.ctx.fail(m["delay"], f"{key}.delay", f"0, or {QUIC_MIN_DELAY:g} to {MAX_RESIDUAL:g} "
                                    "seconds (a shorter delay races with the triggering fetch)")
            out["delay"] = delay
        if "residual_on" in m:
            out["residual_on"] = self.choice(m["residual_on"], f"{key}.residual_on", QUIC_RESIDUAL_SCOPES)
            if residual is None:
                raise self.ctx.fail(m["residual_on"], f"{key}.residual_on", "needs the rule's residual")
        if out.get("delay") and (residual is None or out.get("residual_on") != "server_port"):
            # A late block spares the triggering connection: only a block of the server's port meets
            # the connections after it.
            raise self.ctx.fail(m["delay"], f"{key}.delay", "a delay from 1 s needs the rule's residual and "
                                "residual_on: server_port (the triggering connection is spared)")
        return QuicKnobs(**out)

    def match(self, node: yaml.Node, key: str, kind: str, transport: str = "any") -> Match:
        allowed = MATCH_KEYS[kind]
        m = self.mapping(node, key, allowed)
        if not m:
            raise self.ctx.fail(node, key, f"empty match; use one or more of: {', '.join(allowed)}")
        fields: dict[str, Any] = {}
        for k, v in m.items():
            kk = f"{key}.{k}"
            if k in NAME_KEYS:
                fields[k] = self.dns_name(v, kk)
            elif k == "site":
                name = self.dns_name(v, kk)
                if name not in self.site_names:
                    raise self.ctx.fail(v, kk, f"no site named {name!r} in internet.sites")
                fields[k] = name
            elif k == "ip":
                fields[k] = self.any_ip(v, kk)
            elif k == "cidr":
                raw = self.string(v, kk)
                try:
                    net = ipaddress.ip_network(raw.strip(), strict=False)
                except ValueError:
                    raise self.ctx.fail(v, kk, f"{raw!r} is not an {'IPv4 or IPv6' if self.ipv6 else 'IPv4'} CIDR "
                                        "(e.g. 198.18.0.0/24)") from None
                fields[k] = net
            elif k == "family":
                fam = self.value(v, kk, int, "4 or 6")
                if fam not in (4, 6):
                    raise self.ctx.fail(v, kk, f"{fam}: an IP version, 4 or 6")
                if not self.ipv6:
                    raise self.ctx.fail(v, kk, "the lab has one family (IPv4) unless internet.ipv6 is true")
                fields[k] = fam
            elif k == "port":
                port = self.value(v, kk, int, "a port number")
                if not 1 <= port <= 65535:
                    raise self.ctx.fail(v, kk, f"{port} is not a port number (1-65535)")
                fields[k] = port
            elif k == "proto":
                proto = self.string(v, kk).lower()
                if proto not in ("tcp", "udp"):
                    raise self.ctx.fail(v, kk, "expected tcp or udp")
                fields[k] = proto
            elif k == "keyword":
                kw = self.string(v, kk)
                if not kw:
                    raise self.ctx.fail(v, kk, "empty keyword")
                fields[k] = kw
        for k in ("ip", "cidr"):
            if k in fields and fields[k].version == 6 and not self.ipv6:
                raise self.ctx.fail(m[k], f"{key}.{k}", f"{fields[k]} is IPv6: the lab has IPv6 only with "
                                    "internet.ipv6: true")
            if k in fields and fields.get("family", fields[k].version) != fields[k].version:
                raise self.ctx.fail(m["family"], f"{key}.family", f"family {fields['family']} with IPv"
                                    f"{fields[k].version} {k} {fields[k]}: the rule could never match")
        if kind == "resolver" and len(fields) != 1:
            raise self.ctx.fail(node, key, "a resolver rule matches one name: domain or exact")
        if transport == "quic":
            # A QUIC rule with an sni reads the ClientHello; without one it drops QUIC by its shape.
            if {"http_host", "dns_query", "keyword"} & fields.keys() or fields.get("proto") == "tcp":
                raise self.ctx.fail(node, key, "a QUIC rule (transport: quic) matches sni and addresses "
                                    "(site, ip, cidr, port) only")
        elif kind == "dpi" and not {"sni", "http_host", "dns_query", "keyword"} & fields.keys():
            raise self.ctx.fail(node, key, "a DPI rule needs sni, http_host, dns_query or keyword "
                                "(address-only rules belong in firewall; transport: quic drops QUIC by shape)")
        if transport != "any" and "sni" not in fields and transport == "tcp":
            raise self.ctx.fail(node, key, "transport: tcp narrows an sni rule; this rule has no sni")
        if kind == "dpi" and "dns_query" in fields and fields.get("proto") == "tcp":
            raise self.ctx.fail(node, key, "dns_query matches DNS over UDP; drop proto: tcp")
        return Match(**fields)

    def resolver_action(self, node: yaml.Node, key: str, match: Match) -> tuple[str, IPv4Address | None]:
        if isinstance(node, yaml.MappingNode):
            m = self.mapping(node, key, ("answer", "blockpage"), required=("answer",))
            return "answer", self.lab_ip(m["answer"], f"{key}.answer")
        verb = self.string(node, key)
        if verb not in RESOLVER_ACTIONS:
            raise self.ctx.fail(node, key, f"unknown resolver action {verb!r}; expected one of: "
                                f"{', '.join(RESOLVER_ACTIONS)}, or {{answer: IP}}")
        if verb in ("servfail", "refused") and match.exact:
            # Unbound expresses these with stub and local zones, which always cover a subtree.
            raise self.ctx.fail(node, key, f"{verb} applies to a name and all names under it: "
                                "use match.domain, not match.exact")
        return verb, None

    def simple_action(self, verbs: tuple[str, ...]
                      ) -> Callable[[yaml.Node, str, Match], tuple[str, IPv4Address | None]]:
        def action(node: yaml.Node, key: str, match: Match) -> tuple[str, IPv4Address | None]:
            verb = self.string(node, key)
            if verb not in verbs:
                raise self.ctx.fail(node, key, f"unknown action {verb!r}; expected one of: {', '.join(verbs)}")
            return verb, None
        return action

    def dpi_action(self, node: yaml.Node, key: str, match: Match) -> tuple[str, IPv4Address | None]:
        if isinstance(node, yaml.MappingNode) and any(_scalar(k) == "blockpage" for k, _ in node.value):
            self.mapping(node, key, ("blockpage",))  # {blockpage: {status, headers, body | body_file}}
            node = next(k for k, _ in node.value if _scalar(k) == "blockpage")  # checked as the verb below
        elif isinstance(node, yaml.MappingNode) and any(_scalar(k) == "intercept" for k, _ in node.value):
            self.mapping(node, key, ("intercept",))  # {intercept: {page: ...}}: the page, read by intercept()
            node = next(k for k, _ in node.value if _scalar(k) == "intercept")
        elif isinstance(node, yaml.MappingNode):
            m = self.mapping(node, key, ("inject",), required=("inject",))
            if match.dns_query is None:
                raise self.ctx.fail(node, key, "inject forges a DNS answer: it needs match.dns_query")
            return "inject", self.lab_ip(m["inject"], f"{key}.inject")
        verb = self.simple_action(DPI_ACTIONS)(node, key, match)[0]
        if verb == "blockpage" and match.http_host is None and match.keyword is None:
            raise self.ctx.fail(node, key, "blockpage answers an HTTP request: it needs match.http_host "
                                "or match.keyword")
        if verb == "intercept" and (match.sni is None or match.http_host or match.keyword):
            raise self.ctx.fail(node, key, "intercept terminates TLS for the names of match.sni: it needs "
                                "sni (and maybe addresses), not http_host, dns_query or keyword")
        if match.dns_query is not None and verb != "drop":
            raise self.ctx.fail(node, key, "a dns_query rule can inject a forged answer ({inject: IP}) "
                                "or drop the query")
        return verb, None

    def shaping(self, node: yaml.Node, key: str) -> tuple[ShapingRule, ...]:
        out: list[ShapingRule] = []
        rule_nodes = self.sequence(node, key)
        if len(rule_nodes) > MAX_RULES:
            raise self.ctx.fail(node, key, f"{len(rule_nodes)} rules; at most {MAX_RULES} per list")
        for i, rnode in enumerate(rule_nodes):
            rkey = f"{key}[{i}]"
            r = self.mapping(rnode, rkey, ("match", "rate", "delay", "loss"), required=("match",))
            named = sum(1 for x in out if x.match.sni is not None or x.match.http_host is not None)
            match = self.match(r["match"], f"{rkey}.match", "shaping")
            rate = delay = loss = None
            if "rate" in r:
                raw = self.string(r["rate"], f"{rkey}.rate")
                mt = _RATE.match(raw)
                if not mt:
                    raise self.ctx.fail(r["rate"], f"{rkey}.rate", f"{raw!r} is not a rate (e.g. 256kbit)")
                mult = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3}[mt.group(2).lower()]
                rate_f = float(mt.group(1)) * mult * (8 if mt.group(3).lower() == "bps" else 1)  # may be inf
                if rate_f > MAX_RATE_BPS:
                    raise self.ctx.fail(r["rate"], f"{rkey}.rate", f"{_short(raw)} is too fast; at most "
                                        f"{MAX_RATE_BPS // 1000**3}gbit (tc counts bytes/s in 32 bits)")
                rate = int(rate_f)
                if rate < 8000:
                    raise self.ctx.fail(r["rate"], f"{rkey}.rate", "rates under 8kbit are not supported")
            if "delay" in r:
                raw = _scalar(r["delay"])
                mt = re.match(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*$", str(raw))
                if not mt or isinstance(raw, bool):
                    raise self.ctx.fail(r["delay"], f"{rkey}.delay", f"{raw!r} is not a delay (e.g. 100ms)")
                delay = float(mt.group(1)) * (1000 if mt.group(2) == "s" else 1)
                if delay > MAX_DELAY_MS:
                    raise self.ctx.fail(r["delay"], f"{rkey}.delay", f"{_short(raw)} is too long; at most "
                                        f"{MAX_DELAY_MS / 1000:g}s")
            if "loss" in r:
                raw = _scalar(r["loss"])
                mt = re.match(r"^\s*(\d+(?:\.\d+)?)\s*(%)?\s*$", str(raw))
                if not mt or isinstance(raw, bool):
                    raise self.ctx.fail(r["loss"], f"{rkey}.loss", f"{raw!r} is not a loss (e.g. 5% or 0.05)")
                loss = float(mt.group(1)) / (100 if mt.group(2) else 1)
                if not 0 <= loss <= 1:
                    raise self.ctx.fail(r["loss"], f"{rkey}.loss", "loss must be between 0 and 100%")
            if rate is None and delay is None and loss is None:
                raise self.ctx.fail(rnode, rkey, "a shaping rule needs rate, delay or loss")
            if match.sni is not None or match.http_host is not None:
                if match.proto == "udp":
                    raise self.ctx.fail(r["match"], f"{rkey}.match", "sni and http_host are read from TCP "
                                        "flows: drop proto: udp")
                named += 1
                if named > MAX_NAMED_SHAPING:
                    raise self.ctx.fail(r["match"], f"{rkey}.match", f"more than {MAX_NAMED_SHAPING} shaping rules "
                                        "match names (sni, http_host) in one ISP: the middlebox marks flows with "
                                        "8 bits")
            out.append(ShapingRule(match=match, rate_bps=rate, delay_ms=delay, loss=loss,
                                   line=rnode.start_mark.line + 1))
        return tuple(out)

    def targets(self, node: yaml.Node | None, sites: tuple[Site, ...]) -> tuple[Target, ...]:
        if node is None:  # default: https and http for every site
            return tuple(Target.parse(f"{scheme}://{s.name}/") for s in sites for scheme in ("https", "http"))
        out: list[Target] = []
        seen: dict[str, str] = {}  # canonical form -> the URL as written first
        for i, tnode in enumerate(self.sequence(node, "targets")):
            key = f"targets[{i}]"
            raw = self.string(tnode, key)
            try:
                t = Target.parse(raw)
            except TargetError as exc:
                raise self.ctx.fail(tnode, key, str(exc)) from None
            if t.host not in self.site_names:
                raise self.ctx.fail(tnode, key, f"{t.host!r} is not a site of this scenario: probes only "
                                    "measure names served inside the lab")
            if t.canonical in seen:
                raise self.ctx.fail(tnode, key, f"duplicate target {t.url} (the same URL as {seen[t.canonical]})")
            seen[t.canonical] = t.url
            out.append(t)
        if not out:
            raise self.ctx.fail(node, "targets", "the target list is empty")
        return tuple(out)

    def expect(self, node: yaml.Node, isps: tuple[Isp, ...], targets: tuple[Target, ...]
               ) -> dict[str, dict[str, Verdict]]:
        vantages = [i.name for i in isps] + [CONTROL]
        urls = {t.url for t in targets}
        verdicts = {v.value for v in Verdict}
        out: dict[str, dict[str, Verdict]] = {}
        top = self.mapping(node, "expect", tuple(vantages))
        for vantage, vnode in top.items():
            key = f"expect.{vantage}"
            inner = self.mapping(vnode, key, tuple(sorted(urls)))
            out[vantage] = {}
            for url, unode in inner.items():
                verdict = self.string(unode, f"{key}.{url}")
                if verdict not in verdicts:
                    raise self.ctx.fail(unode, f"{key}.{url}", f"unknown verdict {verdict!r}; expected one "
                                        f"of: {', '.join(sorted(verdicts))}")
                out[vantage][url] = Verdict(verdict)
        return out


def idna_name(raw: str) -> str:
    """Lower-case IDNA A-label form of a DNS name, without the trailing dot; ValueError if invalid."""
    name = raw.strip().rstrip(".").lower()
    if not name:
        raise ValueError("empty name")
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"not a valid IDNA name ({exc})") from None
    if len(ascii_name) > 253:
        raise ValueError("longer than 253 characters")
    for label in ascii_name.split("."):
        if not _LABEL.match(label):
            raise ValueError(f"label {label!r} must be 1-63 of a-z, 0-9, '-' and not start or end with '-'")
    try:
        # IDNA 2008, as the lab's certificates are issued (trustme): an A-label that is no valid
        # punycode (xn--zz), or '--' in the 3rd and 4th place, would fail there, after the load.
        idna.encode(ascii_name, uts46=True)
    except (idna.IDNAError, UnicodeError) as exc:
        raise ValueError(f"not a valid IDNA name ({exc})") from None
    return ascii_name


def _short(raw: object) -> str:
    """A value for a message: 400 digits say nothing more than the first 30."""
    text = repr(raw)
    return text if len(text) <= 40 else text[:30] + "..." + text[-6:]


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


def _join(key: str, sub: str) -> str:
    return f"{key}.{sub}" if key else sub


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    v = _scalar(node)
    return "nothing" if v is None else f"{type(v).__name__} {v!r}"
