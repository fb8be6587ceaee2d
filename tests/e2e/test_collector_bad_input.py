"""Bad requests get the answer the OTLP specification prescribes, and the collector keeps serving:
after each one, good requests over gRPC and HTTP still go through to the backend."""

from __future__ import annotations

import gzip

import grpc
import pytest
import requests
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from harness import MIB, RawGrpcClient, make_request, random_trace_id, span_ids_of

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


@pytest.fixture
def collector(collector_factory, backend):
    return collector_factory(
        backend,
        sets=[
            "receivers::otlp::protocols::grpc::max_recv_msg_size_mib=1",
            # Good requests show up at the backend without waiting for the seed's 2s.
            "processors::batch::timeout=100ms",
        ],
    )


@pytest.fixture
def grpc_client(collector):
    client = RawGrpcClient(collector.grpc_endpoint)
    yield client
    client.close()


def post(collector, body: bytes, content_type: str | None, **headers) -> requests.Response:
    if content_type is not None:
        headers["Content-Type"] = content_type
    return requests.post(collector.traces_url, data=body, headers=headers, timeout=10)


def media_type(response: requests.Response) -> str:
    return response.headers.get("Content-Type", "").split(";")[0].strip()


def assert_status_body(response: requests.Response, request_type: str) -> None:
    """An OTLP/HTTP error carries a google.rpc.Status encoded like the request."""
    assert media_type(response) == request_type, response.headers
    if request_type == PROTOBUF:
        status = status_pb2.Status.FromString(response.content)
        assert status.message, "the Status should say what was wrong"
    else:
        assert response.json().get("message"), response.text


def assert_still_serving(collector, backend, grpc_client) -> None:
    over_grpc = make_request(2, service="after-bad-input")
    grpc_client.export(over_grpc)
    over_http = make_request(2, service="after-bad-input")
    response = post(collector, over_http.SerializeToString(), PROTOBUF)
    assert response.status_code == 200, response.text
    backend.wait_for_span_ids(span_ids_of(over_grpc) | span_ids_of(over_http), timeout=15)


def test_malformed_protobuf_is_400(collector, backend, grpc_client):
    response = post(collector, b"\xff\xff\xff\xff\x0fnot protobuf at all", PROTOBUF)
    assert response.status_code == 400
    assert_status_body(response, PROTOBUF)
    with pytest.raises(grpc.RpcError) as failure:
        grpc_client.export_bytes(b"\xff\xff\xff\xff\x0fnot protobuf at all")
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert_still_serving(collector, backend, grpc_client)


def test_malformed_json_is_400(collector, backend, grpc_client):
    response = post(collector, b'{"resourceSpans": [ {"scopeSpans": ', JSON)
    assert response.status_code == 400
    assert_status_body(response, JSON)
    assert_still_serving(collector, backend, grpc_client)


def test_json_with_non_hex_trace_id_is_400(collector, backend, grpc_client):
    body = (
        b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"not-hex-at-all-zzzzzzzzzzzzzzzz",'
        b'"spanId":"eee19b7ec3c1b174","name":"x"}]}]}]}'
    )
    response = post(collector, body, JSON)
    assert response.status_code == 400
    assert_status_body(response, JSON)
    assert_still_serving(collector, backend, grpc_client)


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", None])
def test_unsupported_content_type_is_415(collector, backend, grpc_client, content_type):
    response = post(collector, make_request(1).SerializeToString(), content_type)
    assert response.status_code == 415
    assert_still_serving(collector, backend, grpc_client)


def test_get_is_405(collector, backend, grpc_client):
    response = requests.get(collector.traces_url, timeout=10)
    assert response.status_code == 405
    assert_still_serving(collector, backend, grpc_client)


def test_grpc_message_over_max_recv_msg_size_is_resource_exhausted(collector, backend, grpc_client):
    request = make_request(2, attribute_bytes=MIB)  # ~2 MiB, limit set to 1 MiB
    assert request.ByteSize() > 2 * MIB - 1024
    with pytest.raises(grpc.RpcError) as failure:
        grpc_client.export(request)
    assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert backend.span_count() == 0
    assert_still_serving(collector, backend, grpc_client)


def wrong_length_trace_id_request() -> trace_service_pb2.ExportTraceServiceRequest:
    request = make_request(2)
    request.resource_spans[0].scope_spans[0].spans[1].trace_id = b"\x01" * 15
    return request


def test_wrong_length_trace_id_is_invalid(collector, backend, grpc_client):
    request = wrong_length_trace_id_request()
    response = post(collector, request.SerializeToString(), PROTOBUF)
    assert response.status_code == 400
    assert_status_body(response, PROTOBUF)
    with pytest.raises(grpc.RpcError) as failure:
        grpc_client.export(request)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert_still_serving(collector, backend, grpc_client)
    assert not (span_ids_of(request) & {s.span.span_id for s in backend.spans()}), (
        "no span of an invalid request may be delivered"
    )


def zero_trace_id_request(good: int, zero: int) -> trace_service_pb2.ExportTraceServiceRequest:
    request = make_request(good + zero)
    spans = request.resource_spans[0].scope_spans[0].spans
    for span in spans[good:]:
        span.trace_id = b"\x00" * 16
    return request


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_all_zero_trace_id_spans_are_rejected_as_partial_success(
    collector, backend, grpc_client, transport
):
    request = zero_trace_id_request(good=3, zero=2)
    spans = request.resource_spans[0].scope_spans[0].spans
    good_ids = {s.span_id for s in spans[:3]}
    zero_ids = {s.span_id for s in spans[3:]}
    if transport == "grpc":
        answer = grpc_client.export(request)
    else:
        response = post(collector, request.SerializeToString(), PROTOBUF)
        assert response.status_code == 200, response.text
        assert media_type(response) == PROTOBUF
        answer = trace_service_pb2.ExportTraceServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_spans == 2
    backend.wait_for_span_ids(good_ids, timeout=15)
    assert not zero_ids & {s.span.span_id for s in backend.spans()}
    assert_still_serving(collector, backend, grpc_client)
    assert not zero_ids & {s.span.span_id for s in backend.spans()}


def test_gzip_body_is_accepted(collector, backend, grpc_client):
    request = make_request(5, attribute_bytes=200)
    response = post(
        collector,
        gzip.compress(request.SerializeToString()),
        PROTOBUF,
        **{"Content-Encoding": "gzip"},
    )
    assert response.status_code == 200, response.text
    backend.wait_for_span_ids(span_ids_of(request), timeout=15)
    assert_still_serving(collector, backend, grpc_client)


def test_gzip_json_body_is_accepted(collector, backend, grpc_client):
    trace_id = random_trace_id().hex()
    body = (
        '{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":'
        '{"stringValue":"gz-json"}}]},"scopeSpans":[{"spans":[{"traceId":"%s",'
        '"spanId":"0102030405060708","name":"gz","kind":1,'
        '"startTimeUnixNano":"1","endTimeUnixNano":"2"}]}]}]}' % trace_id
    ).encode()
    response = post(collector, gzip.compress(body), JSON, **{"Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert media_type(response) == JSON
    backend.wait_for_span_ids({bytes.fromhex("0102030405060708")}, timeout=15)
    assert_still_serving(collector, backend, grpc_client)


def test_bad_gzip_is_400(collector, backend, grpc_client):
    response = post(
        collector,
        make_request(1).SerializeToString(),  # not gzip, though the header says so
        PROTOBUF,
        **{"Content-Encoding": "gzip"},
    )
    assert response.status_code == 400
    truncated = gzip.compress(make_request(50).SerializeToString())[:-20]
    response = post(collector, truncated, PROTOBUF, **{"Content-Encoding": "gzip"})
    assert response.status_code == 400
    assert_still_serving(collector, backend, grpc_client)
