"""Spans go SDK -> threadline collector (seed agent config, unchanged) -> Python OTLP backend and
arrive intact: ids, names, kinds, times, attributes of every type, resource, scope, events,
links, status; each exactly once."""

from __future__ import annotations

import base64
import json

import pytest
import requests
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from harness import (
    SdkSender,
    assert_delivered_intact,
    assert_rich_content,
    emit_rich_traces,
    flatten_request,
    wait_until,
)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_sdk_spans_arrive_intact(collector_factory, backend, protocol):
    collector = collector_factory(backend)
    endpoint = collector.grpc_endpoint if protocol == "grpc" else collector.http_base
    sender = SdkSender(
        endpoint,
        protocol,
        resource_attributes={
            "deployment.environment": "e2e",
            "host.cores": 2,
            "k8s.pod.ready": True,
            "sample.ratio": 0.1,
            "zones": ["a", "b"],
        },
        # Several exports, so the collector's batch processor merges requests.
        max_export_batch_size=7,
        schedule_delay_ms=50,
    )
    emit_rich_traces(sender, traces=6)
    sender.finish()
    expected = sender.expected_request()
    assert_rich_content(expected)
    sent = {s.span.span_id for s in flatten_request(expected)}
    assert set(sender.exporter.acked) == sent, "the collector refused some exports"

    # The seed batch processor flushes every 2s.
    backend.wait_for_span_ids(sent, timeout=20)
    assert_delivered_intact(expected, backend.spans())

    def counted() -> bool:
        metrics = collector.metrics()
        accepted = metrics.value("otelcol_receiver_accepted_spans", transport=protocol)
        exported = metrics.value("otelcol_exporter_sent_spans", exporter="otlp")
        return accepted == exported == len(sent)

    wait_until(
        counted,
        10,
        lambda: (
            "receiver/exporter span counters do not match what was sent:\n"
            + collector.metrics().text
        ),
    )


# Values chosen to show the OTLP/JSON rules: ids are hex (not base64), 64-bit integers are decimal
# strings (this one does not fit a double), enums are numbers, bytes are base64.
TRACE_ID = "5b8efff798038103d269b633813fc60c"
SPAN_ID = "eee19b7ec3c1b174"
PARENT_ID = "eee19b7ec3c1b173"
LINK_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
LINK_SPAN_ID = "00f067aa0ba902b7"
BIG_INT = 9007199254740993  # 2**53 + 1
START_NS = 1544712660000000000
END_NS = 1544712661123456789

OTLP_JSON = {
    "resourceSpans": [
        {
            "resource": {
                "attributes": [
                    {"key": "service.name", "value": {"stringValue": "json-client"}},
                    {"key": "host.cores", "value": {"intValue": "8"}},
                ],
                "droppedAttributesCount": 1,
            },
            "schemaUrl": "https://opentelemetry.io/schemas/1.21.0",
            "scopeSpans": [
                {
                    "scope": {
                        "name": "json-scope",
                        "version": "2.0.1",
                        "attributes": [{"key": "lib", "value": {"boolValue": True}}],
                    },
                    "schemaUrl": "https://opentelemetry.io/schemas/1.20.0",
                    "spans": [
                        {
                            "traceId": TRACE_ID,
                            "spanId": SPAN_ID,
                            "parentSpanId": PARENT_ID,
                            "traceState": "vendor=x",
                            "flags": 257,
                            "name": "POST /orders",
                            "kind": 2,
                            "startTimeUnixNano": str(START_NS),
                            "endTimeUnixNano": str(END_NS),
                            "attributes": [
                                {"key": "s", "value": {"stringValue": "ünïcode ✓"}},
                                {"key": "b", "value": {"boolValue": False}},
                                {"key": "i", "value": {"intValue": str(BIG_INT)}},
                                {"key": "i.negative", "value": {"intValue": "-42"}},
                                {"key": "d", "value": {"doubleValue": 1.5}},
                                {
                                    "key": "arr",
                                    "value": {
                                        "arrayValue": {
                                            "values": [
                                                {"stringValue": "x"},
                                                {"intValue": "3"},
                                                {"doubleValue": 0.25},
                                                {"boolValue": True},
                                            ]
                                        }
                                    },
                                },
                                {
                                    "key": "kv",
                                    "value": {
                                        "kvlistValue": {
                                            "values": [
                                                {"key": "nested", "value": {"stringValue": "y"}}
                                            ]
                                        }
                                    },
                                },
                                {
                                    "key": "raw",
                                    "value": {
                                        "bytesValue": base64.b64encode(b"\x00\x01\xfe").decode()
                                    },
                                },
                            ],
                            "droppedAttributesCount": 2,
                            "events": [
                                {
                                    "timeUnixNano": str(START_NS + 500),
                                    "name": "retry",
                                    "attributes": [{"key": "attempt", "value": {"intValue": "2"}}],
                                    "droppedAttributesCount": 3,
                                }
                            ],
                            "droppedEventsCount": 4,
                            "links": [
                                {
                                    "traceId": LINK_TRACE_ID,
                                    "spanId": LINK_SPAN_ID,
                                    "traceState": "k=v",
                                    "attributes": [
                                        {"key": "why", "value": {"stringValue": "batch"}}
                                    ],
                                    "flags": 1,
                                }
                            ],
                            "droppedLinksCount": 5,
                            "status": {"code": 2, "message": "payment declined"},
                        }
                    ],
                }
            ],
        }
    ]
}


def expected_json_request() -> trace_service_pb2.ExportTraceServiceRequest:
    """The same data as OTLP_JSON, built field by field (not by a JSON decoder)."""

    def kv(key: str, **value) -> common_pb2.KeyValue:
        return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(**value))

    span = trace_pb2.Span(
        trace_id=bytes.fromhex(TRACE_ID),
        span_id=bytes.fromhex(SPAN_ID),
        parent_span_id=bytes.fromhex(PARENT_ID),
        trace_state="vendor=x",
        flags=257,
        name="POST /orders",
        kind=trace_pb2.Span.SPAN_KIND_SERVER,
        start_time_unix_nano=START_NS,
        end_time_unix_nano=END_NS,
        attributes=[
            kv("s", string_value="ünïcode ✓"),
            kv("b", bool_value=False),
            kv("i", int_value=BIG_INT),
            kv("i.negative", int_value=-42),
            kv("d", double_value=1.5),
            kv(
                "arr",
                array_value=common_pb2.ArrayValue(
                    values=[
                        common_pb2.AnyValue(string_value="x"),
                        common_pb2.AnyValue(int_value=3),
                        common_pb2.AnyValue(double_value=0.25),
                        common_pb2.AnyValue(bool_value=True),
                    ]
                ),
            ),
            kv("kv", kvlist_value=common_pb2.KeyValueList(values=[kv("nested", string_value="y")])),
            kv("raw", bytes_value=b"\x00\x01\xfe"),
        ],
        dropped_attributes_count=2,
        events=[
            trace_pb2.Span.Event(
                time_unix_nano=START_NS + 500,
                name="retry",
                attributes=[kv("attempt", int_value=2)],
                dropped_attributes_count=3,
            )
        ],
        dropped_events_count=4,
        links=[
            trace_pb2.Span.Link(
                trace_id=bytes.fromhex(LINK_TRACE_ID),
                span_id=bytes.fromhex(LINK_SPAN_ID),
                trace_state="k=v",
                attributes=[kv("why", string_value="batch")],
                flags=1,
            )
        ],
        dropped_links_count=5,
        status=trace_pb2.Status(
            code=trace_pb2.Status.STATUS_CODE_ERROR, message="payment declined"
        ),
    )
    return trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                resource=resource_pb2.Resource(
                    attributes=[
                        kv("service.name", string_value="json-client"),
                        kv("host.cores", int_value=8),
                    ],
                    dropped_attributes_count=1,
                ),
                schema_url="https://opentelemetry.io/schemas/1.21.0",
                scope_spans=[
                    trace_pb2.ScopeSpans(
                        scope=common_pb2.InstrumentationScope(
                            name="json-scope",
                            version="2.0.1",
                            attributes=[kv("lib", bool_value=True)],
                        ),
                        schema_url="https://opentelemetry.io/schemas/1.20.0",
                        spans=[span],
                    )
                ],
            )
        ]
    )


def test_otlp_json_over_http_arrives_intact(collector_factory, backend):
    collector = collector_factory(backend)
    response = requests.post(
        collector.traces_url,
        data=json.dumps(OTLP_JSON).encode(),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].split(";")[0].strip() == "application/json"
    body = response.json()  # an ExportTraceServiceResponse in JSON; {} when fully accepted
    assert isinstance(body, dict)
    assert not body.get("partialSuccess", {}).get("rejectedSpans"), body

    backend.wait_for_count(1, timeout=20)
    assert_delivered_intact(expected_json_request(), backend.spans())


def test_protobuf_over_http_answers_protobuf(collector_factory, backend):
    collector = collector_factory(backend)
    request = expected_json_request()
    response = requests.post(
        collector.traces_url,
        data=request.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].split(";")[0].strip() == "application/x-protobuf"
    parsed = trace_service_pb2.ExportTraceServiceResponse.FromString(response.content)
    assert parsed.partial_success.rejected_spans == 0
    backend.wait_for_count(1, timeout=20)
    assert_delivered_intact(request, backend.spans())


def test_json_fixture_and_expected_proto_agree():
    """Guards the fixture above (no collector involved): protobuf's own JSON mapping, given the
    ids in base64 as it expects, decodes OTLP_JSON to exactly expected_json_request()."""
    from google.protobuf import json_format

    def ids_to_base64(node):
        if isinstance(node, dict):
            return {
                key: (
                    base64.b64encode(bytes.fromhex(value)).decode()
                    if key in ("traceId", "spanId", "parentSpanId")
                    else ids_to_base64(value)
                )
                for key, value in node.items()
            }
        if isinstance(node, list):
            return [ids_to_base64(item) for item in node]
        return node

    decoded = json_format.ParseDict(
        ids_to_base64(OTLP_JSON), trace_service_pb2.ExportTraceServiceRequest()
    )
    assert decoded == expected_json_request()
