"""Remediation actions, one family per module: service, process, redis, postgres, files,
http, command. ``registry.ACTIONS`` maps ``family.verb`` to the class; ``base`` holds the
contract (facts → pure plan → apply → verify → rollback)."""

from autofix.actions.base import Action, Applied, Check, Context, NoOp, Step
from autofix.errors import ActionError, RefusedError

__all__ = ["Action", "ActionError", "Applied", "Check", "Context", "NoOp", "RefusedError", "Step"]
