"""Hostile and broken clients (issue 19, item 3): each gets the prescribed error or is cut off,
memory stays under the seed's memory_limiter limit (300 MiB), and other clients keep being served
while it happens."""

from __future__ import annotations

import gzip
import json
import socket
import time

import grpc
import pytest
import requests
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from harness import (
    LOOPBACK,
    RawGrpcClient,
    SdkSender,
    make_request,
    rss_mib,
    span_ids_of,
)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
LIMIT_MIB = 300  # the seed agent config's memory_limiter::limit_mib
QUIET_S = 3


@pytest.fixture
def collector(collector_factory, backend):
    return collector_factory(
        backend,
        sets=[
            "processors::batch::timeout=100ms",
            "receivers::otlp::protocols::http::max_request_body_size=4194304",
            f"receivers::otlp::protocols::http::read_header_timeout={QUIET_S}s",
            f"receivers::otlp::protocols::http::read_timeout={QUIET_S}s",
            f"receivers::otlp::protocols::http::idle_timeout={QUIET_S}s",
            f"receivers::otlp::protocols::grpc::keepalive::server_parameters::max_connection_idle={QUIET_S}s",
        ],
    )


def assert_served_meanwhile(collector, backend) -> None:
    """A well-behaved client still gets through, over both protocols."""
    client = RawGrpcClient(collector.grpc_endpoint)
    try:
        over_grpc = make_request(3, service="well-behaved")
        client.export(over_grpc, timeout=10)
    finally:
        client.close()
    over_http = make_request(3, service="well-behaved")
    response = requests.post(
        collector.traces_url,
        data=over_http.SerializeToString(),
        headers={"Content-Type": PROTOBUF},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    backend.wait_for_span_ids(span_ids_of(over_grpc) | span_ids_of(over_http), timeout=15)


def assert_memory_under_limit(collector) -> None:
    rss = rss_mib(collector.pid)
    assert rss is not None, "the collector exited"
    assert rss < LIMIT_MIB, f"RSS {rss:.0f} MiB is past the memory_limiter limit"


def bomb(expanded_bytes: int) -> bytes:
    """A gzip body of zeros: about a thousandth of `expanded_bytes`."""
    return gzip.compress(b"\0" * expanded_bytes, compresslevel=9)


def test_a_10kb_gzip_bomb_is_refused_at_once_over_http_and_grpc(collector, backend):
    body = bomb(10 * 1024 * 1024)
    assert len(body) < 12 * 1024
    started = time.monotonic()
    response = requests.post(
        collector.traces_url,
        data=body,
        headers={"Content-Type": PROTOBUF, "Content-Encoding": "gzip"},
        timeout=10,
    )
    assert response.status_code == 413, response.text
    assert time.monotonic() - started < 2

    # gRPC: a message that expands past max_recv_msg_size_mib (4) is RESOURCE_EXHAUSTED. The
    # client compresses the 64 MiB message itself (grpc-encoding: gzip).
    channel = grpc.insecure_channel(
        collector.grpc_endpoint,
        compression=grpc.Compression.Gzip,
        options=[("grpc.max_send_message_length", -1)],
    )
    try:
        export = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=None,
            response_deserializer=trace_service_pb2.ExportTraceServiceResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as failure:
            export(b"\0" * (64 * 1024 * 1024), timeout=30)
        assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, failure.value
    finally:
        channel.close()
    assert_memory_under_limit(collector)
    assert_served_meanwhile(collector, backend)


def test_deeply_nested_json_is_400_naming_the_problem(collector, backend):
    depth = 50_000
    value = '{"stringValue":"leaf"}'
    nested = '{"kvlistValue":{"values":[{"key":"k","value":' * depth + value + "}]}}" * depth
    body = (
        '{"resourceSpans":[{"resource":{"attributes":[{"key":"deep","value":'
        + nested
        + "}]},\"scopeSpans\":[]}]}"
    )
    response = requests.post(
        collector.traces_url, data=body, headers={"Content-Type": JSON}, timeout=10
    )
    assert response.status_code == 400, response.text[:500]
    message = response.json()["message"]
    assert "JSON" in message, message
    assert_memory_under_limit(collector)
    assert_served_meanwhile(collector, backend)


def test_a_span_with_a_million_tiny_attributes_keeps_memory_under_the_limit(
    collector_factory, backend
):
    # The default body limit (20 MiB): the 9 MB request is read and decoded.
    collector = collector_factory(backend, sets=["processors::batch::timeout=100ms"])
    request = make_request(1, service="many-attributes")
    span = request.resource_spans[0].scope_spans[0].spans[0]
    for i in range(1_000_000):
        span.attributes.add(key="a").value.int_value = i & 0x7F
    body = request.SerializeToString()
    assert len(body) < 20 * 1024 * 1024
    response = requests.post(
        collector.traces_url, data=body, headers={"Content-Type": PROTOBUF}, timeout=60
    )
    # Valid OTLP: accepted (or refused while the memory limiter refuses), never a crash.
    assert response.status_code in (200, 503), response.text[:500]
    assert_memory_under_limit(collector)
    assert_served_meanwhile(collector, backend)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection((LOOPBACK, port), timeout=10)
    sock.settimeout(0.5)
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(65536) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_headers_sent_a_byte_a_second_are_cut_off_after_read_header_timeout(collector, backend):
    sock = connect(collector.ports.http)
    request_line = b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
    started = time.monotonic()
    closed = False
    try:
        for byte in request_line:
            sock.sendall(bytes([byte]))
            if closed_by_server(sock):
                closed = True
                break
            time.sleep(0.5)
    except (BrokenPipeError, ConnectionResetError):
        closed = True
    took = time.monotonic() - started
    sock.close()
    assert closed, "the slow client was never cut off"
    assert QUIET_S - 0.5 <= took < QUIET_S + 3, f"cut off after {took:.1f}s"
    assert_served_meanwhile(collector, backend)


def test_a_body_sent_a_byte_a_second_gets_408_after_read_timeout(collector, backend):
    sock = connect(collector.ports.http)
    sock.sendall(
        b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
        b"Content-Length: 1000\r\n\r\n"
    )
    started = time.monotonic()
    answer = b""
    while time.monotonic() - started < QUIET_S + 5:
        try:
            sock.sendall(b"\n")
        except (BrokenPipeError, ConnectionResetError):
            break
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            time.sleep(0.5)
            continue
        if not chunk:
            break
        answer += chunk
        if b"\r\n\r\n" in answer:
            break
    took = time.monotonic() - started
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"read_timeout" in answer
    assert QUIET_S - 0.5 <= took < QUIET_S + 3, f"answered after {took:.1f}s"
    assert_served_meanwhile(collector, backend)


def test_a_thousand_idle_connections_per_port_are_closed_and_others_are_served(
    collector, backend
):
    idle = [connect(collector.ports.http) for _ in range(1000)]
    idle += [connect(collector.ports.grpc) for _ in range(1000)]
    try:
        # While they hang open, an SDK's traffic goes through.
        sender = SdkSender(collector.grpc_endpoint, "grpc", schedule_delay_ms=50)
        tracer = sender.tracer()
        for i in range(50):
            with tracer.start_as_current_span("served", attributes={"i": i}):
                pass
        sender.finish()
        assert len(sender.exporter.acked) == 50
        backend.wait_for_span_ids(sender.sent_span_ids(), timeout=15)
        assert_memory_under_limit(collector)

        deadline = time.monotonic() + QUIET_S + 10
        open_ones = list(idle)
        while open_ones and time.monotonic() < deadline:
            time.sleep(1)
            for sock in list(open_ones):
                sock.settimeout(0.001)
                if closed_by_server(sock):
                    open_ones.remove(sock)
        assert not open_ones, f"{len(open_ones)} of {len(idle)} idle connections still open"
    finally:
        for sock in idle:
            sock.close()
    assert_served_meanwhile(collector, backend)
