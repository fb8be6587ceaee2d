"""TraceQL metrics over HTTP (`/api/metrics/query_range`, `/api/metrics/query`) against spans the
upstream Python SDK sent with known start times, durations, services and statuses; every count,
rate and quantile is computed here from what was sent, not read from the store."""

from __future__ import annotations

import json
import math
import time
import urllib.parse
from collections import defaultdict

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from harness import wait_until

STEP_S = 60
SERVICES = ["api", "cache", "db"]
MINUTE_NS = 60 * 1_000_000_000


def _send(store, now_ns: int) -> list[dict]:
    """Spans over the last 40 minutes, 17 s past each minute (never on an interval boundary)."""
    sent = []
    for service in SERVICES:
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=store.grpc_endpoint, insecure=True)))
        tracer = provider.get_tracer("e2e.metrics")
        for k in range(1, 41):
            for n in range(k % 3 + 1):
                start = now_ns - k * MINUTE_NS - 17_000_000_000 + n * 1_000_000
                duration = ((k * 7 + n * 13 + len(service)) % 50 + 1) * 1_000_000
                error = (k + n) % 5 == 0
                span = tracer.start_span(f"{service} work", kind=SpanKind.SERVER, start_time=start)
                if error:
                    span.set_status(Status(StatusCode.ERROR, "boom"))
                span.end(end_time=start + duration)
                sent.append({"service": service, "start": start, "duration": duration, "error": error})
        provider.shutdown()
    return sent


def _interval_stamp_ms(start_ns: int, range_start_ns: int, step_ns: int) -> int:
    """Tempo's intervals: aligned to the step, (T - step, T] stamped T."""
    aligned = range_start_ns - range_start_ns % step_ns
    index = math.ceil((start_ns - aligned) / step_ns) - 1
    return (aligned + (index + 1) * step_ns) // 1_000_000


def _query(store, path: str, **params) -> dict:
    status, body = store.get(path + "?" + urllib.parse.urlencode(params))
    assert status == 200, f"{path} {params}: {status} {body[:300]!r}"
    return json.loads(body)


def _series_by_service(result: dict) -> dict[str, dict[int, float]]:
    out = {}
    for series in result["series"]:
        labels = {l["key"]: next(iter(l["value"].values()), None) for l in series["labels"] if l["key"] != "__name__"}
        out[labels["resource.service.name"]] = {int(s["timestampMs"]): s["value"] for s in series["samples"]}
    return out


def _nonzero(series: dict[str, dict[int, float]]) -> dict[str, dict[int, float]]:
    """Counting functions also give 0 for the intervals without a span; those are checked apart."""
    return {k: {t: v for t, v in samples.items() if v != 0} for k, samples in series.items()}


def _nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q * len(ordered))))
    return ordered[rank - 1]


def test_metrics_queries_match_the_spans_sent(store_factory):
    store = store_factory()
    now_ns = time.time_ns()
    sent = _send(store, now_ns)
    wait_until(
        lambda: len(store.json("/api/search?limit=1000")["traces"]) == len(sent),
        10.0,
        "not every trace became searchable",
    )
    end_s = now_ns // 1_000_000_000
    start_s = end_s - 3600
    start_ns, step_ns = start_s * 1_000_000_000, STEP_S * 1_000_000_000

    # count_over_time by service, Grafana's parameters (unix seconds, a duration step).
    expected = defaultdict(lambda: defaultdict(float))
    for span in sent:
        expected[span["service"]][_interval_stamp_ms(span["start"], start_ns, step_ns)] += 1
    result = _query(store, "/api/metrics/query_range", q="{ } | count_over_time() by (resource.service.name)",
                    start=start_s, end=end_s, step=f"{STEP_S}s")
    got = _series_by_service(result)
    assert _nonzero(got) == {s: dict(v) for s, v in expected.items()}
    aligned_ms = (start_ns - start_ns % step_ns) // 1_000_000
    for samples in got.values():
        assert all((t - aligned_ms) % (STEP_S * 1000) == 0 and start_s * 1000 < t <= end_s * 1000 + STEP_S * 1000
                   for t in samples), "a sample is not stamped at an interval's end"
    assert result["metrics"]["inspectedTraces"] == len(sent)

    # rate of errors by service: per second, over the step.
    expected = defaultdict(lambda: defaultdict(float))
    for span in sent:
        if span["error"]:
            expected[span["service"]][_interval_stamp_ms(span["start"], start_ns, step_ns)] += 1 / STEP_S
    result = _query(store, "/api/metrics/query_range", q="{ status = error } | rate() by (resource.service.name)",
                    start=start_s, end=end_s, step=str(STEP_S))
    got = _nonzero(_series_by_service(result))
    assert got.keys() == expected.keys()
    for service, samples in expected.items():
        assert got[service].keys() == samples.keys(), service
        for stamp, value in samples.items():
            assert math.isclose(got[service][stamp], value, rel_tol=1e-9), (service, stamp)

    # Quantiles over the whole range (the instant endpoint), in seconds, exact nearest-rank.
    durations = [s["duration"] / 1e9 for s in sent if s["service"] == "api"]
    result = _query(store, "/api/metrics/query",
                    q='{ resource.service.name = "api" } | quantile_over_time(duration, 0.5, 0.9)',
                    start=start_s, end=end_s)
    by_p = {}
    for series in result["series"]:
        labels = {l["key"]: next(iter(l["value"].values()), None) for l in series["labels"]}
        by_p[labels["p"]] = series["value"]
    assert by_p == {0.5: _nearest_rank(durations, 0.5), 0.9: _nearest_rank(durations, 0.9)}

    # max_over_time by service, each interval's longest span.
    expected = defaultdict(dict)
    for span in sent:
        stamp = _interval_stamp_ms(span["start"], start_ns, step_ns)
        expected[span["service"]][stamp] = max(expected[span["service"]].get(stamp, 0), span["duration"] / 1e9)
    result = _query(store, "/api/metrics/query_range", q="{ } | max_over_time(duration) by (resource.service.name)",
                    start=start_s, end=end_s, step=f"{STEP_S}s")
    assert _series_by_service(result) == dict(expected)


def test_metrics_requests_get_tempo_errors_and_protobuf(store_factory):
    store = store_factory()
    status, body = store.get("/api/metrics/query_range?" + urllib.parse.urlencode({"q": "{ status = error }"}))
    assert status == 400 and b"not a metrics query" in body, body
    status, body = store.get("/api/metrics/query_range?" + urllib.parse.urlencode({"q": "{ } | rate("}))
    assert status == 400 and b"line 1" in body, body
    status, body = store.get("/api/metrics/query_range?" + urllib.parse.urlencode({"q": "{ } | rate()", "step": "0"}))
    assert status == 400 and b"step" in body, body
    status, body = store.get("/api/metrics/query_range?" + urllib.parse.urlencode(
        {"q": "{ } | rate()", "start": "1700000100", "end": "1700000000"}))
    assert status == 400 and b"start" in body, body
    status, body = store.get("/api/metrics/query_range")
    assert status == 400 and b"missing q" in body, body
    # Prometheus' parameter name, which Grafana also sends, and Tempo's protobuf on request.
    status, body = store.get("/api/metrics/query_range?" + urllib.parse.urlencode({"query": "{ } | rate()"}),
                             headers={"Accept": "application/protobuf"})
    assert status == 200, body
    # An empty store: no series, only the SearchMetrics message (field 2).
    assert body[:1] == b"\x12", body
