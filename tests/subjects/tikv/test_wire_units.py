"""Decoding PD's field encodings and error bodies, and the recorded payloads themselves."""

from __future__ import annotations

import filecmp
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from operator_console.subjects.tikv.pd_errors import (
    OperatorExistsError,
    PDHTTPError,
    PDInvalidInputError,
    PDNoLeaderError,
    PDNotLeaderError,
    PDRedirectFailedError,
    StoreNotFoundError,
    error_for,
    pd_text_of,
)
from operator_console.subjects.tikv.pd_models import (
    MalformedPayloadError,
    Store,
    parse_byte_size,
    parse_go_duration,
    parse_go_time,
    stores_from_json,
)
from operator_console.subjects.tikv.pd_regions import Operator
from operator_console.subjects.tikv.queries import TargetLabels, tikv_store_size
from tests.subjects.tikv.pd_server import PAYLOADS
from tests.subjects.tikv.wire import gojson
from tests.subjects.tikv.wire.write_payloads import write_cassettes, write_metrics


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1TiB", 2**40),
        ("1.5TiB", 3 * 2**39),
        ("612.3GiB", int(612.3 * 2**30)),
        ("0B", 0),
        ("980KiB", 980 * 1024),
        ("1.5 GB", 3 * 2**29),
        ("512m", 512 * 2**20),
        (1234, 1234),
    ],
)
def test_byte_sizes_read_as_pd_writes_them(text: str | int, size: int) -> None:
    assert parse_byte_size(text) == size


@pytest.mark.parametrize("size", [0, 1023, 1024, 2**30, 657444569088, 2**40, 3 * 2**39])
def test_byte_sizes_round_trip_within_pds_four_digits(size: int) -> None:
    written = gojson.byte_size(size)
    assert parse_byte_size(written) == pytest.approx(size, rel=5e-4)


@pytest.mark.parametrize("bad", ["1.5XiB", "", "TiB", True, [1]])
def test_a_size_that_is_no_size_is_refused(bad: object) -> None:
    with pytest.raises(MalformedPayloadError, match="size"):
        parse_byte_size(bad)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("76h11m52.705666391s", 274312.705666391),
        ("30m0s", 1800.0),
        ("350ms", 0.35),
        ("0s", 0.0),
        ("1.5µs", 1.5e-6),
        ("-2s", -2.0),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


def test_go_durations_are_written_as_time_duration_prints_them() -> None:
    from decimal import Decimal

    assert [
        gojson.go_duration(Decimal(v)) for v in ("274312.705666391", "1800", "0.35", "0", "3600")
    ] == ["76h11m52.705666391s", "30m0s", "350ms", "0s", "1h0m0s"]


@pytest.mark.parametrize("bad", ["5 minutes", "1h2", "m", 30])
def test_a_duration_that_is_not_gos_is_refused(bad: object) -> None:
    with pytest.raises(MalformedPayloadError):
        parse_go_duration(bad)


def test_go_times_keep_their_zone_and_the_zero_time_is_none() -> None:
    moment = parse_go_time("2025-06-02T09:29:52.705666391+08:00")
    assert moment is not None and moment.astimezone(UTC) == datetime(
        2025, 6, 2, 1, 29, 52, 705666, tzinfo=UTC
    )
    assert parse_go_time("0001-01-01T00:00:00Z") is None
    with pytest.raises(MalformedPayloadError):
        parse_go_time("yesterday")


def test_a_store_with_only_metapb_heartbeat_nanoseconds_still_has_a_heartbeat() -> None:
    store = Store.from_json(
        {
            "store": {"id": 9, "last_heartbeat": 1748827792705666391, "state": 1, "node_state": 2},
            "status": {"capacity": "0B"},
        }
    )
    assert store.last_heartbeat == datetime(2025, 6, 2, 1, 29, 52, 705666, tzinfo=UTC)
    assert (store.state, store.node_state, store.state_name) == ("Offline", "Removing", "Offline")
    assert store.available_ratio is None


def test_a_stores_response_that_miscounts_or_mistypes_is_refused() -> None:
    with pytest.raises(MalformedPayloadError, match="count 2 but 1 stores"):
        stores_from_json({"count": 2, "stores": [{"store": {"id": 1}}]})
    with pytest.raises(MalformedPayloadError, match=r"stores\[0\].status.leader_count"):
        stores_from_json(
            {"count": 1, "stores": [{"store": {"id": 1}, "status": {"leader_count": 1.5}}]}
        )


OPERATOR = (
    "admin-move-peer {mv peer: store [5] to [1]} (kind:admin,region, region:14(31, 5),"
    " createAt:2025-06-02 09:29:57.388000517 +0800 CST m=+273598.374223317,"
    " startAt:2025-06-02 09:29:57.391000517 +0800 CST m=+273598.377223317, currentStep:2,"
    " size:96, steps:[0:{add learner peer 21 on store 1}, 1:{promote learner peer 21 on store"
    " 1 to voter}, 2:{remove peer on store 5}], timeout:[6m0s]) finished"
)


def test_operator_strings_parse_into_their_parts() -> None:
    op = Operator.parse(OPERATOR)
    assert (op.desc, op.brief, op.kinds) == (
        "admin-move-peer",
        "mv peer: store [5] to [1]",
        ("admin", "region"),
    )
    assert (op.region_id, op.region_version, op.region_conf_ver) == (14, 31, 5)
    assert op.steps == (
        "add learner peer 21 on store 1",
        "promote learner peer 21 on store 1 to voter",
        "remove peer on store 5",
    )
    assert (op.current_step, op.timeout, op.finished, op.timed_out) == (2, "6m0s", True, False)
    with pytest.raises(MalformedPayloadError, match="not PD's operator format"):
        Operator.parse("balance-leader something else")


@pytest.mark.parametrize(
    ("status", "body", "cls", "code", "text"),
    [
        (
            404,
            b'"[PD:core:ErrStoreNotFound]store 7 not found"\n',
            StoreNotFoundError,
            "PD:core:ErrStoreNotFound",
            "[PD:core:ErrStoreNotFound]store 7 not found",
        ),
        (
            500,
            b'"[PD:operator:ErrAddOperator]failed to add operator, maybe already have one"\n',
            OperatorExistsError,
            "PD:operator:ErrAddOperator",
            "[PD:operator:ErrAddOperator]failed to add operator, maybe already have one",
        ),
        (
            400,
            b'{"code":"input","msg":"strconv.ParseUint: parsing \\"x\\": invalid syntax",'
            b'"data":{}}',
            PDInvalidInputError,
            None,
            'strconv.ParseUint: parsing "x": invalid syntax',
        ),
        (503, b"no leader\n", PDNoLeaderError, None, "no leader"),
        (
            503,
            b"[PD:apiutil:ErrRedirectNoLeader]redirect finds no leader\n",
            PDNoLeaderError,
            "PD:apiutil:ErrRedirectNoLeader",
            "[PD:apiutil:ErrRedirectNoLeader]redirect finds no leader",
        ),
        (500, b"redirect to not leader\n", PDNotLeaderError, None, "redirect to not leader"),
        (500, b"redirect failed\n", PDRedirectFailedError, None, "redirect failed"),
        (404, b"null\n", PDHTTPError, None, ""),
    ],
)
def test_pd_error_bodies_in_each_form_become_typed_errors(
    status: int, body: bytes, cls: type[PDHTTPError], code: str | None, text: str
) -> None:
    error = error_for("GET /pd/api/v1/x", status, body)
    assert type(error) is cls
    assert (error.code, error.pd_text, error.status) == (code, text, status)
    assert pd_text_of(body) == (text, code)
    assert str(error).startswith("PD GET /pd/api/v1/x: ")
    assert str(error).endswith(text or "(no message in the body)")


def test_target_labels_follow_tiup_and_tidb_operator() -> None:
    operator = TargetLabels.tidb_operator("basic", namespace="tidb")
    assert operator.tikv == 'job="tikv",cluster="basic",kubernetes_namespace="tidb"'
    assert operator.store_instance("basic-tikv-0.basic-tikv-peer.tidb.svc:20180") == (
        "basic-tikv-0"
    )
    assert TargetLabels.tiup().store_instance("10.0.1.4:20180") == "10.0.1.4:20180"
    assert tikv_store_size(TargetLabels()).promql == (
        'sum by (instance) (tikv_store_size_bytes{job="tikv",type="used"})'
    )
    with pytest.raises(ValueError):
        tikv_store_size(TargetLabels(), "free")


def test_go_floats_as_encoding_json_writes_them() -> None:
    assert [gojson.go_float(v) for v in (1.0, 0.5, 4549.0625, 1e-05, 1e21, 0.0)] == [
        "1",
        "0.5",
        "4549.0625",
        "0.00001",
        "1e+21",
        "0",
    ]
    assert gojson.indented({"a": [], "b": {}, "c": gojson.GoMap({10: 1, 2: 2})}) == (
        '{\n  "a": [],\n  "b": {},\n  "c": {\n    "10": 1,\n    "2": 2\n  }\n}\n'
    )
    assert gojson.compact({"k": "<&>"}) == '{"k":"\\u003c\\u0026\\u003e"}'


def test_the_committed_payloads_are_what_the_writer_writes(tmp_path: Path) -> None:
    write_cassettes(tmp_path)
    write_metrics(tmp_path)
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(
        p.relative_to(PAYLOADS)
        for p in PAYLOADS.rglob("*")
        if p.is_file() and p.suffix in (".json", ".prom")
    )
    assert written == committed
    _, mismatch, errors = filecmp.cmpfiles(
        tmp_path, PAYLOADS, [str(p) for p in written], shallow=False
    )
    assert mismatch == [] and errors == []


def test_every_cassette_names_its_pd_release_and_source() -> None:
    for path in sorted(PAYLOADS.glob("pd-v*/*.json")):
        data = json.loads(path.read_text())
        assert path.parent.name == f"pd-{data['pd_version']}"
        assert data["written_from"].startswith(f"tikv/pd {data['pd_version']} source")
        assert len(data["pd_commit"]) == 40
        for exchange in data["exchanges"]:
            if exchange["content_type"] == "application/octet-stream":
                assert "\n" not in exchange["body"]  # easyjson writes compact, no newline
            elif exchange["content_type"].startswith("application/json"):
                assert exchange["body"].endswith("\n")  # render.JSON's indent adds one


async def test_a_check_listing_cut_short_or_missing_store_ids_is_a_response_error() -> None:
    import httpx

    from operator_console.subjects.tikv.pd import PDClient
    from operator_console.subjects.tikv.pd_errors import PDResponseError

    region = '{"id":%d,"peers":[{"id":3,"store_id":1}],"down_peers":[{"peer":{"id":3}}]}'
    bodies = {
        "down-peer": (
            '{"count":3,"regions":[' + ",".join(region % i for i in (2, 6, 10)) + "]}"
        ).encode(),
        "miss-peer": b'{"count":1,"regions":[{"id":2,"peers":[{"id":3,"st',
    }

    def answer(request: httpx.Request) -> httpx.Response:
        kind = request.url.path.rsplit("/", 1)[1]
        return httpx.Response(
            200, content=bodies[kind], headers={"Content-Type": "application/octet-stream"}
        )

    async with PDClient("http://pd:2379", transport=httpx.MockTransport(answer)) as client:
        # Past the sample, a down peer without a store id is still caught.
        with pytest.raises(PDResponseError, match="without a store id"):
            await client.region_check("down-peer", sample=1)
        with pytest.raises(PDResponseError, match="not JSON"):
            await client.region_check("miss-peer")
