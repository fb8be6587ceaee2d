"""A real Prometheus server for tests: Debian's `prometheus` on 127.0.0.1 with its own data
directory, scraping one target (optional) and accepting remote write."""

from __future__ import annotations

import json
import shutil
import urllib.parse
import urllib.request
from pathlib import Path

from harness import LOOPBACK, free_port

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def get_json(url: str, headers: dict | None = None):
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


class Prometheus:
    def __init__(self, process_factory, tmp_path: Path, scrape_target: str | None = None,
                 metrics_path: str = "/api/threadline/generator/metrics"):
        self.port = free_port()
        config = tmp_path / "prometheus.yml"
        scrape = (
            "scrape_configs:\n"
            "  - job_name: threadline\n"
            f"    metrics_path: {metrics_path}\n"
            f"    static_configs: [{{targets: ['{scrape_target}']}}]\n"
        ) if scrape_target else ""
        config.write_text("global: {scrape_interval: 1s, evaluation_interval: 1s}\n" + scrape)
        self.process = process_factory("prometheus", [
            PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
            f"--web.listen-address={LOOPBACK}:{self.port}", "--web.enable-remote-write-receiver",
        ], ready_url=f"http://{LOOPBACK}:{self.port}/-/ready")
        self.process.start(timeout=60)

    @property
    def remote_write_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/api/v1/write"

    def query(self, promql: str) -> list[dict]:
        body = get_json(f"http://{LOOPBACK}:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        assert body["status"] == "success", body
        return body["data"]["result"]

    def by(self, promql: str, *labels: str) -> dict[tuple, float]:
        return {tuple(r["metric"].get(l, "") for l in labels): float(r["value"][1]) for r in self.query(promql)}
