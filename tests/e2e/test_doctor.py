"""`threadline doctor` against estates of real OpenTelemetry Python SDK services: several
services in this process, each with its own TracerProvider, resource, sampler and OTLP exporter
to a real `threadline store`, calling each other over real HTTP on 127.0.0.1 with the SDK's W3C
propagator. In the faulty estate, on purpose: orders does not propagate context to payments,
catalog names spans with raw ids, profile puts an email and a card number in attributes,
recommendations samples without a parent-based sampler, and shipping's clock is 300 ms ahead.
Doctor must name exactly these services and hops; on the same estate without the faults, and on
the `threadline demo` estate, it must find nothing.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
import time
import urllib.parse
import urllib.request

from opentelemetry import context as otel_context
from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from harness import LOOPBACK, REPO_ROOT, free_port, require_binary, seed_config, wait_until

PROPAGATOR = TraceContextTextMapPropagator()
MS = 1_000_000


class Service:
    """One instrumented HTTP service: a ThreadingHTTPServer on 127.0.0.1 and its own SDK."""

    def __init__(self, name, store, *, sampler=None, clock_offset_ms=0, resource=None, tenant=None):
        self.name = name
        self.port = free_port()
        self.clock_offset_ns = clock_offset_ms * MS
        attributes = {"service.name": name, **(resource or {})}
        self.provider = TracerProvider(
            resource=Resource.create(attributes),
            sampler=sampler or ParentBased(TraceIdRatioBased(0.5)),
        )
        self.provider.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(endpoint=store.grpc_endpoint, insecure=True,
                             headers={"x-scope-orgid": tenant} if tenant else None),
            schedule_delay_millis=200))
        self.tracer = self.provider.get_tracer("doctor-e2e")
        self.routes = {}
        self.server = None

    def now(self) -> int:
        """This service's clock (shifted for the skewed one)."""
        return time.time_ns() + self.clock_offset_ns

    def route(self, path, handler, *, span_name=None, extract=True, attributes=None):
        """handler(path) runs inside the server span; span_name(path) names it."""
        self.routes[path] = (handler, span_name, extract, attributes or {})

    def start(self):
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                path = self.path
                prefix = next((p for p in service.routes if path == p or path.startswith(p + "/")), None)
                if prefix is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                handler, span_name, extract, attributes = service.routes[prefix]
                # urllib sends `Traceparent`; the SDK's dict getter looks up `traceparent`.
                carrier = {k.lower(): v for k, v in self.headers.items()}
                parent = PROPAGATOR.extract(carrier) if extract else otel_context.Context()
                name = span_name(path) if span_name else f"GET {prefix}"
                span = service.tracer.start_span(
                    name, context=parent, kind=SpanKind.SERVER, start_time=service.now(),
                    attributes={"http.request.method": "GET", "url.path": path,
                                "server.address": LOOPBACK, "server.port": service.port, **attributes})
                with trace_api.use_span(span, end_on_exit=False):
                    handler(path)
                span.end(end_time=service.now())
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = http.server.ThreadingHTTPServer((LOOPBACK, self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def call(self, callee: "Service", path: str, *, propagate=True):
        """An HTTP GET to `callee` inside a CLIENT span of this service."""
        url = f"http://{LOOPBACK}:{callee.port}{path}"
        span = self.tracer.start_span(
            "GET", kind=SpanKind.CLIENT, start_time=self.now(),
            attributes={"http.request.method": "GET", "url.full": url,
                        "server.address": LOOPBACK, "server.port": callee.port})
        headers = {}
        if propagate:
            PROPAGATOR.inject(headers, context=trace_api.set_span_in_context(span))
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            r.read()
        span.end(end_time=self.now())

    def stop(self):
        self.provider.force_flush()
        self.provider.shutdown()
        if self.server:
            self.server.shutdown()
            self.server.server_close()


def build_estate(store, *, faulty: bool):
    """frontend → orders (→ payments, → inventory), → catalog, → profile, → recommendations,
    → shipping (→ warehouse). Returns (services by name, frontend)."""
    s = {}
    for name in ["frontend", "orders", "payments", "inventory", "catalog", "profile", "warehouse"]:
        s[name] = Service(name, store)
    s["recommendations"] = Service(
        "recommendations", store, sampler=ALWAYS_ON if faulty else None)
    s["shipping"] = Service("shipping", store, clock_offset_ms=300 if faulty else 0)
    if faulty:
        s["profile"] = Service("profile", store, resource={"deployment.environment": "test"})

    def work(_path):
        time.sleep(0.002)

    def checkout(_path):
        f = s["frontend"]
        f.call(s["orders"], "/orders")
        f.call(s["catalog"], f"/api/v2/products/{counter.next()}")
        f.call(s["profile"], "/api/v2/profile")
        f.call(s["recommendations"], "/recommendations")
        f.call(s["shipping"], "/quote")

    def orders(_path):
        s["orders"].call(s["payments"], "/charge", propagate=not faulty)
        s["orders"].call(s["inventory"], "/stock")

    def profile(_path):
        span = trace_api.get_current_span()
        if faulty:
            span.set_attribute("user.email", "jane.doe@example.com")
            # A test card (Visa's 4111...) in a test environment still counts.
            span.set_attribute("payment.card", "4111111111111111")
        span.set_attribute("user.tier", "gold")

    def shipping(_path):
        time.sleep(0.002)
        s["shipping"].call(s["warehouse"], "/stock-level")

    s["frontend"].route("/checkout", checkout)
    s["orders"].route("/orders", orders)
    s["payments"].route("/charge", work)
    s["inventory"].route("/stock", work)
    s["catalog"].route(
        "/api/v2/products", work,
        span_name=(lambda path: f"GET {path}") if faulty else (lambda _p: "GET /api/v2/products/{productId}"))
    s["profile"].route("/api/v2/profile", profile)
    s["recommendations"].route("/recommendations", work)
    s["shipping"].route("/quote", shipping)
    s["warehouse"].route("/stock-level", work)
    for service in s.values():
        service.start()
    return s


class Counter:
    def __init__(self):
        self.n = 1000
        self.lock = threading.Lock()

    def next(self):
        with self.lock:
            self.n += 1
            return self.n


counter = Counter()


def drive(services, requests: int):
    frontend = services["frontend"]
    for _ in range(requests):
        with urllib.request.urlopen(f"http://{LOOPBACK}:{frontend.port}/checkout", timeout=10) as r:
            r.read()
    for service in services.values():
        service.stop()


def doctor(*args, check=True):
    result = subprocess.run([str(require_binary()), "doctor", *args], capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, f"doctor {args}: {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def report_of(api: str):
    return json.loads(doctor("--store", api, "--format", "json").stdout)


def summary(findings):
    """(kind, first service, hop) per finding: what doctor names."""
    out = set()
    for f in findings:
        hop = f.get("hop")
        out.add((f["kind"], f["services"][0], f"{hop['from']}->{hop['to']}" if hop else None))
    return out


def stored_spans(store) -> int:
    body = store.json("/api/search?" + urllib.parse.urlencode({"q": "{ }", "limit": 100000}))
    return len(body["traces"])


def test_doctor_names_exactly_the_broken_services_and_hops(store_factory):
    store = store_factory()
    services = build_estate(store, faulty=True)
    drive(services, 80)
    wait_until(lambda: stored_spans(store) >= 40, 30, "traces did not arrive")
    time.sleep(1)
    report = report_of(store.api)
    findings = report["findings"]
    assert summary(findings) == {
        ("lost_context", "orders", "orders->payments"),
        ("span_name_has_ids", "catalog", None),
        ("pii_email", "profile", None),
        ("pii_card_number", "profile", None),
        ("sampling_not_parent_based", "recommendations", None),
        ("clock_skew", "shipping", None),
    }, json.dumps(findings, indent=1)
    by_kind = {f["kind"]: f for f in findings}

    lost = by_kind["lost_context"]
    assert lost["title"].startswith("orders → payments loses context on 100% of calls"), lost["title"]
    assert lost["examples"] and all(e.get("linked_trace_id") for e in lost["examples"])
    # Each pair really is orders' half and payments' half of one request.
    for e in lost["examples"]:
        client = store.json(f"/api/traces/{e['trace_id']}")
        server = store.json(f"/api/traces/{e['linked_trace_id']}")
        services_of = lambda t: {a["value"]["stringValue"] for b in t["batches"]
                                 for a in b["resource"]["attributes"] if a["key"] == "service.name"}
        assert "orders" in services_of(client) and "payments" not in services_of(client)
        assert services_of(server) == {"payments"}

    names = by_kind["span_name_has_ids"]
    assert names["attribute"] == "GET /api/v2/products/{productId}"

    for kind, key in [("pii_email", "user.email"), ("pii_card_number", "payment.card")]:
        assert by_kind[kind]["attribute"] == key
        assert "action:" in by_kind[kind]["fix_config"] and f"key: {key}" in by_kind[kind]["fix_config"]
    text = json.dumps(report)
    assert "jane.doe" not in text and "4111111111111111" not in text, "a value leaked unmasked"

    skew = by_kind["clock_skew"]
    assert set(skew["services"]) == {"shipping", "frontend", "warehouse"}
    assert "+3" in skew["title"] and "ms" in skew["title"], skew["title"]  # ~ +300 ms
    estimate = int(skew["title"].split("clock is ")[1].split(" ms")[0])
    assert 280 <= estimate <= 320, skew["title"]

    # The same report at the store's API; the text report groups by category; --fail-on.
    api_report = store.json("/api/threadline/doctor?since=1h")
    assert summary(api_report["findings"]) == summary(findings)
    text_out = doctor("--store", store.api).stdout
    assert "== Lost context (split traces) (1) ==" in text_out
    assert "orders → payments loses context" in text_out
    failed = doctor("--store", store.api, "--fail-on", "warning", check=False)
    assert failed.returncode != 0 and "--fail-on" in failed.stderr
    status, body = store.get("/api/threadline/doctor?since=forever")
    assert status == 400 and b"since" in body

    _the_ui_health_page_shows_the_same_findings(store.api, findings)


def _the_ui_health_page_shows_the_same_findings(api: str, findings: list[dict]) -> None:
    """The web UI's Health page (Debian's Chromium through Playwright) renders the store's
    report: every finding's title under its severity, example traces linked, no PII value."""
    from playwright.sync_api import sync_playwright

    from ui_estate import launch

    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{api}/#/health?since=1h")
            page.wait_for_selector(".finding, .state")
            kinds = page.eval_on_selector_all(".finding", "els => els.map(e => e.dataset.kind)")
            assert sorted(kinds) == sorted(f["kind"] for f in findings)
            titles = page.eval_on_selector_all(".finding h3", "els => els.map(e => e.textContent)")
            for f in findings:
                assert any(f["title"] in t and t.startswith(f["severity"]) for t in titles), (f["title"], titles)
            lost = page.locator('.finding[data-kind="lost_context"] a.example').first
            href = lost.get_attribute("href")
            assert href.startswith("#/trace/") and len(href) == len("#/trace/") + 32, href
            text = page.inner_text("main")
            assert "jane.doe" not in text and "4111111111111111" not in text
            assert "Scanned" in text
            shots = REPO_ROOT / "docs" / "ui"
            shots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shots / "health.png"), full_page=False)
            lost.click()
            page.wait_for_selector(".wf-row, .waterfall, .state")
            assert not errors, errors
        finally:
            browser.close()


def test_doctor_finds_nothing_on_a_clean_estate(store_factory):
    store = store_factory()
    services = build_estate(store, faulty=False)
    drive(services, 80)
    wait_until(lambda: stored_spans(store) >= 20, 30, "traces did not arrive")
    time.sleep(1)
    report = report_of(store.api)
    assert report["findings"] == [], json.dumps(report["findings"], indent=1)
    assert report["scanned"]["services"] == 9
    assert doctor("--store", store.api, "--fail-on", "info").returncode == 0


def test_doctor_finds_nothing_on_the_demo_estate(process_factory, tmp_path):
    grpc, http_port, api_port, health, metrics = (free_port() for _ in range(5))
    aio = process_factory("all-in-one", [
        str(require_binary()), "all-in-one", "--data", str(tmp_path / "data"),
        "--set", f"receivers::otlp::protocols::grpc::endpoint={LOOPBACK}:{grpc}",
        "--set", f"receivers::otlp::protocols::http::endpoint={LOOPBACK}:{http_port}",
        "--set", f"extensions::health_check::endpoint={LOOPBACK}:{health}",
        "--set", f"service::telemetry::metrics::address={LOOPBACK}:{metrics}",
        "--set", "processors::tail_sampling::decision_wait=6s",
        "--store-set", f"server::http_listen_port={api_port}",
    ], ready_url=f"http://{LOOPBACK}:{api_port}/ready", ready_ports=[grpc])
    aio.start()
    api = f"http://{LOOPBACK}:{api_port}"
    frontend = free_port()
    demo = process_factory("demo", [
        str(require_binary()), "demo", "--otlp-endpoint", f"http://{LOOPBACK}:{grpc}",
        "--listen", f"{LOOPBACK}:{frontend}", "--rate", "10",
    ], ready_ports=[frontend])
    demo.start()
    time.sleep(10)
    assert demo.stop(timeout=30) == 0
    time.sleep(9)  # decision_wait + batch
    report = report_of(api)
    assert report["scanned"]["traces"] >= 5, report["scanned"]
    assert report["scanned"]["services"] == 4
    assert report["findings"] == [], json.dumps(report["findings"], indent=1)
    # The collector's own metrics of a healthy all-in-one: nothing either.
    metrics_report = json.loads(doctor("--no-store", "--metrics", f"http://{LOOPBACK}:{metrics}/metrics",
                                       "--format", "json").stdout)
    assert metrics_report["findings"] == [], metrics_report["findings"]


def test_doctor_checks_collector_metrics_and_the_seed_configs(collector_factory, tmp_path):
    # An agent whose gateway is down, with retries off: its own metrics show the failed sends.
    dead = f"{LOOPBACK}:{free_port()}"
    agent = collector_factory(exporter_endpoint=dead, sets=[
        "exporters::otlp::retry_on_failure::enabled=false",
        "processors::batch::timeout=100ms",
    ])
    provider = TracerProvider(resource=Resource.create({"service.name": "probe"}))
    provider.add_span_processor(BatchSpanProcessor(
        OTLPSpanExporter(endpoint=f"{LOOPBACK}:{agent.ports.grpc}", insecure=True), schedule_delay_millis=100))
    tracer = provider.get_tracer("probe")
    for _ in range(20):
        tracer.start_span("op").end()
    provider.force_flush()
    provider.shutdown()
    metrics_url = f"http://{LOOPBACK}:{agent.ports.metrics}/metrics"

    def failed():
        out = json.loads(doctor("--no-store", "--metrics", metrics_url, "--format", "json").stdout)
        return [f for f in out["findings"] if f["kind"] == "exporter_send_failed_spans"]

    found = wait_until(failed, 30, "no send failures reported")
    assert found[0]["attribute"] == "exporters::otlp" and found[0]["count"] == 20

    # The seed's agent config with its gateway resource (3 replicas, tail_sampling).
    gateway = seed_config("gateway-collector.yaml")
    out = doctor("--no-store", "--config", str(seed_config("agent-config.yaml")), "--config", str(gateway),
                 "--format", "json", "--fail-on", "critical", check=False)
    assert out.returncode != 0
    kinds = {(f["kind"], f["severity"]) for f in json.loads(out.stdout)["findings"]}
    assert ("split_trace_layout", "critical") in kinds, kinds
    # The repository's corrected agent config routes by trace id: no split layout.
    fixed = doctor("--no-store", "--config", "examples/agent-config.yaml", "--config", str(gateway),
                   "--format", "json")
    assert "split_trace_layout" not in {f["kind"] for f in json.loads(fixed.stdout)["findings"]}
    bad = doctor("--no-store", "--config", str(tmp_path / "missing.yaml"), check=False)
    assert bad.returncode != 0 and "missing.yaml" in bad.stderr


def test_doctor_reads_one_tenant_of_a_multitenant_store(store_factory):
    store = store_factory(sets=["multitenancy_enabled=true"])
    orders = Service("orders", store, sampler=ALWAYS_ON, tenant="acme")
    payments = Service("payments", store, sampler=ALWAYS_ON, tenant="acme")
    orders.route("/orders", lambda _p: orders.call(payments, "/charge", propagate=False))
    payments.route("/charge", lambda _p: time.sleep(0.002))
    orders.start()
    payments.start()
    for _ in range(10):
        with urllib.request.urlopen(f"http://{LOOPBACK}:{orders.port}/orders", timeout=10) as r:
            r.read()
    orders.stop()
    payments.stop()
    acme = {"X-Scope-OrgID": "acme"}
    wait_until(lambda: len(store.json("/api/search?q=%7B%20%7D&limit=100", acme)["traces"]) >= 20, 30,
               "acme's traces did not arrive")
    out = json.loads(doctor("--store", store.api, "--org-id", "acme", "--format", "json").stdout)
    assert summary(out["findings"]) == {("lost_context", "orders", "orders->payments")}, out["findings"]
    assert out["findings"][0]["count"] == 10 and len(out["findings"][0]["examples"]) == 5
    # The API's tenant rules: 401 without an org id, 404 for a tenant without data.
    missing = doctor("--store", store.api, check=False)
    assert missing.returncode == 1 and "401" in missing.stderr and "X-Scope-OrgID" in missing.stderr
    unknown = doctor("--store", store.api, "--org-id", "nobody", check=False)
    assert unknown.returncode == 1 and "404" in unknown.stderr and "nobody" in unknown.stderr
