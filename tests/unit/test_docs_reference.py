"""The project documents itself: docs/scenario.md lists every key the loader accepts (and no other),
every action, and docs/verdicts.md every verdict with its OONI mapping, as the code has them."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from netlab import loader
from netlab.verdict import OONI_BLOCKING, Verdict

ROOT = Path(__file__).resolve().parents[2]
LOADER = ROOT / "netlab" / "loader.py"
SCENARIO_DOC = ROOT / "docs" / "scenario.md"
VERDICT_DOC = ROOT / "docs" / "verdicts.md"


def _strings(node: ast.AST, scopes: list[dict[str, list[ast.AST]]]) -> set[str]:
    """Every string constant an expression can give, following names to their assignments."""
    out: set[str] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            out.add(sub.value)
        elif isinstance(sub, ast.Name):
            for scope in scopes:
                for value in scope.get(sub.id, []):
                    out |= _strings(value, scopes)
    return out


def _assignments(body: list[ast.stmt]) -> dict[str, list[ast.AST]]:
    found: dict[str, list[ast.AST]] = {}
    for stmt in body:
        for sub in ast.walk(stmt) if not isinstance(stmt, ast.FunctionDef | ast.ClassDef) else [stmt]:
            if isinstance(sub, ast.Assign):
                for t in sub.targets:
                    if isinstance(t, ast.Name):
                        found.setdefault(t.id, []).append(sub.value)
    return found


def loader_keys() -> set[str]:
    """The keys of every mapping the loader reads: the third argument of each ``self.mapping``."""
    tree = ast.parse(LOADER.read_text())
    module = _assignments(tree.body)
    keys: set[str] = set()
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef):
            continue
        local = {}
        for sub in ast.walk(fn):
            if isinstance(sub, ast.Assign):
                for t in sub.targets:
                    if isinstance(t, ast.Name):
                        local.setdefault(t.id, []).append(sub.value)
        for call in ast.walk(fn):
            if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                    and call.func.attr == "mapping" and len(call.args) >= 3):
                keys |= _strings(call.args[2], [local, module])
    return keys


def _tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Markdown tables as (header cells, rows of cells)."""
    tables = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and re.match(r"^\|[-| ]+\|$", lines[i + 1]):
            header = [c.strip() for c in lines[i].strip("|").split("|")]
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([c.strip() for c in re.split(r"(?<!\\)\|", lines[i].strip("|"))])
                i += 1
            tables.append((header, rows))
        else:
            i += 1
    return tables


def documented_keys() -> set[str]:
    keys = set()
    for header, rows in _tables(SCENARIO_DOC.read_text()):
        if header[0] == "key":
            keys |= {m for row in rows for m in re.findall(r"`([a-z_][a-z0-9_]*)`", row[0])}
        elif header[:2] == ["list", "action"]:  # {answer: IP} and {inject: IP} are keys too
            keys |= {m for row in rows for m in re.findall(r"`\{([a-z_]+):", row[1])}
    return keys


def test_every_key_the_loader_accepts_is_documented_and_no_other() -> None:
    accepted = loader_keys()
    documented = documented_keys()
    assert {"version", "sites", "match", "residual", "body_file", "test_helper", "title_match"} <= accepted
    assert accepted - documented == set(), "keys the loader accepts but docs/scenario.md does not list"
    assert documented - accepted == set(), "keys docs/scenario.md lists but the loader does not accept"


def test_every_action_is_documented_and_no_other() -> None:
    actions = {"resolver": set(loader.RESOLVER_ACTIONS) | {"answer"},
               "firewall": set(loader.FIREWALL_ACTIONS), "dpi": set(loader.DPI_ACTIONS) | {"inject"}}
    documented: dict[str, set[str]] = {k: set() for k in actions}
    for header, rows in _tables(SCENARIO_DOC.read_text()):
        if header[:2] == ["list", "action"]:
            for row in rows:
                documented[row[0]] |= set(re.findall(r"`\{?([a-z_]+)", row[1]))
    assert documented == actions


def test_match_keys_per_list_are_as_documented() -> None:
    documented: dict[str, set[str]] = {}
    for header, rows in _tables(SCENARIO_DOC.read_text()):
        if header[:3] == ["key", "type", "allowed in"]:
            for row in rows:
                for kind in re.split(r",\s*", row[2]):
                    documented.setdefault(kind, set()).add(row[0].strip("`"))
    assert documented == {k: set(v) for k, v in loader.MATCH_KEYS.items()}


def test_every_verdict_and_its_ooni_mapping_is_documented() -> None:
    rows = {}
    for header, table in _tables(VERDICT_DOC.read_text()):
        if header[:1] == ["verdict"] and "OONI `blocking`" in header:
            rows = {r[0].strip("`"): (r[2].strip("`"), r[3].strip("`")) for r in table}
    assert set(rows) == {v.value for v in Verdict}
    for verdict, (blocking, accessible) in OONI_BLOCKING.items():
        assert rows[verdict.value] == (json.dumps(blocking), json.dumps(accessible)), verdict


def test_the_docs_name_no_file_users_do_not_have() -> None:
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        assert "shared/" not in path.read_text(), f"{path.name} points outside the repository"
