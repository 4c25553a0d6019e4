"""remote_write benchmark: decode (snappy + protobuf) and store writes of Prometheus batches.

    .venv/bin/python benchmarks/remote_write.py [--hosts 1000] [--series-per-host 20] [--scrapes 12]

Prometheus sends batches of up to ``max_samples_per_send`` samples (2,000 in recent
versions); each batch here is one request body as Prometheus would post it, decoded by
``autofix.collect.remote_write.decode`` and written through the store (one transaction
per batch, as ``POST /api/v1/write`` does). Reported: samples/s for decoding alone and for
decode + write, and the fleet that rate sustains at a 15 s scrape interval. Writes
benchmarks/results/remote_write.json and prints a table. Figures are wall-clock on a
noisy shared machine: compare them within a run.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from autofix.collect.remote_write import decode, encode_write_request
from autofix.store import MetricStore

BATCH = 2000


def bodies(hosts: int, per_host: int, scrapes: int, start_ms: int) -> list[bytes]:
    """Every scrape of every host's series, cut into batches of BATCH samples."""
    samples = []
    for scrape in range(scrapes):
        stamp = start_ms + scrape * 15_000
        for host in range(hosts):
            for metric in range(per_host):
                labels = {
                    "__name__": f"node_metric_{metric}_bytes",
                    "instance": f"web-{host}:9100",
                    "job": "node",
                    "mountpoint": f"/data{metric % 4}",
                }
                samples.append((labels, [(stamp, float(host * 1000 + metric + scrape))]))
    return [encode_write_request(samples[i : i + BATCH]) for i in range(0, len(samples), BATCH)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--series-per-host", type=int, default=20)
    parser.add_argument("--scrapes", type=int, default=12)
    args = parser.parse_args()
    payload = bodies(args.hosts, args.series_per_host, args.scrapes, 1_767_225_600_000)
    total = args.hosts * args.series_per_host * args.scrapes

    began = time.perf_counter()
    for body in payload:
        decode(body)
    decode_s = time.perf_counter() - began

    with tempfile.TemporaryDirectory() as tmp, MetricStore(Path(tmp) / "rw.duckdb") as store:
        began = time.perf_counter()
        for body in payload:
            frame, _ = decode(body)
            store.write(frame)
        write_s = time.perf_counter() - began
        began = time.perf_counter()
        for body in payload[: max(1, len(payload) // 4)]:  # a resend: all duplicates
            frame, _ = decode(body)
            store.write(frame)
        resend_s = (time.perf_counter() - began) / max(1, len(payload) // 4) * len(payload)
        stored = int(store.query("SELECT count(*) AS n FROM samples")["n"][0])
    assert stored == total, (stored, total)

    rate = total / write_s
    result = {
        "benchmark": "remote_write",
        "machine": platform.platform(),
        "hosts": args.hosts,
        "series_per_host": args.series_per_host,
        "scrapes": args.scrapes,
        "samples": total,
        "batch_samples": BATCH,
        "requests": len(payload),
        "compressed_bytes_per_request": round(sum(map(len, payload)) / len(payload)),
        "decode_samples_per_s": round(total / decode_s),
        "decode_write_samples_per_s": round(rate),
        "resend_samples_per_s": round(total / resend_s),
        "ms_per_request": round(write_s / len(payload) * 1000, 2),
        # At a 15 s scrape interval, one autofix takes this many hosts of this many series.
        "hosts_at_15s": int(rate * 15 / args.series_per_host),
    }
    out = Path(__file__).parent / "results" / "remote_write.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    table = Table(title="remote_write: decode and store writes")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        if key not in {"benchmark", "machine"}:
            table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    Console().print(table)


if __name__ == "__main__":
    main()
