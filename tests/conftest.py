"""Suite-wide: how tests share pytest-xdist workers (`make test` runs them with
`-n N --dist loadgroup`).

Lab tests run in parallel: each brings up its own lab under a name of its own (the `lab_name`
fixture, tests/lab/conftest.py) with its own output folder (tmp_path). Docker tests that drive
Compose labs or the lab's images are kept on one worker per group (`xdist_group`): they share the
image build and the Docker Engine's networks, and several Compose labs at once on a small machine
only compete for CPU until health checks time out. A test with an explicit `xdist_group` keeps it."""

from __future__ import annotations

import pytest

DOCKER_GROUP = "docker"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("docker") is not None and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(DOCKER_GROUP))
