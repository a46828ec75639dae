"""`make test` runs `pytest -n N --dist loadgroup` and relies on `xdist_group` marks: a shipped
scenario's tests share one lab on one worker (a mark on the fixture's params, tests/lab/
test_scenarios.py), a Compose file's tests one worker (tests/conftest.py). pytest 9.2 silently
undid the grouping under pytest-xdist 3.8 (pytest-dev/pytest-xdist#1386): every test ran anyway,
on any worker, each bringing up its own copy of the lab. This runs the installed pair on a small
file and checks that each group stays on one worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TESTS = '''
import json, os, pytest

def record(tag):
    with open(os.environ["GROUPS_OUT"], "a") as out:
        out.write(json.dumps([tag, os.environ["PYTEST_XDIST_WORKER"]]) + "\\n")

@pytest.fixture(scope="module", params=[pytest.param(s, marks=pytest.mark.xdist_group(f"param-{s}"))
                                        for s in ("a", "b")])
def scenario(request):
    return request.param

@pytest.mark.parametrize("probe", range(4))
def test_fixture_param_group(scenario, probe):
    record(f"param-{scenario}")

@pytest.mark.xdist_group("plain")
@pytest.mark.parametrize("i", range(4))
def test_plain_group(i):
    record("plain")
'''


def test_loadgroup_keeps_each_group_on_one_worker(tmp_path: Path) -> None:
    (tmp_path / "test_groups.py").write_text(TESTS)
    out = tmp_path / "groups.jsonl"
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "3",
                          "--dist", "loadgroup", str(tmp_path / "test_groups.py")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**_env(), "GROUPS_OUT": str(out)})
    assert res.returncode == 0, res.stdout + res.stderr
    workers: dict[str, set[str]] = {}
    for line in out.read_text().splitlines():
        group, worker = json.loads(line)
        workers.setdefault(group, set()).add(worker)
    assert set(workers) == {"param-a", "param-b", "plain"}
    assert all(len(w) == 1 for w in workers.values()), f"groups split across workers: {workers}"


def _env() -> dict[str, str]:
    # the inner run must not see this run's xdist worker variables or plugins' settings
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
