#!/usr/bin/env python3
"""Benchmark: what the metrics generator (service graphs + span metrics) costs on the ingest path.

Runs `threadline store` (WAL fsync: always) on a fresh directory, once without the generator and
once with both processors, alternating, and sends the same load-generator traffic to each. Reports
store CPU-seconds per million spans and spans per CPU-second, for two traffic shapes: the store
benchmark's (1000 spans per request, 4 connections) and an SDK-like one (500 spans per request,
16 connections, 64 in flight). Uses target/release/threadline; standard library only.

    python3 bench/generator.py [--spans 2000000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from store import BINARY, cpu_seconds, get, wait_ready

SHAPES = {
    "1000 spans/request, 4 connections": ["--spans-per-request", "1000", "--concurrency", "32", "--connections", "4"],
    "500 spans/request, 16 connections": ["--spans-per-request", "500", "--concurrency", "64", "--connections", "16"],
}


def run(spans: int, shape: list[str], generator: bool, port_base: int) -> dict:
    data = Path(tempfile.mkdtemp(prefix="threadline-generator-bench-"))
    http, grpc = port_base, port_base + 17
    sets = [
        f"server::http_listen_port={http}",
        f"distributor::receivers::otlp::protocols::grpc::endpoint=127.0.0.1:{grpc}",
        f"distributor::receivers::otlp::protocols::http::endpoint=127.0.0.1:{port_base + 18}",
        f"storage::trace::wal::path={data / 'wal'}",
        f"storage::trace::local::path={data / 'blocks'}",
        "compactor::compaction::compaction_cycle=1h",
    ]
    if generator:
        sets.append("metrics_generator::processors=[service-graphs, span-metrics]")
    command = [str(BINARY), "store"] + [arg for s in sets for arg in ("--set", s)]
    store = subprocess.Popen(command, stdout=open(data / "store.log", "wb"), stderr=subprocess.STDOUT,
                             start_new_session=True)
    try:
        wait_ready(f"http://127.0.0.1:{http}/ready")
        before = cpu_seconds(store.pid)
        loadgen = subprocess.run([str(BINARY), "loadgen", "--endpoint", f"127.0.0.1:{grpc}",
                                  "--traces", str(spans // 10), *shape],
                                 check=True, capture_output=True, text=True)
        cpu = cpu_seconds(store.pid) - before
        report = json.loads(loadgen.stdout.strip().splitlines()[-1])
        series = None
        if generator:
            _, page = get(f"http://127.0.0.1:{http}/api/threadline/generator/metrics")
            series = sum(1 for line in page.decode().splitlines()
                         if line.startswith(("traces_service_graph_request_total", "traces_spanmetrics_calls_total")))
        return {"spans": report["sent_spans"], "failed": report["failed_spans"], "cpu_s": cpu,
                "seconds": report["seconds"], "series": series}
    finally:
        store.send_signal(signal.SIGTERM)
        try:
            store.wait(timeout=300)
        except subprocess.TimeoutExpired:
            store.kill()
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spans", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--port-base", type=int, default=29400)
    args = parser.parse_args()
    if not BINARY.exists():
        raise SystemExit("build first: cargo build --release -p threadline")
    results = []
    for shape_name, shape in SHAPES.items():
        totals = {False: [0.0, 0], True: [0.0, 0]}
        for _ in range(args.rounds):
            for generator in (False, True):
                r = run(args.spans, shape, generator, args.port_base)
                if r["failed"]:
                    raise SystemExit(f"{r['failed']} spans failed: {r}")
                totals[generator][0] += r["cpu_s"]
                totals[generator][1] += r["spans"]
                print(json.dumps({"shape": shape_name, "generator": generator, **r}), file=sys.stderr)
        per_span = {g: cpu / spans for g, (cpu, spans) in totals.items()}
        results.append({
            "shape": shape_name,
            "without_generator_spans_per_cpu_s": round(1 / per_span[False]),
            "with_generator_spans_per_cpu_s": round(1 / per_span[True]),
            "cpu_per_span_increase_percent": round((per_span[True] / per_span[False] - 1) * 100, 1),
        })
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    sys.exit(main())
