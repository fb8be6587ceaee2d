"""Tempo's gRPC streaming API (`tempopb.StreamingQuerier`) on the store's HTTP port, called as
Grafana's Tempo data source calls it: an insecure (HTTP/2 cleartext) channel to the HTTP port,
the tenant as `x-scope-orgid` metadata (grafana/grafana 08602cc `pkg/tsdb/tempo/grpc.go`,
05bee9a `search_stream.go`, 0809124 `metrics_stream.go`), with a client generated here by
grpcio-tools from the repository's own `crates/store/proto/tempo_streaming.proto` (Tempo's
`tempopb` package, service and field numbers, grafana/tempo ad33aa8). Every answer is checked
against what the upstream Python SDK sent; Search must stream partial messages as blocks are read
(Tempo's combiner: the traces new since the last message, then the whole answer)."""

from __future__ import annotations

import time
from collections import Counter

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

import tempopb_client
from harness import wait_until

TENANT = "team-a"
# Grafana's metadata: the tenant (from the data source's custom headers) and its user agent.
METADATA = [("x-scope-orgid", TENANT), ("x-grafana-test", "grpc-streaming")]
ROUNDS = 3
PER_ROUND = 4
NS = 1_000_000_000


@pytest.fixture(scope="module")
def pb(tmp_path_factory):
    """tempo_streaming_pb2 and _pb2_grpc, generated from the repository's proto."""
    return tempopb_client.generate(tmp_path_factory.mktemp("tempopb"))


def _send_round(store, round_no: int) -> list[dict]:
    """PER_ROUND traces: a `checkout` server span with a `payments` client child, errors on some."""
    sent = []
    providers = {
        service: TracerProvider(resource=Resource.create({"service.name": service}))
        for service in ("checkout", "payments")
    }
    for provider in providers.values():
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(
            endpoint=store.grpc_endpoint, insecure=True, headers={"x-scope-orgid": TENANT})))
    checkout = providers["checkout"].get_tracer("e2e.grpc")
    payments = providers["payments"].get_tracer("e2e.grpc")
    for n in range(PER_ROUND):
        start = time.time_ns() - 2 * NS
        duration = (10 + 7 * n + 3 * round_no) * 1_000_000
        error = n % 2 == 1
        route = f"/cart/{round_no}/{n}"
        root = checkout.start_span(f"GET /cart/{round_no}", kind=SpanKind.SERVER, start_time=start,
                                   attributes={"http.route": route, "round": round_no})
        ctx = set_span_in_context(root)
        child = payments.start_span("charge", context=ctx, kind=SpanKind.CLIENT, start_time=start + 1_000_000,
                                    attributes={"payment.method": "card" if n % 2 == 0 else "wallet"})
        if error:
            child.set_status(Status(StatusCode.ERROR, "declined"))
        child.end(end_time=start + duration - 1_000_000)
        root.end(end_time=start + duration)
        sent.append({"trace_id": format(root.get_span_context().trace_id, "032x"), "name": f"GET /cart/{round_no}",
                     "route": route, "duration_ms": duration // 1_000_000, "error": error,
                     "method": "card" if n % 2 == 0 else "wallet"})
    for provider in providers.values():
        provider.shutdown()
    return sent


def _blocks(store) -> int:
    return len(list((store.data_dir / "blocks" / TENANT).glob("*/meta.json")))


def _ids(traces) -> list[str]:
    return sorted(t.traceID for t in traces)


def test_every_streaming_rpc_answers_grafana_over_h2c_on_the_http_port(store_factory, pb):
    messages, service = pb
    # Blocks cut every second and never merged during the test: Search reads several blocks.
    store = store_factory(sets=["multitenancy_enabled=true", "ingester::max_block_duration=1s",
                                "compactor::compaction::compaction_cycle=1h"])
    sent = []
    for round_no in range(ROUNDS):
        sent += _send_round(store, round_no)
        wait_until(lambda: _blocks(store) >= round_no + 1, 15, f"round {round_no} was not cut into a block")
    headers = {"X-Scope-OrgID": TENANT}
    wait_until(lambda: len(store.json("/api/search?limit=100", headers)["traces"]) == len(sent), 10,
               "not every trace became searchable over HTTP")
    # Each round is one block, unless a cut fell in the middle of one (a slow machine).
    blocks = _blocks(store)
    assert blocks >= ROUNDS
    now_s = int(time.time())

    with grpc.insecure_channel(f"127.0.0.1:{store.http_port}") as channel:
        stub = service.StreamingQuerierStub(channel)

        # Search: partial messages as the blocks are read, then the whole answer.
        request = messages.SearchRequest(Query='{ resource.service.name = "checkout" }', Limit=100,
                                         SpansPerSpanSet=5, start=now_s - 3600, end=now_s + 60)
        stream = list(stub.Search(request, metadata=METADATA, timeout=30))
        assert len(stream) > 1, "Search sent one message for three blocks"
        *partial, last = stream
        with_traces = [m for m in partial if m.traces]
        assert len(with_traces) == blocks, [len(m.traces) for m in partial]
        streamed = [t for m in partial for t in m.traces]
        assert Counter(t.traceID for t in streamed) == Counter(s["trace_id"] for s in sent), "each trace once"
        assert _ids(last.traces) == sorted(s["trace_id"] for s in sent)
        progress = [(m.metrics.completedJobs, m.metrics.totalJobs) for m in stream]
        assert progress == sorted(progress) and progress[-1] == (blocks + 1, blocks + 1), progress
        assert last.metrics.totalBlocks == blocks and last.metrics.inspectedTraces == len(sent)
        assert last.metrics.totalBlockBytes > 0 and last.metrics.inspectedBytes > 0
        by_id = {t.traceID: t for t in last.traces}
        for s in sent:
            t = by_id[s["trace_id"]]
            assert (t.rootServiceName, t.rootTraceName, t.durationMs) == ("checkout", s["name"], s["duration_ms"])
            assert t.spanSets[0].matched == 1 and t.spanSet.matched == 1
            assert t.spanSets[0].spans[0].name == s["name"]
            assert t.spanSets[0].spans[0].durationNanos == s["duration_ms"] * 1_000_000
            assert {k: (v.spanCount, v.errorCount) for k, v in t.serviceStats.items()} == {
                "checkout": (1, 0), "payments": (1, 1 if s["error"] else 0)}
        # The HTTP search on the same port answers the same traces.
        http = store.json(f"/api/search?limit=100&q=%7B%20resource.service.name%20%3D%20%22checkout%22%20%7D"
                          f"&start={now_s - 3600}&end={now_s + 60}", headers)
        assert sorted(t["traceID"] for t in http["traces"]) == _ids(last.traces)

        # A TraceQL selection with the span's attributes.
        errors = list(stub.Search(messages.SearchRequest(Query="{ status = error }", Limit=100),
                                  metadata=METADATA, timeout=30))
        assert _ids(errors[-1].traces) == sorted(s["trace_id"] for s in sent if s["error"])

        # Tags.
        tags = list(stub.SearchTags(messages.SearchTagsRequest(), metadata=METADATA, timeout=30))
        assert {"http.route", "round", "payment.method", "service.name"} <= set(tags[-1].tagNames)
        scopes = list(stub.SearchTagsV2(messages.SearchTagsRequest(), metadata=METADATA, timeout=30))
        by_scope = {s.name: set(s.tags) for s in scopes[-1].scopes}
        assert {"http.route", "round", "payment.method"} <= by_scope["span"]
        assert "service.name" in by_scope["resource"]
        assert "http.route" not in by_scope["resource"]
        values = list(stub.SearchTagValues(messages.SearchTagValuesRequest(tagName="http.route"),
                                           metadata=METADATA, timeout=30))
        assert sorted(values[-1].tagValues) == sorted(s["route"] for s in sent)
        values = list(stub.SearchTagValuesV2(messages.SearchTagValuesRequest(tagName="span.payment.method"),
                                             metadata=METADATA, timeout=30))
        assert sorted((v.type, v.value) for v in values[-1].tagValues) == [("string", "card"), ("string", "wallet")]
        values = list(stub.SearchTagValuesV2(messages.SearchTagValuesRequest(tagName="resource.service.name"),
                                             metadata=METADATA, timeout=30))
        assert sorted(v.value for v in values[-1].tagValues) == ["checkout", "payments"]

        # Metrics, nanosecond bounds and step as Grafana sends them.
        now_ns = time.time_ns()
        rng = list(stub.MetricsQueryRange(messages.QueryRangeRequest(
            query="{ } | count_over_time() by (resource.service.name)", start=now_ns - 3600 * NS,
            end=now_ns + 60 * NS, step=60 * NS), metadata=METADATA, timeout=30))
        counts = {}
        for series in rng[-1].series:
            label = next(l for l in series.labels if l.key == "resource.service.name")
            counts[label.value.string_value] = sum(p.value for p in series.samples if p.value == p.value)
        assert counts == {"checkout": len(sent), "payments": len(sent)}
        assert rng[-1].metrics.completedJobs == rng[-1].metrics.totalJobs == blocks + 1
        assert all(not m.series for m in rng[:-1]), "a partial metrics message held series"
        instant = list(stub.MetricsQueryInstant(messages.QueryInstantRequest(
            query="{ status = error } | count_over_time()", start=now_ns - 3600 * NS, end=now_ns + 60 * NS),
            metadata=METADATA, timeout=30))
        assert [s.value for s in instant[-1].series] == [sum(s["error"] for s in sent)]

        # Errors as gRPC statuses.
        with pytest.raises(grpc.RpcError) as bad:
            list(stub.Search(messages.SearchRequest(Query="{ span.a = }"), metadata=METADATA, timeout=30))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as anonymous:
            list(stub.SearchTags(messages.SearchTagsRequest(), timeout=30))
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as unknown:
            list(stub.MetricsQueryRange(messages.QueryRangeRequest(query="{ } | rate()"),
                                        metadata=[("x-scope-orgid", "nobody")], timeout=30))
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

    # HTTP/1.1 on the same port still answers.
    assert store.get("/api/echo") == (200, b"echo")
