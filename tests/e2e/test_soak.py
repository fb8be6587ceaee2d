"""The soak with faults, three minutes of it (issue 19, item 5): 2 agents -> 3 gateways -> store
under load while gateways restart in turn, all gateways are down for 20 s and the store is
killed with SIGKILL once. `bench/soak.py` runs the same for 30 minutes (BENCHMARKS.md)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from harness import REPO_ROOT


@pytest.mark.slow
def test_a_three_minute_soak_with_restarts_an_outage_and_a_killed_store_keeps_every_acknowledged_error_and_slow_trace():
    soak = subprocess.Popen(
        [
            sys.executable, str(REPO_ROOT / "bench" / "soak.py"),
            "--minutes", "3", "--rate", "5000", "--restart-every", "60",
            "--outage", "20", "--warm-up", "20", "--port-base", "28000",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = soak.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        # The soak stops every process it started on SIGTERM.
        soak.send_signal(signal.SIGTERM)
        out, err = soak.communicate(timeout=120)
        pytest.fail(f"the soak did not finish in 15 minutes:\n{err[-3000:]}")
    assert out.strip(), f"the soak printed no result (exit {soak.returncode}):\n{err[-3000:]}"
    result = json.loads(out.strip().splitlines()[-1])
    events = "\n".join(result["events"])
    assert result["problems"] == [], f"{result['problems']}\n{events}\n{err[-2000:]}"
    assert soak.returncode == 0
    # The faults happened, and the load went through them.
    for fault in ("restart gateway-1", "outage", "gateways back", "kill store"):
        assert fault in events, events
    assert result["sent_spans"] > 500_000, result
    assert result["error_traces_acknowledged"] > 2_000, result
    assert result["error_traces_stored"] >= result["error_traces_acknowledged"], result
    assert result["slow_traces_stored"] >= result["slow_traces_acknowledged"], result
    assert result["incomplete_traces"] == 0, result
    assert {c["process"] for c in result["rss"]} >= {"agent-1", "agent-2"}, result["rss"]
    assert all(c["growth"] < 0.10 for c in result["rss"]), result["rss"]
