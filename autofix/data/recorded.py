"""Real metrics recorded on a real machine, with the slowdowns we injected labelled.

The generator in ``scenarios`` knows its ground truth exactly but only produces the
shapes we thought of. ``data/real/recorded_pg.*`` is the counterweight: latency measured
on a real PostgreSQL server under real load, recorded by ``benchmarks/record_latency.py``:

- a throwaway PostgreSQL 15 (``tests/servers.py``) on a 2-core host with an ``articles``
  table of 300,000 rows, pgbench driving 150 tx/s of point reads + counter updates;
- two canary queries probed every 0.5 s (``pg_query_latency_seconds{query=...}``:
  ``top_articles`` served by a (category, published_at) index, ``article_by_id`` a
  primary-key lookup; lock waits are cut at 2 s, so a blocked probe reads ~2 s), and
  every second the CPU of the database's process tree (``process_cpu_usage_ratio
  {group="db"}``: postgres, pgbench, probes, hogs — what a dedicated DB host would show),
  the host's ``node_cpu_usage_ratio`` and ``node_load1``, and
  ``node_cpu_external_ratio`` (host CPU not ours);
- the machine is a shared 2-core dev box: other jobs ran during the recording, so the
  recording's process tree ran at nice -10 to keep their effect small, and the external
  CPU series says how busy they were. What they still caused is real, unlabelled noise;
- after a quiet warm-up, injected one at a time with 35-50 s quiet gaps: an ACCESS
  EXCLUSIVE table lock (15-30 s), dropping the canary's index and rebuilding it (25-45 s),
  four sessions of full-table scans (30-50 s), a 3-process CPU hog (35-45 s), and 1 s
  scan *blips* that are deliberately not labelled (noise a pager should ignore).

The labels file has the scenario truth layout (``slowdown_windows`` per series, ISO UTC
at whole seconds, widened outward) plus ``injections`` (every event with its kind and
measured duration). Each series is labelled with the injections whose mechanism reaches
it (see ``LABELS_FOR`` in the recording script): the CPU hog labels the database CPU
only, because it barely moves a sub-millisecond query on this host; host-wide CPU and
load are not labelled (the neighbours move them too).

    >>> data = load_recorded()  # doctest: +SKIP
    >>> sorted(data.samples.columns)  # doctest: +SKIP
    ['host', 'labels', 'metric', 'timestamp', 'value']
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from autofix.errors import InputError

__all__ = ["REAL_DIR", "RecordedData", "load_recorded", "series_frame"]

#: Where the recordings live in a source checkout (they are not installed with the package).
REAL_DIR = Path(__file__).resolve().parents[2] / "data" / "real"
COLUMNS = ("timestamp", "host", "metric", "value", "labels")


@dataclass(frozen=True, slots=True)
class RecordedData:
    """A recording: import-format samples and its labels (scenario truth layout)."""

    name: str
    samples: pd.DataFrame  # timestamp (naive UTC), host, metric, value, labels
    labels_truth: dict[str, Any]

    def series_truth(self, metric: str, labels: str = "{}") -> dict[str, Any]:
        """The truth entry of one series (``labels`` is canonical JSON)."""
        for entry in self.labels_truth["series"]:
            if entry["metric"] == metric and entry["labels"] == labels:
                return dict(entry)
        raise InputError(f"{self.name}: no series {metric}{labels}")


def load_recorded(name: str = "recorded_pg", directory: Path | None = None) -> RecordedData:
    """Load ``<name>.csv`` and ``<name>.labels.json`` from ``directory`` (``data/real``)."""
    base = directory if directory is not None else REAL_DIR
    csv_path, labels_path = base / f"{name}.csv", base / f"{name}.labels.json"
    for path in (csv_path, labels_path):
        if not path.exists():
            raise InputError(f"{path}: no such file (record one with benchmarks/record_latency.py)")
    samples = pd.read_csv(csv_path, dtype={"labels": str, "host": str, "metric": str})
    missing = [c for c in COLUMNS if c not in samples.columns]
    if missing:
        raise InputError(f"{csv_path}: line 1: missing column {missing[0]!r}")
    samples["timestamp"] = pd.to_datetime(samples["timestamp"], utc=True).dt.tz_localize(None)
    truth = json.loads(labels_path.read_text(encoding="utf-8"))
    return RecordedData(name, samples[list(COLUMNS)], truth)


def series_frame(samples: pd.DataFrame, metric: str, labels: str = "{}") -> pd.DataFrame:
    """One series of an import-format frame as a long frame ``series_id, ts, value``."""
    rows = samples[(samples["metric"] == metric) & (samples["labels"] == labels)]
    return pd.DataFrame(
        {"series_id": f"{metric}{labels}", "ts": rows["timestamp"], "value": rows["value"]}
    ).reset_index(drop=True)
