"""A small sending queue and a backend down for two minutes: the collector pushes back instead of
acknowledging what it cannot hold, the SDK retries, and every span it was told was accepted
arrives (issue 19, item 2; the seed agent config with `sending_queue.queue_size: 4`)."""

from __future__ import annotations

import threading
import time

import pytest

from harness import SdkSender, wait_until

OUTAGE_S = 120
SPANS_PER_SECOND = 200


@pytest.mark.slow
def test_full_queue_during_a_120s_outage_refuses_retryably_and_loses_no_acknowledged_span(
    collector_factory, backend
):
    collector = collector_factory(
        backend,
        sets=[
            "exporters::otlp::sending_queue::queue_size=4",
            # Short batches fill the four-request queue within seconds of the outage.
            "processors::batch::timeout=200ms",
            "processors::batch::send_batch_size=100",
        ],
    )
    # Each SDK export waits at most 5 s (its own retries of UNAVAILABLE included): refused
    # batches then show as failed exports, as an application would see them.
    sender = SdkSender(collector.grpc_endpoint, "grpc", schedule_delay_ms=100, timeout_s=5)
    tracer = sender.tracer()

    stop = threading.Event()
    emitted = 0

    def emit() -> None:
        nonlocal emitted
        interval = 1.0 / SPANS_PER_SECOND
        while not stop.is_set():
            with tracer.start_as_current_span("checkout", attributes={"i": emitted}):
                pass
            emitted += 1
            time.sleep(interval)

    backend.stop()
    worker = threading.Thread(target=emit, daemon=True)
    worker.start()
    time.sleep(OUTAGE_S)
    metrics = collector.metrics()
    refused = metrics.value("otelcol_receiver_refused_spans")
    accepted_in_outage = metrics.value("otelcol_receiver_accepted_spans")
    backend.start()
    time.sleep(5)
    stop.set()
    worker.join(10)
    sender.finish(timeout_s=120)

    assert refused > 0, "a full sending queue must make the receiver refuse (retryably)"
    # The collector holds what its queue, workers and batcher can, and no more: acknowledging
    # 200 spans/s for two minutes would have been 24,000 spans.
    assert accepted_in_outage < 0.5 * OUTAGE_S * SPANS_PER_SECOND, (
        f"{accepted_in_outage} spans acknowledged during the outage: the queue did not push back"
    )
    acked = set(sender.exporter.acked)
    assert sender.exporter.failed, "the SDK never saw a refusal"
    assert acked, "nothing was accepted"
    # Default retry_on_failure: back-off up to 30 s (+ jitter) between attempts.
    backend.wait_for_span_ids(acked, timeout=120)
    wait_until(
        lambda: collector.metrics().value("otelcol_exporter_send_failed_spans", exporter="otlp")
        == 0,
        5,
        "the exporter dropped spans",
    )
    print(
        f"emitted {emitted}, acknowledged {len(acked)}, refused {len(sender.exporter.failed)} "
        f"(receiver refused {refused:.0f} during the outage), all acknowledged delivered"
    )
