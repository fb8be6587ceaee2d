"""Metrics from traces into a real Prometheus (Debian's `prometheus`, started here on 127.0.0.1
with its own data directory): it scrapes the store's generator page and receives the generator's
remote write, while `threadline demo` and a Python SDK estate send traces through all-in-one's
tail sampling. Prometheus is then asked the PromQL Grafana's Tempo data source sends for the
service graph and the APM table (public/app/plugins/datasource/tempo/graphTransform.ts and
datasource.ts, grafana/grafana@6dfd3d56): edges, exact counts (before sampling) and latency
buckets. A second test runs `threadline store` behind a (pretend) sampling gateway: series say
`sampled="true"`, and the JSON service graph comes from the stored traces."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from opentelemetry.trace import SpanKind, Status, StatusCode

from harness import LOOPBACK, SdkSender, free_port, require_binary, wait_until
from prometheus import PROMETHEUS, Prometheus, get_json as _get_json

RANGE = "10m"  # Grafana's $__range


def _grafana_service_map(prom: Prometheus, selector: str) -> dict[str, dict[tuple, float]]:
    """The four queries of Grafana's service map (serviceMapMetrics), as it sends them."""
    out = {}
    for metric in ["traces_service_graph_request_server_seconds_sum", "traces_service_graph_request_total",
                   "traces_service_graph_request_failed_total", "traces_service_graph_request_server_seconds_bucket"]:
        extra = ", le" if metric.endswith("_bucket") else ""
        out[metric] = prom.by(f"sum by (client, server{extra}) (rate({metric}{selector}[{RANGE}]))",
                              "client", "server", *(["le"] if extra else []))
    return out


def _sdk_estate(endpoint: str, requests: int) -> dict:
    """checkout-py (SERVER root) -> catalog-py over HTTP (CLIENT -> SERVER), catalog-py -> its
    PostgreSQL (db.system.name + server.address) and checkout-py -> Redis (the older db.system).
    Every 5th call fails in catalog-py; every 10th is slow (0.5 s)."""
    checkout = SdkSender(endpoint, resource_attributes={"service.name": "checkout-py"})
    catalog = SdkSender(endpoint, resource_attributes={"service.name": "catalog-py"})
    tc, tk = checkout.tracer(), catalog.tracer()
    failed = slow = 0
    for i in range(requests):
        fail, is_slow = i % 5 == 0, i % 10 == 1
        failed += fail
        slow += is_slow
        with tc.start_as_current_span("POST /checkout", kind=SpanKind.SERVER):
            with tc.start_as_current_span("GET /catalog/{id}", kind=SpanKind.CLIENT):
                with tk.start_as_current_span("GET /catalog/{id}", kind=SpanKind.SERVER) as server:
                    with tk.start_as_current_span("SELECT items", kind=SpanKind.CLIENT,
                                                  attributes={"db.system.name": "postgresql", "server.address": "catalog-db"}):
                        time.sleep(0.5 if is_slow else 0.001)
                    if fail:
                        server.set_status(Status(StatusCode.ERROR, "no such item"))
            with tc.start_as_current_span("GET cart", kind=SpanKind.CLIENT, attributes={"db.system": "redis"}):
                pass
    checkout.finish()
    catalog.finish()
    return {"requests": requests, "failed": failed, "slow": slow}


@pytest.mark.skipif(not Path(PROMETHEUS).exists(), reason="Debian's prometheus package is not installed (.ci/run installs it)")
def test_prometheus_gets_exact_service_graph_and_span_metrics_of_demo_and_sdk_estates_before_sampling(process_factory, tmp_path):
    grpc, http_port, api, health, metrics = (free_port() for _ in range(5))
    prom = Prometheus(process_factory, tmp_path, f"{LOOPBACK}:{api}")
    aio = process_factory("all-in-one", [
        str(require_binary()), "all-in-one", "--data", str(tmp_path / "data"),
        "--set", f"receivers::otlp::protocols::grpc::endpoint={LOOPBACK}:{grpc}",
        "--set", f"receivers::otlp::protocols::http::endpoint={LOOPBACK}:{http_port}",
        "--set", f"extensions::health_check::endpoint={LOOPBACK}:{health}",
        "--set", f"service::telemetry::metrics::address={LOOPBACK}:{metrics}",
        "--set", "processors::tail_sampling::decision_wait=4s",
        "--store-set", f"server::http_listen_port={api}",
        "--store-set", "metrics_generator::registry::collection_interval=1s",
        "--store-set", f"metrics_generator::storage::remote_write=[{{url: '{prom.remote_write_url}'}}]",
    ], ready_url=f"http://{LOOPBACK}:{api}/ready", ready_ports=[grpc])
    aio.start()
    frontend = free_port()
    demo = process_factory("demo", [
        str(require_binary()), "demo", "--otlp-endpoint", f"http://{LOOPBACK}:{grpc}",
        "--listen", f"{LOOPBACK}:{frontend}", "--rate", "8", "--error-ratio", "0.2", "--slow-ratio", "0.1",
    ], ready_ports=[frontend])
    demo.start()
    sdk = _sdk_estate(f"{LOOPBACK}:{grpc}", 20)
    time.sleep(8)
    assert demo.stop(timeout=30) == 0 and not demo.needed_sigkill
    logs = [json.loads(l) for l in demo.all_output_text().splitlines() if l.startswith("{")]
    sent = sum(1 for l in logs if l["message"] == "order requested")
    failed = sum(1 for l in logs if l["message"] == "order failed")
    slow = sum(1 for l in logs if l["message"] == "slow card network")
    assert sent > 40 and failed and slow, (sent, failed, slow)

    expected = {
        ("user", "frontend"): (sent, failed),
        ("frontend", "orders"): (sent, failed),
        ("orders", "payments"): (sent, None),
        ("orders", "inventory"): (sent, 0),
        ("orders", "postgresql"): (sent, 0),
        ("user", "checkout-py"): (sdk["requests"], 0),
        ("checkout-py", "catalog-py"): (sdk["requests"], sdk["failed"]),
        ("catalog-py", "catalog-db"): (sdk["requests"], 0),
        ("checkout-py", "redis"): (sdk["requests"], 0),
    }
    for source, inner in [("scrape", 'job="threadline"'), ("remote write", 'job=""')]:
        selector = "{" + inner + "}"
        def totals(metric: str) -> dict[tuple, float]:
            return prom.by(f"sum by (client, server) ({metric}{selector})", "client", "server")

        def settled() -> bool:
            got = totals("traces_service_graph_request_total")
            return all(got.get(edge) == float(n) for edge, (n, _) in expected.items())

        wait_until(settled, 40, lambda: f"{source}: {totals('traces_service_graph_request_total')} != {expected}")
        failures = totals("traces_service_graph_request_failed_total")
        for edge, (_, errors) in expected.items():
            if errors is not None:
                assert failures.get(edge, 0.0) == float(errors), (source, edge, failures)
        kinds = prom.by(f"sum by (client, server, connection_type) (traces_service_graph_request_total{selector})",
                        "client", "server", "connection_type")
        assert kinds[("orders", "payments", "")] == sent
        assert kinds[("orders", "inventory", "messaging_system")] == sent
        assert kinds[("orders", "postgresql", "database")] == sent
        assert kinds[("catalog-py", "catalog-db", "database")] == sdk["requests"]
        assert kinds[("checkout-py", "redis", "database")] == sdk["requests"]
        assert kinds[("user", "frontend", "virtual_node")] == sent

        # Grafana's service map: every edge in the answer of each of its queries. (A rate can be
        # 0 here: a series whose spans all arrived in one export has one value in the window.)
        # rate() needs two samples of a series: wait for the next scrape/write after settling.
        wait_until(lambda: all(e in _grafana_service_map(prom, selector)["traces_service_graph_request_total"] for e in expected),
                   20, lambda: f"{source}: {_grafana_service_map(prom, selector)}")
        grafana = _grafana_service_map(prom, selector)
        for edge in expected:
            for metric in ["traces_service_graph_request_total", "traces_service_graph_request_server_seconds_sum"]:
                assert edge in grafana[metric], (source, metric, edge, grafana[metric])
        assert ("frontend", "orders") in grafana["traces_service_graph_request_failed_total"]
        assert any(le == "+Inf" for (_, _, le) in grafana["traces_service_graph_request_server_seconds_bucket"])

        # Slow requests in their buckets: payments' slow card network takes > 2 s (the 3.2 s
        # bucket), the others < 1.6 s; the SDK's slow catalog calls take 0.5 s (0.8 s bucket).
        buckets = prom.by(f"sum by (client, server, le) (traces_service_graph_request_server_seconds_bucket{selector})",
                          "client", "server", "le")
        assert buckets[("orders", "payments", "1.6")] == sent - slow, (source, buckets)
        assert buckets[("orders", "payments", "3.2")] == sent
        assert buckets[("checkout-py", "catalog-py", "0.4")] == sdk["requests"] - sdk["slow"]
        assert buckets[("checkout-py", "catalog-py", "0.8")] == sdk["requests"]

        # The APM table's queries (span metrics): rate, error rate and p90 by span name.
        calls = prom.by(f'topk(5, sum(rate(traces_spanmetrics_calls_total{{span_kind="SPAN_KIND_SERVER",{inner}}}[{RANGE}])) by (span_name))', "span_name")
        assert ("GET /api/v2/orders/{orderId}",) in calls, calls
        errors = prom.by(f'topk(5, sum(rate(traces_spanmetrics_calls_total{{span_kind="SPAN_KIND_SERVER",status_code="STATUS_CODE_ERROR",{inner}}}[{RANGE}])) by (span_name))', "span_name")
        assert ("GET /api/v2/orders/{orderId}",) in errors, errors
        p90 = prom.query(f'histogram_quantile(.9, sum(rate(traces_spanmetrics_latency_bucket{{span_kind="SPAN_KIND_SERVER",{inner}}}[{RANGE}])) by (le))')
        assert len(p90) == 1, p90
        # Its value on the totals (a rate over a short run can be 0): the slow 10% reach 2 s.
        p90 = prom.query(f'histogram_quantile(.9, sum(traces_spanmetrics_latency_bucket{{service="frontend",span_kind="SPAN_KIND_SERVER",{inner}}}) by (le))')
        assert 0.01 < float(p90[0]["value"][1]) < 3.2, p90
        exact = prom.by(f'sum by (status_code) (traces_spanmetrics_calls_total{{service="frontend",span_kind="SPAN_KIND_SERVER",{inner}}})', "status_code")
        assert sum(exact.values()) == sent and exact[("STATUS_CODE_ERROR",)] == failed, (source, exact)
        sizes = prom.by(f'sum(traces_spanmetrics_size_total{{service="frontend",{inner}}})')
        assert sizes[()] > 100 * sent

    # Before sampling: the store kept only part of the demo's traces (10% + errors + slow), yet
    # the counts above are every request.
    def stored() -> int:
        query = urllib.parse.urlencode({"q": '{ resource.service.name = "frontend" }', "limit": 10000})
        return len(_get_json(f"http://{LOOPBACK}:{api}/api/search?{query}")["traces"])
    # The sampler decides 4 s (decision_wait) after a trace's first span; every error is kept.
    wait_until(lambda: stored() >= failed, 30, lambda: f"{stored()} traces stored, {failed} failed")
    assert stored() < sent
    # The scrape is per tenant.
    page = urllib.request.urlopen(f"http://{LOOPBACK}:{api}/api/threadline/generator/metrics", timeout=10).read().decode()
    assert 'tenant="single-tenant"' in page and "tempo_metrics_generator_registry_active_series" in page


def test_store_behind_a_sampling_gateway_says_sampled_and_serves_the_graph_of_stored_traces(store_factory):
    store = store_factory(sets=[
        "metrics_generator::processors=[service-graphs, span-metrics]",
        "metrics_generator::input_sampled=true",
        "metrics_generator::max_cardinality_per_label=50",
    ])
    start = int(time.time()) - 1
    sdk = _sdk_estate(store.grpc_endpoint, 10)

    def graph():
        status, body = store.get(f"/api/threadline/service-graph?start={start}&end={int(time.time()) + 2}")
        assert status == 200, body
        return json.loads(body)

    def edge(g, source, target):
        return next((e for e in g["edges"] if e["source"] == source and e["target"] == target), None)

    wait_until(lambda: (edge(graph(), "checkout-py", "catalog-py") or {}).get("requests") == sdk["requests"], 30, lambda: graph())
    g = graph()
    call = edge(g, "checkout-py", "catalog-py")
    assert call["errors"] == sdk["failed"] and call["errorRate"] == sdk["failed"] / sdk["requests"]
    assert call["connectionType"] == "" and call["rate"] > 0
    # One slow call in ten takes 0.5 s: p95 and p99 see it, p50 does not.
    assert call["p50Ms"] < 100 and call["p99Ms"] >= 500
    db = edge(g, "catalog-py", "catalog-db")
    assert db["connectionType"] == "database" and db["requests"] == sdk["requests"]
    nodes = {n["id"]: n for n in g["nodes"]}
    assert nodes["catalog-db"]["kind"] == "database" and nodes["redis"]["kind"] == "database"
    assert nodes["user"]["kind"] == "external" and nodes["catalog-py"]["kind"] == "service"
    assert nodes["catalog-py"]["requests"] == sdk["requests"] and nodes["catalog-py"]["errors"] == sdk["failed"]
    assert set(g) == {"start", "end", "nodes", "edges"}

    # A window before the traces has none of them.
    status, body = store.get(f"/api/threadline/service-graph?start={start - 7200}&end={start - 3600}")
    assert status == 200 and json.loads(body)["edges"] == []
    # Bad windows are refused with a message naming the problem.
    for query, word in [("start=abc&end=10", "start"), ("start=10&end=5", "end")]:
        status, body = store.get(f"/api/threadline/service-graph?{query}")
        assert status == 400 and word in body.decode(), (query, body)

    # The live series say their input was sampled upstream.
    status, page = store.get("/api/threadline/generator/metrics")
    assert status == 200
    page = page.decode()
    line = next(l for l in page.splitlines() if l.startswith("traces_service_graph_request_total{") and 'server="catalog-py"' in l)
    assert 'sampled="true"' in line and 'tenant="single-tenant"' in line and line.endswith(f" {sdk['requests']}"), line
    status, _ = store.get("/api/threadline/generator/metrics", headers={"X-Scope-OrgID": "no/such"})
    assert status == 400
