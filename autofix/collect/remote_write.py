"""Prometheus remote_write 1.0: a snappy-compressed protobuf ``WriteRequest`` → store rows.

Prometheus (or any agent that speaks remote_write: Grafana Agent, vmagent, the
OpenTelemetry collector) pushes its samples to ``POST /api/v1/write``; this module
decodes the body and shapes it like ``collect.prometheus`` does for pulled series: the
metric from ``__name__``, the host from ``instance`` without its port, every other label
kept. The body is snappy's block format (decoded by cramjam) around the protobuf message
of Prometheus' ``prompb/remote.proto`` (decoded by protobuf; the schema is declared here
as a descriptor, so no generated code is vendored).

NaN and ±Inf are dropped and counted — this includes Prometheus' staleness marker, a
NaN that says "this series stopped", which is not a value. Timestamps are epoch
milliseconds. A series without ``__name__`` or without ``instance`` is counted and
skipped (there is no host to give it), never guessed.

>>> body = encode_write_request([({"__name__": "up", "instance": "web-1:9100"}, [(1, 1.0)])])
>>> frame, stats = decode(body)
>>> frame[["host", "metric", "value"]].values.tolist(), stats.series
([['web-1', 'up', 1.0]], 1)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cramjam
import numpy as np
import pandas as pd
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from autofix.collect.base import FRAME_COLUMNS, format_labels
from autofix.collect.prometheus import _unit, host_of
from autofix.errors import InputError

#: Content type and encoding a remote_write 1.0 sender uses.
CONTENT_TYPE = "application/x-protobuf"
CONTENT_ENCODING = "snappy"


def _schema() -> tuple[type[Message], type[Message]]:
    """``prometheus.WriteRequest`` and ``prometheus.TimeSeries`` from prompb (field numbers
    as in Prometheus' remote.proto and types.proto; exemplars, histograms and metadata
    are left out: protobuf skips fields a schema does not name)."""
    f = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="autofix_prompb.proto", package="prometheus", syntax="proto3"
    )

    def message(name: str, fields: Sequence[tuple[str, int, int, int, str]]) -> None:
        msg = proto.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            field = msg.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                field.type_name = type_name

    one, many = f.LABEL_OPTIONAL, f.LABEL_REPEATED
    message("Label", [("name", 1, f.TYPE_STRING, one, ""), ("value", 2, f.TYPE_STRING, one, "")])
    message(
        "Sample", [("value", 1, f.TYPE_DOUBLE, one, ""), ("timestamp", 2, f.TYPE_INT64, one, "")]
    )
    message(
        "TimeSeries",
        [
            ("labels", 1, f.TYPE_MESSAGE, many, ".prometheus.Label"),
            ("samples", 2, f.TYPE_MESSAGE, many, ".prometheus.Sample"),
        ],
    )
    message("WriteRequest", [("timeseries", 1, f.TYPE_MESSAGE, many, ".prometheus.TimeSeries")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    request = message_factory.GetMessageClass(pool.FindMessageTypeByName("prometheus.WriteRequest"))
    series = message_factory.GetMessageClass(pool.FindMessageTypeByName("prometheus.TimeSeries"))
    return request, series


WriteRequest, TimeSeries = _schema()


@dataclass(frozen=True)
class DecodeStats:
    """What one request held: series, samples kept, and what was dropped and why."""

    series: int = 0
    samples: int = 0
    non_finite: int = 0
    unnamed: int = 0


def decompress(body: bytes, max_size: int) -> bytes:
    """Snappy block → bytes, refusing a claimed size over ``max_size`` before inflating."""
    try:
        size = cramjam.snappy.decompress_raw_len(body)
    except Exception:  # cramjam raises its own DecompressionError (not exported as a type)
        raise InputError("remote_write body is not snappy-compressed (block format)") from None
    if size > max_size:
        raise InputError(
            f"remote_write body inflates to {size} bytes (over the {max_size}-byte limit)"
        )
    try:
        return bytes(cramjam.snappy.decompress_raw(body))
    except Exception:
        raise InputError("remote_write body is not valid snappy (block format)") from None


def decode(body: bytes, max_size: int = 64 << 20) -> tuple[pd.DataFrame, DecodeStats]:
    """A remote_write request body → a store write frame and counts."""
    raw = decompress(body, max_size)
    request = WriteRequest()
    try:
        request.ParseFromString(raw)
    except DecodeError:
        raise InputError("remote_write body is not a prometheus.WriteRequest protobuf") from None
    # Prometheus sends many series of one or two samples each: gather plain lists and
    # build one frame (a DataFrame per series costs a millisecond each).
    stamps: list[int] = []
    values: list[float] = []
    hosts: list[str] = []
    metrics: list[str] = []
    label_texts: list[str] = []
    non_finite = unnamed = 0
    for series in request.timeseries:
        labels = {label.name: label.value for label in series.labels}
        metric = labels.pop("__name__", "")
        instance = labels.pop("instance", "")
        if not metric or not instance or not series.samples:
            unnamed += bool(series.samples)
            continue
        kept = [(s.timestamp, s.value) for s in series.samples if math.isfinite(s.value)]
        non_finite += len(series.samples) - len(kept)
        if not kept:
            continue
        host, text = host_of(instance), format_labels(labels)
        for stamp, value in kept:
            stamps.append(stamp)
            values.append(value)
        hosts.extend([host] * len(kept))
        metrics.extend([metric] * len(kept))
        label_texts.extend([text] * len(kept))
    frame = pd.DataFrame(
        {
            "ts": pd.to_datetime(np.asarray(stamps, dtype=np.int64), unit="ms"),
            "host": hosts,
            "metric": metrics,
            "labels": label_texts,
            "value": np.asarray(values, dtype=np.float64),
            "unit": [_unit(m) for m in metrics],
            "capacity": np.full(len(values), np.nan),
        },
        columns=list(FRAME_COLUMNS),
    )
    stats = DecodeStats(len(request.timeseries), len(values), non_finite, unnamed)
    return frame, stats


def encode_write_request(
    series: Sequence[tuple[Mapping[str, str], Sequence[tuple[int, float]]]],
) -> bytes:
    """The body a remote_write sender would post (tests, and a client of autofix's own)."""
    request = WriteRequest()
    for labels, samples in series:
        ts = request.timeseries.add()
        for name, text in sorted(labels.items()):
            ts.labels.add(name=name, value=text)
        for stamp, value in samples:
            ts.samples.add(timestamp=stamp, value=value)
    return bytes(cramjam.snappy.compress_raw(request.SerializeToString()))
