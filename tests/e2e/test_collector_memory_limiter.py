"""Overload: the backend refuses everything, data piles up and senders blast large requests.
The memory_limiter must keep the collector's RSS under limit_mib by refusing data with retryable
answers; once the backend recovers, an SDK (which retries those answers) gets everything through."""

from __future__ import annotations

import collections
import threading
import time

import grpc
import pytest
import requests

from harness import (
    BackendMode,
    OtlpBackend,
    RawGrpcClient,
    RssSampler,
    SdkSender,
    make_request,
    rss_mib,
)

LIMIT_MIB = 150
SPIKE_MIB = 50
BLAST_S = 15
BLAST_THREADS = 6  # per transport
BULK_SERVICE = "e2e-bulk"


@pytest.mark.slow
def test_memory_limiter_bounds_rss_and_refuses_retryably(collector_factory):
    # The bulk spans are only counted by the backend, so the Python side stays small and fast.
    backend = OtlpBackend(discard_services={BULK_SERVICE}).start()
    try:
        _run_overload(collector_factory, backend)
    finally:
        backend.stop()


def _run_overload(collector_factory, backend: OtlpBackend) -> None:
    backend.set_mode(BackendMode.UNAVAILABLE)
    collector = collector_factory(
        backend,
        sets=[
            f"processors::memory_limiter::limit_mib={LIMIT_MIB}",
            f"processors::memory_limiter::spike_limit_mib={SPIKE_MIB}",
            # Quick re-tries once the backend is back, so the piled-up data drains within the test.
            "exporters::otlp::retry_on_failure::initial_interval=200ms",
            "exporters::otlp::retry_on_failure::max_interval=1s",
        ],
    )
    baseline = rss_mib(collector.pid)
    assert baseline is not None and baseline < LIMIT_MIB - SPIKE_MIB, (
        f"idle RSS {baseline:.0f} MiB leaves no room under the soft limit"
    )
    sampler = RssSampler(collector.pid, interval=0.1).start()

    # ~3 MiB per request, under the gRPC receiver's default 4 MiB message limit.
    payload = make_request(3000, service=BULK_SERVICE, attribute_bytes=900).SerializeToString()
    assert 2.5 * 1024 * 1024 < len(payload) < 4 * 1024 * 1024

    outcomes: dict[str, collections.Counter] = {
        "grpc": collections.Counter(),
        "http": collections.Counter(),
    }
    missing_retry_after: list[int] = []
    lock = threading.Lock()
    stop_blasting = threading.Event()

    def blast_grpc() -> None:
        client = RawGrpcClient(collector.grpc_endpoint)
        try:
            while not stop_blasting.is_set():
                try:
                    client.export_bytes(payload, timeout=10)
                    outcome = "OK"
                except grpc.RpcError as err:
                    outcome = err.code().name
                with lock:
                    outcomes["grpc"][outcome] += 1
        finally:
            client.close()

    def blast_http() -> None:
        session = requests.Session()
        while not stop_blasting.is_set():
            try:
                response = session.post(
                    collector.traces_url,
                    data=payload,
                    headers={"Content-Type": "application/x-protobuf"},
                    timeout=10,
                )
                outcome = response.status_code
                if outcome in (429, 503) and "Retry-After" not in response.headers:
                    with lock:
                        missing_retry_after.append(outcome)
            except requests.RequestException as err:
                outcome = type(err).__name__
            with lock:
                outcomes["http"][outcome] += 1

    threads = [threading.Thread(target=blast_grpc, daemon=True) for _ in range(BLAST_THREADS)]
    threads += [threading.Thread(target=blast_http, daemon=True) for _ in range(BLAST_THREADS)]
    for thread in threads:
        thread.start()

    # Meanwhile an instrumented service keeps sending through the SDK, which retries refusals.
    sender = SdkSender(
        collector.grpc_endpoint,
        "grpc",
        timeout_s=120,
        schedule_delay_ms=200,
        max_export_batch_size=50,
    )
    tracer = sender.tracer()
    started = time.monotonic()
    i = 0
    while time.monotonic() - started < BLAST_S:
        with tracer.start_as_current_span("checkout under overload", attributes={"i": i}):
            pass
        i += 1
        time.sleep(0.05)

    stop_blasting.set()
    for thread in threads:
        thread.join(timeout=30)
    backend.set_mode(BackendMode.ACCEPT)
    sender.finish(timeout_s=150)
    sent = sender.sent_span_ids()
    try:
        backend.wait_for_span_ids(sent, timeout=120)
        drain_failure = None
    except AssertionError as failure:
        drain_failure = failure  # reported after the memory and refusal checks, which say more
    sampler.stop()

    assert collector.is_running(), "the collector died under load"
    assert sampler.peak_mib <= LIMIT_MIB, (
        f"RSS peaked at {sampler.peak_mib:.0f} MiB, over limit_mib={LIMIT_MIB} "
        f"(outcomes {dict(outcomes['grpc'])} / {dict(outcomes['http'])})"
    )
    grpc_refused = outcomes["grpc"]["RESOURCE_EXHAUSTED"] + outcomes["grpc"]["UNAVAILABLE"]
    http_refused = outcomes["http"][429] + outcomes["http"][503]
    assert grpc_refused > 0, f"gRPC senders were never refused: {dict(outcomes['grpc'])}"
    assert http_refused > 0, f"HTTP senders were never refused: {dict(outcomes['http'])}"
    unexpected_grpc = set(outcomes["grpc"]) - {"OK", "RESOURCE_EXHAUSTED", "UNAVAILABLE"}
    unexpected_http = set(outcomes["http"]) - {200, 429, 503}
    assert not unexpected_grpc, f"non-retryable gRPC answers under load: {dict(outcomes['grpc'])}"
    assert not unexpected_http, f"non-retryable HTTP answers under load: {dict(outcomes['http'])}"
    assert not missing_retry_after, (
        f"{len(missing_retry_after)} HTTP refusals came without a Retry-After header"
    )
    if drain_failure is not None:
        raise drain_failure
    assert not sender.exporter.failed, (
        f"the SDK gave up on {len(sender.exporter.failed)} spans despite retrying"
    )
    counts = backend.span_id_counts()
    assert all(counts[span_id] == 1 for span_id in sent), "SDK spans were duplicated"
