"""The store's schema: versioned migrations, the tables a snapshot holds, the reject rules.

``MetricStore`` (``autofix.store``) applies every migration whose version is missing, in
order, each in one transaction, when it opens a file for writing.
"""

from __future__ import annotations

from collections.abc import Sequence

# Migrations run in order on open; each entry brings the schema to that version.
MIGRATIONS: dict[int, Sequence[str]] = {
    1: (
        "CREATE SEQUENCE series_id_seq START 1",
        """CREATE TABLE series (
            series_id BIGINT PRIMARY KEY,
            host VARCHAR NOT NULL,
            metric VARCHAR NOT NULL,
            labels VARCHAR NOT NULL,
            unit VARCHAR NOT NULL DEFAULT '',
            capacity DOUBLE,
            capacity_ts TIMESTAMP,
            created_at TIMESTAMP NOT NULL,
            UNIQUE (host, metric, labels)
        )""",
        # No primary key on samples: an ART index over billions of rows costs memory and
        # 5x the write time; duplicates are removed by an anti-join on write instead.
        "CREATE TABLE samples (series_id BIGINT NOT NULL, ts TIMESTAMP NOT NULL,"
        " value DOUBLE NOT NULL)",
        """CREATE TABLE series_capacity (
            series_id BIGINT NOT NULL, ts TIMESTAMP NOT NULL, capacity DOUBLE NOT NULL,
            PRIMARY KEY (series_id, ts)
        )""",
        """CREATE TABLE samples_5m (
            series_id BIGINT NOT NULL, bucket TIMESTAMP NOT NULL,
            count BIGINT NOT NULL, sum DOUBLE NOT NULL, min DOUBLE NOT NULL,
            max DOUBLE NOT NULL, last DOUBLE NOT NULL, last_ts TIMESTAMP NOT NULL,
            PRIMARY KEY (series_id, bucket)
        )""",
        """CREATE TABLE rejected_samples (
            reason VARCHAR PRIMARY KEY, count BIGINT NOT NULL, last_at TIMESTAMP NOT NULL
        )""",
    ),
    # The fix audit log (autofix.audit): a fix is its request row plus append-only state
    # transitions; locks, cooldowns, budgets and breakers are derived from them.
    2: (
        "CREATE SEQUENCE fix_id_seq START 1",
        """CREATE TABLE fixes (
            fix_id BIGINT PRIMARY KEY,
            action VARCHAR NOT NULL,
            target VARCHAR NOT NULL,
            target_group VARCHAR,
            params VARCHAR NOT NULL,
            decision_id VARCHAR,
            requested_by VARCHAR NOT NULL,
            requested_at TIMESTAMP NOT NULL,
            inputs VARCHAR NOT NULL
        )""",
        """CREATE TABLE fix_events (
            fix_id BIGINT NOT NULL,
            seq INTEGER NOT NULL,
            ts TIMESTAMP NOT NULL,
            state VARCHAR NOT NULL,
            step VARCHAR NOT NULL,
            gate VARCHAR,
            reason VARCHAR,
            plan VARCHAR,
            facts VARCHAR,
            output VARCHAR,
            error VARCHAR,
            undo VARCHAR,
            duration_ms DOUBLE,
            actor VARCHAR,
            PRIMARY KEY (fix_id, seq)
        )""",
        """CREATE TABLE approvals (
            fix_id BIGINT NOT NULL,
            ts TIMESTAMP NOT NULL,
            verdict VARCHAR NOT NULL,
            actor VARCHAR NOT NULL,
            expires_at TIMESTAMP NOT NULL
        )""",
        """CREATE TABLE escalations (
            fix_id BIGINT,
            ts TIMESTAMP NOT NULL,
            action VARCHAR NOT NULL,
            target VARCHAR NOT NULL,
            gate VARCHAR,
            reason VARCHAR NOT NULL
        )""",
    ),
    # Forecasts made by `autofix predict`, with the model name and version that made them.
    3: (
        """CREATE TABLE predictions (
            made_at TIMESTAMP NOT NULL,
            series_id BIGINT NOT NULL,
            origin TIMESTAMP NOT NULL,
            eta TIMESTAMP,
            eta_lo TIMESTAMP,
            eta_hi TIMESTAMP,
            p_1h DOUBLE NOT NULL,
            p_4h DOUBLE NOT NULL,
            p_24h DOUBLE NOT NULL,
            p_4d DOUBLE NOT NULL,
            threshold DOUBLE NOT NULL,
            model VARCHAR NOT NULL,
            model_version VARCHAR NOT NULL
        )""",
    ),
    # The service (autofix.jobs, policy, maintenance, kpi): decisions of the policy and
    # their scored outcomes, operator labels, job runs, preventive maintenance, anomaly
    # scores and KPI snapshots. Append-only like the audit log.
    4: (
        """CREATE TABLE decisions (
            decision_id VARCHAR PRIMARY KEY,
            ts TIMESTAMP NOT NULL,
            detected_at TIMESTAMP NOT NULL,
            rule VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,
            source VARCHAR NOT NULL,
            subject VARCHAR NOT NULL,
            series_id BIGINT,
            target VARCHAR,
            mode VARCHAR NOT NULL,
            score_at TIMESTAMP NOT NULL,
            reason VARCHAR NOT NULL,
            inputs VARCHAR NOT NULL
        )""",
        """CREATE TABLE decision_outcomes (
            decision_id VARCHAR NOT NULL,
            scored_at TIMESTAMP NOT NULL,
            real BOOLEAN NOT NULL,
            reason VARCHAR NOT NULL
        )""",
        """CREATE TABLE fix_labels (
            fix_id BIGINT NOT NULL,
            ts TIMESTAMP NOT NULL,
            false_fix BOOLEAN NOT NULL,
            actor VARCHAR NOT NULL,
            comment VARCHAR
        )""",
        """CREATE TABLE job_runs (
            job VARCHAR NOT NULL,
            started_at TIMESTAMP NOT NULL,
            finished_at TIMESTAMP NOT NULL,
            duration_ms DOUBLE NOT NULL,
            ok BOOLEAN NOT NULL,
            error VARCHAR,
            summary VARCHAR
        )""",
        "CREATE SEQUENCE maintenance_id_seq START 1",
        """CREATE TABLE maintenance_tasks (
            task_id BIGINT PRIMARY KEY,
            created_at TIMESTAMP NOT NULL,
            need VARCHAR NOT NULL,
            target VARCHAR NOT NULL,
            action VARCHAR NOT NULL,
            params VARCHAR NOT NULL,
            urgency VARCHAR NOT NULL,
            reason VARCHAR NOT NULL,
            estimated_s DOUBLE NOT NULL,
            downtime BOOLEAN NOT NULL,
            due_by TIMESTAMP NOT NULL,
            window_start TIMESTAMP NOT NULL,
            window_end TIMESTAMP NOT NULL
        )""",
        """CREATE TABLE maintenance_events (
            task_id BIGINT NOT NULL,
            ts TIMESTAMP NOT NULL,
            state VARCHAR NOT NULL,
            fix_id BIGINT,
            reason VARCHAR
        )""",
        """CREATE TABLE anomaly_scores (
            made_at TIMESTAMP NOT NULL,
            series_id BIGINT NOT NULL,
            ts TIMESTAMP NOT NULL,
            value DOUBLE NOT NULL,
            score DOUBLE NOT NULL,
            model VARCHAR NOT NULL
        )""",
        """CREATE TABLE kpi_snapshots (
            ts TIMESTAMP NOT NULL,
            name VARCHAR NOT NULL,
            value DOUBLE
        )""",
    ),
    # Retention runs: where raw samples were last cut, so a rollup bucket is merged into
    # only for samples that arrived after its raw samples were deleted (never twice).
    5: (
        """CREATE TABLE retention_runs (
            ts TIMESTAMP NOT NULL,
            raw_cutoff TIMESTAMP NOT NULL
        )""",
    ),
    # Automatic outcomes of applied fixes (autofix.outcomes): provisional when the fix
    # finishes, final after AUTOFIX_FIX_OUTCOME_WINDOW; the latest row of a fix wins.
    6: (
        """CREATE TABLE fix_outcomes (
            fix_id BIGINT NOT NULL,
            judged_at TIMESTAMP NOT NULL,
            outcome VARCHAR NOT NULL,
            final BOOLEAN NOT NULL,
            preventive BOOLEAN,
            reason VARCHAR NOT NULL
        )""",
    ),
    # Run-time holds (autofix.pause, autofix.silences): the global pause as append-only
    # pause/resume records (the newest wins), and Alertmanager-like silences.
    7: (
        """CREATE TABLE pause_events (
            ts TIMESTAMP NOT NULL,
            paused BOOLEAN NOT NULL,
            until TIMESTAMP,
            reason VARCHAR NOT NULL,
            actor VARCHAR NOT NULL
        )""",
        "CREATE SEQUENCE silence_id_seq START 1",
        """CREATE TABLE silences (
            silence_id BIGINT PRIMARY KEY,
            created_at TIMESTAMP NOT NULL,
            starts_at TIMESTAMP NOT NULL,
            ends_at TIMESTAMP NOT NULL,
            matchers VARCHAR NOT NULL,
            creator VARCHAR NOT NULL,
            comment VARCHAR NOT NULL,
            expired_at TIMESTAMP,
            expired_by VARCHAR
        )""",
    ),
}

SCHEMA_VERSION = max(MIGRATIONS)
# What a Parquet snapshot holds, with the order each file is written in: the metrics,
# and the audit and service tables so KPIs, reports and notebooks work from it too.
SNAPSHOT_TABLES: tuple[tuple[str, str], ...] = (
    ("series", "series_id"),
    ("samples", "series_id, ts"),
    ("series_capacity", "series_id, ts"),
    ("samples_5m", "series_id, bucket"),
    ("predictions", "made_at, series_id"),
    ("fixes", "fix_id"),
    ("fix_events", "fix_id, seq"),
    ("approvals", "fix_id, ts"),
    ("escalations", "ts"),
    ("decisions", "ts"),
    ("decision_outcomes", "scored_at"),
    ("fix_labels", "fix_id, ts"),
    ("fix_outcomes", "fix_id, judged_at"),
    ("job_runs", "started_at"),
    ("maintenance_tasks", "task_id"),
    ("maintenance_events", "task_id, ts"),
    ("anomaly_scores", "series_id, ts"),
    ("kpi_snapshots", "ts"),
    ("pause_events", "ts"),
    ("silences", "silence_id"),
)
# Tables the service appends whole frames to (``MetricStore.append``).
APPENDABLE = frozenset({"anomaly_scores", "kpi_snapshots", "job_runs"})

# Why a row is refused. Checked in this order; the first that applies is counted.
REJECT_SQL = """
    CASE
        WHEN ts IS NULL THEN 'bad_timestamp'
        WHEN host IS NULL OR host = '' OR metric IS NULL OR metric = '' THEN 'missing_identity'
        WHEN value IS NULL OR NOT isfinite(value) THEN 'non_finite'
        WHEN value < 0 AND (unit = 'bytes' OR suffix(metric, '_bytes')) THEN 'negative_bytes'
        WHEN value < 0 AND suffix(metric, '_total') THEN 'negative_counter'
        WHEN capacity IS NOT NULL AND NOT isnan(capacity)
             AND (isinf(capacity) OR capacity <= 0) THEN 'bad_capacity'
    END
"""


__all__ = ["APPENDABLE", "MIGRATIONS", "REJECT_SQL", "SCHEMA_VERSION", "SNAPSHOT_TABLES"]
