#!/usr/bin/env python3
"""Benchmark: the seed's agent config with a small sending queue while its backend is down.

The load generator sends at --rate spans/s for --seconds; the backend (a `threadline sink`) is
stopped after 10 s and started again --outage seconds later. Prints the spans the agent
acknowledged (the load generator's sent_spans), the spans the backends received, the spans the
agent refused (retryable, so the load generator retried or counted them failed), and the agent's
peak RSS. Acknowledged must equal delivered. Uses only the standard library and
target/release/threadline.

    python3 bench/outage.py [--rate 20000] [--seconds 90] [--outage 60] [--queue-size 4]
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
from procs import BINARY, SEED, Process, collector_argv, metric, rss_mib, sink_argv, sink_stats, stop_all, wait_port  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=20_000)
    parser.add_argument("--seconds", type=int, default=90)
    parser.add_argument("--outage", type=int, default=60)
    parser.add_argument("--queue-size", type=int, default=4)
    parser.add_argument("--port-base", type=int, default=27600)
    args = parser.parse_args()
    if not BINARY.exists():
        raise SystemExit("build first: cargo build --release -p threadline")
    base = args.port_base
    sink_grpc, sink_stats_port = base + 17, base + 18
    grpc, http, metrics, health = base + 117, base + 118, base + 188, base + 133
    logs = Path(tempfile.mkdtemp(prefix="threadline-outage-bench-"))
    sink = Process("sink", sink_argv(sink_grpc, sink_stats_port), logs, sink_stats_port)
    agent = Process("agent", collector_argv(SEED / "agent-config.yaml", grpc, http, metrics, [
        "--set", f"exporters::otlp::endpoint=127.0.0.1:{sink_grpc}",
        "--set", f"exporters::otlp::sending_queue::queue_size={args.queue_size}",
        "--set", f"extensions::health_check::endpoint=127.0.0.1:{health}",
    ]), logs, grpc)

    try:
        sink.start()
        agent.start()
        wait_port(metrics)
        peak = {"rss": 0.0}
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                try:
                    peak["rss"] = max(peak["rss"], rss_mib(agent.pid))
                except (OSError, ValueError):
                    pass
                time.sleep(0.2)

        threading.Thread(target=sample, daemon=True).start()
        loadgen = subprocess.Popen([
            str(BINARY), "loadgen", "--endpoint", f"127.0.0.1:{grpc}", "--concurrency", "8",
            "--connections", "4", "--spans-per-request", "500", "--rate", str(args.rate),
            "--duration", str(args.seconds),
        ], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        time.sleep(10)
        delivered = sink_stats(sink_stats_port)["spans"]
        sink.stop(timeout=30)
        time.sleep(args.outage)
        refused_in_outage = metric(metrics, "otelcol_receiver_refused_spans")
        accepted_in_outage = metric(metrics, "otelcol_receiver_accepted_spans")
        sink.start()
        out, _ = loadgen.communicate(timeout=args.seconds + 600)
        report = json.loads(out.strip().splitlines()[-1])
        # The agent's retries back off up to 30 s: wait until everything queued went out.
        deadline = time.time() + 180
        while time.time() < deadline:
            queued = metric(metrics, "otelcol_exporter_queue_size")
            sent = metric(metrics, "otelcol_exporter_sent_spans")
            if queued == 0 and sent >= metric(metrics, "otelcol_receiver_accepted_spans"):
                break
            time.sleep(1)
        stop.set()
        second = sink_stats(sink_stats_port)["spans"]
        result = {
            "rate_asked": args.rate,
            "outage_s": args.outage,
            "queue_size": args.queue_size,
            "acknowledged_spans": report["sent_spans"],
            "loadgen_failed_spans": report["failed_spans"],
            # Acknowledged by a backend, as the agent counts them (a sink's count is lost when it stops).
            "delivered_spans": int(metric(metrics, "otelcol_exporter_sent_spans")),
            "first_sink_spans_before_stop": delivered,
            "second_sink_spans": second,
            "agent_accepted_spans": int(metric(metrics, "otelcol_receiver_accepted_spans")),
            "agent_refused_spans": int(metric(metrics, "otelcol_receiver_refused_spans")),
            "accepted_by_end_of_outage": int(accepted_in_outage),
            "refused_by_end_of_outage": int(refused_in_outage),
            "exporter_send_failed_spans": int(metric(metrics, "otelcol_exporter_send_failed_spans")),
            "agent_peak_rss_mib": round(peak["rss"], 1),
            "logs": str(logs),
        }
        print(json.dumps(result, indent=2))
    finally:
        stop_all([sink, agent])


if __name__ == "__main__":
    sys.exit(main())
