"""remote_write decoding (snappy + protobuf) and ``POST /api/v1/write`` on a served app."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from pathlib import Path

import cramjam
import pytest

from autofix.collect.remote_write import decode, encode_write_request
from autofix.errors import InputError
from tests.api.world import OPERATOR, VIEWER, World, auth, make_world, serving

#: Prometheus' staleness marker: a NaN with this exact bit pattern ("the series stopped").
STALE_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
HEADERS = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"}


def _body() -> bytes:
    return encode_write_request(
        [
            (
                {
                    "__name__": "node_filesystem_avail_bytes",
                    "instance": "rw-1:9100",
                    "job": "node",
                    "mountpoint": "/var/log",
                },
                [
                    (1_700_000_000_000, 5e9),
                    (1_700_000_015_000, 4.9e9),
                    (1_700_000_030_000, STALE_NAN),
                ],
            ),
            ({"__name__": "up", "instance": "[::1]:9090"}, [(1_700_000_000_123, 1.0)]),
            ({"__name__": "no_instance"}, [(1_700_000_000_000, 1.0)]),
            ({"__name__": "inf", "instance": "h"}, [(1_700_000_000_000, math.inf)]),
        ]
    )


def test_decode_keeps_labels_and_drops_what_is_not_a_value() -> None:
    frame, stats = decode(_body())
    assert (stats.series, stats.samples, stats.non_finite, stats.unnamed) == (4, 3, 2, 1)
    disk = frame[frame["metric"] == "node_filesystem_avail_bytes"]
    assert set(disk["host"]) == {"rw-1"}
    assert set(disk["labels"]) == {'{"job":"node","mountpoint":"/var/log"}'}
    assert set(disk["unit"]) == {"bytes"}
    assert [str(t) for t in disk["ts"]] == ["2023-11-14 22:13:20", "2023-11-14 22:13:35"]
    up = frame[frame["metric"] == "up"].iloc[0]
    assert (up["host"], str(up["ts"])) == ("::1", "2023-11-14 22:13:20.123000")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not snappy at all", "snappy"),
        (bytes(cramjam.snappy.compress_raw(b"\xff\xff\xff\xff")), "WriteRequest"),
        (bytes(cramjam.snappy.compress_raw(b"\0" * (2 << 20))), "inflates to"),
    ],
)
def test_decode_refuses_bad_bodies(body: bytes, message: str) -> None:
    with pytest.raises(InputError, match=message):
        decode(body, max_size=1 << 20)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with make_world(tmp_path) as w:
        yield w


def test_write_route_stores_samples_idempotently(world: World) -> None:
    with serving(world) as client:
        before = world.store.query("SELECT count(*) AS n FROM samples")["n"][0]
        sent = client.post("/api/v1/write", content=_body(), headers={**HEADERS, **auth(OPERATOR)})
        assert sent.status_code == 204, sent.text
        again = client.post("/api/v1/write", content=_body(), headers={**HEADERS, **auth(OPERATOR)})
        assert again.status_code == 204
        rows = world.store.query(
            "SELECT s.host, s.metric, s.labels, count(*) AS n FROM samples x JOIN series s "
            "USING (series_id) WHERE s.host IN ('rw-1', '::1') GROUP BY ALL ORDER BY 2"
        )
        assert rows.values.tolist() == [
            ["rw-1", "node_filesystem_avail_bytes", '{"job":"node","mountpoint":"/var/log"}', 2],
            ["::1", "up", "{}", 1],
        ]
        after = world.store.query("SELECT count(*) AS n FROM samples")["n"][0]
        assert after - before == 3  # the resend changed nothing
        assert client.post("/api/v1/write", content=_body(), headers=HEADERS).status_code == 401
        viewer = client.post("/api/v1/write", content=_body(), headers={**HEADERS, **auth(VIEWER)})
        assert viewer.status_code == 403
        bad = client.post("/api/v1/write", content=b"junk", headers={**HEADERS, **auth(OPERATOR)})
        assert bad.status_code == 400
        assert "snappy" in bad.json()["detail"]
        v2 = {
            "Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request",
            "Content-Encoding": "snappy",
        }
        assert (
            client.post("/api/v1/write", content=_body(), headers={**v2, **auth(OPERATOR)})
        ).status_code == 415
        assert world.store.query("SELECT count(*) AS n FROM samples")["n"][0] == after
