"""The harness's exceptions: every one derives from ``HarnessError``, itself a NetlabError (the lab's
base, which the CLI turns into a message and an exit status). Each also derives from the netlab
class that gives its exit status: UsageError (2), LabError (3)."""

from __future__ import annotations

from netlab.errors import LabError, NetlabError, UsageError

__all__ = ["AnalysisCrashed", "CallError", "HarnessError", "ResultsError"]


class HarnessError(NetlabError):
    """Base class of every error raised by the harness."""


class ResultsError(HarnessError):
    """A results folder cannot be scored: missing, incomplete, corrupt, or given twice (exit 2)."""


class CallError(HarnessError, UsageError):
    """A detector's output cannot be scored: a missing, unknown or malformed call (exit 2)."""


class AnalysisCrashed(HarnessError, LabError):
    """The analysis program failed (a non-zero exit, a timeout): nothing is scored (exit 3)."""
