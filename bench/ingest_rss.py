#!/usr/bin/env python3
"""Benchmark: the store's RSS while it ingests at full speed and once it is idle again.

Starts `threadline store` on a fresh directory, sends `--spans` load-generator spans as fast as
they are accepted (500 spans per request, 16 in flight over 4 connections), then keeps sampling
RSS (once a second) for `--idle` seconds. It prints the peak of each fifth of the run and the
final RSS, for each `storage::trace::index_cache_mib` given, so what the block index rows hold
shows up as the difference of the final figures. Standard library only.

    python3 bench/ingest_rss.py --spans 6000000 --cache-mib 256,32,0
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from query import rss_bytes
from store import BINARY, store_argv, wait_ready


def run(cache_mib: int, spans: int, idle: float, port_base: int) -> tuple[list[float], float, int]:
    data = Path(tempfile.mkdtemp(prefix="threadline-ingest-rss-"))
    argv = store_argv(port_base, data)
    argv[-1] = "compactor::compaction::compaction_cycle=30s"  # compaction runs, as by default
    argv += ["--set", f"storage::trace::index_cache_mib={cache_mib}"]
    log = open(data / "store.log", "wb")
    store = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(f"http://127.0.0.1:{port_base}/ready")
        loadgen = subprocess.Popen([
            str(BINARY), "loadgen", "--endpoint", f"127.0.0.1:{port_base + 17}", "--traces", str(spans // 10),
            "--spans-per-request", "500", "--concurrency", "16", "--connections", "4",
        ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples = []
        while loadgen.poll() is None:
            samples.append(rss_bytes(store.pid) / 2**20)
            time.sleep(1)
        done = time.monotonic()
        while time.monotonic() - done < idle:
            samples.append(rss_bytes(store.pid) / 2**20)
            time.sleep(1)
    finally:
        store.send_signal(signal.SIGTERM)
        store.wait(timeout=300)
    fifths = [max(samples[i * len(samples) // 5:(i + 1) * len(samples) // 5] or [0]) for i in range(5)]
    compactions = (data / "store.log").read_text(errors="replace").count("compacted blocks")
    return fifths, samples[-1], compactions


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spans", type=int, default=6_000_000)
    parser.add_argument("--cache-mib", default="256,32,0")
    parser.add_argument("--idle", type=float, default=75, help="seconds sampled after the load")
    parser.add_argument("--port-base", type=int, default=29900)
    args = parser.parse_args()
    print("| index_cache_mib | peak MiB by fifth of the run | final MiB | compactions |")
    print("|---:|---|---:|---:|")
    for mib in args.cache_mib.split(","):
        fifths, final, compactions = run(int(mib), args.spans, args.idle, args.port_base)
        print(f"| {mib} | {' / '.join(f'{f:.0f}' for f in fifths)} | {final:.0f} | {compactions} |", flush=True)


if __name__ == "__main__":
    main()
