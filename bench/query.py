#!/usr/bin/env python3
"""Benchmark: TraceQL query latency over a store of blocks (issue 13's classes, issue 14's targets).

Fills `threadline store` (WAL fsync: always) with the load generator's spans, stops it so the head is
written as blocks, restarts it (blocks only), then measures each query class over the HTTP API:

- cold: a fresh store process, after dropping the page cache when run as root, first call;
- warm: repeated calls on the same process; p50 and p99.

Slow classes (a cold call above --slow-seconds) get --slow-warm warm calls instead of --warm, so a
10M-span run stays within tens of minutes. Also reports the store's peak RSS while querying and the
scan rate (spans per CPU-second of the store) of queries that must read a whole column. Standard
library only; uses target/release/threadline.

    python3 bench/query.py [--spans 10000000] [--warm 10] [--slow-warm 3] [--reuse DIR]

The load generator runs with --pool-size 20 and a fixed seed: every trace repeats one of 2,000
template traces, so the `url.path` of one template's inventory call (2 of its 10 spans) is carried
by 1 span in 10,000, the "rare value" class.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

from store import BINARY, cpu_seconds, get, percentile, wait_ready

SEARCH_COLD_MS, SEARCH_WARM_MS = 1000, 300
METRICS_MS = 1000
TRACE_BY_ID_COLD_P99_MS = 20


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class RssSampler:
    """Peak RSS of the store, sampled every 20 ms while queries run."""

    def __init__(self) -> None:
        self.pid = 0
        self.peak = 0
        self.stop = threading.Event()
        threading.Thread(target=self.run, daemon=True).start()

    def run(self) -> None:
        while not self.stop.wait(0.02):
            if self.pid:
                self.peak = max(self.peak, rss_bytes(self.pid))


def drop_page_cache() -> bool:
    if os.geteuid() != 0:
        return False
    subprocess.run(["sync"], check=False)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


class Store:
    def __init__(self, data: Path, port_base: int) -> None:
        self.data = data
        self.http, self.grpc = port_base, port_base + 17
        self.api = f"http://127.0.0.1:{self.http}"
        self.command = [
            str(BINARY), "store",
            "--set", f"server::http_listen_port={self.http}",
            "--set", f"distributor::receivers::otlp::protocols::grpc::endpoint=127.0.0.1:{self.grpc}",
            "--set", f"distributor::receivers::otlp::protocols::http::endpoint=127.0.0.1:{port_base + 18}",
            "--set", f"storage::trace::wal::path={data / 'wal'}",
            "--set", f"storage::trace::local::path={data / 'blocks'}",
            "--set", "compactor::compaction::compaction_cycle=1h",
        ]
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.data / f"store{self.starts}.log", "wb")
        self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_ready(f"{self.api}/ready")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=900)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    @property
    def pid(self) -> int:
        return self.process.pid if self.process else 0


def fill(store: Store, spans: int, seed: int) -> dict:
    store.start()
    loadgen = subprocess.run([
        str(BINARY), "loadgen", "--endpoint", f"127.0.0.1:{store.grpc}", "--traces", str(spans // 10),
        "--spans-per-request", "1000", "--concurrency", "32", "--connections", "4",
        "--pool-size", "20", "--seed", str(seed),
    ], check=True, capture_output=True, text=True)
    report = json.loads(loadgen.stdout.strip().splitlines()[-1])
    store.stop()  # the head is written as blocks
    # What the store kept, from its log of written blocks: compare with what the generator sent.
    log = (store.data / f"store{store.starts}.log").read_text(errors="replace")
    report["stored_spans"] = sum(int(m) for m in re.findall(r"wrote block .*? spans=(\d+)", log))
    report["stored_traces"] = sum(int(m) for m in re.findall(r"wrote block .*? traces=(\d+)", log))
    return report


def search(api: str, q: str, start: int, end: int, limit: int = 20) -> tuple[float, dict]:
    params = urllib.parse.urlencode({"q": q, "limit": limit, "spss": 3, "start": start, "end": end})
    seconds, body = get(f"{api}/api/search?{params}", timeout=900)
    return seconds, json.loads(body)


def metrics(api: str, q: str, end: int) -> tuple[float, dict]:
    params = urllib.parse.urlencode({"q": q, "start": end - 3600, "end": end, "step": "60s"})
    seconds, body = get(f"{api}/api/metrics/query_range?{params}", timeout=900)
    return seconds, json.loads(body)


def rare_path(api: str, start: int, end: int) -> str:
    """An inventory `url.path` of one template trace: 2 of its 10 spans, 1 in 10,000 spans in all."""
    _, answer = search(api, '{ span.url.path =~ "/inventory/.*" }', start, end, limit=1)
    for spanset in answer["traces"][0].get("spanSets", []):
        for span in spanset["spans"]:
            for attribute in span.get("attributes", []):
                if attribute["key"] == "url.path":
                    return attribute["value"]["stringValue"]
    raise SystemExit("no inventory url.path found to use as the rare value")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spans", type=int, default=10_000_000)
    parser.add_argument("--warm", type=int, default=10, help="warm calls per fast class")
    parser.add_argument("--slow-warm", type=int, default=3, help="warm calls per slow class")
    parser.add_argument("--slow-seconds", type=float, default=2.0, help="a cold call above this makes a class slow")
    parser.add_argument("--lookups", type=int, default=200, help="trace-by-id lookups, cold and warm each")
    parser.add_argument("--reuse", type=Path, help="a data directory filled by an earlier run (skips the fill)")
    parser.add_argument("--only", help="comma-separated class names to run (default all)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--port-base", type=int, default=29500)
    args = parser.parse_args()
    if not BINARY.exists():
        raise SystemExit("build first: cargo build --release -p threadline")

    if args.reuse:
        data = args.reuse
        store = Store(data, args.port_base)
        fill_report = json.loads((data / "fill.json").read_text())
    else:
        data = Path(tempfile.mkdtemp(prefix="threadline-query-bench-"))
        store = Store(data, args.port_base)
        fill_started = int(time.time())
        fill_report = fill(store, args.spans, args.seed)
        fill_report.update({"fill_started": fill_started, "fill_ended": int(time.time()) + 1})
        (data / "fill.json").write_text(json.dumps(fill_report))
        print(f"filled {data}: {json.dumps(fill_report)}", file=sys.stderr, flush=True)
    spans = fill_report.get("stored_spans") or fill_report["sent_spans"]
    if spans != fill_report["sent_spans"]:
        print(f"WARNING: the generator sent {fill_report['sent_spans']:,} spans but the store wrote "
              f"{spans:,} to its blocks", file=sys.stderr, flush=True)
    # Loadgen timestamps end shortly before each request is sent; slow roots start up to ~10 s earlier.
    start, end = fill_report["fill_started"] - 120, fill_report["fill_ended"] + 60
    metrics_end = end

    sampler = RssSampler()
    store.start()
    sampler.pid = store.pid
    rare = rare_path(store.api, start, end)
    # Trace ids spread over the whole fill: the newest trace of each of 40 windows.
    ids = []
    window = max(1, (end - start) // 40)
    for w in range(start, end, window):
        _, answer = search(store.api, "{ }", w, w + window, limit=5)
        ids += [t["traceID"] for t in answer["traces"]]
    random.seed(args.seed)
    if not ids:
        raise SystemExit("no trace found to look up")

    classes = [
        ("intrinsic name", "search", '{ name = "POST /payments/authorize" }'),
        ("intrinsic status = error", "search", "{ status = error }"),
        ("intrinsic duration > 1s", "search", "{ duration > 1s }"),
        ("resource attr, common value", "search", '{ resource.service.name = "payments" }'),
        ("resource attr, value no span has", "search", '{ resource.service.name = "nonexistent" }'),
        ("resource attr no span has", "search", '{ resource.cloud.region = "eu-west-1" }'),
        ("span attr, common value", "search", '{ span.http.request.method = "GET" }'),
        ("span attr, rare value (1 in 10k)", "search", f'{{ span.url.path = "{rare}" }}'),
        ("span attr, value no span has", "search", '{ span.user_agent.original = "x" }'),
        ("span attr no span has", "search", '{ span.feature_flag.key = "x" }'),
        ("unscoped .attr, common value", "search", '{ .http.route = "/payments/authorize" }'),
        ("unscoped .attr no span has", "search", '{ .cloud.region = "x" }'),
        ("structural >>", "search", '{ resource.service.name = "frontend" } >> { status = error }'),
        ("metrics rate() by service", "metrics", "{ } | rate() by (resource.service.name)"),
        ("metrics quantile_over_time .99", "metrics",
         "{ kind = server } | quantile_over_time(duration, .99) by (resource.service.name)"),
    ]
    if args.only:
        wanted = set(args.only.split(","))
        classes = [c for c in classes if c[0] in wanted]

    dropped = False
    rows = []

    def fresh() -> None:
        nonlocal dropped
        store.stop()
        dropped = drop_page_cache()
        store.start()
        sampler.pid = store.pid

    # Trace by id: every lookup right after a restart is a first read of its page.
    fresh()
    cold = [get(f"{store.api}/api/traces/{random.choice(ids)}")[0] * 1000 for _ in range(args.lookups)]
    warm = [get(f"{store.api}/api/traces/{random.choice(ids[:20])}")[0] * 1000 for _ in range(args.lookups)]
    rows.append({"class": "trace by id", "query": f"{args.lookups} random ids", "cold_p50_ms": percentile(cold, 50),
                 "cold_p99_ms": percentile(cold, 99), "warm_p50_ms": percentile(warm, 50),
                 "warm_p99_ms": percentile(warm, 99), "target": f"cold p99 <= {TRACE_BY_ID_COLD_P99_MS} ms"})

    for name, kind, q in classes:
        fresh()

        def call() -> tuple[float, float, dict]:
            before = cpu_seconds(store.pid)
            seconds, answer = search(store.api, q, start, end) if kind == "search" else metrics(store.api, q, metrics_end)
            return seconds, cpu_seconds(store.pid) - before, answer

        sampler.peak = rss_bytes(store.pid)
        cold_s, cold_cpu, answer = call()
        reps = args.slow_warm if cold_s > args.slow_seconds else args.warm
        warm_runs = [call() for _ in range(reps)]
        warm_s = [r[0] * 1000 for r in warm_runs]
        warm_cpu = sorted(r[1] for r in warm_runs)[len(warm_runs) // 2] if warm_runs else cold_cpu
        found = len(answer.get("traces", answer.get("series", [])))
        inspected = answer.get("metrics", {}).get("inspectedTraces")
        target = (f"cold <= {SEARCH_COLD_MS}, warm <= {SEARCH_WARM_MS} ms" if kind == "search"
                  else f"<= {METRICS_MS} ms")
        rows.append({
            "class": name, "query": q, "cold_ms": cold_s * 1000, "cold_cpu_s": cold_cpu,
            "warm_p50_ms": percentile(warm_s, 50) if warm_s else None,
            "warm_p99_ms": percentile(warm_s, 99) if warm_s else None,
            "warm_runs": reps, "warm_cpu_s": warm_cpu, "found": found, "inspected_traces": inspected,
            "peak_rss_mib": sampler.peak / 2**20, "target": target,
        })
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    store.stop()
    sampler.stop.set()

    def ms(v: float | None) -> str:
        return "-" if v is None else (f"{v:,.0f}" if v >= 100 else f"{v:.1f}")

    print(f"\n{spans:,} spans stored ({fill_report['sent_spans']:,} sent) in {data} (cold = fresh process"
          f"{', page cache dropped' if dropped else ', page cache NOT dropped (not root)'})\n")
    print("| class | query | cold ms | warm p50 ms | warm p99 ms | warm runs | store CPU-s (warm) | traces / series | peak RSS MiB | target (issue 14) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    first = rows[0]
    print(f"| trace by id | {first['query']} | p50 {ms(first['cold_p50_ms'])}, p99 {ms(first['cold_p99_ms'])} "
          f"| {ms(first['warm_p50_ms'])} | {ms(first['warm_p99_ms'])} | {args.lookups} | - | - | - | {first['target']} |")
    for r in rows[1:]:
        q = r["query"].replace("|", "\\|")
        print(f"| {r['class']} | `{q}` | {ms(r['cold_ms'])} | {ms(r['warm_p50_ms'])} | {ms(r['warm_p99_ms'])} "
              f"| {r['warm_runs']} | {r['warm_cpu_s']:.2f} | {r['found']} | {r['peak_rss_mib']:.0f} | {r['target']} |")
    peak = max((r.get("peak_rss_mib", 0) for r in rows[1:]), default=0)
    print(f"\npeak RSS while querying: {peak:.0f} MiB (target <= 1024 MiB)")
    for r in rows[1:]:
        if r["class"] in ("span attr, value no span has", "span attr, rare value (1 in 10k)", "unscoped .attr no span has"):
            if r["warm_cpu_s"] > 0 and r["warm_p50_ms"]:
                print(f"scan rate, {r['class']} (reads the whole column): {spans / r['warm_cpu_s']:,.0f} spans per "
                      f"CPU-second of the store; {spans / (r['warm_p50_ms'] / 1000):,.0f} spans/s wall, "
                      f"{r['warm_cpu_s'] / (r['warm_p50_ms'] / 1000):.2f} cores busy")
    print(json.dumps({"spans": spans, "data": str(data), "rare_value": rare, "rows": rows}))


if __name__ == "__main__":
    sys.exit(main())
