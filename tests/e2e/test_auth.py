"""Authentication as upstream configures it, with the upstream OpenTelemetry Python SDK as the
sender: `bearertokenauth` and `basicauth` on a collector's receivers (right credential accepted,
wrong or missing refused with HTTP 401 / gRPC UNAUTHENTICATED), an agent whose exporters carry
the client side of the same extensions to a gateway and to a store that require them, and the
store mapping each credential to one tenant (another tenant's traces are refused with 403 or
not found)."""

from __future__ import annotations

import base64

import grpc
import requests
from harness import LOOPBACK, seed_config, service_name_of, wait_until
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

# A published bcrypt test vector (the `bcrypt` crate's tests, made with Python's bcrypt):
# the hash of "correctbatteryhorsestapler", cost 4.
BCRYPT_HASH = "$2b$04$EGdrhbKUv8Oc9vGiXX0HQOxSg445d458Muh7DAHskb6QbtCvdxcie"
BCRYPT_PASSWORD = "correctbatteryhorsestapler"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def finished_spans(service: str, count: int = 1):
    """`count` finished SDK spans of `service`, to hand to an OTLP exporter directly (so the
    test sees the export result)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("e2e.auth")
    for i in range(count):
        with tracer.start_as_current_span(f"{service} op {i}"):
            pass
    provider.shutdown()
    return list(memory.get_finished_spans())


def trace_id(spans) -> str:
    return format(spans[0].context.trace_id, "032x")


def grpc_export(endpoint: str, spans, metadata=()) -> grpc.StatusCode:
    """The status code of one raw OTLP/gRPC Export with `metadata`."""
    with grpc.insecure_channel(endpoint) as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        try:
            stub.Export(encode_spans(spans), metadata=list(metadata), timeout=10)
            return grpc.StatusCode.OK
        except grpc.RpcError as err:
            return err.code()


def http_export(url: str, spans, headers=None) -> requests.Response:
    body = encode_spans(spans).SerializeToString()
    return requests.post(
        url,
        data=body,
        headers={"Content-Type": "application/x-protobuf", **(headers or {})},
        timeout=10,
    )


SERVER_AUTH = f"""
extensions:
  bearertokenauth/server:
    tokens: [agent-token, other-token]
  basicauth/server:
    htpasswd:
      inline: |
        alice:{BCRYPT_HASH}
        bob:bob-plain
receivers:
  otlp:
    protocols:
      grpc:
        auth: {{authenticator: bearertokenauth/server}}
      http:
        auth: {{authenticator: basicauth/server}}
"""


def test_collector_receivers_refuse_requests_without_the_right_credentials(
    backend, collector_factory, tmp_path
):
    overlay = tmp_path / "server-auth.yaml"
    overlay.write_text(SERVER_AUTH)
    gateway = collector_factory(
        backend,
        configs=[seed_config(), overlay],
        extensions=["bearertokenauth/server", "basicauth/server"],
        sets=["processors::batch::timeout=200ms"],
    )

    # gRPC + bearer: the SDK with the token is accepted; without it, or with another, refused.
    good = finished_spans("bearer-ok")
    exporter = GrpcExporter(
        endpoint=gateway.grpc_endpoint, insecure=True, headers={"authorization": "Bearer agent-token"}
    )
    assert exporter.export(good) == SpanExportResult.SUCCESS
    wrong = GrpcExporter(
        endpoint=gateway.grpc_endpoint, insecure=True, headers={"authorization": "Bearer guess"}
    )
    assert wrong.export(finished_spans("bearer-wrong")) == SpanExportResult.FAILURE
    assert grpc_export(gateway.grpc_endpoint, finished_spans("bearer-none")) == grpc.StatusCode.UNAUTHENTICATED
    assert (
        grpc_export(gateway.grpc_endpoint, finished_spans("bearer-bad"), [("authorization", "Bearer nope")])
        == grpc.StatusCode.UNAUTHENTICATED
    )
    assert (
        grpc_export(gateway.grpc_endpoint, finished_spans("bearer-2"), [("authorization", "Bearer other-token")])
        == grpc.StatusCode.OK
    )

    # HTTP + basic: bcrypt and plain htpasswd entries; 401 with an OTLP Status body otherwise.
    for user, password in [("alice", BCRYPT_PASSWORD), ("bob", "bob-plain")]:
        sdk = HttpExporter(endpoint=gateway.traces_url, headers={"Authorization": basic(user, password)})
        assert sdk.export(finished_spans(f"basic-{user}")) == SpanExportResult.SUCCESS
    sdk = HttpExporter(endpoint=gateway.traces_url, headers={"Authorization": basic("alice", "wrong")})
    assert sdk.export(finished_spans("basic-wrong")) == SpanExportResult.FAILURE
    for headers in [None, {"Authorization": basic("carol", "x")}, {"Authorization": "Bearer agent-token"}]:
        response = http_export(gateway.traces_url, finished_spans("basic-refused"), headers)
        assert response.status_code == 401, (headers, response.status_code, response.content)

    backend.wait_for_count(4, timeout=20)
    services = {service_name_of(s.resource) for s in backend.spans()}
    assert services == {"bearer-ok", "bearer-2", "basic-alice", "basic-bob"}, services


def test_an_agent_exports_with_the_client_side_of_the_extensions(
    backend, collector_factory, store_factory, tmp_path
):
    # Gateway: bearer on gRPC (as above). Store: tenants by token.
    overlay = tmp_path / "server-auth.yaml"
    overlay.write_text(SERVER_AUTH)
    gateway = collector_factory(
        backend,
        name="gateway",
        configs=[seed_config(), overlay],
        extensions=["bearertokenauth/server", "basicauth/server"],
        sets=["processors::batch::timeout=200ms"],
    )
    token_file = tmp_path / "team-a.token"
    token_file.write_text("team-a-secret\n")
    store = store_factory(
        sets=[
            "multitenancy_enabled=true",
            f"auth={{bearer_tokens: [{{token_file: '{token_file}', tenant: team-a}}]}}",
        ]
    )

    # The agent: no auth on its receivers; its otlp exporter sends the gateway's token, and a
    # second otlp exporter sends the store's, read from the same token file as the store's.
    agent_config = tmp_path / "agent.yaml"
    agent_config.write_text(
        f"""
extensions:
  bearertokenauth/gateway:
    token: agent-token
  bearertokenauth/store:
    filename: {token_file}
exporters:
  otlp:
    auth: {{authenticator: bearertokenauth/gateway}}
  otlp/store:
    endpoint: {store.grpc_endpoint}
    tls: {{insecure: true}}
    auth: {{authenticator: bearertokenauth/store}}
service:
  pipelines:
    traces:
      exporters: [otlp, otlp/store]
"""
    )
    agent = collector_factory(
        backend,
        name="agent",
        exporter_endpoint=gateway.grpc_endpoint,
        configs=[seed_config(), agent_config],
        extensions=["bearertokenauth/gateway", "bearertokenauth/store"],
        sets=["processors::batch::timeout=200ms"],
    )
    spans = finished_spans("through-agent", 3)
    assert GrpcExporter(endpoint=agent.grpc_endpoint, insecure=True).export(spans) == SpanExportResult.SUCCESS
    backend.wait_for_count(3, timeout=20)
    assert {service_name_of(s.resource) for s in backend.spans()} == {"through-agent"}

    headers = {"Authorization": "Bearer team-a-secret"}
    wait_until(
        lambda: store.get(f"/api/traces/{trace_id(spans)}", headers)[0] == 200,
        30,
        "the agent's trace never reached the store as team-a",
    )


def _store_with_two_tenants(store_factory, tmp_path):
    return store_factory(
        sets=[
            "multitenancy_enabled=true",
            "auth={bearer_tokens: [{token: token-a, tenant: team-a}, {token: token-b, tenant: team-b}], "
            f"basic: [{{username: grafana-b, password: '{BCRYPT_HASH}', tenant: team-b}}]}}",
        ]
    )


def test_store_maps_credentials_to_tenants_and_keeps_them_apart(store_factory, tmp_path):
    store = _store_with_two_tenants(store_factory, tmp_path)
    a_spans, b_spans = finished_spans("svc-a", 2), finished_spans("svc-b", 2)

    # Ingest: the credential names the tenant (no X-Scope-OrgID needed); none or a wrong one
    # is refused; another tenant's X-Scope-OrgID is PERMISSION_DENIED / 403.
    a = GrpcExporter(endpoint=store.grpc_endpoint, insecure=True, headers={"authorization": "Bearer token-a"})
    assert a.export(a_spans) == SpanExportResult.SUCCESS
    otlp_http = f"http://{LOOPBACK}:{store.otlp_http_port}/v1/traces"
    b = HttpExporter(endpoint=otlp_http, headers={"Authorization": "Bearer token-b"})
    assert b.export(b_spans) == SpanExportResult.SUCCESS
    assert grpc_export(store.grpc_endpoint, finished_spans("anon")) == grpc.StatusCode.UNAUTHENTICATED
    assert (
        grpc_export(
            store.grpc_endpoint,
            finished_spans("sneaky"),
            [("authorization", "Bearer token-a"), ("x-scope-orgid", "team-b")],
        )
        == grpc.StatusCode.PERMISSION_DENIED
    )
    assert http_export(otlp_http, finished_spans("anon-http")).status_code == 401
    refused = http_export(
        otlp_http, finished_spans("sneaky-http"), {"Authorization": "Bearer token-a", "X-Scope-OrgID": "team-b"}
    )
    assert refused.status_code == 403

    a_id, b_id = trace_id(a_spans), trace_id(b_spans)
    as_a = {"Authorization": "Bearer token-a"}
    as_b = {"Authorization": basic("grafana-b", BCRYPT_PASSWORD)}
    wait_until(lambda: store.get(f"/api/traces/{a_id}", as_a)[0] == 200, 20, "team-a's trace is not served")
    wait_until(lambda: store.get(f"/api/traces/{b_id}", as_b)[0] == 200, 20, "team-b's trace is not served")

    # Query: each credential sees its own tenant only.
    assert store.get(f"/api/traces/{b_id}", as_a)[0] == 404
    assert store.get(f"/api/traces/{a_id}", as_b)[0] == 404
    status, body = store.get(f"/api/traces/{b_id}", {**as_a, "X-Scope-OrgID": "team-b"})
    assert status == 403 and b"team-a" in body, (status, body)
    assert store.get(f"/api/traces/{a_id}", {**as_a, "X-Scope-OrgID": "team-a"})[0] == 200
    status, _, response_headers = store.get_with_headers(f"/api/traces/{a_id}")
    assert status == 401 and "www-authenticate" in response_headers
    assert store.get(f"/api/traces/{a_id}", {"Authorization": "Bearer token-c"})[0] == 401
    assert store.get(f"/api/traces/{a_id}", {"Authorization": basic("grafana-b", "wrong")})[0] == 401

    found_by_a = store.json("/api/search?q=%7B%7D&limit=50", as_a)
    services_a = {t.get("rootServiceName") for t in found_by_a.get("traces", [])}
    found_by_b = store.json("/api/search?q=%7B%7D&limit=50", as_b)
    services_b = {t.get("rootServiceName") for t in found_by_b.get("traces", [])}
    assert services_a == {"svc-a"} and services_b == {"svc-b"}, (services_a, services_b)

    # Readiness needs no credential (probes).
    assert store.get("/ready")[0] == 200


def test_store_refuses_auth_without_multitenancy(tmp_path):
    from harness import run_threadline

    result = run_threadline(
        [
            "store",
            "--set",
            f"storage::trace::wal::path={tmp_path / 'wal'}",
            "--set",
            "auth={bearer_tokens: [{token: t, tenant: a}]}",
        ]
    )
    assert result.returncode != 0
    assert "multitenancy_enabled: true" in result.stderr + result.stdout, result.stderr


def test_the_ui_asks_for_a_credential_and_shows_only_that_tenants_traces(store_factory, tmp_path):
    """The web UI against a store with `auth`, in Debian's Chromium: without a credential the
    search says what to set; a bearer token or a user and password set in Settings is sent as
    the Authorization header, and each shows its own tenant's traces only."""
    from playwright.sync_api import expect, sync_playwright
    from ui_estate import launch

    store = _store_with_two_tenants(store_factory, tmp_path)
    a_spans, b_spans = finished_spans("ui-svc-a"), finished_spans("ui-svc-b")
    assert GrpcExporter(endpoint=store.grpc_endpoint, insecure=True,
                        headers={"authorization": "Bearer token-a"}).export(a_spans) == SpanExportResult.SUCCESS
    assert GrpcExporter(endpoint=store.grpc_endpoint, insecure=True,
                        headers={"authorization": "Bearer token-b"}).export(b_spans) == SpanExportResult.SUCCESS
    a_id, b_id = trace_id(a_spans), trace_id(b_spans)
    wait_until(lambda: store.get(f"/api/traces/{a_id}", {"Authorization": "Bearer token-a"})[0] == 200, 20,
               "team-a's trace is not served")
    wait_until(lambda: store.get(f"/api/traces/{b_id}", {"Authorization": "Bearer token-b"})[0] == 200, 20,
               "team-b's trace is not served")

    def shown(page) -> set[str]:
        page.goto(f"{store.api}/#/search?q=%7B%20%7D&range=1h")
        page.wait_for_selector('#search-progress[data-state="done"], #search-progress[data-state="failed"]',
                               state="attached", timeout=15000)
        return set(page.eval_on_selector_all("#results tbody tr", "rows => rows.map(r => r.dataset.trace)"))

    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            assert shown(page) == set()
            expect(page.locator(".state.error")).to_contain_text("the store requires a credential")
            expect(page.locator(".state.error")).to_contain_text("Settings")

            page.goto(f"{store.api}/#/settings")
            page.select_option("#credential-kind", "bearer")
            page.fill("#credential-token", "token-a")
            page.click("#save-settings")
            assert shown(page) == {a_id}

            page.goto(f"{store.api}/#/settings")
            expect(page.locator("#credential-token")).to_have_value("token-a")
            page.select_option("#credential-kind", "basic")
            page.fill("#credential-username", "grafana-b")
            page.fill("#credential-password", BCRYPT_PASSWORD)
            page.click("#save-settings")
            assert shown(page) == {b_id}
            page.goto(f"{store.api}/#/trace/{a_id}")
            expect(page.locator("main")).to_contain_text("This trace is not in the store", timeout=10000)

            page.goto(f"{store.api}/#/settings")
            page.fill("#credential-password", "wrong")
            page.click("#save-settings")
            assert shown(page) == set()
            expect(page.locator(".state.error")).to_contain_text("the credential in Settings was refused")
            assert not errors, f"JavaScript errors on the page: {errors}"
        finally:
            browser.close()
