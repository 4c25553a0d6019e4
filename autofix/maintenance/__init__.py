"""Preventive maintenance: needs → a plan in maintenance windows → execution, on time.

Needs come from what autofix already knows: filesystem forecasts (rotate logs and clean
up before a disk fills), log growth, dead tuples and query-latency anomalies of
PostgreSQL targets, and the package manager's list of upgradable security packages.
Each need names the action that meets it, and reading that action's facts and plan is
how the need is confirmed: a no-op plan means nothing to do, so no need. ``plan`` is
pure (needs and windows in, slots out). ``Maintenance`` records tasks in
``maintenance_tasks`` with append-only ``maintenance_events`` and runs due tasks through
the executor, so maintenance passes the same gates and lands in the same audit log as
every other fix.

Task states: ``planned`` → ``started`` → ``executed`` (the fix verified, or had nothing
left to do) | ``failed`` (retried while the window is open); ``cancelled`` (the need
went away before the window); ``missed`` (the window ended without execution).

The code reads in that order: ``apt`` (the upgradable packages, cached), ``needs``
(deriving needs), ``planning``
(placing them in windows) and ``tasks`` (recording and executing them: ``Maintenance``).

>>> line = "openssl/jammy-security 3.0.2-0ubuntu1.15 amd64 [upgradable from: 3.0.2-0ubuntu1.12]"
>>> parse_upgradable(line)[0].security
True
"""

from autofix.maintenance.apt import UPGRADABLE, Package, list_upgradable, parse_upgradable
from autofix.maintenance.needs import DEFAULT_ESTIMATE_S as DEFAULT_ESTIMATE_S
from autofix.maintenance.needs import EXHAUST_PROBABILITY as EXHAUST_PROBABILITY
from autofix.maintenance.needs import FS_METRIC as FS_METRIC
from autofix.maintenance.needs import GROWTH_METRIC as GROWTH_METRIC
from autofix.maintenance.needs import LATENCY_METRIC as LATENCY_METRIC
from autofix.maintenance.needs import MIN_RUN_NOW as MIN_RUN_NOW
from autofix.maintenance.needs import REINDEX_SCORE as REINDEX_SCORE
from autofix.maintenance.needs import ROTATE_AFTER_STEPS as ROTATE_AFTER_STEPS
from autofix.maintenance.needs import STALE_AFTER as STALE_AFTER
from autofix.maintenance.needs import (
    URGENCIES,
    ActionProbe,
    Need,
    derive_needs,
)
from autofix.maintenance.needs import NeedKind as NeedKind
from autofix.maintenance.needs import Probe as Probe
from autofix.maintenance.needs import Urgency as Urgency
from autofix.maintenance.planning import Placement as Placement
from autofix.maintenance.planning import PlannedTask, plan, window_occurrences
from autofix.maintenance.tasks import OPEN_STATES, TASK_STATES, Maintenance, PlanReport

# The ``X as X`` names (kinds and tunables) stay importable from here, as they were before
# the package split, without joining ``__all__``.
__all__ = [
    "OPEN_STATES",
    "TASK_STATES",
    "UPGRADABLE",
    "URGENCIES",
    "ActionProbe",
    "Maintenance",
    "Need",
    "Package",
    "PlanReport",
    "PlannedTask",
    "derive_needs",
    "list_upgradable",
    "parse_upgradable",
    "plan",
    "window_occurrences",
]
