#!/usr/bin/env python3
"""Benchmark: the web UI in headless Debian Chromium (Playwright) against a real all-in-one.

- search: time of the API's answer and time from that answer to results painted (the UI stamps
  `data-rendered-ms` on <main> in the frame after it drew the scatter and table), median of 5;
- trace view: time to interactive (request sent to first frame with the waterfall drawn:
  `data-interactive-ms`) for traces of 100, 1,000 and 10,000 spans sent with the OpenTelemetry SDK,
  median of 3; scrolling the 10,000-span waterfall (frame intervals while it scrolls 240 px a frame);
- tab memory: the JS heap (CDP Performance.getMetrics) and the RSS of the tab's renderer process.

Run from the repo root with the e2e venv (tests/e2e/requirements.txt):
    THREADLINE_BIN=target/release/threadline .venv/bin/python bench/ui.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from playwright.sync_api import sync_playwright  # noqa: E402

from ui_estate import Estate, launch, wait_stored, wide_trace  # noqa: E402


def renderer_rss_mib() -> float:
    """The largest RSS among Chromium renderer processes (one tab here)."""
    best = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            if b"chromium" not in cmdline or b"--type=renderer" not in cmdline:
                continue
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    best = max(best, int(line.split()[1]) / 1024)
        except OSError:
            continue
    return best


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        estate = Estate(Path(tmp), decision_wait="3s")
        try:
            print("filling the store: demo for 15 s, then traces of 100, 1000, 10000 spans ...", flush=True)
            estate.demo(15, rate=10)
            big = {n: wide_trace(estate.grpc, n) for n in (100, 1000, 10000)}
            for n, trace_id in big.items():
                wait_stored(estate, trace_id, n, timeout=120)
            traces = len(estate.search("{ }", limit=10000))
            with sync_playwright() as playwright:
                browser = launch(playwright)
                page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
                cdp = page.context.new_cdp_session(page)
                cdp.send("Performance.enable")

                api_ms, paint_ms = [], []
                for _ in range(5):
                    page.goto(f"{estate.api}/#/search?q=%7B%20%7D&range=1h&limit=500")
                    page.wait_for_function("document.querySelector('main').dataset.renderedMs !== undefined", timeout=30000)
                    paint_ms.append(float(page.evaluate("document.querySelector('main').dataset.renderedMs")))
                    api_ms.append(page.evaluate("""() => { const e = performance.getEntriesByType('resource')
                        .filter(r => r.name.includes('/api/search')).pop(); return e.responseEnd - e.startTime; }"""))
                rows = page.locator("#results tbody tr").count()
                print(f"search '{{ }}' over {traces} stored traces, {rows} results shown: API answer "
                      f"{statistics.median(api_ms):.0f} ms, painted {statistics.median(paint_ms):.0f} ms after it (median of 5)")

                for n, trace_id in big.items():
                    tti = []
                    for _ in range(3):
                        page.goto(f"{estate.api}/#/search")
                        page.goto(f"{estate.api}/#/trace/{trace_id}")
                        page.wait_for_function("document.querySelector('main').dataset.interactiveMs !== undefined", timeout=60000)
                        tti.append(float(page.evaluate("document.querySelector('main').dataset.interactiveMs")))
                    rendered = page.locator("#waterfall .wf-row").count()
                    heap = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
                    line = (f"trace of {n:>5} spans: interactive in {statistics.median(tti):.0f} ms (median of 3), "
                            f"{rendered} rows in the DOM, JS heap {heap['JSHeapUsedSize'] / 2**20:.0f} MiB, "
                            f"tab RSS {renderer_rss_mib():.0f} MiB")
                    if n == 10000:
                        frames = page.evaluate("""() => new Promise(done => {
                            const el = document.getElementById('waterfall'); const gaps = []; let last = performance.now(), i = 0;
                            const step = (t) => { gaps.push(t - last); last = t; el.scrollTop += 240; if (++i < 120) requestAnimationFrame(step); else done(gaps.slice(1)); };
                            requestAnimationFrame(step); })""")
                        frames.sort()
                        line += (f"; scrolling: median frame {statistics.median(frames):.1f} ms, "
                                 f"p95 {frames[int(len(frames) * 0.95)]:.1f} ms, worst {frames[-1]:.1f} ms")
                    print(line, flush=True)
                browser.close()
        finally:
            estate.stop()


if __name__ == "__main__":
    main()
