#!/usr/bin/env python3
"""Soak with faults: 2 agents -> 3 gateways (tail sampling) -> store, under load, while things break.

The seed's agent and gateway configs (the agents' exporter swapped for the loadbalancing exporter
over the three gateways, so each trace reaches one gateway whole) and a `threadline store`. Two load
generators send --rate spans/s in all, 5% error and 5% slow traces, in requests of 500 spans.
Meanwhile:

- a rolling restart: every --restart-every seconds one gateway (in turn) gets SIGTERM and is started
  again;
- the agents' backend path is cut for --outage seconds at 40% of the run (all gateways stopped);
- the store is killed with SIGKILL once, at 60% of the run, and started again.

At the end the load stops, the pipeline drains, the collectors are stopped, and the store is asked
(TraceQL over its HTTP API) for every error trace, every slow trace and every trace with fewer than
its 10 spans. Every error and slow trace the load generators were told was accepted must be in the
store, and no stored trace may be incomplete. RSS of every process incarnation that lived at least
three warm-ups under load must not grow by 10% or more: the peak of the second half of its life
after warm-up is compared with the peak of the first half, leaving out samples taken during a
fault and within a warm-up after it (the backlog after an outage is a burst, not growth).

Prints one JSON object (and a summary on stderr); exits 1 when a check fails. Standard library
only; uses target/release/threadline.

    python3 bench/soak.py [--minutes 30] [--rate 30000] [--restart-every 300] [--outage 60]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procs import BINARY, SEED, Process, collector_argv, metric  # noqa: E402

SPANS_PER_TRACE = 10
RSS_GROWTH_LIMIT = 0.10
# Quiet samples (one a second) each half of a life must have for its RSS to be judged: a peak
# over less than one head cycle of the store (30 s) says little.
MIN_QUIET_SAMPLES = 30


def search(api: str, query: str, start: int, end: int) -> list[dict]:
    params = urllib.parse.urlencode({"q": query, "limit": 10_000_000, "spss": 1, "start": start, "end": end})
    with urllib.request.urlopen(f"{api}/api/search?{params}", timeout=900) as response:
        return json.loads(response.read())["traces"]


def rss_growth(process: Process, warm_up: float, disturbed: list[tuple[float, float]]) -> list[dict]:
    """Per incarnation that lived at least three warm-ups under load, with at least
    MIN_QUIET_SAMPLES samples in each half: the peak RSS of the first
    and of the second half of its life after warm-up, and the growth between them. Peaks rather
    than points: the store's head and the collectors' batches make RSS a saw tooth. Samples taken
    during a fault or within a warm-up after it are left out: the backlog after an outage is a
    burst, not growth."""
    checked = []
    for n, inc in enumerate(process.incarnations):
        if not inc.samples or inc.samples[-1][0] - inc.started < 3 * warm_up:
            continue
        samples = [
            (t, rss) for t, rss in inc.samples
            if t - inc.started >= warm_up and not any(a <= t <= b for a, b in disturbed)
        ]
        middle = (inc.started + warm_up + inc.samples[-1][0]) / 2
        firsts = [rss for t, rss in samples if t <= middle]
        seconds = [rss for t, rss in samples if t > middle]
        if min(len(firsts), len(seconds)) < MIN_QUIET_SAMPLES:
            continue
        first, second = max(firsts), max(seconds)
        checked.append({
            "process": process.name, "incarnation": n + 1,
            "seconds": round(samples[-1][0] - inc.started),
            "peak_first_half_mib": round(first, 1), "peak_second_half_mib": round(second, 1),
            "growth": round(second / first - 1, 4),
        })
    return checked


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--rate", type=int, default=30_000, help="spans/s over both agents")
    parser.add_argument("--restart-every", type=float, default=300, help="seconds between gateway restarts")
    parser.add_argument("--outage", type=float, default=60, help="seconds all gateways are down")
    parser.add_argument("--warm-up", type=float, default=60, help="seconds after a start before RSS counts")
    parser.add_argument("--port-base", type=int, default=28000)
    args = parser.parse_args()
    if not BINARY.exists():
        raise SystemExit("build first: cargo build --release -p threadline")
    duration = args.minutes * 60
    base = args.port_base
    logs = Path(tempfile.mkdtemp(prefix="threadline-soak-"))
    api, store_grpc = f"http://127.0.0.1:{base}", base + 17

    store = Process("store", [
        "store",
        "--set", f"server::http_listen_port={base}",
        "--set", f"distributor::receivers::otlp::protocols::grpc::endpoint=127.0.0.1:{store_grpc}",
        "--set", f"distributor::receivers::otlp::protocols::http::endpoint=127.0.0.1:{base + 18}",
        "--set", f"storage::trace::wal::path={logs / 'wal'}",
        "--set", f"storage::trace::local::path={logs / 'blocks'}",
    ], logs, base)
    gateways = []
    for i in range(3):
        port = base + 100 + 10 * i
        gateways.append(Process(f"gateway-{i + 1}", collector_argv(
            SEED / "gateway-config.yaml", port, port + 1, port + 2,
            ["--set", f"exporters::otlp/tempo::endpoint=127.0.0.1:{store_grpc}"],
        ), logs, port))
    hostnames = ", ".join(f'"127.0.0.1:{g.ready_port}"' for g in gateways)
    agents = []
    for j in range(2):
        port = base + 200 + 10 * j
        agents.append(Process(f"agent-{j + 1}", collector_argv(SEED / "agent-config.yaml", port, port + 1, port + 2, [
            "--config", "yaml:exporters::loadbalancing: {protocol: {otlp: {tls: {insecure: true}}}, "
                        f"resolver: {{static: {{hostnames: [{hostnames}]}}}}}}",
            "--config", "yaml:service::pipelines::traces::exporters: [loadbalancing]",
        ]), logs, port))
    everything = [store, *gateways, *agents]
    loadgens: list[subprocess.Popen] = []
    events: list[str] = []
    disturbed: list[tuple[float, float]] = []
    under_load = threading.Event()
    done = threading.Event()

    def sampler() -> None:
        while not done.is_set():
            for p in everything:
                p.sample(under_load.is_set())
            time.sleep(1)

    ok = False
    # SIGTERM (a test's timeout, a Ctrl-C in another terminal) still stops everything started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        for p in everything:
            p.start()
        threading.Thread(target=sampler, daemon=True).start()
        began_ns = time.time_ns()
        began = time.monotonic()
        under_load.set()
        for agent in agents:
            loadgens.append(subprocess.Popen([
                str(BINARY), "loadgen", "--endpoint", f"127.0.0.1:{agent.ready_port}",
                "--rate", str(args.rate // len(agents)), "--duration", str(int(duration)),
                "--spans-per-request", "500", "--concurrency", "8", "--connections", "2",
                "--max-retries", "30",
            ], stdout=subprocess.PIPE, stderr=open(logs / f"loadgen-{agent.name}.log", "ab"), text=True, start_new_session=True))

        def at(seconds: float) -> None:
            time.sleep(max(0.0, began + seconds - time.monotonic()))

        outage = (0.4 * duration, 0.4 * duration + args.outage)
        schedule: list[tuple[float, str]] = [(outage[0], "outage"), (0.6 * duration, "kill store")]
        n = 1
        while n * args.restart_every < duration - 10:
            t = n * args.restart_every
            if not outage[0] - 10 <= t <= outage[1] + 10:
                schedule.append((t, f"restart gateway-{(n - 1) % 3 + 1}"))
            n += 1
        for t, action in sorted(schedule):
            at(t)
            fault_began = time.monotonic()
            events.append(f"{round(fault_began - began)} s: {action}")
            print(events[-1], file=sys.stderr)
            if action == "outage":
                for g in gateways:
                    g.stop()
                time.sleep(args.outage)
                for g in gateways:
                    g.start()
                events.append(f"{round(time.monotonic() - began)} s: gateways back")
            elif action == "kill store":
                store.stop(signal.SIGKILL)
                store.start()
            else:
                gateway = next(g for g in gateways if g.name == action.split()[-1])
                gateway.stop()
                gateway.start()
            disturbed.append((fault_began, time.monotonic() + args.warm_up))

        reports = []
        for loadgen in loadgens:
            out, _ = loadgen.communicate(timeout=duration + 600)
            reports.append(json.loads(out.strip().splitlines()[-1]))
        under_load.clear()
        events.append(f"{round(time.monotonic() - began)} s: load stopped")

        # Drain: until the gateways have sent nothing new for 15 s and no queue holds anything.
        def sent_and_queued() -> tuple[float, float]:
            sent = sum(metric(g.ready_port + 2, "otelcol_exporter_sent_spans") for g in gateways)
            queued = sum(metric(p.ready_port + 2, "otelcol_exporter_queue_size") for p in [*gateways, *agents])
            return sent, queued

        last, still_since = sent_and_queued(), time.monotonic()
        while time.monotonic() - still_since < 15:
            time.sleep(1)
            now = sent_and_queued()
            if now != last or now[1] > 0:
                last, still_since = now, time.monotonic()
        for p in [*agents, *gateways]:
            p.stop()
        events.append(f"{round(time.monotonic() - began)} s: drained, collectors stopped")

        ended_ns = time.time_ns()
        window = (began_ns // 10**9 - 60, ended_ns // 10**9 + 60)
        queried = time.monotonic()
        errors = {t["traceID"] for t in search(api, "{ status = error }", *window)}
        slow = {t["traceID"] for t in search(api, "{ traceDuration > 2s }", *window)}
        incomplete = [t["traceID"] for t in search(api, f"{{ }} | count() < {SPANS_PER_TRACE}", *window)]
        query_seconds = time.monotonic() - queried

        sent_errors = sum(r["sent_error_traces"] for r in reports)
        sent_slow = sum(r["sent_slow_traces"] for r in reports)
        rss = [c for p in everything for c in rss_growth(p, args.warm_up, disturbed)]
        result = {
            "minutes": args.minutes, "rate": args.rate, "events": events, "logs": str(logs),
            "sent_spans": sum(r["sent_spans"] for r in reports),
            "failed_spans": sum(r["failed_spans"] for r in reports),
            "retryable_errors": sum(r["retryable_errors"] for r in reports),
            "error_traces_acknowledged": sent_errors, "error_traces_stored": len(errors),
            "slow_traces_acknowledged": sent_slow, "slow_traces_stored": len(slow),
            "incomplete_traces": len(incomplete), "incomplete_examples": incomplete[:5],
            "query_seconds": round(query_seconds, 1),
            "rss": rss,
        }
        problems = []
        if len(errors) < sent_errors:
            problems.append(f"{sent_errors - len(errors)} acknowledged error traces missing")
        if len(slow) < sent_slow:
            problems.append(f"{sent_slow - len(slow)} acknowledged slow traces missing")
        if incomplete:
            problems.append(f"{len(incomplete)} stored traces have fewer than {SPANS_PER_TRACE} spans")
        problems += [f"{c['process']} #{c['incarnation']} RSS grew {c['growth']:.1%}" for c in rss if c["growth"] >= RSS_GROWTH_LIMIT]
        if not rss:
            problems.append("no process lived long enough to check its RSS")
        result["problems"] = problems
        print(json.dumps(result))
        print(
            f"acknowledged {result['sent_spans']:,} spans; error traces {sent_errors:,} acknowledged, "
            f"{len(errors):,} stored; slow {sent_slow:,} / {len(slow):,}; incomplete {len(incomplete)}; "
            + "; ".join(f"{c['process']}#{c['incarnation']} {c['peak_first_half_mib']}->{c['peak_second_half_mib']} MiB" for c in rss),
            file=sys.stderr,
        )
        ok = not problems
    finally:
        done.set()
        for loadgen in loadgens:
            if loadgen.poll() is None:
                loadgen.kill()
                loadgen.wait()
        for p in everything:
            p.stop()
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
