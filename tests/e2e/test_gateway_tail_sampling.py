"""The seed gateway config, unchanged but for its endpoints and a shorter decision_wait: every error
and every slow trace arrives whole, about 10% of the rest arrive (whole), nothing twice."""

from __future__ import annotations

import collections
import math
import os
import time

from harness import RawGrpcClient, seed_config
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

NORMAL_TRACES = 600
ERROR_TRACES = 30
SLOW_TRACES = 30


def _request(trace_id: bytes, first: int, count: int, *, duration_ms: int, error: bool):
    """Spans `first`..`first+count-1` of one 3-span trace (span 0 is the root)."""
    now = time.time_ns()
    request = trace_service_pb2.ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "gateway-e2e"
    scope = rs.scope_spans.add()
    for index in range(first, first + count):
        span = scope.spans.add()
        span.trace_id = trace_id
        span.span_id = trace_id[:7] + bytes([index + 1])
        if index:
            span.parent_span_id = trace_id[:7] + bytes([1])
        span.name = f"GET /api/v2/orders/{{orderId}} #{index}"
        span.start_time_unix_nano = now
        span.end_time_unix_nano = now + duration_ms * 1_000_000
        if error and index == 2:
            span.status.code = 2
    return request


def test_gateway_keeps_errors_and_slow_traces_whole(collector_factory, backend):
    collector = collector_factory(
        backend,
        configs=[seed_config("gateway-config.yaml")],
        sets=[
            f"exporters::otlp/tempo::endpoint={backend.endpoint}",
            "processors::tail_sampling::decision_wait=1s",
            "processors::batch::timeout=200ms",
        ],
    )
    client = RawGrpcClient(collector.grpc_endpoint)
    kinds = {}
    try:
        for n in range(NORMAL_TRACES + ERROR_TRACES + SLOW_TRACES):
            trace_id = os.urandom(16)
            kind = "error" if n < ERROR_TRACES else "slow" if n < ERROR_TRACES + SLOW_TRACES else "normal"
            kinds[trace_id] = kind
            duration = 2500 if kind == "slow" else 20
            # Each trace arrives in two requests, as from two services.
            client.export(_request(trace_id, 0, 2, duration_ms=duration, error=False), timeout=10)
            client.export(_request(trace_id, 2, 1, duration_ms=duration, error=kind == "error"), timeout=10)
    finally:
        client.close()

    expected_min = ERROR_TRACES + SLOW_TRACES
    deadline = time.time() + 20
    while time.time() < deadline and backend.span_count() < 3 * expected_min:
        time.sleep(0.2)
    time.sleep(2.5)  # let every decision (1s wait) and batch (200ms) go out

    spans = backend.spans()
    per_trace = collections.Counter(s.span.trace_id for s in spans)
    span_ids = collections.Counter(s.span.span_id for s in spans)
    assert max(span_ids.values()) == 1, "a span arrived twice"
    assert all(count == 3 for count in per_trace.values()), "a kept trace is missing spans"
    for trace_id, kind in kinds.items():
        if kind != "normal":
            assert per_trace.get(trace_id) == 3, f"{kind} trace {trace_id.hex()} not kept whole"
    kept_normal = sum(1 for t, k in kinds.items() if k == "normal" and t in per_trace)
    mean = NORMAL_TRACES * 0.10
    sigma = math.sqrt(NORMAL_TRACES * 0.10 * 0.90)
    assert abs(kept_normal - mean) <= 4 * sigma, f"kept {kept_normal} of {NORMAL_TRACES} normal traces"
    for s in spans:
        attrs = {a.key: a.value.string_value for a in s.resource.attributes}
        span_attrs = {a.key: a.value.string_value for a in s.span.attributes}
        assert span_attrs.get("deployment.environment") == "production", "attributes processor ran"
        assert attrs.get("service.name") == "gateway-e2e"
