#!/usr/bin/env python3
"""Benchmark: `threadline doctor` over a store of N spans (issue 17: 1M spans in at most 10 s and
500 MB RSS).

Starts `threadline store` on a fresh directory, fills it with the load generator's traces (10 spans
each), stops it (the head is written as blocks) and starts it again, so the doctor reads blocks as
a long-running store would. Then runs `threadline doctor --format json` against it several times and
reports wall time, the store's peak RSS (VmHWM, which after the restart covers reopening and the
doctor runs), the CLI's own peak RSS, and for comparison a search that decodes every trace. Standard library only; uses target/release/threadline.

    python3 bench/doctor.py [--spans 1000000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from store import BINARY, store_argv, wait_ready


def status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise SystemExit(f"no {field} in /proc/{pid}/status")


def start(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=600)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def doctor(api: str, out: Path) -> tuple[float, int, dict]:
    """One `threadline doctor` run: (seconds, the CLI's max RSS in KiB, the report)."""
    started = time.perf_counter()
    with open(out, "wb") as stdout:
        process = subprocess.Popen([str(BINARY), "doctor", "--store", api, "--since", "1d", "--format", "json"],
                                   stdout=stdout, stderr=subprocess.STDOUT)
        # wait4 rather than Popen.wait: it gives this child's own peak RSS.
        _, code, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(code)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"doctor failed: {out.read_text()}")
    return seconds, usage.ru_maxrss, json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--port-base", type=int, default=29400)
    args = parser.parse_args()
    if not BINARY.exists():
        raise SystemExit("build first: cargo build --release -p threadline")
    data = Path(tempfile.mkdtemp(prefix="threadline-doctor-bench-"))
    http, grpc = args.port_base, args.port_base + 17
    api = f"http://127.0.0.1:{http}"
    store_args = store_argv(args.port_base, data)
    store = start(store_args, data / "store.log")
    try:
        wait_ready(f"{api}/ready")
        subprocess.run([
            str(BINARY), "loadgen", "--endpoint", f"127.0.0.1:{grpc}", "--traces", str(args.spans // 10),
            "--spans-per-request", "1000", "--concurrency", "16", "--connections", "2",
        ], check=True, capture_output=True, text=True)
        stop(store)
        store = start(store_args, data / "store2.log")
        wait_ready(f"{api}/ready")
        rss_idle_kib = status_kib(store.pid, "VmRSS")
        runs = []
        for _ in range(args.runs):
            seconds, cli_rss, report = doctor(api, data / "report.json")
            runs.append((seconds, cli_rss))
        store_hwm_kib = status_kib(store.pid, "VmHWM")
        # The floor: a search that decodes every trace and matches none.
        started = time.perf_counter()
        query = urllib.parse.urlencode({"q": '{ span.nonexistent = "x" }', "limit": 1_000_000,
                                        "start": 1, "end": int(time.time()) + 60})
        urllib.request.urlopen(f"{api}/api/search?{query}", timeout=600).read()
        decode_all_seconds = time.perf_counter() - started
        kinds: dict[str, int] = {}
        for f in report["findings"]:
            kinds[f["kind"]] = kinds.get(f["kind"], 0) + 1
        print(json.dumps({
            "spans_scanned": report["scanned"]["spans"],
            "traces_scanned": report["scanned"]["traces"],
            "doctor_seconds": [round(s, 2) for s, _ in runs],
            "doctor_seconds_median": round(statistics.median(s for s, _ in runs), 2),
            "search_decoding_every_trace_seconds": round(decode_all_seconds, 2),
            "store_rss_idle_mb": round(rss_idle_kib / 1024),
            "store_peak_rss_mb": round(store_hwm_kib / 1024),
            "cli_peak_rss_mb": round(max(r for _, r in runs) / 1024),
            "findings_by_kind": kinds,
            "data": str(data),
        }, indent=2))
    finally:
        stop(store)


if __name__ == "__main__":
    sys.exit(main())
