"""Lab names and the kernel/Docker names derived from them.

A lab name is what ``--name`` and a scenario's ``name:`` give: it names a folder under the run
directory, network namespaces, containers and networks, so it is validated before anything uses it
(a name like ``..`` or ``../x`` would otherwise name a folder outside the lab's).

Names derived from a lab name must never collide between labs: the lab name and the host name are
joined with a character a lab name cannot contain (``.``), so lab ``a`` with host ``b-inet`` and lab
``a-b`` with host ``inet`` stay apart, and a lab is found by its exact name, never by a prefix.
"""

from __future__ import annotations

import re

from netlab.errors import LabNameError

LAB_NAME_RULE = "1 to 24 characters: a lower-case letter, then lower-case letters, digits or '-'"
_LAB_NAME = re.compile(r"[a-z][a-z0-9-]{0,23}")
PREFIX = "nl-"  # every namespace and container of every lab
SEPARATOR = "."  # between the lab name and the host name; never part of a lab name
# The three-namespace client-router-server topology of the DPI tests and benchmarks
# (tests/lab/dpi_topology.py): like a lab host, one of them has no route out of itself.
TOPOLOGY_PREFIX = "nldpi-"
NETNS_DIR = "/run/netns"  # where named network namespaces are bound, as `ip netns add` does


def lab_name_problem(name: object) -> str | None:
    """Why ``name`` is not a valid lab name, or None if it is."""
    if not isinstance(name, str) or not _LAB_NAME.fullmatch(name):
        return f"{name!r} is not a valid lab name ({LAB_NAME_RULE})"
    return None


def check_lab_name(name: object, where: str = "--name") -> str:
    """``name`` if it is a valid lab name, else LabNameError naming ``where`` it came from."""
    problem = lab_name_problem(name)
    if problem:
        raise LabNameError(f"{where}: {problem}")
    assert isinstance(name, str)
    return name


def host_object_name(lab: str, host: str) -> str:
    """The namespace or container of ``host`` in ``lab``: ``nl-<lab>.<host>``."""
    return f"{PREFIX}{check_lab_name(lab, 'lab name')}{SEPARATOR}{host}"


def lab_of(object_name: str) -> str | None:
    """The lab a namespace or container name belongs to, or None if it is not a lab's."""
    if not object_name.startswith(PREFIX) or SEPARATOR not in object_name:
        return None
    lab = object_name[len(PREFIX):].split(SEPARATOR, 1)[0]
    return lab if lab_name_problem(lab) is None else None
