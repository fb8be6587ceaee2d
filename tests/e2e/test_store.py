"""`threadline store`: OTLP in from the upstream Python SDK, Tempo's HTTP API out, durability,
compaction, retention, tenants, and blocks in an S3-compatible bucket (moto's server)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

from harness import RawGrpcClient, free_port, wait_until, ManagedProcess
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, SpanKind, Status, StatusCode


def _provider(endpoint: str, service: str, headers=None) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service, "k8s.namespace.name": "shop"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True, headers=headers)))
    return provider


def _attrs(items) -> dict:
    out = {}
    for kv in items:
        value = kv["value"]
        out[kv["key"]] = next(iter(value.values())) if value else None
    return out


def test_sdk_spans_are_queryable_within_2s_and_read_back_field_for_field(store_factory):
    store = store_factory()
    provider = _provider(store.grpc_endpoint, "checkout")
    tracer = provider.get_tracer("e2e", "1.0")
    with tracer.start_as_current_span("GET /api/v2/orders/{orderId}", kind=SpanKind.SERVER, attributes={
        "http.request.method": "GET", "http.response.status_code": 500, "ratio": 0.5, "cached": False,
    }) as root:
        root.add_event("retry", {"attempt": 2})
        with tracer.start_as_current_span("SELECT orders", kind=SpanKind.CLIENT,
                                          links=[Link(root.get_span_context(), {"why": "test"})]) as child:
            child.set_status(Status(StatusCode.ERROR, "timeout"))
    trace_id = format(root.get_span_context().trace_id, "032x")
    acknowledged = time.monotonic()  # SimpleSpanProcessor exported both spans synchronously
    wait_until(lambda: store.get(f"/api/traces/{trace_id}")[0] == 200, 2.0, "not queryable within 2 s", interval=0.05)
    assert time.monotonic() - acknowledged < 2.0

    body = store.json(f"/api/traces/{trace_id}")
    spans = [s for b in body["batches"] for ss in b["scopeSpans"] for s in ss["spans"]]
    resource = _attrs(body["batches"][0]["resource"]["attributes"])
    assert resource["service.name"] == "checkout" and resource["k8s.namespace.name"] == "shop"
    assert body["batches"][0]["scopeSpans"][0]["scope"] == {"name": "e2e", "version": "1.0"}
    by_name = {s["name"]: s for s in spans}
    server, client = by_name["GET /api/v2/orders/{orderId}"], by_name["SELECT orders"]
    assert server["traceId"] == trace_id and server["kind"] == 2 and "parentSpanId" not in server or not server.get("parentSpanId")
    assert _attrs(server["attributes"]) == {"http.request.method": "GET", "http.response.status_code": "500", "ratio": 0.5, "cached": False}
    assert server["events"][0]["name"] == "retry" and _attrs(server["events"][0]["attributes"]) == {"attempt": "2"}
    assert client["parentSpanId"] == server["spanId"] and client["kind"] == 3
    assert client["status"] == {"code": 2, "message": "timeout"}
    assert client["links"][0]["spanId"] == server["spanId"] and _attrs(client["links"][0]["attributes"]) == {"why": "test"}
    assert int(server["endTimeUnixNano"]) > int(server["startTimeUnixNano"])

    # The same trace as protobuf (what Grafana asks for): tempopb.Trace has the layout of an
    # ExportTraceServiceRequest.
    status, raw = store.get(f"/api/traces/{trace_id}", {"Accept": "application/protobuf"})
    assert status == 200
    decoded = trace_service_pb2.ExportTraceServiceRequest.FromString(raw)
    assert sorted(s.name for rs in decoded.resource_spans for ss in rs.scope_spans for s in ss.spans) == sorted(by_name)
    v2 = store.json(f"/api/v2/traces/{trace_id}")
    assert sum(len(ss["spans"]) for rs in v2["trace"]["resourceSpans"] for ss in rs["scopeSpans"]) == 2
    provider.shutdown()


def _send_known(store, client=None):
    """Three traces with known shapes; returns their ids by role."""
    from harness import RawGrpcClient

    client = client or RawGrpcClient(store.grpc_endpoint)
    now = time.time_ns()
    ids = {}
    for role, service, duration_ms, error, method in [
        ("slow", "payments", 2500, False, "POST"),
        ("error", "orders", 20, True, "GET"),
        ("plain", "orders", 20, False, "GET"),
    ]:
        trace_id = os.urandom(16)
        ids[role] = trace_id.hex()
        request = trace_service_pb2.ExportTraceServiceRequest()
        rs = request.resource_spans.add()
        rs.resource.attributes.add(key="service.name").value.string_value = service
        scope = rs.scope_spans.add()
        root = scope.spans.add(trace_id=trace_id, span_id=os.urandom(8), name=f"{method} /api", kind=2,
                               start_time_unix_nano=now, end_time_unix_nano=now + duration_ms * 1_000_000)
        root.attributes.add(key="http.request.method").value.string_value = method
        child = scope.spans.add(trace_id=trace_id, span_id=os.urandom(8), parent_span_id=root.span_id, name="db",
                                kind=3, start_time_unix_nano=now, end_time_unix_nano=now + 5_000_000)
        child.attributes.add(key="db.rows").value.int_value = 7
        if error:
            child.status.code = 2
        client.export(request)
    client.close()
    return ids


def _search(store, **params) -> list[str]:
    body = store.json("/api/search?" + urllib.parse.urlencode(params))
    return [t["traceID"] for t in body["traces"]]


def test_search_by_traceql_tags_and_durations_and_tag_listings(store_factory):
    store = store_factory()
    ids = _send_known(store)
    assert set(_search(store, q="{ status = error }")) == {ids["error"]}
    assert set(_search(store, q='{ resource.service.name = "payments" && duration > 2s }')) == {ids["slow"]}
    assert set(_search(store, q='{ .http.request.method = "GET" } > { span.db.rows >= 7 }')) == {ids["error"], ids["plain"]}
    assert set(_search(store, q='{ } | count() = 2', limit=10)) == set(ids.values())
    assert set(_search(store, tags="service.name=orders status=error")) == {ids["error"]}
    assert set(_search(store, minDuration="2s")) == {ids["slow"]}
    assert set(_search(store, maxDuration="1s", limit=10)) == {ids["error"], ids["plain"]}
    result = store.json("/api/search?" + urllib.parse.urlencode({"q": "{ status = error } | select(span.db.rows)"}))
    span = result["traces"][0]["spanSets"][0]["spans"][0]
    # Keyed without the scope, as Tempo's Attribute.Name.
    assert {"key": "db.rows", "value": {"intValue": "7"}} in span["attributes"]
    assert result["traces"][0]["rootServiceName"] == "orders"

    assert "http.request.method" in store.json("/api/search/tags")["tagNames"]
    scopes = {s["name"]: s["tags"] for s in store.json("/api/v2/search/tags")["scopes"]}
    assert "db.rows" in scopes["span"] and "service.name" in scopes["resource"] and "status" in scopes["intrinsic"]
    assert store.json("/api/search/tag/service.name/values")["tagValues"] == ["orders", "payments"]
    typed = store.json("/api/v2/search/tag/span.db.rows/values")["tagValues"]
    assert typed == [{"type": "int", "value": "7"}]
    assert store.get("/api/echo") == (200, b"echo")
    assert "version" in store.json("/api/status/buildinfo")


def test_bad_queries_and_ids_get_4xx_with_a_message(store_factory):
    store = store_factory()
    status, body = store.get("/api/search?" + urllib.parse.urlencode({"q": "{ name = }"}))
    assert status == 400 and b"line 1, column 10" in body and b"expected a value" in body
    status, body = store.get("/api/traces/not-hex")
    assert status == 400 and b"invalid trace id" in body
    status, body = store.get("/api/traces/" + "ab" * 16)
    assert status == 404 and b"not found" in body
    status, body = store.get("/api/search?minDuration=fast")
    assert status == 400 and b"minDuration" in body
    status, body = store.get("/api/search?limit=-1")
    assert status == 400 and b"limit" in body
    status, body = store.get("/api/v2/search/tags?scope=bogus")
    assert status == 400 and b"scope" in body


def test_kill9_during_ingest_loses_no_acknowledged_span(store_factory, tmp_path):
    store = store_factory()
    client = RawGrpcClient(store.grpc_endpoint)
    acknowledged: list[str] = []
    stop = threading.Event()

    def send():
        while not stop.is_set():
            trace_id = os.urandom(16)
            request = trace_service_pb2.ExportTraceServiceRequest()
            scope = request.resource_spans.add().scope_spans.add()
            now = time.time_ns()
            for i in range(5):
                scope.spans.add(trace_id=trace_id, span_id=os.urandom(8), name=f"s{i}",
                                start_time_unix_nano=now, end_time_unix_nano=now + 1000)
            try:
                client.export(request, timeout=2)
            except Exception:  # the store died mid-request: not acknowledged
                return
            acknowledged.append(trace_id.hex())

    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(1.5)
    store.kill9()
    stop.set()
    sender.join(timeout=10)
    client.close()
    assert len(acknowledged) > 50
    store.start()
    missing = [t for t in acknowledged if store.get(f"/api/traces/{t}")[0] != 200]
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged traces lost"
    complete = [t for t in acknowledged[-20:]
                if sum(len(ss["spans"]) for b in store.json(f"/api/traces/{t}")["batches"] for ss in b["scopeSpans"]) == 5]
    assert len(complete) == 20


def _blocks(root: Path) -> list[Path]:
    """Complete blocks of one tenant directory."""
    return sorted(p.parent for p in root.glob("*/meta.json"))


def test_compaction_and_retention_on_real_files(store_factory):
    store = store_factory(sets=[
        "ingester::max_block_duration=1s",
        "compactor::compaction::compaction_cycle=1s",
        "compactor::compaction::block_retention=1h",
    ])
    client = RawGrpcClient(store.grpc_endpoint)
    old = time.time_ns() - 2 * 3600 * 10**9
    old_id = os.urandom(16)
    request = trace_service_pb2.ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.add(
        trace_id=old_id, span_id=os.urandom(8), name="old", start_time_unix_nano=old, end_time_unix_nano=old + 1000)
    client.export(request)
    blocks_root = store.data_dir / "blocks" / "single-tenant"
    # Retention works on whole blocks (by their newest span): the old trace gets its own block.
    wait_until(lambda: len(_blocks(blocks_root)) >= 1, 10, "no block was cut", interval=0.1)
    recent = []
    for _ in range(4):  # one block per second
        ids = _send_known(store, RawGrpcClient(store.grpc_endpoint))
        recent.extend(ids.values())
        time.sleep(1.2)
    client.close()

    def compacted() -> bool:
        metas = [json.loads((b / "meta.json").read_text()) for b in _blocks(blocks_root)]
        return len(metas) == 1 and metas[0]["compaction_level"] >= 1
    wait_until(compacted, 20, lambda: f"blocks: {[b.name for b in _blocks(blocks_root)]}", interval=0.5)
    assert store.get(f"/api/traces/{old_id.hex()}")[0] == 404, "the 2 h old trace outlived a 1 h retention"
    for trace_id in recent:
        assert store.get(f"/api/traces/{trace_id}")[0] == 200
    assert not list((store.data_dir / "blocks").glob("*/*/data.tmp*"))


def test_tenants_never_see_each_others_traces(store_factory):
    store = store_factory(sets=["multitenancy_enabled=true"])
    ids = {}
    for tenant in ["team-a", "team-b"]:
        provider = _provider(store.grpc_endpoint, f"svc-{tenant}", headers={"x-scope-orgid": tenant})
        with provider.get_tracer("e2e").start_as_current_span(f"work {tenant}") as span:
            ids[tenant] = format(span.get_span_context().trace_id, "032x")
        provider.shutdown()
    a, b = {"X-Scope-OrgID": "team-a"}, {"X-Scope-OrgID": "team-b"}
    assert store.get(f"/api/traces/{ids['team-a']}", a)[0] == 200
    assert store.get(f"/api/traces/{ids['team-a']}", b)[0] == 404
    found_b = [t["traceID"] for t in store.json("/api/search?limit=50", b)["traces"]]
    assert found_b == [ids["team-b"]]
    status, body = store.get("/api/search")
    assert status == 401 and b"X-Scope-OrgID" in body
    # Ingest without a tenant is refused, not stored anonymously.
    client = RawGrpcClient(store.grpc_endpoint)
    request = trace_service_pb2.ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.add(trace_id=os.urandom(16), span_id=os.urandom(8), name="x")
    try:
        client.export(request)
        raise AssertionError("accepted a request without X-Scope-OrgID")
    except Exception as err:  # grpc.RpcError
        assert "org id" in str(err)
    finally:
        client.close()


def test_blocks_in_an_s3_bucket_are_shared_by_an_ingester_and_a_querier(store_factory, process_factory, tmp_path):
    port = free_port()
    moto = process_factory("moto", [str(Path(os.sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                           ready_url=f"http://127.0.0.1:{port}/moto-api/")
    moto.start(timeout=60)
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/traces", method="PUT"), timeout=10).read()
    s3 = [
        "storage::trace::backend=s3",
        "storage::trace::s3::bucket=traces",
        f"storage::trace::s3::endpoint=127.0.0.1:{port}",
        "storage::trace::s3::insecure=true",
        "storage::trace::s3::access_key=test",
        "storage::trace::s3::secret_key=test",
        "storage::trace::s3::prefix=threadline",
        "ingester::max_block_duration=1s",
        "compactor::compaction::compaction_cycle=1s",
    ]
    ingester = store_factory(name="ingester", sets=[*s3, "target=ingester"])
    querier = store_factory(name="querier", sets=[*s3, "target=querier"])
    ids = _send_known(ingester)
    wait_until(lambda: querier.get(f"/api/traces/{ids['slow']}")[0] == 200, 20, "the querier never saw the ingester's block")
    assert set(_search(querier, q="{ status = error }")) == {ids["error"]}
    listing = urllib.request.urlopen(f"http://127.0.0.1:{port}/traces?list-type=2&prefix=threadline/", timeout=10).read().decode()
    assert "single-tenant/" in listing and "meta.json" in listing and "/data" in listing
    assert not (ingester.data_dir / "blocks").exists() or not list((ingester.data_dir / "blocks").rglob("meta.json"))
