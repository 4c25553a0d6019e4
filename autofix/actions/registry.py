"""Every action by name (``family.verb``) and the catalog ``autofix actions`` prints."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autofix.actions import ansible, command, files, http, postgres, process, redis, service
from autofix.actions.base import Action
from autofix.errors import InputError

ActionType = type[Action[Any, Any]]

ACTIONS: Mapping[str, ActionType] = {
    cls.name: cls
    for cls in (
        service.Restart,
        service.StopStart,
        service.Reload,
        process.SignalProcess,
        process.RestartWorker,
        process.ReloadConfig,
        redis.FlushDb,
        redis.DeleteKeys,
        redis.MemoryPurge,
        postgres.TerminateIdle,
        postgres.Vacuum,
        postgres.Reindex,
        postgres.Amcheck,
        files.RotateLogs,
        files.CleanTemp,
        http.HttpCall,
        command.RunCommand,
        ansible.Playbook,
    )
}


def get_action(name: str, registry: Mapping[str, ActionType] = ACTIONS) -> ActionType:
    """The action class called ``name``, or InputError listing the known ones."""
    try:
        return registry[name]
    except KeyError:
        raise InputError(f"unknown action {name!r} (see `autofix actions`)") from None


def catalog(registry: Mapping[str, ActionType] = ACTIONS) -> list[dict[str, Any]]:
    """One entry per action, sorted by name."""
    return [registry[name].catalog_entry() for name in sorted(registry)]
