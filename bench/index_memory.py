#!/usr/bin/env python3
"""Benchmark: the store's memory for block indexes, and what reading them from disk costs.

Fills a store once with the load generator (as bench/query.py does), then for each binary and
each `storage::trace::index_cache_mib` given starts the store on those blocks and reports:
RSS once open, trace by id (random stored ids), limit-20 searches, and RSS at the end.

    python3 bench/index_memory.py --spans 2000000 [--reuse DIR] \\
        [--binary old=/path/to/threadline] [--cache-mib 32,0]

With `--binary old=...` a build before the index cache runs the same queries (its indexes are
all in memory; the cache setting does not apply to it). Standard library only.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from query import RssSampler, Store, fill, rss_bytes, search
from store import BINARY, get, percentile

SEARCHES = ["{ status = error }", '{ resource.service.name = "checkout" }', "{ duration > 1s }", "{ }"]


def stored_ids(api: str, start: int, end: int, count: int) -> list[str]:
    _, answer = search(api, "{ }", start, end, limit=5000)
    ids = [t["traceID"] for t in answer["traces"]]
    random.Random(7).shuffle(ids)
    return ids[:count]


def run(binary: str, cache_mib: int | None, data: Path, port_base: int, window: tuple[int, int], ids: list[str]) -> dict:
    store = Store(data, port_base)
    store.command[0] = binary
    if cache_mib is not None:
        store.command += ["--set", f"storage::trace::index_cache_mib={cache_mib}"]
    sampler = RssSampler()
    store.start()
    sampler.pid = store.pid
    time.sleep(1)
    opened = rss_bytes(store.pid)
    lookups = []
    for trace_id in ids:
        seconds, _ = get(f"{store.api}/api/traces/{trace_id}")
        lookups.append(seconds * 1000)
    searches = {}
    for q in SEARCHES:
        runs = [search(store.api, q, *window)[0] * 1000 for _ in range(5)]
        searches[q] = (runs[0], percentile(runs[1:], 50))
    end = rss_bytes(store.pid)
    sampler.stop.set()
    store.stop()
    return {"opened_mib": opened / 2**20, "end_mib": end / 2**20, "peak_mib": sampler.peak / 2**20,
            "by_id_p50": percentile(lookups, 50), "by_id_p99": percentile(lookups, 99), "searches": searches}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spans", type=int, default=2_000_000)
    parser.add_argument("--reuse", type=Path, help="a data directory filled before")
    parser.add_argument("--binary", action="append", default=[], help="name=path of another build to compare")
    parser.add_argument("--cache-mib", default="32,0", help="index_cache_mib values for this build")
    parser.add_argument("--lookups", type=int, default=200)
    parser.add_argument("--port-base", type=int, default=29700)
    args = parser.parse_args()
    data = args.reuse or Path(tempfile.mkdtemp(prefix="threadline-index-memory-"))
    started = int(time.time()) - 60
    if not args.reuse:
        report = fill(Store(data, args.port_base), args.spans, seed=13)
        print(f"filled {data}: {report['stored_spans']:,} spans, {report['stored_traces']:,} traces")
        (data / "window.json").write_text(json.dumps([started, int(time.time()) + 60]))
    window = tuple(json.loads((data / "window.json").read_text()))

    probe = Store(data, args.port_base)
    probe.start()
    ids = stored_ids(probe.api, *window, args.lookups)
    probe.stop()

    runs = [(f"this build, index_cache_mib={mib}", str(BINARY), int(mib)) for mib in args.cache_mib.split(",")]
    runs += [(name, path, None) for name, path in (b.split("=", 1) for b in args.binary)]
    print(f"| build | RSS open MiB | RSS end MiB | peak MiB | by id p50 / p99 ms | "
          + " | ".join(f"`{q}` cold / warm p50 ms" for q in SEARCHES) + " |")
    print("|---|---:|---:|---:|---:|" + "---:|" * len(SEARCHES))
    for name, binary, mib in runs:
        r = run(binary, mib, data, args.port_base, window, ids)
        cells = " | ".join(f"{cold:.1f} / {warm:.1f}" for cold, warm in r["searches"].values())
        print(f"| {name} | {r['opened_mib']:.1f} | {r['end_mib']:.1f} | {r['peak_mib']:.1f} | "
              f"{r['by_id_p50']:.2f} / {r['by_id_p99']:.2f} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
