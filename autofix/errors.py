"""The one exception tree of autofix.

Every error a user can cause or meet is an ``AutofixError``; the CLI and the API
translate it into one clear line (and an exit code or HTTP status) at the boundary,
never a traceback. Third-party errors are wrapped ``from exc`` where they happen.

    AutofixError                 exit 1 unless a subclass says otherwise
    ├── ConfigError              bad settings or pipelines file            exit 2
    ├── InputError               bad user input: a file, a flag, a body    exit 2
    │   └── RefusedError         a fix refused before anything ran (gate)  exit 2
    ├── StoreError               DuckDB failed underneath us               exit 1
    │   └── StoreLockedError     another process owns the store file       exit 1
    ├── PausedError              autofix is paused: nothing is applied     exit 1
    ├── ActionError              an action could not apply/verify/undo     exit 1
    │   └── PartialApplyError    apply stopped midway; ``undo`` covers what
    │                            it did, and the executor rolls that back  exit 1
    ├── CollectError             a collector failed (the loop turns it into
    │                            a probe_up 0 sample; raised only to callers
    │                            that collect one thing directly)          exit 1
    └── ComputeError             the Dask scheduler or the worker pool
                                 cannot be reached or started              exit 1
"""

from __future__ import annotations


class AutofixError(Exception):
    """Root of every error autofix raises on purpose."""

    exit_code = 1


class ConfigError(AutofixError):
    """A setting or a pipelines file is invalid; the message names file and field."""

    exit_code = 2


class InputError(AutofixError):
    """User input is invalid; the message names the file, row and column."""

    exit_code = 2


class RefusedError(InputError):
    """A fix refused before anything ran: ``gate`` names the check, the message says why."""

    def __init__(self, gate: str, reason: str) -> None:
        super().__init__(reason)
        self.gate = gate
        self.reason = reason


class PausedError(AutofixError):
    """autofix is paused (``autofix pause``): an approval cannot run a fix until resumed."""


class ActionError(AutofixError):
    """An action could not apply, verify or roll back; the message says which and why."""


class PartialApplyError(ActionError):
    """``apply`` failed after changing something; ``undo`` reverts what it changed."""

    def __init__(self, message: str, undo: dict[str, object]) -> None:
        super().__init__(message)
        self.undo = undo


class StoreError(AutofixError):
    """The metric store could not do what was asked."""


class StoreLockedError(StoreError):
    """Another process holds the DuckDB write lock; the message says what to do."""


class CollectError(AutofixError):
    """A collector could not read its source."""


class ComputeError(AutofixError):
    """The Dask scheduler (AUTOFIX_DASK_SCHEDULER) or the worker pool cannot be used."""
