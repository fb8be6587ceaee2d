"""The web UI (issue 16) in a real browser: Debian's Chromium driven by Playwright against a real
`all-in-one` filled by `threadline demo` (and a few SDK traces of a known shape). Each page's
screenshot goes to docs/ui/."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from harness import REPO_ROOT, wait_until
from ui_estate import SERVICES, Estate, launch, send_trace, wait_stored

SHOTS = REPO_ROOT / "docs" / "ui"
FAST = [("checkout", 0, 2100, None), ("load cart", 10, 200, "checkout"), ("charge", 300, 1500, "checkout")]
# The slow one retries the charge and adds a fraud check: two spans only it has.
SLOW = [("checkout", 0, 4000, None), ("load cart", 10, 200, "checkout"), ("charge", 300, 1500, "checkout"),
        ("charge retry", 1900, 1500, "checkout"), ("fraud check", 3500, 400, "checkout")]
# Names longer than the waterfall's name column, on bars that fill the track: where the duration
# label used to be drawn over the name.
LONG_ROOT = "checkout the whole cart, reserve the stock of every line, charge the card and e-mail the receipt"
LONG = [(LONG_ROOT, 0, 3000, None), ("reserve stock for every line of the cart in the warehouse of the region", 5, 2990, LONG_ROOT),
        ("e-mail", 2990, 10, LONG_ROOT)]


@pytest.fixture(scope="module")
def estate(tmp_path_factory):
    estate = Estate(tmp_path_factory.mktemp("ui"))
    try:
        demo = estate.demo(12)
        logs = [json.loads(l) for l in demo.all_output_text().splitlines() if l.startswith("{")]
        estate.errors = {l["trace_id"] for l in logs if l["message"] == "order failed"}
        assert estate.errors, "the demo produced no failing request"
        estate.fast = send_trace(estate.grpc, FAST)
        estate.slow = send_trace(estate.grpc, SLOW)
        estate.long = send_trace(estate.grpc, LONG, service="e2e-long-names")
        stored = lambda q: {t["traceID"] for t in estate.search(q)}  # noqa: E731
        wait_until(lambda: estate.errors <= stored("{ status = error }"), 40, "the demo's error traces are not stored")
        wait_stored(estate, estate.fast, len(FAST))
        wait_stored(estate, estate.slow, len(SLOW))
        wait_stored(estate, estate.long, len(LONG))
        yield estate
    finally:
        estate.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, estate):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def shot(page, name: str):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def result_ids(page) -> set[str]:
    """The traces shown once the streamed search has finished (its final answer painted)."""
    page.wait_for_selector('#search-progress[data-state="done"], #search-progress[data-state="failed"], .parse-error',
                           timeout=15000, state="attached")
    page.wait_for_function("document.querySelector('main').dataset.renderedMs !== undefined || !!document.querySelector('.state')",
                           timeout=15000)
    return set(page.eval_on_selector_all("#results tbody tr", "rows => rows.map(r => r.dataset.trace)"))


def test_the_store_serves_the_ui_with_content_types_and_etags(estate):
    with urllib.request.urlopen(f"{estate.api}/", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/html")
        assert b'src="/ui/js/app.js"' in response.read()
    with urllib.request.urlopen(f"{estate.api}/ui/js/app.js", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/javascript")
        etag = response.headers["ETag"]
    request = urllib.request.Request(f"{estate.api}/ui/js/app.js", headers={"If-None-Match": etag})
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=10)
    assert answer.value.code == 304
    # The all-in-one says where the UI is.
    assert re.search(r"UI:\s+http://127\.0\.0\.1:\d+/", estate.aio.all_output_text())


def test_search_finds_the_sdk_sent_traces_with_their_span_counts(page, estate):
    query = '{ resource.service.name = "e2e-checkout" }'
    page.goto(f"{estate.api}/#/search?q={urllib.parse.quote(query)}&range=1h")
    assert result_ids(page) == {estate.fast, estate.slow}
    spans = {row.get_attribute("data-trace"): row.locator("td").nth(4).inner_text()
             for row in page.locator("#results tbody tr").all()}
    assert spans == {estate.fast: str(len(FAST)), estate.slow: str(len(SLOW))}
    root = page.locator(f'#results tbody tr[data-trace="{estate.slow}"] td').nth(2)
    expect(root).to_have_text("checkout")


def test_search_results_stream_in_with_progress_and_end_as_the_api_answers(page, estate):
    query = "{ }"
    answer = estate.get("/api/search", q=query, limit=500, spss=3)
    lines = [json.loads(line) for line in urllib.request.urlopen(
        f"{estate.api}/api/threadline/search/stream?" + urllib.parse.urlencode({"q": query, "limit": 500, "spss": 3}),
        timeout=30).read().splitlines()]
    assert [next(iter(line)) for line in lines] == ["partial"] * (len(lines) - 1) + ["final"]
    assert lines[-1]["final"]["traces"] == answer["traces"], "the stream ends with /api/search's traces"

    page.goto(f"{estate.api}/#/search?q={urllib.parse.quote(query)}&range=1h&limit=500")
    progress = page.locator("#search-progress")
    expect(progress).to_have_attribute("data-state", "done", timeout=15000)
    assert int(progress.get_attribute("data-partials")) >= 1, "no partial answer reached the page"
    total = answer["metrics"]["totalBlocks"]
    expect(progress).to_have_text(f"searched {total} of {total} blocks" if total else "searched the recent traces (no blocks yet)")
    assert page.evaluate("document.querySelector('main').dataset.firstResultsMs") is not None
    assert result_ids(page) == {t["traceID"] for t in answer["traces"]}
    scattered = set(page.eval_on_selector_all(".scatter circle", "c => c.map(x => x.dataset.trace)"))
    assert scattered == {t["traceID"] for t in answer["traces"]}


def test_search_by_traceql_and_by_form_returns_the_demo_traces(page, estate):
    query = '{ resource.service.name = "payments" && status = error }'
    expected = {t["traceID"] for t in estate.search(query, limit=100)}
    assert estate.errors <= expected
    page.goto(f"{estate.api}/#/search?q={urllib.parse.quote(query)}&range=1h&limit=100")
    assert result_ids(page) == expected
    expect(page.locator(".scatter circle.err")).to_have_count(len(expected))
    # Sortable: by duration, longest first.
    page.click("#results th >> text=Duration")
    durations = page.eval_on_selector_all("#results tbody tr td:nth-child(4)", "c => c.map(x => x.textContent)")
    assert len(durations) == len(expected)
    shot(page, "search")

    # Form mode writes the TraceQL; the URL then holds query and range.
    page.goto(f"{estate.api}/#/search")
    page.click("role=tab[name='Form']")
    page.fill("#search-form label:has-text('Service') input", "frontend")
    page.select_option("#search-form label:has-text('Status') select", "error")
    expect(page.locator("#traceql")).to_have_value('{ resource.service.name = "frontend" && status = error }')
    shot(page, "search-form")
    page.click("#run-search")
    page.wait_for_function("location.hash.includes('status')")
    assert "range=1h" in page.evaluate("location.hash")
    wait_until(lambda: result_ids(page) >= estate.errors, 10, "form search misses the demo's error traces")
    assert result_ids(page) == {t["traceID"] for t in estate.search('{ resource.service.name = "frontend" && status = error }', 100)}


def test_the_editor_completes_scopes_attribute_names_and_values(page, estate):
    page.goto(f"{estate.api}/#/search?q=")
    editor = page.locator("#traceql")
    editor.fill("")
    editor.type("{ resource.serv")
    name = page.locator("#traceql-suggest li", has_text="resource.service.name").first
    expect(name).to_be_visible()
    name.click()
    expect(editor).to_have_value(re.compile(r"^\{ resource\.service\.name $"))
    editor.type('= "')
    suggestions = page.locator("#traceql-suggest li")
    expect(suggestions.first).to_be_visible()
    values = set(suggestions.evaluate_all("l => l.map(x => x.firstChild.textContent)"))
    assert SERVICES <= values, values
    page.locator("#traceql-suggest li", has_text="payments").first.click()
    expect(editor).to_have_value(re.compile(r'^\{ resource\.service\.name = "payments" $'))
    editor.type("&& sta")
    expect(page.locator("#traceql-suggest li").first).to_contain_text("status")
    shot(page, "search-autocomplete")


def test_a_bad_query_shows_the_parsers_message_at_its_position(page, estate):
    bad = "{ status = error &&\n  duration > }"
    with pytest.raises(urllib.error.HTTPError) as answer:
        estate.get("/api/search", q=bad)
    message = answer.value.read().decode()
    line, column = map(int, re.search(r"line (\d+), column (\d+)", message).groups())
    page.goto(f"{estate.api}/#/search?q={urllib.parse.quote(bad)}")
    error = page.locator(".parse-error")
    expect(error).to_contain_text(f"Line {line}, column {column}")
    assert message.split(": ")[-1] in error.inner_text()
    assert (error.get_attribute("data-line"), error.get_attribute("data-column")) == (str(line), str(column))
    caret_line = error.locator("pre").inner_text().splitlines()[-1]
    assert caret_line == " " * (column - 1) + "^"
    shot(page, "search-error")


def open_error_trace(page, estate) -> str:
    page.goto(f"{estate.api}/#/search?q={urllib.parse.quote('{ status = error }')}&range=1h")
    assert result_ids(page)
    row = page.locator("#results tbody tr").first
    trace_id = row.get_attribute("data-trace")
    row.locator("a").first.click()
    page.wait_for_selector("#waterfall .wf-row")
    return trace_id


def test_a_trace_opens_in_the_waterfall_with_its_spans_errors_critical_path_and_detail(page, estate):
    page.goto(f"{estate.api}/#/settings")
    page.fill("#logs-url", "http://logs.example/explore?trace=${traceId}&span=${spanId}&svc=${service}&from=${start}&to=${end}")
    page.click("#save-settings")
    trace_id = open_error_trace(page, estate)
    body = estate.get(f"/api/traces/{trace_id}")
    spans = [s for b in body["batches"] for ss in b["scopeSpans"] for s in ss["spans"]]
    assert page.locator("#span-count").inner_text() == str(len(spans))
    expect(page.locator("#waterfall .wf-row")).to_have_count(len(spans))
    errors = {s["spanId"] for s in spans if s.get("status", {}).get("code") == 2}
    marked = set(page.eval_on_selector_all('#waterfall .wf-row[data-error="true"]', "r => r.map(x => x.dataset.span)"))
    assert marked == errors and errors
    # The critical path runs from the root down through the failing charge.
    critical = set(page.eval_on_selector_all('#waterfall .wf-row[data-critical="true"]', "r => r.map(x => x.dataset.span)"))
    root = next(s for s in spans if not s.get("parentSpanId"))
    charge = next(s for s in spans if s["name"] == "charge card")
    assert {root["spanId"], charge["spanId"]} <= critical
    assert page.locator("#waterfall .wf-crit").count() >= len(critical)
    shot(page, "trace")

    page.click(f'#waterfall .wf-row[data-span="{charge["spanId"]}"]')
    detail = page.locator("#span-detail")
    expect(detail.locator('#span-attributes tr[data-key="error.type"]')).to_contain_text("card_declined")
    expect(detail.locator("#span-status")).to_have_text("error: card declined")
    expect(detail.locator('#span-resource tr[data-key="k8s.pod.name"]')).to_contain_text("payments-7d9f8-0")
    href = detail.locator("#logs-link").get_attribute("href")
    assert f"trace={trace_id}&span={charge['spanId']}&svc=payments" in href
    assert "span=" + charge["spanId"] in page.evaluate("location.hash")
    shot(page, "trace-detail")

    # Keyboard: up moves the selection to the span above; collapse the root hides the rest.
    page.locator("#waterfall").focus()
    page.keyboard.press("Home")
    page.keyboard.press("ArrowLeft")
    expect(page.locator("#waterfall .wf-row")).to_have_count(1)
    page.keyboard.press("ArrowRight")
    expect(page.locator("#waterfall .wf-row")).to_have_count(len(spans))
    # Find in trace.
    page.fill("#find", "charge card")
    expect(page.locator("#waterfall .wf-row.match")).to_have_count(1)
    # Download as OTLP JSON.
    with page.expect_download() as download:
        page.click("#download")
    saved = json.loads(Path(download.value.path()).read_text())
    assert sum(len(ss["spans"]) for rs in saved["resourceSpans"] for ss in rs["scopeSpans"]) == len(spans)


def test_long_span_names_are_cut_and_never_covered_by_the_duration_label(page, estate):
    page.goto(f"{estate.api}/#/trace/{estate.long}")
    page.wait_for_selector("#waterfall .wf-row")
    expect(page.locator("#waterfall .wf-row")).to_have_count(len(LONG))
    rows = page.eval_on_selector_all("#waterfall .wf-row", """rows => rows.map(r => {
        const name = r.querySelector('.wf-name'), label = r.querySelector('.wf-dur'), box = (e) => e.getBoundingClientRect();
        return { name: name.textContent, title: name.title, cut: name.scrollWidth > name.clientWidth,
                 n: box(name).toJSON(), d: box(label).toJSON(), track: box(r.querySelector('.wf-track')).toJSON() };
    })""")
    assert {r["name"] for r in rows} == {name for name, *_ in LONG}
    long_rows = [r for r in rows if len(r["name"]) > 60]
    assert len(long_rows) == 2 and all(r["cut"] and r["title"] == r["name"] for r in long_rows), long_rows
    for r in rows:
        n, d, track = r["n"], r["d"], r["track"]
        apart = d["left"] >= n["right"] or d["right"] <= n["left"] or d["top"] >= n["bottom"] or d["bottom"] <= n["top"]
        assert apart, f"the duration label {d} covers the name of {r['name']!r} {n}"
        assert track["left"] <= d["left"] and d["right"] <= track["right"], f"label outside the track: {r}"
    shot(page, "trace-long-names")


def test_compare_shows_the_extra_spans_of_a_slow_trace(page, estate):
    page.goto(f"{estate.api}/#/compare?a={estate.fast}&b={estate.slow}")
    page.wait_for_selector("#cmp-table")
    only_b = page.eval_on_selector_all('#cmp-table tr[data-kind="only-b"] td:first-child', "c => c.map(x => x.textContent)")
    assert sorted(only_b) == ["e2e-checkout: charge retry", "e2e-checkout: fraud check"]
    slower = page.eval_on_selector_all('#cmp-table tr[data-kind="slower"] td:first-child', "c => c.map(x => x.textContent)")
    assert slower == ["e2e-checkout: checkout"]
    expect(page.locator('#cmp-table tr[data-kind="only-a"]')).to_have_count(0)
    shot(page, "compare")


def test_what_is_different_ranks_the_demos_injected_cause_first(page, estate):
    query = '{ resource.service.name = "frontend" }'
    page.goto(f"{estate.api}/#/search?q={urllib.parse.quote(query)}&range=1h&limit=1000")
    assert result_ids(page)
    page.click("#insight-run")
    first = page.locator("#insight-table tbody tr").first
    expect(first).to_have_attribute("data-key", "error.type")
    expect(first).to_have_attribute("data-value", "card_declined")
    selected = int(first.locator("td").nth(2).inner_text().split()[0])
    assert selected == len({t["traceID"] for t in estate.search('{ resource.service.name = "frontend" } && { status = error }')})
    assert first.locator("td").nth(3).inner_text().startswith("0 ")
    page.locator("#insight-h").evaluate("e => e.scrollIntoView({block: 'start'})")
    shot(page, "what-is-different")
    # One click adds the value to the query.
    first.locator("button").click()
    expect(page.locator("#traceql")).to_have_value(f'{query} && {{ span.error.type = "card_declined" }}')
    page.wait_for_function("location.hash.includes('card_declined')")


def test_the_service_map_holds_the_four_demo_services_and_their_edges(page, estate):
    """Needs GET /api/threadline/service-graph (another part of the work): until the store serves
    it, the page must say so plainly, and the rest of this test is skipped."""
    page.goto(f"{estate.api}/#/map?range=1h")
    page.wait_for_selector(".map svg, .map .state")
    try:
        estate.get("/api/threadline/service-graph", start=0, end=2**31)
    except urllib.error.HTTPError as err:
        if err.code != 404:
            raise
        expect(page.locator(".map .state")).to_contain_text("does not serve the service graph")
        shot(page, "service-map")
        pytest.skip("the store does not serve /api/threadline/service-graph yet")
    nodes = set(page.eval_on_selector_all(".map .node", "n => n.map(x => x.dataset.node)"))
    assert SERVICES <= nodes
    edges = set(page.eval_on_selector_all(".map .edge", "e => e.map(x => x.dataset.source + '>' + x.dataset.target)"))
    assert {"frontend>orders", "orders>payments", "orders>inventory"} <= edges
    shot(page, "service-map")
    page.click('.map .node[data-node="payments"]')
    page.wait_for_selector("#red")
    page.wait_for_selector("text=Slowest traces")
    shot(page, "service")
