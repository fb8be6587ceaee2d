"""docs/api.md stays true: the example of every endpoint it lists answers 200 on a store holding
one trace sent by the upstream Python SDK."""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from harness import wait_until

API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def _documented_examples() -> list[str]:
    rows = re.findall(r"^\| GET \| `([^`]+)` \|", API_DOC.read_text(), flags=re.M)
    assert len(rows) >= 15, f"docs/api.md lists only {len(rows)} endpoints"
    return rows


def test_every_endpoint_in_the_api_doc_answers(store_factory):
    # The metrics generator is off by default in `threadline store` (as Tempo's): on here so its
    # scrape page is checked too.
    store = store_factory(sets=["metrics_generator::processors=[service-graphs, span-metrics]"])
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=store.grpc_endpoint, insecure=True)))
    with provider.get_tracer("e2e.doc").start_as_current_span("GET /cart") as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
    provider.shutdown()
    wait_until(lambda: store.get(f"/api/traces/{trace_id}")[0] == 200, 5.0, "the trace never became readable")

    for example in _documented_examples():
        path = (example.replace("{traceID}", trace_id)
                .replace("{traceQLMetrics}", urllib.parse.quote("{ } | rate()"))
                .replace("{traceQL}", urllib.parse.quote("{ }")))
        status, body = store.get(path)
        assert status == 200, f"docs/api.md lists {example}: GET {path} answered {status} {body[:200]!r}"
        assert body, f"{path}: empty body"
