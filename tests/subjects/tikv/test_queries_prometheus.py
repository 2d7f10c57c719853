"""The PromQL of queries.py and the Prometheus client, run in a real Prometheus.

Prometheus 2.42 (Debian's) scrapes, once a second, doubles serving /metrics captures
written to TiKV's and PD's exposition formats from their metric definitions (TiKV and
PD cannot run here); every number asserted is derived from those capture files.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from operator_console.subjects.tikv import queries
from operator_console.subjects.tikv.prometheus import (
    Matrix,
    PrometheusClient,
    PrometheusQueryError,
    PrometheusResponseError,
    PrometheusUnavailableError,
    Scalar,
    String,
    Vector,
)
from operator_console.subjects.tikv.queries import TargetLabels
from tests.subjects.tikv import expected_metrics as expected
from tests.subjects.tikv.pd_server import MetricsDouble, PDDouble
from tests.subjects.tikv.prometheus_harness import (
    WINDOW_S,
    RunningPrometheus,
    prometheus_binary,
    start_prometheus,
    wait_for_window,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(
        prometheus_binary() is None,
        reason="no prometheus binary at /usr/bin/prometheus (apt-get install prometheus)",
    ),
]

SETS = (
    "healthy",
    "healthy-v7.5",
    "store-disconnected",
    "store-down",
    "pd-member-down",
    "store-disk-85",
)
WINDOW = f"{WINDOW_S}s"
REL = 1e-9


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def prom(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningPrometheus]:
    doubles = [MetricsDouble(name).start() for name in SETS]
    running = None
    try:
        running = await start_prometheus(Path(tmp_path_factory.mktemp("prometheus")), doubles)
        await wait_for_window(running)
        yield running
    finally:
        if running is not None:
            await running.supervisor.stop_all()
        for double in doubles:
            double.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def client(prom: RunningPrometheus) -> AsyncIterator[PrometheusClient]:
    async with PrometheusClient(prom.url) as c:
        yield c


def labels(set_name: str) -> TargetLabels:
    return TargetLabels.tiup(f'cluster="{set_name}"')


def metrics(prom: RunningPrometheus, set_name: str) -> MetricsDouble:
    return next(m for m in prom.sets if m.set_name == set_name)


async def by_instance(
    client: PrometheusClient, prom: RunningPrometheus, query: queries.Query
) -> dict[str, float]:
    return (await client.vector(query.promql, at=prom.eval_time)).by(query.by)


@pytest.mark.parametrize("set_name", ["healthy", "healthy-v7.5"])
async def test_qps_per_store_is_the_recorded_grpc_rate_without_gc(
    client: PrometheusClient, prom: RunningPrometheus, set_name: str
) -> None:
    got = await by_instance(client, prom, queries.tikv_qps(labels(set_name), WINDOW))
    m = metrics(prom, set_name)
    want = {f"{n}:20180": expected.qps(m, n) for n in ("tikv-0", "tikv-1", "tikv-2")}
    assert want == {"tikv-0:20180": 900, "tikv-1:20180": 800, "tikv-2:20180": 1000}
    assert got.keys() == want.keys()
    for instance, value in want.items():
        assert got[instance] == pytest.approx(value, rel=REL)


@pytest.mark.parametrize("set_name", ["healthy", "healthy-v7.5"])
async def test_grpc_p99_per_instance_matches_the_recorded_buckets(
    client: PrometheusClient, prom: RunningPrometheus, set_name: str
) -> None:
    got = await by_instance(client, prom, queries.tikv_grpc_p99(labels(set_name), WINDOW))
    m = metrics(prom, set_name)
    for name in ("tikv-0", "tikv-1", "tikv-2"):
        want = expected.bucket_quantile(
            m, name, "tikv_grpc_msg_duration_seconds", keep=lambda lb: lb["type"] != "kv_gc"
        )
        assert got[f"{name}:20180"] == pytest.approx(want, rel=REL)
        # GC requests (0.4 s, background) are left out, as TiKV's dashboard does.
        with_gc = expected.bucket_quantile(m, name, "tikv_grpc_msg_duration_seconds")
        assert with_gc != pytest.approx(want, rel=1e-3)
    # tikv-2's recorded latencies sit two buckets higher.
    assert got["tikv-2:20180"] > 2 * got["tikv-0:20180"]


async def test_raftstore_apply_and_append_p99_match_the_recorded_buckets(
    client: PrometheusClient, prom: RunningPrometheus
) -> None:
    t = labels("healthy")
    m = metrics(prom, "healthy")
    for query, histogram in (
        (queries.tikv_apply_log_p99(t, WINDOW), "tikv_raftstore_apply_log_duration_seconds"),
        (queries.tikv_append_log_p99(t, WINDOW), "tikv_raftstore_append_log_duration_seconds"),
    ):
        got = await by_instance(client, prom, query)
        for name in ("tikv-0", "tikv-1", "tikv-2"):
            want = expected.bucket_quantile(m, name, histogram)
            assert got[f"{name}:20180"] == pytest.approx(want, rel=REL), query.name
    append = await by_instance(client, prom, queries.tikv_append_log_p99(t, WINDOW))
    assert append["tikv-2:20180"] > append["tikv-0:20180"]


async def test_store_size_and_available_ratio_show_the_store_at_85_percent(
    client: PrometheusClient, prom: RunningPrometheus
) -> None:
    t = labels("store-disk-85")
    m = metrics(prom, "store-disk-85")
    for kind in ("capacity", "available", "used"):
        got = await by_instance(client, prom, queries.tikv_store_size(t, kind))
        for name in ("tikv-0", "tikv-1", "tikv-2"):
            want = expected.value_at(m, name, "tikv_store_size_bytes", {"type": kind}, 0)
            assert got[f"{name}:20180"] == want
    ratio = await by_instance(client, prom, queries.tikv_available_ratio(t))
    assert ratio["tikv-1:20180"] == pytest.approx(0.15, rel=1e-9)
    assert ratio["tikv-0:20180"] == pytest.approx(657444569088 / 2**40, rel=1e-12)


async def test_region_health_reads_the_leaders_counts_not_the_followers_zeros(
    client: PrometheusClient, prom: RunningPrometheus
) -> None:
    got = await by_instance(client, prom, queries.pd_region_health(labels("store-down")))
    assert got["miss-peer-region-count"] == 3
    assert got["down-peer-region-count"] == 45
    assert got["pending-peer-region-count"] == 20
    assert got["offline-peer-region-count"] == 0
    healthy = await by_instance(client, prom, queries.pd_region_health(labels("healthy")))
    assert set(healthy.values()) == {0.0} and len(healthy) == 10


@pytest.mark.parametrize(
    ("set_name", "want"),
    [
        ("healthy", {"store_up_count": 3}),
        ("healthy-v7.5", {"store_up_count": 3}),  # v7.5 writes one total per type
        ("store-disconnected", {"store_up_count": 2, "store_disconnected_count": 1}),
        ("store-down", {"store_up_count": 2, "store_down_count": 1}),
        ("store-disk-85", {"store_up_count": 3, "store_low_space_count": 1}),
    ],
)
async def test_store_states_count_as_pd_classifies_them(
    client: PrometheusClient, prom: RunningPrometheus, set_name: str, want: dict[str, int]
) -> None:
    got = await by_instance(client, prom, queries.pd_store_states(labels(set_name)))
    nonzero = {k: v for k, v in got.items() if v and k != "store_serving_count"}
    assert nonzero == want


@pytest.mark.parametrize(
    ("set_name", "down"),
    [("healthy", set()), ("store-down", {"tikv-2:20180"}), ("pd-member-down", {"pd-2:2379"})],
)
async def test_targets_up_shows_the_dead_process(
    client: PrometheusClient, prom: RunningPrometheus, set_name: str, down: set[str]
) -> None:
    got = await by_instance(client, prom, queries.targets_up(labels(set_name)))
    assert len(got) == 6
    assert {k for k, v in got.items() if v == 0} == down


async def test_pd_leader_is_the_member_that_says_so(
    client: PrometheusClient, prom: RunningPrometheus
) -> None:
    got = await by_instance(client, prom, queries.pd_leader(labels("pd-member-down")))
    assert got == {"pd-0:2379": 1.0}


@pytest.mark.parametrize("set_name", SETS)
async def test_every_standard_query_runs_and_answers_per_target(
    client: PrometheusClient, prom: RunningPrometheus, set_name: str
) -> None:
    live_tikv = {t.instance for t in metrics(prom, set_name).targets if t.up and t.job == "tikv"}
    for query in queries.standard_queries(labels(set_name), WINDOW):
        result = await client.vector(query.promql, at=prom.eval_time)
        assert len(result) > 0, query.name
        assert not any(math.isnan(s.value) for s in result), query.name
        if query.by == "instance" and query.name.startswith("tikv_"):
            assert set(result.by("instance")) == live_tikv, query.name


async def test_labels_of_another_cluster_select_nothing(
    client: PrometheusClient, prom: RunningPrometheus
) -> None:
    result = await client.vector(
        queries.tikv_qps(labels("no-such-cluster"), WINDOW).promql, at=prom.eval_time
    )
    assert len(result) == 0


# ------------------------------------------------------------------ the client itself


async def test_range_query_gives_a_matrix_of_the_recorded_line(
    client: PrometheusClient, prom: RunningPrometheus
) -> None:
    series = 'process_cpu_seconds_total{job="tikv",cluster="healthy",instance="tikv-0:20180"}'
    matrix = await client.query_range(series, start=prom.eval_time - 4, end=prom.eval_time, step=1)
    assert isinstance(matrix, Matrix) and len(matrix) == 1
    points = matrix.series[0].points
    assert [ts for ts, _ in points] == [prom.eval_time - 4 + i for i in range(5)]
    slope = (points[-1][1] - points[0][1]) / 4
    assert slope == pytest.approx(2.0)  # the captures' CPU seconds grow 2 per second


async def test_scalar_and_string_results_are_typed(client: PrometheusClient) -> None:
    scalar = await client.query("scalar(vector(42))", at=1_750_000_000)
    assert isinstance(scalar, Scalar) and scalar.value == 42.0
    assert scalar.timestamp == 1_750_000_000
    string = await client.query('"tikv"', at=1_750_000_000)
    assert isinstance(string, String) and string.value == "tikv"
    nan = await client.vector("vector(0) / 0")
    assert isinstance(nan, Vector) and math.isnan(nan.samples[0].value)


async def test_a_bad_query_raises_with_prometheus_error_type(client: PrometheusClient) -> None:
    with pytest.raises(PrometheusQueryError) as caught:
        await client.query("sum by (instance (up)")
    assert caught.value.error_type == "bad_data"
    assert caught.value.status == 400
    assert "sum by (instance (up)" in str(caught.value) and "bad_data" in str(caught.value)


async def test_an_unreachable_prometheus_names_the_url() -> None:
    from operator_console.lab.ports import free_port

    url = f"http://127.0.0.1:{free_port()}"
    async with PrometheusClient(url, timeout=2) as c:
        with pytest.raises(PrometheusUnavailableError, match=url):
            await c.query("up")


async def test_an_endpoint_that_is_not_prometheus_is_named_as_such() -> None:
    with PDDouble() as pd:
        async with PrometheusClient(pd.url) as c:
            with pytest.raises(PrometheusResponseError, match="not its API's JSON"):
                await c.query("up")
