#!/usr/bin/env python3
"""Benchmark: `threadline store` ingest, bytes per span on disk, trace-by-id and search latency.

Starts the store (WAL fsync: always) on a fresh directory, fills it with the load generator's
spans as fast as they are accepted, cuts the head into blocks, then measures the API. Standard
library only; uses target/release/threadline.

    python3 bench/store.py [--spans 10000000] [--lookups 500]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# THREADLINE_BINARY runs another build (e.g. a "before" binary) against the same data.
BINARY = Path(os.environ.get("THREADLINE_BINARY", ROOT / "target" / "release" / "threadline"))
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def get(url: str, timeout: float = 120) -> tuple[float, bytes]:
    """GET `url`: (seconds taken, body)."""
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body = response.read()
    return time.perf_counter() - started, body


def wait_ready(url: str) -> None:
    for _ in range(400):
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{url} never answered")


def store_argv(port_base: int, data: Path) -> list[str]:
    """`threadline store` with its API on `port_base`, OTLP gRPC on `port_base + 17` and HTTP on
    `+ 18`, data under `data`, and no compaction during the run."""
    return [
        str(BINARY), "store",
        "--set", f"server::http_listen_port={port_base}",
        "--set", f"distributor::receivers::otlp::protocols::grpc::endpoint=127.0.0.1:{port_base + 17}",
        "--set", f"distributor::receivers::otlp::protocols::http::endpoint=127.0.0.1:{port_base + 18}",
        "--set", f"storage::trace::wal::path={data / 'wal'}",
        "--set", f"storage::trace::local::path={data / 'blocks'}",
        "--set", "compactor::compaction::compaction_cycle=1h",
    ]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spans", type=int, default=10_000_000)
    parser.add_argument("--lookups", type=int, default=500)
    parser.add_argument("--port-base", type=int, default=29300)
    args = parser.parse_args()
    if not BINARY.exists():
        raise SystemExit("build first: cargo build --release -p threadline")
    data = Path(tempfile.mkdtemp(prefix="threadline-store-bench-"))
    http, grpc = args.port_base, args.port_base + 17
    api = f"http://127.0.0.1:{http}"
    store = subprocess.Popen(store_argv(args.port_base, data), stdout=open(data / "store.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(f"{api}/ready")
        cpu_before = cpu_seconds(store.pid)
        loadgen = subprocess.run([
            str(BINARY), "loadgen", "--endpoint", f"127.0.0.1:{grpc}", "--traces", str(args.spans // 10),
            "--spans-per-request", "1000", "--concurrency", "32", "--connections", "4",
        ], check=True, capture_output=True, text=True)
        report = json.loads(loadgen.stdout.strip().splitlines()[-1])
        ingest_cpu = cpu_seconds(store.pid) - cpu_before
        # Stop cleanly: the head is written as blocks; then restart to query blocks only.
        store.send_signal(signal.SIGTERM)
        store.wait(timeout=600)
        block_bytes = sum(p.stat().st_size for p in (data / "blocks").rglob("*") if p.is_file())
        store = subprocess.Popen(store.args, stdout=open(data / "store2.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        opened = time.perf_counter()
        wait_ready(f"{api}/ready")
        open_seconds = time.perf_counter() - opened

        # Trace ids to look up: from searches (newest blocks first), then random lookups.
        _, body = get(f"{api}/api/search?limit=5000&q=" + urllib.parse.quote("{ }"))
        ids = [t["traceID"] for t in json.loads(body)["traces"]]
        random.seed(7)
        lookups = [get(f"{api}/api/traces/{random.choice(ids)}")[0] * 1000 for _ in range(args.lookups)]
        searches = {}
        for name, q in [
            ("status_error", "{ status = error }"),
            ("service_and_duration", '{ resource.service.name = "payments" && duration > 2s }'),
            ("no_match", '{ resource.service.name = "nonexistent" }'),
        ]:
            times = []
            for _ in range(5):
                seconds, body = get(f"{api}/api/search?limit=20&q=" + urllib.parse.quote(q))
                times.append(seconds * 1000)
            searches[name] = {"p50_ms": round(statistics.median(times), 1), "found": len(json.loads(body)["traces"])}
        spans = report["sent_spans"]
        print(json.dumps({
            "spans_ingested": spans,
            "failed_spans": report["failed_spans"],
            "ingest_seconds": round(report["seconds"], 1),
            "ingest_spans_per_s": round(spans / report["seconds"]),
            "store_cpu_s_during_ingest": round(ingest_cpu, 1),
            "wal_fsync": "always",
            "bytes_on_disk": block_bytes,
            "bytes_per_span": round(block_bytes / spans, 1),
            "reopen_seconds": round(open_seconds, 2),
            "trace_by_id_p50_ms": round(percentile(lookups, 50), 2),
            "trace_by_id_p99_ms": round(percentile(lookups, 99), 2),
            "searches_limit_20": searches,
            "data": str(data),
        }, indent=2))
    finally:
        if store.poll() is None:
            store.send_signal(signal.SIGTERM)
            try:
                store.wait(timeout=120)
            except subprocess.TimeoutExpired:
                store.kill()


if __name__ == "__main__":
    sys.exit(main())
