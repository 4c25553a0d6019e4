"""Labelled, deterministic metric histories for backtests and benchmarks.

Each scenario is one host whose series have an exactly known ground truth: when the
noiseless process behind a series reaches its threshold (``exhaustion_time``), which
traps it sets for a naive forecaster, and where query slowdowns are. Everything is drawn
from a seeded ``numpy.random.Generator``, so the same seed gives the same history.

Conventions (``direction`` in the truth):

- ``node_filesystem_avail_bytes`` and ``node_memory_available_bytes`` are avail-style,
  ``"down"``: exhausted when value <= 0; capacity is the filesystem size / the RAM.
- ``container_memory_working_set_bytes`` is used-style, ``"up"``: exhausted when value >=
  capacity, the cgroup limit at which the OOM killer fires.
- latencies and counters are ``"none"``: no capacity (NaN), ``exhaustion_time`` null.

Every scenario uses its own host, so a whole suite can be loaded into one store.

``labels_truth`` (schema_version 1): scenario, kind, description, host, seed, start, end
(exclusive), step, step_seconds, parameters, and ``series``: one entry per series with host,
metric, labels (canonical JSON), unit, type (gauge|counter), direction, threshold, capacity
(final, or null), capacity_changes [[time, bytes]], exhaustion_time (ISO UTC or null; may
lie after ``end`` when extrapolated), exhausts_in_window, counterfactual_exhaustion_time
(had nobody grown the disk), slowdown_windows [[start, end)], gaps [[start, end)],
counter_resets [first sample after], traps, description; some add bursts, deploys or
slowdown_factors. Times are ISO UTC with a ``Z``.

    >>> from autofix.data.scenarios import generate
    >>> data = generate("disk_fill_linear", days=2.0)
    >>> list(data.samples.columns)
    ['timestamp', 'host', 'metric', 'value', 'labels', 'capacity']
"""

from __future__ import annotations

from autofix.data.scenarios import _builtin, _unseen  # noqa: F401  (registers the scenarios)
from autofix.data.scenarios._core import (
    COLUMNS,
    DEFAULT_START,
    SCENARIOS,
    SCHEMA_VERSION,
    Scenario,
    ScenarioData,
    generate,
    write_suite,
)
from autofix.data.scenarios._fleet import FLEET_SHAPES, generate_fleet
from autofix.data.scenarios._unseen import HELD_OUT, held_out_suite

__all__ = [
    "COLUMNS",
    "DEFAULT_START",
    "FLEET_SHAPES",
    "HELD_OUT",
    "SCENARIOS",
    "SCHEMA_VERSION",
    "Scenario",
    "ScenarioData",
    "generate",
    "generate_fleet",
    "held_out_suite",
    "write_suite",
]
