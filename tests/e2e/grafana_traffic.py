"""SDK traffic of a known shape for `test_grafana_queries.py`, and the ground truth kept from it.

Twelve traces, one per minute (17 s past it, so no trace straddles a metrics interval), each:
`frontend` SERVER root -> `cart` SERVER -> `cart` INTERNAL `compute` and `db` CLIENT `SELECT cart`.
Every third trace fails at the root and in `cart` (with an `exception` span event); trace 4 fails
only in `db`; every trace after the first links to its predecessor; roots carry an array attribute."""

from __future__ import annotations

import time

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, set_span_in_context

NS = 1_000_000_000
MS = 1_000_000
TRACES = 12
SERVICES = ("frontend", "cart", "db")


def send(store, tenant: str) -> list[dict]:
    """Sends the traffic; returns one dict per span with everything a query can ask about."""
    providers = {}
    for service in SERVICES:
        provider = TracerProvider(resource=Resource.create({"service.name": service, "deployment.environment": "prod"}))
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(
            endpoint=store.grpc_endpoint, insecure=True, headers={"x-scope-orgid": tenant})))
        providers[service] = provider
    tracers = {s: p.get_tracer("e2e.grafana", "1.2.3") for s, p in providers.items()}
    minute = (time.time_ns() // (60 * NS)) * 60 * NS
    spans, previous = [], None
    for i in range(TRACES):
        start = minute - (i + 1) * 120 * NS + 17 * NS
        failed = i % 3 == 0
        links = [Link(previous, {"reason": "retry"})] if previous else []
        root_attrs = {"http.request.method": "GET", "http.route": f"/api/{i % 3}",
                      "http.response.status_code": 500 if failed else 200,
                      "tags": ["red", "blue"] if i % 2 == 0 else ["green"]}
        root = tracers["frontend"].start_span(f"GET /api/{i % 3}", kind=SpanKind.SERVER, start_time=start,
                                              attributes=root_attrs, links=links)
        cart = tracers["cart"].start_span("cart.load", context=set_span_in_context(root), kind=SpanKind.SERVER,
                                          start_time=start + 2 * MS, attributes={"cart.items": i})
        compute = tracers["cart"].start_span("compute", context=set_span_in_context(cart), kind=SpanKind.INTERNAL,
                                             start_time=start + 3 * MS)
        db = tracers["db"].start_span("SELECT cart", context=set_span_in_context(cart), kind=SpanKind.CLIENT,
                                      start_time=start + 4 * MS, attributes={"db.system.name": "postgresql"})
        durations = {"root": (40 + 10 * i) * MS, "cart": (20 + 5 * i) * MS, "compute": (3 + i) * MS,
                     "db": (5 + 2 * i) * MS}
        if failed:
            root.set_status(Status(StatusCode.ERROR, "upstream failed"))
            cart.record_exception(ValueError(f"bad item {i}"), timestamp=start + 5 * MS)
            cart.set_status(Status(StatusCode.ERROR, f"bad item {i}"))
        if i == 4:
            db.set_status(Status(StatusCode.ERROR, "deadlock"))
        offsets = {"root": 0, "cart": 2 * MS, "compute": 3 * MS, "db": 4 * MS}
        for key, span in (("compute", compute), ("db", db), ("cart", cart), ("root", root)):
            span.end(end_time=start + offsets[key] + durations[key])
        trace_id = format(root.get_span_context().trace_id, "032x")
        rows = [
            ("root", root, "frontend", "server", failed, root_attrs, None),
            ("cart", cart, "cart", "server", failed, {"cart.items": i}, "root"),
            ("compute", compute, "cart", "internal", False, {}, "cart"),
            ("db", db, "db", "client", i == 4, {"db.system.name": "postgresql"}, "cart"),
        ]
        for key, span, service, kind, error, attrs, parent in rows:
            spans.append({
                "trace": trace_id, "i": i, "role": key, "span_id": format(span.get_span_context().span_id, "016x"),
                "service": service, "kind": kind, "name": span.name, "start": start + offsets[key],
                "duration": durations[key], "error": error, "attrs": attrs, "parent": parent,
                "exception": f"bad item {i}" if key == "cart" and failed else None,
                "linked": bool(links) and key == "root",
            })
        previous = root.get_span_context()
    for provider in providers.values():
        provider.shutdown()
    return spans
