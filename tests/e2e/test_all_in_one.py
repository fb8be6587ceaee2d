"""`threadline all-in-one` on its built-in pipeline (tail sampling with the seed's policies into the
embedded store), fed by the upstream Python SDK, queried with `threadline search` and `trace`."""

from __future__ import annotations

import time

from harness import LOOPBACK, ManagedProcess, free_port, require_binary, run_threadline, wait_until
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode


def test_all_in_one_keeps_error_traces_whole_and_the_terminal_shows_them(process_factory, tmp_path):
    grpc, http, api, health, metrics = (free_port() for _ in range(5))
    aio = process_factory("all-in-one", [
        str(require_binary()), "all-in-one", "--data", str(tmp_path / "data"),
        "--set", f"receivers::otlp::protocols::grpc::endpoint={LOOPBACK}:{grpc}",
        "--set", f"receivers::otlp::protocols::http::endpoint={LOOPBACK}:{http}",
        "--set", f"extensions::health_check::endpoint={LOOPBACK}:{health}",
        "--set", f"service::telemetry::metrics::address={LOOPBACK}:{metrics}",
        "--set", "processors::tail_sampling::decision_wait=1s",
        "--store-set", f"server::http_listen_port={api}",
    ], ready_url=f"http://{LOOPBACK}:{api}/ready", ready_ports=[grpc, http])
    aio.start()
    assert "Threadline all-in-one is running." in aio.all_output_text()

    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{LOOPBACK}:{grpc}", insecure=True),
                                                   schedule_delay_millis=100))
    tracer = provider.get_tracer("e2e")
    error_ids, normal_ids = [], []
    for i in range(40):
        with tracer.start_as_current_span("POST /api/checkout", kind=SpanKind.SERVER) as root:
            with tracer.start_as_current_span("charge card", kind=SpanKind.CLIENT) as child:
                if i % 10 == 0:
                    child.set_status(Status(StatusCode.ERROR, "card declined"))
        (error_ids if i % 10 == 0 else normal_ids).append(format(root.get_span_context().trace_id, "032x"))
    provider.shutdown()

    api_url = f"http://{LOOPBACK}:{api}"

    def listed() -> set[str]:
        result = run_threadline(["search", "{ status = error }", "--api", api_url, "--limit", "50"])
        assert result.returncode == 0, result.stderr
        return {line[:32] for line in result.stdout.splitlines()[1:]}

    wait_until(lambda: listed() >= set(error_ids), 20, lambda: f"listed {listed()}", interval=0.5)
    assert listed() == set(error_ids), "only error traces match { status = error }"

    waterfall = run_threadline(["trace", error_ids[0], "--api", api_url])
    assert waterfall.returncode == 0, waterfall.stderr
    lines = waterfall.stdout.splitlines()
    assert lines[0].startswith(f"trace {error_ids[0]}  2 spans")
    assert lines[2].startswith("POST /api/checkout") and "checkout" in lines[2]
    assert lines[3].startswith("  charge card") and "ERROR" in lines[3]

    # Normal traces: about 10% kept (probabilistic), never split.
    time.sleep(1.5)
    kept = run_threadline(["search", "{ }", "--api", api_url, "--limit", "100"]).stdout.splitlines()[1:]
    kept_normal = {line[:32] for line in kept} & set(normal_ids)
    assert len(kept_normal) <= 15, kept_normal

    bad = run_threadline(["search", "{ status = }", "--api", api_url])
    assert bad.returncode != 0 and "400" in bad.stderr and "column 12" in bad.stderr
    missing = run_threadline(["trace", "ab" * 16, "--api", api_url])
    assert missing.returncode != 0 and "404" in missing.stderr


def test_an_early_search_says_why_nothing_matches(process_factory, tmp_path):
    """In all-in-one's first seconds a search finds nothing: it says that the store holds no traces
    yet and that tail sampling holds each trace for decision_wait; once traces are stored, a search
    that matches none says only the latter."""
    grpc, http, api, health, metrics = (free_port() for _ in range(5))
    aio = process_factory("all-in-one", [
        str(require_binary()), "all-in-one", "--data", str(tmp_path / "data"),
        "--set", f"receivers::otlp::protocols::grpc::endpoint={LOOPBACK}:{grpc}",
        "--set", f"receivers::otlp::protocols::http::endpoint={LOOPBACK}:{http}",
        "--set", f"extensions::health_check::endpoint={LOOPBACK}:{health}",
        "--set", f"service::telemetry::metrics::address={LOOPBACK}:{metrics}",
        "--set", "processors::tail_sampling::decision_wait=2500ms",
        "--store-set", f"server::http_listen_port={api}",
    ], ready_url=f"http://{LOOPBACK}:{api}/ready", ready_ports=[grpc, http])
    aio.start()
    assert "a trace is stored about 3s after its first span" in aio.all_output_text()
    api_url = f"http://{LOOPBACK}:{api}"
    held = ("note: traces reach this store 3s after their first span (the pipeline's tail_sampling "
            "decision_wait), and only those its policies keep")

    early = run_threadline(["search", "{ status = error }", "--api", api_url])
    assert early.returncode == 0, early.stderr
    assert early.stdout.splitlines() == [f"no traces match: {api_url} holds no traces yet", held], early.stdout

    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{LOOPBACK}:{grpc}", insecure=True),
                                                   schedule_delay_millis=100))
    tracer = provider.get_tracer("e2e")
    with tracer.start_as_current_span("POST /api/checkout", kind=SpanKind.SERVER) as root:
        root.set_status(Status(StatusCode.ERROR, "card declined"))
    trace_id = format(root.get_span_context().trace_id, "032x")
    provider.shutdown()

    def listed() -> list[str]:
        result = run_threadline(["search", "{ status = error }", "--api", api_url])
        assert result.returncode == 0, result.stderr
        return [line[:32] for line in result.stdout.splitlines()[1:]] if "TRACE ID" in result.stdout else []

    wait_until(lambda: listed() == [trace_id], 20, lambda: f"listed {listed()}", interval=0.3)
    # Stored traces, none matching: no claim that the store is empty, the note stays.
    none = run_threadline(["search", '{ name = "no such span" }', "--api", api_url])
    assert none.returncode == 0, none.stderr
    assert none.stdout.splitlines() == ["no traces match", held], none.stdout
