"""What the UI tests and `bench/ui.py` share: a real `all-in-one` (optionally filled by
`threadline demo`), traces of a chosen shape sent with the OpenTelemetry SDK, and headless
Debian Chromium driven by Playwright (never a downloaded browser)."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from pathlib import Path

from harness import LOOPBACK, ManagedProcess, SdkSender, free_port, require_binary, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SERVICES = {"frontend", "orders", "payments", "inventory"}


def launch(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


class Estate:
    """all-in-one on free ports; `demo(seconds)` runs the demo estate into it."""

    def __init__(self, tmp: Path, decision_wait: str = "6s"):
        self.tmp = tmp
        self.grpc, http_port, api, health, metrics = (free_port() for _ in range(5))
        self.api = f"http://{LOOPBACK}:{api}"
        self.processes: list[ManagedProcess] = []
        self.aio = self._process("all-in-one", [
            str(require_binary()), "all-in-one", "--data", str(tmp / "data"),
            "--set", f"receivers::otlp::protocols::grpc::endpoint={LOOPBACK}:{self.grpc}",
            "--set", f"receivers::otlp::protocols::http::endpoint={LOOPBACK}:{http_port}",
            "--set", f"extensions::health_check::endpoint={LOOPBACK}:{health}",
            "--set", f"service::telemetry::metrics::address={LOOPBACK}:{metrics}",
            "--set", f"processors::tail_sampling::decision_wait={decision_wait}",
            "--store-set", f"server::http_listen_port={api}",
        ], ready_url=f"{self.api}/ready", ready_ports=[self.grpc])
        self.aio.start()

    def _process(self, name, argv, **kwargs) -> ManagedProcess:
        process = ManagedProcess(name, argv, self.tmp / "logs", **kwargs)
        self.processes.append(process)
        return process

    def demo(self, seconds: float, rate: float = 8, error_ratio: float = 0.2, slow_ratio: float = 0.1) -> ManagedProcess:
        frontend = free_port()
        demo = self._process("demo", [
            str(require_binary()), "demo", "--otlp-endpoint", f"http://{LOOPBACK}:{self.grpc}",
            "--listen", f"{LOOPBACK}:{frontend}", "--rate", str(rate), "--error-ratio", str(error_ratio),
            "--slow-ratio", str(slow_ratio)], ready_ports=[frontend])
        demo.start()
        time.sleep(seconds)
        assert demo.stop(timeout=30) == 0
        return demo

    def get(self, path: str, **params):
        url = f"{self.api}{path}" + (("?" + urllib.parse.urlencode(params)) if params else "")
        with urllib.request.urlopen(url, timeout=30) as response:
            return json.loads(response.read())

    def search(self, q: str, limit: int = 1000) -> list[dict]:
        return self.get("/api/search", q=q, limit=limit)["traces"]

    def stop(self):
        for process in reversed(self.processes):
            process.stop(timeout=15)


def send_trace(grpc_port: int, shape: list[tuple[str, int, int, str | None]], service: str = "e2e-checkout",
               total_ms: int = 2500) -> str:
    """One trace from the SDK: `shape` lists (name, start offset ms, duration ms, parent name or
    None for the root), a root longer than the all-in-one's 2 s latency policy so it is kept.
    Returns the trace id (hex)."""
    sender = SdkSender(f"{LOOPBACK}:{grpc_port}", resource_attributes={"service.name": service},
                       max_export_batch_size=2048)
    tracer = sender.tracer()
    from opentelemetry import trace as trace_api

    base = time.time_ns() - total_ms * 1_000_000 - 1_000_000_000
    spans, ends = {}, {}
    for name, offset, duration, parent in shape:
        context = trace_api.set_span_in_context(spans[parent]) if parent else None
        spans[name] = tracer.start_span(name, context=context, start_time=base + offset * 1_000_000)
        ends[name] = base + (offset + duration) * 1_000_000
    for name, span in spans.items():
        span.end(end_time=ends[name])
    trace_id = format(next(iter(spans.values())).get_span_context().trace_id, "032x")
    sender.finish()
    return trace_id


def wide_trace(grpc_port: int, spans: int, service: str = "bench") -> str:
    """A trace of `spans` spans (a root, 10 calls under it, the rest spread beneath), 2.5 s long."""
    shape = [("root", 0, 2500, None)]
    for i in range(1, spans):
        parent = "root" if i <= 10 else f"op-{(i - 1) // 10}"
        shape.append((f"op-{i}", (i * 7) % 2000, 5 + i % 400, parent))
    return send_trace(grpc_port, shape, service=service)


def wait_stored(estate: Estate, trace_id: str, spans: int, timeout: float = 60):
    def count():
        try:
            body = estate.get(f"/api/traces/{trace_id}")
        except OSError:
            return 0
        return sum(len(ss["spans"]) for b in body["batches"] for ss in b["scopeSpans"]) >= spans
    wait_until(count, timeout, f"trace {trace_id} with {spans} spans not stored")
