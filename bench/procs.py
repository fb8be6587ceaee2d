"""What the collector benchmarks share: the binary, the seed configs, /proc readings, the metrics
and sink endpoints, and `Process`, one role started, stopped and restarted by pid.

gateway.py, outage.py and soak.py import it. Standard library only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BINARY = ROOT / "target" / "release" / "threadline"
# The seed configs as the repository keeps them (byte for byte ../shared/seed's; the e2e suite
# checks it), so the benchmarks run on a clean clone too; $THREADLINE_SEED_DIR points elsewhere.
SEED = Path(os.environ.get("THREADLINE_SEED_DIR", ROOT / "examples" / "seed"))
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def metric(port: int, name: str, *labels: str) -> float:
    """Sum of the samples of `name` whose label text contains every one of `labels`."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(
        float(l.rsplit(" ", 1)[1])
        for l in text.splitlines()
        if l.startswith(name + "{") and all(label in l for label in labels)
    )


def sink_stats(port: int) -> dict:
    return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5).read())


def wait_port(port: int) -> None:
    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"port {port} never opened")


def sink_argv(grpc: int, stats: int) -> list[str]:
    """A `threadline sink` on 127.0.0.1 (gRPC and its /stats)."""
    return ["sink", "--grpc-endpoint", f"127.0.0.1:{grpc}", "--stats-endpoint", f"127.0.0.1:{stats}", "--quiet"]


def collector_argv(config: Path, grpc: int, http: int, metrics_port: int, extra: list[str]) -> list[str]:
    """`threadline collector` with `config`, its OTLP receivers and metrics on 127.0.0.1."""
    return [
        "collector", "--config", str(config), *extra,
        "--set", f"receivers::otlp::protocols::grpc::endpoint=127.0.0.1:{grpc}",
        "--set", f"receivers::otlp::protocols::http::endpoint=127.0.0.1:{http}",
        "--set", f"service::telemetry::metrics::address=127.0.0.1:{metrics_port}",
    ]


@dataclass
class Incarnation:
    pid: int
    started: float
    ended: float | None = None
    samples: list[tuple[float, float]] = field(default_factory=list)


class Process:
    """One role (`store`, `gateway-1`, ...) of target/release/threadline: started, stopped and
    restarted by pid (its log appended to `<logs>/<name>.log`), with RSS samples per incarnation."""

    def __init__(self, name: str, argv: list[str], logs: Path, ready_port: int) -> None:
        self.name, self.argv, self.logs, self.ready_port = name, argv, logs, ready_port
        self.popen: subprocess.Popen | None = None
        self.incarnations: list[Incarnation] = []
        self.lock = threading.Lock()

    @property
    def pid(self) -> int:
        """The pid of the running incarnation."""
        return self.incarnations[-1].pid

    def start(self) -> None:
        """Starts a new incarnation and waits until it listens on `ready_port`."""
        log = open(self.logs / f"{self.name}.log", "ab")
        popen = subprocess.Popen([str(BINARY), *self.argv], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        with self.lock:
            self.popen = popen
            self.incarnations.append(Incarnation(popen.pid, time.monotonic()))
        wait_port(self.ready_port)

    def send_signal(self, sig: int = signal.SIGTERM) -> subprocess.Popen | None:
        """Sends `sig` to the running incarnation, if any, and forgets it; returns it for `wait`."""
        with self.lock:
            popen, self.popen = self.popen, None
        if popen is None or popen.poll() is not None:
            return None
        popen.send_signal(sig)
        return popen

    def wait(self, popen: subprocess.Popen | None, timeout: float = 60) -> None:
        """Waits for a signalled incarnation to end (SIGKILL after `timeout` seconds)."""
        if popen is None:
            return
        try:
            popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()
        self.incarnations[-1].ended = time.monotonic()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
        self.wait(self.send_signal(sig), timeout)

    def sample(self, under_load: bool) -> None:
        with self.lock:
            if self.popen is None or self.popen.poll() is not None or not under_load:
                return
            try:
                self.incarnations[-1].samples.append((time.monotonic(), rss_mib(self.popen.pid)))
            except (OSError, ValueError):
                pass


def stop_all(processes: list[Process], timeout: float = 30) -> None:
    """SIGTERM to every process still running, then wait for each (SIGKILL after `timeout` s)."""
    signalled = [(p, p.send_signal()) for p in processes]
    for p, popen in signalled:
        p.wait(popen, timeout)
