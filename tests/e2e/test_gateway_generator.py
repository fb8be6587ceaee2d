"""The metrics generator in a gateway: `threadline collector` on the seed gateway config with the
`metrics_generator` processor placed before `tail_sampling`. A Python OpenTelemetry SDK estate
sends traces; the processor's own scrape endpoint (`GET /metrics` on its `endpoint`) reports
exact span-metrics and service-graph counts of every trace, while tail sampling forwards only the
errors and about 10% of the rest to the backend. Config errors name the processor's key."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import pytest

from opentelemetry.trace import SpanKind, Status, StatusCode

from harness import LOOPBACK, Metrics, SdkSender, free_port, run_threadline, seed_config, wait_until
from prometheus import PROMETHEUS, Prometheus

REQUESTS = 40  # every 5th fails: 8 errors, 32 ok


def _generator_config(tmp_path, endpoint: str) -> str:
    path = tmp_path / "generator.yaml"
    path.write_text(
        "processors:\n"
        "  metrics_generator:\n"
        f"    endpoint: {endpoint}\n"
        "service:\n"
        "  pipelines:\n"
        "    traces:\n"
        "      processors: [memory_limiter, metrics_generator, tail_sampling, attributes, batch]\n"
    )
    return str(path)


def _scrape(endpoint: str) -> Metrics:
    with urllib.request.urlopen(f"http://{endpoint}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return Metrics.parse(response.read().decode())


def _estate(endpoint: str) -> None:
    """checkout-py (SERVER root) -> catalog-py over HTTP (CLIENT -> SERVER); catalog-py's server
    span fails on every 5th request."""
    checkout = SdkSender(endpoint, resource_attributes={"service.name": "checkout-py"})
    catalog = SdkSender(endpoint, resource_attributes={"service.name": "catalog-py"})
    tc, tk = checkout.tracer(), catalog.tracer()
    for i in range(REQUESTS):
        with tc.start_as_current_span("POST /checkout", kind=SpanKind.SERVER):
            with tc.start_as_current_span("GET /catalog/{id}", kind=SpanKind.CLIENT):
                with tk.start_as_current_span("GET /catalog/{id}", kind=SpanKind.SERVER) as server:
                    if i % 5 == 0:
                        server.set_status(Status(StatusCode.ERROR, "no such item"))
    checkout.finish()
    catalog.finish()


def test_gateway_generator_counts_every_span_before_tail_sampling(collector_factory, backend, tmp_path):
    scrape = f"{LOOPBACK}:{free_port()}"
    collector = collector_factory(
        backend,
        configs=[seed_config("gateway-config.yaml"), _generator_config(tmp_path, scrape)],
        sets=[
            f"exporters::otlp/tempo::endpoint={backend.endpoint}",
            "processors::tail_sampling::decision_wait=1s",
            "processors::batch::timeout=200ms",
            # The request's X-Scope-OrgID reaches the processor, which counts per tenant.
            "receivers::otlp::protocols::grpc::include_metadata=true",
        ],
    )
    _estate(collector.grpc_endpoint)
    other = SdkSender(collector.grpc_endpoint, headers={"x-scope-orgid": "team-b"},
                      resource_attributes={"service.name": "billing-py"})
    with other.tracer().start_as_current_span("POST /invoice", kind=SpanKind.SERVER):
        pass
    other.finish()
    errors = REQUESTS // 5

    def calls(**labels: str) -> float:
        return sum(s.value for s in _scrape(scrape).matching("traces_spanmetrics_calls_total", **labels))

    wait_until(lambda: calls() == 3 * REQUESTS + 1, 20, lambda: f"calls: {calls()} of {3 * REQUESTS + 1}")
    page = _scrape(scrape)
    # Requests without the header count for the configured tenant, the other for its own.
    assert page.value("traces_spanmetrics_calls_total", tenant="team-b", service="billing-py") == 1
    assert page.value("traces_spanmetrics_calls_total", tenant="team-b") == 1
    assert page.value("traces_spanmetrics_calls_total", tenant="single-tenant") == 3 * REQUESTS
    assert page.value("traces_spanmetrics_calls_total", service="checkout-py", span_name="POST /checkout",
                      span_kind="SPAN_KIND_SERVER", status_code="STATUS_CODE_UNSET") == REQUESTS
    assert page.value("traces_spanmetrics_calls_total", service="catalog-py", span_kind="SPAN_KIND_SERVER",
                      status_code="STATUS_CODE_ERROR") == errors
    assert page.value("traces_spanmetrics_calls_total", service="catalog-py", span_kind="SPAN_KIND_SERVER",
                      status_code="STATUS_CODE_UNSET") == REQUESTS - errors
    assert page.value("traces_spanmetrics_latency_count", service="catalog-py",
                      span_kind="SPAN_KIND_SERVER", status_code="STATUS_CODE_ERROR") == errors
    # The service graph: the SDK's HTTP call paired (client and server span of one call), and
    # the root span's caller as the `user` virtual node. Exact, not scaled by the sampling.
    assert page.value("traces_service_graph_request_total", client="checkout-py", server="catalog-py",
                      connection_type="") == REQUESTS
    assert page.value("traces_service_graph_request_failed_total", client="checkout-py",
                      server="catalog-py") == errors
    assert page.value("traces_service_graph_request_total", client="user", server="checkout-py",
                      connection_type="virtual_node") == REQUESTS
    assert page.value("traces_service_graph_request_server_seconds_count", client="checkout-py",
                      server="catalog-py") == REQUESTS
    # Counted before the decision and exact, so no `sampled` label.
    assert not any("sampled" in s.labels for s in page.matching("traces_service_graph_request_total"))

    # Meanwhile tail sampling kept every error trace (3 spans each) and about 10% of the others.
    wait_until(lambda: backend.span_count() >= 3 * errors, 20,
               lambda: f"backend got {backend.span_count()} spans, want at least {3 * errors}")
    time.sleep(2)  # decision_wait (1s) for the last traces, then the 200 ms batch
    estate = [s for s in backend.spans() if s.span.name != "POST /invoice"]
    traces = {s.span.trace_id for s in estate}
    assert errors <= len(traces) < REQUESTS, f"{len(traces)} of {REQUESTS} traces forwarded"
    assert len(estate) == 3 * len(traces)
    # The counts did not move once sampling decided.
    assert calls() == 3 * REQUESTS + 1


@pytest.mark.skipif(not Path(PROMETHEUS).exists(), reason="Debian's prometheus package is not installed (.ci/run installs it)")
def test_gateway_remote_write_reaches_prometheus_and_the_last_collection_is_sent_at_shutdown(
        collector_factory, backend, process_factory, tmp_path):
    """A gateway whose only way out is remote write, collecting once an hour: nothing is sent
    while it runs, and a SIGTERM sends every span's counts to a real Prometheus before exit."""
    prom = Prometheus(process_factory, tmp_path)
    config = tmp_path / "remote-write.yaml"
    config.write_text(
        "processors:\n"
        "  metrics_generator:\n"
        "    registry: {collection_interval: 1h}\n"
        f"    storage: {{remote_write: [{{url: '{prom.remote_write_url}'}}]}}\n"
        "service:\n"
        "  pipelines:\n"
        "    traces:\n"
        "      processors: [memory_limiter, metrics_generator, tail_sampling, attributes, batch]\n"
    )
    collector = collector_factory(
        backend,
        configs=[seed_config("gateway-config.yaml"), str(config)],
        sets=[
            f"exporters::otlp/tempo::endpoint={backend.endpoint}",
            "processors::tail_sampling::decision_wait=1s",
            "processors::batch::timeout=200ms",
        ],
    )
    _estate(collector.grpc_endpoint)
    errors = REQUESTS // 5
    # Every error trace is forwarded after decision_wait: by then the generator has seen all.
    wait_until(lambda: backend.span_count() >= 3 * errors, 20,
               lambda: f"backend got {backend.span_count()} spans, want at least {3 * errors}")

    def calls() -> dict[tuple, float]:
        return prom.by("sum by (service, status_code) (traces_spanmetrics_calls_total)", "service", "status_code")

    assert calls() == {}, "nothing is sent before the collection interval or shutdown"
    assert collector.stop(timeout=20) == 0 and not collector.needed_sigkill
    wait_until(lambda: calls() != {}, 10, lambda: "no series reached Prometheus")
    assert calls() == {
        ("checkout-py", "STATUS_CODE_UNSET"): 2 * REQUESTS,
        ("catalog-py", "STATUS_CODE_UNSET"): REQUESTS - errors,
        ("catalog-py", "STATUS_CODE_ERROR"): errors,
    }
    edges = prom.by("sum by (client, server) (traces_service_graph_request_total)", "client", "server")
    assert edges[("checkout-py", "catalog-py")] == REQUESTS


def test_gateway_generator_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "processors:\n"
        "  metrics_generator:\n"
        "    endpoint: not-an-address\n"
        "    processor:\n"
        "      span_metrics:\n"
        "        histogram_buckets: [1, 0.5]\n"
        "service:\n"
        "  pipelines:\n"
        "    traces:\n"
        "      processors: [memory_limiter, metrics_generator, tail_sampling, attributes, batch]\n"
    )
    result = run_threadline(["validate", "--config", str(seed_config("gateway-config.yaml")), "--config", str(bad)])
    assert result.returncode != 0, result.stdout
    assert "processors::metrics_generator::endpoint" in result.stderr, result.stderr
    assert "not-an-address" in result.stderr, result.stderr
    assert "processors::metrics_generator::processor::span_metrics::histogram_buckets" in result.stderr, result.stderr

    # Valid keys but no way out for the series: refused when the collector starts.
    nowhere = tmp_path / "nowhere.yaml"
    nowhere.write_text(
        "processors:\n"
        "  metrics_generator: {}\n"
        "service:\n"
        "  pipelines:\n"
        "    traces:\n"
        "      processors: [memory_limiter, metrics_generator, tail_sampling, attributes, batch]\n"
    )
    grpc, http, metrics = free_port(), free_port(), free_port()
    result = run_threadline([
        "collector", "--config", str(seed_config("gateway-config.yaml")), "--config", str(nowhere),
        "--set", f"receivers::otlp::protocols::grpc::endpoint={LOOPBACK}:{grpc}",
        "--set", f"receivers::otlp::protocols::http::endpoint={LOOPBACK}:{http}",
        "--set", f"service::telemetry::metrics::address={LOOPBACK}:{metrics}",
        "--set", f"exporters::otlp/tempo::endpoint={LOOPBACK}:{free_port()}",
    ])
    assert result.returncode != 0, result.stdout
    assert "processors::metrics_generator" in result.stderr and "endpoint" in result.stderr \
        and "storage::remote_write" in result.stderr, result.stderr
