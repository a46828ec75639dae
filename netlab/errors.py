"""Typed exceptions: everything the lab raises derives from ``NetlabError``."""

from __future__ import annotations


class NetlabError(Exception):
    """Base class of every error raised by the lab."""


class ScenarioError(NetlabError):
    """A scenario file is invalid. Names the file, the line and the key."""

    def __init__(self, message: str, *, file: str = "<scenario>", line: int | None = None,
                 key: str | None = None) -> None:
        self.file = file
        self.line = line
        self.key = key
        self.message = message
        where = file if line is None else f"{file}:{line}"
        what = f"{key}: " if key else ""
        super().__init__(f"{where}: {what}{message}")


class UsageError(NetlabError):
    """A command was asked for something it must refuse (exit 2): a bad lab name, a lab that is
    not there, a name already in use. Nothing was started or changed."""


class LabNameError(UsageError):
    """A lab name (``--name``, a scenario's ``name:``, a state folder) breaks the naming rule."""


class NoSuchLab(UsageError):
    """No lab of that name exists on this machine."""


class LabMismatch(UsageError):
    """A running lab of that name was built from another scenario or by another backend."""


class LabError(NetlabError):
    """The lab could not be brought up, reached or torn down (a lab fault, not censorship)."""


class LabFault(LabError):
    """A lab component died or misbehaved while a campaign was running."""


class LabInUse(UsageError, LabError):
    """A lab of that name already exists: the running one is left untouched."""
