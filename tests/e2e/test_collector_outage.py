"""The backend goes away and comes back; the collector crashes: acknowledged spans are not lost."""

from __future__ import annotations

import time

import pytest

from harness import (
    TESTDATA,
    SdkSender,
    assert_delivered_intact,
    seed_config,
    wait_until,
)

OUTAGE_S = 30


@pytest.mark.slow
def test_backend_down_for_30s_then_back_loses_nothing(collector_factory, backend):
    collector = collector_factory(backend)
    sender = SdkSender(collector.grpc_endpoint, "grpc", schedule_delay_ms=100)
    tracer = sender.tracer()

    with tracer.start_as_current_span("before the outage"):
        pass
    assert sender.provider.force_flush(10_000)
    backend.wait_for_count(1, timeout=20)
    # Stop only once the backend's answer reached the collector: a call cut off between the
    # backend storing the span and answering is retried, and at-least-once delivery would then
    # (correctly) deliver that span twice.
    wait_until(
        lambda: collector.metrics().value("otelcol_exporter_sent_spans", exporter="otlp") == 1,
        timeout=10,
        message="the collector never saw the backend acknowledge the first span",
    )

    backend.stop()
    started = time.monotonic()
    sent_during_outage = 0
    while time.monotonic() - started < OUTAGE_S:
        with tracer.start_as_current_span(
            "during the outage", attributes={"i": sent_during_outage}
        ):
            pass
        sent_during_outage += 1
        time.sleep(0.1)
    assert sender.provider.force_flush(30_000)
    assert backend.span_count() == 1, "the backend was down: nothing can have reached it"

    sent = sender.sent_span_ids()
    assert len(sent) == sent_during_outage + 1
    assert not sender.exporter.failed, (
        f"the collector refused {len(sender.exporter.failed)} spans while the backend was down; "
        "its sending queue should have taken them"
    )
    assert set(sender.exporter.acked) == sent

    backend.start()
    # Default retry_on_failure: back-off up to 30s (+ jitter) between attempts.
    backend.wait_for_span_ids(sent, timeout=90)
    sender.finish()
    assert_delivered_intact(sender.expected_request(), backend.spans())
    wait_until(
        lambda: (
            collector.metrics().value("otelcol_exporter_sent_spans", exporter="otlp") == len(sent)
        ),
        10,
        lambda: (
            "otelcol_exporter_sent_spans does not count every delivered span:\n"
            + collector.metrics().text
        ),
    )


def test_persistent_queue_survives_kill9(collector_factory, backend, tmp_path):
    storage = tmp_path / "file_storage"
    storage.mkdir()
    backend.stop()
    collector = collector_factory(
        backend,
        configs=[seed_config(), TESTDATA / "agent-file-queue.yaml"],
        extensions=["file_storage"],
        sets=[
            f"extensions::file_storage::directory={storage}",
            "processors::batch::timeout=300ms",
            # One consumer: one request in flight (retrying), the others visibly queued.
            "exporters::otlp::sending_queue::num_consumers=1",
        ],
    )
    sender = SdkSender(collector.grpc_endpoint, "grpc", schedule_delay_ms=50)
    tracer = sender.tracer()
    rounds, per_round = 3, 100
    for round_number in range(rounds):
        for i in range(per_round):
            with tracer.start_as_current_span(
                f"queued {round_number}", attributes={"round": round_number, "i": i}
            ):
                pass
        assert sender.provider.force_flush(10_000)
        # Past the batch timeout: each round leaves the batch processor as its own request.
        time.sleep(1.2)
    sender.finish()
    sent = sender.sent_span_ids()
    assert len(sent) == rounds * per_round and set(sender.exporter.acked) == sent

    def queued() -> bool:
        metrics = collector.metrics()
        return (
            metrics.value("otelcol_receiver_accepted_spans") == len(sent)
            and metrics.value("otelcol_exporter_queue_size", exporter="otlp") >= rounds - 1
        )

    wait_until(
        queued,
        20,
        lambda: (
            "the collector's metrics never showed the spans queued:\n" + collector.metrics().text
        ),
    )

    collector.kill9()
    backend.start()
    collector.start()
    backend.wait_for_span_ids(sent, timeout=60)
    assert_delivered_intact(sender.expected_request(), backend.spans())
