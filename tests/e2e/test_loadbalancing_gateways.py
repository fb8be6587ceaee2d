"""2 agents (loadbalancing exporter, static resolver) -> 3 gateways (the seed gateway config) -> a
receiving backend, all real processes on 127.0.0.1.

Traffic: services instrumented with the upstream OpenTelemetry Python SDK calling each other over
real HTTP with W3C propagation, the caller exporting through one agent and the callee through the
other (so every trace's spans leave through both); then the load generator through both agents,
mixing normal, error and slow traces, while one gateway is stopped with SIGTERM as a rolling update
does. Every error and slow trace must arrive whole, about 10% of the rest, nothing twice."""

from __future__ import annotations

import collections
import concurrent.futures
import http.server
import json
import math
import threading
import time
import urllib.request

from harness import REPO_ROOT, require_binary, seed_config, wait_until
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

AGENT_CONFIG = REPO_ROOT / "tests" / "e2e" / "testdata" / "agent-loadbalancing.yaml"
DECISION_WAIT_S = 2
SDK_SPANS_PER_TRACE = 4
LOADGEN_SPANS_PER_TRACE = 10
PROPAGATOR = TraceContextTextMapPropagator()


def _provider(service: str, agent_endpoint: str) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter = OTLPSpanExporter(endpoint=agent_endpoint, insecure=True)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=200))
    return provider


class OrdersService:
    """The callee: extracts the W3C context from the request and continues the trace."""

    def __init__(self, provider: TracerProvider):
        tracer = provider.get_tracer("orders")

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                # Header names arrive capitalised (urllib); the propagator looks them up in lower case.
                context = PROPAGATOR.extract({k.lower(): v for k, v in self.headers.items()})
                mode = self.path.rsplit("mode=", 1)[-1]
                with tracer.start_as_current_span(
                    "GET /api/v2/orders/{orderId}", context=context, kind=SpanKind.SERVER
                ) as span:
                    with tracer.start_as_current_span("SELECT orders", kind=SpanKind.CLIENT):
                        if mode == "slow":
                            time.sleep(2.1)
                    if mode == "error":
                        span.set_status(Status(StatusCode.ERROR, "payment declined"))
                status = 500 if mode == "error" else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _call(tracer, orders_url: str, order: int, mode: str) -> bytes:
    """One frontend request; returns its trace id."""
    with tracer.start_as_current_span("GET /checkout", kind=SpanKind.SERVER) as root:
        with tracer.start_as_current_span("GET /api/v2/orders/{orderId}", kind=SpanKind.CLIENT) as client:
            headers: dict[str, str] = {}
            PROPAGATOR.inject(headers)
            request = urllib.request.Request(f"{orders_url}/api/v2/orders/{order}?mode={mode}", headers=headers)
            try:
                urllib.request.urlopen(request, timeout=10).read()
            except urllib.error.HTTPError:
                client.set_status(Status(StatusCode.ERROR))
        return root.get_span_context().trace_id.to_bytes(16, "big")


def _trace_duration_s(spans) -> float:
    start = min(s.span.start_time_unix_nano for s in spans)
    end = max(s.span.end_time_unix_nano for s in spans)
    return (end - start) / 1e9


def test_agents_route_by_trace_id_so_gateways_keep_whole_traces(collector_factory, backend, process_factory):
    gateways = [
        collector_factory(
            backend,
            name=f"gateway{i + 1}",
            configs=[seed_config("gateway-config.yaml")],
            sets=[
                f"exporters::otlp/tempo::endpoint={backend.endpoint}",
                f"processors::tail_sampling::decision_wait={DECISION_WAIT_S}s",
                "processors::batch::timeout=200ms",
            ],
        )
        for i in range(3)
    ]
    hostnames = ",".join(g.grpc_endpoint for g in gateways)
    agents = [
        collector_factory(
            exporter_endpoint=None,
            name=f"agent{i + 1}",
            configs=[AGENT_CONFIG],
            sets=[
                f"exporters::loadbalancing::resolver::static::hostnames=[{hostnames}]",
                "exporters::loadbalancing::retry_on_failure::initial_interval=100ms",
                "processors::batch::timeout=200ms",
            ],
        )
        for i in range(2)
    ]

    # Phase 1: instrumented services, the caller exporting through agent 1, the callee through agent 2.
    frontend = _provider("frontend", agents[0].grpc_endpoint)
    orders = _provider("orders", agents[1].grpc_endpoint)
    modes = ["error"] * 6 + ["slow"] * 4 + ["ok"] * 40
    with OrdersService(orders) as service:
        tracer = frontend.get_tracer("frontend")
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            trace_ids = list(pool.map(lambda a: _call(tracer, service.url, *a), enumerate(modes)))
    frontend.shutdown()
    orders.shutdown()
    sdk_kind = dict(zip(trace_ids, modes))
    time.sleep(1)  # the agents' batches (200 ms) leave before a gateway is stopped

    # Phase 2: the load generator through both agents; gateway 3 is stopped half-way.
    loadgens = [
        process_factory(
            f"loadgen{i + 1}",
            [
                str(require_binary()), "loadgen", "--endpoint", agent.grpc_endpoint,
                "--rate", "1000", "--duration", "6", "--spans-per-request", "100",
                "--concurrency", "2", "--seed", str(i + 1),
            ],
        ).start(wait_ready=False)
        for i, agent in enumerate(agents)
    ]
    time.sleep(3)
    code = gateways[2].stop(timeout=30)
    assert code == 0 and not gateways[2].needed_sigkill, gateways[2].output(tail_lines=40)
    reports = []
    for loadgen in loadgens:
        assert loadgen.wait_exit(60) == 0, loadgen.output(tail_lines=40)
        stdout = loadgen.log_files[-1][0].read_text().strip().splitlines()
        reports.append(json.loads(stdout[-1]))
    assert all(r["failed_spans"] == 0 for r in reports), reports

    # Everything decided (2 s wait) and batched (200 ms) has left once the count stops growing.
    last = -1
    def settled() -> bool:
        nonlocal last
        count = backend.span_count()
        done = count == last
        last = count
        return done
    time.sleep(DECISION_WAIT_S + 1)
    wait_until(settled, 30, "the gateways kept sending", interval=1.5)

    spans = backend.spans()
    ids = collections.Counter((s.span.trace_id, s.span.span_id) for s in spans)
    assert max(ids.values()) == 1, "a span arrived twice"
    by_trace = collections.defaultdict(list)
    for s in spans:
        by_trace[s.span.trace_id].append(s)

    # SDK traces: errors and slow ones all whole; any kept trace whole.
    for trace_id, mode in sdk_kind.items():
        got = len(by_trace.get(trace_id, []))
        if mode != "ok":
            assert got == SDK_SPANS_PER_TRACE, f"{mode} trace {trace_id.hex()}: {got} spans"
        else:
            assert got in (0, SDK_SPANS_PER_TRACE), f"trace {trace_id.hex()} split: {got} spans"
    sdk_services = {
        a.value.string_value for s in spans if s.span.trace_id in sdk_kind
        for a in s.resource.attributes if a.key == "service.name"
    }
    assert sdk_services == {"frontend", "orders"}

    # Load generator traces: whole, every error and slow one present, ~10% of the rest.
    loadgen_traces = {t: v for t, v in by_trace.items() if t not in sdk_kind}
    incomplete = [t.hex() for t, v in loadgen_traces.items() if len(v) != LOADGEN_SPANS_PER_TRACE]
    assert not incomplete, f"{len(incomplete)} kept traces miss spans, e.g. {incomplete[:3]}"
    errors = {t for t, v in loadgen_traces.items() if any(s.span.status.code == 2 for s in v)}
    slow = {t for t, v in loadgen_traces.items() if _trace_duration_s(v) >= 2.0}
    assert len(errors) == sum(r["sent_error_traces"] for r in reports)
    assert len(slow) == sum(r["sent_slow_traces"] for r in reports)
    normal_sent = sum(r["sent_traces"] for r in reports) - len(errors | slow)
    kept_normal = len(loadgen_traces) - len(errors | slow)
    mean = normal_sent * 0.10
    sigma = math.sqrt(normal_sent * 0.10 * 0.90)
    assert abs(kept_normal - mean) <= 4 * sigma, f"kept {kept_normal} of {normal_sent} normal traces"

    # The stopped gateway had its share before the stop; the two others carried on.
    for agent in agents:
        assert agent.is_running()


def test_the_example_agent_config_is_valid_and_the_gateway_warns_about_routing():
    from harness import run_threadline

    example = run_threadline(["validate", "--config", str(REPO_ROOT / "examples" / "agent-config.yaml")])
    assert example.returncode == 0, example.stderr
    assert "warning" not in example.stderr

    gateway = run_threadline(["validate", "--config", str(seed_config("gateway-config.yaml"))])
    assert gateway.returncode == 0, gateway.stderr
    assert "must route by trace id" in gateway.stderr
    assert "examples/agent-config.yaml" in gateway.stderr
