"""Every query that Grafana's Tempo data source and the Traces Drilldown app generate, sent as they
send it over HTTP and over the gRPC streaming service, each answer checked against ground truth
computed here from the spans the Python SDK sent (`grafana_traffic.py`).

Where each query comes from (strings copied from the upstream builders and their unit tests, with
Drilldown's template variables filled as the app fills them: `${primarySignal}` from
`src/pages/Explore/primary-signals.ts`, `${filters}` by `src/utils/filters-renderer.ts` ('true' when
empty), `${durationPercentiles:csv}` defaulting to `0.9` in `src/pages/Explore/TraceExploration.tsx`):
  DD = grafana/traces-drilldown 2edd9c93c8730e7e47475995e9e2976f8e8b0ac4
  GF = grafana/grafana (files read at the commits named in each case; the mirror was too big to
       fetch, read through the code index): `public/app/plugins/datasource/tempo/SearchTraceQLEditor/
       utils.test.ts` 12e7d8e, `language_provider.ts` 0467533, `pkg/tsdb/tempo/traceql_query.go`
       040d403 (metrics over HTTP: q, start/end in unix seconds, step, exemplars),
       `metrics_stream.go` 0809124 (over gRPC: start/end in unix nanoseconds).
Search requests are the data source's: `/api/search?q=&limit=&spss=&start=&end=` (limit/spss from
the Drilldown query objects, 20/3 for Grafana's editor defaults)."""

from __future__ import annotations

import json
import math
import time
import urllib.parse

import grpc
import pytest
from google.protobuf.json_format import MessageToDict

import grafana_traffic
import tempopb_client
from harness import StoreServer, wait_until

TENANT = "grafana"
METADATA = [("x-scope-orgid", TENANT)]
HEADERS = {"X-Scope-OrgID": TENANT}
NS = grafana_traffic.NS
# Drilldown's step: getStepForTimeRange (DD src/utils/dates.ts), the range over 50 data points.
RANGE_S = 3600
STEP_S = max(1, RANGE_S // 50)

DD = "traces-drilldown@2edd9c9"
# Drilldown's primary signals (primary-signals.ts) and what each selects.
ROOT = ("nestedSetParent<0", lambda s: s["role"] == "root")
ALL = ("true", lambda s: True)
SERVER = ("kind=server", lambda s: s["kind"] == "server")
DATABASE = ('span.db.system.name!=""', lambda s: "db.system.name" in s["attrs"])
NO_FILTER = ("true", lambda s: True)
CART = ('resource.service.name="cart"', lambda s: s["service"] == "cart")
RED = ('span.tags="red"', lambda s: "red" in s["attrs"].get("tags", ()))
VALUE_ERROR = ('event.exception.type="ValueError"', lambda s: s["exception"] is not None)
ERROR = lambda s: s["error"]  # noqa: E731

# Group-by attributes as Drilldown's breakdown offers them, and each span's value for the label.
GROUP_BY = {
    "resource.service.name": lambda s: s["service"],
    "name": lambda s: s["name"],
    "kind": lambda s: s["kind"],
    "status": lambda s: "error" if s["error"] else "unset",
    "span.http.route": lambda s: s["attrs"].get("http.route"),
    "span.http.response.status_code": lambda s: s["attrs"].get("http.response.status_code"),
    "resource.deployment.environment": lambda s: "prod",
    "rootServiceName": lambda s: "frontend",
}


class Case:
    """One generated request; `expect(spans)` gives the answer computed from what was sent."""

    def __init__(self, kind, id, source, query, expect, **params):
        self.kind, self.id, self.source, self.query, self.expect, self.params = kind, id, source, query, expect, params


def _stamp_ms(start_ns: int, range_start_ns: int) -> int:
    """Tempo's intervals: aligned to the step, (T - step, T] stamped T."""
    step = STEP_S * NS
    aligned = range_start_ns - range_start_ns % step
    return (aligned + math.ceil((start_ns - aligned) / step) * step) // 1_000_000


def _nearest_rank(values, q):
    ordered = sorted(values)
    return ordered[max(1, min(len(ordered), math.ceil(q * len(ordered)))) - 1]


def range_expect(select, fn="rate", by=None, quantiles=(0.9,)):
    """{labels: {stamp_ms: value}} over the spans `select` keeps, zeros left out."""

    def expect(spans, range_start_ns):
        groups = {}
        for s in filter(select, spans):
            labels = {} if by is None else {by: GROUP_BY[by](s)}
            if fn == "histogram":
                bucket = 2 ** math.ceil(math.log2(s["duration"])) / NS
                labels["__bucket"] = bucket
            groups.setdefault(_key(labels), {}).setdefault(_stamp_ms(s["start"], range_start_ns), []).append(s)
        out = {}
        for labels, stamps in groups.items():
            for q in quantiles if fn == "quantiles" else (None,):
                series = out.setdefault(_key(dict(labels) | {"p": q}) if q else labels, {})
                for stamp, members in stamps.items():
                    if fn == "rate":
                        series[stamp] = len(members) / STEP_S
                    elif fn == "histogram":
                        series[stamp] = float(len(members))
                    else:
                        series[stamp] = _nearest_rank([m["duration"] / NS for m in members], q)
        return out

    return expect


def metrics_query(signal, filters, metric, by=None, extra=None, guard=True, sample=False, percentiles=(0.9,)):
    """generateMetricsQuery (DD src/components/Explore/queries/generateMetricsQuery.ts) verbatim."""
    text = f"{signal[0]} && {filters[0]}"
    if metric == "errors":
        text += " && status=error"
    if extra:
        text += f" && {extra[0]}"
    if by and guard:
        text += f" && {by} != nil"
    csv = ",".join(map(str, percentiles))  # ${durationPercentiles:csv}
    fn = f"quantile_over_time(duration, {csv})" if metric == "duration" else "rate()"
    group = f"by({by})" if by else ""
    query = f"{{{text}}} | {fn} {group}" + (" with(sample=true)" if sample else "")

    def select(s):
        keep = signal[1](s) and filters[1](s) and (metric != "errors" or s["error"])
        keep = keep and (extra is None or extra[1](s))
        return keep and (by is None or GROUP_BY[by](s) is not None)

    return query, range_expect(select, "quantiles" if metric == "duration" else "rate", by, percentiles)


def _key(labels: dict) -> frozenset:
    return frozenset(labels.items())


def spans_expect(select):
    """Search: {trace: {matched span ids}} for a spanset filter."""

    def expect(spans, _start):
        out = {}
        for s in filter(select, spans):
            out.setdefault(s["trace"], set()).add(s["span_id"])
        return out

    return expect


def structure_expect(root_select, descendant_select):
    """StructureScene's `({root} &>> {desc}) || ({root})`: each matching root, plus its matching
    descendants (the union form keeps both sides)."""

    def expect(spans, _start):
        out = {}
        for root in filter(root_select, spans):
            ids = {root["span_id"]}
            ids |= {s["span_id"] for s in spans if s["trace"] == root["trace"] and s["role"] != "root"
                    and descendant_select(s)}
            out[root["trace"]] = ids
        return out

    return expect


def _dd_metrics(id, *args, xfail=None, **kwargs):
    query, expect = metrics_query(*args, **kwargs)
    case = Case("range", id, f"{DD} src/components/Explore/queries/generateMetricsQuery.ts", query, expect)
    return pytest.param(case, id=id, marks=[pytest.mark.xfail(strict=True, reason=xfail)] if xfail else [])


def _case(kind, id, source, query, expect, xfail=None, **params):
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(Case(kind, id, source, query, expect, **params), id=id, marks=marks)


STRUCTURE = f"{DD} src/components/Explore/TracesByService/Tabs/Structure/StructureScene.tsx buildQuery"
STRUCTURE_SELECT = " | select(status, resource.service.name, name, nestedSetParent, nestedSetLeft, nestedSetRight)"
TRACES_LIST = f"{DD} src/components/Explore/TracesByService/TracesByServiceScene.tsx buildQuery (+ .test.tsx)"
GF_EDITOR = "grafana@12e7d8e public/app/plugins/datasource/tempo/SearchTraceQLEditor/utils.test.ts"
GF_TAGS = "grafana@0467533 public/app/plugins/datasource/tempo/language_provider.ts"

CASES = [
    # RED panels: rate / errors / duration for each primary signal, then the breakdown by each attribute.
    _dd_metrics("rate-root", ROOT, NO_FILTER, "rate"),
    _dd_metrics("rate-all", ALL, NO_FILTER, "rate"),
    _dd_metrics("rate-server", SERVER, NO_FILTER, "rate"),
    _dd_metrics("rate-database", DATABASE, NO_FILTER, "rate"),
    _dd_metrics("errors-root", ROOT, NO_FILTER, "errors"),
    _dd_metrics("errors-all", ALL, NO_FILTER, "errors"),
    _dd_metrics("duration-root", ROOT, NO_FILTER, "duration"),
    _dd_metrics("duration-server", SERVER, NO_FILTER, "duration"),
    _dd_metrics("duration-server-percentiles", SERVER, NO_FILTER, "duration", percentiles=(0.5, 0.9, 0.99)),
    _dd_metrics("rate-filter-cart", ALL, CART, "rate"),
    _dd_metrics("rate-filter-array", ROOT, RED, "rate"),
    _dd_metrics("rate-filter-exception-event", ALL, VALUE_ERROR, "rate"),
    *[_dd_metrics(f"rate-by-{by}", ALL, NO_FILTER, "rate", by=by) for by in GROUP_BY],
    _dd_metrics("errors-by-service", ALL, NO_FILTER, "errors", by="resource.service.name"),
    _dd_metrics("duration-by-service", SERVER, NO_FILTER, "duration", by="resource.service.name"),
    _dd_metrics("rate-by-service-sampled", ALL, NO_FILTER, "rate", by="resource.service.name", sample=True),
    # generateMetricsQueryForBreakdownTile: the value pinned, no `!= nil` guard.
    _dd_metrics("breakdown-tile-cart", ALL, NO_FILTER, "rate", by="resource.service.name", guard=False,
                extra=('resource.service.name="cart"', lambda s: s["service"] == "cart")),
    # Heatmap (histogram.ts buildHistogramQuery): each span counted once in its power-of-two bucket.
    _case("range", "histogram-root", f"{DD} src/components/Explore/queries/histogram.ts",
          "{nestedSetParent<0 && true} | histogram_over_time(duration) with(sample=true)",
          range_expect(ROOT[1], "histogram")),
    _case("range", "histogram-all", f"{DD} src/components/Explore/queries/histogram.ts",
          "{true && true} | histogram_over_time(duration) with(sample=true)", range_expect(ALL[1], "histogram")),
    # The data source's exemplars parameter (traceql_query.go createMetricsQuery).
    _case("range", "rate-exemplars", "grafana@040d403 pkg/tsdb/tempo/traceql_query.go",
          "{nestedSetParent<0 && true} | rate() ", range_expect(ROOT[1]), exemplars=100),
    # Drilldown's TraceQL-metrics probe (TraceQLIssueDetector.tsx).
    _case("range", "issue-detector", f"{DD} src/components/Explore/TraceQLIssueDetector.tsx",
          "{} | rate()", range_expect(ALL[1])),
    # Comparison tab (AttributesComparisonScene.tsx buildQuery + comparisonQuery.ts / queries.test.ts).
    _case("compare", "compare-errors", f"{DD} Tabs/Comparison/AttributesComparisonScene.tsx + comparisonQuery.ts",
          "{true && true} | compare({status = error}, 10)", ERROR),
    _case("compare", "compare-duration", f"{DD} src/components/Explore/queries/queries.test.ts comparisonQuery",
          "{nestedSetParent<0 && true} | compare({duration >= 0ms && duration <= 90ms}, 10)",
          lambda s: s["role"] == "root" and s["duration"] <= 90 * grafana_traffic.MS, signal=ROOT[1]),
    # A brushed selection: comparisonQuery's time range arguments in unix nanoseconds (queries.test.ts),
    # here the six most recent traces' minutes.
    _case("compare", "compare-window", f"{DD} src/components/Explore/queries/comparisonQuery.ts",
          lambda w: "{true && true} | compare({duration >= 0ms && duration <= 2s}, 10, "
                    f"{_window(w)[0] * NS}, {_window(w)[1] * NS})",
          lambda s, w=None: _window(w)[0] * NS <= s["start"] < _window(w)[1] * NS, windowed=True),
    # Grafana's instant metrics type (MetricsQueryTypeInstant -> /api/metrics/query, gRPC MetricsQueryInstant).
    _case("instant", "instant-rate-by-service", "grafana@040d403 pkg/tsdb/tempo/traceql_query.go + metrics_stream.go",
          "{true && true && resource.service.name != nil} | rate() by(resource.service.name)",
          lambda spans, seconds: {_key({"resource.service.name": svc}): sum(s["service"] == svc for s in spans) / seconds
                                  for svc in grafana_traffic.SERVICES}),
    _case("instant", "instant-p90-root", "grafana@040d403 pkg/tsdb/tempo/traceql_query.go + metrics_stream.go",
          "{nestedSetParent<0 && true} | quantile_over_time(duration, 0.9) ",
          lambda spans, seconds: {_key({"p": 0.9}): _nearest_rank(
              [s["duration"] / NS for s in spans if s["role"] == "root"], 0.9)}),
    # Exceptions tab (exceptions.ts): error spans with their exception events, most recent first.
    _case("search", "exceptions", f"{DD} src/components/Explore/queries/exceptions.ts",
          "{true && true && status = error} | select(resource.service.name, event.exception.message,"
          "event.exception.stacktrace,event.exception.type) with(most_recent=true)",
          spans_expect(ERROR), limit=400, spss=10, exceptions=True),
    # An exception's accordion (ExceptionAccordion.tsx buildExceptionFilterExpr): its distribution
    # panels (ExceptionComparison.tsx, `| select(<attribute>)`) and its trace list (ExceptionTraceResults.tsx).
    _case("search", "exception-distribution", f"{DD} Tabs/Exceptions/accordion/ExceptionComparison.tsx",
          '{true && true && status = error && event.exception.message = "bad item 3" && '
          'event.exception.type = "ValueError"} | select(resource.service.name)',
          spans_expect(lambda s: s["exception"] == "bad item 3"), limit=400, spss=10, service_attr=True),
    _case("search", "exception-traces", f"{DD} Tabs/Exceptions/accordion/ExceptionTraceResults.tsx",
          '{nestedSetParent<0 && true && status = error && event.exception.message = "bad item 3"} '
          "| select(resource.service.name,span.http.route)",
          spans_expect(lambda s: False), limit=100, spss=10),
    _case("search", "exception-traces-all-spans", f"{DD} Tabs/Exceptions/accordion/ExceptionTraceResults.tsx",
          '{true && true && status = error && event.exception.message = "bad item 6"} '
          "| select(resource.service.name,event.exception.type)",
          spans_expect(lambda s: s["exception"] == "bad item 6"), limit=100, spss=10, service_attr=True),
    # Structure tab, one query per metric.
    _case("search", "structure-rate", STRUCTURE,
          "({nestedSetParent<0 && true } &>> { kind = server }) || ({nestedSetParent<0 && true })" + STRUCTURE_SELECT,
          structure_expect(ROOT[1], lambda s: s["kind"] == "server"), limit=200, spss=20, nested=True),
    _case("search", "structure-errors", STRUCTURE,
          "({nestedSetParent<0 && true && status = error} &>> { status = error }) || "
          "({nestedSetParent<0 && true && status = error})" + STRUCTURE_SELECT,
          structure_expect(lambda s: s["role"] == "root" and s["error"], ERROR), limit=200, spss=20, nested=True),
    _case("search", "structure-duration", STRUCTURE,
          "({nestedSetParent<0 && true && duration > 100ms} &>> { duration > 50ms }) || "
          "({nestedSetParent<0 && true && duration > 100ms})" + STRUCTURE_SELECT,
          structure_expect(lambda s: s["role"] == "root" and s["duration"] > 100 * grafana_traffic.MS,
                           lambda s: s["duration"] > 50 * grafana_traffic.MS), limit=200, spss=20, nested=True),
    # Traces tab span lists.
    _case("search", "traces-list", TRACES_LIST, "{nestedSetParent<0 && true} | select(span.http.route)",
          spans_expect(ROOT[1]), limit=200, spss=10, selected="http.route"),
    # The .test.tsx passes `duration,service.name`, which is no TraceQL (Tempo's lexer rejects a bare
    # `service.name` too); the app fills ${spanListColumns} with scoped keys from the attribute list.
    _case("search", "traces-list-columns", TRACES_LIST, "{kind=server && true} | select(duration,resource.service.name)",
          spans_expect(SERVER[1]), limit=200, spss=10, service_attr=True),
    _case("search", "traces-list-errors", TRACES_LIST, "{true && true && status = error}",
          spans_expect(ERROR), limit=200, spss=10),
    _case("search", "traces-list-duration", TRACES_LIST, "{kind=server && true&& duration > 100ms}",
          spans_expect(lambda s: s["kind"] == "server" and s["duration"] > 100 * grafana_traffic.MS),
          limit=200, spss=10),
    _case("search", "traces-list-duration-range", TRACES_LIST,
          "{true && true&& duration >= 60ms && duration <= 90ms}",
          spans_expect(lambda s: 60 * grafana_traffic.MS <= s["duration"] <= 90 * grafana_traffic.MS),
          limit=200, spss=10),
    # Grafana's search editor (generateQueryFromFilters), its unit tests' shapes on our attributes.
    _case("search", "editor-empty", GF_EDITOR, "{}", spans_expect(ALL[1]), limit=20, spss=3),
    _case("search", "editor-unscoped-string", GF_EDITOR, '{.http.route="/api/1"}',
          spans_expect(lambda s: s["attrs"].get("http.route") == "/api/1"), limit=20, spss=3),
    _case("search", "editor-unscoped-int", GF_EDITOR, "{.cart.items>7}",
          spans_expect(lambda s: s["attrs"].get("cart.items", -1) > 7), limit=20, spss=3),
    _case("search", "editor-two-fields", GF_EDITOR, '{.http.response.status_code>=500 && .http.route="/api/0"}',
          spans_expect(lambda s: s["attrs"].get("http.response.status_code") == 500), limit=20, spss=3),
    _case("search", "editor-span-scope", GF_EDITOR, "{span.http.response.status_code>=500}",
          spans_expect(lambda s: s["attrs"].get("http.response.status_code") == 500), limit=20, spss=3),
    _case("search", "editor-resource-scope", GF_EDITOR, '{resource.service.name="db"}',
          spans_expect(lambda s: s["service"] == "db"), limit=20, spss=3),
    _case("search", "editor-link-scope", GF_EDITOR, '{link.reason="retry"}',
          spans_expect(lambda s: s["linked"]), limit=20, spss=3),
    _case("search", "editor-event-scope", GF_EDITOR, '{event.exception.message="bad item 3"}',
          spans_expect(lambda s: s["exception"] == "bad item 3"), limit=20, spss=3),
    _case("search", "editor-array", GF_EDITOR, '{span.tags="green"}',
          spans_expect(lambda s: "green" in s["attrs"].get("tags", ())), limit=20, spss=3),
    # utils.ts (grafana@071c707) valueHelper/scopeHelper: several values joined for =~, intrinsics
    # unscoped, the editor's static filters (service, span name, duration, status) together.
    _case("search", "editor-multi-value", GF_EDITOR.replace("utils.test.ts", "utils.ts@071c707"),
          '{resource.service.name=~"cart|db"}', spans_expect(lambda s: s["service"] in ("cart", "db")),
          limit=20, spss=3),
    _case("search", "editor-static-filters", GF_EDITOR.replace("utils.test.ts", "utils.ts@071c707"),
          '{resource.service.name=~"cart" && name="cart.load" && duration>30ms && status=error}',
          spans_expect(lambda s: s["role"] == "cart" and s["error"] and s["duration"] > 30 * grafana_traffic.MS),
          limit=20, spss=3),
    # Tag autocompletion (language_provider.ts fetchTags / getOptionsV2).
    _case("tags", "tags-v2", GF_TAGS, None, {
        "span": {"http.route", "http.request.method", "http.response.status_code", "tags", "cart.items",
                 "db.system.name"},
        "resource": {"service.name", "deployment.environment"},
        "event": {"exception.type", "exception.message", "exception.stacktrace", "exception.escaped"},
        "link": {"reason"}}),
    # One scope, narrowed by the query being edited (the `scope` and `q` of /api/v2/search/tags).
    _case("tags", "tags-v2-event-scope", GF_TAGS, "{}", {
        "event": {"exception.type", "exception.message", "exception.stacktrace", "exception.escaped"}},
          scope="event"),
    _case("tags", "tags-v2-span-scope-in-db", GF_TAGS, '{resource.service.name="db"}', {"span": {"db.system.name"}},
          scope="span"),
    _case("values", "values-service", GF_TAGS, "{}", {("string", v) for v in grafana_traffic.SERVICES},
          tag="resource.service.name"),
    _case("values", "values-name-in-cart", GF_TAGS, '{resource.service.name="cart"}',
          {("string", "cart.load"), ("string", "compute")}, tag="name"),
    _case("values", "values-exception-type", GF_TAGS, "{}", {("string", "ValueError")},
          tag="event.exception.type"),
    _case("values", "values-array", GF_TAGS, '{nestedSetParent<0}', {("string", v) for v in ("red", "blue", "green")},
          tag="span.tags"),
    # The status enum whole, whatever was seen (the store's answer for an enum intrinsic).
    _case("values", "values-status", GF_TAGS, "{}", {("keyword", v) for v in ("ok", "error", "unset")}, tag="status"),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One store filled once for every case: (store, spans, stub, messages, range bounds)."""
    root = tmp_path_factory.mktemp("grafana")
    messages, service = tempopb_client.generate(root)
    store = StoreServer(root / "logs", root / "data", sets=["multitenancy_enabled=true"], name="store")
    store.start()
    try:
        spans = grafana_traffic.send(store, TENANT)
        # Every span searchable, not only every trace.
        wait_until(lambda: sum(t["spanSet"]["matched"] for t in store.json(
            "/api/search?limit=100&spss=1&q=%7B%7D", HEADERS)["traces"]) == len(spans), 15,
            "not every span became searchable")
        end_s = int(time.time()) + 1
        with grpc.insecure_channel(f"127.0.0.1:{store.http_port}") as channel:
            yield {"store": store, "spans": spans, "stub": service.StreamingQuerierStub(channel), "pb": messages,
                   "start_s": end_s - RANGE_S, "end_s": end_s}
    finally:
        store.stop(timeout=15)


def _http(world, path, **params):
    status, body = world["store"].get(path + "?" + urllib.parse.urlencode(params), HEADERS)
    assert status == 200, f"{path} {params}: {status} {body[:400]!r}"
    return json.loads(body)


def _grpc(world, method, request):
    stream = list(getattr(world["stub"], method)(request, metadata=METADATA, timeout=30))
    assert stream, f"{method} sent no message"
    return MessageToDict(stream[-1])


def _value(any_value: dict):
    """A Tempo/OTLP AnyValue as JSON (both the HTTP answer and MessageToDict spell it so)."""
    if not any_value:
        return None
    kind, value = next(iter(any_value.items()))
    if kind == "intValue":
        return int(value)
    if kind == "arrayValue":
        return tuple(_value(v) for v in value.get("values", []))
    return value


def _labels(series: dict) -> frozenset:
    return _key({l["key"]: _value(l.get("value", {})) for l in series.get("labels", []) if l["key"] != "__name__"})


def _range_series(answer: dict) -> dict:
    out = {}
    for series in answer.get("series", []):
        samples = {int(s.get("timestampMs", 0)): s.get("value", 0.0) for s in series.get("samples", [])}
        out[_labels(series)] = {t: v for t, v in samples.items() if v == v and v != 0}
    return {k: v for k, v in out.items() if v}


def _assert_series(got: dict, expected: dict, what: str):
    assert got.keys() == expected.keys(), f"{what}: series {sorted(map(sorted, got))} != {sorted(map(sorted, expected))}"
    for labels, samples in expected.items():
        assert got[labels].keys() == samples.keys(), f"{what} {sorted(labels)}: stamps differ"
        for stamp, value in samples.items():
            assert math.isclose(got[labels][stamp], value, rel_tol=1e-9), (what, sorted(labels), stamp)


def _search_traces(answer: dict) -> dict:
    """{trace id (no leading zeros): (matched, {span id: {attribute: value}})}."""
    out = {}
    for trace in answer.get("traces", []):
        sets = trace.get("spanSets") or ([trace["spanSet"]] if trace.get("spanSet") else [])
        spans = {s["spanID"]: {a["key"]: _value(a.get("value", {})) for a in s.get("attributes", [])}
                 for ss in sets for s in ss.get("spans", [])}
        out[trace["traceID"].lstrip("0")] = (sum(ss.get("matched", 0) for ss in sets), spans)
    return out


def _check_search(case, world, answer, via):
    expected = {t.lstrip("0"): ids for t, ids in case.expect(world["spans"], 0).items()}
    assert expected or case.id == "exception-traces", "a case that expects nothing proves little"
    got = _search_traces(answer)
    assert got.keys() == expected.keys(), f"{via}: traces {len(got)} != {len(expected)}"
    by_id = {s["span_id"]: s for s in world["spans"]}
    for trace, ids in expected.items():
        matched, spans = got[trace]
        assert matched == len(ids), f"{via} {trace}: matched {matched} != {len(ids)}"
        assert set(spans) <= ids and len(spans) == min(len(ids), case.params["spss"]), (via, trace, set(spans), ids)
        for span_id, attrs in spans.items():
            sent = by_id[span_id]
            if case.params.get("selected"):
                assert attrs.get(case.params["selected"]) == sent["attrs"][case.params["selected"]], (via, attrs)
            if case.params.get("service_attr"):
                assert attrs.get("service.name") == sent["service"], (via, attrs)
            if case.params.get("exceptions") and sent["exception"]:
                # Tempo keys attributes without their scope (ExceptionsScene.tsx reads either).
                assert attrs.get("exception.message") == sent["exception"], (via, attrs)
                assert attrs.get("exception.type") == "ValueError", (via, attrs)
                assert "ValueError" in attrs.get("exception.stacktrace", ""), (via, attrs)
            if case.params.get("nested"):
                # The keys tree-node.ts and StructureScene.tsx read.
                assert attrs.get("service.name") == sent["service"], (via, attrs)
                assert attrs.get("status") == ("error" if sent["error"] else "unset"), (via, attrs)
                assert attrs.get("name", sent["name"]) == sent["name"], (via, attrs)
                assert {"nestedSetLeft", "nestedSetRight", "nestedSetParent"} <= attrs.keys(), (via, attrs)
        if case.params.get("nested"):
            # The tree Drilldown draws: each descendant's interval nests in its root's.
            root = next(a for i, a in spans.items() if by_id[i]["role"] == "root")
            assert root["nestedSetParent"] == -1, root
            for span_id, attrs in spans.items():
                if by_id[span_id]["role"] != "root":
                    assert root["nestedSetLeft"] < attrs["nestedSetLeft"] < attrs["nestedSetRight"] < root["nestedSetRight"]
    if case.params.get("exceptions"):
        starts = [int(t["startTimeUnixNano"]) for t in answer["traces"]]
        assert starts == sorted(starts, reverse=True), f"{via}: most_recent answers newest first"


def _window(world) -> tuple[int, int]:
    """A brushed range in unix seconds: from the sixth most recent trace's minute to the end."""
    starts = sorted({s["start"] for s in world["spans"] if s["role"] == "root"}, reverse=True)
    return starts[5] // NS - 17, world["end_s"]


def _compare_totals(answer: dict) -> dict:
    """compare(): {(__meta_type, attribute, value): total over the range}."""
    out = {}
    for series in answer.get("series", []):
        labels = dict(_labels(series))
        kind = labels.pop("__meta_type", None)
        total = sum(s.get("value", 0.0) for s in series.get("samples", []) if s.get("value", 0.0) == s.get("value", 0.0))
        for key, value in labels.items():
            out[(kind, key, value)] = out.get((kind, key, value), 0) + total
    return out


def _check_compare(case, world, answer, via):
    signal = case.params.get("signal", lambda s: True)
    base = [s for s in world["spans"] if signal(s)]
    selected = (lambda s: case.expect(s, world)) if case.params.get("windowed") else case.expect
    totals = _compare_totals(answer)
    assert 0 < sum(map(selected, base)) < len(base), "a comparison needs both sides"
    for kind, members in (("selection", [s for s in base if selected(s)]),
                          ("baseline", [s for s in base if not selected(s)])):
        for service in grafana_traffic.SERVICES:
            want = sum(1 for s in members if s["service"] == service)
            assert totals.get((kind, "resource.service.name", service), 0) == want, (via, kind, service, totals)
        for name in {s["name"] for s in base}:
            want = sum(1 for s in members if s["name"] == name)
            assert totals.get((kind, "name", name), 0) == want, (via, kind, name)


@pytest.mark.parametrize("case", CASES)
def test_generated_query_over_http_and_grpc(world, case):
    pb, start_s, end_s = world["pb"], world["start_s"], world["end_s"]
    query = case.query(world) if callable(case.query) else case.query
    if case.kind in ("range", "compare"):
        # The comparison tab asks for one interval over the whole range (AttributesComparisonScene.tsx).
        step_s = end_s - start_s if case.kind == "compare" else STEP_S
        params = {"q": query, "start": start_s, "end": end_s, "step": f"{step_s}s"}
        if "exemplars" in case.params:
            params["exemplars"] = case.params["exemplars"]
        http = _http(world, "/api/metrics/query_range", **params)
        rpc = _grpc(world, "MetricsQueryRange", pb.QueryRangeRequest(
            query=query, start=start_s * NS, end=end_s * NS, step=step_s * NS,
            exemplars=case.params.get("exemplars", 0)))
        for via, answer in (("http", http), ("grpc", rpc)):
            if case.kind == "compare":
                _check_compare(case, world, answer, via)
                continue
            expected = case.expect(world["spans"], start_s * NS)
            assert expected, "a case that expects nothing proves little"
            _assert_series(_range_series(answer), expected, via)
            if "exemplars" in case.params:
                roots = {s["trace"].lstrip("0") for s in world["spans"] if s["role"] == "root"}
                exemplars = [e for series in answer["series"] for e in series.get("exemplars", [])]
                assert exemplars, f"{via}: no exemplars"
                for e in exemplars:
                    labels = {l["key"]: _value(l["value"]) for l in e["labels"]}
                    assert labels.get("trace:id", "").lstrip("0") in roots, (via, labels)
    elif case.kind == "instant":
        http = _http(world, "/api/metrics/query", q=query, start=start_s, end=end_s)
        rpc = _grpc(world, "MetricsQueryInstant", pb.QueryInstantRequest(query=query, start=start_s * NS,
                                                                         end=end_s * NS))
        expected = case.expect(world["spans"], end_s - start_s)
        for via, answer in (("http", http), ("grpc", rpc)):
            got = {_labels(s): s.get("value", 0.0) for s in answer.get("series", [])}
            assert got.keys() == expected.keys(), (via, got)
            for labels, value in expected.items():
                assert math.isclose(got[labels], value, rel_tol=1e-9), (via, sorted(labels), got[labels], value)
    elif case.kind == "search":
        p = case.params
        http = _http(world, "/api/search", q=query, limit=p["limit"], spss=p["spss"], start=start_s, end=end_s)
        rpc = _grpc(world, "Search", pb.SearchRequest(Query=query, Limit=p["limit"], SpansPerSpanSet=p["spss"],
                                                      start=start_s, end=end_s))
        _check_search(case, world, http, "http")
        _check_search(case, world, rpc, "grpc")
    elif case.kind == "tags":
        scope = case.params.get("scope")
        params = {"limit": 5000, "start": start_s, "end": end_s}
        if scope:
            params |= {"scope": scope, "q": query}
        http = _http(world, "/api/v2/search/tags", **params)
        rpc = _grpc(world, "SearchTagsV2", pb.SearchTagsRequest(
            scope=scope or "", query=query or "", start=start_s, end=end_s, maxTagsPerScope=5000))
        for via, answer in (("http", http), ("grpc", rpc)):
            scopes = {s["name"]: set(s.get("tags", [])) for s in answer["scopes"]}
            if scope:
                assert scopes == case.expect, (via, scopes)
                continue
            for name, tags in case.expect.items():
                # The SDK adds its own resource attributes (telemetry.sdk.*, service.instance.id).
                got = scopes.get(name, set())
                assert (tags <= got) if name == "resource" else (got == tags), (via, name, got)
            assert not scopes["resource"] & case.expect["span"], (via, "span attributes under resource")
            assert {"duration", "name", "status", "kind"} <= scopes.get("intrinsic", set()), (via, scopes)
    else:
        tag = case.params["tag"]
        http = _http(world, f"/api/v2/search/tag/{urllib.parse.quote(tag)}/values", q=case.query, limit=5000,
                     start=start_s, end=end_s)
        rpc = _grpc(world, "SearchTagValuesV2", pb.SearchTagValuesRequest(
            tagName=tag, query=case.query, start=start_s, end=end_s, maxTagValues=5000))
        for via, answer in (("http", http), ("grpc", rpc)):
            assert {(v["type"], v["value"]) for v in answer.get("tagValues", [])} == case.expect, (via, answer)


def test_the_query_builder_here_reproduces_drilldowns_unit_tests():
    """metrics_query() is generateMetricsQuery: with the template variables left unfilled it gives
    the strings DD's generateMetricsQuery.test.ts and queries.test.ts expect, byte for byte."""
    var = lambda name: (name, None)  # noqa: E731
    sig, filt, pct = var("${primarySignal}"), var("${filters}"), ("${durationPercentiles:csv}",)
    assert metrics_query(sig, filt, "rate")[0] == "{${primarySignal} && ${filters}} | rate() "
    assert metrics_query(sig, filt, "errors")[0] == "{${primarySignal} && ${filters} && status=error} | rate() "
    assert metrics_query(sig, filt, "duration", percentiles=pct)[0] == (
        "{${primarySignal} && ${filters}} | quantile_over_time(duration, ${durationPercentiles:csv}) ")
    assert metrics_query(sig, filt, "rate", extra=('name="test"', None))[0] == (
        '{${primarySignal} && ${filters} && name="test"} | rate() ')
    assert metrics_query(sig, filt, "rate", by="serviceName")[0] == (
        "{${primarySignal} && ${filters} && serviceName != nil} | rate() by(serviceName)")
    assert metrics_query(sig, filt, "rate", by="serviceName", extra=('serviceName="foo"', None), guard=False)[0] == (
        '{${primarySignal} && ${filters} && serviceName="foo"} | rate() by(serviceName)')
    assert metrics_query(sig, filt, "errors", by="service")[0] == (
        "{${primarySignal} && ${filters} && status=error && service != nil} | rate() by(service)")
    assert metrics_query(sig, filt, "rate", by="service", sample=True)[0] == (
        "{${primarySignal} && ${filters} && service != nil} | rate() by(service) with(sample=true)")
    assert metrics_query(sig, filt, "duration", by="service", percentiles=pct)[0] == (
        "{${primarySignal} && ${filters} && service != nil} | quantile_over_time(duration, "
        "${durationPercentiles:csv}) by(service)")


def test_trace_lookup_as_grafana_opens_a_trace(world):
    """Opening a trace from a search or an exemplar: `/api/traces/<id>?start=&end=` with `Accept:
    application/protobuf`, read as OTLP (grafana@008aba5 pkg/tsdb/tempo/trace.go createRequest).
    The streaming service has no trace lookup; this is HTTP only."""
    from opentelemetry.proto.trace.v1 import trace_pb2

    by_trace = {}
    for s in world["spans"]:
        by_trace.setdefault(s["trace"], []).append(s)
    for trace_id, sent in by_trace.items():
        status, body = world["store"].get(f"/api/traces/{trace_id}?start={world['start_s']}&end={world['end_s']}",
                                          HEADERS | {"Accept": "application/protobuf"})
        assert status == 200, body[:300]
        got = {}
        data = trace_pb2.TracesData.FromString(body)
        for rs in data.resource_spans:
            service = next(a.value.string_value for a in rs.resource.attributes if a.key == "service.name")
            for ss in rs.scope_spans:
                for span in ss.spans:
                    assert span.span_id.hex() not in got, "a span came twice"
                    got[span.span_id.hex()] = (service, span)
        assert set(got) == {s["span_id"] for s in sent}
        for s in sent:
            service, span = got[s["span_id"]]
            assert (service, span.name, span.end_time_unix_nano - span.start_time_unix_nano) == (
                s["service"], s["name"], s["duration"])
            assert (span.status.code == trace_pb2.Status.STATUS_CODE_ERROR) == s["error"]
            events = {a.key: a.value.string_value for e in span.events for a in e.attributes}
            assert events.get("exception.message") == s["exception"]
            assert len(span.links) == int(s["linked"])
            if s["role"] == "root":
                tags = next(a.value.array_value for a in span.attributes if a.key == "tags")
                assert [v.string_value for v in tags.values] == list(s["attrs"]["tags"])
