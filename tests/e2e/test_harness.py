"""The harness checked on its own, without a collector: the Python backend is a correct OTLP
receiver for the upstream SDK, the comparison catches changes, processes are stopped as promised.
If these fail, a collector test failure says nothing about the collector."""

from __future__ import annotations

import socket
import sys
import textwrap
import time

import grpc
import pytest

from harness import (
    BackendMode,
    Metrics,
    OtlpBackend,
    RawGrpcClient,
    ReceivedSpan,
    SdkSender,
    assert_delivered_intact,
    assert_rich_content,
    emit_rich_traces,
    free_port,
    make_request,
    span_ids_of,
)


def test_free_ports_are_distinct_and_bindable():
    ports = [free_port() for _ in range(20)]
    assert len(set(ports)) == len(ports)
    for port in ports[:3]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


@pytest.mark.parametrize("processor", ["batch", "simple"])
def test_sdk_grpc_exporter_to_backend_delivers_intact(backend, processor):
    sender = SdkSender(backend.endpoint, "grpc", processor=processor)
    emit_rich_traces(sender, traces=2)
    sender.finish()
    expected = sender.expected_request()
    assert_rich_content(expected)
    assert sorted(sender.exporter.acked) == sorted(span_ids_of(expected))
    assert_delivered_intact(expected, backend.spans())


def test_comparison_detects_changed_missing_and_duplicated_spans(backend):
    sender = SdkSender(backend.endpoint, "grpc", processor="simple")
    emit_rich_traces(sender, traces=1)
    sender.finish()
    expected = sender.expected_request()
    received = backend.spans()

    changed_span = type(received[0].span)()
    changed_span.CopyFrom(received[0].span)
    changed_span.attributes[0].value.string_value += "!"
    changed = [ReceivedSpan(**{**received[0].__dict__, "span": changed_span})] + received[1:]
    with pytest.raises(AssertionError, match="changed in transit"):
        assert_delivered_intact(expected, changed)

    changed_resource = type(received[0].resource)()
    changed_resource.CopyFrom(received[0].resource)
    changed_resource.attributes.add(key="extra").value.bool_value = True
    changed = [ReceivedSpan(**{**received[0].__dict__, "resource": changed_resource})]
    with pytest.raises(AssertionError, match="resource changed"):
        assert_delivered_intact(expected, changed + received[1:])

    with pytest.raises(AssertionError, match="never arrived"):
        assert_delivered_intact(expected, received[1:])
    with pytest.raises(AssertionError, match="more than once"):
        assert_delivered_intact(expected, received + received[:1])


def test_backend_stops_and_starts_again_on_the_same_port(backend):
    client = RawGrpcClient(backend.endpoint)
    try:
        first = make_request(3)
        client.export(first)
        backend.stop()
        with pytest.raises(grpc.RpcError) as refused:
            client.export(make_request(1), timeout=2)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        backend.start()
        second = make_request(4)
        # The client's channel is in reconnect back-off after the refusal: wait for it.
        client.export(second, timeout=10, wait_for_ready=True)
        assert {s.span.span_id for s in backend.spans()} == span_ids_of(first) | span_ids_of(second)
    finally:
        client.close()


def test_backend_unavailable_mode_refuses_then_recovers(backend):
    client = RawGrpcClient(backend.endpoint)
    try:
        backend.set_mode(BackendMode.UNAVAILABLE)
        with pytest.raises(grpc.RpcError) as refused:
            client.export(make_request(2))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert backend.span_count() == 0 and backend.refused_requests == 1
        backend.set_mode(BackendMode.ACCEPT)
        request = make_request(2)
        client.export(request)
        backend.wait_for_span_ids(span_ids_of(request), timeout=5)
    finally:
        client.close()


def test_backend_discards_bulk_services_but_counts_them():
    server = OtlpBackend(discard_services={"bulk"}).start()
    client = RawGrpcClient(server.endpoint)
    try:
        client.export(make_request(5, service="bulk"))
        kept = make_request(2, service="kept")
        client.export(kept)
        assert server.discarded_spans == 5
        assert {s.span.span_id for s in server.spans()} == span_ids_of(kept)
    finally:
        client.close()
        server.stop()


def test_sdk_retries_while_backend_is_down_and_delivers_when_it_returns(backend):
    """The property the outage and overload tests rely on: the SDK exporter retries UNAVAILABLE."""
    backend.set_mode(BackendMode.UNAVAILABLE)
    sender = SdkSender(backend.endpoint, "grpc", processor="batch", timeout_s=30)
    emit_rich_traces(sender, traces=1)
    time.sleep(2.0)
    assert backend.refused_requests >= 1
    backend.set_mode(BackendMode.ACCEPT)
    sender.finish()
    assert_delivered_intact(sender.expected_request(), backend.spans())


def _python_script(tmp_path, name: str, body: str):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return [sys.executable, str(path)]


def test_process_waits_for_readiness_and_stops_with_sigterm(process_factory, tmp_path):
    port = free_port()
    argv = _python_script(
        tmp_path,
        "server.py",
        f"""
        import http.server, signal, sys, time
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        print("starting", flush=True)
        time.sleep(0.5)  # readiness must be waited for, not assumed
        class Ok(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200); self.end_headers()
            def log_message(self, *args):
                pass
        http.server.HTTPServer(("127.0.0.1", {port}), Ok).serve_forever()
        """,
    )
    process = process_factory("ok-server", argv, ready_url=f"http://127.0.0.1:{port}/")
    started = time.monotonic()
    process.start(timeout=10)
    assert time.monotonic() - started >= 0.4
    assert process.is_running()
    assert process.stop(timeout=5) == 0
    assert not process.needed_sigkill
    assert "starting" in process.output()


def test_process_that_ignores_sigterm_is_killed_after_the_timeout(process_factory, tmp_path):
    argv = _python_script(
        tmp_path,
        "stubborn.py",
        """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(600)
        """,
    )
    process = process_factory("stubborn", argv)
    process.start(wait_ready=False)
    time.sleep(0.5)
    started = time.monotonic()
    code = process.stop(timeout=1.0)
    assert process.needed_sigkill
    assert code == -9
    assert 0.9 <= time.monotonic() - started < 5


def test_kill9_and_restart_keep_logs_of_each_run(process_factory, tmp_path):
    argv = _python_script(
        tmp_path,
        "sleeper.py",
        """
        import os, time
        print("run of pid", os.getpid(), flush=True)
        time.sleep(600)
        """,
    )
    process = process_factory("sleeper", argv)
    process.start(wait_ready=False)
    first_pid = process.pid
    time.sleep(0.3)
    process.kill9()
    assert process.popen.returncode == -9
    process.start(wait_ready=False)
    assert process.pid != first_pid
    time.sleep(0.3)
    assert process.stop(timeout=5) == -15  # Python's default SIGTERM action
    output = process.output()
    assert f"run of pid {first_pid}" in output and f"run of pid {process.pid}" in output


def test_process_that_dies_before_ready_fails_fast_with_its_output(process_factory, tmp_path):
    argv = _python_script(
        tmp_path,
        "dies.py",
        """
        import sys
        print("bad config: receivers::otlp", file=sys.stderr)
        sys.exit(3)
        """,
    )
    process = process_factory("dies", argv, ready_url=f"http://127.0.0.1:{free_port()}/")
    started = time.monotonic()
    with pytest.raises(AssertionError, match="exited with code 3") as failure:
        process.start(timeout=20)
    assert "bad config: receivers::otlp" in str(failure.value)
    assert time.monotonic() - started < 5


def test_metrics_parser_reads_prometheus_text():
    text = textwrap.dedent(
        """\
        # HELP otelcol_receiver_accepted_spans Number of spans successfully pushed into the pipeline.
        # TYPE otelcol_receiver_accepted_spans counter
        otelcol_receiver_accepted_spans{receiver="otlp",service_name="threadline",transport="grpc"} 10
        otelcol_receiver_accepted_spans{receiver="otlp",service_name="threadline",transport="http"} 5
        otelcol_exporter_sent_spans_total{exporter="otlp"} 15 1700000000000
        otelcol_exporter_queue_size{data_type="traces",exporter="otlp",path="a\\"b"} 3
        otelcol_process_memory_rss 1.2e+07
        """
    )
    metrics = Metrics.parse(text)
    assert metrics.value("otelcol_receiver_accepted_spans") == 15
    assert metrics.value("otelcol_receiver_accepted_spans", transport="grpc") == 10
    assert metrics.value("otelcol_exporter_sent_spans", exporter="otlp") == 15
    assert metrics.value("otelcol_exporter_queue_size", path='a"b') == 3
    assert metrics.value("otelcol_process_memory_rss") == 12_000_000
    assert metrics.value("otelcol_missing") == 0 and not metrics.has("otelcol_missing")
    with pytest.raises(ValueError):
        Metrics.parse("not a sample line at all {")
