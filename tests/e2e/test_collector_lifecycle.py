"""Start, stop and configuration errors: SIGTERM flushes, a taken port or an unreadable config is
a quick non-zero exit with a message, `threadline validate` lists every error with its path."""

from __future__ import annotations

import re
import socket
import time

import pytest

from harness import (
    Collector,
    CollectorPorts,
    SdkSender,
    assert_delivered_intact,
    run_threadline,
    seed_config,
    wait_until,
)


def test_sigterm_flushes_the_batch_before_exit(collector_factory, backend):
    collector = collector_factory(backend, sets=["processors::batch::timeout=60s"])
    sender = SdkSender(collector.grpc_endpoint, "grpc")
    tracer = sender.tracer()
    for i in range(25):
        with tracer.start_as_current_span("held in the batch", attributes={"i": i}):
            pass
    sender.finish()
    sent = sender.sent_span_ids()
    assert set(sender.exporter.acked) == sent
    wait_until(
        lambda: collector.metrics().value("otelcol_receiver_accepted_spans") == len(sent),
        10,
        "the receiver did not count the spans",
    )
    time.sleep(0.5)
    assert backend.span_count() == 0, "the batch (60s timeout, 4096 spans) should still hold them"

    started = time.monotonic()
    code = collector.stop(timeout=20)
    assert not collector.needed_sigkill, "the collector did not exit on SIGTERM within 20s"
    assert code == 0, f"exit code {code} after SIGTERM"
    assert time.monotonic() - started < 20
    assert_delivered_intact(sender.expected_request(), backend.spans())


def _exits_quickly(collector: Collector, timeout: float = 10.0) -> int:
    collector.start(wait_ready=False)
    code = collector.wait_exit(timeout)
    assert code is not None, f"the collector still runs after {timeout:.0f}s"
    return code


@pytest.mark.parametrize("which", ["grpc", "http", "metrics"])
def test_port_in_use_is_a_quick_failure_naming_the_address(collector_factory, backend, which):
    ports = CollectorPorts.allocate()
    taken = getattr(ports, which)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", taken))
        blocker.listen()
        collector = collector_factory(backend, start=False, ports=ports)
        code = _exits_quickly(collector)
    assert code != 0
    assert f"127.0.0.1:{taken}" in collector.all_output_text(), collector.all_output_text()


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_config_is_a_quick_failure_naming_the_file(
    collector_factory, backend, tmp_path, kind
):
    if kind == "missing":
        path = tmp_path / "does-not-exist.yaml"
    else:
        path = tmp_path / "a-directory.yaml"
        path.mkdir()
    collector = collector_factory(backend, start=False, configs=[path])
    code = _exits_quickly(collector)
    assert code != 0
    assert str(path) in collector.all_output_text(), collector.all_output_text()


@pytest.mark.parametrize("name", ["agent-config.yaml", "gateway-config.yaml"])
def test_validate_accepts_the_seed_configs(name):
    config = str(seed_config(name))
    result = run_threadline(["validate", "--config", config])
    assert result.returncode == 0, result.stderr
    # The same file with one bad value must fail: validate really read and checked it.
    broken = run_threadline(
        ["validate", "--config", config, "--set", "processors::batch::timeout=soon"]
    )
    assert broken.returncode != 0, "validate accepted `timeout: soon`"
    assert "timeout" in broken.stderr, broken.stderr



BROKEN_CONFIG = """\
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:4317
        no_such_setting: 1
processors:
  batch:
    timeout: soon
  memory_limiter:
    check_interval: 1s
    limit_mib: 100
    spike_limit_mib: 200
exporters:
  otlp:
    endpoint: 127.0.0.1:4317
    sending_queue:
      queue_size: lots
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [memory_limiter, batch, no_such_processor]
      exporters: [otlp]
"""

# Each error must be reported on a line naming its place (these path segments in this order,
# joined by any separator: `::`, `.`, `/`, `[2]`) and, where the path alone does not, the culprit.
EXPECTED_ERRORS = [
    (["receivers", "otlp", "protocols", "grpc"], "no_such_setting"),
    (["processors", "batch", "timeout"], None),
    (["processors", "memory_limiter"], "spike_limit_mib"),
    (["exporters", "otlp", "sending_queue", "queue_size"], None),
    (["service", "pipelines", "traces", "processors"], "no_such_processor"),
]


def test_validate_lists_every_error_with_its_yaml_path(tmp_path):
    config = tmp_path / "broken.yaml"
    config.write_text(BROKEN_CONFIG)
    result = run_threadline(["validate", "--config", str(config)])
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    for segments, word in EXPECTED_ERRORS:
        path = re.compile(r"\b" + r"\W+(?:\d+\W+)?".join(map(re.escape, segments)) + r"\b")
        assert any(path.search(line) and (word is None or word in line) for line in lines), (
            f"no error line naming {'::'.join(segments)} and {word!r} in:\n{result.stderr}"
        )


def test_validate_accepts_a_set_that_fixes_an_error(tmp_path):
    config = tmp_path / "fixable.yaml"
    config.write_text(BROKEN_CONFIG.replace("        no_such_setting: 1\n", ""))
    assert run_threadline(["validate", "--config", str(config)]).returncode != 0
    result = run_threadline(
        [
            "validate",
            "--config",
            str(config),
            "--set",
            "processors::batch::timeout=1s",
            "--set",
            "processors::memory_limiter::spike_limit_mib=20",
            "--set",
            "exporters::otlp::sending_queue::queue_size=100",
            "--set",
            "service::pipelines::traces::processors=[memory_limiter,batch]",
        ]
    )
    assert result.returncode == 0, result.stderr


def test_validate_warns_that_tail_sampling_needs_trace_id_routing():
    result = run_threadline(["validate", "--config", str(seed_config("gateway-config.yaml"))])
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert any("tail_sampling" in w and "route by trace id" in w for w in warnings), result.stderr
    agent = run_threadline(["validate", "--config", str(seed_config("agent-config.yaml"))])
    assert "tail_sampling" not in agent.stderr, agent.stderr

