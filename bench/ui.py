#!/usr/bin/env python3
"""Benchmark: the web UI in headless Debian Chromium (Playwright) against a real all-in-one.

- search: the UI streams results (/api/threadline/search/stream) and stamps on <main>
  `data-first-results-ms` (search asked to the first frame with results drawn) and
  `data-rendered-ms` (final answer received to the frame after the scatter and table drew it);
  printed with the stream's whole answer time and /api/search's answer time for the same query
  (fetched from the page), median of 5;
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
import urllib.parse
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


def search_bench(page, api: str, what: str, query: str = "{ }", limit: int = 500) -> None:
    first_ms, paint_ms, stream_ms, api_ms = [], [], [], []
    q = urllib.parse.quote(query)
    for _ in range(5):
        page.goto(f"{api}/#/search")
        page.goto(f"{api}/#/search?q={q}&range=1h&limit={limit}")
        page.wait_for_function("document.querySelector('main').dataset.renderedMs !== undefined", timeout=60000)
        main = page.evaluate("({...document.querySelector('main').dataset})")
        paint_ms.append(float(main["renderedMs"]))
        first_ms.append(float(main["firstResultsMs"]))
        # /api/search timed with the very parameters the page streamed with.
        streamed, direct = page.evaluate("""async () => { const e = performance.getEntriesByType('resource')
            .filter(r => r.name.includes('/api/threadline/search/stream')).pop();
            const t = performance.now(); await (await fetch(e.name.replace('/api/threadline/search/stream', '/api/search'))).text();
            return [e.responseEnd - e.startTime, performance.now() - t]; }""")
        stream_ms.append(streamed)
        api_ms.append(direct)
    rows = page.locator("#results tbody tr").count()
    blocks = page.locator("#search-progress").inner_text()
    print(f"{what} ({blocks}), {rows} results shown: first results painted {statistics.median(first_ms):.0f} ms "
          f"after asking; whole stream {statistics.median(stream_ms):.0f} ms, final answer painted "
          f"{statistics.median(paint_ms):.0f} ms after it; /api/search answers in {statistics.median(api_ms):.0f} ms "
          f"(median of 5)", flush=True)


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

                search_bench(page, estate.api, f"search '{{ }}' over {traces} stored traces")

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
