"""The backend interface. A backend realises a LabPlan (namespaces or containers), runs programs
inside its hosts, and removes every trace of a lab by name, also after a crash."""

from __future__ import annotations

import abc
import asyncio
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Any

from netlab.plan import LabPlan, host_to_dict

Progress = Callable[[str], None]


@dataclass
class LabState:
    """What is known of a running lab, saved beside its files so any process can attach to it."""

    lab: str
    backend: str
    lab_dir: str
    scenario_source: str
    owner_pid: int  # the process whose children the services are (the supervisor)
    hosts: dict[str, str]  # host -> namespace or container name
    services: list[dict[str, Any]] = field(default_factory=list)  # {host, name, pid, critical}
    vantages: dict[str, dict[str, Any]] = field(default_factory=dict)
    site_addresses: dict[str, str] = field(default_factory=dict)
    ca_file: str = "pki/ca.pem"
    created: float = 0.0
    ready: bool = False

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.__dict__, indent=1))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> LabState:
        return cls(**json.loads(path.read_text()))


def write_lab_files(plan: LabPlan, lab_dir: Path, inner_dir: str) -> None:
    """Write the plan's files into ``lab_dir`` (a fresh folder), with LAB_DIR rendered as the path
    programs inside the hosts see it at (``inner_dir``), and ``hosts.json`` for hostd."""
    # Empty the folder rather than remove it: it may be a bind mount (docker compose).
    lab_dir.mkdir(parents=True, exist_ok=True)
    for old in lab_dir.iterdir():
        shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
    (lab_dir / "logs").mkdir()
    for rel, content in plan.files.items():
        p = lab_dir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        rendered = plan.render(content, inner_dir)
        if isinstance(rendered, bytes):
            p.write_bytes(rendered)
        else:
            p.write_text(rendered)
    for host in plan.hosts.values():
        (lab_dir / host.name).mkdir(exist_ok=True)
    hosts = {"lab": plan.lab, "hosts": {h.name: host_to_dict(h) for h in plan.hosts.values()},
             "blackhole": sorted({str(link_gateway(i.address)) for h in plan.hosts.values() for i in h.interfaces})}
    (lab_dir / "hosts.json").write_text(json.dumps(hosts, indent=1))


def link_gateway(address: IPv4Interface) -> IPv4Address:
    """The address of a link a Docker bridge takes (and the lab never uses): the last usable one."""
    return address.network.broadcast_address - 1


class RunningLab(abc.ABC):
    """A lab that is up. ``spawn`` is the one seam through which the harness reaches inside."""

    def __init__(self, state: LabState) -> None:
        self.state = state

    @property
    def name(self) -> str:
        return self.state.lab

    @abc.abstractmethod
    def command(self, host: str, argv: list[str]) -> list[str]:
        """The host-side command line that runs ``argv`` inside ``host``."""

    async def spawn(self, host: str, argv: list[str]) -> asyncio.subprocess.Process:
        """Start ``argv`` inside ``host`` with pipes for stdin and stdout."""
        cmd = self.command(host, argv)
        return await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, limit=64 * 1024 * 1024)

    @abc.abstractmethod
    def down(self) -> None:
        """Tear the lab down, reaping the services this process started."""

    @abc.abstractmethod
    def dead_services(self) -> list[str]:
        """Critical services that are no longer running (a lab fault)."""

    def host_path(self, relative: str) -> Path:
        """A lab file as seen from the harness."""
        return Path(self.state.lab_dir) / relative

    def inner_path(self, relative: str) -> Path:
        """A lab file as seen by programs inside the lab's hosts (the same place, for netns)."""
        return self.host_path(relative)


class Backend(abc.ABC):
    name: str

    @abc.abstractmethod
    def up(self, plan: LabPlan, progress: Progress | None = None) -> RunningLab:
        """Bring the lab up; its services are children of the calling process."""

    @abc.abstractmethod
    def down(self, lab: str, progress: Progress | None = None) -> bool:
        """Remove every trace of ``lab``; True if anything was found."""

    @abc.abstractmethod
    def attach(self, lab: str) -> RunningLab:
        """A handle on a lab brought up by another process (``harness up``)."""

    @abc.abstractmethod
    def list_labs(self) -> list[LabState]:
        """Labs of this backend on this machine, running or left over."""
