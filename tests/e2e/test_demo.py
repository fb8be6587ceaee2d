"""`threadline demo` into `threadline all-in-one`: within a minute the store holds complete
traces across all four services (HTTP, gRPC and queue hops; one root, no orphan span), every
error and slow trace among them; and the frontend's W3C trace-context test endpoint forwards
context as the spec says."""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
import urllib.parse
import urllib.request

from harness import LOOPBACK, free_port, require_binary, wait_until

SERVICES = {"frontend", "orders", "payments", "inventory"}


def _start_all_in_one(process_factory, tmp_path):
    grpc, http_port, api, health, metrics = (free_port() for _ in range(5))
    aio = process_factory("all-in-one", [
        str(require_binary()), "all-in-one", "--data", str(tmp_path / "data"),
        "--set", f"receivers::otlp::protocols::grpc::endpoint={LOOPBACK}:{grpc}",
        "--set", f"receivers::otlp::protocols::http::endpoint={LOOPBACK}:{http_port}",
        "--set", f"extensions::health_check::endpoint={LOOPBACK}:{health}",
        "--set", f"service::telemetry::metrics::address={LOOPBACK}:{metrics}",
        "--set", "processors::tail_sampling::decision_wait=6s",
        "--store-set", f"server::http_listen_port={api}",
    ], ready_url=f"http://{LOOPBACK}:{api}/ready", ready_ports=[grpc])
    aio.start()
    return aio, grpc, f"http://{LOOPBACK}:{api}"


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_demo_traces_arrive_whole_across_all_services(process_factory, tmp_path):
    aio, grpc, api = _start_all_in_one(process_factory, tmp_path)
    frontend = free_port()
    demo = process_factory("demo", [
        str(require_binary()), "demo", "--otlp-endpoint", f"http://{LOOPBACK}:{grpc}",
        "--listen", f"{LOOPBACK}:{frontend}", "--rate", "8", "--error-ratio", "0.2", "--slow-ratio", "0.1",
    ], ready_ports=[frontend])
    demo.start()
    time.sleep(12)
    assert demo.stop(timeout=30) == 0 and not demo.needed_sigkill
    logs = [json.loads(line) for line in demo.all_output_text().splitlines() if line.startswith("{")]
    assert logs and all(len(l["trace_id"]) == 32 and len(l["span_id"]) == 16 for l in logs)
    errors = {l["trace_id"] for l in logs if l["message"] == "order failed"}
    # The stop lets requests in flight finish (a slow one takes 2.2 s), so every slow one counts.
    slow = {l["trace_id"] for l in logs if l["message"] == "slow card network"}
    assert errors and slow

    def stored(query: str) -> set[str]:
        body = _get(f"{api}/api/search?" + urllib.parse.urlencode({"q": query, "limit": 1000}))
        return {t["traceID"] for t in body["traces"]}

    # decision_wait 6 s (> a slow request's 2.2 s + the SDK's 1 s export delay) + batch 1 s.
    wait_until(lambda: errors <= stored("{ status = error }"), 30, lambda: f"missing {errors - stored('{ status = error }')}")
    wait_until(lambda: slow <= stored("{ traceDuration > 2s }"), 30, "slow traces missing")

    kept = stored("{ }")
    assert errors | slow <= kept
    for trace_id in kept:
        trace = _get(f"{api}/api/traces/{trace_id}")
        spans, services = [], set()
        for batch in trace["batches"]:
            service = next(a["value"]["stringValue"] for a in batch["resource"]["attributes"] if a["key"] == "service.name")
            resource = {a["key"] for a in batch["resource"]["attributes"]}
            assert {"k8s.pod.name", "k8s.namespace.name", "service.version"} <= resource
            services.add(service)
            spans += [s for ss in batch["scopeSpans"] for s in ss["spans"]]
        ids = {s["spanId"] for s in spans}
        roots = [s for s in spans if not s.get("parentSpanId")]
        orphans = [s["name"] for s in spans if s.get("parentSpanId") and s["parentSpanId"] not in ids]
        assert len(roots) == 1 and roots[0]["name"] == "GET /api/v2/orders/{orderId}", trace_id
        assert not orphans, f"{trace_id}: orphans {orphans}"
        assert services == SERVICES, f"{trace_id}: {services}"
        # The gRPC hop: orders' client span is the parent of payments' server span.
        grpc = {(s["kind"], s["name"]): s for s in spans if s["name"] == "shop.payments.v1.Payments/Charge"}
        assert grpc[(2, "shop.payments.v1.Payments/Charge")]["parentSpanId"] == grpc[(3, "shop.payments.v1.Payments/Charge")]["spanId"]
        # The queue hop: the consumer's parent is the producer span.
        by_name = {s["name"]: s for s in spans}
        assert by_name["orders process"]["parentSpanId"] == by_name["orders publish"]["spanId"]
        # Route templates, never raw ids (order ids are 5 digits).
        assert not any(re.search(r"\d{3,}", s["name"]) for s in spans), [s["name"] for s in spans]


class _Capture(http.server.BaseHTTPRequestHandler):
    seen: list = []

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Capture.seen.append({k.lower(): v for k, v in self.headers.items()})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_the_w3c_test_endpoint_forwards_trace_context_as_the_spec_says(process_factory):
    frontend = free_port()
    demo = process_factory("demo", [
        str(require_binary()), "demo", "--otlp-endpoint", f"http://{LOOPBACK}:{free_port()}",
        "--listen", f"{LOOPBACK}:{frontend}", "--rate", "0",
    ], ready_ports=[frontend])
    demo.start()
    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), _Capture)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    target = f"http://{LOOPBACK}:{server.server_address[1]}/"

    def call(headers: dict[str, str]) -> dict[str, str]:
        _Capture.seen.clear()
        body = json.dumps([{"url": target, "arguments": []}]).encode()
        request = urllib.request.Request(f"http://{LOOPBACK}:{frontend}/test", data=body, method="POST",
                                         headers={"Content-Type": "application/json", **headers})
        urllib.request.urlopen(request, timeout=10).read()
        return _Capture.seen[0]

    trace, parent = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    try:
        out = call({"traceparent": f"00-{trace}-{parent}-03", "tracestate": "foo=1,bar=2"})
        version, trace_id, span_id, flags = out["traceparent"].split("-")
        assert (version, trace_id, flags) == ("00", trace, "03") and span_id != parent
        assert out["tracestate"] == f"threadline={span_id},foo=1,bar=2"

        out = call({"traceparent": f"cc-{trace}-{parent}-01-future"})
        assert out["traceparent"].startswith(f"00-{trace}-") and out["traceparent"].endswith("-01")

        for bad in [f"00-{trace.upper()}-{parent}-01", f"ff-{trace}-{parent}-01", f"00-{'0' * 32}-{parent}-01"]:
            out = call({"traceparent": bad, "tracestate": "foo=1"})
            assert out["traceparent"].split("-")[1] != trace.upper().lower(), bad
            assert "foo=1" not in out["tracestate"], "tracestate dropped with an invalid traceparent"

        # A repeated key keeps its first member; the list is not dropped (current spec text).
        out = call({"traceparent": f"00-{trace}-{parent}-01", "tracestate": "foo=1,foo=2"})
        span_id = out["traceparent"].split("-")[2]
        assert out["tracestate"] == f"threadline={span_id},foo=1"

        # A member with an empty value is malformed: the whole list is dropped, never forwarded.
        out = call({"traceparent": f"00-{trace}-{parent}-01", "tracestate": "foo=,bar=3"})
        assert out["tracestate"] == f"threadline={out['traceparent'].split('-')[2]}"
    finally:
        server.shutdown()
