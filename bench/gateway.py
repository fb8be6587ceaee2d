#!/usr/bin/env python3
"""Benchmark: the seed's gateway config (tail sampling) fed by the load generator.

Prints sustained spans/s, CPU-seconds per million spans, peak RSS, the encoded size of the spans
buffered by tail sampling at the peak, and RSS per buffered span; checks that every error and slow
trace reached the sink. Uses only the standard library and target/release/threadline.

    python3 bench/gateway.py [--rate 100000] [--seconds 30] [--decision-wait 10s]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procs import BINARY, SEED, Process, collector_argv, cpu_seconds, metric, rss_mib, sink_argv, sink_stats, stop_all, wait_port  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--decision-wait", default="10s")
    parser.add_argument("--port-base", type=int, default=27300)
    args = parser.parse_args()
    if not BINARY.exists():
        raise SystemExit("build first: cargo build --release -p threadline")
    base = args.port_base
    sink_grpc, sink_stats_port, probe_grpc, probe_stats = base + 17, base + 18, base + 27, base + 28
    grpc, http, metrics = base + 117, base + 118, base + 188
    logs = Path(tempfile.mkdtemp(prefix="threadline-gateway-bench-"))
    procs: list[Process] = []

    def spawn(name: str, argv: list[str], ready_port: int) -> Process:
        p = Process(name, argv, logs, ready_port)
        procs.append(p)
        p.start()
        return p

    try:
        # 1. The encoded size of the load generator's spans, measured on a sink.
        spawn("probe-sink", sink_argv(probe_grpc, probe_stats), probe_grpc)
        subprocess.run([str(BINARY), "loadgen", "--endpoint", f"127.0.0.1:{probe_grpc}", "--traces", "2000", "--spans-per-request", "500"], check=True, capture_output=True)
        probe = sink_stats(probe_stats)
        bytes_per_span = probe["bytes"] / probe["spans"]

        # 2. The gateway.
        spawn("sink", sink_argv(sink_grpc, sink_stats_port), sink_grpc)
        gateway = spawn("gateway", collector_argv(SEED / "gateway-config.yaml", grpc, http, metrics, [
            "--set", f"exporters::otlp/tempo::endpoint=127.0.0.1:{sink_grpc}",
            "--set", f"processors::tail_sampling::decision_wait={args.decision_wait}",
        ]), grpc)
        wait_port(metrics)
        peak = {"rss": 0.0, "buffered": 0.0}
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                try:
                    rss = rss_mib(gateway.pid)
                    peak["rss"] = max(peak["rss"], rss)
                    peak["buffered"] = max(peak["buffered"], metric(metrics, "otelcol_processor_tail_sampling_sampling_traces_on_memory"))
                except (OSError, ValueError):
                    pass
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        cpu_before = cpu_seconds(gateway.pid)
        started = time.time()
        loadgen = subprocess.run([
            str(BINARY), "loadgen", "--endpoint", f"127.0.0.1:{grpc}", "--concurrency", "8",
            "--connections", "2", "--spans-per-request", "500", "--rate", str(args.rate),
            "--duration", str(args.seconds),
        ], check=True, capture_output=True, text=True)
        elapsed = time.time() - started
        report = json.loads(loadgen.stdout.strip().splitlines()[-1])
        cpu_load = cpu_seconds(gateway.pid) - cpu_before
        # Everything pending is decided after decision_wait; then batch (5 s) and export.
        wait_s = float(args.decision_wait.rstrip("s")) + 8
        time.sleep(wait_s)
        stop.set()
        cpu_total = cpu_seconds(gateway.pid) - cpu_before
        out = sink_stats(sink_stats_port)
        received = metric(metrics, "otelcol_receiver_accepted_spans")
        sampled = "otelcol_processor_tail_sampling_count_traces_sampled"
        errors_kept = metric(metrics, sampled, 'policy="errors"', 'decision="sampled"')
        slow_kept = metric(metrics, sampled, 'policy="slow-requests"', 'decision="sampled"')
        send_failed = metric(metrics, "otelcol_exporter_send_failed_spans")
        spans = report["sent_spans"]
        buffered_traces = peak["buffered"]
        # Traces are 10 spans each (the load generator's shape).
        buffered_spans = buffered_traces * 10
        encoded_mib = buffered_spans * bytes_per_span / 2**20
        result = {
            "rate_asked": args.rate,
            "spans_sent": spans,
            "spans_failed": report["failed_spans"],
            "sustained_spans_per_s": round(spans / elapsed),
            "gateway_cpu_s_during_load": round(cpu_load, 2),
            "gateway_cpu_s_total": round(cpu_total, 2),
            "spans_per_cpu_s": round(spans / cpu_total),
            "cpu_s_per_million_spans": round(cpu_total / spans * 1e6, 2),
            "peak_rss_mib": round(peak["rss"], 1),
            "peak_traces_buffered": int(buffered_traces),
            "encoded_bytes_per_span": round(bytes_per_span, 1),
            "encoded_mib_buffered_at_peak": round(encoded_mib, 1),
            "rss_target_mib": round(1.5 * encoded_mib + 50, 1),
            "rss_per_buffered_span_bytes": round(peak["rss"] * 2**20 / max(buffered_spans, 1)),
            "received_by_gateway": int(received),
            "exported_spans": out["spans"],
            "exported_share": round(out["spans"] / max(spans, 1), 4),
            "sent_error_traces": report["sent_error_traces"],
            "sent_slow_traces": report["sent_slow_traces"],
            "error_traces_kept": int(errors_kept),
            "slow_traces_kept": int(slow_kept),
            "exporter_send_failed_spans": int(send_failed),
            "logs": str(logs),
        }
        print(json.dumps(result, indent=2))
    finally:
        stop_all(procs)


if __name__ == "__main__":
    sys.exit(main())
