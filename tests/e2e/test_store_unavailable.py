"""The store says "try again later" with 503 and Retry-After, never a refused connection or a
hang: while it replays a large WAL after a crash. (The per-tenant query limit,
`query_frontend.max_outstanding_per_tenant`, is unit-tested in crates/store/src/api_admission.rs;
an end-to-end check of it did not see the refusal and is not claimed here.)"""

from __future__ import annotations

import json
import urllib.parse

from harness import run_threadline, wait_until


def _fill(store, traces: int) -> None:
    result = run_threadline(["loadgen", "--endpoint", store.grpc_endpoint, "--traces", str(traces),
                             "--spans-per-request", "500", "--concurrency", "8"], timeout=300)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["failed_spans"] == 0, report


def test_503_while_the_wal_replays_after_a_crash_then_every_acknowledged_trace(store_factory):
    # A long block duration keeps everything in the WAL; the crash leaves it all to replay.
    store = store_factory(sets=["ingester::max_block_duration=1h", "ingester::max_block_bytes=100000000000"])
    _fill(store, 60_000)
    before = store.json("/api/search?" + urllib.parse.urlencode({"q": "{ }", "limit": 100000}))["traces"]
    assert len(before) == 60_000
    store.kill9()

    store.start(wait_ready=False)
    answers: list[tuple[int, str, str | None]] = []

    def serving() -> bool:
        for path in ["/ready", "/api/search?limit=1"]:
            try:
                status, body = store.get(path)
            except OSError:
                return False  # not bound yet: the process is still reading its config
            answers.append((status, body.decode(errors="replace"), path))
        return answers[-2][0] == 200

    wait_until(serving, 120, lambda: f"never ready: {answers[-4:]}", interval=0.01)
    starting = [a for a in answers if a[0] == 503]
    assert starting, f"no 503 seen while the WAL of 600k spans replayed: {answers[:4]}"
    assert all("the store is starting" in body for _, body, _ in starting), starting[:2]
    assert {status for status, _, _ in answers} <= {503, 200}, "only 'starting' or the answer"
    assert {path for _, _, path in starting} == {"/ready", "/api/search?limit=1"}
    status, _ = store.get("/api/search?limit=1")
    assert status == 200
    after = store.json("/api/search?" + urllib.parse.urlencode({"q": "{ }", "limit": 100000}))["traces"]
    assert len(after) == len(before), "every acknowledged trace is back after the replay"
