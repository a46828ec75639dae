"""Load and validate a scenario file into a ``Scenario``.

Every error names the file, the line and the key path (``isps[0].resolver.rules[2].match``),
and nothing starts: the loader is pure. Parsing walks PyYAML's node tree, not plain dicts, so
every value still knows where it came from.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import yaml

from netlab.addressing import LAB_INTERNET, MAX_ISPS, is_site_address
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
    try:
        root = yaml.compose(text, Loader=_YAML_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ScenarioError(f"malformed YAML: {exc.problem or exc}", file=source, line=line) from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"malformed YAML: {exc}", file=source) from None
    if root is None:
        raise ScenarioError("the file is empty", file=source)
    return _Loader(ctx).scenario(root)


# ---------------------------------------------------------------- node helpers


_CONSTRUCTOR = yaml.constructor.SafeConstructor()
# libyaml's composer where PyYAML has it: same nodes and line numbers, a fraction of the time and
# memory for scenarios with tens of thousands of targets.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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
        if not _LAB_NAME.match(name):
            raise self.ctx.fail(top["name"], "name", f"{name!r}: use 1-24 characters a-z, 0-9 and '-', "
                                "starting with a letter (it names the lab's namespaces)")
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

    def internet(self, node: yaml.Node) -> tuple[tuple[Site, ...], bool]:
        m = self.mapping(node, "internet", ("sites", "public_resolver"), required=("sites",))
        public = True
        if "public_resolver" in m:
            public = self.value(m["public_resolver"], "internet.public_resolver", bool, "true or false")
        sites: list[Site] = []
        addresses: dict[IPv4Address, str] = {}
        for i, snode in enumerate(self.sequence(m["sites"], "internet.sites")):
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
            sites.append(Site(name=name, address=addr, body_size=body_size,
                              line=snode.start_mark.line + 1, service=service, **self.behaviour(s, key)))
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
                rel = self.string(r["body_file"], f"{rkey}.body_file")
                path = Path(self.ctx.file).parent / rel
                try:
                    out["body"] = path.read_bytes()
                except OSError as exc:
                    raise self.ctx.fail(r["body_file"], f"{rkey}.body_file",
                                        f"cannot read {path}: {exc.strerror or exc}") from None
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
                v = float(self.value(m[k], f"probe.{k}", (int, float), "seconds"))
                if v <= 0:
                    raise self.ctx.fail(m[k], f"probe.{k}", "must be positive")
                out[k] = v
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
                    if not (v is None or isinstance(v, bool | str)):
                        raise self.ctx.fail(keys[k], f"{key}.{url}.{k}", "expected a string, true, false or null")
                out[vantage][url] = vals
        return out

    def size(self, node: yaml.Node, key: str) -> int:
        raw = _scalar(node)
        if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
            return raw
        mt = _SIZE.match(str(raw)) if isinstance(raw, str) else None
        if not mt:
            raise self.ctx.fail(node, key, f"{raw!r} is not a size (e.g. 65536, 64KiB, 8MiB)")
        unit = (mt.group(2) or "B").upper().replace("I", "")
        mult = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[unit]
        return int(float(mt.group(1)) * mult)

    def isps(self, node: yaml.Node) -> tuple[Isp, ...]:
        out: list[Isp] = []
        seen: set[str] = set()
        nodes = self.sequence(node, "isps")
        if len(nodes) > MAX_ISPS:
            raise self.ctx.fail(node, "isps", f"at most {MAX_ISPS} ISPs")
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
        for i, rnode in enumerate(self.sequence(m["rules"], f"{key}.rules")):
            rkey = f"{key}.rules[{i}]"
            extra = ("residual",) if kind == "dpi" else ()
            r = self.mapping(rnode, rkey, ("match", "action", "coverage", "intent", *extra),
                             required=("match", "action"))
            match = self.match(r["match"], f"{rkey}.match", kind)
            verb, address = action(r["action"], f"{rkey}.action", match)
            residual = None
            if "residual" in r:
                residual = float(self.value(r["residual"], f"{rkey}.residual", (int, float), "seconds"))
                if residual <= 0:
                    raise self.ctx.fail(r["residual"], f"{rkey}.residual", "must be positive")
                if match.dns_query is not None:
                    # Every DNS query goes to the same resolver: a residual block there would
                    # hit every later lookup, in whatever order the campaign makes them.
                    raise self.ctx.fail(r["residual"], f"{rkey}.residual", "residual blocking applies to "
                                        "TCP flows (sni, http_host, keyword), not to dns_query rules")
            coverage = None
            if "coverage" in r:
                coverage = float(self.value(r["coverage"], f"{rkey}.coverage", (int, float), "a fraction"))
                if not 0 < coverage <= 1:
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
        for i, rnode in enumerate(self.sequence(node, key)):
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
                rate = int(float(mt.group(1)) * mult * (8 if mt.group(3).lower() == "bps" else 1))
                if rate < 8000:
                    raise self.ctx.fail(r["rate"], f"{rkey}.rate", "rates under 8kbit are not supported")
            if "delay" in r:
                raw = _scalar(r["delay"])
                mt = re.match(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*$", str(raw))
                if not mt or isinstance(raw, bool):
                    raise self.ctx.fail(r["delay"], f"{rkey}.delay", f"{raw!r} is not a delay (e.g. 100ms)")
                delay = float(mt.group(1)) * (1000 if mt.group(2) == "s" else 1)
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
        seen: set[str] = set()
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
            if t.url in seen:
                raise self.ctx.fail(tnode, key, f"duplicate target {t.url}")
            seen.add(t.url)
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
    return ascii_name


def _join(key: str, sub: str) -> str:
    return f"{key}.{sub}" if key else sub


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    v = _scalar(node)
    return "nothing" if v is None else f"{type(v).__name__} {v!r}"
