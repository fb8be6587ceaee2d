"""The store says "try again later" with 503 and Retry-After, never a refused connection or a
hang (issue 12 item 6): while it replays a large WAL after a crash, and when a tenant already has
`query_frontend.max_outstanding_per_tenant` queries in flight."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse

from harness import run_threadline, wait_until

# A regular expression on a span attribute: every span of every trace is read, so the query
# runs long enough (about a second on 300k spans) for a second one to arrive while it runs.
SLOW_QUERY = "/api/search?" + urllib.parse.urlencode(
    {"q": '{ span.http.route =~ ".*no-such-route.*" }', "limit": 20}
)
ALL_TRACES = "/api/search?" + urllib.parse.urlencode({"q": "{ }", "limit": 100000})


def _fill(store, traces: int) -> None:
    result = run_threadline(["loadgen", "--endpoint", store.grpc_endpoint, "--traces", str(traces),
                             "--spans-per-request", "500", "--concurrency", "8"], timeout=300)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["failed_spans"] == 0, report


def test_503_while_the_wal_replays_after_a_crash_then_every_acknowledged_trace(store_factory):
    # A long block duration keeps everything in the WAL; the crash leaves it all to replay.
    store = store_factory(sets=["ingester::max_block_duration=1h", "ingester::max_block_bytes=100000000000"])
    _fill(store, 60_000)
    before = store.json(ALL_TRACES, timeout=120)["traces"]
    assert len(before) == 60_000
    store.kill9()

    store.start(wait_ready=False)
    answers: list[tuple[int, str, str, str | None]] = []

    def serving() -> bool:
        for path in ["/ready", "/api/search?limit=1"]:
            try:
                status, body, headers = store.get_with_headers(path)
            except OSError:
                return False  # not bound yet: the process is still reading its config
            answers.append((status, body.decode(errors="replace"), path, headers.get("retry-after")))
        return answers[-2][0] == 200

    wait_until(serving, 120, lambda: f"never ready: {answers[-4:]}", interval=0.01)
    starting = [a for a in answers if a[0] == 503]
    assert starting, f"no 503 seen while the WAL of 600k spans replayed: {answers[:4]}"
    assert all("the store is starting" in body for _, body, _, _ in starting), starting[:2]
    assert all(retry == "1" for _, _, _, retry in starting), starting[:2]
    assert {status for status, _, _, _ in answers} <= {503, 200}, "only 'starting' or the answer"
    assert {path for _, _, path, _ in starting} == {"/ready", "/api/search?limit=1"}
    after = store.json(ALL_TRACES, timeout=120)["traces"]
    assert sorted(t["traceID"] for t in after) == sorted(t["traceID"] for t in before), (
        "every acknowledged trace is back after the replay"
    )


def test_503_naming_the_key_when_a_tenant_has_too_many_queries_in_flight(store_factory):
    store = store_factory(sets=["query_frontend::max_outstanding_per_tenant=1"])
    _fill(store, 30_000)

    # Two identical slow queries at once: the tenant has one place, so one of them runs and the
    # other is refused at once while the first is still in flight.
    answers: list[tuple[int, bytes, dict[str, str], float, float]] = []
    barrier = threading.Barrier(2)

    def slow_search() -> None:
        barrier.wait()
        started = time.monotonic()
        status, body, headers = store.get_with_headers(SLOW_QUERY, timeout=120)
        answers.append((status, body, headers, started, time.monotonic()))

    threads = [threading.Thread(target=slow_search) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    statuses = sorted(a[0] for a in answers)
    timing = [(a[0], round(a[3] - answers[0][3], 3), round(a[4] - answers[0][3], 3)) for a in answers]
    assert statuses == [200, 503], f"one query runs, the other is refused: {timing}"
    served = next(a for a in answers if a[0] == 200)
    refused = next(a for a in answers if a[0] == 503)
    assert refused[4] < served[4], "the refusal came while the other query was still running"
    assert refused[4] - refused[3] < 1.0, "refused at once, not after waiting"
    refusals = [refused[:3]]
    status, body, headers = refusals[0]
    assert headers.get("retry-after") == "1"
    message = body.decode()
    assert "query_frontend::max_outstanding_per_tenant" in message and "single-tenant" in message, message
    # Probes and trace reads do not count against the limit; once the query ends, queries run.
    assert store.get("/ready")[0] == 200
    assert store.get(SLOW_QUERY, timeout=120)[0] == 200
