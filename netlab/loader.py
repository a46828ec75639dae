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
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import idna
import yaml

from netlab.addressing import LAB_INTERNET, MAX_ISPS, SITE_CAPACITY, is_site_address
from netlab.coverage import apply_coverage
from netlab.errors import ScenarioError
from netlab.model import (
    CERT_KINDS,
    CONTROL,
    DNS_STATES,
    PROXY_BLOCK,
    SITE_STATES,
    Isp,
    Match,
    Redirect,
    Rule,
    Scenario,
    ShapingRule,
    Site,
)
from netlab.names import lab_name_problem
from netlab.target import Target, TargetError, in_address_plan
from netlab.verdict import Verdict

RESOLVER_ACTIONS = ("nxdomain", "servfail", "refused", "timeout", "proxy")  # plus {answer: IP}
SITE_KEYS = ("name", "address", "body_size", "service", "state", "tls", "redirect", "response", "only_for",
             "https", "dns_answer")
# ProbeContext fields a scenario may set (`probe:`), and test_helper (a site standing for OONI's TH).
PROBE_NUMBERS = ("dns_timeout", "connect_timeout", "tls_timeout", "http_timeout", "http_total_timeout")
OONI_KEYS = ("blocking", "accessible", "dns_consistency", "dns_experiment_failure", "http_experiment_failure",
             "control_failure", "x_verdict", "body_length_match", "status_code_match", "headers_match",
             "title_match")
FIREWALL_ACTIONS = ("drop", "reset", "reject")
DPI_ACTIONS = ("reset", "drop", "blockpage")  # plus {inject: IP}
NAME_KEYS = ("domain", "exact", "sni", "http_host", "dns_query")
ADDRESS_KEYS = ("site", "ip", "cidr", "port", "proto")
MATCH_KEYS = {
    "resolver": ("domain", "exact"),
    "firewall": ADDRESS_KEYS,
    "dpi": ("sni", "http_host", "dns_query", "keyword", *ADDRESS_KEYS),
    "shaping": ADDRESS_KEYS,
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
MAX_RESIDUAL = 3600.0  # seconds; the GFW's is about 90 s, and an hour outlasts any campaign of the lab
MAX_PROBE_SECONDS = 600.0  # a probe timeout of ten minutes already stalls a campaign
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_LAB_NAME = re.compile(r"^[a-z][a-z0-9-]{0,23}$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?\s*$", re.IGNORECASE)
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
                        raise ScenarioError(str(_too_many(key, None)), file=ctx.file, line=ev.start_mark.line + 1,
                                            key=key)
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

    def value(self, node: yaml.Node, key: str, typ: type | tuple[type, ...], what: str) -> Any:
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
            return normalise_name(raw)
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
        targets = self.targets(top.get("targets"), sites)
        expect = self.expect(top["expect"], isps, targets) if "expect" in top else {}
        seed = self.value(top["seed"], "seed", int, "an integer") if "seed" in top else 0
        probe = self.probe(top["probe"]) if "probe" in top else {}
        expect_ooni = self.expect_ooni(top["expect_ooni"], isps, targets) if "expect_ooni" in top else {}
        scenario = Scenario(name=name, description=description, sites=sites, isps=isps, targets=targets,
                            public_resolver=public_resolver, expect=expect, source=self.ctx.file,
                            version=version, seed=seed, probe=probe, expect_ooni=expect_ooni)
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
        m = self.mapping(node, "internet", ("sites", "public_resolver"), required=("sites",))
        public = True
        if "public_resolver" in m:
            public = self.value(m["public_resolver"], "internet.public_resolver", bool, "true or false")
        sites: list[Site] = []
        addresses: dict[IPv4Address, str] = {}
        site_nodes = self.sequence(m["sites"], "internet.sites")
        if problem := _too_many("internet.sites", len(site_nodes)):
            raise self.ctx.fail(m["sites"], "internet.sites", problem)
        total_body = 0
        for i, snode in enumerate(site_nodes):
            key = f"internet.sites[{i}]"
            s = self.mapping(snode, key, SITE_KEYS, required=("name",))
            name = self.dns_name(s["name"], f"{key}.name")
            if name in self.site_names:
                raise self.ctx.fail(s["name"], f"{key}.name", f"duplicate site name {name!r}")
            addr = None
            if "address" in s:
                addr = self.ip(s["address"], f"{key}.address")
                if not is_site_address(addr) or addr in PROXY_BLOCK:
                    raise self.ctx.fail(s["address"], f"{key}.address", f"{addr} is outside the lab "
                                        f"internet {LAB_INTERNET} (198.18.0.0-198.18.0.9 and the ISP proxies' "
                                        f"{PROXY_BLOCK} are reserved)")
                if addr in addresses:
                    raise self.ctx.fail(s["address"], f"{key}.address",
                                        f"{addr} is already the address of {addresses[addr]}")
                addresses[addr] = name
            body_size = 64 * 1024
            if "body_size" in s:
                body_size = self.size(s["body_size"], f"{key}.body_size")
            service = self.label(s["service"], f"{key}.service") if "service" in s else None
            self.site_names.add(name)
            site = Site(name=name, address=addr, body_size=body_size,
                        line=snode.start_mark.line + 1, service=service, **self.behaviour(s, key))
            # The origin builds the generated page even when response.body replaces it for some.
            total_body += site.body_size + (len(site.body) if site.body is not None else 0)
            if total_body > MAX_TOTAL_BODY:
                raise self.ctx.fail(snode, key, f"the sites' pages add up to more than {_bytes(MAX_TOTAL_BODY)} "
                                    "(one origin process holds every page in memory)")
            sites.append(site)
        if not sites:
            raise self.ctx.fail(m["sites"], "internet.sites", "at least one site is needed")
        return tuple(sites), public

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
            r = self.mapping(s["response"], rkey, ("status", "body_file", "body"))
            if "body_file" in r and "body" in r:
                raise self.ctx.fail(r["body"], f"{rkey}.body", "give body or body_file, not both")
            if "status" in r:
                out["status"] = self.status(r["status"], f"{rkey}.status")
            if "body" in r:
                out["body"] = self.string(r["body"], f"{rkey}.body").encode()
            if "body_file" in r:
                rel = self.body_file(r["body_file"], f"{rkey}.body_file")
                out["body"] = self.read_body(r["body_file"], f"{rkey}.body_file", rel)
                out["body_file"] = rel
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
        return out

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
        m = self.mapping(node, "probe", (*PROBE_NUMBERS, "test_helper"))
        out: dict[str, Any] = {}
        for k in PROBE_NUMBERS:
            if k in m:
                out[k] = self.seconds(m[k], f"probe.{k}", MAX_PROBE_SECONDS)
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
            dpi: tuple[Rule, ...] = ()
            if "dpi" in m:
                dm = self.mapping(m["dpi"], f"{key}.dpi", ("rules", "fail"))
                if "fail" in dm:
                    dpi_fail = self.string(dm["fail"], f"{key}.dpi.fail")
                    if dpi_fail not in ("closed", "open"):
                        raise self.ctx.fail(dm["fail"], f"{key}.dpi.fail", "expected closed or open")
                dpi = self.rule_list(m["dpi"], f"{key}.dpi", "dpi", self.dpi_action)
            shaping = self.shaping(m["shaping"], f"{key}.shaping") if "shaping" in m else ()
            out.append(Isp(name=name, resolver_rules=resolver, firewall_rules=firewall, dpi_rules=dpi,
                           shaping=shaping, dpi_fail=dpi_fail, line=inode.start_mark.line + 1))
        return tuple(out)

    def rule_list(self, node: yaml.Node | None, key: str, kind: str,
                  action: Callable[[yaml.Node, str, Match], tuple[str, IPv4Address | None]]
                  ) -> tuple[Rule, ...]:
        if node is None:
            return ()
        allowed = ("rules", "fail") if kind == "dpi" else ("rules",)
        m = self.mapping(node, key, allowed)
        if "rules" not in m or (isinstance(m["rules"], yaml.ScalarNode) and _scalar(m["rules"]) is None):
            return ()
        rules = []
        rule_nodes = self.sequence(m["rules"], f"{key}.rules")
        if len(rule_nodes) > MAX_RULES:
            raise self.ctx.fail(m["rules"], f"{key}.rules", f"{len(rule_nodes)} rules; at most {MAX_RULES} per list")
        for i, rnode in enumerate(rule_nodes):
            rkey = f"{key}.rules[{i}]"
            extra = ("residual",) if kind == "dpi" else ()
            r = self.mapping(rnode, rkey, ("match", "action", "coverage", "intent", *extra),
                             required=("match", "action"))
            match = self.match(r["match"], f"{rkey}.match", kind)
            verb, address = action(r["action"], f"{rkey}.action", match)
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
            rules.append(Rule(match=match, action=verb, address=address, residual=residual,
                              line=rnode.start_mark.line + 1, coverage=coverage, intent=intent))
        return tuple(rules)

    def match(self, node: yaml.Node, key: str, kind: str) -> Match:
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
                fields[k] = self.ip(v, kk)
            elif k == "cidr":
                raw = self.string(v, kk)
                try:
                    fields[k] = IPv4Network(raw.strip(), strict=False)
                except ValueError:
                    raise self.ctx.fail(v, kk, f"{raw!r} is not an IPv4 CIDR (e.g. 198.18.0.0/24)") from None
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
        if kind == "resolver" and len(fields) != 1:
            raise self.ctx.fail(node, key, "a resolver rule matches one name: domain or exact")
        if kind == "dpi" and not {"sni", "http_host", "dns_query", "keyword"} & fields.keys():
            raise self.ctx.fail(node, key, "a DPI rule needs sni, http_host, dns_query or keyword "
                                "(address-only rules belong in firewall)")
        if kind == "dpi" and "dns_query" in fields and fields.get("proto") == "tcp":
            raise self.ctx.fail(node, key, "dns_query matches DNS over UDP; drop proto: tcp")
        return Match(**fields)

    def resolver_action(self, node: yaml.Node, key: str, match: Match) -> tuple[str, IPv4Address | None]:
        if isinstance(node, yaml.MappingNode):
            m = self.mapping(node, key, ("answer",), required=("answer",))
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
        if isinstance(node, yaml.MappingNode):
            m = self.mapping(node, key, ("inject",), required=("inject",))
            if match.dns_query is None:
                raise self.ctx.fail(node, key, "inject forges a DNS answer: it needs match.dns_query")
            return "inject", self.lab_ip(m["inject"], f"{key}.inject")
        verb = self.simple_action(DPI_ACTIONS)(node, key, match)[0]
        if verb == "blockpage" and match.http_host is None and match.keyword is None:
            raise self.ctx.fail(node, key, "blockpage answers an HTTP request: it needs match.http_host "
                                "or match.keyword")
        if match.dns_query is not None and verb != "drop":
            raise self.ctx.fail(node, key, "a dns_query rule can inject a forged answer ({inject: IP}) "
                                "or drop the query")
        return verb, None

    def shaping(self, node: yaml.Node, key: str) -> tuple[ShapingRule, ...]:
        out = []
        rule_nodes = self.sequence(node, key)
        if len(rule_nodes) > MAX_RULES:
            raise self.ctx.fail(node, key, f"{len(rule_nodes)} rules; at most {MAX_RULES} per list")
        for i, rnode in enumerate(rule_nodes):
            rkey = f"{key}[{i}]"
            r = self.mapping(rnode, rkey, ("match", "rate", "delay", "loss"), required=("match",))
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
               ) -> dict[str, dict[str, str]]:
        vantages = [i.name for i in isps] + [CONTROL]
        urls = {t.url for t in targets}
        verdicts = {v.value for v in Verdict}
        out: dict[str, dict[str, str]] = {}
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
                out[vantage][url] = verdict
        return out


def normalise_name(raw: str) -> str:
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
