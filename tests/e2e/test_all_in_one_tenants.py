"""`threadline all-in-one --store-set multitenancy_enabled=true`: the tenant of each request
(`X-Scope-OrgID`, sent by the upstream Python SDK over gRPC and HTTP) survives memory_limiter,
tail_sampling and batch to the store, and each tenant reads back only its own traces, even for a
trace id that both tenants used."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

from harness import LOOPBACK, free_port, require_binary, run_threadline, wait_until
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import SpanKind, Status, StatusCode

TENANTS = ("acme", "globex")
# Both tenants send a trace with this id: they must stay two traces.
SHARED_TRACE_ID = int("5ca1ab1e" * 4, 16)


class _FirstTraceIdShared(RandomIdGenerator):
    """The first trace gets SHARED_TRACE_ID, later ones random ids."""

    def __init__(self):
        self.first = True

    def generate_trace_id(self) -> int:
        if self.first:
            self.first = False
            return SHARED_TRACE_ID
        return super().generate_trace_id()


def _start_all_in_one(process_factory, tmp_path, extra=()):
    grpc, http, api, health, metrics = (free_port() for _ in range(5))
    aio = process_factory("all-in-one", [
        str(require_binary()), "all-in-one", "--data", str(tmp_path / "data"),
        "--set", f"receivers::otlp::protocols::grpc::endpoint={LOOPBACK}:{grpc}",
        "--set", f"receivers::otlp::protocols::http::endpoint={LOOPBACK}:{http}",
        "--set", f"extensions::health_check::endpoint={LOOPBACK}:{health}",
        "--set", f"service::telemetry::metrics::address={LOOPBACK}:{metrics}",
        "--set", "processors::tail_sampling::decision_wait=1s",
        "--store-set", "multitenancy_enabled=true",
        "--store-set", f"server::http_listen_port={api}",
        *extra,
    ], ready_url=f"http://{LOOPBACK}:{api}/ready", ready_ports=[grpc, http])
    aio.start()
    return aio, grpc, http, f"http://{LOOPBACK}:{api}"


def _send(tenant: str, protocol: str, grpc: int, http: int, traces: int) -> list[str]:
    """`traces` error traces (kept by the errors policy) of service `{tenant}-{protocol}`; the
    gRPC sender's first trace has the shared id."""
    if protocol == "grpc":
        # gRPC metadata keys are lower-case on the wire (grpcio refuses others).
        exporter = GrpcExporter(endpoint=f"{LOOPBACK}:{grpc}", insecure=True, headers={"x-scope-orgid": tenant})
    else:
        exporter = HttpExporter(endpoint=f"http://{LOOPBACK}:{http}/v1/traces", headers={"X-Scope-OrgID": tenant})
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"{tenant}-{protocol}"}),
        id_generator=_FirstTraceIdShared() if protocol == "grpc" else RandomIdGenerator(),
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("e2e.tenants")
    ids = []
    for i in range(traces):
        with tracer.start_as_current_span(f"{tenant} request {i}", kind=SpanKind.SERVER) as root:
            with tracer.start_as_current_span("charge card", kind=SpanKind.CLIENT) as child:
                child.set_status(Status(StatusCode.ERROR, "card declined"))
        ids.append(format(root.get_span_context().trace_id, "032x"))
    provider.shutdown()
    return ids


def _get(url: str, tenant: str | None) -> tuple[int, dict | None]:
    request = urllib.request.Request(url, headers={"X-Scope-OrgID": tenant} if tenant else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, None


def _services(trace: dict) -> list[str]:
    names = []
    for batch in trace["batches"]:
        for kv in batch["resource"]["attributes"]:
            if kv["key"] == "service.name":
                names.append(kv["value"]["stringValue"])
    return names


def test_two_tenants_through_all_in_one_read_back_in_isolation(process_factory, tmp_path):
    aio, grpc, http, api = _start_all_in_one(process_factory, tmp_path)
    sent: dict[str, list[str]] = {}
    for tenant in TENANTS:
        sent[tenant] = _send(tenant, "grpc", grpc, http, 3) + _send(tenant, "http", grpc, http, 3)
    shared = format(SHARED_TRACE_ID, "032x")
    assert all(shared in ids for ids in sent.values())

    def stored(tenant: str) -> set[str]:
        result = run_threadline(["search", "{ }", "--api", api, "--org-id", tenant, "--limit", "100"])
        assert result.returncode == 0, result.stderr
        return {line[:32] for line in result.stdout.splitlines()[1:] if re.match(r"[0-9a-f]{32} ", line)}

    for tenant in TENANTS:
        wait_until(lambda: stored(tenant) >= set(sent[tenant]), 30,
                   lambda: f"{tenant}: stored {stored(tenant)}, sent {sent[tenant]}", interval=0.5)
        # Exactly its own traces: nothing of the other tenant, nothing under a wrong tenant.
        assert stored(tenant) == set(sent[tenant]), tenant

    for tenant, other in (TENANTS, TENANTS[::-1]):
        for trace_id in sent[tenant]:
            status, trace = _get(f"{api}/api/traces/{trace_id}", tenant)
            assert status == 200, (tenant, trace_id, status)
            services = _services(trace)
            assert services and all(s.startswith(f"{tenant}-") for s in services), (tenant, services)
            spans = sum(len(s["spans"]) for b in trace["batches"] for s in b["scopeSpans"])
            assert spans == 2, (tenant, trace_id, spans)
            if trace_id != shared:
                assert _get(f"{api}/api/traces/{trace_id}", other)[0] == 404, (other, trace_id)

    # The shared id is two traces: each tenant sees its own 2 spans, never the other's.
    for tenant in TENANTS:
        _, trace = _get(f"{api}/api/traces/{shared}", tenant)
        assert set(_services(trace)) == {f"{tenant}-grpc"}

    # A tenant with nothing stored is told so.
    nobody = run_threadline(["search", "{ }", "--api", api, "--org-id", "nobody"])
    assert nobody.returncode == 0, nobody.stderr
    assert nobody.stdout.splitlines()[0] == f'no traces match: {api} holds no traces for tenant "nobody" yet', \
        nobody.stdout

    # Without a tenant the API refuses, as Tempo's.
    assert _get(f"{api}/api/search", None)[0] == 401
    assert "no org id" not in aio.all_output_text()


def test_all_in_one_refuses_a_user_pipeline_that_would_lose_the_tenant(tmp_path):
    config = tmp_path / "pipeline.yaml"
    grpc, http = free_port(), free_port()
    config.write_text(
        "receivers:\n"
        f"  otlp: {{protocols: {{grpc: {{endpoint: '{LOOPBACK}:{grpc}', include_metadata: true}},"
        f" http: {{endpoint: '{LOOPBACK}:{http}'}}}}}}\n"
        "processors:\n"
        "  batch: {timeout: 1s}\n"
        "exporters:\n"
        "  store: {}\n"
        "service:\n"
        "  pipelines:\n"
        "    traces: {receivers: [otlp], processors: [batch], exporters: [store]}\n"
    )
    result = run_threadline([
        "all-in-one", "--config", str(config), "--data", str(tmp_path / "data"),
        "--store-set", "multitenancy_enabled=true",
        "--store-set", f"server::http_listen_port={free_port()}",
    ], timeout=30)
    assert result.returncode != 0
    assert "receivers::otlp::protocols::http::include_metadata" in result.stderr, result.stderr
    assert "processors::batch::metadata_keys" in result.stderr, result.stderr
    assert "protocols::grpc::include_metadata" not in result.stderr, result.stderr


def test_a_user_pipeline_that_keeps_the_tenant_runs(process_factory, tmp_path):
    grpc, http, api = free_port(), free_port(), free_port()
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        "receivers:\n"
        f"  otlp: {{protocols: {{grpc: {{endpoint: '{LOOPBACK}:{grpc}', include_metadata: true}}}}}}\n"
        "processors:\n"
        "  batch: {timeout: 200ms, metadata_keys: [x-scope-orgid]}\n"
        "exporters:\n"
        "  store: {}\n"
        "service:\n"
        "  pipelines:\n"
        "    traces: {receivers: [otlp], processors: [batch], exporters: [store]}\n"
    )
    aio = process_factory("all-in-one-user", [
        str(require_binary()), "all-in-one", "--config", str(config), "--data", str(tmp_path / "data"),
        "--store-set", "multitenancy_enabled=true", "--store-set", f"server::http_listen_port={api}",
    ], ready_url=f"http://{LOOPBACK}:{api}/ready", ready_ports=[grpc])
    aio.start()
    ids = _send("initech", "grpc", grpc, 0, 2)
    api_url = f"http://{LOOPBACK}:{api}"
    wait_until(lambda: all(_get(f"{api_url}/api/traces/{i}", "initech")[0] == 200 for i in ids), 20,
               lambda: "initech's traces never arrived", interval=0.3)
    assert _get(f"{api_url}/api/traces/{ids[1]}", "acme")[0] == 404


def test_all_in_one_with_the_stores_auth_maps_each_token_to_its_tenant_on_ingest_and_query(
        process_factory, tmp_path):
    """`--store-set auth=...`: the collector's receivers refuse requests without a credential
    (gRPC UNAUTHENTICATED, HTTP 401) and store each request as its credential's tenant, through
    tail_sampling and batch; the API answers each token with its own tenant's traces only."""
    import grpc as grpc_lib
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
    from opentelemetry.sdk.trace.export import SpanExportResult
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    aio, grpc, http, api = _start_all_in_one(process_factory, tmp_path, extra=[
        "--store-set", "auth={bearer_tokens: [{token: token-a, tenant: acme}, {token: token-g, tenant: globex}]}",
    ])

    def spans(service: str):
        memory = InMemorySpanExporter()
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(SimpleSpanProcessor(memory))
        with provider.get_tracer("e2e.aio-auth").start_as_current_span("request") as span:
            span.set_status(Status(StatusCode.ERROR, "kept by the errors policy"))
        provider.shutdown()
        return memory.get_finished_spans()

    def hex_id(finished) -> str:
        return format(finished[0].get_span_context().trace_id, "032x")

    acme, globex = spans("acme-svc"), spans("globex-svc")
    sent = GrpcExporter(endpoint=f"{LOOPBACK}:{grpc}", insecure=True, headers={"authorization": "Bearer token-a"})
    assert sent.export(acme) == SpanExportResult.SUCCESS
    sent = HttpExporter(endpoint=f"http://{LOOPBACK}:{http}/v1/traces", headers={"Authorization": "Bearer token-g"})
    assert sent.export(globex) == SpanExportResult.SUCCESS

    # No credential, or a tenant header without one: refused before anything is stored.
    with grpc_lib.insecure_channel(f"{LOOPBACK}:{grpc}") as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        try:
            stub.Export(encode_spans(spans("anonymous")), timeout=10, metadata=[("x-scope-orgid", "acme")])
            raise AssertionError("an unauthenticated export was accepted")
        except grpc_lib.RpcError as err:
            assert err.code() == grpc_lib.StatusCode.UNAUTHENTICATED, err
    request = urllib.request.Request(f"http://{LOOPBACK}:{http}/v1/traces", method="POST",
                                     data=encode_spans(spans("anonymous-http")).SerializeToString(),
                                     headers={"Content-Type": "application/x-protobuf", "X-Scope-OrgID": "acme"})
    try:
        urllib.request.urlopen(request, timeout=10)
        raise AssertionError("an unauthenticated HTTP export was accepted")
    except urllib.error.HTTPError as err:
        assert err.code == 401, err

    def get(path: str, token: str | None) -> tuple[int, dict | None]:
        request = urllib.request.Request(f"{api}{path}", headers={"Authorization": f"Bearer {token}"} if token else {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, None

    a_id, g_id = hex_id(acme), hex_id(globex)
    wait_until(lambda: get(f"/api/traces/{a_id}", "token-a")[0] == 200, 30, "acme's trace never stored")
    wait_until(lambda: get(f"/api/traces/{g_id}", "token-g")[0] == 200, 30, "globex's trace never stored")
    assert get(f"/api/traces/{a_id}", "token-g")[0] == 404
    assert get(f"/api/traces/{g_id}", "token-a")[0] == 404
    assert get(f"/api/traces/{a_id}", None)[0] == 401
    _, found = get("/api/search?q=%7B%7D&limit=50", "token-a")
    assert {t["rootServiceName"] for t in found["traces"]} == {"acme-svc"}, found
