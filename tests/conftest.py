"""Suite-wide: how tests share pytest-xdist workers (`make test` runs them with
`-n N --dist loadgroup`).

Lab tests run in parallel: each brings up its own lab under a name of its own (the `lab_name`
fixture, tests/lab/conftest.py) with its own output folder (tmp_path). Docker tests are kept on one
worker per file (`xdist_group`): the tests of a file often share a module fixture or an image, and
two heavy Compose tests of one file at once on a small machine only compete for CPU until timeouts
hit. Files that share an image build share a group (GROUPS). A test with an explicit
`xdist_group` keeps it."""

from __future__ import annotations

import os

import pytest

# The base image test and the deploy test (which builds fauxisp/lab on top of the base image).
GROUPS = {"test_images_lab": "lab-image", "test_deploy_examples": "lab-image"}

# Rich wraps messages at the console width (harness: $COLUMNS, else 160 when not a terminal; a bare
# Console: $COLUMNS, else 80), fixed when a console is made, some at import. In an xdist worker,
# tmp_path gains a `popen-gwN/` level, and a message with a path in it wraps where a test looks
# for a phrase. A console too wide to wrap any message keeps wrapping out of what the tests
# compare; harness subprocesses inherit it. Workers only: pytest's own report, printed by the
# controller (or by a serial run), keeps the terminal's width.
if os.environ.get("PYTEST_XDIST_WORKER"):  # (xdist hands workers COLUMNS=80)
    os.environ["COLUMNS"] = "1000"


# The longest test (it downloads Debian's packages into an image of its own): started first.
FIRST = {"test_setup_stock_debian"}


def _docker(item: pytest.Item) -> bool:
    return item.get_closest_marker("docker") is not None or "docker" in item.path.parts


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _docker(item) and item.get_closest_marker("xdist_group") is None:
            stem = item.path.stem
            item.add_marker(pytest.mark.xdist_group(GROUPS.get(stem, f"docker-{stem}")))
    # Most Docker tests need the lab image, which `make test` builds in the background meanwhile:
    # handed to workers after the rest, they find it built instead of holding a worker while it
    # builds (a fresh machine: 2 minutes). xdist hands work out in this order.
    items.sort(key=lambda item: 0 if item.path.stem in FIRST else 2 if _docker(item) else 1)
