"""Tag names and values (`/api/search/tags`, `/api/v2/search/tags`, `/api/search/tag/{name}/values`,
`/api/v2/search/tag/{name}/values`) over spans the upstream Python SDK sent at known times, with
attributes in every scope (span, resource, event, link, instrumentation). Every answer, for
several `start`/`end`/`q`/`limit`, is checked against the ground truth computed here from what
was sent. Shapes as grafana/tempo ad33aa8fafc41a4ea58519f7b7a88b1aa1383224 has them
(`pkg/tempopb/tempo.proto`, `pkg/search/util.go`)."""

from __future__ import annotations

import json
import time
import urllib.parse

from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

HOUR_NS = 3600 * 10**9
SCOPES = ["span", "resource", "event", "link", "instrumentation"]
# Tempo's intrinsic scope (pkg/search/util.go GetVirtualIntrinsicValues at ad33aa8).
INTRINSICS = [
    "duration", "name", "status", "statusMessage", "kind", "rootServiceName", "rootName",
    "traceDuration", "event:name", "event:timeSinceStart", "link:spanID", "link:traceID",
    "instrumentation:name", "instrumentation:version", "trace:id", "span:id", "span:parentID",
    "span:status", "span:statusMessage", "span:duration", "span:name", "span:kind",
    "trace:rootName", "trace:rootService", "trace:duration",
]


def _typed(value) -> tuple[str, str]:
    if isinstance(value, bool):
        return ("bool", "true" if value else "false")
    if isinstance(value, int):
        return ("int", str(value))
    if isinstance(value, float):
        return ("float", repr(value))
    return ("string", str(value))


def _send(store, now_ns: int, services) -> list[dict]:
    """Three services, one an hour ago, one two and one three hours ago; per service a parent
    and a child span with an event (an exception), a link, and scope attributes. Returns one
    record per span with its attributes per scope, as sent."""
    sent = []
    for hours, service, method in services:
        resource = Resource.create({"service.name": service, f"{service}.region": "eu-1"})
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=store.grpc_endpoint, insecure=True)))
        scope_attrs = {f"{service}.lib.flag": True}
        tracer = provider.get_tracer(f"e2e.{service}", "1.2.3", attributes=scope_attrs)
        start = now_ns - hours * HOUR_NS
        parent = tracer.start_span(f"{service} request", start_time=start,
                                   attributes={"http.method": method, f"{service}.items": hours * 10})
        ctx = trace_api.set_span_in_context(parent)
        other = parent.get_span_context()
        child = tracer.start_span(f"{service} query", context=ctx, start_time=start + 1_000_000,
                                  attributes={"db.rows": hours, "db.ratio": hours / 4},
                                  links=[trace_api.Link(other, {f"{service}.link.kind": "follows"})])
        child.add_event("cache miss", {f"{service}.event.key": "k"}, timestamp=start + 2_000_000)
        child.end(end_time=start + 3_000_000)
        parent.end(end_time=start + 4_000_000)
        provider.shutdown()
        res = dict(resource.attributes)
        sent.append({"time": start, "end": start + 4_000_000, "service": service, "name": f"{service} request",
                     "span": {"http.method": method, f"{service}.items": hours * 10}, "resource": res,
                     "event": {}, "link": {}, "instrumentation": scope_attrs, "events": []})
        sent.append({"time": start + 1_000_000, "end": start + 4_000_000, "service": service,
                     "name": f"{service} query", "span": {"db.rows": hours, "db.ratio": hours / 4},
                     "resource": res, "event": {f"{service}.event.key": "k"},
                     "link": {f"{service}.link.kind": "follows"}, "instrumentation": scope_attrs,
                     "events": ["cache miss"]})
    return sent


def _in_range(span: dict, start_s: int | None, end_s: int | None) -> bool:
    """The store's rule (and Tempo's): a trace counts when it overlaps the range; our traces
    are 4 ms long, well inside their second, so the span's own time decides."""
    if start_s is not None and span["end"] < start_s * 10**9:
        return False
    if end_s is not None and span["time"] > end_s * 10**9 + 999_999_999:
        return False
    return True


def _get(store, path: str, **params) -> dict:
    params = {k: v for k, v in params.items() if v is not None}
    status, body = store.get(path + ("?" + urllib.parse.urlencode(params) if params else ""))
    assert status == 200, f"{path} {params}: {status} {body[:300]!r}"
    return json.loads(body)


def _wait_for_all(store, sent: list[dict]) -> None:
    deadline = time.time() + 10
    want = len({s["service"] for s in sent})
    while time.time() < deadline:
        services = _get(store, "/api/search/tag/service.name/values")["tagValues"]
        if len(services) >= want:
            return
        time.sleep(0.1)
    raise AssertionError("the spans sent never became searchable")


def test_tag_names_and_values_match_what_was_sent(store_factory):
    store = store_factory(sets=["ingester::max_block_duration=1s"])
    now_ns = time.time_ns()
    # Billing and cart go to blocks; frontend is sent once they are written (it may still be
    # in the head when queried: both are read).
    sent = _send(store, now_ns, [(3, "billing", "POST"), (2, "cart", "GET")])
    blocks = store.data_dir / "blocks" / "single-tenant"
    deadline = time.time() + 15
    while not list(blocks.glob("*/meta.json")):
        assert time.time() < deadline, "no block was written"
        time.sleep(0.1)
    sent += _send(store, now_ns, [(1, "frontend", "GET")])
    _wait_for_all(store, sent)
    now_s = now_ns // 10**9
    hour = 3600
    ranges = [
        (None, None),
        (now_s - 4 * hour, now_s),
        (now_s - 2 * hour - 600, now_s - 2 * hour + 600),   # the cart hour only
        (now_s - 3 * hour - 600, now_s - 2 * hour + 600),   # billing and cart
        (now_s - 90 * 60, None),                            # frontend only
        (now_s - 10 * hour, now_s - 9 * hour),              # nothing
    ]
    queries = [
        (None, lambda s: True),
        ('{resource.service.name="frontend"}', lambda s: s["service"] == "frontend"),
        ('{span.http.method="GET"}', lambda s: s["span"].get("http.method") == "GET"),
        ('{span.db.rows >= 2}', lambda s: s["span"].get("db.rows", 0) >= 2),
    ]
    for start, end in ranges:
        for q, keep in queries:
            spans = [s for s in sent if _in_range(s, start, end) and keep(s)]
            for limit in [None, 2]:
                _check_names(store, spans, start, end, q, limit)
            _check_values(store, spans, start, end, q)


def _check_names(store, spans, start, end, q, limit):
    params = dict(start=start, end=end, q=q, limit=limit)
    truth = {scope: sorted({k for s in spans for k in s[scope]}) for scope in SCOPES}
    if limit:
        truth = {scope: tags[:limit] for scope, tags in truth.items()}
    v2 = _get(store, "/api/v2/search/tags", **params)
    expected = [{"name": scope, "tags": truth[scope]} for scope in SCOPES if truth[scope]]
    expected.append({"name": "intrinsic", "tags": INTRINSICS[:limit] if limit else INTRINSICS})
    assert v2["scopes"] == expected, f"{params}: {v2}"
    assert isinstance(v2["metrics"]["inspectedBytes"], str)
    for scope in SCOPES:
        one = _get(store, "/api/v2/search/tags", scope=scope, **params)
        assert one["scopes"] == [e for e in expected if e["name"] == scope], f"{scope} {params}: {one}"
    v1 = _get(store, "/api/search/tags", **params)
    names = sorted({k for scope in SCOPES for s in spans for k in s[scope]})
    assert v1["tagNames"] == (names[:limit] if limit else names), f"{params}: {v1}"


def _check_values(store, spans, start, end, q):
    params = dict(start=start, end=end, q=q)
    cases = {
        "span.http.method": [s["span"].get("http.method") for s in spans],
        "span.db.rows": [s["span"].get("db.rows") for s in spans],
        "span.db.ratio": [s["span"].get("db.ratio") for s in spans],
        "resource.service.name": [s["service"] for s in spans],
        "event.cart.event.key": [s["event"].get("cart.event.key") for s in spans],
        "link.frontend.link.kind": [s["link"].get("frontend.link.kind") for s in spans],
        "instrumentation.billing.lib.flag": [s["instrumentation"].get("billing.lib.flag") for s in spans],
        "name": [s["name"] for s in spans],
        "event:name": [e for s in spans for e in s["events"]],
        "rootServiceName": [s["service"] for s in spans],
    }
    for tag, values in cases.items():
        truth = sorted({_typed(v) for v in values if v is not None}, key=lambda t: (t[1], t[0]))
        got = _get(store, f"/api/v2/search/tag/{urllib.parse.quote(tag)}/values", **params)["tagValues"]
        assert got == [{"type": t, "value": v} for t, v in truth], f"{tag} {params}: {got}"
        if truth:
            limited = _get(store, f"/api/v2/search/tag/{urllib.parse.quote(tag)}/values", limit=1, **params)
            assert limited["tagValues"] == [{"type": truth[0][0], "value": truth[0][1]}], f"{tag} limit=1 {params}"
    v1 = _get(store, "/api/search/tag/http.method/values", **params)["tagValues"]
    assert v1 == sorted({s["span"]["http.method"] for s in spans if "http.method" in s["span"]}), f"{params}: {v1}"
    status = _get(store, "/api/v2/search/tag/status/values", **params)["tagValues"]
    assert [v["value"] for v in status] == ["ok", "error", "unset"]


def test_a_trace_is_found_whatever_range_grafana_sends(store_factory):
    store = store_factory()
    provider = TracerProvider(resource=Resource.create({"service.name": "lookup"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=store.grpc_endpoint, insecure=True)))
    start = time.time_ns() - 5 * HOUR_NS
    span = provider.get_tracer("e2e").start_span("old work", start_time=start)
    span.end(end_time=start + 1000)
    trace_id = format(span.get_span_context().trace_id, "032x")
    provider.shutdown()
    now_s = time.time_ns() // 10**9
    deadline = time.time() + 10
    while store.get(f"/api/traces/{trace_id}")[0] != 200:
        assert time.time() < deadline, "the trace never became readable"
        time.sleep(0.1)
    # Grafana's trace view sends the dashboard's range: the last hour, which excludes the trace.
    for path in [f"/api/v2/traces/{trace_id}", f"/api/traces/{trace_id}"]:
        status, body = store.get(f"{path}?start={now_s - 3600}&end={now_s}")
        assert status == 200, f"{path}: {status} {body[:200]!r}"
        assert trace_id in json.dumps(json.loads(body)) or b"old work" in body
